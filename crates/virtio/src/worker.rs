//! A device's worker thread: an event-manager loop over the device's
//! eventfds (queue kicks, backend readiness, completions), stopped by its
//! own eventfd so reset and shutdown can end it and wait for it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::device::ActivateError;

/// The loop's own subscriber: watches the stop eventfd.
struct StopWatch {
    fd: EventFd,
    stopped: Arc<AtomicBool>,
}

impl MutEventSubscriber for StopWatch {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.fd.read();
        self.stopped.store(true, Ordering::Release);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.fd, EventSet::IN)) {
            tracing::error!("worker: cannot watch its stop eventfd: {e:?}");
            self.stopped.store(true, Ordering::Release);
        }
    }
}

/// A running worker thread; dropping it stops and joins the thread.
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

impl Worker {
    /// Run `handler` on a new thread called `name` until [`Worker::stop`].
    pub fn spawn<H>(name: &str, handler: H) -> Result<Self, ActivateError>
    where
        H: MutEventSubscriber + Send + 'static,
    {
        let host = |what| move |source| ActivateError::Host { what, source };
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(host("worker eventfd"))?;
        let watch = StopWatch {
            fd: stop.try_clone().map_err(host("worker eventfd"))?,
            stopped: Arc::new(AtomicBool::new(false)),
        };
        let stopped = watch.stopped.clone();
        let mut manager = EventManager::<Subscriber>::new().map_err(|e| ActivateError::Host {
            what: "worker epoll",
            source: std::io::Error::other(format!("{e:?}")),
        })?;
        manager.add_subscriber(Arc::new(Mutex::new(watch)));
        manager.add_subscriber(Arc::new(Mutex::new(handler)));
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                while !stopped.load(Ordering::Acquire) {
                    if let Err(e) = manager.run() {
                        tracing::error!("worker loop failed: {e:?}");
                        break;
                    }
                }
            })
            .map_err(host("worker thread"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop the loop and wait for the thread to finish its current event.
    pub fn stop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("a device worker thread panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
