//! A real tgtd, in a network namespace each test makes, driven through
//! the binding: data round trips, CHAP, and a target that dies mid-I/O.

use std::time::{Duration, Instant};

use iscsi::test_target::{LunSpec, TestTarget};
use iscsi::{Chap, Login, Session};

const MIB: u64 = 1024 * 1024;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: making a network namespace needs root");
    }
    root
}

fn login(t: &TestTarget, chap: Option<Chap>, timeout: Duration) -> Login {
    Login {
        portal: t.portal(),
        target: t.iqn().to_string(),
        initiator: "iqn.2026-01.org.vireo.test:initiator".into(),
        chap,
        timeout,
    }
}

#[test]
fn discovery_luns_and_data_round_trips() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [
        LunSpec {
            size: 8 * MIB,
            thin: true,
        },
        LunSpec {
            size: 4 * MIB,
            thin: false,
        },
    ];
    let t = TestTarget::start("rt", dir.path(), &luns, None).unwrap();
    let _ns = t.enter().unwrap();
    let l = login(&t, None, Duration::from_secs(10));

    let found = iscsi::discover(&l).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].name, t.iqn());
    assert!(
        found[0].portals[0].starts_with("169.254.77.1:3260"),
        "{found:?}"
    );

    let mut s = Session::connect(&l).unwrap();
    assert_eq!(s.report_luns().unwrap(), vec![0, 1, 2]);
    assert!(
        !s.device_type(0).unwrap().is_disk(),
        "LUN 0 is tgtd's controller"
    );
    assert!(s.device_type(1).unwrap().is_disk());
    let cap = s.read_capacity(1).unwrap();
    assert_eq!(
        (cap.bytes(), cap.block_size, cap.thin),
        (8 * MIB, 512, true)
    );
    let cap2 = s.read_capacity(2).unwrap();
    assert_eq!((cap2.bytes(), cap2.thin), (4 * MIB, false));

    // A write of two buffers lands in the LUN's file where it should.
    let a: Vec<u8> = (0..4096u32)
        .map(|i| u8::try_from(i * 7 % 251).unwrap())
        .collect();
    let b = vec![0x5au8; 8192];
    s.write(1, 100, 512, &[&a, &b]).unwrap();
    s.synchronize_cache(1).unwrap();
    let file = std::fs::read(t.lun_file(1)).unwrap();
    assert_eq!(&file[100 * 512..100 * 512 + 4096], &a[..]);
    assert_eq!(&file[100 * 512 + 4096..100 * 512 + 12288], &b[..]);

    // And reads back through READ(16) into three buffers.
    let (mut x, mut y, mut z) = (vec![0u8; 512], vec![0u8; 3584], vec![0u8; 8192]);
    s.read(1, 100, 512, &mut [&mut x, &mut y, &mut z]).unwrap();
    assert_eq!([x, y].concat(), a);
    assert_eq!(z, b);

    // UNMAP of a thin LUN: the blocks read as zeroes afterwards.
    s.unmap(1, 96, 64).unwrap();
    let mut back = vec![0xffu8; 64 * 512];
    s.read(1, 96, 512, &mut [&mut back]).unwrap();
    assert!(back.iter().all(|&v| v == 0));

    // Errors the target reports come back as SCSI errors, one line.
    let mut past = vec![0u8; 512];
    let e = s.read(1, 8 * MIB / 512, 512, &mut [&mut past]).unwrap_err();
    assert!(matches!(e, iscsi::Error::Scsi { .. }), "{e}");
    assert!(!e.to_string().contains('\n'));
    assert!(!s.is_broken(), "a SCSI error does not break the session");
    let e = s.read(1, 0, 512, &mut [&mut [0u8; 100]]).unwrap_err();
    assert!(e.to_string().contains("block size"), "{e}");
}

#[test]
fn chap_login_succeeds_with_the_secret_and_fails_without() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: MIB,
        thin: false,
    }];
    let t = TestTarget::start("chap", dir.path(), &luns, Some(("vireo", "s3cret-pass12"))).unwrap();
    let _ns = t.enter().unwrap();
    let good = Chap {
        user: "vireo".into(),
        secret: "s3cret-pass12".into(),
    };
    let mut s = Session::connect(&login(&t, Some(good), Duration::from_secs(10))).unwrap();
    assert_eq!(s.read_capacity(1).unwrap().bytes(), MIB);

    let wrong = Chap {
        user: "vireo".into(),
        secret: "not-the-secret".into(),
    };
    for chap in [Some(wrong), None] {
        let e = Session::connect(&login(&t, chap, Duration::from_secs(10))).unwrap_err();
        assert!(matches!(e, iscsi::Error::Login(_)), "{e}");
    }
}

#[test]
fn a_frozen_or_killed_target_fails_within_the_deadline() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 16 * MIB,
        thin: false,
    }];
    let mut t = TestTarget::start("dead", dir.path(), &luns, None).unwrap();
    let _ns = t.enter().unwrap();
    let deadline = Duration::from_secs(2);
    let mut s = Session::connect(&login(&t, None, deadline)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    s.read(1, 0, 512, &mut [&mut buf]).unwrap();

    // Frozen: the connection stays up and nothing answers.
    t.freeze();
    let start = Instant::now();
    let e = s.read(1, 0, 512, &mut [&mut buf]).unwrap_err();
    let took = start.elapsed();
    assert!(e.is_transport(), "{e}");
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(s.is_broken());
    let e = s.read(1, 0, 512, &mut [&mut buf]).unwrap_err();
    assert!(e.is_transport(), "a broken session refuses at once: {e}");

    // Killed: the connection is reset; a new session cannot connect.
    t.kill();
    let start = Instant::now();
    assert!(Session::connect(&login(&t, None, deadline)).is_err());
    assert!(start.elapsed() < deadline + Duration::from_secs(1));
}

/// Run `f(i)` on `n` threads at once; their results, in order.
fn at_once<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let f = std::sync::Arc::clone(&f);
            std::thread::spawn(move || f(i))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_session_queue_keeps_commands_in_flight_and_survives_a_restart_but_not_a_freeze() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 8 * MIB,
        thin: false,
    }];
    let mut t = TestTarget::start("queue", dir.path(), &luns, None).unwrap();
    let data: Vec<u8> = (0..8 * MIB).map(|i| (i % 253) as u8).collect();
    std::fs::write(t.lun_file(1), &data).unwrap();
    let _ns = t.enter().unwrap();
    let timeout = Duration::from_secs(2);
    let s = Session::connect(&login(&t, None, timeout)).unwrap();
    let q = iscsi::SessionQueue::start(s, |body| std::thread::Builder::new().spawn(body)).unwrap();
    let q = std::sync::Arc::new(q);

    // Eight callers reading 1 MiB each at once: several commands share
    // the session, and each gets its own blocks.
    let read = |q: std::sync::Arc<iscsi::SessionQueue>| {
        at_once(8, move |i| {
            let mut buf = vec![0u8; 1 << 20];
            q.read(1, (i as u64) << 11, 512, &mut buf).map(|()| buf)
        })
    };
    for (i, got) in read(q.clone()).into_iter().enumerate() {
        assert!(got.unwrap() == data[i << 20..(i + 1) << 20], "piece {i}");
    }
    assert!(q.peak_in_flight() > 1, "{}", q.peak_in_flight());
    assert_eq!(q.in_flight(), 0);

    // The target restarts under the session: the commands log in again
    // and go through.
    t.restart().unwrap();
    for got in read(q.clone()) {
        got.unwrap();
    }

    // Frozen: every caller gets a transport error by its deadline and
    // one login's, none hangs.
    t.freeze();
    let start = Instant::now();
    for got in read(q.clone()) {
        let e = got.unwrap_err();
        assert!(e.is_transport(), "{e}");
    }
    let waited = start.elapsed();
    assert!(waited < 2 * timeout + timeout / 2, "{waited:?}");
    t.kill();
    drop(q);
}
