//! A descriptor another process passed to this one over the control
//! socket (SCM_RIGHTS), such as a TAP the management daemon opened.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// A passed descriptor, shared by every copy of the configuration that
/// names it (a reboot remakes the device from its configuration) and
/// closed when the last copy goes. For a non-persistent TAP that is what
/// removes the interface once its card is unplugged.
#[derive(Clone)]
pub struct PassedFd(Arc<OwnedFd>);

impl PassedFd {
    /// Takes ownership of `fd`.
    pub fn new(fd: OwnedFd) -> Self {
        Self(Arc::new(fd))
    }
}

impl AsFd for PassedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl fmt::Debug for PassedFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PassedFd({})", self.0.as_raw_fd())
    }
}

/// Two are equal when they are the same passed descriptor.
impl PartialEq for PassedFd {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PassedFd {}
