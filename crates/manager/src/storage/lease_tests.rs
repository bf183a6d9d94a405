use super::*;

fn me() -> HostId {
    HostId {
        key: "m1:/var/lib/vireo".into(),
        name: "alpha".into(),
    }
}

fn held(host_key: &str, counter: u64) -> Record {
    Record::Held(Holder {
        host_key: host_key.into(),
        host: "beta".into(),
        domain: "web".into(),
        uuid: "6d1f0a3e-0000-4000-8000-000000000001".into(),
        counter,
        renewed: now_secs(),
    })
}

const T: Duration = Duration::from_secs(20);

#[test]
fn records_round_trip_at_a_fixed_size() {
    for r in [Record::Free { counter: 7 }, held("m2:/s", 42)] {
        let bytes = r.to_bytes().unwrap();
        assert_eq!(bytes.len(), RECORD_SIZE);
        assert_eq!(Record::parse(&bytes), r);
    }
    // A file just made is free.
    assert_eq!(Record::parse(b""), Record::Free { counter: 0 });
}

#[test]
fn damaged_and_hostile_records_are_damaged_not_panics() {
    let good = String::from_utf8(held("k", 1).to_bytes().unwrap()).unwrap();
    let cases: Vec<Vec<u8>> =
        vec![
        b"\xff\xfe garbage".to_vec(),
        b"vireo-lease v2\nstate=free\ncounter=1\n".to_vec(),
        b"vireo-lease v1\nstate=free\n".to_vec(),
        b"vireo-lease v1\nstate=free\ncounter=-1\n".to_vec(),
        b"vireo-lease v1\nstate=free\ncounter=1\ncounter=2\n".to_vec(),
        b"vireo-lease v1\nstate=held\ncounter=1\nrenewed=5\n".to_vec(),
        b"vireo-lease v1\nstate=held\ncounter=1\nrenewed=5\nhost-key=\nhost=h\ndomain=d\nuuid=u\n"
            .to_vec(),
        b"vireo-lease v1\nstate=free\ncounter=1\nextra=1\n".to_vec(),
        b"vireo-lease v1\nstate=free\ncounter=1\nno equals sign\n".to_vec(),
        format!("vireo-lease v1\nstate=free\ncounter=1\nx={}\n", "a".repeat(5000)).into_bytes(),
        good.replace("domain=web", "domain=w\u{1b}[2Jeb").into_bytes(),
        // A record cut short by a torn write.
        good.as_bytes()[..good.find("uuid").unwrap()].to_vec(),
    ];
    for bytes in cases {
        assert!(
            matches!(Record::parse(&bytes), Record::Damaged(_)),
            "{:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Values that would break the format are never written.
    let Record::Held(mut h) = held("k", 1) else {
        unreachable!()
    };
    h.domain = "a\nstate=free".into();
    assert!(Record::Held(h).to_bytes().is_err());
}

#[test]
fn a_live_foreign_lease_is_refused_naming_its_holder() {
    let what = "volume 'v' of pool 'p'";
    let v = decide(&held("m2:/s", 3), &me(), what, Duration::from_secs(1), T);
    let Verdict::Refuse(msg) = v else {
        panic!("{v:?}")
    };
    assert!(msg.starts_with("volume 'v' of pool 'p' is in use by domain 'web' on host 'beta'"));
    assert!(!msg.contains('\n'));
    // Free, ours, or stale: taken.
    assert_eq!(
        decide(&Record::Free { counter: 1 }, &me(), what, Duration::ZERO, T),
        Verdict::Take(None)
    );
    assert_eq!(
        decide(&held(&me().key, 3), &me(), what, Duration::ZERO, T),
        Verdict::Take(None)
    );
    assert!(matches!(
        decide(&held("m2:/s", 3), &me(), what, T, T),
        Verdict::Take(Some(_))
    ));
    // Damaged: refused until it has stood still for the timeout.
    let damaged = Record::Damaged("x".into());
    assert!(matches!(
        decide(&damaged, &me(), what, Duration::ZERO, T),
        Verdict::Refuse(_)
    ));
    assert!(matches!(
        decide(&damaged, &me(), what, T, T),
        Verdict::Take(Some(_))
    ));
}

#[test]
fn the_observer_times_unchanged_bytes_on_its_own_clock() {
    let mut o = Observer::default();
    let p = Path::new("/pool/.vireo-leases/v");
    let t0 = Instant::now();
    assert_eq!(o.observe(p, b"a", t0), Duration::ZERO);
    assert_eq!(o.observe(p, b"a", t0 + T), T);
    // A renewal restarts the count.
    assert_eq!(o.observe(p, b"b", t0 + T), Duration::ZERO);
    assert_eq!(o.observe(p, b"b", t0 + T + T), T);
    o.retain(|_| false);
    assert_eq!(o.observe(p, b"b", t0 + T + T), Duration::ZERO);
}

#[test]
fn lease_files_are_written_read_and_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = lease_path(dir.path(), "disk.img").unwrap();
    assert_eq!(path, dir.path().join(".vireo-leases/disk.img"));
    for bad in ["", ".", "..", "a/b"] {
        assert!(lease_path(dir.path(), bad).is_err());
    }
    {
        let l = LockedLease::open(&path).unwrap();
        assert_eq!(l.read().unwrap().1, Record::Free { counter: 0 });
        l.write(&held("k", 9)).unwrap();
        // A second open (another host, to the lock) waits for the first.
        let start = Instant::now();
        let other = std::thread::spawn({
            let path = path.clone();
            move || LockedLease::open(&path).map(|l| l.read().unwrap().1)
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(l);
        assert_eq!(other.join().unwrap().unwrap().counter(), 9);
        assert!(start.elapsed() >= Duration::from_millis(100));
    }
    assert_eq!(peek(&path).unwrap().len(), RECORD_SIZE);
    // An oversized file is damaged, not read without bound.
    std::fs::write(&path, vec![b'x'; RECORD_SIZE * 4]).unwrap();
    let l = LockedLease::open(&path).unwrap();
    assert!(matches!(l.read().unwrap().1, Record::Damaged(_)));
    // Writing over it leaves exactly one record.
    l.write(&Record::Free { counter: 1 }).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), RECORD_SIZE as u64);
}

#[test]
fn links_and_non_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join(LEASE_DIR);
    std::fs::create_dir(&leases).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", leases.join("a")).unwrap();
    std::fs::create_dir(leases.join("b")).unwrap();
    for v in ["a", "b"] {
        let p = lease_path(dir.path(), v).unwrap();
        assert!(LockedLease::open(&p).is_err(), "{v}");
        assert!(peek(&p).is_err(), "{v}");
    }
    // A lease directory that is a link is refused too.
    let other = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(other.path(), other.path().join(LEASE_DIR)).unwrap();
    let p = lease_path(other.path(), "v").unwrap();
    assert!(LockedLease::open(&p).is_err());
}

#[test]
fn a_pools_free_leases_go_with_it_and_held_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path();
    let free = LockedLease::open(&lease_path(pool, "a").unwrap()).unwrap();
    free.write(&Record::Free { counter: 3 }).unwrap();
    drop(free);
    std::fs::write(pool.join("vol"), b"x").unwrap();
    // A volume left: nothing is removed.
    remove_lease_dir(pool).unwrap();
    assert!(pool.join(LEASE_DIR).join("a").exists());
    std::fs::remove_file(pool.join("vol")).unwrap();
    let held_lease = LockedLease::open(&lease_path(pool, "b").unwrap()).unwrap();
    held_lease.write(&held("k", 1)).unwrap();
    drop(held_lease);
    let e = remove_lease_dir(pool).unwrap_err();
    assert!(
        e.to_string()
            .contains("held by domain 'web' on host 'beta'"),
        "{e}"
    );
    std::fs::remove_file(lease_path(pool, "b").unwrap()).unwrap();
    remove_lease_dir(pool).unwrap();
    assert!(!pool.join(LEASE_DIR).exists());
}
