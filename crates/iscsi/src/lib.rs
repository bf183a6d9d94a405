//! An iSCSI initiator in user space: a small hand-written binding to
//! libiscsi (the library QEMU's iscsi block driver and libvirt's
//! `iscsi-direct` pool use) with a safe API.
//!
//! A [`Session`] logs in to one target and sends the SCSI commands a disk
//! needs: REPORT LUNS, INQUIRY, READ CAPACITY (16), READ/WRITE (16),
//! SYNCHRONIZE CACHE (16) and UNMAP; [`discover`] asks a portal for its
//! targets. Every call is bounded by the login's timeout: libiscsi's
//! asynchronous API is driven by our own poll loop, so a dead target
//! costs an error, never a hung thread. A session that lost its target
//! says so ([`Session::is_broken`]); reconnecting is the caller's choice.
//! A [`SessionQueue`] serves one session on a thread of its own, so that
//! commands from many threads are in flight on it at once, and logs in
//! again (once per command) when the session is lost.
//! This crate knows nothing of virtio, block images or pools.
//!
//! libiscsi is loaded when first needed ([`load`]), not linked: a process
//! that never reaches the network pays nothing for it at start. A process
//! that will confine itself (seccomp forbids mapping new code, a jail
//! hides the library) calls [`load`] first.
//!
//! With the `test-target` feature, `test_target` runs a real `tgtd` in
//! a network namespace for tests.

mod ffi;
mod queue;
mod scsi;
mod session;
#[cfg(feature = "test-target")]
pub mod test_target;
mod url;

pub use queue::{ServiceBody, SessionQueue};
pub use scsi::{Capacity, DeviceType};
pub use session::{discover, Chap, DiscoveredTarget, Login, Session};
pub use url::{LunUrl, DEFAULT_PORT};

/// Loads libiscsi (its soname: [`soname`]) if it is not loaded yet.
/// Everything in this crate that talks to a server calls it first and
/// fails with [`Error::Unavailable`] when it cannot; call it before a
/// process confines itself.
pub fn load() -> Result<()> {
    ffi::LIBISCSI
        .load()
        .map(|_| ())
        .map_err(|e| Error::Unavailable(e.to_string()))
}

/// The soname libiscsi is loaded by.
pub fn soname() -> &'static str {
    ffi::LIBISCSI.soname()
}

/// Errors from iSCSI sessions.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The library could not be loaded (not installed, or the process
    /// was confined before it was loaded).
    #[error("{0}")]
    Unavailable(String),
    /// An argument libiscsi cannot take (a NUL in a name, a transfer
    /// that is no whole number of blocks).
    #[error("{0}")]
    Invalid(String),
    /// The target did not answer in time.
    #[error("{what}: no answer from the target in time")]
    Timeout {
        /// The command or step.
        what: &'static str,
    },
    /// The connection failed or was lost.
    #[error("{what}: {message}")]
    Connection {
        /// The command or step.
        what: &'static str,
        /// libiscsi's message.
        message: String,
    },
    /// The target refused the login (wrong CHAP credentials, unknown
    /// target, initiator not allowed).
    #[error("login refused: {0}")]
    Login(String),
    /// The target answered with a CHECK CONDITION.
    #[error("{what}: {message} (sense key {key:#x}, ASC/ASCQ {ascq:#06x})")]
    Scsi {
        /// The command.
        what: &'static str,
        /// Sense key.
        key: u8,
        /// Additional sense code and qualifier.
        ascq: u16,
        /// libiscsi's description.
        message: String,
    },
    /// The target's answer does not parse.
    #[error("malformed answer from the target: {0}")]
    Malformed(String),
    /// An `iscsi://` URL that does not parse.
    #[error("{0}")]
    Url(String),
}

impl Error {
    /// Whether the error is the connection's (deadline, lost connection),
    /// so a new session may succeed where this one failed.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Connection { .. })
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
