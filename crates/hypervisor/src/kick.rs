//! Kicking a vCPU thread out of `KVM_RUN`.
//!
//! Another thread sends the vCPU thread [`kick_signal`]. Its handler sets
//! `immediate_exit` in that thread's `kvm_run`, so the kick also works when
//! it lands just before the thread re-enters `KVM_RUN`: the next `KVM_RUN`
//! returns `EINTR` at once instead of running the guest until its next exit.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::ptr;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::error::{Error, Result};

thread_local! {
    /// The `kvm_run` of the vCPU this thread runs, if any.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(ptr::null_mut()) };
}

/// The signal used to kick vCPU threads.
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_num: c_int, _info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer was set by `bind_current_thread` on this very
        // thread from a live `kvm_run` mapping, and is cleared before that
        // mapping goes away; a byte store is async-signal-safe.
        unsafe { ptr::write_volatile(&mut (*run).immediate_exit, 1) };
    }
}

/// Install the kick handler (process-wide; call once before starting vCPUs).
pub fn install_kick_signal_handler() -> Result<()> {
    register_signal_handler(kick_signal(), handle_kick).map_err(Error::SignalHandler)
}

/// Record `run` as the current thread's `kvm_run`, or clear it with null.
pub(crate) fn bind_current_thread(run: *mut kvm_run) {
    KVM_RUN.with(|cell| cell.set(run));
}
