//! The keeper: the process a jailed VMM forks from to be PID 1 of a PID
//! namespace of its own (`unshare(CLONE_NEWPID)` applies to children
//! only). It stays outside, in the host's PID namespace, unprivileged, and
//!
//! - forwards SIGTERM, SIGINT, SIGHUP and the like to the VMM (SIGKILL
//!   cannot be forwarded, but kills the VMM too: its parent-death signal);
//! - answers the VMM's question "what are these threads' ids in the host's
//!   PID namespace?", which the VMM cannot see from inside, so its API
//!   reports the ids a host tool can use (`taskset -p`, `/proc/TID`);
//! - writes the exit status file from the text the VMM hands it (the path
//!   is outside the jail), once the VMM has exited;
//! - removes the VMM's socket files, which the VMM can no longer reach;
//! - exits as the VMM did (its code, or the same signal).
//!
//! The two talk over a `SOCK_SEQPACKET` pair, one request per message.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{os_error, single_threaded, Error, Jail};

/// A request for host thread ids: the tag, then little-endian i32s.
const TAG_TIDS: u8 = b'T';
/// The exit status file's text: the tag, then the bytes.
const TAG_EXIT: u8 = b'X';
/// The plan of a keeper forked early: the tag, the uid and gid (LE u32),
/// then each path as a LE u32 length and its bytes: the exit status's
/// (length 0 for none), then the sockets to remove.
const TAG_PLAN: u8 = b'P';
/// The keeper's "go on" after it has set itself up.
const GO: u8 = b'g';
/// Largest message either side sends.
const MAX_MESSAGE: usize = 64 << 10;

/// What the keeper does besides waiting.
#[derive(Debug, Clone, Default)]
pub struct KeeperPlan {
    /// Where the VMM's exit status goes (`--exit-status`); its directory
    /// must be writable by the jail's uid.
    pub exit_status: Option<PathBuf>,
    /// Socket files to remove once the VMM has exited.
    pub remove_on_exit: Vec<PathBuf>,
}

/// The VMM's side of the link to its keeper.
#[derive(Debug)]
pub struct Keeper {
    link: OwnedFd,
    /// One request and its answer at a time.
    turn: Mutex<()>,
}

fn socket_pair() -> Result<(OwnedFd, OwnedFd), Error> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a writable array of two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(os_error("socketpair"));
    }
    // SAFETY: both descriptors were just created and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Fork into a new PID namespace (see the module's documentation).
/// Returns in the child, the VMM to be, as PID 1 of that namespace; the
/// parent becomes the keeper and never returns. Call first, with one
/// thread and nothing opened yet that the keeper should not hold.
pub fn fork_keeper(jail: &Jail, plan: KeeperPlan) -> Result<Keeper, Error> {
    single_threaded()?;
    crate::privileges::drop_bounding_set()?;
    let (keeper_end, vmm_end) = socket_pair()?;
    // SAFETY: affects only the children this process makes from now on.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(os_error("unshare(CLONE_NEWPID)"));
    }
    // SAFETY: one thread (checked above), so the child's copy of the
    // process is consistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_error("fork"));
    }
    if pid > 0 {
        drop(vmm_end);
        // Let the VMM run first: the keeper's own set-up can wait.
        // SAFETY: no arguments, no effect beyond scheduling.
        unsafe { libc::sched_yield() };
        serve(pid, keeper_end, jail, &plan);
    }
    drop(keeper_end);
    let keeper = Keeper {
        link: vmm_end,
        turn: Mutex::new(()),
    };
    keeper.arm_death_signal()?;
    Ok(keeper)
}

/// [`fork_keeper`] as the very first thing a process does, before it has
/// parsed its arguments: the keeper then holds a copy of almost nothing
/// (its fork copies few page tables, the VMM copies few of its pages on
/// writing them, and the keeper's exit has little to tear down), and
/// learns its plan later from [`Keeper::send_plan`]. `None` where this
/// process cannot make the PID namespace (not root, more than one
/// thread, no permission): it then goes on unforked, and [`fork_keeper`]
/// says why once the arguments are known.
pub fn fork_keeper_early() -> Option<Keeper> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 || single_threaded().is_err() {
        return None;
    }
    crate::privileges::drop_bounding_set().ok()?;
    let (keeper_end, vmm_end) = socket_pair().ok()?;
    // SAFETY: affects only the children this process makes from now on.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return None;
    }
    // SAFETY: one thread (checked above), so the child's copy of the
    // process is consistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return None;
    }
    if pid > 0 {
        drop(vmm_end);
        // SAFETY: no arguments, no effect beyond scheduling.
        unsafe { libc::sched_yield() };
        let sfd = block_signals();
        let (jail, plan) = await_plan(pid, &keeper_end, sfd);
        serve_planned(pid, keeper_end, sfd, &jail, &plan);
    }
    drop(keeper_end);
    let keeper = Keeper {
        link: vmm_end,
        turn: Mutex::new(()),
    };
    keeper.arm_death_signal().ok()?;
    Some(keeper)
}

fn read(fd: RawFd, buf: &mut [u8]) -> Option<usize> {
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return usize::try_from(n).ok();
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
}

fn write(fd: RawFd, buf: &[u8]) -> bool {
    // SAFETY: `buf` is readable for its length.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    usize::try_from(n).is_ok_and(|n| n == buf.len())
}

impl Keeper {
    /// Tell a keeper from [`fork_keeper_early`] whom to run as and what to
    /// do at the end, once the arguments are known; then
    /// [`Keeper::wait_ready`] as with [`fork_keeper`].
    pub fn send_plan(&self, jail: &Jail, plan: &KeeperPlan) -> Result<(), Error> {
        let message = encode_plan(jail, plan).ok_or_else(|| Error::Setup {
            what: "handing the keeper its plan".into(),
            source: io::Error::other("a path is too long"),
        })?;
        if write(self.link.as_raw_fd(), &message) {
            Ok(())
        } else {
            Err(os_error("handing the keeper its plan"))
        }
    }

    /// Wait until the keeper has set itself up (dropped its privileges,
    /// checked that it can write the exit status). Should it have failed,
    /// it has said why in one line, and this process exits with code 2.
    /// Call before entering the jail: meanwhile the VMM opens its files.
    pub fn wait_ready(&self) {
        let mut go = [0u8; 1];
        if read(self.link.as_raw_fd(), &mut go) != Some(1) || go[0] != GO {
            std::process::exit(2);
        }
    }

    /// Die with the keeper: SIGKILL when it goes. Changing credentials
    /// clears the parent-death signal, so [`crate::enter`]'s caller arms
    /// it again afterwards; a keeper already gone then ends this process.
    pub fn arm_death_signal(&self) -> Result<(), Error> {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
            return Err(os_error("PR_SET_PDEATHSIG"));
        }
        let mut pfd = libc::pollfd {
            fd: self.link.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            // The keeper went before the signal was armed.
            std::process::exit(2);
        }
        Ok(())
    }

    /// The host's ids of this process's threads `tids` (ids in its own
    /// PID namespace), in order; `None` for one the keeper could not map.
    pub fn host_tids(&self, tids: &[i32]) -> Vec<Option<i32>> {
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let mut request = vec![TAG_TIDS];
        for t in tids {
            request.extend_from_slice(&t.to_le_bytes());
        }
        let fd = self.link.as_raw_fd();
        let mut answer = vec![0u8; tids.len() * 4];
        let got = if write(fd, &request) {
            read(fd, &mut answer)
        } else {
            None
        };
        if got != Some(answer.len()) {
            return vec![None; tids.len()];
        }
        answer
            .chunks_exact(4)
            .map(|c| Some(i32::from_le_bytes([c[0], c[1], c[2], c[3]])).filter(|&t| t > 0))
            .collect()
    }

    /// Hand the keeper the exit status file's text, which it writes once
    /// this process has exited. The last one sent wins.
    pub fn record_exit(&self, text: &[u8]) -> io::Result<()> {
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let mut message = vec![TAG_EXIT];
        message.extend_from_slice(&text[..text.len().min(MAX_MESSAGE - 1)]);
        if write(self.link.as_raw_fd(), &message) {
            Ok(())
        } else {
            Err(io::Error::other("the keeper process is gone"))
        }
    }
}

/// Signals the keeper forwards (SIGCHLD is its own).
const FORWARDED: [libc::c_int; 8] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGWINCH,
];

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: as above; `s` is a valid signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// The keeper's life: set up, let the VMM go on, serve it, exit as it did.
fn serve(child: libc::pid_t, link: OwnedFd, jail: &Jail, plan: &KeeperPlan) -> ! {
    let sfd = block_signals();
    serve_planned(child, link, sfd, jail, plan)
}

/// Block the signals the keeper forwards, and SIGCHLD, and take them
/// from a signalfd (negative if none could be made).
fn block_signals() -> RawFd {
    let mut all = FORWARDED.to_vec();
    all.push(libc::SIGCHLD);
    let set = signal_set(&all);
    // SAFETY: a valid set; the old mask is not wanted.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: a valid set; a new descriptor.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    // SAFETY: ignoring SIGPIPE has no other effect.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if sfd < 0 {
        eprintln!("vireo: keeper: signalfd: {}", io::Error::last_os_error());
    }
    sfd
}

/// Wait up to `timeout` ms (-1: no limit) for a signal on `sfd` or a
/// message on `link` (skipped if negative): whether each is ready.
fn wait_for(sfd: RawFd, link: RawFd, timeout: libc::c_int) -> (bool, bool) {
    let watch = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [watch(sfd), watch(link)];
    // SAFETY: two valid pollfds (a negative fd is skipped).
    let _ = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
    (fds[0].revents != 0, fds[1].revents != 0)
}

/// Wait, forwarding signals, for the plan of an early keeper; should the
/// child end first (a usage error, `--help`), exit as it did.
fn await_plan(child: libc::pid_t, link: &OwnedFd, sfd: RawFd) -> (Jail, KeeperPlan) {
    let mut link_open = true;
    loop {
        if let Some(status) = reaped(child) {
            exit_as(status);
        }
        // The child is still root here: a signal reaches it at once.
        let (signalled, message) = wait_for(sfd, if link_open { link.as_raw_fd() } else { -1 }, -1);
        if signalled {
            for sig in take_signals(sfd) {
                // SAFETY: kill with a valid pid and signal.
                unsafe { libc::kill(child, sig) };
            }
        }
        if message {
            match receive(link, 0) {
                Ok(m) if m.is_empty() => link_open = false,
                Ok(m) => {
                    if let Some(planned) = decode_plan(&m) {
                        return planned;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => link_open = false,
            }
        }
    }
}

fn encode_plan(jail: &Jail, plan: &KeeperPlan) -> Option<Vec<u8>> {
    let mut m = vec![TAG_PLAN];
    m.extend_from_slice(&jail.uid.to_le_bytes());
    m.extend_from_slice(&jail.gid.to_le_bytes());
    let paths = std::iter::once(plan.exit_status.as_deref().unwrap_or(Path::new("")))
        .chain(plan.remove_on_exit.iter().map(PathBuf::as_path));
    for p in paths {
        let bytes = p.as_os_str().as_bytes();
        m.extend_from_slice(&u32::try_from(bytes.len()).ok()?.to_le_bytes());
        m.extend_from_slice(bytes);
    }
    (m.len() <= MAX_MESSAGE).then_some(m)
}

fn decode_plan(m: &[u8]) -> Option<(Jail, KeeperPlan)> {
    use std::ffi::OsStr;
    let (&tag, mut rest) = m.split_first()?;
    if tag != TAG_PLAN {
        return None;
    }
    let u32_le = |rest: &mut &[u8]| -> Option<u32> {
        let (head, tail) = rest.split_first_chunk::<4>()?;
        *rest = tail;
        Some(u32::from_le_bytes(*head))
    };
    let uid = u32_le(&mut rest)?;
    let gid = u32_le(&mut rest)?;
    let mut paths = Vec::new();
    while !rest.is_empty() {
        let len = usize::try_from(u32_le(&mut rest)?).ok()?;
        let (path, tail) = rest.split_at_checked(len)?;
        paths.push(PathBuf::from(OsStr::from_bytes(path)));
        rest = tail;
    }
    let mut paths = paths.into_iter();
    let exit_status = paths.next()?;
    let jail = Jail {
        dir: PathBuf::new(),
        uid,
        gid,
    };
    let plan = KeeperPlan {
        exit_status: (!exit_status.as_os_str().is_empty()).then_some(exit_status),
        remove_on_exit: paths.collect(),
    };
    Some((jail, plan))
}

/// The keeper's life once it knows its plan: drop privileges, let the VMM
/// go on, serve it, exit as it did.
fn serve_planned(
    child: libc::pid_t,
    link: OwnedFd,
    sfd: RawFd,
    jail: &Jail,
    plan: &KeeperPlan,
) -> ! {
    // The exit status's directory is opened while still root and written
    // through the descriptor: the uid needs write access to it, not a
    // way through every directory above it.
    let status_dir = plan.exit_status.as_deref().map(open_parent);
    let status_fd = match &status_dir {
        Some(Ok(d)) => d.as_raw_fd(),
        _ => -1,
    };
    close_all_but(&[link.as_raw_fd(), sfd, status_fd]);
    let ready = sfd >= 0
        && match crate::privileges::drop_all(jail.uid, jail.gid) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("vireo: keeper: {e}");
                false
            }
        }
        && exit_status_writable(jail, plan.exit_status.as_deref(), status_dir.as_ref());
    // Without the go-ahead the VMM exits (code 2), and so does the keeper.
    if ready {
        write(link.as_raw_fd(), &[GO]);
    }
    let mut link = ready.then_some(link);
    let mut status_text = None;
    let mut pending: Vec<libc::c_int> = Vec::new();
    let status = loop {
        if let Some(status) = reaped(child) {
            break status;
        }
        // A signal the VMM could not take yet (it was still root) is tried
        // again shortly.
        let timeout = if pending.is_empty() { -1 } else { 20 };
        let link_fd = link.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        let (signalled, message) = wait_for(sfd, link_fd, timeout);
        if signalled {
            pending.extend(take_signals(sfd));
        }
        // SAFETY: kill with a valid pid and signal.
        pending.retain(|&sig| unsafe { libc::kill(child, sig) } != 0);
        if message {
            if let Some(fd) = &link {
                if !answer(child, fd, &mut status_text) {
                    link = None;
                }
            }
        }
    };
    // The VMM's last words may still be queued.
    if let Some(fd) = &link {
        while answer(child, fd, &mut status_text) {}
    }
    if let (Some(path), Some(text), Some(Ok(dir))) = (&plan.exit_status, &status_text, &status_dir)
    {
        if let Err(e) = write_atomically(dir, path, text) {
            eprintln!(
                "vireo: cannot write the exit status to {}: {e}",
                path.display()
            );
        }
    }
    for path in &plan.remove_on_exit {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(path);
        }
    }
    exit_as(status)
}

/// Close every descriptor but `keep` (the keeper must hold none of the
/// VMM's: an inherited TAP, a terminal it does not need): close_range(2)
/// over the gaps, or where the kernel lacks it (before 5.9) each
/// descriptor /proc/self/fd lists.
fn close_all_but(keep: &[RawFd]) {
    let mut kept: Vec<libc::c_uint> = keep
        .iter()
        .filter_map(|&fd| libc::c_uint::try_from(fd).ok())
        .filter(|&fd| fd > 2)
        .collect();
    kept.sort_unstable();
    let mut first: libc::c_uint = 3;
    let mut ranges = Vec::new();
    for fd in kept {
        if fd > first {
            ranges.push((first, fd - 1));
        }
        first = first.max(fd.saturating_add(1));
    }
    ranges.push((first, libc::c_uint::MAX));
    // SAFETY: closes descriptors nothing in the keeper uses; no pointers.
    let closed = ranges
        .iter()
        .all(|&(lo, hi)| unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) } == 0);
    if closed {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let open: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor nothing in the keeper uses.
            unsafe { libc::close(fd) };
        }
    }
}

/// The directory `path` is in, opened (while the keeper is still root).
fn open_parent(path: &Path) -> io::Result<OwnedFd> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// With `--jail`, the exit status is written by the keeper, which runs
/// as the jail's uid: say now, in one line, if it could not be.
fn exit_status_writable(
    jail: &Jail,
    path: Option<&Path>,
    dir: Option<&io::Result<OwnedFd>>,
) -> bool {
    let Some(path) = path else { return true };
    if let Some(Ok(d)) = dir {
        // SAFETY: a directory descriptor and a NUL-terminated name;
        // faccessat checks the real ids, which are the jail's now.
        let r =
            unsafe { libc::faccessat(d.as_raw_fd(), c".".as_ptr(), libc::W_OK | libc::X_OK, 0) };
        if r == 0 {
            return true;
        }
    }
    eprintln!(
        "vireo: --exit-status {}: its directory is not writable by uid {} gid {} (with --jail the exit status is written after privileges are dropped)",
        path.display(),
        jail.uid,
        jail.gid
    );
    false
}

/// The child's wait status, once it has ended.
fn reaped(child: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    // SAFETY: a valid pid and a writable status word.
    let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
    (r == child).then_some(status)
}

/// Signals waiting on the signalfd, except SIGCHLD (reaped separately).
fn take_signals(sfd: RawFd) -> Vec<libc::c_int> {
    let mut out = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is writable for `size` bytes.
        let n = unsafe { libc::read(sfd, (&raw mut info).cast(), size) };
        if usize::try_from(n).ok() != Some(size) {
            return out;
        }
        let sig = libc::c_int::try_from(info.ssi_signo).unwrap_or(0);
        if sig != libc::SIGCHLD && sig != 0 {
            out.push(sig);
        }
    }
}

/// One message from `link` (`recv` with `flags`; empty when the link is
/// closed). The buffer is not zeroed first: only the pages the message
/// reaches are touched (zeroing 64 KiB was 16 page faults of the keeper's,
/// on a jailed VMM's start-up path).
fn receive(link: &OwnedFd, flags: libc::c_int) -> io::Result<Vec<u8>> {
    let mut buf = Vec::<u8>::with_capacity(MAX_MESSAGE);
    // SAFETY: the buffer is writable for its capacity.
    let n = unsafe {
        libc::recv(
            link.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.capacity(),
            flags,
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: recv wrote `n` bytes, at most the capacity.
    unsafe { buf.set_len(n) };
    Ok(buf)
}

/// Handle one message from the VMM; false when the link is closed.
fn answer(child: libc::pid_t, link: &OwnedFd, status_text: &mut Option<Vec<u8>>) -> bool {
    let buf = match receive(link, libc::MSG_DONTWAIT) {
        Ok(buf) => buf,
        // EAGAIN: nothing more for now.
        Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
    };
    let Some((&tag, body)) = buf.split_first() else {
        return false;
    };
    match tag {
        TAG_TIDS => {
            let tids: Vec<i32> = body
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let map = host_ids(child);
            let reply: Vec<u8> = tids
                .iter()
                .flat_map(|t| {
                    map.iter()
                        .find(|(_, inner)| inner == t)
                        .map_or(0, |(host, _)| *host)
                        .to_le_bytes()
                })
                .collect();
            // Never blocking: a VMM that does not read its answers must
            // not stop the keeper from forwarding signals and reaping it.
            // SAFETY: `reply` is readable for its length.
            unsafe {
                libc::send(
                    link.as_raw_fd(),
                    reply.as_ptr().cast(),
                    reply.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
        }
        TAG_EXIT => *status_text = Some(body.to_vec()),
        _ => {}
    }
    true
}

/// (host id, id in the VMM's namespace) of each of `child`'s threads,
/// from the `NSpid` lines of their status files.
fn host_ids(child: libc::pid_t) -> Vec<(i32, i32)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{child}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let status = std::fs::read_to_string(e.ok()?.path().join("status")).ok()?;
        let ids: Vec<i32> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        Some((*ids.first()?, *ids.last()?))
    })
    .collect()
}

/// Write `text` to `path` through a temporary file (made new, never
/// through a link), fsync and a rename, so a reader finds all of it or
/// nothing.
fn write_atomically(dir: &OwnedFd, path: &Path, text: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let name = path.file_name().unwrap_or_default().as_bytes().to_vec();
    let mut tmp = name.clone();
    tmp.extend_from_slice(format!(".{}.tmp", std::process::id()).as_bytes());
    let c = |b: Vec<u8>| {
        std::ffi::CString::new(b)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name with a NUL byte"))
    };
    let (name, tmp) = (c(name)?, c(tmp)?);
    // SAFETY: a directory descriptor and a NUL-terminated name; O_EXCL
    // never follows a link or reuses a file someone else placed there.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let result = file
        .write_all(text)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            // SAFETY: both names NUL-terminated, in the same directory.
            let r = unsafe {
                libc::renameat(
                    dir.as_raw_fd(),
                    tmp.as_ptr(),
                    dir.as_raw_fd(),
                    name.as_ptr(),
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    if result.is_err() {
        // SAFETY: as above.
        unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
    }
    result
}

/// Exit as the child did: its code, or killed by the same signal.
fn exit_as(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let set = signal_set(&[sig]);
        // SAFETY: default action for `sig`, unblocked, raised: the keeper
        // ends as the VMM did.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(libc::WEXITSTATUS(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_goes_to_the_keeper_whole() {
        let jail = Jail {
            dir: PathBuf::from("/j"),
            uid: 41001,
            gid: 41002,
        };
        for plan in [
            KeeperPlan::default(),
            KeeperPlan {
                exit_status: Some("/run/x/exit.json".into()),
                remove_on_exit: vec!["/run/x/api.sock".into(), "/tmp/é.sock".into()],
            },
        ] {
            let (got_jail, got) = decode_plan(&encode_plan(&jail, &plan).unwrap()).unwrap();
            assert_eq!((got_jail.uid, got_jail.gid), (41001, 41002));
            assert_eq!(got.exit_status, plan.exit_status);
            assert_eq!(got.remove_on_exit, plan.remove_on_exit);
        }
        // Cut short or tagged otherwise: no plan.
        let whole = encode_plan(&jail, &KeeperPlan::default()).unwrap();
        assert!(decode_plan(&whole[..6]).is_none());
        assert!(decode_plan(&[TAG_EXIT, 1, 2]).is_none());
        let mut long = whole.clone();
        long.extend_from_slice(&9u32.to_le_bytes());
        assert!(decode_plan(&long).is_none(), "a length past the end");
    }
}
