//! Asynchronous requests on any [`DiskImage`].
//!
//! [`AsyncDisk`] takes [`Request`]s without blocking, runs them on a pool of
//! worker threads (so one slow request, a cluster allocation or a read from
//! a cold backing file, does not hold up the requests behind it) and hands
//! back [`Completion`]s. An eventfd says when completions are waiting, so
//! an event loop can poll it beside its other file descriptors.
//!
//! Raw images go through io_uring where the kernel has it: reads, writes
//! and flushes are handed to the kernel by [`AsyncDisk::submit`] itself,
//! and reaped by [`AsyncDisk::drain_completions`]; everything else (qcow2,
//! discards, unaligned `O_DIRECT` requests) runs on the worker threads.
//!
//! Requests in flight at the same time may complete in any order, as on a
//! real disk; a [`Request::Flush`] covers every write that completed before
//! it was submitted.

use std::collections::VecDeque;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::file::{iov_len, Iov};
use crate::uring::Ring;
use crate::{DiskImage, Error, IoBuf, IoBufMut, Result};

/// How an [`AsyncDisk`] runs requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// io_uring for what it can do (raw images) when the kernel has it,
    /// worker threads for the rest.
    #[default]
    Auto,
    /// Worker threads only.
    Threads,
}

/// One request to a disk.
///
/// Buffers are `'static` because the request outlives the caller's stack
/// frame: whoever builds them (with [`IoBuf::from_raw`]) promises that the
/// memory stays valid until the request's [`Completion`] is drained. A
/// clone names the same memory (virtio-blk keeps one to send a request
/// again after an error stopped the VM).
#[derive(Debug, Clone)]
pub enum Request {
    /// Fill `bufs` from the disk at `offset`.
    Read {
        /// First byte on the disk.
        offset: u64,
        /// Destination, in order.
        bufs: Vec<IoBufMut<'static>>,
    },
    /// Write `bufs` to the disk at `offset`.
    Write {
        /// First byte on the disk.
        offset: u64,
        /// Source, in order.
        bufs: Vec<IoBuf<'static>>,
    },
    /// Make completed writes durable.
    Flush,
    /// The range is no longer needed.
    Discard {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The range must read as zeroes.
    WriteZeroes {
        /// First byte.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// The space behind the range may be freed.
        unmap: bool,
    },
}

/// The outcome of one submitted request.
#[derive(Debug)]
pub struct Completion {
    /// The value given to [`AsyncDisk::submit`].
    pub user_data: u64,
    /// What the request returned.
    pub result: Result<()>,
}

struct Queue {
    jobs: VecDeque<(Request, u64)>,
    shutdown: bool,
}

struct Shared {
    disk: Arc<dyn DiskImage>,
    queue: Mutex<Queue>,
    work: Condvar,
    done: Mutex<Vec<Completion>>,
    event: EventFd,
}

/// A disk that runs requests on worker threads.
///
/// Dropping it finishes every submitted request, then joins the workers.
pub struct AsyncDisk {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    ring: Option<Mutex<Ring>>,
}

impl std::fmt::Debug for AsyncDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncDisk")
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// Worker threads used when the caller passes 0.
pub const DEFAULT_WORKERS: usize = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked left the data consistent (each field is
    // updated in one step), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AsyncDisk {
    /// Serve `disk` with `workers` threads (0: [`DEFAULT_WORKERS`]), and
    /// io_uring where it applies ([`Engine::Auto`]).
    pub fn new(disk: Arc<dyn DiskImage>, workers: usize) -> Result<Self> {
        Self::with_engine(disk, workers, Engine::Auto)
    }

    /// As [`AsyncDisk::new`], choosing the engine.
    pub fn with_engine(disk: Arc<dyn DiskImage>, workers: usize, engine: Engine) -> Result<Self> {
        let workers = if workers == 0 {
            DEFAULT_WORKERS
        } else {
            workers
        };
        let event = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?;
        let shared = Arc::new(Shared {
            disk,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Mutex::new(Vec::new()),
            event,
        });
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let s = Arc::clone(&shared);
            let h = confine::spawn(
                confine::ThreadKind::DiskIo,
                format!("disk-io-{i}"),
                move || worker(&s),
            )
            .map_err(|e| Error::io("spawn disk worker", e))?;
            handles.push(h);
        }
        let ring = match (engine, shared.disk.direct_file()) {
            (Engine::Auto, Some(file)) => Ring::new(file, shared.event.as_raw_fd()).map(Mutex::new),
            _ => None,
        };
        Ok(Self {
            shared,
            workers: handles,
            ring,
        })
    }

    /// "io_uring" when requests go to the kernel's ring, "threads" otherwise.
    pub fn engine_name(&self) -> &'static str {
        if self.ring.is_some() {
            "io_uring"
        } else {
            "threads"
        }
    }

    /// Complete a request without running it (a bad range, a write to a
    /// read-only disk).
    fn complete_now(&self, user_data: u64, result: Result<()>) {
        let mut done = lock(&self.shared.done);
        done.push(Completion { user_data, result });
        if let Err(e) = self.shared.event.write(1) {
            tracing::error!("disk completion eventfd: {e}");
        }
    }

    /// Try the ring; gives the request back when it must go to the pool.
    fn submit_to_ring(&self, request: Request, user_data: u64) -> Option<Request> {
        let Some(ring) = &self.ring else {
            return Some(request);
        };
        let disk = &self.shared.disk;
        let (write, offset, iovs) = match &request {
            Request::Read { offset, bufs } => (false, *offset, Iov::from_bufs_mut(bufs)),
            Request::Write { offset, bufs } => (true, *offset, Iov::from_bufs(bufs)),
            Request::Flush => {
                if disk.read_only() {
                    self.complete_now(user_data, Ok(()));
                    return None;
                }
                let mut r = lock(ring);
                if r.inflight() >= 256 {
                    return Some(request);
                }
                let result = r.submit_flush(user_data);
                self.wake_if_stalled(&r);
                return match result {
                    Ok(()) => None,
                    Err(_) => Some(request),
                };
            }
            _ => return Some(request),
        };
        let len = iov_len(&iovs);
        let size = disk.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            self.complete_now(user_data, Err(Error::OutOfRange { offset, len, size }));
            return None;
        }
        if write && disk.read_only() {
            self.complete_now(user_data, Err(Error::ReadOnly));
            return None;
        }
        // Buffered writes are faster on the worker threads (the kernel
        // would punt them to its own workers); O_DIRECT ones go to the ring.
        let Some(file) = disk.direct_file() else {
            return Some(request);
        };
        if write && (!file.direct || disk.format() != crate::ImageFormat::Raw) {
            return Some(request);
        }
        // The ring writes bytes unseen; what the image must check first
        // (a probed raw image's sector 0) goes through write_vectored.
        if write && offset < disk.checked_write_prefix() {
            return Some(request);
        }
        if !lock(ring).accepts(offset, &iovs) {
            return Some(request);
        }
        // Map before taking the ring lock: mapping may wait for the image's
        // metadata lock, and drain_completions needs the ring lock.
        let host = if write {
            offset
        } else {
            match disk.begin_direct_read(offset, len) {
                Some(h) => h,
                None => return Some(request),
            }
        };
        // O_DIRECT needs the host offset aligned too (for qcow2 it differs
        // from the guest offset).
        if file.direct && !host.is_multiple_of(file.align as u64) {
            if !write {
                disk.end_direct_read();
            }
            return Some(request);
        }
        let mut r = lock(ring);
        let result = r.submit_rw(user_data, write, host, iovs);
        self.wake_if_stalled(&r);
        match result {
            Ok(()) => None,
            Err(_) => {
                if !write {
                    disk.end_direct_read();
                }
                Some(request)
            }
        }
    }

    /// A submission to the kernel failed and its entries wait in the
    /// ring: wake the drain, which tries again.
    fn wake_if_stalled(&self, ring: &Ring) {
        if ring.stalled() {
            if let Err(e) = self.shared.event.write(1) {
                tracing::error!("disk completion eventfd: {e}");
            }
        }
    }

    /// Hold the ring's submissions until [`AsyncDisk::unplug`]: a caller
    /// that submits a batch (a virtqueue's available requests) sends it to
    /// the kernel in one system call instead of one per request.
    pub fn plug(&self) {
        if let Some(ring) = &self.ring {
            lock(ring).plug();
        }
    }

    /// Send what was held since [`AsyncDisk::plug`] to the kernel.
    pub fn unplug(&self) {
        if let Some(ring) = &self.ring {
            let mut r = lock(ring);
            if let Err(e) = r.unplug() {
                // The entries stay queued; the drain this wakes tries again
                // (and keeps waking itself until they are in).
                tracing::warn!("disk: io_uring submission failed, retried: {e}");
            }
            self.wake_if_stalled(&r);
        }
    }

    /// The disk requests run on.
    pub fn disk(&self) -> &Arc<dyn DiskImage> {
        &self.shared.disk
    }

    /// Queue `request`; its completion will carry `user_data`.
    pub fn submit(&self, request: Request, user_data: u64) -> Result<()> {
        let Some(request) = self.submit_to_ring(request, user_data) else {
            return Ok(());
        };
        let mut q = lock(&self.shared.queue);
        if q.shutdown {
            return Err(Error::Unsupported("submitting to a closing disk"));
        }
        q.jobs.push_back((request, user_data));
        drop(q);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Readable while completions wait to be drained.
    pub fn completion_fd(&self) -> &EventFd {
        &self.shared.event
    }

    /// Move every finished request's completion into `out` and clear the
    /// eventfd (callers need not read it themselves).
    pub fn drain_completions(&self, out: &mut Vec<Completion>) {
        let mut done = lock(&self.shared.done);
        // Reset under the lock: a worker pushes and signals under it too,
        // so no completion can be left behind a cleared eventfd.
        let _ = self.shared.event.read();
        if let Some(ring) = &self.ring {
            let disk = &self.shared.disk;
            let mut r = lock(ring);
            r.reap(out, &|| disk.end_direct_read());
            self.wake_if_stalled(&r);
        }
        out.append(&mut done);
    }
}

impl AsRawFd for AsyncDisk {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.event.as_raw_fd()
    }
}

impl Drop for AsyncDisk {
    fn drop(&mut self) {
        // The ring first: a worker's discard may be waiting for its reads.
        if let Some(ring) = &self.ring {
            let disk = &self.shared.disk;
            lock(ring).wait_all(&|| disk.end_direct_read());
        }
        lock(&self.shared.queue).shutdown = true;
        self.shared.work.notify_all();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(shared: &Shared) {
    loop {
        let (request, user_data) = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    break job;
                }
                if q.shutdown {
                    return;
                }
                q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = run(shared.disk.as_ref(), request);
        let mut done = lock(&shared.done);
        done.push(Completion { user_data, result });
        if let Err(e) = shared.event.write(1) {
            tracing::error!("disk completion eventfd: {e}");
        }
    }
}

fn run(disk: &dyn DiskImage, request: Request) -> Result<()> {
    match request {
        Request::Read { offset, bufs } => disk.read_vectored(offset, &bufs),
        Request::Write { offset, bufs } => disk.write_vectored(offset, &bufs),
        Request::Flush => disk.flush(),
        Request::Discard { offset, len } => disk.discard(offset, len),
        Request::WriteZeroes { offset, len, unmap } => disk.write_zeroes(offset, len, unmap),
    }
}
