//! The plumbing of a connection served by a thread of its own, as the
//! network disks (`iscsi`, `nfs`) keep many requests in flight on one
//! connection: callers on any thread put a request in an inbox and wake
//! the service thread through an eventfd; the service thread takes
//! requests, keeps them in flight on its connection and answers each.
//!
//! What a request is, how it is sent and how it is answered is the
//! protocol's; this crate holds what every such queue needs alike: the
//! inbox, the wake-up descriptor, the in-flight counters, the thread
//! started at the first request (so that a process can open its disks
//! while it must still have a single thread, before it enters a jail),
//! and the orderly end (the inbox closes, the thread finishes what is in
//! flight and is joined).

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// A thread's body, as the spawner of [`ServiceQueue::new`] runs it.
pub type ServiceBody = Box<dyn FnOnce() + Send>;

/// Starts the service thread with the body it is given.
pub type Spawner = Box<dyn FnOnce(ServiceBody) -> io::Result<JoinHandle<()>> + Send>;

/// Why a request was not queued.
#[derive(Debug)]
pub enum Refused {
    /// The queue is being dropped.
    Closing,
    /// The service thread could not be started, now or at an earlier
    /// request (`None`: the error was reported then).
    NoThread(Option<io::Error>),
}

impl Refused {
    /// The refusal as a phrase about the queue's connection, called
    /// `noun` ("session", "connection").
    pub fn message(&self, noun: &str) -> String {
        match self {
            Refused::Closing => format!("the {noun} is being closed"),
            Refused::NoThread(Some(e)) => format!("cannot start the {noun}'s thread: {e}"),
            Refused::NoThread(None) => format!("the {noun}'s thread could not be started"),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::Closing => f.write_str("it is being closed"),
            Refused::NoThread(Some(e)) => write!(f, "its thread cannot be started: {e}"),
            Refused::NoThread(None) => f.write_str("its thread could not be started"),
        }
    }
}

struct Inbox<R> {
    requests: VecDeque<R>,
    closing: bool,
}

struct Shared<R> {
    inbox: Mutex<Inbox<R>>,
    /// An eventfd: readable when the inbox has requests (or is closing).
    wake: OwnedFd,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// The service thread's side of a queue: where it takes requests from
/// and counts them in flight. Cloned into the service before the queue
/// is made.
pub struct Port<R> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for Port<R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<R> Port<R> {
    /// A new, empty inbox with its wake-up descriptor.
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointer arguments; the descriptor is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            shared: Arc::new(Shared {
                inbox: Mutex::new(Inbox {
                    requests: VecDeque::new(),
                    closing: false,
                }),
                wake,
                in_flight: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
            }),
        })
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox<R>> {
        // The inbox is a queue updated in single steps: still consistent
        // after a panic elsewhere.
        self.shared.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends at most `room` requests of the inbox to `into`, oldest
    /// first; true when the queue is closing and its inbox is now empty
    /// (the service ends once nothing is in flight either).
    pub fn take(&self, into: &mut Vec<R>, room: usize) -> bool {
        let mut inbox = self.inbox();
        let n = inbox.requests.len().min(room);
        into.extend(inbox.requests.drain(..n));
        inbox.closing && inbox.requests.is_empty()
    }

    /// Every request still in the inbox (a connection that could not be
    /// made fails them all at once).
    pub fn take_all(&self) -> Vec<R> {
        self.inbox().requests.drain(..).collect()
    }

    /// The descriptor to poll for new requests.
    pub fn wake_fd(&self) -> RawFd {
        self.shared.wake.as_raw_fd()
    }

    /// Consumes the wake-ups seen so far.
    pub fn clear_wake(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; the eventfd is
        // non-blocking.
        unsafe { libc::read(self.wake_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }

    /// Sleeps until a request arrives (or the queue closes).
    pub fn wait_idle(&self) {
        let mut pfd = libc::pollfd {
            fd: self.wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, -1) };
        self.clear_wake();
    }

    /// Waits until the connection's descriptor `fd` has one of `events`,
    /// a request arrives (only when `take`: with no room for more, new
    /// ones wait), or `deadline` (at most a second from now, so a stuck
    /// connection is looked at again). `None` when interrupted.
    pub fn wait(
        &self,
        fd: RawFd,
        events: libc::c_short,
        take: bool,
        deadline: std::time::Instant,
    ) -> Option<Ready> {
        let ms = libc::c_int::try_from(
            deadline
                .saturating_duration_since(std::time::Instant::now())
                .as_millis(),
        )
        .unwrap_or(1000)
        .clamp(1, 1000);
        let mut pfds = [
            libc::pollfd {
                fd,
                events,
                revents: 0,
            },
            libc::pollfd {
                // A negative descriptor is ignored.
                fd: if take { self.wake_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds, for the call only.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
        if n < 0 {
            return None;
        }
        if pfds[1].revents != 0 {
            self.clear_wake();
        }
        Some(Ready {
            timed_out: n == 0,
            revents: pfds[0].revents,
        })
    }

    /// Counts one more request in flight.
    pub fn sent(&self) {
        let n = self.shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.peak.fetch_max(n, Ordering::Relaxed);
    }

    /// Counts one request in flight fewer.
    pub fn finished(&self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our eventfd. It can
        // only fail when the counter is saturated, and then it is readable.
        unsafe { libc::write(self.wake_fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// What [`Port::wait`] saw.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    /// Nothing happened before the deadline (the connection is served
    /// anyway, so that its own timers run).
    pub timed_out: bool,
    /// The connection's descriptor's events.
    pub revents: libc::c_short,
}

/// The service thread: started at the first request.
enum Launch {
    Waiting(ServiceBody, Spawner),
    Running(JoinHandle<()>),
    Failed,
}

/// The callers' side of a queue, shared between threads. Dropping it
/// closes the inbox and waits for the service thread to end.
pub struct ServiceQueue<R> {
    port: Port<R>,
    launch: Mutex<Launch>,
}

impl<R> fmt::Debug for ServiceQueue<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceQueue")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<R> ServiceQueue<R> {
    /// A queue whose requests `body` serves from `port` on the thread
    /// `spawn` starts, at the first request.
    pub fn new(port: Port<R>, body: ServiceBody, spawn: Spawner) -> Self {
        Self {
            port,
            launch: Mutex::new(Launch::Waiting(body, spawn)),
        }
    }

    /// Puts `request` in the inbox and wakes the service thread, starting
    /// it if this is the first request.
    pub fn send(&self, request: R) -> Result<(), Refused> {
        {
            let mut inbox = self.port.inbox();
            if inbox.closing {
                return Err(Refused::Closing);
            }
            inbox.requests.push_back(request);
        }
        // A request left in the inbox of a thread that never started is
        // dropped with the queue, which drops its reply channel: its
        // caller is answered by the error returned here.
        self.launch()?;
        self.port.wake();
        Ok(())
    }

    fn launch(&self) -> Result<(), Refused> {
        let mut launch = self.launch.lock().unwrap_or_else(|e| e.into_inner());
        if let Launch::Running(_) = *launch {
            return Ok(());
        }
        match std::mem::replace(&mut *launch, Launch::Failed) {
            Launch::Waiting(body, spawn) => match spawn(body) {
                Ok(thread) => {
                    *launch = Launch::Running(thread);
                    Ok(())
                }
                Err(e) => Err(Refused::NoThread(Some(e))),
            },
            _ => Err(Refused::NoThread(None)),
        }
    }

    /// Requests in flight on the connection now.
    pub fn in_flight(&self) -> usize {
        self.port.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Most requests that were in flight at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.port.shared.peak.load(Ordering::Relaxed)
    }
}

impl<R> Drop for ServiceQueue<R> {
    fn drop(&mut self) {
        self.port.inbox().closing = true;
        self.port.wake();
        let launch = self.launch.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Launch::Running(t) = std::mem::replace(launch, Launch::Failed) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{sync_channel, SyncSender};

    /// A service that answers each number with its double, one at a time.
    fn doubler(port: Port<(u32, SyncSender<u32>)>) -> ServiceBody {
        Box::new(move || {
            let mut batch = Vec::new();
            loop {
                let closing = port.take(&mut batch, 8);
                for (n, reply) in batch.drain(..) {
                    port.sent();
                    port.finished();
                    let _ = reply.send(n * 2);
                }
                if closing {
                    return;
                }
                port.wait_idle();
            }
        })
    }

    fn spawner() -> Spawner {
        Box::new(|body| std::thread::Builder::new().spawn(body))
    }

    #[test]
    fn requests_are_served_by_a_thread_started_at_the_first_one() {
        let started = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&started);
        let port = Port::new().unwrap();
        let q = ServiceQueue::new(
            port.clone(),
            doubler(port),
            Box::new(move |body| {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::Builder::new().spawn(body)
            }),
        );
        assert_eq!(
            started.load(Ordering::SeqCst),
            0,
            "started before a request"
        );
        for n in 0..20 {
            let (reply, answer) = sync_channel(1);
            q.send((n, reply)).unwrap();
            assert_eq!(answer.recv().unwrap(), n * 2);
        }
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(q.peak_in_flight(), 1);
        assert_eq!(q.in_flight(), 0);
        drop(q);
    }

    #[test]
    fn a_thread_that_cannot_start_refuses_this_request_and_the_next() {
        let port: Port<(u32, SyncSender<u32>)> = Port::new().unwrap();
        let q = ServiceQueue::new(
            port.clone(),
            doubler(port),
            Box::new(|_| Err(io::Error::from_raw_os_error(libc::EAGAIN))),
        );
        let (reply, _answer) = sync_channel(1);
        let e = q.send((1, reply)).unwrap_err();
        assert!(matches!(e, Refused::NoThread(Some(_))), "{e}");
        let (reply, _answer) = sync_channel(1);
        let e = q.send((2, reply)).unwrap_err();
        assert!(matches!(e, Refused::NoThread(None)), "{e}");
        assert_eq!(e.to_string(), "its thread could not be started");
    }

    #[test]
    fn dropping_the_queue_ends_its_thread() {
        let port = Port::new().unwrap();
        let ended = Arc::new(AtomicUsize::new(0));
        let flag = Arc::clone(&ended);
        let body = doubler(port.clone());
        let q = ServiceQueue::new(
            port,
            Box::new(move || {
                body();
                flag.store(1, Ordering::SeqCst);
            }),
            spawner(),
        );
        let (reply, answer) = sync_channel(1);
        q.send((21, reply)).unwrap();
        assert_eq!(answer.recv().unwrap(), 42);
        drop(q);
        assert_eq!(ended.load(Ordering::SeqCst), 1, "the thread was not joined");
    }
}
