//! The crate's error type.

/// Errors from talking to KVM. Each names the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm: {0} (is the kvm module loaded and do you have access?)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The host's KVM API version is not the stable one.
    #[error("unsupported KVM API version {0} (need 12)")]
    ApiVersion(i32),
    /// A capability the VMM requires is missing.
    #[error("KVM lacks a required capability: {0}")]
    MissingCapability(&'static str),
    /// An ioctl failed; the first field names it.
    #[error("KVM {0} failed: {1}")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
    /// More vCPUs were asked for than KVM allows.
    #[error("{requested} vCPUs requested but this host's KVM allows at most {max}")]
    TooManyVcpus {
        /// vCPUs asked for.
        requested: usize,
        /// KVM's limit.
        max: usize,
    },
    /// A memory region is not addressable by KVM's slot API.
    #[error("guest memory region at {0:#x} cannot be registered: {1}")]
    MemoryRegion(u64, &'static str),
    /// KVM refused to set an MSR.
    #[error("KVM refused to set MSR {0:#x}")]
    MsrRejected(u32),
    /// More MSRs than one KVM_SET_MSRS call takes.
    #[error("{0} MSRs do not fit in one KVM_SET_MSRS call")]
    TooManyMsrs(usize),
    /// The GSI routing table outgrew what KVM takes.
    #[error("too many interrupt routes for KVM")]
    TooManyRoutes,
    /// KVM only has a PIT next to its own PIC and IOAPIC.
    #[error("the in-kernel PIT needs the in-kernel irqchip (--irqchip=kernel)")]
    PitNeedsKernelIrqchip,
    /// Installing the vCPU kick signal handler failed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Map a kvm-ioctls result into ours, naming the ioctl.
pub(crate) trait IoctlContext<T> {
    fn ioctl(self, what: &'static str) -> Result<T>;
}

impl<T> IoctlContext<T> for std::result::Result<T, kvm_ioctls::Error> {
    fn ioctl(self, what: &'static str) -> Result<T> {
        self.map_err(|e| Error::Ioctl(what, e))
    }
}
