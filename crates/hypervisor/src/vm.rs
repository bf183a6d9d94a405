//! A KVM virtual machine: memory slots, interrupt controllers, irqfds.

use kvm_bindings::{
    kvm_enable_cap, kvm_msi, kvm_pit_config, kvm_reinject_control, kvm_userspace_memory_region,
    KVM_CAP_SPLIT_IRQCHIP, KVM_PIT_SPEAKER_DUMMY,
};
use std::sync::Mutex;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_io_nr;

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, IoctlContext, Result};
use crate::irq::{GsiRoutes, IOAPIC_PINS};
use crate::vcpu::Vcpu;

/// Where KVM may put the three pages of its real-mode TSS on Intel hosts:
/// just below the BIOS area at the top of 4 GiB, inside our MMIO hole, where
/// no RAM or device lives.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

// KVM_REINJECT_CONTROL is _IO(KVMIO, 0x71) with a pointer argument, and
// kvm-ioctls has no wrapper for it.
ioctl_io_nr!(KVM_REINJECT_CONTROL, kvm_bindings::KVMIO, 0x71);

/// Where the interrupt controllers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IrqchipMode {
    /// LAPICs in KVM; IOAPIC (and no PIC) in user space
    /// (`KVM_CAP_SPLIT_IRQCHIP`). Cheap to create and to tear down.
    #[default]
    Split,
    /// LAPICs, IOAPIC and both PICs in KVM (`KVM_CREATE_IRQCHIP`).
    Kernel,
}

/// The in-kernel i8254 PIT, which KVM only offers with the in-kernel irqchip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PitMode {
    /// Ticks the guest missed are dropped (`KVM_REINJECT_CONTROL` off), as
    /// a guest that counts time by ticks only loses them under load.
    NoReinject,
    /// KVM's default: every missed tick is injected later.
    Reinject,
}

/// A VM: owns the KVM VM file descriptor.
pub struct Vm {
    fd: VmFd,
    max_vcpus: usize,
    routes: Mutex<GsiRoutes>,
}

impl Vm {
    pub(crate) fn new(fd: VmFd, max_vcpus: usize) -> Self {
        Self {
            fd,
            max_vcpus,
            routes: Mutex::new(GsiRoutes::new(IrqchipMode::Kernel)),
        }
    }

    /// Register every region of `mem` as a KVM memory slot, in order.
    ///
    /// The regions must outlive the VM: KVM keeps pointers into them.
    pub fn register_memory<M: GuestMemoryBackend>(&self, mem: &M) -> Result<()> {
        for (slot, region) in mem.iter().enumerate() {
            let start = region.start_addr().0;
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| Error::MemoryRegion(start, "region has no host mapping"))?;
            let slot = u32::try_from(slot)
                .map_err(|_| Error::MemoryRegion(start, "too many memory slots"))?;
            let region = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: start,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range is a live mapping owned by `mem`, which
            // the caller keeps alive for the VM's lifetime, and its length is
            // the region's own length.
            unsafe { self.fd.set_user_memory_region(region) }
                .ioctl("KVM_SET_USER_MEMORY_REGION")?;
        }
        Ok(())
    }

    /// Create the interrupt controllers `mode` puts in KVM, and the PIT if
    /// `pit` asks for one (only with [`IrqchipMode::Kernel`]).
    ///
    /// Must run before any vCPU is created so that vCPUs get an in-kernel LAPIC.
    pub fn create_irqchip(&self, mode: IrqchipMode, pit: Option<PitMode>) -> Result<()> {
        // Only meaningful (and required) on Intel VMX; elsewhere KVM accepts
        // and ignores it, and a software KVM may not implement it at all.
        if let Err(e) = self.fd.set_tss_address(KVM_TSS_ADDRESS) {
            if e.errno() != libc::ENOTTY && e.errno() != libc::EINVAL {
                return Err(Error::Ioctl("KVM_SET_TSS_ADDR", e));
            }
        }
        match mode {
            IrqchipMode::Split => {
                if pit.is_some() {
                    return Err(Error::PitNeedsKernelIrqchip);
                }
                let cap = kvm_enable_cap {
                    cap: KVM_CAP_SPLIT_IRQCHIP,
                    args: [u64::from(IOAPIC_PINS), 0, 0, 0],
                    ..Default::default()
                };
                self.fd
                    .enable_cap(&cap)
                    .ioctl("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)")?;
            }
            IrqchipMode::Kernel => {
                self.fd.create_irq_chip().ioctl("KVM_CREATE_IRQCHIP")?;
            }
        }
        *self.routes.lock().unwrap_or_else(|e| e.into_inner()) = GsiRoutes::new(mode);
        if let Some(pit) = pit {
            let config = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            self.fd.create_pit2(config).ioctl("KVM_CREATE_PIT2")?;
            if pit == PitMode::NoReinject {
                let control = kvm_reinject_control::default();
                // SAFETY: the VM fd is valid and `control` is the struct
                // the ioctl reads, alive for the call.
                let ret = unsafe { ioctl_with_ref(&self.fd, KVM_REINJECT_CONTROL(), &control) };
                if ret < 0 {
                    return Err(Error::Ioctl(
                        "KVM_REINJECT_CONTROL",
                        kvm_ioctls::Error::last(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Deliver the MSI message `address`/`data` to the guest's LAPICs now.
    pub fn signal_msi(&self, address: u64, data: u32) -> Result<()> {
        let [lo, hi] = crate::irq::split_u64(address);
        let msi = kvm_msi {
            address_lo: lo,
            address_hi: hi,
            data,
            ..Default::default()
        };
        // 0 means the guest blocked it (e.g. a disabled LAPIC): not an error
        // of ours, as on real hardware.
        self.fd.signal_msi(msi).ioctl("KVM_SIGNAL_MSI")?;
        Ok(())
    }

    /// Make every write to `fd` raise interrupt line `gsi`.
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd.register_irqfd(fd, gsi).ioctl("KVM_IRQFD")
    }

    /// Stop `fd` from raising `gsi`.
    pub fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd.unregister_irqfd(fd, gsi).ioctl("KVM_IRQFD")
    }

    /// Route `gsi` to the MSI message `address`/`data`.
    pub fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> Result<()> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.set_msi(gsi, address, data);
        self.push_routes(&routes)
    }

    /// Remove `gsi`'s MSI route.
    pub fn clear_msi_route(&self, gsi: u32) -> Result<()> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.clear(gsi);
        self.push_routes(&routes)
    }

    fn push_routes(&self, routes: &GsiRoutes) -> Result<()> {
        let table = routes.to_kvm().map_err(|_| Error::TooManyRoutes)?;
        self.fd.set_gsi_routing(&table).ioctl("KVM_SET_GSI_ROUTING")
    }

    /// Signal `fd` from inside KVM on any guest write to MMIO address
    /// `addr`, without an exit to user space.
    pub fn register_mmio_ioevent(&self, fd: &EventFd, addr: u64) -> Result<()> {
        self.fd
            .register_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .ioctl("KVM_IOEVENTFD")
    }

    /// Undo [`Vm::register_mmio_ioevent`].
    pub fn unregister_mmio_ioevent(&self, fd: &EventFd, addr: u64) -> Result<()> {
        self.fd
            .unregister_ioevent(fd, &IoEventAddress::Mmio(addr), NoDatamatch)
            .ioctl("KVM_IOEVENTFD")
    }

    /// Create vCPU `id` (also its APIC ID).
    pub fn create_vcpu(&self, id: u32) -> Result<Vcpu> {
        if id as usize >= self.max_vcpus {
            return Err(Error::TooManyVcpus {
                requested: id as usize + 1,
                max: self.max_vcpus,
            });
        }
        let fd = self
            .fd
            .create_vcpu(u64::from(id))
            .ioctl("KVM_CREATE_VCPU")?;
        Ok(Vcpu::new(fd, id))
    }
}
