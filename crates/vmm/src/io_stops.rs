//! Disks whose error policy stops the VM (`werror=stop`, `enospc`,
//! `rerror=stop`): their workers report a held request here, and the
//! thread that manages the VM pauses it and says why (`GET /vm`).

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};

/// One VM's channel from its disks' workers to its managing thread.
pub(crate) struct IoStops {
    event: EventFd,
    /// The first error since the last [`IoStops::take`]: the one that
    /// stopped the VM (later ones hold requests too, and say the same).
    first: Mutex<Option<String>>,
}

impl IoStops {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            event: EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Host("eventfd", e))?,
            first: Mutex::new(None),
        }))
    }

    /// What disk `id`'s device calls when it holds a request. It only
    /// records and signals: the worker calling it must not wait for the
    /// pause, which waits for that worker.
    pub(crate) fn notifier(self: &Arc<Self>, id: &str) -> virtio::block::StopNotifier {
        let me = self.clone();
        let id = id.to_string();
        Arc::new(move |why: String| {
            let mut first = me.first.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(format!("disk {id}: {why}"));
            }
            drop(first);
            let _ = me.event.write(1);
        })
    }

    /// Polled by the managing thread.
    pub(crate) fn event(&self) -> &EventFd {
        &self.event
    }

    /// After the event: why the VM must stop, if a disk still says so.
    pub(crate) fn take(&self) -> Option<String> {
        let _ = self.event.read();
        self.first.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_is_kept_until_taken() {
        let stops = IoStops::new().unwrap();
        let a = stops.notifier("vda");
        let b = stops.notifier("vdb");
        a("No space left on device".into());
        b("Input/output error".into());
        assert_eq!(
            stops.take().as_deref(),
            Some("disk vda: No space left on device")
        );
        assert_eq!(stops.take(), None);
        b("Input/output error".into());
        assert_eq!(
            stops.take().as_deref(),
            Some("disk vdb: Input/output error")
        );
    }
}
