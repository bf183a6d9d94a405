//! A KVM virtual machine: memory slots, interrupt controllers, irqfds.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use std::sync::Mutex;

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, IoctlContext, Result};
use crate::irq::GsiRoutes;
use crate::vcpu::Vcpu;

/// Where KVM may put the three pages of its real-mode TSS on Intel hosts:
/// just below the BIOS area at the top of 4 GiB, inside our MMIO hole, where
/// no RAM or device lives.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

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
            routes: Mutex::new(GsiRoutes::default()),
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

    /// Create the in-kernel IOAPIC, PIC and LAPICs, and the PIT.
    ///
    /// Must run before any vCPU is created so that vCPUs get an in-kernel LAPIC.
    pub fn create_irqchip(&self) -> Result<()> {
        // Only meaningful (and required) on Intel VMX; elsewhere KVM accepts
        // and ignores it, and a software KVM may not implement it at all.
        if let Err(e) = self.fd.set_tss_address(KVM_TSS_ADDRESS) {
            if e.errno() != libc::ENOTTY && e.errno() != libc::EINVAL {
                return Err(Error::Ioctl("KVM_SET_TSS_ADDR", e));
            }
        }
        self.fd.create_irq_chip().ioctl("KVM_CREATE_IRQCHIP")?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd.create_pit2(pit).ioctl("KVM_CREATE_PIT2")?;
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
