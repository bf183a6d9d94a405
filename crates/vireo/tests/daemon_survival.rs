//! Survival: `kill -9` of the daemon at random moments while a client
//! defines and starts domains, twenty times, with a restart each time.
//! No acknowledged definition may be lost, no file half-written, and every
//! VMM process must be one the daemon reports (re-adopted) or gone; none
//! is left at the end.

mod daemon_harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use daemon_harness::{domain_xml, have_kvm, processes_mentioning, try_http, Daemon};
use serde_json::{json, Value};

/// A small xorshift generator: random enough for kill moments, and the
/// seed is printed so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Defines and starts domains (destroying every third) until told to
/// stop or the daemon dies;
/// returns the names whose define was acknowledged.
fn client(socket: &Path, round: usize, stop: &AtomicBool) -> Vec<String> {
    let mut acked = Vec::new();
    for k in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("r{round}k{k}");
        let xml = domain_xml(&name, "idle", "");
        match try_http(socket, "POST", "/domains", Some(&json!({ "xml": xml }))) {
            Ok(a) if a.status == 200 => acked.push(name.clone()),
            Ok(a) => panic!("define {name}: {} {}", a.status, a.body),
            Err(_) => break,
        }
        match try_http(socket, "POST", &format!("/domains/{name}/start"), None) {
            Ok(a) if a.status == 200 => {}
            Ok(a) => panic!("start {name}: {} {}", a.status, a.body),
            Err(_) => break,
        }
        // Some die again at once, so kills land in destroys too.
        if k % 3 == 2 {
            match try_http(socket, "POST", &format!("/domains/{name}/destroy"), None) {
                Ok(a) if a.status == 204 => {}
                Ok(a) => panic!("destroy {name}: {} {}", a.status, a.body),
                Err(_) => break,
            }
        }
    }
    acked
}

fn list_all(d: &Daemon) -> Vec<Value> {
    d.ok("GET", "/domains?filter=all", None)
        .as_array()
        .expect("a list")
        .clone()
}

/// Every VMM process is the pid of an active domain, and each active
/// domain's VMM is alive (kills of interrupted starts may take a moment).
fn check_accounted(d: &Daemon, round: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut expected = BTreeSet::new();
        for dom in list_all(d) {
            if dom["id"].is_u64() {
                let info = d.ok(
                    "GET",
                    &format!("/domains/{}", dom["uuid"].as_str().unwrap()),
                    None,
                );
                expected.insert(info["pid"].as_u64().expect("an active domain has a pid"));
            }
        }
        let running: BTreeSet<u64> = d.vmm_pids().into_iter().map(u64::from).collect();
        let run_dirs = std::fs::read_dir(d.dir.join("v.sock.d"))
            .map(|r| r.count())
            .unwrap_or(0);
        if running == expected && run_dirs == expected.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: VMM processes {running:?}, active domains' pids {expected:?}, \
             {run_dirs} run directories\nlog:\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under the state directory is whole: definitions parse as
/// XML the daemon wrote, records as JSON, and no temporary is left.
fn check_files(d: &Daemon, round: usize) {
    for sub in ["domains", "run", "autostart"] {
        for entry in std::fs::read_dir(d.state.join(sub)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.ends_with(".tmp"),
                "round {round}: temporary {sub}/{name} left"
            );
            let text = std::fs::read_to_string(entry.path()).unwrap();
            if name.ends_with(".xml") {
                assert!(
                    text.starts_with("<domain") && text.trim_end().ends_with("</domain>"),
                    "round {round}: {sub}/{name} is not whole: {text:?}"
                );
            }
            if name.ends_with(".json") {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("round {round}: {sub}/{name}: {e}"));
            }
        }
    }
}

#[test]
fn twenty_kill_9s_lose_nothing_and_leave_no_orphan() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|t| u64::from(t.subsec_nanos()) ^ t.as_secs() << 20 | 1)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    eprintln!("survival seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut acked: BTreeSet<String> = BTreeSet::new();
    let mut readopted = 0;

    for round in 0..20 {
        let stop = Arc::new(AtomicBool::new(false));
        let (socket, client_stop) = (d.socket.clone(), stop.clone());
        let worker = std::thread::spawn(move || client(&socket, round, &client_stop));
        std::thread::sleep(Duration::from_millis(5 + rng.below(150)));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        acked.extend(worker.join().expect("client thread"));

        d.spawn();
        let present: BTreeSet<String> = list_all(&d)
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let lost: Vec<&String> = acked.difference(&present).collect();
        assert!(lost.is_empty(), "round {round}: definitions lost: {lost:?}");
        check_files(&d, round);
        check_accounted(&d, round);
        readopted += list_all(&d).iter().filter(|v| v["id"].is_u64()).count();

        // Keep a couple running into the next round (to be re-adopted
        // again), end the rest so the host is not filled with VMMs.
        let active: Vec<String> = list_all(&d)
            .iter()
            .filter(|v| v["id"].is_u64())
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        for name in active.iter().skip(2) {
            d.ok("POST", &format!("/domains/{name}/destroy"), None);
        }
    }
    let log = d.log_text();
    eprintln!(
        "{} definitions acknowledged; {readopted} active domains seen after restarts; \
         {} re-adoptions, {} interrupted starts cleaned up",
        acked.len(),
        log.matches("re-adopted domain").count(),
        log.matches("was being started when the daemon stopped")
            .count()
    );
    assert!(!acked.is_empty(), "the client never got a define through");
    assert!(readopted > 0, "no VMM was ever re-adopted");

    for dom in list_all(&d) {
        if dom["id"].is_u64() {
            d.ok(
                "POST",
                &format!("/domains/{}/destroy", dom["name"].as_str().unwrap()),
                None,
            );
        }
    }
    d.terminate();
    let left = processes_mentioning(dir.path());
    assert!(left.is_empty(), "orphan processes: {left:?}");
}
