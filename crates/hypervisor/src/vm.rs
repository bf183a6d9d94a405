//! A KVM virtual machine: memory slots, interrupt controllers, irqfds.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, IoctlContext, Result};
use crate::vcpu::Vcpu;

/// Where KVM may put the three pages of its real-mode TSS on Intel hosts:
/// just below the BIOS area at the top of 4 GiB, inside our MMIO hole, where
/// no RAM or device lives.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// A VM: owns the KVM VM file descriptor.
pub struct Vm {
    fd: VmFd,
    max_vcpus: usize,
}

impl Vm {
    pub(crate) fn new(fd: VmFd, max_vcpus: usize) -> Self {
        Self { fd, max_vcpus }
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
