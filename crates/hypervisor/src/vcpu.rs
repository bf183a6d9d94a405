//! A virtual CPU: its register state and the `KVM_RUN` loop step.

use kvm_bindings::{
    kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_xcrs, CpuId,
    Msrs, KVM_MP_STATE_UNINITIALIZED,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::error::{Error, IoctlContext, Result};
use crate::kick;

/// Serves the port and MMIO accesses a vCPU exits for.
///
/// Called on the vCPU thread from [`Vcpu::run`], before it returns.
pub trait IoHandler {
    /// The guest read `data.len()` bytes from I/O port `port`; fill `data`.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// The guest wrote `data` to I/O port `port`.
    fn pio_write(&self, port: u16, data: &[u8]);
    /// The guest read unbacked guest-physical address `addr`; fill `data`.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// The guest wrote `data` to unbacked guest-physical address `addr`.
    fn mmio_write(&self, addr: u64, data: &[u8]);
}

/// Why `KVM_RUN` returned, in the terms the VMM acts on.
#[derive(Debug)]
pub enum VmExit {
    /// A port or MMIO access, already served by the [`IoHandler`].
    Io,
    /// The guest halted with no in-kernel irqchip to wait on it.
    Hlt,
    /// Triple fault (or another condition KVM treats as shutdown).
    Shutdown,
    /// KVM reported a system event (`KVM_SYSTEM_EVENT_*`).
    SystemEvent(u32),
    /// KVM could not continue, e.g. it failed to emulate an instruction.
    InternalError(InternalError),
    /// Entering the guest failed.
    FailEntry {
        /// Hardware-specific failure reason.
        reason: u64,
    },
    /// `KVM_RUN` was interrupted (a kick); nothing happened in the guest.
    Interrupted,
    /// Any other exit reason, by name.
    Other(&'static str),
}

/// The details KVM gives with `KVM_EXIT_INTERNAL_ERROR`.
#[derive(Debug, Clone, Default)]
pub struct InternalError {
    /// `KVM_INTERNAL_ERROR_*` sub-reason (1 = emulation failure).
    pub suberror: u32,
    /// Extra words KVM attached (meaning depends on `suberror`).
    pub data: Vec<u64>,
}

impl InternalError {
    /// `KVM_INTERNAL_ERROR_EMULATION`.
    pub const EMULATION: u32 = 1;

    /// A human name for the sub-reason.
    pub fn describe(&self) -> &'static str {
        match self.suberror {
            1 => "instruction emulation failed",
            2 => "simultaneous exceptions",
            3 => "delivery event during exit",
            4 => "unexpected exit reason",
            _ => "unknown internal error",
        }
    }
}

/// One virtual CPU.
pub struct Vcpu {
    fd: VcpuFd,
    id: u32,
}

impl Vcpu {
    pub(crate) fn new(fd: VcpuFd, id: u32) -> Self {
        Self { fd, id }
    }

    /// The vCPU's index, which is also its APIC ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Set the CPUID leaves the guest sees.
    pub fn set_cpuid(&self, cpuid: &CpuId) -> Result<()> {
        self.fd.set_cpuid2(cpuid).ioctl("KVM_SET_CPUID2")
    }

    /// Set XCR0 (KVM_SET_XCRS). KVM refuses bits the CPUID set with
    /// [`Vcpu::set_cpuid`] does not offer, so call it after that.
    pub fn set_xcr0(&self, xcr0: u64) -> Result<()> {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = xcr0;
        self.fd.set_xcrs(&xcrs).ioctl("KVM_SET_XCRS")
    }

    /// Write MSRs; every entry must be accepted.
    pub fn set_msrs(&self, entries: &[(u32, u64)]) -> Result<()> {
        let list: Vec<kvm_msr_entry> = entries
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&list).map_err(|_| Error::TooManyMsrs(list.len()))?;
        let written = self.fd.set_msrs(&msrs).ioctl("KVM_SET_MSRS")?;
        match list.get(written) {
            Some(rejected) => Err(Error::MsrRejected(rejected.index)),
            None => Ok(()),
        }
    }

    /// General-purpose registers.
    pub fn regs(&self) -> Result<kvm_regs> {
        self.fd.get_regs().ioctl("KVM_GET_REGS")
    }

    /// Set general-purpose registers.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd.set_regs(regs).ioctl("KVM_SET_REGS")
    }

    /// Segment and control registers.
    pub fn sregs(&self) -> Result<kvm_sregs> {
        self.fd.get_sregs().ioctl("KVM_GET_SREGS")
    }

    /// Set segment and control registers.
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd.set_sregs(sregs).ioctl("KVM_SET_SREGS")
    }

    /// Set the FPU state.
    pub fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()> {
        self.fd.set_fpu(fpu).ioctl("KVM_SET_FPU")
    }

    /// The in-kernel local APIC's register page.
    pub fn lapic(&self) -> Result<kvm_lapic_state> {
        self.fd.get_lapic().ioctl("KVM_GET_LAPIC")
    }

    /// Set the in-kernel local APIC's register page.
    pub fn set_lapic(&self, lapic: &kvm_lapic_state) -> Result<()> {
        self.fd.set_lapic(lapic).ioctl("KVM_SET_LAPIC")
    }

    /// Put an application processor in wait-for-SIPI, as after power-on.
    pub fn set_wait_for_sipi(&self) -> Result<()> {
        let state = kvm_mp_state {
            mp_state: KVM_MP_STATE_UNINITIALIZED,
        };
        self.fd.set_mp_state(state).ioctl("KVM_SET_MP_STATE")
    }

    /// Translate a guest-virtual address with the vCPU's current paging.
    pub fn translate(&self, gva: u64) -> Option<u64> {
        let t = self.fd.translate_gva(gva).ok()?;
        (t.valid != 0).then_some(t.physical_address)
    }

    /// Make this thread the one that runs the vCPU, so kicks reach it.
    ///
    /// Call on the vCPU thread before the first [`Vcpu::run`]; the binding
    /// ends when the `Vcpu` is dropped.
    pub fn bind_to_current_thread(&mut self) {
        let run: *mut kvm_bindings::kvm_run = self.fd.get_kvm_run();
        kick::bind_current_thread(run);
    }

    /// Enter `KVM_RUN` with `immediate_exit` set, so it returns at once
    /// without running the guest: KVM does its first-run work for this
    /// thread (on x86 it starts the VM's NX huge page recovery worker,
    /// which takes the CPU affinity of the thread that starts it).
    pub fn enter_without_running(&mut self) -> Result<()> {
        self.fd.set_kvm_immediate_exit(1);
        let result = self.fd.run().map(|_| ());
        self.fd.set_kvm_immediate_exit(0);
        match result {
            Err(e) if e.errno() != libc::EINTR => Err(Error::Ioctl("KVM_RUN", e)),
            _ => Ok(()),
        }
    }

    /// Run the guest until its next exit, serving port and MMIO accesses
    /// through `io`.
    pub fn run(&mut self, io: &dyn IoHandler) -> Result<VmExit> {
        let exit = match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                io.pio_read(port, data);
                VmExit::Io
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                io.pio_write(port, data);
                VmExit::Io
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                io.mmio_read(addr, data);
                VmExit::Io
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                io.mmio_write(addr, data);
                VmExit::Io
            }
            Ok(VcpuExit::Hlt) => VmExit::Hlt,
            Ok(VcpuExit::Shutdown) => VmExit::Shutdown,
            Ok(VcpuExit::SystemEvent(kind, _)) => VmExit::SystemEvent(kind),
            Ok(VcpuExit::FailEntry(reason, _)) => VmExit::FailEntry { reason },
            Ok(VcpuExit::Intr) => VmExit::Interrupted,
            Ok(VcpuExit::InternalError) => VmExit::InternalError(InternalError::default()),
            Ok(other) => VmExit::Other(exit_name(&other)),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => VmExit::Interrupted,
            Err(e) => return Err(Error::Ioctl("KVM_RUN", e)),
        };
        match exit {
            // A kick: clear the flag so the next KVM_RUN runs the guest.
            VmExit::Interrupted => self.fd.set_kvm_immediate_exit(0),
            VmExit::InternalError(_) => return Ok(VmExit::InternalError(self.internal_error())),
            _ => {}
        }
        Ok(exit)
    }

    fn internal_error(&mut self) -> InternalError {
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM filled the `internal` member of the exit union because
        // the exit reason is KVM_EXIT_INTERNAL_ERROR.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        InternalError {
            suberror: internal.suberror,
            data: internal.data[..n].to_vec(),
        }
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // The kvm_run mapping goes away with the fd; make sure a late kick
        // on this thread does not write to it.
        kick::bind_current_thread(std::ptr::null_mut());
    }
}

fn exit_name(exit: &VcpuExit<'_>) -> &'static str {
    match exit {
        VcpuExit::Unknown => "unknown",
        VcpuExit::Exception => "exception",
        VcpuExit::Hypercall(_) => "hypercall",
        VcpuExit::Debug(_) => "debug",
        VcpuExit::IrqWindowOpen => "irq window open",
        VcpuExit::SetTpr => "set tpr",
        VcpuExit::TprAccess => "tpr access",
        VcpuExit::Nmi => "nmi",
        VcpuExit::Watchdog => "watchdog",
        VcpuExit::Epr => "epr",
        VcpuExit::IoapicEoi(_) => "ioapic eoi",
        VcpuExit::Hyperv => "hyperv",
        VcpuExit::X86Rdmsr(_) => "rdmsr",
        VcpuExit::X86Wrmsr(_) => "wrmsr",
        _ => "unexpected",
    }
}
