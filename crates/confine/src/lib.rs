//! Seccomp confinement of the VMM's threads.
//!
//! Every thread of a `vireo run` process runs under a seccomp filter for
//! its kind ([`ThreadKind`]): the system calls, and where the arguments
//! tell what a call does the arguments, that kind of thread needs
//! (`filters.rs`). A call outside the list is, by [`Mode`], let through
//! and logged by the kernel, or trapped: a SIGSYS handler names the thread
//! and the call on stderr and the process exits with [`EXIT_SECCOMP`]
//! after the embedder has recorded why ([`init`]'s `on_violation`).
//!
//! This crate is not a sandbox of its own: it does not drop privileges,
//! change namespaces or limit resources.
//!
//! # Why threads start from the launcher
//!
//! A filter applies to one thread and is inherited by the threads it
//! creates afterwards, and filters stack: a thread runs under its own
//! filter and all its ancestors', so it can do only what every one of them
//! allows. A vCPU thread starts a device's worker when the guest's driver
//! starts the device, and an API connection thread starts workers for a
//! hot-plugged card; were those workers the vCPU's or the API thread's
//! children, their calls would have to be allowed on the vCPU or API
//! thread as well. So no confined thread creates another directly:
//! [`spawn`] hands the new thread to the *launcher*, a thread made in
//! [`init`] whose filter is the union of every kind's (and which does
//! nothing but start threads and wait for a SIGSYS report). Each thread it
//! starts installs its own kind's filter first thing, before running any
//! of the caller's code, so its effective filter is exactly its kind's.
//! The main thread may start threads of a kind whose list is inside its own
//! (the pre-faulting threads), with [`confine_current`] as their first call.

mod bpf;
mod filters;
mod kvm_ioctls;
mod launcher;
mod placement;
mod sigsys;
mod syscall_names;

use std::io;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use bpf::Action;
use libc::sock_filter;
pub use placement::{pinned_threads, place_spawned, PlacementScope};

/// Exit status of a process stopped because a thread made a system call
/// its filter forbids.
pub const EXIT_SECCOMP: i32 = 3;

/// What a filter does with a call outside its thread's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No filters at all.
    Off,
    /// The call goes through and the kernel logs it (`SECCOMP_RET_LOG`:
    /// the audit log, or the kernel log without auditd).
    Log,
    /// The call is trapped: the process names it and exits.
    #[default]
    Kill,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Self::Off),
            "log" => Ok(Self::Log),
            "kill" => Ok(Self::Kill),
            _ => Err(format!("'{s}' is not off, log or kill")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Log => "log",
            Self::Kill => "kill",
        })
    }
}

/// The kinds of thread a VMM has, each with its own allow list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// The main thread: builds VMs, waits for them to stop.
    Main,
    /// Starts every other thread (see the crate's documentation).
    Launcher,
    /// A vCPU: `KVM_RUN` and the exits it handles.
    Vcpu,
    /// virtio-blk's worker.
    VirtioBlk,
    /// A virtio-net queue pair's worker.
    VirtioNet,
    /// virtio-console's worker.
    VirtioConsole,
    /// virtio-rng's worker.
    VirtioRng,
    /// The balloon's worker.
    VirtioBalloon,
    /// A device worker of a kind not listed here (every device's calls).
    VirtioOther,
    /// A disk's I/O thread.
    DiskIo,
    /// The API's accept and connection threads.
    Api,
    /// Host input to the serial console.
    SerialInput,
    /// Pre-faulting guest memory before boot.
    Prealloc,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 13] = [
        Self::Main,
        Self::Launcher,
        Self::Vcpu,
        Self::VirtioBlk,
        Self::VirtioNet,
        Self::VirtioConsole,
        Self::VirtioRng,
        Self::VirtioBalloon,
        Self::VirtioOther,
        Self::DiskIo,
        Self::Api,
        Self::SerialInput,
        Self::Prealloc,
    ];

    /// The kind's name, as the test fault hook takes it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Launcher => "launcher",
            Self::Vcpu => "vcpu",
            Self::VirtioBlk => "virtio-blk",
            Self::VirtioNet => "virtio-net",
            Self::VirtioConsole => "virtio-console",
            Self::VirtioRng => "virtio-rng",
            Self::VirtioBalloon => "virtio-balloon",
            Self::VirtioOther => "virtio-device",
            Self::DiskIo => "disk-io",
            Self::Api => "api",
            Self::SerialInput => "serial-input",
            Self::Prealloc => "prealloc",
        }
    }

    /// The kind of a virtio device's worker, from the thread name it is
    /// given ("virtio-blk", "virtio-net-q0", ...).
    pub fn of_device_worker(name: &str) -> Self {
        [
            Self::VirtioBlk,
            Self::VirtioNet,
            Self::VirtioConsole,
            Self::VirtioRng,
            Self::VirtioBalloon,
        ]
        .into_iter()
        .find(|k| name.starts_with(k.label()))
        .unwrap_or(Self::VirtioOther)
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|&k| k == self)
            .expect("every kind is in ALL")
    }
}

/// A forbidden call, as the launcher reports it to [`init`]'s callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The thread's name ("vcpu0", "virtio-blk", "main").
    pub thread: String,
    /// The system call's number (x86_64).
    pub number: i32,
    /// For ioctl(2), its request number.
    pub ioctl: Option<u64>,
}

impl Violation {
    /// The system call's name, when the table knows the number.
    pub fn call_name(&self) -> &'static str {
        sigsys::call_name(self.number)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "thread \"{}\" made forbidden system call {} ({}",
            self.thread,
            self.number,
            self.call_name()
        )?;
        if let Some(request) = self.ioctl {
            write!(f, " {request:#x}")?;
        }
        f.write_str(")")
    }
}

/// Errors of [`init`] and [`confine_current`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filter could not be compiled (a bug in the lists).
    #[error("cannot build the {0} thread's seccomp filter: {1}")]
    Build(&'static str, String),
    /// The kernel refused a filter.
    #[error("cannot install the {0} thread's seccomp filter: {1}")]
    Install(&'static str, io::Error),
    /// The SIGSYS handler, the report pipe or the launcher could not be set up.
    #[error("cannot set up seccomp reporting: {0}")]
    Setup(io::Error),
    /// [`init`] ran twice.
    #[error("seccomp filters are already set up")]
    AlreadyInitialized,
}

/// A compiled filter, or why it could not be.
type Compiled = OnceLock<Result<Vec<sock_filter>, bpf::BuildError>>;

/// Each kind's filter and refusals (if any), compiled when a thread of
/// that kind is first confined: a VM that never hot-plugs a disk never
/// pays for the disk threads' filters.
struct Filters {
    mode: Mode,
    by_kind: [Compiled; ThreadKind::ALL.len()],
    refusals: [Compiled; ThreadKind::ALL.len()],
}

static FILTERS: OnceLock<Option<Filters>> = OnceLock::new();

/// With filters off, the thread that called [`init`] (the main thread):
/// [`spawn`] starts threads on its CPUs, as the launcher (which it
/// started, and which emulator pins move with it) does with filters on.
static SPAWNER: OnceLock<libc::pid_t> = OnceLock::new();

/// The test fault hook's target (debug builds only): a kind's label or a
/// thread's name, from `VIREO_TEST_SECCOMP_FAULT`.
#[cfg(debug_assertions)]
static FAULT_TARGET: OnceLock<Option<String>> = OnceLock::new();

/// `kind`'s filter. The threads that start others (main, launcher) also
/// turn clone3 away with ENOSYS, whatever their list says: its flags are
/// in memory a filter cannot read, and the C library falls back to
/// clone, whose flags it can. Their children inherit that answer under
/// their own filter, which has no clone3 and so traps it.
pub(crate) fn compile(kind: ThreadKind, mode: Mode) -> Result<Vec<sock_filter>, bpf::BuildError> {
    let mismatch = match mode {
        Mode::Kill => Action::Trap,
        Mode::Log | Mode::Off => Action::Log,
    };
    let fixed: &[(i64, Action)] = if matches!(kind, ThreadKind::Main | ThreadKind::Launcher) {
        &[(libc::SYS_clone3, Action::Errno(ENOSYS))]
    } else {
        &[]
    };
    bpf::program(&filters::rules(kind), fixed, Action::Allow, mismatch)
}

/// The filter that answers `kind`'s refused calls with EACCES, if it has
/// any.
pub(crate) fn compile_refusals(
    kind: ThreadKind,
) -> Result<Option<Vec<sock_filter>>, bpf::BuildError> {
    let rules = filters::refused(kind);
    if rules.is_empty() {
        return Ok(None);
    }
    bpf::program(&rules, &[], Action::Errno(EACCES), Action::Allow).map(Some)
}

const ENOSYS: u16 = 38;
const EACCES: u16 = 13;

/// Confine this process's threads from now on: install the SIGSYS
/// reporter (in [`Mode::Kill`]), start the launcher, and confine the
/// calling thread as [`ThreadKind::Main`]. Each kind's filter is compiled
/// when a thread of that kind is first confined.
///
/// `on_violation` runs on the launcher when a thread made a forbidden
/// call (before the process exits with [`EXIT_SECCOMP`]): the place to
/// record why the VMM ended. With [`Mode::Off`] nothing is installed and
/// [`spawn`] starts threads directly.
pub fn init(mode: Mode, on_violation: Box<dyn Fn(&Violation) + Send>) -> Result<(), Error> {
    if mode == Mode::Off {
        let _ = SPAWNER.set(placement::gettid());
        return FILTERS.set(None).map_err(|_| Error::AlreadyInitialized);
    }
    #[cfg(debug_assertions)]
    let _ = FAULT_TARGET.set(std::env::var("VIREO_TEST_SECCOMP_FAULT").ok());
    FILTERS
        .set(Some(Filters {
            mode,
            by_kind: std::array::from_fn(|_| OnceLock::new()),
            refusals: std::array::from_fn(|_| OnceLock::new()),
        }))
        .map_err(|_| Error::AlreadyInitialized)?;
    // The main thread runs under the launcher's filter, installed here
    // before the launcher starts, which inherits it and installs nothing:
    // one filter for the two instead of two nearly equal ones. (Main's own
    // list lacks only what a few other kinds need: three ioctls, three
    // socket kinds, getpeername, getgroups, the timerfd calls and fcntl
    // with any command; each filter installed is a kernel compilation of
    // about 0.1 ms of every start.) Compiled before anything starts, so a
    // broken list is said here, once.
    filter_of(ThreadKind::Launcher)?;
    let reports = if mode == Mode::Kill {
        Some(sigsys::install().map_err(Error::Setup)?)
    } else {
        None
    };
    install_as(ThreadKind::Main, ThreadKind::Launcher)?;
    launcher::start(reports, on_violation).map_err(Error::Setup)
}

/// `kind`'s filter, compiled on first use.
fn filter_of(kind: ThreadKind) -> Result<&'static [sock_filter], Error> {
    let Some(Some(filters)) = FILTERS.get() else {
        return Ok(&[]);
    };
    filters.by_kind[kind.index()]
        .get_or_init(|| compile(kind, filters.mode))
        .as_deref()
        .map_err(|e| Error::Build(kind.label(), e.to_string()))
}

/// `kind`'s refusals, compiled on first use (empty if it has none).
fn refusals_of(kind: ThreadKind) -> Result<&'static [sock_filter], Error> {
    let Some(Some(filters)) = FILTERS.get() else {
        return Ok(&[]);
    };
    filters.refusals[kind.index()]
        .get_or_init(|| compile_refusals(kind).map(Option::unwrap_or_default))
        .as_deref()
        .map_err(|e| Error::Build(kind.label(), e.to_string()))
}

/// Whether filters are being installed ([`init`] ran with a mode other
/// than off).
pub fn is_active() -> bool {
    matches!(FILTERS.get(), Some(Some(_)))
}

/// Install `kind`'s filter on the calling thread (nothing when filters are
/// off). For threads a confined thread starts itself; [`spawn`] calls it
/// for the threads it starts.
pub fn confine_current(kind: ThreadKind) -> Result<(), Error> {
    install_as(kind, kind)
}

/// Name the calling thread for the SIGSYS report as a thread of `kind`,
/// and install `filter`'s filter (its kind's, or the launcher's on the
/// main thread).
fn install_as(kind: ThreadKind, filter: ThreadKind) -> Result<(), Error> {
    if !is_active() {
        return Ok(());
    }
    let name = thread_name(kind);
    sigsys::set_thread_name(&name, kind == ThreadKind::Launcher);
    let refusals = refusals_of(filter)?;
    let filter = filter_of(filter)?;
    // No SECCOMP_FILTER_FLAG_SPEC_ALLOW: where the host's policy is
    // spec_store_bypass_disable=seccomp, a filtered thread keeps the
    // speculative store bypass mitigation (docs/security.md).
    if !refusals.is_empty() {
        bpf::install(refusals, 0).map_err(|e| Error::Install(kind.label(), e))?;
    }
    bpf::install(filter, 0).map_err(|e| Error::Install(kind.label(), e))?;
    #[cfg(debug_assertions)]
    fault_hook(kind, &name);
    Ok(())
}

/// The calling thread's name, or `kind`'s label if it has none.
fn thread_name(kind: ThreadKind) -> String {
    std::thread::current()
        .name()
        .map_or_else(|| kind.label().to_owned(), str::to_owned)
}

/// Name the launcher thread for the SIGSYS report. It installs no filter:
/// the main thread started it under the launcher's own ([`init`]).
pub(crate) fn confine_launcher() {
    if !is_active() {
        return;
    }
    let name = thread_name(ThreadKind::Launcher);
    sigsys::set_thread_name(&name, true);
    #[cfg(debug_assertions)]
    fault_hook(ThreadKind::Launcher, &name);
}

/// Test-only (debug builds): when `VIREO_TEST_SECCOMP_FAULT` names this
/// thread's kind or name, make a call no filter allows, right after the
/// filter is installed, so tests can watch the report and the exit.
#[cfg(debug_assertions)]
fn fault_hook(kind: ThreadKind, name: &str) {
    let Some(Some(target)) = FAULT_TARGET.get() else {
        return;
    };
    if target == kind.label() || target == name {
        // getppid: harmless if let through (log mode), and in no list.
        // SAFETY: a system call with no arguments and no effect.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

/// Start a thread called `name` that runs `f` under `kind`'s filter. With
/// filters on, the launcher starts it (see the crate's documentation);
/// the thread installs its filter before `f` runs. Returns once the
/// thread exists.
pub fn spawn<F, T>(kind: ThreadKind, name: String, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let cpus = placement::current();
    // The placement comes before the filter, which need not allow it.
    let place = move || {
        cpus.and_then(|c| match placement::enter(&c) {
            Ok(pinned) => Some(pinned),
            Err(e) => {
                // A pin checked at start that no longer holds (the CPU
                // went offline, the cgroup's cpuset shrank): the thread
                // runs where it would have without one.
                eprintln!("vireo: cannot pin a thread to host CPUs {c:?}: {e}; it runs unpinned");
                None
            }
        })
    };
    if !is_active() {
        // Not the caller's CPUs: a device's worker started on a pinned
        // vCPU would share that vCPU's CPU (with filters on, the launcher
        // starts it). A failure leaves it where it would have been.
        let spawner = SPAWNER.get().copied();
        return std::thread::Builder::new().name(name).spawn(move || {
            if let Some(tid) = spawner {
                let _ = placement::follow(tid);
            }
            let _pinned = place();
            f()
        });
    }
    let body = move || {
        let _pinned = place();
        if let Err(e) = confine_current(kind) {
            // Never run a thread's work unconfined.
            eprintln!("vireo: {e}");
            std::process::abort();
        }
        f()
    };
    launcher::run(move || std::thread::Builder::new().name(name).spawn(body))
}

#[cfg(test)]
mod tests {
    //! The programs against seccompiler's, which this crate installed
    //! before it emitted its own: same answers for every call number,
    //! with arguments that pass and nearly pass each rule.

    use super::*;
    use crate::bpf::interp::run;
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

    const X86_64: u32 = 0xc000_003e;

    fn seccompiler_program(
        rules: &bpf::Rules,
        mismatch: SeccompAction,
        matched: SeccompAction,
    ) -> Vec<sock_filter> {
        let rules = rules
            .iter()
            .map(|(&nr, list)| (nr, list.iter().map(bpf::Rule::to_seccompiler).collect()))
            .collect();
        let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64).unwrap();
        BpfProgram::try_from(filter)
            .unwrap()
            .iter()
            .map(|i| sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect()
    }

    /// The kernel's answer from stacked filters: the most severe action.
    fn stacked(programs: &[&[sock_filter]], nr: u32, args: &[u64; 6]) -> u32 {
        programs
            .iter()
            .map(|p| run(p, X86_64, nr, args).unwrap())
            .min_by_key(|&r| (r & 0xffff_0000).cast_signed())
            .unwrap()
    }

    #[test]
    fn every_kind_answers_as_seccompiler_did() {
        for mode in [Mode::Kill, Mode::Log] {
            let mismatch = if mode == Mode::Kill {
                SeccompAction::Trap
            } else {
                SeccompAction::Log
            };
            let no_clone3 = seccompiler_program(
                &[(libc::SYS_clone3, Vec::new())].into(),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
            );
            for kind in ThreadKind::ALL {
                let rules = filters::rules(kind);
                let refused = filters::refused(kind);
                let mut old: Vec<Vec<sock_filter>> = vec![seccompiler_program(
                    &rules,
                    mismatch.clone(),
                    SeccompAction::Allow,
                )];
                if matches!(kind, ThreadKind::Main | ThreadKind::Launcher) {
                    old.push(no_clone3.clone());
                }
                if !refused.is_empty() {
                    old.push(seccompiler_program(
                        &refused,
                        SeccompAction::Allow,
                        SeccompAction::Errno(libc::EACCES as u32),
                    ));
                }
                let mut new = vec![compile(kind, mode).unwrap()];
                new.extend(compile_refusals(kind).unwrap());
                assert!(new[0].len() <= 4096);
                let old: Vec<&[sock_filter]> = old.iter().map(Vec::as_slice).collect();
                let new: Vec<&[sock_filter]> = new.iter().map(Vec::as_slice).collect();
                for nr in (0..600).chain([0x4000_0000, 0x4000_0001, u32::MAX]) {
                    let mut samples = vec![[0u64; 6], [u64::MAX; 6]];
                    for list in [rules.get(&i64::from(nr)), refused.get(&i64::from(nr))]
                        .into_iter()
                        .flatten()
                    {
                        for rule in list {
                            let mut passing = [0u64; 6];
                            for c in rule.conds() {
                                let (arg, values) = c.samples();
                                passing[arg] = values[0];
                                for v in values {
                                    let mut a = [0u64; 6];
                                    a[arg] = v;
                                    samples.push(a);
                                }
                            }
                            samples.push(passing);
                            for arg in 0..6 {
                                let mut a = passing;
                                a[arg] ^= 0x8000_0000_0000_0000;
                                samples.push(a);
                                a[arg] ^= 0x8000_0000_8000_0000;
                                samples.push(a);
                            }
                        }
                    }
                    for args in &samples {
                        assert_eq!(
                            stacked(&new, nr, args),
                            stacked(&old, nr, args),
                            "{kind:?} {mode}: call {nr} with {args:x?}"
                        );
                    }
                }
                // Another architecture is killed before anything else.
                for p in &new {
                    assert_eq!(
                        run(p, 0x4000_0003, 0, &[0; 6]),
                        Ok(libc::SECCOMP_RET_KILL_PROCESS)
                    );
                }
            }
        }
    }
}
