//! Adoption end to end: a daemon that restarts takes its VMMs back (or
//! learns how they ended), and never takes a reused pid for a VM. The VMMs
//! here are left as a previous daemon leaves them.

mod vireo_common;

use std::time::{Duration, Instant};

use manager::driver::process;
use manager::driver::{Driver, ExitReason, RunRecord, RuntimeState};
use vireo_common::*;

#[test]
fn adopt_takes_back_a_running_vmm_and_refuses_a_wrong_start_time() {
    let run = Run::new();
    let record: RunRecord = {
        let vm = start("adopt1", &guest("idle"), "", &run, false);
        vm.record()
        // Dropped without destroy, as a daemon that restarts leaves it.
    };
    assert!(process::is_alive(record.pid, record.start_time));
    let d = driver();
    let mut wrong = record.clone();
    wrong.start_time += 1;
    assert!(d.adopt(&wrong, &run.ctx(false)).unwrap().is_none());
    // The recorded pid now names another process (this test): not taken
    // for the VM, whether its start time differs, or, as happens here
    // when the test and the VMM started within one clock tick, matches
    // (the API socket's server is then not the recorded pid). And this
    // process, not being a VMM, is left alone.
    let mut reused = record.clone();
    reused.pid = std::process::id();
    for start_time in [record.start_time, process::start_time(reused.pid).unwrap()] {
        reused.start_time = start_time;
        assert!(d.adopt(&reused, &run.ctx(false)).unwrap().is_none());
    }

    let vm = d
        .adopt(&record, &run.ctx(false))
        .unwrap()
        .expect("the VMM is alive");
    assert_eq!(vm.state().unwrap(), RuntimeState::Running);
    assert_eq!(vm.record(), record);
    vm.destroy(false).unwrap();
    assert_eq!(
        wait_exit_within(vm.as_ref(), Duration::from_secs(5)),
        ExitReason::Destroyed
    );
    assert!(gone(record.pid, record.start_time));
    // Gone now: adopting again finds nothing.
    assert!(d.adopt(&record, &run.ctx(false)).unwrap().is_none());
}

#[test]
fn an_adopted_vmm_reports_how_it_ended_from_its_exit_status() {
    let run = Run::new();
    let record = {
        let vm = start(
            "adopt2",
            &guest("reset"),
            "<on_reboot>destroy</on_reboot>",
            &run,
            true,
        );
        vm.record()
    };
    let vm = driver()
        .adopt(&record, &run.ctx(false))
        .unwrap()
        .expect("alive and paused");
    assert_eq!(vm.state().unwrap(), RuntimeState::Paused);
    vm.resume().unwrap();
    // Not our child any more as far as the instance knows: the reason
    // comes from the file the VMM wrote.
    assert_eq!(
        wait_exit_within(vm.as_ref(), Duration::from_secs(10)),
        ExitReason::Reset
    );
}

/// After a daemon restart the VMM is nobody's child the driver knows:
/// its end is learnt from the pidfd and the exit status file, and a
/// SIGKILL (no file) is a crash.
#[test]
fn an_orphaned_vmm_is_adopted_and_its_end_still_known() {
    let run = Run::new();
    let record = orphan_record(
        "orphan1",
        &guest("reset"),
        "<on_reboot>destroy</on_reboot>",
        &run,
        true,
    );
    let vm = driver()
        .adopt(&record, &run.ctx(false))
        .unwrap()
        .expect("the orphan is alive");
    // Wait for the paused boot, then let it reset.
    let deadline = Instant::now() + Duration::from_secs(5);
    while vm.state().ok() != Some(RuntimeState::Paused) {
        assert!(Instant::now() < deadline, "never paused");
        std::thread::sleep(Duration::from_millis(5));
    }
    vm.resume().unwrap();
    assert_eq!(
        wait_exit_within(vm.as_ref(), Duration::from_secs(10)),
        ExitReason::Reset
    );
    reap_orphan(record.pid);

    let run = Run::new();
    let record = orphan_record("orphan2", &guest("idle"), "", &run, false);
    let vm = driver()
        .adopt(&record, &run.ctx(false))
        .unwrap()
        .expect("the orphan is alive");
    let out = console_until(vm.as_ref(), "idle: waiting");
    assert!(out.contains("idle: waiting"), "{out:?}");
    let pid = i32::try_from(record.pid).unwrap();
    // SAFETY: kill(2) on the VMM this test started; it is held through
    // the instance's pidfd, and was checked alive with its start time.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    match wait_exit_within(vm.as_ref(), Duration::from_secs(5)) {
        ExitReason::Failed(why) => assert!(why.contains("killed"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(gone(record.pid, record.start_time));
    reap_orphan(record.pid);
    // What a daemon that comes back after the end learns from the record.
    assert!(matches!(
        driver().ended(&record),
        Some(ExitReason::Failed(why)) if why.contains("killed")
    ));
}

/// A VMM that ended while no daemon watched: adopt finds it gone, and
/// ended() reads how from its exit status file.
#[test]
fn a_vmm_that_ended_unwatched_says_how() {
    let run = Run::new();
    let record = orphan_record("orphan3", &guest("exit"), "", &run, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while process::is_alive(record.pid, record.start_time) {
        assert!(Instant::now() < deadline, "exit.elf did not power off");
        std::thread::sleep(Duration::from_millis(5));
    }
    let d = driver();
    assert!(d.adopt(&record, &run.ctx(false)).unwrap().is_none());
    assert_eq!(d.ended(&record), Some(ExitReason::Poweroff));
    reap_orphan(record.pid);
    // A live VMM has not ended.
    let run = Run::new();
    let vm = start("alive1", &guest("idle"), "", &run, false);
    assert_eq!(d.ended(&vm.record()), None);
    vm.destroy(false).unwrap();
    vm.wait_exit();
}
