//! Volume leases across hosts: two daemons (two state directories, two
//! sockets, two `--host-id`s: two hosts to the leases) define one `dir`
//! pool on one shared directory and one domain on one of its volumes.
//! Exactly one of them runs it at a time, the other's refusal names the
//! holder, a dead host's lease is taken over after the lease timeout and
//! not before, a restarted daemon keeps its running domain's lease, a
//! read-only disk takes no lease, a hot-plugged volume is leased until
//! unplugged, a lease taken away pauses its domain, and a damaged lease
//! file is refused until it has stood still for the timeout.

mod daemon_harness;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, sigkill, Daemon};
use serde_json::json;

/// The `--lease-timeout` of these tests, in seconds.
const TIMEOUT: u64 = 3;

/// The UUID of the domain both hosts define.
const SHARED_UUID: &str = "5f0c7d2e-3b1a-4c8e-9d6f-1a2b3c4d5e6f";

/// A "host": a daemon in `dir` with its own host id and the short timeout.
fn host(dir: &Path, id: &str) -> Daemon {
    std::fs::create_dir_all(dir).unwrap();
    let timeout = TIMEOUT.to_string();
    Daemon::start_args(dir, &["--host-id", id, "--lease-timeout", &timeout])
}

/// Defines the shared pool on `d` and starts it.
fn shared_pool(d: &Daemon, images: &Path) {
    let xml = format!(
        "<pool type='dir'><name>shared</name><target><path>{}</path></target></pool>",
        images.display()
    );
    d.ok("POST", "/pools", Some(&json!({ "xml": xml })));
    d.ok("POST", "/pools/shared/start", Some(&json!({})));
}

/// A domain on volume `v.raw` of the shared pool (`readonly` adds
/// `<readonly/>`).
fn shared_domain(name: &str, readonly: bool) -> String {
    let ro = if readonly { "<readonly/>" } else { "" };
    domain_xml(name, "idle", "")
        .replace(
            &format!("<name>{name}</name>"),
            &format!("<name>{name}</name><uuid>{SHARED_UUID}</uuid>"),
        )
        .replace(
            "<devices>",
            &format!(
                "<devices><disk type='volume' device='disk'><driver name='qemu' type='raw'/>\
             <source pool='shared' volume='v.raw'/><target dev='vda' bus='virtio'/>{ro}</disk>"
            ),
        )
}

/// Two hosts sharing `images`, each with the pool and domain `dom`
/// defined (the same definition, so the same UUID).
fn two_hosts(root: &Path, dom: &str, readonly: bool) -> (Daemon, Daemon) {
    let images = root.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("v.raw"), vec![0u8; 1 << 20]).unwrap();
    let a = host(&root.join("a"), "host-a");
    let b = host(&root.join("b"), "host-b");
    let xml = shared_domain(dom, readonly);
    for d in [&a, &b] {
        shared_pool(d, &images);
        d.define(&xml);
    }
    (a, b)
}

fn start(d: &Daemon, dom: &str) -> daemon_harness::Answer {
    d.http("POST", &format!("/domains/{dom}/start"), Some(&json!({})))
}

fn lease_text(root: &Path) -> String {
    std::fs::read_to_string(root.join("images/.vireo-leases/v.raw")).unwrap_or_default()
}

#[test]
fn one_host_wins_each_simultaneous_start() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(root.path(), "shared", false);
    let hosts = Arc::new([a, b]);
    let mut wins = [0, 0];
    for round in 0..20 {
        let barrier = Arc::new(Barrier::new(2));
        let answers: Vec<_> = (0..2)
            .map(|i| {
                let (hosts, barrier) = (hosts.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    start(&hosts[i], "shared")
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let winners: Vec<usize> = (0..2).filter(|i| answers[*i].status == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        let (w, l) = (winners[0], 1 - winners[0]);
        wins[w] += 1;
        assert_eq!(answers[l].status, 409, "round {round}: {answers:?}");
        let error = answers[l].error();
        let holder = ["host-a", "host-b"][w];
        assert_eq!(
            error.lines().count(),
            1,
            "round {round}: not one line: {error}"
        );
        assert!(
            error.starts_with(&format!(
                "volume 'v.raw' of pool 'shared' is in use by domain 'shared' on host '{holder}' (lease renewed"
            )),
            "round {round}: {error}"
        );
        assert_eq!(hosts[w].state("shared").0, "running");
        assert_eq!(hosts[l].state("shared").0, "shut_off");
        assert!(
            lease_text(root.path()).contains(&format!("host={holder}\n")),
            "{}",
            lease_text(root.path())
        );
        hosts[w].ok("POST", "/domains/shared/destroy", None);
        assert_eq!(hosts[w].state("shared").0, "shut_off");
        // Released as the domain stopped, not left to expire.
        assert!(lease_text(root.path()).contains("state=free\n"));
    }
    eprintln!("wins: host-a {}, host-b {}", wins[0], wins[1]);
}

#[test]
fn a_dead_hosts_lease_is_taken_after_the_timeout_and_not_before() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (mut a, b) = two_hosts(root.path(), "shared", false);
    assert_eq!(start(&a, "shared").status, 200);
    // Long enough for several renewals: the lease stays held.
    std::thread::sleep(Duration::from_secs(TIMEOUT + 1));
    let refused = start(&b, "shared");
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(refused.error().contains("on host 'host-a'"));

    // Host a dies: its daemon and its VMM.
    let vmms = a.vmm_pids();
    assert_eq!(vmms.len(), 1, "{vmms:?}");
    a.kill9();
    for pid in vmms {
        sigkill(pid.into());
    }
    let died = Instant::now();
    // The last renewal was at most a fifth of the timeout before the
    // kill: until the timeout less that, host b is refused.
    let refused_until = Duration::from_secs(TIMEOUT) * 4 / 5 - Duration::from_millis(100);
    let bound = Duration::from_secs(TIMEOUT + 3);
    let mut refusals = 0;
    loop {
        let answer = start(&b, "shared");
        let after = died.elapsed();
        if answer.status == 200 {
            assert!(
                after >= refused_until,
                "host b took the lease {after:?} after host a died"
            );
            break;
        }
        assert_eq!(answer.status, 409, "{answer:?}");
        assert!(answer.error().contains("on host 'host-a'"), "{answer:?}");
        refusals += 1;
        assert!(
            after < bound,
            "host b was still refused {after:?} after host a died: {answer:?}\n{}",
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(refusals > 0);
    assert_eq!(b.state("shared").0, "running");
    assert!(lease_text(root.path()).contains("host=host-b\n"));
    assert!(
        b.log_text().contains("taking its lease over"),
        "{}",
        b.log_text()
    );
}

#[test]
fn a_restarted_daemon_keeps_its_running_domains_lease() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (mut a, b) = two_hosts(root.path(), "shared", false);
    assert_eq!(start(&a, "shared").status, 200);
    let vmms = a.vmm_pids();
    a.kill9();
    a.spawn();
    assert_eq!(a.state("shared").0, "running");
    assert_eq!(a.vmm_pids(), vmms);
    // Well past the timeout: the restarted daemon renews it.
    std::thread::sleep(Duration::from_secs(TIMEOUT * 2));
    let refused = start(&b, "shared");
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(refused.error().contains("on host 'host-a'"));
    // Nor can host b delete the volume under it.
    let refused = b.http("DELETE", "/pools/shared/volumes/v.raw", None);
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(
        refused.error().starts_with(
            "storage volume 'v.raw' of pool 'shared' is in use by domain 'shared' on host 'host-a'"
        ),
        "{refused:?}"
    );
    assert!(root.path().join("images/v.raw").exists());
    // Its domain's end releases it at once.
    a.ok("POST", "/domains/shared/destroy", None);
    assert_eq!(start(&b, "shared").status, 200);
    assert!(lease_text(root.path()).contains("host=host-b\n"));
}

#[test]
fn a_read_only_disk_takes_no_lease() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(root.path(), "ro", true);
    assert_eq!(start(&a, "ro").status, 200);
    assert!(!lease_text(root.path()).contains("state=held"));
    let second = start(&b, "ro");
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(a.state("ro").0, "running");
    assert_eq!(b.state("ro").0, "running");
    assert!(!lease_text(root.path()).contains("state=held"));
}

#[test]
fn a_hot_plugged_volume_is_leased_and_released_on_unplug() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (a, b) = two_hosts(root.path(), "shared", false);
    // Two guests of their own, one volume between them; ga's guest
    // answers a hot-unplug (daemon_devices.rs has the same one).
    a.define(
        &domain_xml("ga", "virtio", "")
            .replace(
                "<memory unit='MiB'>32</memory>",
                "<memory unit='MiB'>64</memory>",
            )
            .replace(
                "</os>",
                "<cmdline>blk wait-hotplug=60000 hotplug-events=2</cmdline></os>",
            ),
    );
    b.define(&domain_xml("gb", "idle", ""));
    for (d, name) in [(&a, "ga"), (&b, "gb")] {
        let started = start(d, name);
        assert_eq!(started.status, 200, "{started:?}");
    }
    // ga's guest waits for hot-plug events once it has booted.
    std::thread::sleep(Duration::from_secs(1));
    let disk = json!({
        "xml": "<disk type='volume' device='disk'><driver name='qemu' type='raw'/>\
                <source pool='shared' volume='v.raw'/><target dev='vdb' bus='virtio'/></disk>",
        "live": true
    });
    a.ok("POST", "/domains/ga/disks", Some(&disk));
    assert!(lease_text(root.path()).contains("domain=ga\n"));
    // The guest takes the disk, then is held still (as daemon_devices.rs
    // does) so that the unplug below waits for it.
    std::thread::sleep(Duration::from_millis(300));
    a.ok("POST", "/domains/ga/suspend", None);
    let refused = b.http("POST", "/domains/gb/disks", Some(&disk));
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(
        refused
            .error()
            .contains("in use by domain 'ga' on host 'host-a'"),
        "{refused:?}"
    );
    a.ok("DELETE", "/domains/ga/disks/vdb?live=true", None);
    // Still in the guest's hands: still leased.
    std::thread::sleep(Duration::from_millis(500));
    assert!(lease_text(root.path()).contains("domain=ga\n"));
    a.ok("POST", "/domains/ga/resume", None);
    // The lease goes once the guest lets go and the live definition
    // loses the disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lease_text(root.path()).contains("state=free\n") {
        assert!(
            Instant::now() < deadline,
            "the lease stayed: {}",
            lease_text(root.path())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    b.ok("POST", "/domains/gb/disks", Some(&disk));
    assert!(lease_text(root.path()).contains("domain=gb\n"));
}

#[test]
fn a_lost_lease_pauses_the_domain_and_a_damaged_one_waits_out_the_timeout() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (a, _b) = two_hosts(root.path(), "shared", false);
    assert_eq!(start(&a, "shared").status, 200);
    // Another holder writes the lease over ours (as a host that wrongly
    // judged us dead would).
    let lease = root.path().join("images/.vireo-leases/v.raw");
    std::fs::write(
        &lease,
        "vireo-lease v1\nstate=held\nhost-key=intruder\nhost=intruder\ndomain=other\n\
         uuid=00000000-0000-4000-8000-000000000000\ncounter=999\nrenewed=0\n",
    )
    .unwrap();
    a.wait_state("shared", "paused", Duration::from_secs(TIMEOUT * 2));
    assert!(
        a.log_text().contains("lost the lease of volume 'v.raw' of pool 'shared': domain 'other' on host 'intruder' holds it now; it is paused"),
        "{}",
        a.log_text()
    );
    let refused = a.http("POST", "/domains/shared/resume", None);
    assert_eq!(refused.status, 409, "{refused:?}");
    assert!(
        refused.error().contains("on host 'intruder'"),
        "{refused:?}"
    );
    assert_eq!(a.state("shared").0, "paused");
    a.ok("POST", "/domains/shared/destroy", None);
    // Not ours: the end of our domain leaves it alone.
    assert!(lease_text(root.path()).contains("host=intruder\n"));

    // A damaged lease file: refused with one line until it has stood
    // still for the timeout, then taken over.
    std::fs::write(&lease, b"\x00\xffnot a lease").unwrap();
    let damaged = Instant::now();
    let refused = start(&a, "shared");
    assert_eq!(refused.status, 409, "{refused:?}");
    let error = refused.error();
    assert!(
        error.starts_with(
            "volume 'v.raw' of pool 'shared' has a damaged lease file (not UTF-8 text)"
        ),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1);
    let deadline = damaged + Duration::from_secs(TIMEOUT + 3);
    loop {
        let answer = start(&a, "shared");
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 409, "{answer:?}");
        assert!(Instant::now() < deadline, "still refused: {answer:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(damaged.elapsed() >= Duration::from_secs(TIMEOUT));
    assert!(lease_text(root.path()).contains("host=host-a\n"));
}

#[test]
fn leases_can_be_turned_off() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let images = root.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("v.raw"), vec![0u8; 1 << 20]).unwrap();
    let dir = root.path().join("a");
    std::fs::create_dir_all(&dir).unwrap();
    let d = Daemon::start_args(&dir, &["--no-leases"]);
    shared_pool(&d, &images);
    d.define(&shared_domain("shared", false));
    assert_eq!(start(&d, "shared").status, 200);
    // Past a renewal period of the default timeout: still nothing.
    std::thread::sleep(Duration::from_secs(6));
    assert!(!images.join(".vireo-leases").exists());
    d.ok("POST", "/domains/shared/destroy", None);
}

#[test]
fn lease_options_out_of_range_are_refused() {
    let vireo = env!("CARGO_BIN_EXE_vireo");
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--lease-timeout", "0"][..],
        &["--lease-timeout", "3601"][..],
        &["--host-id", ""][..],
        &["--host-id", "a\nb"][..],
        &["--no-leases", "--host-id", "x"][..],
    ] {
        let out = std::process::Command::new(vireo)
            .arg("daemon")
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(dir.path().join("v.sock"))
            .args(args)
            .output()
            .unwrap();
        // 2 for what the command line parser refuses, 1 for the daemon's checks.
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?}: {:?}",
            out.status
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("vireo: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_restarting_domain_keeps_its_lease() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let images = root.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::write(images.join("v.raw"), vec![0u8; 1 << 20]).unwrap();
    let a = host(&root.path().join("a"), "host-a");
    let b = host(&root.path().join("b"), "host-b");
    // The `exit` guest powers off at once, and on_poweroff='restart'
    // starts a new VMM for it: about once a second (the restart backoff).
    let xml = shared_domain("shared", false)
        .replace(
            &format!(
                "<kernel>{}</kernel>",
                daemon_harness::guest("idle").display()
            ),
            &format!(
                "<kernel>{}</kernel>",
                daemon_harness::guest("exit").display()
            ),
        )
        .replace("<devices>", "<on_poweroff>restart</on_poweroff><devices>");
    for d in [&a, &b] {
        shared_pool(d, &images);
        d.define(&xml);
    }
    assert_eq!(start(&a, "shared").status, 200);
    // Every start host b tries while host a's domain restarts is refused,
    // between its VMMs too.
    let end = Instant::now() + Duration::from_secs(4);
    let mut tries = 0;
    while Instant::now() < end {
        let answer = start(&b, "shared");
        assert_eq!(answer.status, 409, "try {tries}: {answer:?}");
        assert!(answer.error().contains("on host 'host-a'"), "{answer:?}");
        tries += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // It did restart meanwhile.
    let restarts = a
        .log_text()
        .matches("domain 'shared' ended (Poweroff)")
        .count();
    assert!(restarts >= 2, "{}", a.log_text());
    // Without on_poweroff='restart' its next end is its last, and that
    // releases the lease.
    a.define(&xml.replace("<on_poweroff>restart</on_poweroff>", ""));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = start(&b, "shared");
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{answer:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(a.state("shared").0, "shut_off");
}

#[test]
fn a_lease_that_cannot_be_renewed_pauses_its_domain_in_time() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (a, _b) = two_hosts(root.path(), "shared", false);
    assert_eq!(start(&a, "shared").status, 200);
    // The lease directory goes away and cannot be made again (storage
    // gone, as far as renewals can tell).
    let leases = root.path().join("images/.vireo-leases");
    std::fs::rename(&leases, root.path().join("images/.gone")).unwrap();
    std::fs::write(&leases, b"").unwrap();
    let gone = Instant::now();
    a.wait_state("shared", "paused", Duration::from_secs(TIMEOUT * 2));
    // Given up before another host could take it (the timeout).
    assert!(
        gone.elapsed() < Duration::from_secs(TIMEOUT),
        "{:?}",
        gone.elapsed()
    );
    assert!(
        a.log_text()
            .contains("lost the lease of volume 'v.raw' of pool 'shared': not renewed for"),
        "{}",
        a.log_text()
    );
    let refused = a.http("POST", "/domains/shared/resume", None);
    assert!(refused.status >= 400, "{refused:?}");
    assert_eq!(a.state("shared").0, "paused");
}
