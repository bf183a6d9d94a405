//! `vireo vm` against an API server started in the test with a controller
//! that records what it was asked: every verb, human and `--json` output,
//! errors and exit codes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use vmm::api::{
    Action, ActionResult, ApiError, ApiServer, BalloonInfo, BalloonSpec, Counters, DeviceInfo,
    DiskSpec, NetSpec, RemoveDeviceSpec, ResizeDiskSpec, VmController, VmInfo, VmState,
};

#[derive(Default)]
struct Recorder {
    actions: Mutex<Vec<Action>>,
}

impl Recorder {
    fn taken(&self) -> Vec<Action> {
        std::mem::take(&mut *self.actions.lock().unwrap())
    }
}

impl VmController for Recorder {
    fn handle(&self, action: Action) -> ActionResult {
        self.actions.lock().unwrap().push(action.clone());
        match action {
            Action::GetVm => Ok(serde_json::to_value(VmInfo {
                state: VmState::Paused,
                cpus: 2,
                memory_bytes: 256 << 20,
                kernel: Some("/boot/idle".into()),
                cmdline: Some("console=ttyS0".into()),
                devices: vec![
                    DeviceInfo {
                        id: "disk0".into(),
                        kind: "virtio-blk".into(),
                        pci: "00:01.0".into(),
                        details: BTreeMap::from([("path".into(), "/a.img".into())]),
                    },
                    DeviceInfo {
                        id: "rng".into(),
                        kind: "virtio-rng".into(),
                        pci: "00:02.0".into(),
                        details: BTreeMap::new(),
                    },
                ],
                io_error: None,
            })
            .unwrap()),
            Action::GetCounters => Ok(serde_json::to_value(Counters {
                devices: BTreeMap::from([(
                    "disk0".into(),
                    BTreeMap::from([("read_bytes".into(), 4096), ("errors".into(), 0)]),
                )]),
                vcpus: BTreeMap::from([(0, BTreeMap::from([("mmio".into(), 1234)]))]),
            })
            .unwrap()),
            Action::GetBalloon => Ok(serde_json::to_value(BalloonInfo {
                target_kib: 524288,
                actual_kib: 600000,
                stats_period: 5,
                last_update: Some(1_800_000_000),
                stats: BTreeMap::from([("unused".into(), 1000), ("major_fault".into(), 7)]),
            })
            .unwrap()),
            Action::Pause => Err(ApiError::new(409, "the VM is already paused")),
            Action::RemoveDevice(spec) if spec.id == "nope" => {
                Err(ApiError::new(404, "no device named nope"))
            }
            Action::AddDisk(spec) => Ok(json!({
                "id": spec.id.unwrap_or("disk1".into()),
                "kind": "virtio-blk",
                "pci": "00:03.0",
                "details": {},
            })),
            _ => Ok(Value::Null),
        }
    }
}

fn vireo(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vireo"))
        .arg("vm")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn start() -> (tempfile::TempDir, ApiServer, Arc<Recorder>) {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recorder::default());
    let server = ApiServer::start(&dir.path().join("api.sock"), rec.clone()).unwrap();
    (dir, server, rec)
}

#[test]
fn every_verb_sends_its_action_and_json_output_parses() {
    let (_dir, server, rec) = start();
    let sock = server.path();
    let disk = DiskSpec {
        id: Some("data".into()),
        path: "/img/data.qcow2".into(),
        format: Some("qcow2".into()),
        readonly: true,
        cache: Some("none".into()),
        serial: Some("S1".into()),
        queues: Some(2),
        werror: Some("stop".into()),
        rerror: None,
        image_fd: false,
        passed: None,
        chap_secret: None,
    };
    let net = NetSpec {
        id: None,
        tap: Some("tap3".into()),
        mac: Some("52:54:00:12:34:56".into()),
        queues: Some(1),
        tap_fd: false,
        passed: None,
    };
    let cases: Vec<(Vec<&str>, Action)> = vec![
        (vec!["info"], Action::GetVm),
        (vec!["counters"], Action::GetCounters),
        (vec!["resume"], Action::Resume),
        (vec!["shutdown"], Action::Shutdown),
        (vec!["reset"], Action::Reset),
        (vec!["poweroff"], Action::PowerOff),
        (
            vec![
                "add-disk",
                "path=/img/data.qcow2,format=qcow2,readonly=on,cache=none,serial=S1,queues=2,werror=stop",
                "--id",
                "data",
            ],
            Action::AddDisk(disk),
        ),
        (
            vec!["add-net", "tap=tap3,mac=52:54:00:12:34:56"],
            Action::AddNet(net.clone()),
        ),
        (
            vec![
                "add-net",
                "id=n1,tap=tap3,mac=52:54:00:12:34:56",
                "--id",
                "n1",
            ],
            Action::AddNet(NetSpec {
                id: Some("n1".into()),
                ..net
            }),
        ),
        (
            vec!["add-disk", "path=/b.img,id=b"],
            Action::AddDisk(DiskSpec {
                id: Some("b".into()),
                path: "/b.img".into(),
                format: None,
                readonly: false,
                cache: Some("writeback".into()),
                serial: None,
                queues: Some(1),
                werror: None,
                rerror: None,
                image_fd: false,
                passed: None,
                chap_secret: None,
            }),
        ),
        (
            vec!["remove-device", "disk0"],
            Action::RemoveDevice(RemoveDeviceSpec { id: "disk0".into() }),
        ),
        (
            vec!["resize-disk", "disk0", "2G"],
            Action::ResizeDisk(ResizeDiskSpec {
                id: "disk0".into(),
                size_bytes: 2 << 30,
                shrink: false,
            }),
        ),
        (
            vec!["resize-disk", "disk0", "32M", "--shrink"],
            Action::ResizeDisk(ResizeDiskSpec {
                id: "disk0".into(),
                size_bytes: 32 << 20,
                shrink: true,
            }),
        ),
        (
            vec!["remove", "disk0"],
            Action::RemoveDevice(RemoveDeviceSpec { id: "disk0".into() }),
        ),
        (
            vec!["balloon", "512M"],
            Action::SetBalloon(BalloonSpec {
                target_kib: Some(524288),
                stats_period: None,
            }),
        ),
        (
            vec!["balloon", "--stats-period", "0"],
            Action::SetBalloon(BalloonSpec {
                target_kib: None,
                stats_period: Some(0),
            }),
        ),
        (vec!["balloon-stats"], Action::GetBalloon),
    ];
    for (args, action) in cases {
        // --json before or after the verb.
        for json_first in [false, true] {
            let mut argv = args.clone();
            if json_first {
                argv.insert(0, "--json");
            } else {
                argv.push("--json");
            }
            let out = vireo(sock, &argv);
            assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
            let text = stdout(&out);
            let parsed: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{argv:?}: {e}: {text:?}"));
            assert!(parsed.is_object(), "{argv:?}: {text}");
            assert_eq!(rec.taken(), vec![action.clone()], "{argv:?}");
        }
        let out = vireo(sock, &args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).is_empty(), "{args:?} printed nothing");
        assert_eq!(rec.taken(), vec![action], "{args:?}");
    }
}

#[test]
fn balloon_stats_print_as_dommemstat_does() {
    let (_dir, server, _rec) = start();
    let out = vireo(server.path(), &["balloon-stats"]);
    assert_eq!(
        stdout(&out),
        "actual 600000\ntarget 524288\nmajor_fault 7\nunused 1000\nlast_update 1800000000\nstats_period 5\n"
    );
}

#[test]
fn a_relative_disk_path_is_the_callers() {
    let (dir, server, rec) = start();
    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .current_dir(dir.path())
        .args(["vm", "--socket"])
        .arg(server.path())
        .args(["add-disk", "path=sub/d.img"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let [Action::AddDisk(spec)] = &rec.taken()[..] else {
        panic!("not one add-disk")
    };
    assert_eq!(spec.path, dir.path().join("sub/d.img"));
}

#[test]
fn human_output() {
    let (_dir, server, _rec) = start();
    let sock = server.path();
    let info = stdout(&vireo(sock, &["info"]));
    assert!(info.contains("state:   paused"), "{info}");
    assert!(info.contains("cpus:    2"), "{info}");
    assert!(info.contains("memory:  256 MiB"), "{info}");
    assert!(
        info.contains("disk0  virtio-blk  00:01.0  path=/a.img"),
        "{info}"
    );
    assert!(info.contains("rng    virtio-rng  00:02.0\n"), "{info}");
    let counters = stdout(&vireo(sock, &["counters"]));
    assert!(counters.contains("DEVICE  COUNTER     VALUE"), "{counters}");
    assert!(counters.contains("disk0   read_bytes   4096"), "{counters}");
    assert!(counters.contains("0     mmio   1234"), "{counters}");
    assert_eq!(stdout(&vireo(sock, &["resume"])), "resumed\n");
    assert_eq!(
        stdout(&vireo(sock, &["resize-disk", "disk0", "3G"])),
        "resized disk0 to 3 GiB\n"
    );
    assert_eq!(
        stdout(&vireo(sock, &["add-disk", "path=/x.img"])),
        "added disk1 at 00:03.0\n"
    );
    assert_eq!(
        stdout(&vireo(sock, &["remove-device", "disk0"])),
        "asked the guest to release disk0; it goes when the guest ejects it\n"
    );
    // A reader that goes away early (`| head`) is not an error.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .arg("vm")
        .arg("--socket")
        .arg(sock)
        .arg("info")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    // A 204 prints {} with --json.
    assert_eq!(stdout(&vireo(sock, &["reset", "--json"])), "{}\n");
}

#[test]
fn refusals_exit_1_with_the_vms_message() {
    let (_dir, server, _rec) = start();
    let sock = server.path();
    for (args, message) in [
        (vec!["pause"], "vireo: the VM is already paused\n"),
        (
            vec!["remove-device", "nope", "--json"],
            "vireo: no device named nope\n",
        ),
    ] {
        let out = vireo(sock, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), message);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn usage_errors_and_no_server_exit_2() {
    let (dir, server, rec) = start();
    let sock = server.path();
    for args in [
        vec!["add-disk", "readonly=on"],
        vec!["add-disk", "path=/a,bogus=x"],
        vec!["add-disk", "path=/a,id=x", "--id", "y"],
        vec!["add-disk", "path=/a,id=no/slash"],
        vec!["add-net", "mac=01:00:00:00:00:00"],
        // A descriptor number means nothing to the VM's process.
        vec!["add-net", "fd=5"],
        vec!["resize-disk", "disk0", "lots"],
        vec!["resize-disk", "disk0"],
        vec!["frobnicate"],
    ] {
        let out = vireo(sock, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(err.starts_with("vireo: "), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    assert!(rec.taken().is_empty());

    let missing = dir.path().join("nobody.sock");
    let out = vireo(&missing, &["info"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot connect to the VM at"),
        "{}",
        stderr(&out)
    );

    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .args(["vm", "info"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), "vireo: vm: --socket PATH is required\n");
}
