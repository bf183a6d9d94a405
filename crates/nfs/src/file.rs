//! One file on one NFS export, driven by libnfs's asynchronous API and
//! our own poll loop, so that every call ends by its deadline even when
//! the server stops answering.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use libc::{c_int, c_void};

use crate::ffi;
use crate::url::FileUrl;
use crate::{Error, Result};

/// Most bytes one pread or pwrite call asks libnfs for. libnfs splits a
/// call at the server's largest READ or WRITE and sends the pieces at
/// once; a server that still answers short is asked again for the rest.
pub(crate) const CALL_MAX: u64 = 4 << 20;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFlags {
    /// Reads only.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

/// What `fstat` says of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Bytes the server has allocated for it.
    pub allocated: u64,
    /// Mode bits, file type included.
    pub mode: u32,
}

impl Stat {
    pub(crate) fn from_raw(st: &ffi::nfs_stat_64) -> Self {
        Self {
            size: st.nfs_size,
            allocated: st.nfs_used,
            mode: u32::try_from(st.nfs_mode).unwrap_or(0),
        }
    }

    /// Whether the file is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// What the callback should keep of a call's answer.
pub(crate) enum Want {
    Nothing,
    Handle,
    Stat,
    /// Scatter the read's bytes into these buffers, in order.
    Read(Vec<(*mut u8, usize)>),
}

/// What a callback leaves for the poll loop to find.
pub(crate) struct Slot {
    pub(crate) done: bool,
    pub(crate) err: c_int,
    pub(crate) message: String,
    pub(crate) handle: *mut ffi::nfsfh,
    pub(crate) stat: ffi::nfs_stat_64,
    pub(crate) want: Want,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            done: false,
            err: 0,
            message: String::new(),
            handle: std::ptr::null_mut(),
            stat: ffi::nfs_stat_64::default(),
            want: Want::Nothing,
        }
    }
}

/// Stores how a call ended and what it returned.
///
/// # Safety
/// `private_data` is the `Slot` of the context the call was queued on,
/// which outlives the context; `data` is what libnfs documents for the
/// call the slot was armed for (an error string when `err < 0`).
pub(crate) unsafe extern "C" fn on_complete(
    err: c_int,
    _nfs: *mut ffi::nfs_context,
    data: *mut c_void,
    private_data: *mut c_void,
) {
    // SAFETY: see the function's contract.
    let slot = unsafe { &mut *private_data.cast::<Slot>() };
    slot.done = true;
    slot.err = err;
    if err < 0 {
        slot.message = c_text(data.cast());
        return;
    }
    match &mut slot.want {
        Want::Nothing => {}
        Want::Handle => slot.handle = data.cast(),
        Want::Stat => {
            if !data.is_null() {
                // SAFETY: fstat64's answer is a `struct nfs_stat_64`.
                slot.stat = unsafe { *data.cast::<ffi::nfs_stat_64>() };
            }
        }
        Want::Read(bufs) => {
            let mut left = usize::try_from(err).unwrap_or(0);
            let mut src = data.cast::<u8>().cast_const();
            for &(dst, len) in bufs.iter() {
                if left == 0 || src.is_null() {
                    break;
                }
                let n = len.min(left);
                // SAFETY: libnfs hands `err` readable bytes at `data`; the
                // destination is writable for `len` bytes (the caller's
                // promise when it armed the slot) and no Rust reference
                // to it exists.
                unsafe {
                    std::ptr::copy_nonoverlapping(src, dst, n);
                    src = src.add(n);
                }
                left -= n;
            }
        }
    }
}

/// A C string libnfs owns, copied and put on one line; empty when null.
fn c_text(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libnfs's strings are NUL-terminated.
    let text = unsafe { CStr::from_ptr(p) }.to_string_lossy();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid(format!("{what} contains a NUL byte")))
}

/// A libnfs context and the slot its callbacks write to. The slot is
/// freed only after the context, so no late callback can reach freed
/// memory.
pub(crate) struct Context {
    ptr: NonNull<ffi::nfs_context>,
    slot: *mut Slot,
}

// SAFETY: a context is used by one thread at a time (every method takes
// `&mut self`), and libnfs keeps no thread-local state.
unsafe impl Send for Context {}

impl Context {
    fn new() -> Result<Self> {
        crate::load()?;
        // SAFETY: no preconditions; the library is loaded.
        let ptr = unsafe { ffi::nfs_init_context() };
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| Error::Invalid("libnfs could not create a context".into()))?;
        Ok(Self {
            ptr,
            slot: Box::into_raw(Box::default()),
        })
    }

    pub(crate) fn raw(&self) -> *mut ffi::nfs_context {
        self.ptr.as_ptr()
    }

    /// libnfs's last error message, on one line.
    pub(crate) fn error(&self) -> String {
        // SAFETY: the context is live; the string is copied at once.
        let text = c_text(unsafe { ffi::nfs_get_error(self.raw()) });
        if text.is_empty() {
            "the connection failed".into()
        } else {
            text
        }
    }

    /// Clear the slot for the next call, keeping `want` of its answer;
    /// the slot's address for the callback.
    fn arm(&mut self, want: Want) -> *mut c_void {
        // SAFETY: the slot lives as long as the context and no call is in
        // flight (calls run one at a time).
        unsafe {
            *self.slot = Slot {
                want,
                ..Slot::default()
            }
        };
        self.slot.cast()
    }

    fn slot(&self) -> &Slot {
        // SAFETY: as `arm`; callbacks run only inside `nfs_service`, never
        // while this borrow lives.
        unsafe { &*self.slot }
    }

    /// Forget the read buffers of the armed call, so nothing is written
    /// to them after the caller returns.
    fn disarm(&mut self) {
        // SAFETY: as `arm`.
        unsafe { (*self.slot).want = Want::Nothing };
    }

    /// Serve the connection until the armed call completes or `deadline`
    /// passes; the call's result (>= 0) or its error.
    fn wait(&mut self, what: &'static str, deadline: Instant) -> Result<c_int> {
        let out = self.serve(what, deadline);
        self.disarm();
        out
    }

    fn serve(&mut self, what: &'static str, deadline: Instant) -> Result<c_int> {
        loop {
            if self.slot().done {
                return self.answer(what, false);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout { what });
            }
            let slice = (deadline - now).min(Duration::from_millis(100));
            let ms = c_int::try_from(slice.as_millis()).unwrap_or(100).max(1);
            // SAFETY: the context is live.
            let (fd, events) = unsafe {
                (
                    ffi::nfs_get_fd(self.raw()),
                    ffi::nfs_which_events(self.raw()),
                )
            };
            let mut pfd = libc::pollfd {
                fd,
                events: i16::try_from(events).unwrap_or(libc::POLLIN),
                revents: 0,
            };
            // SAFETY: one valid pollfd; a negative fd is ignored by poll.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Connection {
                    what,
                    message: format!("poll: {e}"),
                });
            }
            let revents = if n > 0 { c_int::from(pfd.revents) } else { 0 };
            // SAFETY: the context is live; callbacks write the armed slot.
            if unsafe { ffi::nfs_service(self.raw(), revents) } < 0 {
                if self.slot().done {
                    return self.answer(what, true);
                }
                return Err(Error::Connection {
                    what,
                    message: self.error(),
                });
            }
        }
    }

    /// The completed call's result; `lost` when the connection failed in
    /// the same turn, so an error is the connection's, not the server's.
    fn answer(&self, what: &'static str, lost: bool) -> Result<c_int> {
        outcome(self.slot(), what, lost, || self.error())
    }
}

/// How the call `slot` was armed for ended: its result (>= 0) or its
/// error; `lost` when the connection failed in the same turn, so an error
/// is the connection's, not the server's. `context_error` is libnfs's
/// message, for an error that came without one.
pub(crate) fn outcome(
    slot: &Slot,
    what: &'static str,
    lost: bool,
    context_error: impl FnOnce() -> String,
) -> Result<c_int> {
    if slot.err >= 0 {
        return Ok(slot.err);
    }
    let message = if slot.message.is_empty() {
        context_error()
    } else {
        slot.message.clone()
    };
    let errno = -slot.err;
    // libnfs fails the calls of a lost connection with these.
    if lost || matches!(errno, libc::EFAULT | libc::EINTR | libc::ETIMEDOUT) {
        return Err(Error::Connection { what, message });
    }
    Err(Error::Nfs {
        what,
        errno,
        message,
    })
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context is live and destroyed once; callbacks it runs
        // while tearing down still find the slot, freed only afterwards,
        // and no read buffer is armed any more (`wait` disarms).
        unsafe {
            (*self.slot).want = Want::Nothing;
            ffi::nfs_destroy_context(self.raw());
            drop(Box::from_raw(self.slot));
        }
    }
}

/// One file on an NFS export, opened on its own connection.
pub struct RemoteFile {
    pub(crate) ctx: Context,
    pub(crate) fh: NonNull<ffi::nfsfh>,
    url: FileUrl,
    pub(crate) flags: OpenFlags,
    pub(crate) timeout: Duration,
    /// Set when a call ended without an answer (deadline, lost
    /// connection): the connection's state is unknown, so it takes no
    /// more calls.
    pub(crate) broken: bool,
}

// SAFETY: the file handle belongs to the context, which is `Send`; both
// are used by one thread at a time (`&mut self`).
unsafe impl Send for RemoteFile {}

impl std::fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFile")
            .field("url", &self.url.to_string())
            .field("broken", &self.broken)
            .finish()
    }
}

impl RemoteFile {
    /// Connect to the server `url` names, mount its export and open its
    /// file, all by `timeout`; the file must be a regular file.
    pub fn open(url: &FileUrl, flags: OpenFlags, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let mut ctx = Context::new()?;
        let server = c_string("the server", &url.server)?;
        let export = c_string("the export", &url.export)?;
        let path = c_string("the path", &url.file_path())?;
        configure(&ctx, url)?;
        let what = "mount";
        let slot = ctx.arm(Want::Nothing);
        // SAFETY: the context is live, the strings outlive the call
        // (libnfs copies them) and the slot outlives the context.
        let queued = unsafe {
            ffi::nfs_mount_async(
                ctx.raw(),
                server.as_ptr(),
                export.as_ptr(),
                on_complete,
                slot,
            )
        };
        if queued != 0 {
            return Err(Error::Connection {
                what,
                message: ctx.error(),
            });
        }
        ctx.wait(what, deadline).map_err(|e| match e {
            // The portmapper, MOUNT or NFS service did not answer.
            Error::Connection { what, message } => Error::Connection {
                what,
                message: format!("cannot reach an NFS server at {} ({message})", url.server),
            },
            e => e,
        })?;
        let what = "open";
        let mode = match flags {
            OpenFlags::ReadOnly => libc::O_RDONLY,
            OpenFlags::ReadWrite => libc::O_RDWR,
        };
        let slot = ctx.arm(Want::Handle);
        // SAFETY: as above.
        if unsafe { ffi::nfs_open_async(ctx.raw(), path.as_ptr(), mode, on_complete, slot) } != 0 {
            return Err(Error::Connection {
                what,
                message: ctx.error(),
            });
        }
        ctx.wait(what, deadline)?;
        let fh = NonNull::new(ctx.slot().handle).ok_or_else(|| Error::Connection {
            what,
            message: "libnfs returned no file handle".into(),
        })?;
        let mut me = Self {
            ctx,
            fh,
            url: url.clone(),
            flags,
            timeout,
            broken: false,
        };
        let st = me.stat()?;
        if !st.is_file() {
            return Err(Error::NotAFile(url.to_string()));
        }
        Ok(me)
    }

    /// The URL the file was opened from.
    pub fn url(&self) -> &FileUrl {
        &self.url
    }

    /// Whether a call ended without an answer, so the file must be
    /// opened anew.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Queue a call with `submit` (given the context, its file and the
    /// callback's data) and wait for it by the timeout; the call's
    /// result. A call that ends without an answer breaks the file.
    fn run(
        &mut self,
        what: &'static str,
        want: Want,
        submit: impl FnOnce(*mut ffi::nfs_context, *mut ffi::nfsfh, *mut c_void) -> c_int,
    ) -> Result<c_int> {
        if self.broken {
            return Err(Error::Connection {
                what,
                message: "the connection was lost".into(),
            });
        }
        let deadline = Instant::now() + self.timeout;
        let slot = self.ctx.arm(want);
        if submit(self.ctx.raw(), self.fh.as_ptr(), slot) != 0 {
            self.ctx.disarm();
            self.broken = true;
            return Err(Error::Connection {
                what,
                message: self.ctx.error(),
            });
        }
        let out = self.ctx.wait(what, deadline);
        if out.as_ref().is_err_and(Error::is_transport) {
            self.broken = true;
        }
        out
    }

    /// Size, allocation and mode of the file (GETATTR).
    pub fn stat(&mut self) -> Result<Stat> {
        self.run("fstat", Want::Stat, |c, fh, s| {
            // SAFETY: the context and handle are live; the slot outlives them.
            unsafe { ffi::nfs_fstat64_async(c, fh, on_complete, s) }
        })?;
        Ok(Stat::from_raw(&self.ctx.slot().stat))
    }

    /// Read into `bufs`, in order, from byte `offset`. Bytes past the
    /// file's end read as zeroes.
    ///
    /// # Safety
    /// Each `(pointer, length)` must be writable memory that nothing else
    /// reads or frees until the call returns.
    pub unsafe fn read_raw(&mut self, offset: u64, bufs: &[(*mut u8, usize)]) -> Result<()> {
        let total: u64 = bufs.iter().map(|&(_, n)| n as u64).sum();
        let mut done = 0u64;
        while done < total {
            let count = (total - done).min(CALL_MAX);
            let part = slice_bufs(bufs, done, count);
            let at = offset + done;
            let n = self.run("read", Want::Read(part.clone()), |c, fh, s| {
                // SAFETY: the context and handle are live; the callback
                // copies into `part`, valid until we return (the caller's
                // promise), and the slot is disarmed before we do.
                unsafe { ffi::nfs_pread_async(c, fh, at, count, on_complete, s) }
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

    /// Read `buf.len()` bytes from byte `offset`.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let raw = [(buf.as_mut_ptr(), buf.len())];
        // SAFETY: `buf` is borrowed mutably for the whole call.
        unsafe { self.read_raw(offset, &raw) }
    }

    /// Write `data` at byte `offset`, growing the file if it ends past
    /// the file's end.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let count = (data.len() - done).min(usize::try_from(CALL_MAX).unwrap_or(1 << 20));
            let chunk = &data[done..done + count];
            let at = offset + done as u64;
            let n = self.run("write", Want::Nothing, |c, fh, s| {
                // SAFETY: the context and handle are live; `chunk` stays
                // borrowed until the call has completed or the context
                // dropped it.
                unsafe {
                    ffi::nfs_pwrite_async(
                        c,
                        fh,
                        at,
                        count as u64,
                        chunk.as_ptr().cast(),
                        on_complete,
                        s,
                    )
                }
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
    pub fn fsync(&mut self) -> Result<()> {
        self.run("fsync", Want::Nothing, |c, fh, s| {
            // SAFETY: the context and handle are live.
            unsafe { ffi::nfs_fsync_async(c, fh, on_complete, s) }
        })
        .map(drop)
    }

    /// Set the file's size (SETATTR).
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        self.run("ftruncate", Want::Nothing, |c, fh, s| {
            // SAFETY: the context and handle are live.
            unsafe { ffi::nfs_ftruncate_async(c, fh, size, on_complete, s) }
        })
        .map(drop)
    }
}

impl Drop for RemoteFile {
    fn drop(&mut self) {
        if self.broken {
            // The handle stays with the context's memory (a few bytes):
            // closing would queue a call on a dead connection.
            return;
        }
        let slot = self.ctx.arm(Want::Nothing);
        // SAFETY: the context and handle are live; libnfs frees the handle.
        let queued =
            unsafe { ffi::nfs_close_async(self.ctx.raw(), self.fh.as_ptr(), on_complete, slot) };
        if queued == 0 {
            let _ = self
                .ctx
                .wait("close", Instant::now() + Duration::from_secs(1));
        }
    }
}

/// Pass the URL's arguments to the context.
fn configure(ctx: &Context, url: &FileUrl) -> Result<()> {
    // SAFETY: the context is live.
    unsafe {
        // Reconnecting is ours to do: a lost connection fails the call.
        ffi::nfs_set_autoreconnect(ctx.raw(), 0);
        if let Some(uid) = url.uid {
            ffi::nfs_set_uid(ctx.raw(), c_int::try_from(uid).unwrap_or(65534));
        }
        if let Some(gid) = url.gid {
            ffi::nfs_set_gid(ctx.raw(), c_int::try_from(gid).unwrap_or(65534));
        }
        if let Some(n) = url.tcp_syncnt {
            ffi::nfs_set_tcp_syncnt(ctx.raw(), c_int::try_from(n).unwrap_or(1));
        }
        let version = if url.version == 4 {
            ffi::NFS_V4
        } else {
            ffi::NFS_V3
        };
        if ffi::nfs_set_version(ctx.raw(), version) != 0 {
            return Err(Error::Invalid(ctx.error()));
        }
    }
    // Ports have no setter of their own in libnfs 4.0: its URL parser
    // sets them on the context.
    let mut args = Vec::new();
    if let Some(p) = url.port {
        args.push(format!("nfsport={p}"));
    }
    if let Some(p) = url.mount_port {
        args.push(format!("mountport={p}"));
    }
    if !args.is_empty() {
        let text = format!("nfs://{}/x?{}", url.server_host(), args.join("&"));
        let text = c_string("the URL", &text)?;
        // SAFETY: the context is live and the string valid; the parsed URL
        // is freed at once (only its effect on the context is wanted).
        unsafe {
            let parsed = ffi::nfs_parse_url_dir(ctx.raw(), text.as_ptr());
            if parsed.is_null() {
                return Err(Error::Invalid(ctx.error()));
            }
            ffi::nfs_destroy_url(parsed);
        }
    }
    Ok(())
}

/// The parts of `bufs` that cover bytes `[from, from + len)` of their
/// concatenation.
pub(crate) fn slice_bufs(bufs: &[(*mut u8, usize)], from: u64, len: u64) -> Vec<(*mut u8, usize)> {
    let mut out = Vec::new();
    let mut at = 0u64;
    let end = from + len;
    for &(p, n) in bufs {
        let (b0, b1) = (at, at + n as u64);
        at = b1;
        let (s, e) = (b0.max(from), b1.min(end));
        if s < e {
            let skip = usize::try_from(s - b0).unwrap_or(0);
            // The offset stays inside the buffer (s < b1).
            out.push((p.wrapping_add(skip), usize::try_from(e - s).unwrap_or(0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_scatter_lists() {
        let mut a = [0u8; 4];
        let mut b = [0u8; 6];
        let bufs = [(a.as_mut_ptr(), 4), (b.as_mut_ptr(), 6)];
        let s = slice_bufs(&bufs, 2, 5);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0], (a.as_mut_ptr().wrapping_add(2), 2));
        assert_eq!(s[1], (b.as_mut_ptr(), 3));
        assert_eq!(slice_bufs(&bufs, 4, 6), vec![(b.as_mut_ptr(), 6)]);
        assert!(slice_bufs(&bufs, 10, 0).is_empty());
    }
}
