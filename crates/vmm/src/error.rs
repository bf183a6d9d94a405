//! The crate's error type.

use std::path::PathBuf;

/// Errors building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot describe a VM.
    #[error("{0}")]
    InvalidConfig(String),
    /// The host cannot give the guest this much memory.
    #[error("--memory {requested_mib} MiB is more than this host can give (it has {host_mib} MiB of RAM and swap)")]
    NotEnoughHostMemory {
        /// Asked for, MiB.
        requested_mib: u64,
        /// The host's RAM and swap, MiB.
        host_mib: u64,
    },
    /// Mapping guest memory failed.
    #[error("cannot allocate guest memory: {0}")]
    GuestMemory(String),
    /// A file the VM needs cannot be opened.
    #[error("cannot open {what} {path}: {source}")]
    Open {
        /// What the file is ("kernel", "initrd").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Platform or boot setup failed.
    #[error(transparent)]
    Arch(#[from] arch::Error),
    /// KVM refused something.
    #[error(transparent)]
    Hypervisor(#[from] hypervisor::Error),
    /// Devices could not be placed on a bus.
    #[error("device setup: {0}")]
    Bus(#[from] devices::BusError),
    /// An event fd or other host resource could not be created.
    #[error("{0}: {1}")]
    Host(&'static str, #[source] std::io::Error),
    /// A PCI device could not be created or placed.
    #[error("PCI: {0}")]
    Pci(String),
    /// A network card could not be set up (TAP, MAC, queues).
    #[error("{0}")]
    Net(String),
    /// A disk image could not be opened.
    #[error("disk: {source}")]
    Disk {
        /// The image path.
        path: PathBuf,
        /// Why.
        #[source]
        source: block::Error,
    },
    /// Pausing the VM failed; it runs on.
    #[error("pause failed: {0}")]
    Pause(String),
    /// A vCPU thread could not be started.
    #[error("cannot start vCPU thread: {0}")]
    SpawnVcpu(#[source] std::io::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// An error and its causes on one line (`a: b: c`), each cause once: the
/// form every Vireo error takes on stderr and in API answers.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
