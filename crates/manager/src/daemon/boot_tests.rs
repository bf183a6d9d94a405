//! What a starting daemon does with what a killed one left: run records
//! of VMMs it cannot drive and interrupted starts. Real processes stand
//! in for the VMMs (a shell whose command line names the run directory);
//! the driver is a stub that finds every recorded VMM gone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use virtxml::Domain;

use super::store::{StartMarker, Store};
use super::{boot, events, registry, Daemon};
use crate::api::{DomainState, StateReason};
use crate::driver::{Driver, DriverError, Instance, RunRecord, StartContext};

/// A driver that starts nothing and finds every recorded VMM gone.
struct GoneDriver;

impl Driver for GoneDriver {
    fn name(&self) -> &'static str {
        "vireo"
    }
    fn version(&self) -> String {
        "stub".into()
    }
    fn validate(&self, _: &Domain) -> Result<(), DriverError> {
        Ok(())
    }
    fn start(
        &self,
        _: &Domain,
        _: u32,
        _: &StartContext,
    ) -> Result<Box<dyn Instance>, DriverError> {
        Err(DriverError::Failed("the stub starts nothing".into()))
    }
    fn adopt(
        &self,
        _: &RunRecord,
        _: &StartContext,
    ) -> Result<Option<Box<dyn Instance>>, DriverError> {
        Ok(None)
    }
}

fn daemon(dir: &Path, rt: &tokio::runtime::Runtime) -> Arc<Daemon> {
    Arc::new(Daemon {
        store: Store::open(&dir.join("state")).unwrap(),
        registry: registry::Registry::default(),
        networks: super::networks::Networks::open(&dir.join("state")).unwrap(),
        interfaces: super::host_ifaces::HostIfaces::open(&dir.join("state")).unwrap(),
        pools: super::pools::Pools::open(&dir.join("state")).unwrap(),
        secrets: super::secrets::Secrets::open(&dir.join("state")).unwrap(),
        leases: super::leases::Leases::new(None),
        drivers: vec![Arc::new(GoneDriver)],
        events: events::Events::new(),
        run_root: dir.join("v.sock.d"),
        namespace: tokio::sync::Mutex::new(()),
        runtime: rt.handle().clone(),
        console_sessions: AtomicU64::new(0),
        changes: Arc::default(),
    })
}

fn xml(name: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory>4096</memory>\
         <os><type>hvm</type><kernel>/k</kernel></os></domain>"
    )
}

/// A process whose command line names `arg`, blocked in the shell's own
/// `read` (no child of its own).
fn stand_in(arg: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("read line")
        .arg(arg)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap()
}

fn start_time(pid: u32) -> u64 {
    crate::driver::process::start_time(pid).unwrap()
}

fn state(d: &Daemon, name: &str) -> (DomainState, StateReason) {
    let table = d.registry.lock();
    let e = &table.domains[name];
    (e.state, e.reason)
}

#[test]
fn a_record_no_driver_can_take_back_has_its_vmm_killed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = daemon(dir.path(), &rt);
    d.store.save_definition("q", &xml("q")).unwrap();
    let mut vmm = stand_in(&dir.path().join("qemu-vmm"));
    let pid = vmm.id();
    let record = RunRecord {
        driver: "qemu".into(),
        pid,
        start_time: start_time(pid),
        id: 4,
        xml: xml("q"),
        extra: serde_json::Value::Null,
    };
    d.store.save_record("q", &record).unwrap();

    rt.block_on(boot::load(&d)).unwrap();
    let status = vmm.wait().unwrap();
    assert!(!status.success(), "the VMM no daemon can drive is killed");
    assert_eq!(state(&d, "q"), (DomainState::ShutOff, StateReason::Crashed));
    assert!(d.store.records::<RunRecord>().unwrap().is_empty());
    // Ids go on above the recorded one.
    assert_eq!(d.registry.lock().allocate_id(), 5);
}

#[test]
fn a_record_of_another_process_now_is_not_killed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = daemon(dir.path(), &rt);
    let mut bystander = stand_in(&dir.path().join("bystander"));
    let pid = bystander.id();
    // Its pid, but another start time: a reused pid.
    let record = RunRecord {
        driver: "qemu".into(),
        pid,
        start_time: start_time(pid) + 1,
        id: 1,
        xml: xml("t"),
        extra: serde_json::Value::Null,
    };
    d.store.save_record("t", &record).unwrap();
    rt.block_on(boot::load(&d)).unwrap();
    assert_eq!(
        bystander.try_wait().unwrap(),
        None,
        "a reused pid is left alone"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    // A transient domain whose VMM is gone leaves nothing behind.
    assert!(d.registry.lock().domains.is_empty());
    assert!(d.store.records::<RunRecord>().unwrap().is_empty());
}

#[test]
fn an_interrupted_start_has_its_vmm_killed_and_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = daemon(dir.path(), &rt);
    d.store.save_definition("m", &xml("m")).unwrap();
    let run_dir: PathBuf = d.run_root.join("7");
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut vmm = stand_in(&run_dir.join("api.sock"));
    // A VMM of another domain, id 70: its directory starts with ".../7".
    let mut other = stand_in(&d.run_root.join("70/api.sock"));
    d.store
        .save_marker(
            "m",
            &StartMarker {
                id: 7,
                run_dir: run_dir.clone(),
            },
        )
        .unwrap();

    rt.block_on(boot::load(&d)).unwrap();
    assert!(!vmm.wait().unwrap().success());
    assert_eq!(other.try_wait().unwrap(), None);
    other.kill().unwrap();
    other.wait().unwrap();
    assert_eq!(state(&d, "m"), (DomainState::ShutOff, StateReason::Failed));
    assert!(d.store.markers().unwrap().is_empty());
    assert!(!run_dir.exists());
}

#[test]
fn a_marker_naming_no_run_directory_kills_and_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = daemon(dir.path(), &rt);
    d.store.save_definition("m", &xml("m")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let mut bystander = stand_in(&elsewhere.join("api.sock"));
    d.store
        .save_marker(
            "m",
            &StartMarker {
                id: 7,
                run_dir: elsewhere.clone(),
            },
        )
        .unwrap();

    rt.block_on(boot::load(&d)).unwrap();
    assert_eq!(bystander.try_wait().unwrap(), None);
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    assert!(elsewhere.exists());
    assert_eq!(state(&d, "m"), (DomainState::ShutOff, StateReason::Failed));
    assert!(d.store.markers().unwrap().is_empty());
}

#[test]
fn a_gone_vmm_is_failed_and_a_stale_run_directory_removed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = daemon(dir.path(), &rt);
    d.store.save_definition("g", &xml("g")).unwrap();
    d.store.set_autostart("g", true).unwrap();
    let record = RunRecord {
        driver: "vireo".into(),
        pid: u32::MAX,
        start_time: 1,
        id: 2,
        xml: xml("g"),
        extra: serde_json::Value::Null,
    };
    d.store.save_record("g", &record).unwrap();
    std::fs::create_dir_all(d.run_root.join("2")).unwrap();
    std::fs::create_dir_all(d.run_root.join("9")).unwrap();

    rt.block_on(boot::load(&d)).unwrap();
    // The stub cannot tell how it ended: a failed VMM.
    assert_eq!(state(&d, "g"), (DomainState::ShutOff, StateReason::Crashed));
    assert!(d.registry.lock().domains["g"].autostart);
    assert_eq!(std::fs::read_dir(&d.run_root).unwrap().count(), 0);
    // Autostart tries it; the stub's refusal leaves it shut off (failed).
    rt.block_on(boot::autostart(d.clone()));
    assert_eq!(state(&d, "g"), (DomainState::ShutOff, StateReason::Failed));
    assert!(d.store.markers().unwrap().is_empty());
}
