//! vCPU threads: one per vCPU, each looping on `KVM_RUN` and reporting the
//! exits that end the VM.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use devices::{Bus, Ioapic};
use hypervisor::{IoHandler, Vcpu, VmExit};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMemory;

/// `KVM_SYSTEM_EVENT_*` kinds.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

/// Why a vCPU stopped the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuStop {
    /// The guest asked to power off through KVM (PSCI-style system event).
    PowerOff,
    /// The guest asked to reset through KVM.
    Reset,
    /// The guest cannot continue; the text says why and shows its state.
    Crash(String),
}

/// State the vCPU threads share with the thread that manages them.
pub struct VcpuShared {
    /// Set when the VM is stopping; vCPU threads leave their loop.
    pub stopping: AtomicBool,
    /// The first stop a vCPU reported.
    pub stop: Mutex<Option<VcpuStop>>,
    /// Written when `stop` is set.
    pub stop_evt: EventFd,
    /// Holds vCPUs out of the guest while the VM is paused.
    pub pause: PauseGate,
    /// Set by the power-off and reset devices (on the vCPU thread that
    /// wrote them) before they signal the VMM: that vCPU leaves its loop
    /// instead of running the guest on until the VMM's kick.
    pub ending: Arc<AtomicBool>,
}

/// Where vCPU threads wait while the VM is paused.
///
/// `requested` is read by every vCPU on every exit, so it is an atomic: a
/// shared mutex there would have all vCPUs contend on each MMIO or port
/// exit. It is only changed with `lock` held, so a vCPU that saw it set and
/// waits on `changed` under `lock` cannot miss the release.
#[derive(Default)]
pub struct PauseGate {
    requested: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
    parked: AtomicUsize,
}

impl PauseGate {
    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask vCPUs to stop at their next exit (the caller kicks them).
    pub fn request(&self) {
        let _guard = self.guard();
        self.requested.store(true, Ordering::Release);
    }

    /// Whether vCPUs are held (or asked to be).
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Wait until `count` vCPUs are parked; false after `timeout`.
    pub fn wait_parked(&self, count: usize, timeout: Duration) -> bool {
        let guard = self.guard();
        let (_guard, result) = self
            .changed
            .wait_timeout_while(guard, timeout, |_| {
                self.parked.load(Ordering::Acquire) < count
            })
            .unwrap_or_else(|e| e.into_inner());
        !result.timed_out()
    }

    /// Let parked vCPUs run again.
    pub fn release(&self) {
        let _guard = self.guard();
        self.requested.store(false, Ordering::Release);
        self.changed.notify_all();
    }

    /// Called by a vCPU thread between exits: park while a pause is
    /// requested and the VM is not stopping.
    fn park_if_requested(&self, stopping: &AtomicBool) {
        if !self.requested.load(Ordering::Acquire) {
            return;
        }
        let mut guard = self.guard();
        if !self.requested.load(Ordering::Acquire) {
            return;
        }
        self.parked.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_all();
        while self.requested.load(Ordering::Acquire) && !stopping.load(Ordering::Acquire) {
            guard = self.changed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        self.parked.fetch_sub(1, Ordering::AcqRel);
    }

    /// A vCPU that left its loop for good (the machine is ending) counts
    /// as parked from now on: a pause asked meanwhile finds it held.
    fn retire(&self) {
        let _guard = self.guard();
        self.parked.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_all();
    }

    /// Wake parked vCPUs so they notice the VM is stopping.
    pub fn wake_all(&self) {
        let _guard = self.guard();
        self.changed.notify_all();
    }
}

/// Exits of one vCPU, by reason.
#[derive(Debug, Default)]
pub struct VcpuCounters {
    mmio_read: AtomicU64,
    mmio_write: AtomicU64,
    pio_read: AtomicU64,
    pio_write: AtomicU64,
    hlt: AtomicU64,
    /// EOIs of level-triggered I/O APIC interrupts (split irqchip).
    ioapic_eoi: AtomicU64,
    /// Kicks (signals) that brought the vCPU out of KVM_RUN.
    interrupted: AtomicU64,
    other: AtomicU64,
}

impl VcpuCounters {
    /// The counters by name.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("mmio_read", get(&self.mmio_read)),
            ("mmio_write", get(&self.mmio_write)),
            ("pio_read", get(&self.pio_read)),
            ("pio_write", get(&self.pio_write)),
            ("hlt", get(&self.hlt)),
            ("ioapic_eoi", get(&self.ioapic_eoi)),
            ("interrupted", get(&self.interrupted)),
            ("other", get(&self.other)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The buses as one vCPU uses them, counting its exits.
struct CountingIo<'a> {
    io: &'a PlatformIo,
    counters: &'a VcpuCounters,
}

impl IoHandler for CountingIo<'_> {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        bump(&self.counters.pio_read);
        self.io.pio_read(port, data);
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        bump(&self.counters.pio_write);
        self.io.pio_write(port, data);
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        bump(&self.counters.mmio_read);
        self.io.mmio_read(addr, data);
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        bump(&self.counters.mmio_write);
        self.io.mmio_write(addr, data);
    }
}

impl VcpuShared {
    fn report(&self, stop: VcpuStop) {
        let mut slot = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(stop);
        }
        // A full eventfd counter only means the manager is already awake.
        let _ = self.stop_evt.write(1);
    }
}

/// The port and MMIO buses, as seen from a vCPU.
pub struct PlatformIo {
    /// Port I/O bus.
    pub pio: Bus,
    /// MMIO bus.
    pub mmio: Bus,
    /// The user-space I/O APIC of a split irqchip, told of the EOIs KVM
    /// exits for.
    pub ioapic: Option<Arc<Mutex<Ioapic>>>,
}

impl IoHandler for PlatformIo {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        if !self.pio.read(u64::from(port), data) {
            tracing::trace!(port, len = data.len(), "unclaimed port read");
        }
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        if !self.pio.write(u64::from(port), data) {
            tracing::trace!(port, len = data.len(), "unclaimed port write");
        }
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.mmio.read(addr, data) {
            tracing::debug!(addr, len = data.len(), "unclaimed MMIO read");
        }
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) {
        if !self.mmio.write(addr, data) {
            tracing::debug!(addr, len = data.len(), "unclaimed MMIO write");
        }
    }
}

/// A running vCPU thread.
pub struct VcpuThread {
    handle: JoinHandle<()>,
    tid: libc::pid_t,
}

impl VcpuThread {
    /// Start `vcpu` (vCPU number `index`) on its own thread, on the host
    /// CPUs `pin` names, or on any the process may use when it is `None`
    /// (the thread would otherwise inherit the emulator pin).
    pub fn spawn(
        mut vcpu: Vcpu,
        index: u32,
        pin: Option<&[usize]>,
        io: Arc<PlatformIo>,
        mem: GuestMemory,
        shared: Arc<VcpuShared>,
        counters: Arc<VcpuCounters>,
    ) -> std::io::Result<Self> {
        let cpus = pin.unwrap_or(crate::pinning::allowed_cpus()).to_vec();
        let (started, tid) = std::sync::mpsc::channel();
        let handle = confine::spawn(
            confine::ThreadKind::Vcpu,
            format!("vcpu{index}"),
            move || {
                // KVM's per-VM kernel worker starts in the first KVM_RUN
                // and takes the affinity of the thread it runs on: enter
                // once while this thread still has the emulator's (from
                // the thread that spawned it), then take the vCPU's own,
                // all before the guest runs.
                let placed = vcpu
                    .enter_without_running()
                    .map_err(std::io::Error::other)
                    .and_then(|()| crate::pinning::set_thread_affinity(0, &cpus))
                    .map(|()| crate::pinning::current_tid());
                let ok = placed.is_ok();
                let _ = started.send(placed);
                if !ok {
                    return;
                }
                vcpu.bind_to_current_thread();
                let io = CountingIo {
                    io: &io,
                    counters: &counters,
                };
                run_loop(&mut vcpu, index, &io, &mem, &shared, &counters);
            },
        )?;
        let tid = match tid.recv() {
            Ok(Ok(tid)) => tid,
            Ok(Err(e)) => {
                let _ = handle.join();
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("pinning vcpu{index}: {e}"),
                ));
            }
            Err(_) => {
                let _ = handle.join();
                return Err(std::io::Error::other(format!("vcpu{index} did not start")));
            }
        };
        Ok(Self { handle, tid })
    }

    /// The thread's id, for placing it and reading its /proc entries.
    pub fn tid(&self) -> libc::pid_t {
        self.tid
    }

    /// The thread's pthread handle, for kicking it from elsewhere while it
    /// is known to be alive.
    pub fn pthread(&self) -> libc::pthread_t {
        self.handle.as_pthread_t()
    }

    /// Kick the thread out of `KVM_RUN` (it re-checks `stopping`).
    pub fn kick(&self) {
        // SAFETY: the pthread handle is live until `join`, which consumes
        // self; the kick signal has a handler installed, so it cannot kill
        // the process.
        unsafe {
            libc::pthread_kill(self.handle.as_pthread_t(), hypervisor::kick_signal());
        }
    }

    /// Wait for the thread to finish.
    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("a vCPU thread panicked");
        }
    }
}

fn run_loop(
    vcpu: &mut Vcpu,
    index: u32,
    io: &CountingIo<'_>,
    mem: &GuestMemory,
    shared: &VcpuShared,
    counters: &VcpuCounters,
) {
    while !shared.stopping.load(Ordering::Acquire) {
        shared.pause.park_if_requested(&shared.stopping);
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        let stop = match vcpu.run(io) {
            Ok(VmExit::Io) if shared.ending.load(Ordering::Acquire) => {
                shared.pause.retire();
                return;
            }
            Ok(VmExit::Io) => continue,
            Ok(VmExit::IoapicEoi(vector)) => {
                bump(&counters.ioapic_eoi);
                tracing::debug!(vector, "I/O APIC EOI");
                if let Some(ioapic) = &io.io.ioapic {
                    ioapic
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .end_of_interrupt(vector);
                }
                continue;
            }
            Ok(VmExit::Interrupted) => {
                bump(&counters.interrupted);
                continue;
            }
            // With the in-kernel LAPIC, KVM waits for interrupts itself; a
            // HLT exit only means there was nothing to wait for.
            Ok(VmExit::Hlt) => {
                bump(&counters.hlt);
                std::thread::yield_now();
                continue;
            }
            Ok(VmExit::SystemEvent(SYSTEM_EVENT_SHUTDOWN)) => VcpuStop::PowerOff,
            Ok(VmExit::SystemEvent(SYSTEM_EVENT_RESET)) => VcpuStop::Reset,
            Ok(VmExit::SystemEvent(kind)) => crash(
                vcpu,
                index,
                mem,
                &format!("system event {kind} (guest crash)"),
            ),
            Ok(VmExit::Shutdown) => crash(vcpu, index, mem, "triple fault"),
            Ok(VmExit::InternalError(e)) => {
                let mut why = format!("KVM internal error: {}", e.describe());
                if !e.data.is_empty() {
                    let words: Vec<String> = e.data.iter().map(|d| format!("{d:#x}")).collect();
                    let _ = write!(why, " (data {})", words.join(" "));
                }
                crash(vcpu, index, mem, &why)
            }
            Ok(VmExit::FailEntry { reason }) => crash(
                vcpu,
                index,
                mem,
                &format!("VM entry failed (reason {reason:#x})"),
            ),
            Ok(VmExit::Other(name)) => crash(vcpu, index, mem, &format!("unexpected exit: {name}")),
            Err(e) => VcpuStop::Crash(format!("vcpu{index}: {e}")),
        };
        bump(&counters.other);
        shared.report(stop);
        return;
    }
}

/// Describe why and where a vCPU died: registers and the instruction bytes
/// at RIP, so a guest author can find the failing instruction. vCPUs are
/// named by index (as their threads are), not by APIC ID.
fn crash(vcpu: &Vcpu, index: u32, mem: &GuestMemory, why: &str) -> VcpuStop {
    let mut s = format!("vcpu{index}: {why}");
    let (Ok(r), Ok(sr)) = (vcpu.regs(), vcpu.sregs()) else {
        return VcpuStop::Crash(s);
    };
    let _ = write!(
        s,
        "\n  rip={:#018x} rsp={:#018x} rflags={:#010x}\
         \n  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\
         \n  rsi={:#018x} rdi={:#018x} rbp={:#018x}\
         \n  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}\
         \n  cs={:#06x} (base {:#x}, cpl {}, {}) ss={:#06x}",
        r.rip,
        r.rsp,
        r.rflags,
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rbp,
        sr.cr0,
        sr.cr2,
        sr.cr3,
        sr.cr4,
        sr.efer,
        sr.cs.selector,
        sr.cs.base,
        sr.cs.selector & 3,
        if sr.cs.l == 1 {
            "64-bit"
        } else if sr.cs.db == 1 {
            "32-bit"
        } else {
            "16-bit"
        },
        sr.ss.selector,
    );
    let linear = sr.cs.base.wrapping_add(r.rip);
    let paging = sr.cr0 & (1 << 31) != 0;
    let phys = if paging {
        vcpu.translate(linear)
    } else {
        Some(linear & 0xffff_ffff)
    };
    match phys {
        Some(phys) => {
            // An instruction is at most 15 bytes; read what memory holds.
            let mut bytes = Vec::new();
            for i in 0..15 {
                match mem.read_obj::<u8>(GuestAddress(phys.wrapping_add(i))) {
                    Ok(b) => bytes.push(format!("{b:02x}")),
                    Err(_) => break,
                }
            }
            let _ = write!(
                s,
                "\n  code at {phys:#x}: {}",
                if bytes.is_empty() {
                    "(not in guest RAM)".to_string()
                } else {
                    bytes.join(" ")
                }
            );
        }
        None => {
            let _ = write!(s, "\n  code: rip is not mapped");
        }
    }
    VcpuStop::Crash(s)
}
