//! Network namespaces: running work in a throwaway one, so interfaces it
//! creates neither collide with nor disturb the host's.

use std::io;

/// Run `f` on a new thread inside a new, empty network namespace; the
/// namespace disappears when the thread ends and the last descriptor on
/// it (a TAP, a socket) closes. Needs CAP_SYS_ADMIN.
pub fn run_isolated<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(2) with CLONE_NEWNET touches only this
            // thread's namespace membership; no memory is passed.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
