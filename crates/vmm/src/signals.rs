//! SIGINT, SIGTERM and SIGHUP become an orderly stop (the API socket and
//! console sockets removed, the terminal restored): the handler only
//! writes to an event fd that the VM's manager thread waits on. SIGHUP is
//! what a closing terminal or SSH session sends; its default action would
//! end the process with no cleanup at all.

use std::os::fd::AsRawFd;
use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicI32, Ordering};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::register_signal_handler;

static STOP_FD: AtomicI32 = AtomicI32::new(-1);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn handle_stop(num: c_int, _info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    LAST_SIGNAL.store(num, Ordering::SeqCst);
    let fd = STOP_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; `one` is a live 8-byte
        // buffer and `fd` an eventfd kept open for the process's life.
        unsafe { libc::write(fd, (&raw const one).cast(), 8) };
    }
}

/// Route SIGINT, SIGTERM and SIGHUP to `stop`. The event fd must stay open for the
/// rest of the process (the caller leaks or keeps it).
pub fn install_stop_handlers(stop: &EventFd) -> std::io::Result<()> {
    STOP_FD.store(stop.as_raw_fd(), Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        register_signal_handler(sig, handle_stop)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(())
}

/// The last stop signal received, if any.
pub fn received_signal() -> Option<i32> {
    match LAST_SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}
