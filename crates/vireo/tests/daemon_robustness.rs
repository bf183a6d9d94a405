//! `vireo daemon` end to end under stress: racing clients, a stuck VMM,
//! clients that hang up, and SIGTERM in the middle of a start.

mod daemon_harness;

use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, http, Daemon, Events};

#[test]
fn racing_start_and_destroy_end_consistent() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.define(&domain_xml("race", "idle", ""));
    for round in 0..8 {
        let socket = d.socket.clone();
        let socket2 = d.socket.clone();
        let starter =
            std::thread::spawn(move || http(&socket, "POST", "/domains/race/start", None));
        let destroyer =
            std::thread::spawn(move || http(&socket2, "POST", "/domains/race/destroy", None));
        let started = starter.join().unwrap();
        let destroyed = destroyer.join().unwrap();
        assert!(matches!(started.status, 200 | 409), "{round}: {started:?}");
        assert!(
            matches!(destroyed.status, 204 | 409),
            "{round}: {destroyed:?}"
        );
        // Meanwhile `list` answers at once.
        let t = Instant::now();
        d.ok("GET", "/domains?filter=all", None);
        assert!(t.elapsed() < Duration::from_secs(2));
        let (state, _) = d.state("race");
        let vmms = d.vmm_pids();
        match state.as_str() {
            "running" => {
                assert_eq!(vmms.len(), 1, "{round}: running with {vmms:?}");
                assert_eq!(d.ok("GET", "/domains/race", None)["pid"], vmms[0]);
                d.ok("POST", "/domains/race/destroy", None);
            }
            "shut_off" => assert!(vmms.is_empty(), "{round}: shut off with {vmms:?}"),
            other => panic!("{round}: state {other}"),
        }
    }
    assert!(d.vmm_pids().is_empty());
}

#[test]
fn a_stuck_vmm_never_blocks_list() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.define(&domain_xml("stuck", "idle", ""));
    d.ok("POST", "/domains/stuck/start", None);
    let pid = d.ok("GET", "/domains/stuck", None)["pid"].as_u64().unwrap();
    // The VMM itself: a jailed one is its keeper's child.
    let pid = daemon_harness::vmm_process(u32::try_from(pid).unwrap());
    let pid_t = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) of the VMM this test started; SIGCONT follows.
    unsafe { libc::kill(pid_t, libc::SIGSTOP) };
    let socket = d.socket.clone();
    // This waits on the stopped VMM (bounded by the driver's timeout).
    let suspend = std::thread::spawn(move || http(&socket, "POST", "/domains/stuck/suspend", None));
    std::thread::sleep(Duration::from_millis(300));
    for path in [
        "/domains?filter=all",
        "/domains/stuck",
        "/domains/stuck/state",
    ] {
        let t = Instant::now();
        d.ok("GET", path, None);
        assert!(
            // The suspend waits up to the driver's 10 s; a read must not.
            t.elapsed() < Duration::from_secs(2),
            "{path} took {:?} behind a stuck VMM",
            t.elapsed()
        );
    }
    assert!(!suspend.is_finished(), "the suspend was waiting on the VMM");
    // SAFETY: as above.
    unsafe { libc::kill(pid_t, libc::SIGCONT) };
    let answer = suspend.join().unwrap();
    assert!(matches!(answer.status, 204 | 502), "{answer:?}");
    d.ok("POST", "/domains/stuck/destroy", None);
}

#[test]
fn a_client_that_hangs_up_mid_start_leaves_a_consistent_domain() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    d.define(&domain_xml("hangup", "idle", ""));
    let mut ran = 0;
    for round in 0..8 {
        {
            use std::io::Write;
            let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
            s.write_all(
                b"POST /domains/hangup/start HTTP/1.1\r\nHost: v\r\nContent-Length: 0\r\n\r\n",
            )
            .unwrap();
            // Gone before the answer.
        }
        // The start either runs to its end or is never made; never a VMM
        // without its domain running, or a record without a VMM.
        std::thread::sleep(Duration::from_millis(300));
        let (state, _) = d.state("hangup");
        let vmms = d.vmm_pids();
        let record = d.state.join("run/hangup.json").exists();
        match state.as_str() {
            "running" => {
                ran += 1;
                let pid = d.ok("GET", "/domains/hangup", None)["pid"].as_u64();
                assert_eq!(vmms.len(), 1, "round {round}");
                assert_eq!(Some(u64::from(vmms[0])), pid, "round {round}");
                assert!(record, "round {round}");
                d.ok("POST", "/domains/hangup/destroy", None);
            }
            "shut_off" => {
                assert!(vmms.is_empty(), "round {round}: shut off with {vmms:?}");
                assert!(!record, "round {round}");
            }
            other => panic!("round {round}: {other}"),
        }
        assert!(d.vmm_pids().is_empty());
    }
    eprintln!("{ran} of 8 hung-up starts ran");
}

#[test]
fn sigterm_lets_a_start_in_progress_finish() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    d.define(&domain_xml("late", "idle", ""));
    let socket = d.socket.clone();
    let start = std::thread::spawn(move || {
        daemon_harness::try_http(&socket, "POST", "/domains/late/start", None)
    });
    // Let the request reach the daemon, then stop it.
    std::thread::sleep(Duration::from_millis(2));
    d.terminate();
    let answer = start.join().unwrap();
    d.spawn();
    let (state, _) = d.state("late");
    // Either the start got in and finished (and its VMM was re-adopted),
    // or it never began: never a VMM without its domain running.
    eprintln!("start during SIGTERM: {answer:?}");
    match answer {
        Ok(a) if a.status == 200 => assert_eq!(state, "running", "{a:?}"),
        other => assert_eq!(state, "shut_off", "{other:?}"),
    }
    assert_eq!(d.vmm_pids().len(), usize::from(state == "running"));
    if state == "running" {
        d.ok("POST", "/domains/late/destroy", None);
    }
}

#[test]
fn event_clients_that_hang_up_free_their_connections() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
            .unwrap()
            .count()
    };
    // The connection of the harness's readiness check may still be
    // closing: the baseline is the lowest count over a moment.
    let idle = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            fds()
        })
        .min()
        .unwrap();
    let streams: Vec<Events> = (0..10).map(|_| Events::open(&d.socket, None)).collect();
    assert!(fds() >= idle + 10);
    drop(streams);
    // No event is sent meanwhile: the daemon notices the hang-ups itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fds() > idle {
        assert!(
            Instant::now() < deadline,
            "{} descriptors, {idle} before",
            fds()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
