//! io_uring for images whose guest bytes sit at the same offsets in one
//! host file (raw): reads, writes and flushes go straight to the kernel
//! from the submitting thread, with no worker hand-off. Completions are
//! signalled on the [`crate::AsyncDisk`]'s eventfd (registered with the
//! ring) and reaped when the caller drains.

use std::os::unix::io::RawFd;

use io_uring::{opcode, types, IoUring};

use crate::file::{iov_len, iov_slice, iov_zero, Iov};
use crate::{Completion, Error, Result};

/// Submission queue entries; at most this many requests are in the ring
/// at once (more go to the thread pool).
const ENTRIES: u32 = 256;

/// What the ring needs to know about the file.
#[derive(Debug, Clone, Copy)]
pub struct DirectFile {
    /// The open host file.
    pub fd: RawFd,
    /// Opened with `O_DIRECT`: buffers and offsets must be aligned.
    pub direct: bool,
    /// Required alignment when `direct`.
    pub align: usize,
}

#[derive(Debug)]
enum Kind {
    Read,
    Write,
    Flush,
}

#[derive(Debug)]
struct InFlight {
    user_data: u64,
    kind: Kind,
    /// The whole request.
    iovs: Vec<Iov>,
    /// Bytes done so far (short transfers are continued).
    done: u64,
    /// Host offset the request's first byte maps to.
    host: u64,
    /// iovecs of the piece now in the kernel; must outlive it.
    current: Vec<libc::iovec>,
}

// SAFETY: the raw pointers are request memory whose owner promised it stays
// valid until completion, on any thread (see IoBuf).
unsafe impl Send for InFlight {}

/// A ring and the requests in it.
pub struct Ring {
    ring: IoUring,
    file: DirectFile,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    inflight: usize,
    /// While plugged, entries wait in the submission queue for
    /// [`Ring::unplug`], so a batch goes to the kernel in one system call.
    plugged: bool,
    /// Entries in the submission queue the kernel has not been told of.
    unsubmitted: usize,
    /// Completions being reaped (kept to reuse its allocation).
    cqes: Vec<(u64, i32)>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("inflight", &self.inflight)
            .finish()
    }
}

impl Ring {
    /// A ring for `file` that signals `eventfd` on completions; `None`
    /// when the kernel has no io_uring (or it is disabled).
    pub fn new(file: DirectFile, eventfd: RawFd) -> Option<Ring> {
        let ring = IoUring::new(ENTRIES).ok()?;
        ring.submitter().register_eventfd(eventfd).ok()?;
        Some(Ring {
            ring,
            file,
            slots: Vec::new(),
            free: Vec::new(),
            inflight: 0,
            plugged: false,
            unsubmitted: 0,
            cqes: Vec::new(),
        })
    }

    /// Hold submissions until [`Ring::unplug`].
    pub fn plug(&mut self) {
        self.plugged = true;
    }

    /// Send every held submission to the kernel, in one system call.
    pub fn unplug(&mut self) -> Result<()> {
        self.plugged = false;
        self.submit_pending()
    }

    /// Tell the kernel of the entries queued so far. On failure they stay
    /// queued and go with the next call.
    fn submit_pending(&mut self) -> Result<()> {
        if self.unsubmitted == 0 {
            return Ok(());
        }
        let n = self
            .ring
            .submit()
            .map_err(|e| Error::io("io_uring submit", e))?;
        self.unsubmitted = self.unsubmitted.saturating_sub(n);
        Ok(())
    }

    /// Whether this request can go to the ring now.
    pub fn accepts(&self, offset: u64, iovs: &[Iov]) -> bool {
        if self.inflight >= ENTRIES as usize {
            return false;
        }
        if !self.file.direct {
            return true;
        }
        let a = self.file.align;
        offset.is_multiple_of(a as u64)
            && iovs
                .iter()
                .all(|v| (v.ptr as usize).is_multiple_of(a) && v.len.is_multiple_of(a))
    }

    /// Submit a read (`write == false`) or write of `iovs` at host
    /// offset `host`.
    pub fn submit_rw(
        &mut self,
        user_data: u64,
        write: bool,
        host: u64,
        iovs: Vec<Iov>,
    ) -> Result<()> {
        let kind = if write { Kind::Write } else { Kind::Read };
        self.start(InFlight {
            user_data,
            kind,
            iovs,
            done: 0,
            host,
            current: Vec::new(),
        })
    }

    /// Submit an fdatasync.
    pub fn submit_flush(&mut self, user_data: u64) -> Result<()> {
        self.start(InFlight {
            user_data,
            kind: Kind::Flush,
            iovs: Vec::new(),
            done: 0,
            host: 0,
            current: Vec::new(),
        })
    }

    fn start(&mut self, req: InFlight) -> Result<()> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[slot] = Some(req);
        self.inflight += 1;
        if let Err(e) = self.push(slot) {
            self.slots[slot] = None;
            self.free.push(slot);
            self.inflight -= 1;
            return Err(e);
        }
        Ok(())
    }

    /// Put the (rest of the) request in `slot` into the submission queue.
    fn push(&mut self, slot: usize) -> Result<()> {
        let fd = types::Fd(self.file.fd);
        let req = self.slots[slot]
            .as_mut()
            .ok_or_else(|| Error::InvalidImage("io_uring slot".into()))?;
        let entry = match req.kind {
            Kind::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Kind::Read | Kind::Write => {
                let total = iov_len(&req.iovs);
                let rest = iov_slice(&req.iovs, req.done, total - req.done);
                req.current = rest
                    .iter()
                    .take(1024)
                    .map(|v| libc::iovec {
                        iov_base: v.ptr.cast(),
                        iov_len: v.len,
                    })
                    .collect();
                let n = u32::try_from(req.current.len()).unwrap_or(1024);
                let at = req.host + req.done;
                if matches!(req.kind, Kind::Read) {
                    opcode::Readv::new(fd, req.current.as_ptr(), n)
                        .offset(at)
                        .build()
                } else {
                    opcode::Writev::new(fd, req.current.as_ptr(), n)
                        .offset(at)
                        .build()
                }
            }
        };
        let entry = entry.user_data(slot as u64);
        // SAFETY: the entry's iovecs (req.current) and the memory they
        // point at live in self.slots until the completion is reaped.
        let pushed = unsafe { self.ring.submission().push(&entry).is_ok() };
        if !pushed {
            self.submit_pending()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(&entry) }
                .map_err(|_| Error::Unsupported("a full io_uring queue"))?;
        }
        self.unsubmitted += 1;
        // Queued now: a failed submission is retried (see Ring::stalled),
        // never reported, or the caller would run the request elsewhere
        // while its entry still waits to go to the kernel.
        if !self.plugged {
            if let Err(e) = self.submit_pending() {
                tracing::debug!("io_uring: submission failed, retried: {e}");
            }
        }
        Ok(())
    }

    /// Requests in the ring.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// Reap finished requests into `out`; continue short transfers. Calls
    /// `read_done` once per finished read.
    pub fn reap(&mut self, out: &mut Vec<Completion>, read_done: &dyn Fn()) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for (slot, res) in cqes.drain(..) {
            let Ok(slot) = usize::try_from(slot) else {
                continue;
            };
            let Some(mut req) = self.slots.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            let total = iov_len(&req.iovs);
            let op = match req.kind {
                Kind::Read => "read",
                Kind::Write => "write",
                Kind::Flush => "fdatasync",
            };
            let outcome = if res < 0 {
                let errno = -res;
                if errno == libc::EINTR || errno == libc::EAGAIN {
                    None
                } else {
                    Some(Err(Error::io(op, std::io::Error::from_raw_os_error(errno))))
                }
            } else {
                req.done += u64::try_from(res).unwrap_or(0);
                if matches!(req.kind, Kind::Flush) || req.done >= total {
                    Some(Ok(()))
                } else if res == 0 && matches!(req.kind, Kind::Read) {
                    // End of file inside the disk's size: zeroes.
                    iov_zero(&iov_slice(&req.iovs, req.done, total - req.done));
                    Some(Ok(()))
                } else if res == 0 {
                    Some(Err(Error::io(
                        op,
                        std::io::Error::from(std::io::ErrorKind::WriteZero),
                    )))
                } else {
                    // A short transfer: continue with the rest.
                    None
                }
            };
            match outcome {
                Some(result) => {
                    if matches!(req.kind, Kind::Read) {
                        read_done();
                    }
                    self.inflight -= 1;
                    self.free.push(slot);
                    out.push(Completion {
                        user_data: req.user_data,
                        result,
                    });
                }
                None => {
                    let user_data = req.user_data;
                    let read = matches!(req.kind, Kind::Read);
                    self.slots[slot] = Some(req);
                    if let Err(e) = self.push(slot) {
                        if read {
                            read_done();
                        }
                        self.slots[slot] = None;
                        self.inflight -= 1;
                        self.free.push(slot);
                        out.push(Completion {
                            user_data,
                            result: Err(e),
                        });
                    }
                }
            }
        }
        self.cqes = cqes;
        // Entries a failed submission left queued go now (with the
        // completion queue just emptied, which a full one needs).
        if !self.plugged {
            if let Err(e) = self.submit_pending() {
                tracing::debug!("io_uring: submission failed again: {e}");
            }
        }
    }

    /// Entries wait in the submission queue after a failed submission:
    /// the caller must come back to [`Ring::reap`], which tries again.
    pub fn stalled(&self) -> bool {
        !self.plugged && self.unsubmitted > 0
    }

    /// Wait for every request in the ring, discarding the completions
    /// (the disk is being dropped).
    pub fn wait_all(&mut self, read_done: &dyn Fn()) {
        let mut sink = Vec::new();
        while self.inflight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                // A signal: the requests are still in the kernel.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
            self.reap(&mut sink, read_done);
            sink.clear();
        }
    }
}
