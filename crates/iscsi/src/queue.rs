//! One session served by a thread of its own, so that many commands are
//! in flight on it at once (as QEMU's iscsi driver keeps them): callers
//! on any thread hand commands to the service thread and wait for their
//! answers; the service thread queues each as a libiscsi task, polls the
//! connection and answers each command when its callback runs.
//!
//! Every command still ends by its deadline: when one passes, or the
//! connection fails, the session is dropped and every command in flight
//! is sent again once on a new session; a command that fails a second
//! time, or that waited for a login that failed, fails with a transport
//! error. A command made while there is no session logs in first (once).
//! A UNIT ATTENTION is retried a few times, as [`Session`] does.

use std::ptr::NonNull;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Instant;

use service_queue::{Port, ServiceQueue};

use libc::{c_int, c_void};

use crate::ffi;
use crate::session::{on_complete, transfer, Slot, UNIT_ATTENTION};
use crate::{Error, Login, Result, Session};

/// Most commands the service thread keeps in flight; more wait in its
/// inbox.
const MAX_IN_FLIGHT: usize = 64;

/// Times a command that meets a UNIT ATTENTION is sent in all.
const UNIT_ATTENTION_ATTEMPTS: u32 = 4;

/// A thread's body, as [`SessionQueue::start`]'s caller runs it.
pub use service_queue::ServiceBody;

/// What one command asks of the target.
enum Op {
    Read {
        lun: u16,
        lba: u64,
        block_size: u32,
        bufs: Vec<(*mut u8, usize)>,
    },
    Write {
        lun: u16,
        lba: u64,
        block_size: u32,
        bufs: Vec<(*const u8, usize)>,
    },
    SynchronizeCache {
        lun: u16,
    },
    Unmap {
        lun: u16,
        lba: u64,
        blocks: u32,
    },
}

impl Op {
    fn what(&self) -> &'static str {
        match self {
            Op::Read { .. } => "READ(16)",
            Op::Write { .. } => "WRITE(16)",
            Op::SynchronizeCache { .. } => "SYNCHRONIZE CACHE(16)",
            Op::Unmap { .. } => "UNMAP",
        }
    }
}

/// A command on its way to the service thread.
struct Call {
    op: Op,
    reply: SyncSender<Result<()>>,
    /// Already sent once, on a session that was then lost.
    resent: bool,
}

// SAFETY: the raw pointers of a read or write name memory of the calling
// thread, which waits for the command's answer (and so keeps that memory
// valid and otherwise untouched) until the service thread has sent it,
// and the service thread sends it only once libiscsi no longer refers to
// them (the task completed or was cancelled).
unsafe impl Send for Call {}

/// One session whose commands run on a service thread, many in flight
/// at once; shared between threads.
pub struct SessionQueue {
    queue: ServiceQueue<Call>,
    target: String,
}

impl std::fmt::Debug for SessionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionQueue")
            .field("target", &self.target)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl SessionQueue {
    /// Serve `session` on a thread that `spawn` starts with the body it
    /// is given, at the first command; a new login uses `session`'s.
    pub fn start(
        session: Session,
        spawn: impl FnOnce(ServiceBody) -> std::io::Result<JoinHandle<()>> + Send + 'static,
    ) -> Result<Self> {
        let port = Port::new().map_err(|e| Error::Invalid(format!("eventfd: {e}")))?;
        let target = session.login().target.clone();
        let service = Box::new(Service {
            port: port.clone(),
            login: session.login().clone(),
            session: Some(session),
            pending: Vec::new(),
            resend: Vec::new(),
        });
        Ok(Self {
            queue: ServiceQueue::new(port, Box::new(move || service.run()), Box::new(spawn)),
            target,
        })
    }

    /// Commands in flight on the session now.
    pub fn in_flight(&self) -> usize {
        self.queue.in_flight()
    }

    /// Most commands that were in flight at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.queue.peak_in_flight()
    }

    /// Hand `op` to the service thread and wait for its answer.
    fn call(&self, op: Op) -> Result<()> {
        let what = op.what();
        let (reply, answer): (_, Receiver<Result<()>>) = sync_channel(1);
        let call = Call {
            op,
            reply,
            resent: false,
        };
        self.queue.send(call).map_err(|e| Error::Connection {
            what,
            message: e.message("session"),
        })?;
        // The service thread answers every command it takes, each by its
        // deadline; if it ended (a panic), the sender is gone.
        answer.recv().unwrap_or_else(|_| {
            Err(Error::Connection {
                what,
                message: "the session's thread ended".into(),
            })
        })
    }

    /// Read blocks from `lba` into raw buffers, in order (READ 16); their
    /// total length must be a multiple of `block_size`.
    ///
    /// # Safety
    /// Each `(pointer, length)` must be writable memory that nothing else
    /// reads or frees until the call returns.
    pub unsafe fn read_raw(
        &self,
        lun: u16,
        lba: u64,
        block_size: u32,
        bufs: &[(*mut u8, usize)],
    ) -> Result<()> {
        self.call(Op::Read {
            lun,
            lba,
            block_size,
            bufs: bufs.to_vec(),
        })
    }

    /// Read blocks from `lba` into `buf` (READ 16).
    pub fn read(&self, lun: u16, lba: u64, block_size: u32, buf: &mut [u8]) -> Result<()> {
        let raw = [(buf.as_mut_ptr(), buf.len())];
        // SAFETY: `buf` is borrowed mutably for the whole call.
        unsafe { self.read_raw(lun, lba, block_size, &raw) }
    }

    /// Write raw buffers, in order, to blocks from `lba` (WRITE 16).
    ///
    /// # Safety
    /// Each `(pointer, length)` must be readable memory that is not freed
    /// until the call returns.
    pub unsafe fn write_raw(
        &self,
        lun: u16,
        lba: u64,
        block_size: u32,
        bufs: &[(*const u8, usize)],
    ) -> Result<()> {
        self.call(Op::Write {
            lun,
            lba,
            block_size,
            bufs: bufs.to_vec(),
        })
    }

    /// Write `data` to blocks from `lba` (WRITE 16).
    pub fn write(&self, lun: u16, lba: u64, block_size: u32, data: &[u8]) -> Result<()> {
        let raw = [(data.as_ptr(), data.len())];
        // SAFETY: `data` is borrowed for the whole call.
        unsafe { self.write_raw(lun, lba, block_size, &raw) }
    }

    /// Make every completed write to `lun` durable (SYNCHRONIZE CACHE 16).
    pub fn synchronize_cache(&self, lun: u16) -> Result<()> {
        self.call(Op::SynchronizeCache { lun })
    }

    /// Tell the target `blocks` blocks from `lba` are no longer needed
    /// (UNMAP, one descriptor).
    pub fn unmap(&self, lun: u16, lba: u64, blocks: u32) -> Result<()> {
        self.call(Op::Unmap { lun, lba, blocks })
    }
}

/// A command's status, as its callback leaves it: a leaked box, since
/// libiscsi holds its address; freed when dropped, which happens only
/// once the task completed or was cancelled.
struct SlotBox(*mut Slot);

impl SlotBox {
    fn new() -> Self {
        Self(Box::into_raw(Box::default()))
    }

    fn get(&self) -> &Slot {
        // SAFETY: the slot lives as long as `self`; callbacks write it only
        // inside `iscsi_service` or a cancel, never while this borrow lives.
        unsafe { &*self.0 }
    }
}

impl Drop for SlotBox {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `new`, freed once here.
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// A command queued on the session.
struct Pending {
    call: Call,
    task: NonNull<ffi::scsi_task>,
    slot: SlotBox,
    /// The task's buffers, as libiscsi holds them (by address) until it
    /// completes.
    _iov: Vec<ffi::scsi_iovec>,
    deadline: Instant,
    attempts: u32,
}

/// The service thread's state: the session and its commands in flight.
struct Service {
    port: Port<Call>,
    login: Login,
    /// None after the session was lost, until the next command.
    session: Option<Session>,
    pending: Vec<Pending>,
    /// Commands of a lost session, to be sent again first.
    resend: Vec<Call>,
}

// SAFETY: a service is moved to its thread before it has commands in
// flight (the only raw pointers it holds are theirs) and is used only by
// that thread from then on.
unsafe impl Send for Service {}

/// What a completed task's status says.
enum Status {
    Good,
    /// A UNIT ATTENTION, with its ASC/ASCQ.
    UnitAttention(u16),
    Failed(Error),
}

impl Service {
    fn run(mut self: Box<Self>) {
        loop {
            let room = MAX_IN_FLIGHT.saturating_sub(self.pending.len());
            let mut calls = std::mem::take(&mut self.resend);
            let room_left = room.saturating_sub(calls.len());
            let closing = self.port.take(&mut calls, room_left);
            if !calls.is_empty() {
                self.issue(calls);
            }
            if closing && self.pending.is_empty() && self.resend.is_empty() {
                return;
            }
            self.turn(room > 0);
        }
    }

    /// Queue `calls` on the session, logging in first if it was lost.
    fn issue(&mut self, calls: Vec<Call>) {
        let mut calls = calls.into_iter();
        while let Some(call) = calls.next() {
            if self.session.as_ref().is_none_or(Session::is_broken) {
                self.drop_session();
                match Session::connect(&self.login) {
                    Ok(s) => self.session = Some(s),
                    Err(e) => {
                        // Every command that waited for this login fails
                        // with it; the next one tries anew.
                        let queued = self.port.take_all();
                        for c in std::iter::once(call).chain(calls).chain(queued) {
                            let _ = c.reply.send(Err(e.clone()));
                        }
                        return;
                    }
                }
            }
            let deadline = Instant::now() + self.login.timeout;
            self.submit(call, deadline, 1);
        }
    }

    /// Queue one command on the live session.
    fn submit(&mut self, call: Call, deadline: Instant, attempts: u32) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let ctx = session.ctx.raw();
        let what = call.op.what();
        let slot = SlotBox::new();
        let data: *mut c_void = slot.0.cast();
        let mut iov: Vec<ffi::scsi_iovec> = match &call.op {
            Op::Read { bufs, .. } => bufs
                .iter()
                .map(|&(p, n)| ffi::scsi_iovec {
                    iov_base: p.cast(),
                    iov_len: n,
                })
                .collect(),
            Op::Write { bufs, .. } => bufs
                .iter()
                .map(|&(p, n)| ffi::scsi_iovec {
                    iov_base: p.cast_mut().cast(),
                    iov_len: n,
                })
                .collect(),
            _ => Vec::new(),
        };
        let raw = match call.op {
            Op::Read {
                lun,
                lba,
                block_size,
                ..
            } => match transfer(what, &iov, block_size) {
                // SAFETY: the context is live; the iovecs (kept with the
                // pending command) name the caller's buffers, valid until
                // it is answered, which is after the task completed or
                // was cancelled; the slot likewise.
                Ok((len, bs, niov)) => unsafe {
                    ffi::iscsi_read16_iov_task(
                        ctx,
                        lun.into(),
                        lba,
                        len,
                        bs,
                        0,
                        0,
                        0,
                        0,
                        0,
                        on_complete,
                        data,
                        iov.as_mut_ptr(),
                        niov,
                    )
                },
                Err(e) => {
                    let _ = call.reply.send(Err(e));
                    return;
                }
            },
            Op::Write {
                lun,
                lba,
                block_size,
                ..
            } => match transfer(what, &iov, block_size) {
                // SAFETY: as for a read; libiscsi only reads the buffers.
                Ok((len, bs, niov)) => unsafe {
                    ffi::iscsi_write16_iov_task(
                        ctx,
                        lun.into(),
                        lba,
                        std::ptr::null_mut(),
                        len,
                        bs,
                        0,
                        0,
                        0,
                        0,
                        0,
                        on_complete,
                        data,
                        iov.as_mut_ptr(),
                        niov,
                    )
                },
                Err(e) => {
                    let _ = call.reply.send(Err(e));
                    return;
                }
            },
            // SAFETY: the context is live; the slot outlives the task.
            Op::SynchronizeCache { lun } => unsafe {
                ffi::iscsi_synchronizecache16_task(ctx, lun.into(), 0, 0, 0, 0, on_complete, data)
            },
            Op::Unmap { lun, lba, blocks } => {
                let mut list = ffi::unmap_list { lba, num: blocks };
                // SAFETY: libiscsi copies the descriptor into the
                // command's parameter data; the context is live.
                unsafe {
                    ffi::iscsi_unmap_task(ctx, lun.into(), 0, 0, &mut list, 1, on_complete, data)
                }
            }
        };
        let Some(task) = NonNull::new(raw) else {
            // libiscsi could not queue it: the session is not usable.
            let message = session.ctx.error();
            if call.resent {
                let _ = call.reply.send(Err(Error::Connection {
                    what,
                    message: message.clone(),
                }));
            } else {
                self.resend.push(Call {
                    resent: true,
                    ..call
                });
            }
            self.fail_all(|what| Error::Connection {
                what,
                message: message.clone(),
            });
            return;
        };
        self.pending.push(Pending {
            call,
            task,
            slot,
            _iov: iov,
            deadline,
            attempts,
        });
        self.port.sent();
    }

    /// Wait for the session or new commands (`take` whether new ones are
    /// taken now), serve the session, answer what completed, and give the
    /// session up when a deadline passed or the connection was lost.
    fn turn(&mut self, take: bool) {
        let (Some(session), Some(deadline)) = (
            self.session.as_ref(),
            self.pending.iter().map(|p| p.deadline).min(),
        ) else {
            if !self.resend.is_empty() {
                return;
            }
            self.port.wait_idle();
            return;
        };
        let ctx = session.ctx.raw();
        // SAFETY: the context is live.
        let (fd, events) = unsafe { (ffi::iscsi_get_fd(ctx), ffi::iscsi_which_events(ctx)) };
        let events = i16::try_from(events).unwrap_or(libc::POLLIN);
        // EINTR: go round again.
        let Some(ready) = self.port.wait(fd, events, take, deadline) else {
            return;
        };
        let mut lost = false;
        if ready.timed_out || ready.revents != 0 {
            // SAFETY: the context is live; callbacks write the boxed slots
            // of this thread's pending commands.
            lost = unsafe { ffi::iscsi_service(ctx, c_int::from(ready.revents)) } < 0;
        }
        let message = if lost {
            session.ctx.error()
        } else {
            String::new()
        };
        let mut broken = lost;
        let mut i = 0;
        while i < self.pending.len() {
            if !self.pending[i].slot.get().done {
                i += 1;
                continue;
            }
            let p = self.pending.swap_remove(i);
            self.port.finished();
            let status = match self.status(&p) {
                // On a lost session it cannot be sent again there.
                Status::UnitAttention(_) if lost => Status::Failed(Error::Connection {
                    what: p.call.op.what(),
                    message: message.clone(),
                }),
                s => s,
            };
            // SAFETY: the task completed: libiscsi no longer refers to it
            // or to its buffers; it is ours to free, once.
            unsafe { ffi::scsi_free_scsi_task(p.task.as_ptr()) };
            let Pending {
                call,
                deadline,
                attempts,
                ..
            } = p;
            match status {
                Status::Good => {
                    let _ = call.reply.send(Ok(()));
                }
                Status::UnitAttention(_) if attempts < UNIT_ATTENTION_ATTEMPTS => {
                    self.submit(call, deadline, attempts + 1);
                }
                Status::UnitAttention(ascq) => {
                    let _ = call.reply.send(Err(Error::Scsi {
                        what: call.op.what(),
                        key: UNIT_ATTENTION,
                        ascq,
                        message: "unit attention".into(),
                    }));
                }
                Status::Failed(e) if e.is_transport() => {
                    broken = true;
                    if call.resent {
                        let _ = call.reply.send(Err(e));
                    } else {
                        self.resend.push(Call {
                            resent: true,
                            ..call
                        });
                    }
                }
                Status::Failed(e) => {
                    let _ = call.reply.send(Err(e));
                }
            }
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

    /// What the completed task of `p` says.
    fn status(&self, p: &Pending) -> Status {
        let what = p.call.op.what();
        let context_error = || {
            self.session
                .as_ref()
                .map_or_else(String::new, |s| s.ctx.error())
        };
        match p.slot.get().status {
            ffi::SCSI_STATUS_GOOD => Status::Good,
            ffi::SCSI_STATUS_CHECK_CONDITION => {
                // SAFETY: the task completed; libiscsi parsed its sense.
                let s = unsafe { &(*p.task.as_ptr()).sense };
                let key = u8::try_from(s.key).unwrap_or(0xff);
                let ascq = u16::try_from(s.ascq).unwrap_or(0xffff);
                if key == UNIT_ATTENTION {
                    return Status::UnitAttention(ascq);
                }
                Status::Failed(Error::Scsi {
                    what,
                    key,
                    ascq,
                    message: context_error(),
                })
            }
            ffi::SCSI_STATUS_CANCELLED => Status::Failed(Error::Connection {
                what,
                message: "the command was cancelled (connection lost)".into(),
            }),
            // Transport failures come back here too: the session cannot
            // be trusted after them.
            other => Status::Failed(Error::Connection {
                what,
                message: format!("status {other:#x}: {}", context_error()),
            }),
        }
    }

    /// Give up the session: every command in flight is sent again on a
    /// new one, or fails with `error` if it was sent again already.
    fn fail_all(&mut self, error: impl Fn(&'static str) -> Error) {
        if let Some(session) = self.session.as_ref() {
            let ctx = session.ctx.raw();
            for p in &self.pending {
                // SAFETY: each task was queued on this live context and has
                // not completed: cancelling removes it and runs its
                // callback at once, so nothing refers to it or its
                // buffers afterwards; then it is ours to free.
                unsafe {
                    ffi::iscsi_scsi_cancel_task(ctx, p.task.as_ptr());
                    ffi::scsi_free_scsi_task(p.task.as_ptr());
                }
            }
        }
        self.drop_session();
        for p in std::mem::take(&mut self.pending) {
            self.port.finished();
            let call = p.call;
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

    fn drop_session(&mut self) {
        if let Some(mut s) = self.session.take() {
            // The session's state is unknown: no logout is sent on it.
            s.broken = true;
        }
    }
}
