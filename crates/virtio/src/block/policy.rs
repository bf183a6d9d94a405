//! What virtio-blk does when the disk fails a request: QEMU's `werror` and
//! `rerror`, libvirt's `error_policy` and `rerror_policy`.
//!
//! `report` gives the guest an I/O error (the default). `stop` keeps the
//! request, tells the VMM (which pauses the VM) and sends the request again
//! when the device resumes, so a guest whose storage went away for a while
//! (a full thin-provisioned filesystem, an NFS or iSCSI server restarting)
//! never sees an error: the operator frees space or brings the server
//! back, and resumes. `enospc` stops only when the host is out of space.
//! `ignore` completes the request as if it had succeeded (QEMU's, and as
//! dangerous: the guest believes data is on the disk that is not).

use std::sync::Arc;

/// One side's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorAction {
    /// Give the guest the error.
    #[default]
    Report,
    /// Tell the guest it succeeded.
    Ignore,
    /// Hold the request and stop the VM until it is resumed.
    Stop,
    /// Stop on ENOSPC (or EDQUOT), report anything else.
    Enospc,
}

impl ErrorAction {
    /// Parses QEMU's and libvirt's names.
    pub fn parse(text: &str) -> Option<ErrorAction> {
        Some(match text {
            "report" => ErrorAction::Report,
            "ignore" => ErrorAction::Ignore,
            "stop" => ErrorAction::Stop,
            "enospc" => ErrorAction::Enospc,
            _ => return None,
        })
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorAction::Report => "report",
            ErrorAction::Ignore => "ignore",
            ErrorAction::Stop => "stop",
            ErrorAction::Enospc => "enospc",
        }
    }

    /// Whether a request failing with `e` is held rather than completed.
    pub(super) fn stops_on(self, e: &block::Error) -> bool {
        // Only the host's failures, and a network disk's server (iSCSI):
        // a request the image refuses (unsupported, out of range,
        // read-only) fails the same way on every retry.
        let no_space = match e {
            block::Error::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
            }
            block::Error::Remote(_) => false,
            _ => return false,
        };
        match self {
            ErrorAction::Stop => true,
            ErrorAction::Enospc => no_space,
            ErrorAction::Report | ErrorAction::Ignore => false,
        }
    }

    /// Whether this action can ever hold a request.
    pub(super) fn may_stop(self) -> bool {
        matches!(self, ErrorAction::Stop | ErrorAction::Enospc)
    }
}

/// The policies of a disk: writes (with flushes, discards and zeroing),
/// and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorPolicy {
    /// For writes, flushes, discards and write-zeroes.
    pub write: ErrorAction,
    /// For reads.
    pub read: ErrorAction,
}

/// Told, on the device's worker thread, that a request was held: the
/// text names the error. It must not block (the VMM pauses the VM from
/// another thread, which waits for this worker to park).
pub type StopNotifier = Arc<dyn Fn(String) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    fn io(errno: i32) -> block::Error {
        block::Error::Io {
            op: "write",
            source: std::io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn which_errors_stop() {
        assert!(ErrorAction::Stop.stops_on(&io(libc::EIO)));
        assert!(ErrorAction::Enospc.stops_on(&io(libc::ENOSPC)));
        assert!(!ErrorAction::Enospc.stops_on(&io(libc::EIO)));
        assert!(!ErrorAction::Report.stops_on(&io(libc::ENOSPC)));
        assert!(!ErrorAction::Stop.stops_on(&block::Error::ReadOnly));
        let remote = block::Error::Remote("connection reset".into());
        assert!(ErrorAction::Stop.stops_on(&remote));
        assert!(!ErrorAction::Enospc.stops_on(&remote));
        assert!(!ErrorAction::Stop.stops_on(&block::Error::Unsupported("discard")));
        for name in ["report", "ignore", "stop", "enospc"] {
            assert_eq!(ErrorAction::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(ErrorAction::parse("retry"), None);
    }
}
