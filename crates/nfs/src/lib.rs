//! An NFS client in user space: a small hand-written binding to libnfs
//! (the library QEMU's nfs block driver uses) with a safe API.
//!
//! A [`RemoteFile`] mounts one export and opens one file on it: stat,
//! pread, pwrite, fsync and ftruncate. Every call is bounded by the
//! open's timeout: libnfs's asynchronous API is driven by our own poll
//! loop, so a dead server costs an error, never a hung thread. libnfs's
//! own reconnection is off: a file that lost its server says so
//! ([`RemoteFile::is_broken`]) and reconnecting is the caller's choice,
//! as with the `iscsi` crate's sessions. A [`FileQueue`] serves one
//! opened file on a thread of its own, so that calls from many threads
//! are in flight on its connection at once. This crate knows nothing of
//! virtio, block images or pools.
//!
//! libnfs is loaded when first needed ([`load`]), not linked: a process
//! that never reaches the network pays nothing for it at start. A process
//! that will confine itself (seccomp forbids mapping new code, a jail
//! hides the library) calls [`load`] first.
//!
//! With the `test-server` feature, `test_server` runs a real
//! nfs-ganesha in a network namespace for tests.

mod ffi;
mod file;
mod queue;
#[cfg(feature = "test-server")]
pub mod test_server;
mod url;

pub use file::{OpenFlags, RemoteFile, Stat};
pub use queue::{FileQueue, ServiceBody};
pub use url::FileUrl;

/// Loads libnfs (its soname: [`soname`]) if it is not loaded yet.
/// Everything in this crate that talks to a server calls it first and
/// fails with [`Error::Unavailable`] when it cannot; call it before a
/// process confines itself.
pub fn load() -> Result<()> {
    ffi::LIBNFS
        .load()
        .map(|_| ())
        .map_err(|e| Error::Unavailable(e.to_string()))
}

/// The soname libnfs is loaded by.
pub fn soname() -> &'static str {
    ffi::LIBNFS.soname()
}

/// Errors from NFS calls.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The library could not be loaded (not installed, or the process
    /// was confined before it was loaded).
    #[error("{0}")]
    Unavailable(String),
    /// An argument libnfs cannot take (a NUL in a path).
    #[error("{0}")]
    Invalid(String),
    /// The server did not answer in time.
    #[error("{what}: no answer from the server in time")]
    Timeout {
        /// The call or step.
        what: &'static str,
    },
    /// The connection failed or was lost.
    #[error("{what}: {message}")]
    Connection {
        /// The call or step.
        what: &'static str,
        /// libnfs's message.
        message: String,
    },
    /// The server answered with an error (no such export or file,
    /// permission denied, no space).
    #[error("{what}: {message}")]
    Nfs {
        /// The call or step.
        what: &'static str,
        /// The error as an errno (positive).
        errno: i32,
        /// libnfs's message.
        message: String,
    },
    /// The path names something other than a regular file.
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// An `nfs://` URL that does not parse.
    #[error("{0}")]
    Url(String),
}

impl Error {
    /// Whether the error is the connection's (deadline, lost connection),
    /// so a new connection may succeed where this one failed.
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Connection { .. })
    }

    /// The errno the server answered with, if it answered.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Nfs { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
