//! Host CPUs for the threads a device starts: a device given its own CPUs
//! (an I/O thread's pin, libvirt's `iothreadpin`) opens a
//! [`PlacementScope`] around starting its threads; every thread [`spawn`]
//! starts on the calling thread while the scope is open sets its affinity
//! to those CPUs first thing and is listed by [`pinned_threads`] while it
//! runs, so that moving the emulator threads leaves it where it is.
//!
//! The scope is the caller's, not the new thread's parent's, because the
//! launcher starts every confined thread (see the crate's documentation):
//! only the thread asking knows which device it starts threads for.
//!
//! [`spawn`]: crate::spawn

use std::cell::RefCell;
use std::io;
use std::sync::{Arc, Mutex};

thread_local! {
    static SCOPE: RefCell<Option<Arc<[usize]>>> = const { RefCell::new(None) };
}

static PINNED: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

/// While this lives, threads started by this thread run on its CPUs.
#[must_use = "the placement ends when the scope is dropped"]
pub struct PlacementScope {
    previous: Option<Arc<[usize]>>,
}

/// Place the threads this thread starts from now until the returned scope
/// is dropped on `cpus` (`None`: where the starting thread's affinity
/// puts them, as without a scope).
pub fn place_spawned(cpus: Option<Arc<[usize]>>) -> PlacementScope {
    let previous = SCOPE.with(|s| s.replace(cpus));
    PlacementScope { previous }
}

impl Drop for PlacementScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        SCOPE.with(|s| *s.borrow_mut() = previous);
    }
}

/// The CPUs the current scope asks for, captured when a thread is asked for.
pub(crate) fn current() -> Option<Arc<[usize]>> {
    SCOPE.with(|s| s.borrow().clone())
}

/// The thread ids of the running threads that were started in a scope.
pub fn pinned_threads() -> Vec<libc::pid_t> {
    PINNED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The calling thread's id.
pub(crate) fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and no memory effects (the raw call:
    // see vmm's pinning module on glibc's wrapper in static builds).
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    libc::pid_t::try_from(tid).unwrap_or(-1)
}

/// Listed in [`pinned_threads`] from [`enter`] until dropped.
pub(crate) struct Pinned(libc::pid_t);

impl Drop for Pinned {
    fn drop(&mut self) {
        PINNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&t| t != self.0);
    }
}

/// Run the calling thread on the CPUs thread `tid` may run on now.
pub(crate) fn follow(tid: libc::pid_t) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of_val(&set);
    // SAFETY: the set is writable for `size` bytes.
    if unsafe { libc::sched_getaffinity(tid, size, &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pid 0 is the calling thread; the set is initialized.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Run the calling (new) thread on `cpus` and list it; called before the
/// thread's filter is installed, so no filter needs `sched_setaffinity`.
pub(crate) fn enter(cpus: &[usize]) -> io::Result<Pinned> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let bits = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &c in cpus {
        if c >= bits {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host CPU {c} is beyond the {bits} a CPU set holds"),
            ));
        }
        // SAFETY: c is below the set's size (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the set is initialized and its
    // size is what the call is told.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let tid = gettid();
    PINNED.lock().unwrap_or_else(|e| e.into_inner()).push(tid);
    Ok(Pinned(tid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity() -> Vec<usize> {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is this thread; the set is as large as the call is told.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        assert_eq!(rc, 0);
        (0..64)
            // SAFETY: reading bits below the set's size.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    #[test]
    fn a_thread_started_in_a_scope_runs_on_its_cpus_and_is_listed() {
        let scope = place_spawned(Some(Arc::from([0usize])));
        let h = crate::spawn(crate::ThreadKind::DiskIo, "placed".into(), || {
            let tid = gettid();
            (affinity(), pinned_threads().contains(&tid), tid)
        })
        .unwrap();
        let (cpus, listed, tid) = h.join().unwrap();
        assert_eq!(cpus, vec![0]);
        assert!(listed);
        assert!(!pinned_threads().contains(&tid), "unlisted once it ended");
        drop(scope);
        assert!(current().is_none(), "the scope ended");
        let h = crate::spawn(crate::ThreadKind::DiskIo, "free".into(), affinity).unwrap();
        assert_eq!(
            h.join().unwrap(),
            affinity(),
            "outside a scope: the caller's"
        );
    }
}
