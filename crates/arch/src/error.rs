//! The crate's error type.

/// Errors setting up a guest's platform and boot state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Less memory than the smallest guest needs.
    #[error("{requested} bytes of memory is too little (at least {min} bytes)")]
    MemoryTooSmall {
        /// Asked for.
        requested: u64,
        /// The minimum.
        min: u64,
    },
    /// The kernel image could not be loaded.
    #[error("cannot load kernel: {0}")]
    KernelLoad(#[source] linux_loader::loader::Error),
    /// The file is neither a bzImage nor an ELF.
    #[error("not a bzImage or ELF kernel")]
    NotAKernel,
    /// A kernel this VMM cannot boot.
    #[error("unsupported kernel: {0}")]
    UnsupportedKernel(String),
    /// The command line is longer than the kernel accepts.
    #[error("command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The command line is malformed.
    #[error("invalid command line: {0}")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The initrd does not fit in guest memory.
    #[error("initrd of {size} bytes does not fit in guest memory between {floor:#x} and {limit:#x} (give the VM more memory)")]
    InitrdDoesNotFit {
        /// Its size.
        size: u64,
        /// Lowest address it may use (end of the kernel).
        floor: u64,
        /// Highest end address the kernel can reach.
        limit: u64,
    },
    /// Reading the initrd failed.
    #[error("cannot read initrd: {0}")]
    InitrdRead(#[source] std::io::Error),
    /// Writing boot parameters failed.
    #[error("cannot write boot parameters: {0}")]
    BootParams(#[source] linux_loader::configurator::Error),
    /// The memory map has more entries than the boot protocol holds.
    #[error("memory map has {0} entries, more than the boot protocol holds")]
    TooManyMemoryMapEntries(usize),
    /// A boot structure could not be written to guest memory.
    #[error("cannot write boot structure at guest address {0:#x}")]
    BootStructure(u64),
    /// Building the CPUID table failed.
    #[error("cannot build the CPUID table")]
    Cpuid,
    /// ACPI table construction failed.
    #[error(transparent)]
    Acpi(#[from] crate::acpi::AcpiError),
    /// A KVM call failed while setting up a vCPU.
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::Error),
}
