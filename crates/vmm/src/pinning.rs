//! Host CPU placement of the VMM's threads (`--vcpu-pin`,
//! `--emulator-pin`), and what `/proc` says about where they ran.
//!
//! A vCPU thread sets its own affinity when it starts: its pin, or every
//! CPU the process may use. Every other thread (main, API, device workers,
//! I/O workers) is an "emulator" thread: the emulator pin is set on all of
//! them at once, and threads spawned later inherit it from the thread that
//! spawns them, which is never a vCPU thread.

use std::str::FromStr;
use std::sync::OnceLock;

/// Parse a host CPU list as taskset and cgroups write it: `0-3,6`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("'{s}' is not a CPU list like 0-3,6");
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.trim().parse().map_err(|_| bad())?;
        let b: usize = b.trim().parse().map_err(|_| bad())?;
        if a > b || b >= CPU_SET_BITS {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A host CPU list as a flag value (`--emulator-pin 0-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

impl FromStr for CpuList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_cpu_list(s).map(Self)
    }
}

/// One `--vcpu-pin VCPU:CPULIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuPin {
    /// The vCPU's index.
    pub vcpu: u32,
    /// Host CPUs it may run on.
    pub cpus: Vec<usize>,
}

impl FromStr for VcpuPin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (vcpu, cpus) = s
            .split_once(':')
            .ok_or_else(|| format!("--vcpu-pin '{s}' is not VCPU:CPULIST (e.g. 0:2-3)"))?;
        let vcpu = vcpu
            .parse()
            .map_err(|_| format!("--vcpu-pin '{s}': '{vcpu}' is not a vCPU number"))?;
        let cpus = parse_cpu_list(cpus).map_err(|e| format!("--vcpu-pin {s}: {e}"))?;
        Ok(Self { vcpu, cpus })
    }
}

/// One `--iothread id=N[,cpus=CPULIST]`: an I/O thread disks name with
/// `iothread=N` (libvirt's `iothreadids` and `iothreadpin`). A disk on it
/// runs its worker and I/O threads on its CPUs; one without CPUs runs
/// them with the emulator's threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoThread {
    /// Its id, 1 or more (libvirt numbers I/O threads from 1).
    pub id: u32,
    /// Host CPUs its disks' threads run on.
    pub cpus: Option<Vec<usize>>,
}

impl FromStr for IoThread {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut id = None;
        let mut cpus = None;
        for kv in s.split(',') {
            match kv.split_once('=') {
                Some(("id", v)) => {
                    id = Some(v.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        format!("--iothread {s}: id={v} is not a number from 1 up")
                    })?)
                }
                Some(("cpus", v)) => {
                    cpus = Some(parse_cpu_list(v).map_err(|e| format!("--iothread {s}: {e}"))?)
                }
                _ => {
                    return Err(format!(
                        "--iothread {s}: '{kv}' is not id=N or cpus=CPULIST"
                    ))
                }
            }
        }
        let id = id.ok_or_else(|| format!("--iothread {s}: id= is missing"))?;
        Ok(Self { id, cpus })
    }
}

/// Bits in the affinity masks used here (glibc's `cpu_set_t`).
const CPU_SET_BITS: usize = 1024;

/// The CPUs this process was allowed to use when it started, before any
/// pin narrowed a thread's set: what every pin is checked against, and
/// what an unpinned vCPU runs on.
pub fn allowed_cpus() -> &'static [usize] {
    static ALLOWED: OnceLock<Vec<usize>> = OnceLock::new();
    ALLOWED.get_or_init(|| {
        let cpus = thread_affinity(0).unwrap_or_default();
        if cpus.is_empty() {
            // Cannot happen for a running thread; keep pins checkable.
            (0..num_cpus_online()).collect()
        } else {
            cpus
        }
    })
}

fn num_cpus_online() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Refuse a CPU list that names a CPU outside [`allowed_cpus`].
pub fn check_cpus(cpus: &[usize], what: &str) -> Result<(), String> {
    if cpus.is_empty() {
        return Err(format!("{what}: the CPU list is empty"));
    }
    let allowed = allowed_cpus();
    if let Some(bad) = cpus.iter().find(|c| !allowed.contains(c)) {
        return Err(format!(
            "{what}: host CPU {bad} is not one this process may use ({})",
            cpu_list_string(allowed)
        ));
    }
    Ok(())
}

/// `0-3,6` for a sorted list.
pub fn cpu_list_string(cpus: &[usize]) -> String {
    let ids: Vec<u32> = cpus
        .iter()
        .map(|&c| u32::try_from(c).unwrap_or(u32::MAX))
        .collect();
    crate::numa::list_string(&ids)
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus.iter().filter(|&&c| c < CPU_SET_BITS) {
        // SAFETY: `c` is below the set's size, checked above.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Set the affinity of thread `tid` (0: the calling thread).
pub fn set_thread_affinity(tid: libc::pid_t, cpus: &[usize]) -> std::io::Result<()> {
    let set = cpu_set(cpus);
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The affinity of thread `tid` (0: the calling thread).
pub fn thread_affinity(tid: libc::pid_t) -> std::io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most the size passed into `set`.
    let rc = unsafe { libc::sched_getaffinity(tid, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: reading bits of an initialized set, below its size.
    Ok((0..CPU_SET_BITS)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// The calling thread's id.
pub fn current_tid() -> libc::pid_t {
    // The raw system call: a static glibc build leaves its gettid()
    // wrapper an unresolved weak symbol, so calling it jumps to address 0.
    // SAFETY: gettid has no arguments and no memory effects.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    libc::pid_t::try_from(tid).unwrap_or(-1)
}

/// Pin every thread of this process except those in `keep` (and the
/// io_uring workers the kernel made for them) to `cpus`.
pub fn pin_emulator(cpus: &[usize], keep: &[libc::pid_t]) -> std::io::Result<()> {
    // The set is captured before the first pin narrows it.
    let _ = allowed_cpus();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if keep.contains(&tid) || keep.contains(&io_uring_owner(tid).unwrap_or(tid)) {
            continue;
        }
        match set_thread_affinity(tid, cpus) {
            Ok(()) => {}
            // The thread ended between the listing and the call.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The thread an io_uring worker of this process works for: the kernel
/// names them `iou-wrk-TID` after the thread that submitted, and starts
/// them with its affinity.
fn io_uring_owner(tid: libc::pid_t) -> Option<libc::pid_t> {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .ok()?
        .trim()
        .strip_prefix("iou-wrk-")?
        .parse()
        .ok()
}

/// Where a thread last ran and how much CPU time it has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStat {
    /// The host CPU it last ran on.
    pub cpu: u32,
    /// Time it has spent on a CPU, in nanoseconds.
    pub cpu_time_ns: u64,
}

/// Read [`ThreadStat`] of one of this process's threads from /proc.
pub fn thread_stat(tid: libc::pid_t) -> std::io::Result<ThreadStat> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))?;
    let bad = || std::io::Error::other(format!("unexpected /proc/self/task/{tid}/stat"));
    // The command name (field 2) may hold spaces and parentheses: count
    // fields after its closing parenthesis. Field 3 is the first after it.
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied().ok_or_else(bad);
    let cpu: u32 = field(39)?.parse().map_err(|_| bad())?;
    let cpu_time_ns = match std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")) {
        Ok(s) => s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(bad)?,
        Err(_) => {
            // Without schedstat: utime + stime, in clock ticks.
            let utime: u64 = field(14)?.parse().map_err(|_| bad())?;
            let stime: u64 = field(15)?.parse().map_err(|_| bad())?;
            // SAFETY: sysconf has no memory effects.
            let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
                .unwrap_or(100)
                .max(1);
            (utime + stime) * (1_000_000_000 / hz)
        }
    };
    Ok(ThreadStat { cpu, cpu_time_ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_pins_parse() {
        assert_eq!(parse_cpu_list("0-2,5,1").unwrap(), vec![0, 1, 2, 5]);
        for bad in ["", "a", "3-1", "0,,1", "-1", "5000"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
        let p: VcpuPin = "1:0-1".parse().unwrap();
        assert_eq!((p.vcpu, p.cpus), (1, vec![0, 1]));
        for (s, why) in [
            ("1", "not VCPU:CPULIST"),
            ("x:0", "not a vCPU number"),
            ("0:z", "not a CPU list"),
        ] {
            let err = s.parse::<VcpuPin>().unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }

    #[test]
    fn cpus_outside_the_allowed_set_are_refused() {
        let allowed = allowed_cpus();
        check_cpus(&allowed[..1], "--emulator-pin").unwrap();
        let err = check_cpus(&[1000], "--emulator-pin").unwrap_err();
        assert!(err.contains("host CPU 1000 is not one"), "{err}");
        assert!(check_cpus(&[], "x").unwrap_err().contains("empty"));
    }

    #[test]
    fn a_thread_is_pinned_and_its_stat_read() {
        let first = allowed_cpus()[0];
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            set_thread_affinity(0, &[first]).unwrap();
            // Spin a little so the thread has run on its CPU.
            let mut x = 0u64;
            for i in 0..1_000_000u64 {
                x = x.wrapping_add(i);
            }
            std::hint::black_box(x);
            let tid = current_tid();
            let stat = thread_stat(tid).unwrap();
            let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
            tx.send((thread_affinity(0).unwrap(), stat, status))
                .unwrap();
        })
        .join()
        .unwrap();
        let (affinity, stat, status) = rx.recv().unwrap();
        assert_eq!(affinity, vec![first]);
        assert_eq!(stat.cpu as usize, first);
        assert!(stat.cpu_time_ns > 0);
        assert!(
            status.contains(&format!("Cpus_allowed_list:\t{first}\n")),
            "{status}"
        );
    }
}
