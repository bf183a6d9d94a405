//! The SIGSYS handler of kill mode: a trapped call is named on stderr and
//! reported to the launcher, which records it and ends the process.
//!
//! The handler runs on the thread that made the call, under that thread's
//! filter, so it only uses calls every filter allows (write, futex,
//! exit_group) and memory it owns: the thread's name is kept in a
//! thread-local set when the filter was installed (reading
//! /proc/self/task/TID/comm would need open, which most threads may not
//! call), and the call's name comes from a static table.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use crate::syscall_names::SYSCALL_NAMES;
use crate::{Violation, EXIT_SECCOMP};

/// Bytes of a thread name kept (the kernel's limit, with its NUL).
const NAME_LEN: usize = 16;
/// A report on the pipe: the call's number, its ioctl request (0 for
/// other calls), then the thread's name.
const REPORT_LEN: usize = 4 + 8 + NAME_LEN;

thread_local! {
    static THREAD_NAME: Cell<[u8; NAME_LEN]> = const { Cell::new([0; NAME_LEN]) };
    static ON_LAUNCHER: Cell<bool> = const { Cell::new(false) };
}

/// Write end of the pipe to the launcher (-1: none).
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
/// A word no one ever wakes: where a reporting thread waits for the end.
static NEVER: AtomicU32 = AtomicU32::new(0);
/// How long (in 100 ms ticks) a reporting thread waits for the launcher
/// to end the process before ending it itself.
const REPORT_WAIT_TICKS: u32 = 50;

/// Remember the calling thread's name for the handler.
pub(crate) fn set_thread_name(name: &str, launcher: bool) {
    let mut bytes = [0u8; NAME_LEN];
    let n = name.len().min(NAME_LEN - 1);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    THREAD_NAME.with(|c| c.set(bytes));
    ON_LAUNCHER.with(|c| c.set(launcher));
}

/// Whether the calling thread is the launcher.
pub(crate) fn on_launcher() -> bool {
    ON_LAUNCHER.with(Cell::get)
}

/// The name of system call `nr`, or "unknown".
pub(crate) fn call_name(nr: i32) -> &'static str {
    SYSCALL_NAMES
        .binary_search_by_key(&nr, |&(n, _)| n)
        .map_or("unknown", |i| SYSCALL_NAMES[i].1)
}

/// Install the handler and make the report pipe; returns its read end.
pub(crate) fn install() -> io::Result<OwnedFd> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here; the
    // write end is kept open for the life of the process.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: a zeroed sigaction is a valid starting point; the handler
    // has the SA_SIGINFO signature.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) = on_sigsys;
        action.sa_sigaction = handler as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    REPORT_FD.store(write.as_raw_fd(), Ordering::SeqCst);
    std::mem::forget(write);
    Ok(read)
}

/// Read one report from the pipe.
pub(crate) fn read_report(read: &OwnedFd) -> Option<Violation> {
    let mut buf = [0u8; REPORT_LEN];
    // SAFETY: reads at most REPORT_LEN bytes into a buffer that size.
    let n = unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), REPORT_LEN) };
    if usize::try_from(n).ok()? != REPORT_LEN {
        return None;
    }
    let number = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let mut request = [0u8; 8];
    request.copy_from_slice(&buf[4..12]);
    let request = u64::from_le_bytes(request);
    let name = &buf[12..];
    let end = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    Some(Violation {
        thread: String::from_utf8_lossy(&name[..end]).into_owned(),
        number,
        ioctl: (number == IOCTL).then_some(request),
    })
}

/// A fixed buffer the handler formats its line into.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_hex(&mut self, v: u64) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push(b"0x");
        self.push(&digits[i..]);
    }

    fn push_number(&mut self, n: i32) {
        let mut digits = [0u8; 11];
        let mut i = digits.len();
        let negative = n < 0;
        let mut v = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if negative {
            self.push(b"-");
        }
        self.push(&digits[i..]);
    }
}

/// The `si_syscall` field of a SIGSYS siginfo: after si_signo, si_errno,
/// si_code and padding (16 bytes), `void *si_call_addr`, then the int.
const SI_SYSCALL_OFFSET: usize = 24;

/// ioctl(2)'s number: its request is worth naming too.
#[allow(clippy::cast_possible_truncation)] // system call numbers are small
const IOCTL: i32 = libc::SYS_ioctl as i32;

extern "C" fn on_sigsys(_sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers;
    // for SIGSYS from seccomp the int at this offset is the call number.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    // The trapped call's second argument is still in its register (rsi)
    // in the saved context.
    // SAFETY: for SA_SIGINFO handlers the third argument is the thread's
    // saved ucontext_t.
    let arg1 = unsafe {
        let uc = ctx.cast::<libc::ucontext_t>();
        u64::from_ne_bytes((*uc).uc_mcontext.gregs[libc::REG_RSI as usize].to_ne_bytes())
    };
    let name = THREAD_NAME.with(Cell::get);
    let end = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    let mut line = Line {
        buf: [0; 160],
        len: 0,
    };
    line.push(b"vireo: seccomp: thread \"");
    line.push(if end == 0 { b"?" } else { &name[..end] });
    line.push(b"\" made forbidden system call ");
    line.push_number(nr);
    line.push(b" (");
    line.push(call_name(nr).as_bytes());
    if nr == IOCTL {
        line.push(b" ");
        line.push_hex(arg1 & 0xffff_ffff);
    }
    line.push(b"); stopping\n");
    // SAFETY: write(2) and futex(2) are async-signal-safe; every buffer is
    // a live local; the report descriptor stays open for the process.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        let fd = REPORT_FD.load(Ordering::SeqCst);
        if fd >= 0 && !ON_LAUNCHER.with(Cell::get) {
            let mut report = [0u8; REPORT_LEN];
            report[..4].copy_from_slice(&nr.to_le_bytes());
            report[4..12].copy_from_slice(&(arg1 & 0xffff_ffff).to_le_bytes());
            report[12..].copy_from_slice(&name);
            // One write under PIPE_BUF is atomic: reports never interleave.
            if libc::write(fd, report.as_ptr().cast(), REPORT_LEN) == REPORT_LEN as isize {
                // The launcher records it and ends the process; this
                // thread must not go on past the forbidden call. Should the
                // launcher not get there (it needs a lock this thread
                // holds, say), the process still ends, unrecorded, after
                // REPORT_WAIT_TICKS of 100 ms.
                let tick = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                };
                for _ in 0..REPORT_WAIT_TICKS {
                    libc::syscall(
                        libc::SYS_futex,
                        NEVER.as_ptr(),
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        0,
                        &raw const tick,
                    );
                }
            }
        }
        // No launcher to tell (it is the launcher that failed): end here.
        libc::_exit(EXIT_SECCOMP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_names_come_from_the_table() {
        assert_eq!(call_name(0), "read");
        assert_eq!(call_name(57), "fork");
        assert_eq!(call_name(16), "ioctl");
        assert_eq!(call_name(9999), "unknown");
    }

    #[test]
    fn numbers_are_formatted_without_allocating() {
        let mut line = Line {
            buf: [0; 160],
            len: 0,
        };
        line.push_number(0);
        line.push(b" ");
        line.push_number(435);
        line.push(b" ");
        line.push_number(-1);
        line.push(b" ");
        line.push_hex(0x4020_ae46);
        assert_eq!(&line.buf[..line.len], b"0 435 -1 0x4020ae46");
    }
}
