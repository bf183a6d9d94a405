//! The launcher: the one thread that starts confined threads, and the one
//! that learns of a forbidden call from the SIGSYS handler, records it and
//! ends the process (see the crate's documentation for why).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{mpsc, Mutex, OnceLock};

use vmm_sys_util::eventfd::EventFd;

use crate::{sigsys, Violation, EXIT_SECCOMP};

type Job = Box<dyn FnOnce() + Send>;

struct Launcher {
    jobs: Mutex<VecDeque<Job>>,
    wake: EventFd,
}

static LAUNCHER: OnceLock<Launcher> = OnceLock::new();

/// Start the launcher thread, from the main thread once it runs under the
/// launcher's filter. `reports` is the read end of the SIGSYS handler's
/// pipe (kill mode only).
pub(crate) fn start(
    reports: Option<OwnedFd>,
    on_violation: Box<dyn Fn(&Violation) + Send>,
) -> io::Result<()> {
    let launcher = Launcher {
        jobs: Mutex::new(VecDeque::new()),
        wake: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
    };
    let wake = launcher.wake.try_clone()?;
    if LAUNCHER.set(launcher).is_err() {
        return Err(io::Error::other("the launcher is already running"));
    }
    std::thread::Builder::new()
        .name("vireo-launcher".into())
        .spawn(move || {
            // The main thread's filter, inherited, is the launcher's.
            crate::confine_launcher();
            serve(&wake, reports.as_ref(), on_violation.as_ref());
        })?;
    Ok(())
}

/// Run `job` on the launcher and return what it returned.
pub(crate) fn run<R, J>(job: J) -> R
where
    J: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let launcher = match LAUNCHER.get() {
        Some(l) if !sigsys::on_launcher() && !on_main_thread() => l,
        // On the launcher itself (a job that starts threads), on the main
        // thread (which runs under the launcher's filter: what it starts
        // inherits the same, and the boot's vCPUs start without a hand
        // over), or before the launcher exists: nothing to hand over to.
        _ => return job(),
    };
    let (tx, rx) = mpsc::sync_channel(1);
    launcher
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_back(Box::new(move || {
            let _ = tx.send(job());
        }));
    // A full eventfd counter only means the launcher is already awake.
    let _ = launcher.wake.write(1);
    // The launcher never drops a job unrun: it lives as long as the
    // process (a failure to receive would mean it died, and with it the
    // process).
    rx.recv().expect("the launcher thread is gone")
}

/// Start threads as asked; on a SIGSYS report, record it and exit.
fn serve(wake: &EventFd, reports: Option<&OwnedFd>, on_violation: &(dyn Fn(&Violation) + Send)) {
    let mut fds = vec![libc::pollfd {
        fd: wake.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    if let Some(r) = reports {
        fds.push(libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
    }
    let launcher = LAUNCHER.get().expect("set before the thread starts");
    loop {
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue;
        }
        if fds.len() > 1 && fds[1].revents != 0 {
            if let Some(violation) = reports.and_then(sigsys::read_report) {
                on_violation(&violation);
            }
            // SAFETY: ends the process at once; the other threads are in
            // no state to be waited for.
            unsafe { libc::_exit(EXIT_SECCOMP) };
        }
        if fds[0].revents != 0 {
            let _ = wake.read();
            loop {
                let job = launcher
                    .jobs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_front();
                match job {
                    Some(job) => job(),
                    None => break,
                }
            }
        }
    }
}

/// Whether the calling thread is the process's main thread (its thread id
/// is the process id, in any PID namespace).
fn on_main_thread() -> bool {
    crate::placement::gettid() == std::process::id() as libc::pid_t
}
