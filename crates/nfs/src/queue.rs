//! One file served by a thread of its own, so that many calls are in
//! flight on its one connection at once (as QEMU's nfs driver keeps
//! them): callers on any thread hand calls to the service thread and wait
//! for their answers; the service thread queues each with libnfs's
//! asynchronous API, polls the connection and answers each call when its
//! callback runs.
//!
//! Every call still ends by its deadline: when one passes, or the
//! connection fails, the connection is dropped and every call in flight
//! is sent again once on a new one; a call that fails a second time, or
//! that waited for a connect that failed, fails with a transport error.
//! A call made while there is no connection connects first (once).

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use service_queue::{Port, ServiceQueue};

use libc::{c_int, c_void};

use crate::ffi;
use crate::file::{on_complete, outcome, slice_bufs, Slot, Want, CALL_MAX};
use crate::url::FileUrl;
use crate::{Error, OpenFlags, RemoteFile, Result, Stat};

/// Most calls the service thread keeps in flight; more wait in its inbox.
const MAX_IN_FLIGHT: usize = 64;

/// Most bytes of writes in flight (one write of any size may always be):
/// more writes wait for one to complete. Measured with nfs-ganesha
/// (bench/nfs.py --qd 4): 1 MiB sequential writes ran at about 1050 MB/s
/// with two in flight, 1000 with one at a time, and 750 with four
/// (QEMU's driver, which sends all four, about 850).
const WRITE_BYTES_IN_FLIGHT: u64 = 2 << 20;

/// A thread's body, as [`FileQueue::start`]'s caller runs it.
pub use service_queue::ServiceBody;

/// What one call asks of the server.
enum Op {
    Read {
        offset: u64,
        count: u64,
        bufs: Vec<(*mut u8, usize)>,
    },
    Write {
        offset: u64,
        data: *const u8,
        count: u64,
    },
    Fsync,
    Truncate(u64),
    Stat,
}

impl Op {
    fn what(&self) -> &'static str {
        match self {
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Fsync => "fsync",
            Op::Truncate(_) => "ftruncate",
            Op::Stat => "fstat",
        }
    }
}

/// A call's answer: the call's result (>= 0) and, for a stat, the file's
/// attributes.
type Answer = Result<(c_int, Stat)>;

/// A call on its way to the service thread.
struct Call {
    op: Op,
    reply: SyncSender<Answer>,
    /// Already sent once, on a connection that was then lost.
    resent: bool,
}

// SAFETY: the raw pointers of a read or write name memory of the calling
// thread, which waits for the call's answer (and so keeps that memory
// valid and otherwise untouched) until the service thread has sent it, and
// the service thread sends it only once libnfs no longer refers to them.
unsafe impl Send for Call {}

/// One file on an NFS export whose calls run on a service thread, many
/// in flight at once on one connection; shared between threads.
pub struct FileQueue {
    queue: ServiceQueue<Call>,
    url: FileUrl,
}

impl std::fmt::Debug for FileQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileQueue")
            .field("url", &self.url.to_string())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl FileQueue {
    /// Serve `file` on a thread that `spawn` starts with the body it is
    /// given, at the first call; reconnections open the file as `file` was opened.
    pub fn start(
        file: RemoteFile,
        spawn: impl FnOnce(ServiceBody) -> std::io::Result<JoinHandle<()>> + Send + 'static,
    ) -> Result<Self> {
        let port = Port::new().map_err(|e| Error::Invalid(format!("eventfd: {e}")))?;
        let url = file.url().clone();
        let service = Box::new(Service {
            port: port.clone(),
            url: url.clone(),
            flags: file.flags,
            timeout: file.timeout,
            file: Some(file),
            pending: Vec::new(),
            resend: Vec::new(),
            held: VecDeque::new(),
        });
        Ok(Self {
            queue: ServiceQueue::new(port, Box::new(move || service.run()), Box::new(spawn)),
            url,
        })
    }

    /// The URL the file was opened from.
    pub fn url(&self) -> &FileUrl {
        &self.url
    }

    /// Calls in flight on the connection now.
    pub fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    /// Most calls that were in flight at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.queue.peak_in_flight()
    }

    /// Hand `op` to the service thread and wait for its answer.
    fn call(&self, op: Op) -> Answer {
        let what = op.what();
        let (reply, answer): (_, Receiver<Answer>) = sync_channel(1);
        let call = Call {
            op,
            reply,
            resent: false,
        };
        self.queue.send(call).map_err(|e| Error::Connection {
            what,
            message: e.message("connection"),
        })?;
        // The service thread answers every call it takes, each by its
        // deadline; if it ended (a panic), the sender is gone.
        answer.recv().unwrap_or_else(|_| {
            Err(Error::Connection {
                what,
                message: "the connection's thread ended".into(),
            })
        })
    }

    /// Size, allocation and mode of the file (GETATTR).
    pub fn stat(&self) -> Result<Stat> {
        self.call(Op::Stat).map(|(_, st)| st)
    }

    /// Read into `bufs`, in order, from byte `offset`. Bytes past the
    /// file's end read as zeroes.
    ///
    /// # Safety
    /// Each `(pointer, length)` must be writable memory that nothing else
    /// reads or frees until the call returns.
    pub unsafe fn read_raw(&self, offset: u64, bufs: &[(*mut u8, usize)]) -> Result<()> {
        let total: u64 = bufs.iter().map(|&(_, n)| n as u64).sum();
        let mut done = 0u64;
        while done < total {
            let count = (total - done).min(CALL_MAX);
            let part = slice_bufs(bufs, done, count);
            let at = offset + done;
            let (n, _) = self.call(Op::Read {
                offset: at,
                count,
                bufs: part,
            })?;
            let n = u64::try_from(n).unwrap_or(0).min(count);
            if n == 0 {
                // The end of the file: the rest reads as zeroes.
                for (p, len) in slice_bufs(bufs, done, total - done) {
                    // SAFETY: writable for `len` bytes (the caller's promise).
                    unsafe { std::ptr::write_bytes(p, 0, len) };
                }
                return Ok(());
            }
            done += n;
        }
        Ok(())
    }

    /// Write `data` at byte `offset`, growing the file if it ends past
    /// the file's end.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let count = (data.len() - done).min(usize::try_from(CALL_MAX).unwrap_or(1 << 20));
            let chunk = &data[done..done + count];
            let (n, _) = self.call(Op::Write {
                offset: offset + done as u64,
                data: chunk.as_ptr(),
                count: count as u64,
            })?;
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 {
                return Err(Error::Nfs {
                    what: "write",
                    errno: libc::EIO,
                    message: "the server wrote nothing".into(),
                });
            }
            done += n.min(count);
        }
        Ok(())
    }

    /// Make every completed write durable (COMMIT).
    pub fn fsync(&self) -> Result<()> {
        self.call(Op::Fsync).map(drop)
    }

    /// Set the file's size (SETATTR).
    pub fn truncate(&self, size: u64) -> Result<()> {
        self.call(Op::Truncate(size)).map(drop)
    }
}

/// A call's answer, as its callback leaves it: a leaked box, since libnfs
/// holds its address; freed when dropped, which happens only once the
/// call completed or its context was destroyed.
struct SlotBox(*mut Slot);

impl SlotBox {
    fn new(slot: Slot) -> Self {
        Self(Box::into_raw(Box::new(slot)))
    }
}

impl Drop for SlotBox {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `new`, freed once here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// A call queued on the connection.
struct Pending {
    call: Call,
    slot: SlotBox,
    deadline: Instant,
}

impl Pending {
    fn slot(&self) -> &Slot {
        // SAFETY: the slot lives as long as `self`; callbacks write it only
        // inside `nfs_service` or `nfs_destroy_context`, never while this
        // borrow lives.
        unsafe { &*self.slot.0 }
    }

    /// Forget a read's buffers: nothing more is copied into them.
    fn disarm(&mut self) {
        // SAFETY: as `slot`.
        unsafe { (*self.slot.0).want = Want::Nothing };
    }

    /// The call, its slot freed.
    fn into_call(self) -> Call {
        self.call
    }
}

/// The service thread's state: the connection and its calls in flight.
struct Service {
    port: Port<Call>,
    url: FileUrl,
    flags: OpenFlags,
    timeout: Duration,
    /// None after the connection was lost, until the next call.
    file: Option<RemoteFile>,
    pending: Vec<Pending>,
    /// Calls of a lost connection, to be sent again first.
    resend: Vec<Call>,
    /// Writes waiting for one in flight to complete.
    held: VecDeque<Call>,
}

// SAFETY: a service is moved to its thread before it has calls in
// flight (the only raw pointers it holds are theirs) and is used only by
// that thread from then on.
unsafe impl Send for Service {}

impl Service {
    fn run(mut self: Box<Self>) {
        loop {
            let room = MAX_IN_FLIGHT.saturating_sub(self.pending.len());
            let mut calls = std::mem::take(&mut self.resend);
            calls.extend(self.held.drain(..));
            let room_left = room.saturating_sub(calls.len());
            let closing = self.port.take(&mut calls, room_left);
            if !calls.is_empty() {
                self.issue(calls);
            }
            if closing && self.pending.is_empty() && self.resend.is_empty() && self.held.is_empty()
            {
                return;
            }
            self.turn(room > 0);
        }
    }

    /// Queue `calls` on the connection, connecting first if it was lost.
    fn issue(&mut self, calls: Vec<Call>) {
        let mut calls = calls.into_iter();
        while let Some(call) = calls.next() {
            if self.file.as_ref().is_none_or(RemoteFile::is_broken) {
                self.drop_file();
                match RemoteFile::open(&self.url, self.flags, self.timeout) {
                    Ok(f) => self.file = Some(f),
                    Err(e) => {
                        // Every call that waited for this connect fails
                        // with it; the next one tries anew.
                        let queued = self.port.take_all();
                        for c in std::iter::once(call).chain(calls).chain(queued) {
                            let _ = c.reply.send(Err(e.clone()));
                        }
                        return;
                    }
                }
            }
            if let Op::Write { count, .. } = call.op {
                let queued = self.write_bytes_in_flight();
                if queued > 0 && queued + count > WRITE_BYTES_IN_FLIGHT {
                    self.held.push_back(call);
                    continue;
                }
            }
            self.submit(call);
        }
    }

    /// Bytes of the writes in flight.
    fn write_bytes_in_flight(&self) -> u64 {
        self.pending
            .iter()
            .map(|p| match p.call.op {
                Op::Write { count, .. } => count,
                _ => 0,
            })
            .sum()
    }

    /// Queue one call on the live connection.
    fn submit(&mut self, call: Call) {
        let Some(file) = self.file.as_ref() else {
            return;
        };
        let want = match &call.op {
            Op::Read { bufs, .. } => Want::Read(bufs.clone()),
            Op::Stat => Want::Stat,
            _ => Want::Nothing,
        };
        let slot = SlotBox::new(Slot {
            want,
            ..Slot::default()
        });
        let data: *mut c_void = slot.0.cast();
        let (ctx, fh) = (file.ctx.raw(), file.fh.as_ptr());
        // SAFETY: the context and handle are live; the slot is boxed and
        // freed only once the call has completed or the context is gone;
        // a read's buffers (in the slot) and a write's data are valid
        // until the call is answered (the caller waits for it).
        let queued = unsafe {
            match call.op {
                Op::Read { offset, count, .. } => {
                    ffi::nfs_pread_async(ctx, fh, offset, count, on_complete, data)
                }
                Op::Write {
                    offset,
                    data: bytes,
                    count,
                } => ffi::nfs_pwrite_async(ctx, fh, offset, count, bytes.cast(), on_complete, data),
                Op::Fsync => ffi::nfs_fsync_async(ctx, fh, on_complete, data),
                Op::Truncate(size) => ffi::nfs_ftruncate_async(ctx, fh, size, on_complete, data),
                Op::Stat => ffi::nfs_fstat64_async(ctx, fh, on_complete, data),
            }
        };
        self.pending.push(Pending {
            call,
            slot,
            deadline: Instant::now() + self.timeout,
        });
        self.port.sent();
        if queued != 0 {
            let message = file.ctx.error();
            self.fail_all(|what| Error::Connection {
                what,
                message: message.clone(),
            });
        }
    }

    /// Wait for the connection or new calls (`take` whether new calls are
    /// taken now), serve the connection, answer what completed, and fail
    /// everything when a deadline passed or the connection was lost.
    fn turn(&mut self, take: bool) {
        let (Some(file), Some(deadline)) = (
            self.file.as_ref(),
            self.pending.iter().map(|p| p.deadline).min(),
        ) else {
            self.port.wait_idle();
            return;
        };
        let ctx = file.ctx.raw();
        // SAFETY: the context is live.
        let (fd, events) = unsafe { (ffi::nfs_get_fd(ctx), ffi::nfs_which_events(ctx)) };
        let events = i16::try_from(events).unwrap_or(libc::POLLIN);
        // EINTR: go round again.
        let Some(ready) = self.port.wait(fd, events, take, deadline) else {
            return;
        };
        let mut lost = false;
        if ready.timed_out || ready.revents != 0 {
            // SAFETY: the context is live; callbacks write the boxed slots
            // of this thread's pending calls.
            lost = unsafe { ffi::nfs_service(ctx, c_int::from(ready.revents)) } < 0;
        }
        let message = if lost {
            file.ctx.error()
        } else {
            String::new()
        };
        let context_error = || message.clone();
        let mut broken = lost;
        let mut i = 0;
        while i < self.pending.len() {
            if !self.pending[i].slot().done {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            self.port.finished();
            let what = p.call.op.what();
            let answer = outcome(p.slot(), what, lost, context_error)
                .map(|n| (n, Stat::from_raw(&p.slot().stat)));
            if answer.as_ref().is_err_and(Error::is_transport) {
                broken = true;
                if !p.call.resent {
                    self.resend.push(Call {
                        resent: true,
                        ..p.into_call()
                    });
                    continue;
                }
            }
            let _ = p.call.reply.send(answer);
        }
        if broken {
            let message = if lost {
                message
            } else {
                "the connection was lost".into()
            };
            self.fail_all(|what| Error::Connection {
                what,
                message: message.clone(),
            });
        } else if self.pending.iter().any(|p| p.deadline <= Instant::now()) {
            self.fail_all(|what| Error::Timeout { what });
        }
    }

    /// Give up the connection: every call in flight is sent again on a
    /// new one, or fails with `error` if it was sent again already.
    fn fail_all(&mut self, error: impl Fn(&'static str) -> Error) {
        for p in &mut self.pending {
            p.disarm();
        }
        // Destroying the context may still run the callbacks of the
        // pending calls: their slots live until after it.
        self.drop_file();
        for p in std::mem::take(&mut self.pending) {
            self.port.finished();
            let call = p.into_call();
            if call.resent {
                let _ = call.reply.send(Err(error(call.op.what())));
            } else {
                self.resend.push(Call {
                    resent: true,
                    ..call
                });
            }
        }
    }

    fn drop_file(&mut self) {
        if let Some(mut f) = self.file.take() {
            // The connection's state is unknown: no close is sent on it.
            f.broken = true;
        }
    }
}
