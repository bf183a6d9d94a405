//! `/dev/kvm` itself: capabilities and host-wide queries.

use std::os::fd::AsRawFd;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

use crate::cpuid_cache;
use crate::error::{Error, IoctlContext, Result};
use crate::vm::Vm;

/// An open `/dev/kvm`.
pub struct Hypervisor {
    kvm: Kvm,
    /// KVM's supported CPUID, once asked for or read from the cache.
    supported_cpuid: Option<CpuId>,
}

/// Capabilities Vireo cannot run without, with the name users see.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    // The PIT is optional (`--pit`); the split irqchip is the default
    // machine, and it delivers through MSI routes.
    (Cap::SplitIrqchip, "KVM_CAP_SPLIT_IRQCHIP"),
    (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
    (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
    (Cap::Ioeventfd, "KVM_CAP_IOEVENTFD"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
];

impl Hypervisor {
    /// Open `/dev/kvm` and check that it offers what Vireo needs.
    pub fn open() -> Result<Self> {
        let kvm = Kvm::new().map_err(Error::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != kvm_bindings::KVM_API_VERSION as i32 {
            return Err(Error::ApiVersion(version));
        }
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(*cap) {
                return Err(Error::MissingCapability(name));
            }
        }
        Ok(Self {
            kvm,
            supported_cpuid: None,
        })
    }

    /// Most vCPUs one VM may have.
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }

    /// The CPUID leaves KVM can present to a guest on this host: the
    /// answer [`Hypervisor::preload_supported_cpuid`] found, or KVM's.
    pub fn supported_cpuid(&self) -> Result<CpuId> {
        match &self.supported_cpuid {
            Some(cpuid) => Ok(cpuid.clone()),
            None => self.ask_supported_cpuid(),
        }
    }

    fn ask_supported_cpuid(&self) -> Result<CpuId> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .ioctl("KVM_GET_SUPPORTED_CPUID")
    }

    /// Get KVM's supported CPUID now, while files can still be opened (a
    /// jail or seccomp filter comes later): from the cache of earlier runs
    /// on this KVM instance (see `cpuid_cache.rs`), or, when `ask` is
    /// set, from KVM, storing it for later runs. Without `ask` a missing
    /// cache leaves the question to [`Hypervisor::supported_cpuid`].
    pub fn preload_supported_cpuid(&mut self, ask: bool) -> Result<()> {
        let path = cpuid_cache::default_path();
        let key = cpuid_cache::instance_key(self.kvm.as_raw_fd());
        if let (Some(path), Some(key)) = (&path, &key) {
            if let Some(cpuid) = cpuid_cache::load(path, key) {
                self.supported_cpuid = Some(cpuid);
                return Ok(());
            }
        }
        if !ask {
            return Ok(());
        }
        let cpuid = self.ask_supported_cpuid()?;
        if let (Some(path), Some(key)) = (&path, &key) {
            // Not fatal: the next run asks KVM again.
            let _ = cpuid_cache::store(path, key, &cpuid);
        }
        self.supported_cpuid = Some(cpuid);
        Ok(())
    }

    /// MSR indices KVM saves and restores for a vCPU.
    pub fn msr_index_list(&self) -> Result<Vec<u32>> {
        Ok(self
            .kvm
            .get_msr_index_list()
            .ioctl("KVM_GET_MSR_INDEX_LIST")?
            .as_slice()
            .to_vec())
    }

    /// Create an empty VM.
    pub fn create_vm(&self) -> Result<Vm> {
        let fd = self.kvm.create_vm().ioctl("KVM_CREATE_VM")?;
        Ok(Vm::new(fd, self.max_vcpus()))
    }
}
