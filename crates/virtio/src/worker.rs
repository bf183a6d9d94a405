//! A device's worker thread: an event-manager loop over the device's
//! eventfds (queue kicks, backend readiness, completions), controlled
//! through its own eventfd so reset and shutdown can end it, and a pause
//! can hold it between events, each waiting until the thread complies.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::device::ActivateError;

/// What the controlling thread asks of the loop.
#[derive(Default)]
struct Control {
    stop: bool,
    pause: bool,
    /// Set by the worker while it is held by a pause.
    parked: bool,
}

#[derive(Default)]
struct Gate {
    control: Mutex<Control>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The loop's own subscriber: its eventfd only wakes the loop, which then
/// looks at the gate.
struct Wakeup {
    fd: EventFd,
}

impl MutEventSubscriber for Wakeup {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.fd.read();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.fd, EventSet::IN)) {
            tracing::error!("worker: cannot watch its control eventfd: {e:?}");
        }
    }
}

/// How long [`Worker::pause`] waits for the thread to finish its current
/// event before giving up.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running worker thread; dropping it stops and joins the thread.
pub struct Worker {
    wake: EventFd,
    gate: Arc<Gate>,
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
        let wake = EventFd::new(libc::EFD_NONBLOCK).map_err(host("worker eventfd"))?;
        let wakeup = Wakeup {
            fd: wake.try_clone().map_err(host("worker eventfd"))?,
        };
        let mut manager = EventManager::<Subscriber>::new().map_err(|e| ActivateError::Host {
            what: "worker epoll",
            source: std::io::Error::other(format!("{e:?}")),
        })?;
        manager.add_subscriber(Arc::new(Mutex::new(wakeup)));
        manager.add_subscriber(Arc::new(Mutex::new(handler)));
        let gate = Arc::new(Gate::default());
        let thread_gate = gate.clone();
        // Started by the launcher under the device's own filter: the
        // thread asking (a vCPU, an API connection) may not be allowed
        // what the worker does.
        let kind = confine::ThreadKind::of_device_worker(name);
        let thread = confine::spawn(kind, name.to_string(), move || {
            run(&mut manager, &thread_gate)
        })
        .map_err(host("worker thread"))?;
        Ok(Self {
            wake,
            gate,
            thread: Some(thread),
        })
    }

    /// Hold the loop between events (the device does nothing until
    /// [`Worker::resume`]); returns once the thread is held, or false if it
    /// did not comply within 5 s.
    pub fn pause(&self) -> bool {
        self.gate.lock().pause = true;
        let _ = self.wake.write(1);
        let control = self.gate.lock();
        let (control, timeout) = self
            .gate
            .changed
            .wait_timeout_while(control, PAUSE_TIMEOUT, |c| !c.parked && !c.stop)
            .unwrap_or_else(|e| e.into_inner());
        !timeout.timed_out() || control.parked
    }

    /// Let a paused loop go on.
    pub fn resume(&self) {
        self.gate.lock().pause = false;
        self.gate.changed.notify_all();
    }

    /// Stop the loop and wait for the thread to finish its current event.
    pub fn stop(&mut self) {
        self.gate.lock().stop = true;
        self.gate.changed.notify_all();
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("a device worker thread panicked");
            }
        }
    }
}

/// The worker thread: dispatch events until stopped, parking while paused.
fn run(manager: &mut EventManager<Subscriber>, gate: &Gate) {
    loop {
        {
            let mut control = gate.lock();
            if control.pause && !control.stop {
                control.parked = true;
                gate.changed.notify_all();
                control = gate
                    .changed
                    .wait_while(control, |c| c.pause && !c.stop)
                    .unwrap_or_else(|e| e.into_inner());
                control.parked = false;
            }
            if control.stop {
                return;
            }
        }
        if let Err(e) = manager.run() {
            tracing::error!("worker loop failed: {e:?}");
            return;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Counts how often its eventfd fired.
    struct Counter {
        fd: EventFd,
        seen: Arc<AtomicU32>,
    }

    impl MutEventSubscriber for Counter {
        fn process(&mut self, _events: Events, _ops: &mut EventOps) {
            let _ = self.fd.read();
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
        fn init(&mut self, ops: &mut EventOps) {
            ops.add(Events::new(&self.fd, EventSet::IN)).unwrap();
        }
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        for _ in 0..500 {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    #[test]
    fn a_paused_worker_handles_nothing_until_resumed() {
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let seen = Arc::new(AtomicU32::new(0));
        let counter = Counter {
            fd: fd.try_clone().unwrap(),
            seen: seen.clone(),
        };
        let mut worker = Worker::spawn("test-worker", counter).unwrap();
        fd.write(1).unwrap();
        assert!(wait_for(|| seen.load(Ordering::SeqCst) == 1));
        assert!(worker.pause());
        fd.write(1).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "handled an event while paused"
        );
        worker.resume();
        assert!(wait_for(|| seen.load(Ordering::SeqCst) == 2));
        // Stopping a paused worker does not hang.
        assert!(worker.pause());
        worker.stop();
    }
}
