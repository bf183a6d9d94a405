//! The VMM processes drivers start, and find again after a daemon restart.
//!
//! A VMM runs in a session of its own so that it outlives the daemon
//! (`KillMode=process`), with no terminal and no inherited descriptors
//! other than those the driver hands it on purpose. A pid alone does not
//! name a process for long: once it ends, the kernel may give the number to
//! another. So a process is always named by its pid AND its start time
//! (`/proc/PID/stat` field 22), and once found it is held through a pidfd,
//! which keeps naming the same process however pids are reused: signals and
//! waits go through the pidfd, never through the bare number.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What `/proc/PID/stat` says about a process, the fields drivers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `D`, `Z`, ...).
    pub state: char,
    /// User-mode CPU time, in clock ticks.
    pub utime: u64,
    /// Kernel-mode CPU time, in clock ticks.
    pub stime: u64,
    /// Start time, in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Parses the contents of `/proc/PID/stat`. The second field (`comm`,
    /// in parentheses) is whatever name the process gave itself: it may
    /// hold spaces and `)`, so the fixed fields are counted from the LAST
    /// `)`. `None` when the text does not have the fields.
    pub fn parse(text: &str) -> Option<ProcStat> {
        let rest = &text[text.rfind(')')? + 1..];
        // After comm: field 3 is state; utime, stime and starttime are
        // fields 14, 15 and 22, i.e. indexes 11, 12 and 19 from state.
        let fields: Vec<&str> = rest.split_ascii_whitespace().take(20).collect();
        let mut state = fields.first()?.chars();
        let letter = state.next()?;
        if state.next().is_some() {
            return None;
        }
        Some(ProcStat {
            state: letter,
            utime: fields.get(11)?.parse().ok()?,
            stime: fields.get(12)?.parse().ok()?,
            start_time: fields.get(19)?.parse().ok()?,
        })
    }

    /// Reads and parses `/proc/PID/stat`. `NotFound` when no such pid.
    pub fn read(pid: u32) -> io::Result<ProcStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        ProcStat::parse(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat has no start time"),
            )
        })
    }
}

/// A pid's start time in clock ticks since boot.
pub fn start_time(pid: u32) -> io::Result<u64> {
    ProcStat::read(pid).map(|stat| stat.start_time)
}

/// Whether `pid` is a live process (not a zombie) started at
/// `start_time`. A pid since reused by another process answers false.
pub fn is_alive(pid: u32, start_time: u64) -> bool {
    matches!(ProcStat::read(pid), Ok(stat) if stat.start_time == start_time && stat.state != 'Z')
}

/// CPU time (user + system) `pid` has used; zero when it is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = ProcStat::read(pid) else {
        return Duration::ZERO;
    };
    ticks_to_duration(stat.utime.saturating_add(stat.stime))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no memory effects; it only returns a value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100);
    Duration::from_secs(ticks / hz) + Duration::from_nanos((ticks % hz) * 1_000_000_000 / hz)
}

/// Spawns `cmd` in a session of its own: stdin from `/dev/null`, stdout and
/// stderr appended to `log_path` (created 0600), and every descriptor but
/// 0, 1, 2 and those in `keep` closed in the child. The `keep` descriptors
/// stay open at the same numbers in the child (their close-on-exec flag is
/// cleared there only), for handing the VMM a TAP or an image.
///
/// `cgroups` are `cgroup.procs` files the child writes itself into before
/// exec, so it runs in its cgroup from its first instruction.
pub fn spawn_session(
    cmd: &mut Command,
    log_path: &Path,
    keep: &[RawFd],
    cgroups: &[PathBuf],
) -> io::Result<Child> {
    let joins: Vec<File> = cgroups
        .iter()
        .map(|p| {
            OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        })
        .collect::<io::Result<_>>()?;
    let join_fds: Vec<RawFd> = joins.iter().map(AsRawFd::as_raw_fd).collect();
    // What the child says if joining a cgroup fails, made before the fork
    // (the child must not allocate).
    let join_errors: Vec<Vec<u8>> = cgroups
        .iter()
        .map(|p| format!("vireo: cannot join the cgroup {}: errno ", p.display()).into_bytes())
        .collect();
    // The program is checked here because an exec that fails cannot be
    // reported by the child: the error pipe std's Command reports it
    // through is among the descriptors closed below.
    check_executable(Path::new(cmd.get_program()))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log_path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", log_path.display())))?;
    let log_err = log.try_clone()?;
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    // Descriptors the child holds until it has joined its cgroup, then
    // closes: everything else the daemon has open (its state directory's
    // lock among them) is closed first, since a cgroup write can take a
    // while and a daemon killed meanwhile must not find its lock held by
    // this child when it comes back.
    let mut held: Vec<RawFd> = keep.iter().chain(&join_fds).copied().collect();
    held.sort_unstable();
    held.dedup();
    // Where the one-by-one fallback stops, found before the fork: sysconf
    // is not async-signal-safe.
    // SAFETY: sysconf has no memory effects; it only returns a value.
    let open_max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    let open_max = RawFd::try_from(open_max)
        .ok()
        .filter(|m| *m > 0)
        .unwrap_or(65536);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (setsid, fcntl, close_range, close,
    // write, _exit); it allocates nothing (the lists were built before the
    // fork). It reports a failure on its stderr (the log) and exits rather
    // than returning an error: std's Command would write that error to
    // its error pipe, closed by then, and abort.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                die(b"vireo: cannot start a session: errno ");
            }
            let mut next: RawFd = 3;
            for &fd in &held {
                close_from_to(next, fd - 1, open_max);
                next = fd + 1;
            }
            close_from_to(next, RawFd::MAX, open_max);
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    die(b"vireo: cannot hand over a descriptor: errno ");
                }
            }
            for (&fd, what) in join_fds.iter().zip(&join_errors) {
                // "0" is the writing process itself.
                if libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                    die(what);
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(joins);
    child
}

/// Fails the spawn with a clear error unless `program` is a regular file
/// this process may execute (a bare name is looked up in `PATH`).
fn check_executable(program: &Path) -> io::Result<()> {
    let found = if program.components().count() > 1 {
        Some(program.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    let Some(path) = found.filter(|p| p.exists()) else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: not found", program.display()),
        ));
    };
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a program path"))?;
    // SAFETY: access reads the NUL-terminated path and touches no memory
    // of ours otherwise.
    if !path.is_file() || unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: not an executable file", path.display()),
        ));
    }
    Ok(())
}

/// In a forked child: writes `what` and the current errno in decimal, a
/// newline, to stderr, and exits with status 127 (as a shell does when a
/// command cannot run).
///
/// # Safety
/// Only between fork and exec.
unsafe fn die(what: &[u8]) -> ! {
    // SAFETY: errno is this thread's; reading it has no other effect.
    let errno = unsafe { *libc::__errno_location() };
    let mut digits = [0u8; 12];
    let mut n = errno.unsigned_abs();
    let mut at = digits.len() - 1;
    digits[at] = b'\n';
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    // SAFETY: write and _exit are async-signal-safe; the buffers outlive
    // the calls.
    unsafe {
        libc::write(2, what.as_ptr().cast(), what.len());
        libc::write(2, digits[at..].as_ptr().cast(), digits.len() - at);
        libc::_exit(127)
    }
}

/// Closes descriptors `first..=last` in a forked child. close_range where
/// the kernel has it; else one by one up to `open_max`, the descriptor
/// limit.
///
/// # Safety
/// Only between fork and exec: it closes descriptors other code may own.
unsafe fn close_from_to(first: RawFd, last: RawFd, open_max: RawFd) {
    if first > last {
        return;
    }
    let (Ok(lo), Ok(hi)) = (libc::c_uint::try_from(first), libc::c_uint::try_from(last)) else {
        return;
    };
    // SAFETY: close_range only closes descriptors; the caller guarantees
    // no one else in this (forked) process uses them.
    if unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) } == 0 {
        return;
    }
    for fd in first..=open_max.min(last) {
        // SAFETY: as above.
        unsafe { libc::close(fd) };
    }
}

/// A process held through a pidfd: signals and waits reach the process it
/// was opened on even if its pid has since been reused.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// Opens the process `pid` if it is alive and started at `start_time`;
    /// `Ok(None)` when it is gone or the pid now names another process.
    pub fn open(pid: u32, start_time: u64) -> io::Result<Option<PidFd>> {
        let Some(fd) = open_pidfd(pid)? else {
            return Ok(None);
        };
        // The pidfd names whatever process held the pid when it was opened;
        // checking the start time AFTER opening proves that is ours.
        if !is_alive(pid, start_time) {
            return Ok(None);
        }
        Ok(Some(PidFd { fd, pid }))
    }

    /// Opens a child this process spawned and has not reaped: its pid
    /// cannot have been reused, even if it has already exited (a zombie,
    /// which the pidfd then reports as ended).
    pub fn from_child(child: &Child) -> io::Result<PidFd> {
        let pid = child.id();
        open_pidfd(pid)?
            .map(|fd| PidFd { fd, pid })
            .ok_or_else(|| io::Error::other(format!("process {pid} is not there to watch")))
    }

    /// The pid it was opened on.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal`. Ok when the process has already ended (nothing
    /// left to signal).
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a null siginfo sends a plain
        // signal to the process the (valid, owned) pidfd names.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if ret < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` (forever when `None`) for the process to end.
    /// True once it has ended (exited or a zombie), false on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let ms = match deadline {
                None => -1,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Round up so a sub-millisecond rest does not spin.
                    libc::c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
            if ret > 0 {
                return Ok(true);
            }
            if ret < 0 {
                let err = io::Error::last_os_error();
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(err);
                }
            } else if ms >= 0 {
                return Ok(false);
            }
        }
    }

    /// Ends the process: SIGTERM and up to `grace` for it to go when
    /// `grace` is given, then SIGKILL and up to `kill_wait`. Errors when it
    /// is still there after all that (stuck in the kernel).
    pub fn terminate(&self, grace: Option<Duration>, kill_wait: Duration) -> io::Result<()> {
        if let Some(grace) = grace {
            self.signal(libc::SIGTERM)?;
            if self.wait(Some(grace))? {
                return Ok(());
            }
        }
        self.signal(libc::SIGKILL)?;
        if self.wait(Some(kill_wait))? {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "process {} did not end within {} s of SIGKILL",
                self.pid,
                kill_wait.as_secs()
            ),
        ))
    }
}

/// pidfd_open(2); `None` when no process has the pid.
fn open_pidfd(pid: u32) -> io::Result<Option<OwnedFd>> {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return Ok(None);
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; no memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ESRCH) => Ok(None),
            _ => Err(err),
        };
    }
    let Ok(fd) = RawFd::try_from(ret) else {
        return Err(io::Error::other(
            "pidfd_open returned an impossible descriptor",
        ));
    };
    // SAFETY: `fd` was just returned by pidfd_open and is owned by no one
    // else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Reaps `child` once it has ended, so no zombie is left, and returns its
/// exit status; `None` while it still runs.
pub fn reap(child: &mut Child) -> io::Result<Option<std::process::ExitStatus>> {
    child.try_wait()
}

/// The last `max` bytes of `path` (a VMM's log), for error messages that
/// quote what a VMM said before it died; empty when it cannot be read.
pub fn log_tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file.seek(SeekFrom::Start(len.saturating_sub(max))).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    // Bounded: `take` stops at `max` bytes however much the file grows.
    if file.take(max).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(comm: &str, start: u64) -> String {
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 {start} \
             12345678 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        )
    }

    #[test]
    fn parses_stat_of_a_plain_name() {
        let stat = ProcStat::parse(&stat_line("vireo", 987654)).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'S',
                utime: 7,
                stime: 3,
                start_time: 987654
            }
        );
    }

    #[test]
    fn parses_stat_whose_comm_has_spaces_and_parentheses() {
        let stat = ProcStat::parse(&stat_line("a) b (c) S 1 2 3", 55)).unwrap();
        assert_eq!(stat.start_time, 55);
        assert_eq!(stat.state, 'S');
        assert_eq!((stat.utime, stat.stime), (7, 3));
    }

    #[test]
    fn refuses_truncated_or_garbled_stat() {
        assert_eq!(ProcStat::parse("4242 (vireo) S 1 2 3"), None);
        assert_eq!(ProcStat::parse("4242 vireo S 1 2 3"), None);
        assert_eq!(ProcStat::parse(""), None);
        let garbled = stat_line("x", 1).replace(" 7 3 ", " seven 3 ");
        assert_eq!(ProcStat::parse(&garbled), None);
    }

    #[test]
    fn reads_own_start_time_and_refuses_a_wrong_one() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1));
        assert!(PidFd::open(me, start + 1).unwrap().is_none());
        assert!(PidFd::open(me, start).unwrap().is_some());
    }

    #[test]
    fn cpu_time_counts_a_busy_loop() {
        // However loaded the host, spinning long enough shows as CPU time
        // (in clock ticks, so at least 10 ms at a time).
        let me = std::process::id();
        let before = cpu_time(me);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while cpu_time(me) < before + Duration::from_millis(30) {
            assert!(
                Instant::now() < deadline,
                "no CPU time counted in 20 s of spinning"
            );
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert_eq!(cpu_time(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn spawned_process_has_its_own_session_and_a_clean_fd_table() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let kept = File::open("/dev/null").unwrap();
        let dropped = File::open("/dev/null").unwrap();
        let script = format!(
            "echo sid=$(cut -d' ' -f6 /proc/self/stat) pid=$$; \
             test -e /proc/self/fd/{k} && echo kept; \
             test -e /proc/self/fd/{d} || echo dropped; echo to-stderr >&2",
            k = kept.as_raw_fd(),
            d = dropped.as_raw_fd()
        );
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(&script);
        let mut child = spawn_session(&mut cmd, &log, &[kept.as_raw_fd()], &[]).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success());
        let out = std::fs::read_to_string(&log).unwrap();
        // `$$` in a sh -c is the shell's pid; setsid made it the session
        // leader, so the session id equals it.
        let sid = out.split("sid=").nth(1).unwrap().split_whitespace().next();
        let pid = out.split("pid=").nth(1).unwrap().split_whitespace().next();
        assert_eq!(sid, pid, "{out}");
        assert!(out.contains("kept"), "{out}");
        assert!(out.contains("dropped"), "{out}");
        assert!(out.contains("to-stderr"), "{out}");
    }

    #[test]
    fn a_child_that_already_exited_is_watched_as_ended() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn_session(
            &mut Command::new("/bin/true"),
            &dir.path().join("log"),
            &[],
            &[],
        )
        .unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ProcStat::read(pid).map(|s| s.state).ok() != Some('Z') {
            assert!(Instant::now() < deadline, "/bin/true did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        let start = start_time(pid).unwrap();
        assert!(!is_alive(pid, start), "a zombie is not alive");
        assert!(PidFd::open(pid, start).unwrap().is_none());
        let pidfd = PidFd::from_child(&child).unwrap();
        assert!(pidfd.wait(Some(Duration::ZERO)).unwrap());
        assert!(reap(&mut child).unwrap().unwrap().success());
    }

    #[test]
    fn terminate_ends_a_process_that_ignores_sigterm_and_reap_leaves_no_zombie() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg("trap '' TERM; while :; do sleep 1; done");
        let mut child = spawn_session(&mut cmd, &dir.path().join("log"), &[], &[]).unwrap();
        let pid = child.id();
        let pidfd = PidFd::from_child(&child).unwrap();
        assert!(!pidfd.wait(Some(Duration::from_millis(50))).unwrap());
        let begun = Instant::now();
        pidfd
            .terminate(Some(Duration::from_millis(200)), Duration::from_secs(5))
            .unwrap();
        assert!(begun.elapsed() >= Duration::from_millis(200));
        assert!(pidfd.wait(Some(Duration::ZERO)).unwrap());
        let status = reap(&mut child).unwrap().expect("ended");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(ProcStat::read(pid).is_err(), "zombie left");
    }

    #[test]
    fn a_cgroup_that_cannot_be_joined_is_named_in_the_log_not_an_abort() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        // Writing to /dev/full fails (ENOSPC) as a removed cgroup's
        // cgroup.procs does.
        let mut child = spawn_session(
            &mut Command::new("/bin/true"),
            &log,
            &[],
            &[PathBuf::from("/dev/full")],
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(127));
        let out = std::fs::read_to_string(&log).unwrap();
        assert_eq!(
            out,
            format!(
                "vireo: cannot join the cgroup /dev/full: errno {}\n",
                libc::ENOSPC
            )
        );
    }

    #[test]
    fn a_program_that_cannot_run_is_refused_before_the_fork() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let missing = dir.path().join("no-such-vireo");
        let e = spawn_session(&mut Command::new(&missing), &log, &[], &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("no-such-vireo"), "{e}");
        let e = spawn_session(&mut Command::new(dir.path()), &log, &[], &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        assert!(spawn_session(&mut Command::new("true"), &log, &[], &[])
            .unwrap()
            .wait()
            .unwrap()
            .success());
    }
}
