//! One iSCSI session driven by libiscsi's asynchronous API and our own
//! poll loop, so that every call ends by its deadline even when the target
//! stops answering.

use std::ffi::{CStr, CString};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use libc::{c_int, c_void};

use crate::ffi;
use crate::scsi::{self, Capacity, DeviceType};
use crate::{Error, Result};

/// CHAP credentials the initiator presents at login.
#[derive(Clone, PartialEq, Eq)]
pub struct Chap {
    /// CHAP user name.
    pub user: String,
    /// CHAP secret.
    pub secret: String,
}

impl std::fmt::Debug for Chap {
    // The secret never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chap").field("user", &self.user).finish()
    }
}

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct Login {
    /// `HOST[:PORT]` of the target's portal (port 3260 when not given).
    pub portal: String,
    /// The target's IQN; ignored by [`discover`].
    pub target: String,
    /// Our initiator name (an IQN).
    pub initiator: String,
    /// CHAP credentials, when the target asks for them.
    pub chap: Option<Chap>,
    /// How long any one call (connect and login, or a command) may take.
    pub timeout: Duration,
}

/// A target a portal reported through SendTargets discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTarget {
    /// The target's IQN.
    pub name: String,
    /// Its portals, as `ADDRESS:PORT,TPGT`.
    pub portals: Vec<String>,
}

/// What a callback leaves for the poll loop to find.
#[derive(Default)]
pub(crate) struct Slot {
    pub(crate) done: bool,
    pub(crate) status: c_int,
    /// Filled by the discovery callback only.
    targets: Vec<DiscoveredTarget>,
}

/// Stores how a command ended.
///
/// # Safety
/// `private_data` is the `Slot` of the context the command was queued on,
/// which outlives the context.
pub(crate) unsafe extern "C" fn on_complete(
    _iscsi: *mut ffi::iscsi_context,
    status: c_int,
    _command_data: *mut c_void,
    private_data: *mut c_void,
) {
    // SAFETY: see the function's contract.
    let slot = unsafe { &mut *private_data.cast::<Slot>() };
    slot.done = true;
    slot.status = status;
}

/// Copies SendTargets' answer, which libiscsi frees after the callback.
///
/// # Safety
/// As [`on_complete`]; on success `command_data` is libiscsi's list of
/// `iscsi_discovery_address`, valid during the call.
unsafe extern "C" fn on_discovery(
    iscsi: *mut ffi::iscsi_context,
    status: c_int,
    command_data: *mut c_void,
    private_data: *mut c_void,
) {
    // SAFETY: see the function's contract.
    let slot = unsafe { &mut *private_data.cast::<Slot>() };
    if status == ffi::SCSI_STATUS_GOOD {
        let mut addr = command_data.cast::<ffi::iscsi_discovery_address>();
        while !addr.is_null() {
            // SAFETY: a node of the list libiscsi handed us.
            let a = unsafe { &*addr };
            let mut portals = Vec::new();
            let mut p = a.portals;
            while !p.is_null() {
                // SAFETY: a node of the portal list of `a`.
                let portal = unsafe { &*p };
                portals.push(c_text(portal.portal));
                p = portal.next;
            }
            slot.targets.push(DiscoveredTarget {
                name: c_text(a.target_name),
                portals,
            });
            addr = a.next;
        }
    }
    // SAFETY: forwarded under the same contract.
    unsafe { on_complete(iscsi, status, command_data, private_data) }
}

/// A C string libiscsi owns, copied; empty when null.
fn c_text(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libiscsi's strings are NUL-terminated.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn c_string(what: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid(format!("{what} contains a NUL byte")))
}

/// A libiscsi context and the slot its callbacks write to. The slot is
/// freed only after the context, so no late callback can reach freed
/// memory.
pub(crate) struct Context {
    ptr: NonNull<ffi::iscsi_context>,
    slot: *mut Slot,
}

// SAFETY: a context is used by one thread at a time (every method takes
// `&mut self`), and libiscsi keeps no thread-local state.
unsafe impl Send for Context {}

impl Context {
    fn new(initiator: &str) -> Result<Self> {
        crate::load()?;
        let name = c_string("the initiator name", initiator)?;
        // SAFETY: `name` is a valid C string; libiscsi copies it.
        let ptr = unsafe { ffi::iscsi_create_context(name.as_ptr()) };
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| Error::Invalid("libiscsi could not create a context".into()))?;
        Ok(Self {
            ptr,
            slot: Box::into_raw(Box::default()),
        })
    }

    pub(crate) fn raw(&self) -> *mut ffi::iscsi_context {
        self.ptr.as_ptr()
    }

    /// libiscsi's last error message, on one line.
    pub(crate) fn error(&self) -> String {
        // SAFETY: the context is live; the string is copied at once.
        let text = c_text(unsafe { ffi::iscsi_get_error(self.raw()) });
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            "the connection failed".into()
        } else {
            text
        }
    }

    /// Clear the slot for the next command; its address for the callback.
    fn arm(&mut self) -> *mut c_void {
        // SAFETY: the slot lives as long as the context and no command is
        // in flight (commands run one at a time).
        unsafe { *self.slot = Slot::default() };
        self.slot.cast()
    }

    fn slot(&self) -> &Slot {
        // SAFETY: as `arm`; callbacks run only inside `iscsi_service`, never
        // while this borrow lives.
        unsafe { &*self.slot }
    }

    /// Serve the connection until the armed command completes or
    /// `deadline` passes; the command's status.
    fn wait(&mut self, what: &'static str, deadline: Instant) -> Result<c_int> {
        loop {
            if self.slot().done {
                return Ok(self.slot().status);
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
                    ffi::iscsi_get_fd(self.raw()),
                    ffi::iscsi_which_events(self.raw()),
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
            if unsafe { ffi::iscsi_service(self.raw(), revents) } < 0 {
                if self.slot().done {
                    return Ok(self.slot().status);
                }
                return Err(Error::Connection {
                    what,
                    message: self.error(),
                });
            }
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context is live and destroyed once; callbacks it runs
        // while tearing down still find the slot, freed only afterwards.
        unsafe {
            ffi::iscsi_destroy_context(self.raw());
            drop(Box::from_raw(self.slot));
        }
    }
}

/// Connect to `login.portal` and log in (a normal session to
/// `login.target`, or a discovery session) by `deadline`.
fn log_in(login: &Login, discovery: bool) -> Result<Context> {
    let deadline = Instant::now() + login.timeout;
    let mut ctx = Context::new(&login.initiator)?;
    let portal = c_string("the portal", &login.portal)?;
    // SAFETY: the context is live and every string outlives the call
    // that takes it (libiscsi copies them).
    unsafe {
        ffi::iscsi_set_noautoreconnect(ctx.raw(), 1);
        let kind = if discovery {
            ffi::ISCSI_SESSION_DISCOVERY
        } else {
            let target = c_string("the target name", &login.target)?;
            if ffi::iscsi_set_targetname(ctx.raw(), target.as_ptr()) != 0 {
                return Err(Error::Invalid(ctx.error()));
            }
            ffi::ISCSI_SESSION_NORMAL
        };
        ffi::iscsi_set_session_type(ctx.raw(), kind);
        if let Some(chap) = &login.chap {
            let user = c_string("the CHAP user", &chap.user)?;
            let secret = c_string("the CHAP secret", &chap.secret)?;
            if ffi::iscsi_set_initiator_username_pwd(ctx.raw(), user.as_ptr(), secret.as_ptr()) != 0
            {
                return Err(Error::Invalid(ctx.error()));
            }
        }
    }
    let what = "connect";
    let slot = ctx.arm();
    // SAFETY: as above; the slot outlives the context.
    if unsafe { ffi::iscsi_connect_async(ctx.raw(), portal.as_ptr(), on_complete, slot) } != 0 {
        return Err(Error::Connection {
            what,
            message: ctx.error(),
        });
    }
    if ctx.wait(what, deadline)? != ffi::SCSI_STATUS_GOOD {
        return Err(Error::Connection {
            what,
            message: ctx.error(),
        });
    }
    let what = "login";
    let slot = ctx.arm();
    // SAFETY: as above.
    if unsafe { ffi::iscsi_login_async(ctx.raw(), on_complete, slot) } != 0 {
        return Err(Error::Connection {
            what,
            message: ctx.error(),
        });
    }
    if ctx.wait(what, deadline)? != ffi::SCSI_STATUS_GOOD {
        return Err(Error::Login(ctx.error()));
    }
    Ok(ctx)
}

/// Ask the portal which targets it serves (SendTargets discovery).
pub fn discover(login: &Login) -> Result<Vec<DiscoveredTarget>> {
    let deadline = Instant::now() + login.timeout;
    let mut ctx = log_in(login, true)?;
    let what = "discovery";
    let slot = ctx.arm();
    // SAFETY: the context is live; the slot outlives it.
    if unsafe { ffi::iscsi_discovery_async(ctx.raw(), on_discovery, slot) } != 0 {
        return Err(Error::Connection {
            what,
            message: ctx.error(),
        });
    }
    if ctx.wait(what, deadline)? != ffi::SCSI_STATUS_GOOD {
        return Err(Error::Connection {
            what,
            message: ctx.error(),
        });
    }
    // SAFETY: the command completed; nothing else touches the slot.
    Ok(std::mem::take(unsafe { &mut (*ctx.slot).targets }))
}

/// A logged-in session to one target.
pub struct Session {
    pub(crate) ctx: Context,
    login: Login,
    /// Set when a command ended without an answer (deadline, lost
    /// connection): the session's state is unknown, so it takes no more
    /// commands.
    pub(crate) broken: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("portal", &self.login.portal)
            .field("target", &self.login.target)
            .field("broken", &self.broken)
            .finish()
    }
}

/// A queued SCSI task, cancelled and freed when dropped.
struct Task<'a> {
    ctx: &'a mut Context,
    task: NonNull<ffi::scsi_task>,
    finished: bool,
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        // SAFETY: the task was queued on this live context. Cancelling a
        // task libiscsi still holds removes it and runs its callback at
        // once, so no later callback or data transfer refers to it or to
        // its buffers; then it is ours to free.
        unsafe {
            if !self.finished {
                ffi::iscsi_scsi_cancel_task(self.ctx.raw(), self.task.as_ptr());
            }
            ffi::scsi_free_scsi_task(self.task.as_ptr());
        }
    }
}

impl Task<'_> {
    fn data_in(&self) -> &[u8] {
        // SAFETY: the task completed; its data-in buffer (owned by the
        // task) holds `size` bytes.
        unsafe {
            let t = &*self.task.as_ptr();
            match usize::try_from(t.datain.size) {
                Ok(n) if n > 0 && !t.datain.data.is_null() => {
                    std::slice::from_raw_parts(t.datain.data, n)
                }
                _ => &[],
            }
        }
    }

    fn sense(&self) -> (u8, u16) {
        // SAFETY: the task completed; its sense was parsed by libiscsi.
        let s = unsafe { &(*self.task.as_ptr()).sense };
        (
            u8::try_from(s.key).unwrap_or(0xff),
            u16::try_from(s.ascq).unwrap_or(0xffff),
        )
    }
}

/// SCSI sense key UNIT ATTENTION: the target reports an event (a reset,
/// a changed LUN) on the first command after it; the command may be sent
/// again.
pub(crate) const UNIT_ATTENTION: u8 = 0x6;

impl Session {
    /// Connect to `login.portal` and log in to `login.target`.
    pub fn connect(login: &Login) -> Result<Self> {
        let ctx = log_in(login, false)?;
        Ok(Self {
            ctx,
            login: login.clone(),
            broken: false,
        })
    }

    /// What the session was opened with.
    pub fn login(&self) -> &Login {
        &self.login
    }

    /// Whether a command ended without an answer, so the session must be
    /// replaced by a new [`Session::connect`].
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Queue a task with `submit` (given the context and the callback's
    /// data), wait for it, and hand the completed task to `done`. A UNIT
    /// ATTENTION is retried a few times.
    fn run<T>(
        &mut self,
        what: &'static str,
        mut submit: impl FnMut(*mut ffi::iscsi_context, *mut c_void) -> *mut ffi::scsi_task,
        done: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        if self.broken {
            return Err(Error::Connection {
                what,
                message: "the session was lost".into(),
            });
        }
        let deadline = Instant::now() + self.login.timeout;
        let mut attempts = 0;
        loop {
            let slot = self.ctx.arm();
            let raw = submit(self.ctx.raw(), slot);
            let Some(task) = NonNull::new(raw) else {
                return Err(Error::Connection {
                    what,
                    message: self.ctx.error(),
                });
            };
            let mut task = Task {
                ctx: &mut self.ctx,
                task,
                finished: false,
            };
            let status = match task.ctx.wait(what, deadline) {
                Ok(s) => s,
                Err(e) => {
                    drop(task);
                    self.broken = true;
                    return Err(e);
                }
            };
            task.finished = true;
            match status {
                ffi::SCSI_STATUS_GOOD => return done(task.data_in()),
                ffi::SCSI_STATUS_CHECK_CONDITION => {
                    let (key, ascq) = task.sense();
                    attempts += 1;
                    if key == UNIT_ATTENTION && attempts < 4 {
                        continue;
                    }
                    let message = task.ctx.error();
                    return Err(Error::Scsi {
                        what,
                        key,
                        ascq,
                        message,
                    });
                }
                ffi::SCSI_STATUS_CANCELLED => {
                    drop(task);
                    self.broken = true;
                    return Err(Error::Connection {
                        what,
                        message: "the command was cancelled (connection lost)".into(),
                    });
                }
                other => {
                    let message = task.ctx.error();
                    drop(task);
                    // Transport failures come back here too: the session
                    // cannot be trusted after them.
                    self.broken = true;
                    return Err(Error::Connection {
                        what,
                        message: format!("status {other:#x}: {message}"),
                    });
                }
            }
        }
    }

    /// The LUNs the target reports (REPORT LUNS), in its order.
    pub fn report_luns(&mut self) -> Result<Vec<u16>> {
        const ALLOC: c_int = 16 * 1024;
        self.run(
            "REPORT LUNS",
            // SAFETY: the context is live; the slot outlives it.
            |c, s| unsafe { ffi::iscsi_reportluns_task(c, 0, ALLOC, on_complete, s) },
            scsi::parse_report_luns,
        )
    }

    /// The peripheral device type of `lun` (standard INQUIRY).
    pub fn device_type(&mut self, lun: u16) -> Result<DeviceType> {
        self.run(
            "INQUIRY",
            // SAFETY: as in `report_luns`.
            |c, s| unsafe { ffi::iscsi_inquiry_task(c, lun.into(), 0, 0, 96, on_complete, s) },
            scsi::parse_inquiry,
        )
    }

    /// Check that `lun` is ready (TEST UNIT READY).
    pub fn test_unit_ready(&mut self, lun: u16) -> Result<()> {
        self.run(
            "TEST UNIT READY",
            // SAFETY: as in `report_luns`.
            |c, s| unsafe { ffi::iscsi_testunitready_task(c, lun.into(), on_complete, s) },
            |_| Ok(()),
        )
    }

    /// Size, block size and thin provisioning of `lun` (READ CAPACITY 16).
    pub fn read_capacity(&mut self, lun: u16) -> Result<Capacity> {
        self.run(
            "READ CAPACITY(16)",
            // SAFETY: as in `report_luns`.
            |c, s| unsafe { ffi::iscsi_readcapacity16_task(c, lun.into(), on_complete, s) },
            scsi::parse_capacity16,
        )
    }

    /// Read blocks from `lba` into `bufs`, in order (READ 16). The
    /// buffers' total length must be a multiple of `block_size`.
    pub fn read(
        &mut self,
        lun: u16,
        lba: u64,
        block_size: u32,
        bufs: &mut [&mut [u8]],
    ) -> Result<()> {
        let raw: Vec<(*mut u8, usize)> =
            bufs.iter_mut().map(|b| (b.as_mut_ptr(), b.len())).collect();
        // SAFETY: the buffers are borrowed mutably for the whole call.
        unsafe { self.read_raw(lun, lba, block_size, &raw) }
    }

    /// As [`Session::read`], into raw buffers (guest memory, which must
    /// not be seen through Rust references).
    ///
    /// # Safety
    /// Each `(pointer, length)` must be writable memory that nothing else
    /// reads or frees until the call returns.
    pub unsafe fn read_raw(
        &mut self,
        lun: u16,
        lba: u64,
        block_size: u32,
        bufs: &[(*mut u8, usize)],
    ) -> Result<()> {
        let mut iov: Vec<ffi::scsi_iovec> = bufs
            .iter()
            .map(|&(p, n)| ffi::scsi_iovec {
                iov_base: p.cast(),
                iov_len: n,
            })
            .collect();
        let (len, bs, niov) = transfer("READ(16)", &iov, block_size)?;
        self.run(
            "READ(16)",
            // SAFETY: the iovecs name memory valid until this call returns
            // (the caller's promise), and `run` cancels the task before it
            // returns, so libiscsi keeps no pointer to them.
            |c, s| unsafe {
                ffi::iscsi_read16_iov_task(
                    c,
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
                    s,
                    iov.as_mut_ptr(),
                    niov,
                )
            },
            |_| Ok(()),
        )
    }

    /// Write `bufs`, in order, to blocks from `lba` (WRITE 16). The
    /// buffers' total length must be a multiple of `block_size`.
    pub fn write(&mut self, lun: u16, lba: u64, block_size: u32, bufs: &[&[u8]]) -> Result<()> {
        let raw: Vec<(*const u8, usize)> = bufs.iter().map(|b| (b.as_ptr(), b.len())).collect();
        // SAFETY: the buffers are borrowed for the whole call.
        unsafe { self.write_raw(lun, lba, block_size, &raw) }
    }

    /// As [`Session::write`], from raw buffers.
    ///
    /// # Safety
    /// Each `(pointer, length)` must be readable memory that is not freed
    /// until the call returns.
    pub unsafe fn write_raw(
        &mut self,
        lun: u16,
        lba: u64,
        block_size: u32,
        bufs: &[(*const u8, usize)],
    ) -> Result<()> {
        let mut iov: Vec<ffi::scsi_iovec> = bufs
            .iter()
            .map(|&(p, n)| ffi::scsi_iovec {
                iov_base: p.cast_mut().cast(),
                iov_len: n,
            })
            .collect();
        let (len, bs, niov) = transfer("WRITE(16)", &iov, block_size)?;
        self.run(
            "WRITE(16)",
            // SAFETY: as in `read_raw`; libiscsi only reads the buffers of
            // a write.
            |c, s| unsafe {
                ffi::iscsi_write16_iov_task(
                    c,
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
                    s,
                    iov.as_mut_ptr(),
                    niov,
                )
            },
            |_| Ok(()),
        )
    }

    /// Make every completed write to `lun` durable (SYNCHRONIZE CACHE 16).
    pub fn synchronize_cache(&mut self, lun: u16) -> Result<()> {
        self.run(
            "SYNCHRONIZE CACHE(16)",
            // SAFETY: as in `report_luns`.
            |c, s| unsafe {
                ffi::iscsi_synchronizecache16_task(c, lun.into(), 0, 0, 0, 0, on_complete, s)
            },
            |_| Ok(()),
        )
    }

    /// Tell the target `blocks` blocks from `lba` are no longer needed
    /// (UNMAP, one descriptor).
    pub fn unmap(&mut self, lun: u16, lba: u64, blocks: u32) -> Result<()> {
        let mut list = ffi::unmap_list { lba, num: blocks };
        self.run(
            "UNMAP",
            // SAFETY: libiscsi copies the descriptor into the command's
            // parameter data; the context is live.
            |c, s| unsafe {
                ffi::iscsi_unmap_task(c, lun.into(), 0, 0, &mut list, 1, on_complete, s)
            },
            |_| Ok(()),
        )
    }

    /// Log out, waiting at most a second: a courtesy to the target, which
    /// otherwise notices the closed connection.
    fn log_out(&mut self) {
        if self.broken {
            return;
        }
        let slot = self.ctx.arm();
        // SAFETY: the context is live; the slot outlives it.
        if unsafe { ffi::iscsi_logout_async(self.ctx.raw(), on_complete, slot) } == 0 {
            let _ = self
                .ctx
                .wait("logout", Instant::now() + Duration::from_secs(1));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.log_out();
    }
}

/// Check a data transfer's iovecs: its length, block size and iovec count
/// as libiscsi takes them.
pub(crate) fn transfer(
    what: &'static str,
    iov: &[ffi::scsi_iovec],
    block_size: u32,
) -> Result<(u32, c_int, c_int)> {
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    let bad = |why: &str| Error::Invalid(format!("{what}: {why}"));
    let len = u32::try_from(total).map_err(|_| bad("transfer longer than 4 GiB"))?;
    if block_size == 0 || len % block_size != 0 {
        return Err(bad("length is not a multiple of the block size"));
    }
    let bs = c_int::try_from(block_size).map_err(|_| bad("block size too large"))?;
    let niov = c_int::try_from(iov.len()).map_err(|_| bad("too many buffers"))?;
    Ok((len, bs, niov))
}
