//! The QEMU driver end to end: real `qemu-system-x86_64` processes on
//! /dev/kvm running the project's test guests, driven over real QMP.
//!
//! QEMU is the 7.2 that `scripts/nested/fetch-qemu.sh target/nested/qemu`
//! unpacks (preferred, for the same QEMU everywhere), else one on PATH;
//! the tests write a wrapper that runs it with its module and firmware
//! directories and hand the wrapper to `QemuDriver::new`. The CPU is a
//! named model (`qemu64`): on kvm-pvm QEMU cannot use `-cpu host`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::Read;

use manager::driver::process;
use manager::driver::qemu::QemuDriver;
use manager::driver::{
    Driver, DriverError, ExitReason, Instance, Plugged, RuntimeState, StartContext, Unplug,
};
use virtxml::Domain;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A wrapper script for the QEMU to use, or why there is none.
fn qemu_wrapper(dir: &Path) -> Result<PathBuf, String> {
    if !Path::new("/dev/kvm").exists() {
        return Err("no /dev/kvm".into());
    }
    let unpacked = root().join("target/nested/qemu/root");
    let bin = unpacked.join("usr/bin/qemu-system-x86_64");
    let script = if bin.exists() {
        format!(
            "#!/bin/sh\nQEMU_MODULE_DIR={r}/usr/lib/x86_64-linux-gnu/qemu exec {b} \
             -L {r}/usr/share/qemu -L {r}/usr/share/seabios \"$@\"\n",
            r = unpacked.display(),
            b = bin.display()
        )
    } else {
        let on_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.join("qemu-system-x86_64"))
            .find(|p| p.exists())
            .ok_or("no QEMU: neither target/nested/qemu (scripts/nested/fetch-qemu.sh) nor qemu-system-x86_64 on PATH")?;
        format!("#!/bin/sh\nexec {} \"$@\"\n", on_path.display())
    };
    write_script(&dir.join("qemu"), &script)
}

fn write_script(path: &Path, text: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| e.to_string())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(path.to_path_buf())
}

fn guest(name: &str) -> PathBuf {
    let dir = root().join("target/guests");
    let elf = dir.join(format!("{name}.elf"));
    if !elf.exists() {
        let ok = Command::new(root().join("guests/build.sh"))
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "guests/build.sh failed");
    }
    elf
}

/// One test's QEMU, run directory and log.
struct Fixture {
    dir: tempfile::TempDir,
    driver: QemuDriver,
    /// Every QEMU started, killed on drop so a failed test leaves none.
    started: std::sync::Mutex<Vec<(u32, u64)>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let started = self.started.lock().map(|s| s.clone()).unwrap_or_default();
        for (pid, start) in started {
            if let Ok(Some(p)) = process::PidFd::open(pid, start) {
                let _ = p.terminate(None, Duration::from_secs(5));
            }
        }
    }
}

impl Fixture {
    /// `None` after a skip when QEMU or KVM is missing.
    fn new() -> Option<Fixture> {
        let dir = tempfile::tempdir().unwrap();
        match qemu_wrapper(dir.path()) {
            Ok(w) => Some(Fixture {
                driver: QemuDriver::new(w),
                dir,
                started: Default::default(),
            }),
            Err(why) => {
                testkit::skip(&why);
                None
            }
        }
    }

    fn ctx(&self, paused: bool) -> StartContext {
        let run_dir = self.dir.path().join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        StartContext {
            run_dir,
            log_path: self.dir.path().join("qemu.log"),
            paused,
            cgroup_procs: Vec::new(),
            disk_secrets: Default::default(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.log")).unwrap_or_default()
    }

    fn start(&self, xml: &str, paused: bool) -> Arc<dyn Instance> {
        let domain = Domain::parse(xml).unwrap().domain;
        self.driver.validate(&domain).unwrap();
        let inst = self
            .driver
            .start(&domain, 1, &self.ctx(paused))
            .unwrap_or_else(|e| panic!("start: {e}\nlog:\n{}", self.log()));
        let rec = inst.record();
        if let Ok(mut s) = self.started.lock() {
            s.push((rec.pid, rec.start_time));
        }
        Arc::from(inst)
    }

    /// Starts `xml` held, connects its console, then lets it run: no
    /// console output can be lost before the test reads it.
    fn start_with_console(&self, xml: &str) -> (Arc<dyn Instance>, std::os::unix::net::UnixStream) {
        let inst = self.start(xml, true);
        let con = inst.console().unwrap();
        inst.resume().unwrap();
        (inst, con)
    }
}

fn domain_xml(name: &str, guest: &Path, machine: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <metadata><vireo:driver xmlns:vireo='urn:x-vireo:domain:1' name='qemu'/></metadata>\
         <os><type arch='x86_64'{machine}>hvm</type><kernel>{}</kernel></os>\
         <features><acpi/></features><cpu mode='custom'><model>qemu64</model></cpu>\
         <on_reboot>destroy</on_reboot>\
         <devices>{devices}<serial type='pty'/></devices></domain>",
        guest.display()
    )
}

/// `wait_exit` on a thread of its own, as the daemon runs it.
fn watch(inst: &Arc<dyn Instance>) -> mpsc::Receiver<ExitReason> {
    let (tx, rx) = mpsc::channel();
    let inst = inst.clone();
    std::thread::spawn(move || {
        let _ = tx.send(inst.wait_exit());
    });
    rx
}

fn exit_within(rx: &mpsc::Receiver<ExitReason>, secs: u64) -> ExitReason {
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("wait_exit did not return in time")
}

/// Reads the console until `want` shows up (bounded).
/// Reads `con` until `want` shows up (at most 20 s); what it read.
/// QEMU drops console output while no client is connected, so tests open
/// the console while the guest is held ([`Fixture::start_with_console`]).
fn console_sees(mut s: std::os::unix::net::UnixStream, want: &str) -> String {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&seen).contains(want) {
            break;
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn gone(pid: u32) -> bool {
    match process::ProcStat::read(pid) {
        Err(_) => true,
        Ok(st) => st.state == 'Z',
    }
}

#[test]
fn lifecycle_pause_resume_stats_destroy() {
    let Some(f) = Fixture::new() else { return };
    assert!(
        f.driver.version().starts_with("qemu 7."),
        "{}",
        f.driver.version()
    );
    let disk = f.dir.path().join("d.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let xml = domain_xml(
        "life",
        &guest("idle"),
        "",
        &format!(
            "<disk type='file'><driver type='raw'/><source file='{}'/><target dev='vda'/>\
             <serial>QD1</serial></disk><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
            disk.display()
        ),
    );
    let (inst, con) = f.start_with_console(&xml);
    let rx = watch(&inst);
    assert_eq!(inst.state().unwrap(), RuntimeState::Running);
    let out = console_sees(con, "idle: waiting");
    assert!(out.contains("idle: waiting"), "console: {out:?}");

    inst.pause().unwrap();
    assert_eq!(inst.state().unwrap(), RuntimeState::Paused);
    let st = inst.stats().unwrap();
    assert_eq!(st["state.state"], 3);
    inst.resume().unwrap();
    assert_eq!(inst.state().unwrap(), RuntimeState::Running);

    let st = inst.stats().unwrap();
    assert_eq!(st["state.state"], 1);
    assert_eq!(st["block.count"], 1);
    assert_eq!(st["block.0.name"], "vda");
    assert_eq!(st["block.0.path"], disk.display().to_string());
    // The idle guest never reads: QEMU's own counter, present and zero.
    assert_eq!(st["block.0.rd.bytes"], 0);
    assert_eq!(st["balloon.current"], 64 * 1024);
    assert!(st.contains_key("cpu.time"));

    let rec = inst.record();
    assert_eq!(rec.driver, "qemu");
    assert!(process::is_alive(rec.pid, rec.start_time));
    inst.destroy(false).unwrap();
    assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);
    assert!(gone(rec.pid), "QEMU {} still there", rec.pid);
}

#[test]
fn starts_paused_then_runs() {
    let Some(f) = Fixture::new() else { return };
    let inst = f.start(&domain_xml("paused", &guest("idle"), "", ""), true);
    let rx = watch(&inst);
    assert_eq!(inst.state().unwrap(), RuntimeState::Paused);
    let con = inst.console().unwrap();
    inst.resume().unwrap();
    assert_eq!(inst.state().unwrap(), RuntimeState::Running);
    let out = console_sees(con, "idle: waiting");
    assert!(out.contains("idle: waiting"), "console: {out:?}");
    inst.destroy(true).unwrap();
    assert_eq!(exit_within(&rx, 30), ExitReason::Destroyed);
}

/// exit.elf writes Vireo's ACPI sleep register (nothing there under QEMU),
/// then 0 to isa-debug-exit, which the driver adds: QEMU exits with 1.
#[test]
fn guest_power_off_is_poweroff() {
    let Some(f) = Fixture::new() else { return };
    let inst = f.start(&domain_xml("off", &guest("exit"), "", ""), false);
    let rx = watch(&inst);
    assert_eq!(exit_within(&rx, 20), ExitReason::Poweroff);
    assert!(gone(inst.record().pid));
}

#[test]
fn sigkill_is_crashed() {
    let Some(f) = Fixture::new() else { return };
    let inst = f.start(&domain_xml("kill", &guest("idle"), "", ""), false);
    let rx = watch(&inst);
    let pid = inst.record().pid;
    // SAFETY: kill(2) with a pid this test's QEMU holds (its child, not
    // yet reaped, so the number cannot have been reused).
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    match exit_within(&rx, 20) {
        ExitReason::Failed(why) => assert!(why.contains("signal 9"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn adopt_after_the_instance_is_dropped() {
    let Some(f) = Fixture::new() else { return };
    // Held until adopted, so the console (connected then) sees its output.
    let inst = f.start(&domain_xml("adopt", &guest("idle"), "", ""), true);
    let rec = inst.record();
    drop(inst);
    assert!(process::is_alive(rec.pid, rec.start_time));

    // A pid whose start time differs is another process: not ours.
    let mut wrong = rec.clone();
    wrong.start_time += 1;
    assert!(f.driver.adopt(&wrong, &f.ctx(false)).unwrap().is_none());

    let inst: Arc<dyn Instance> = Arc::from(
        f.driver
            .adopt(&rec, &f.ctx(false))
            .unwrap()
            .expect("QEMU is alive"),
    );
    assert_eq!(inst.record().pid, rec.pid);
    assert_eq!(inst.state().unwrap(), RuntimeState::Paused);
    let con = inst.console().unwrap();
    inst.resume().unwrap();
    assert_eq!(inst.state().unwrap(), RuntimeState::Running);
    let out = console_sees(con, "idle: waiting");
    assert!(out.contains("idle: waiting"), "console: {out:?}");
    let rx = watch(&inst);
    inst.destroy(false).unwrap();
    assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);
    // Gone now: adopting the same record finds nothing.
    assert!(f.driver.adopt(&rec, &f.ctx(false)).unwrap().is_none());
}

/// microvm (with pcie=on) takes hot-plugged devices on the PCIe root
/// ports the driver adds; the idle guest never powered those slots, so
/// QEMU unplugs at once, without waiting for the guest.
#[test]
fn hot_plug_a_disk_on_microvm() {
    let Some(f) = Fixture::new() else { return };
    let inst = f.start(&domain_xml("hp", &guest("idle"), "", ""), false);
    let rx = watch(&inst);
    let img = f.dir.path().join("hp.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("16M")
        .status();
    if !made.is_ok_and(|s| s.success()) {
        // Fall back to a raw image: what is tested is the plug, not qcow2.
        std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    }
    let format = if std::fs::read(&img).unwrap().starts_with(b"QFI\xfb") {
        "qcow2"
    } else {
        "raw"
    };
    let disk_xml = format!(
        "<disk type='file'><driver type='{format}'/><source file='{}'/><target dev='vdb'/></disk>",
        img.display()
    );
    let disk = Domain::parse(&domain_xml("x", &guest("idle"), "", &disk_xml))
        .unwrap()
        .domain
        .devices
        .disks
        .remove(0);

    for round in 0..2 {
        inst.attach_disk(&disk, None).unwrap();
        let st = inst.stats().unwrap();
        assert_eq!(st["block.count"], 1, "round {round}");
        assert_eq!(st["block.0.name"], "vdb");
        // QEMU's counters for the node: the device is really there.
        assert!(st.contains_key("block.0.rd.reqs"), "{st:?}");
        match inst.attach_disk(&disk, None) {
            Err(DriverError::Conflict(m)) => assert!(m.contains("vdb"), "{m}"),
            other => panic!("second attach: {other:?}"),
        }
        inst.detach_disk("vdb").unwrap();
        let st = inst.stats().unwrap();
        assert_eq!(st["block.count"], 0);
    }
    assert!(matches!(
        inst.detach_disk("vdb"),
        Err(DriverError::Conflict(_))
    ));
    // A missing image is QEMU's refusal, one line, and nothing is left.
    let mut missing = disk.clone();
    missing.source = virtxml::DiskSource::File("/nonexistent/x.img".into());
    match inst.attach_disk(&missing, None) {
        Err(DriverError::Failed(m)) => assert!(m.contains("blockdev-add"), "{m}"),
        other => panic!("missing image: {other:?}"),
    }
    inst.attach_disk(&disk, None).unwrap();
    inst.destroy(false).unwrap();
    assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);
}

#[test]
fn start_failures_are_one_line() {
    let Some(f) = Fixture::new() else { return };
    let xml = domain_xml("bad", Path::new("/nonexistent/kernel.elf"), "", "");
    let domain = Domain::parse(&xml).unwrap().domain;
    let e = match f.driver.start(&domain, 1, &f.ctx(false)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started a missing kernel"),
    };
    assert!(e.contains("/nonexistent/kernel.elf"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    let xml = domain_xml(
        "br",
        &guest("idle"),
        "",
        "<interface type='network'><source network='default'/></interface>",
    );
    let domain = Domain::parse(&xml).unwrap().domain;
    // A definition may name a network: the daemon resolves it at start.
    f.driver.validate(&domain).unwrap();
    // Started without the daemon, nothing has plugged it: refused.
    let e = match f.driver.start(&domain, 2, &f.ctx(false)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started an unplugged network interface"),
    };
    assert!(e.starts_with("/domain/devices/interface[1]"), "{e}");
    assert!(e.contains("daemon"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

/// `reset` reboots the guest in the same QEMU although the domain has
/// on_reboot=destroy (-no-reboot), and a guest's own reset (a triple
/// fault here) ends QEMU with Reset for the daemon to act on.
#[test]
fn reset_reboots_and_a_guest_reset_is_reset() {
    let Some(f) = Fixture::new() else { return };
    // Held until the console is connected: QEMU drops what the guest
    // writes while no client is connected, and the first boot's line was
    // lost that way once in a full suite run.
    let inst = f.start(&domain_xml("rst", &guest("idle"), "", ""), true);
    let rx = watch(&inst);
    let mut con = inst.console().unwrap();
    con.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    inst.resume().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reset_done = false;
    while Instant::now() < deadline && seen.matches("idle: waiting").count() < 2 {
        if let Ok(n) = con.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        if !reset_done && seen.contains("idle: waiting") {
            inst.reset().unwrap();
            reset_done = true;
        }
    }
    assert_eq!(
        seen.matches("idle: waiting").count(),
        2,
        "console: {seen:?}"
    );
    assert_eq!(inst.state().unwrap(), RuntimeState::Running);
    // The ACPI power button: QEMU accepts it; the idle guest ignores it.
    inst.shutdown().unwrap();
    assert_eq!(inst.state().unwrap(), RuntimeState::Running);
    inst.destroy(false).unwrap();
    assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);

    let inst = f.start(&domain_xml("tf", &guest("triple-fault"), "", ""), false);
    let rx = watch(&inst);
    assert_eq!(exit_within(&rx, 20), ExitReason::Reset, "log:\n{}", f.log());
}

/// A network namespace with two TAPs, removed on drop. QEMU runs inside it
/// (the wrapper execs `ip netns exec`), so it opens the TAPs there and
/// nothing touches the root namespace.
struct TapNamespace {
    ns: String,
    taps: [String; 2],
}

impl TapNamespace {
    fn new() -> Option<TapNamespace> {
        let ip_ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let id = std::process::id() % 100_000;
        let me = TapNamespace {
            ns: format!("vq{}", std::process::id()),
            taps: [format!("vqa{id}"), format!("vqb{id}")],
        };
        if !ip_ok(&["netns", "add", &me.ns]) {
            testkit::skip("cannot create a network namespace (needs root and iproute2)");
            return None;
        }
        for t in &me.taps {
            let made = ip_ok(&["-n", &me.ns, "tuntap", "add", "dev", t, "mode", "tap"])
                && ip_ok(&["-n", &me.ns, "link", "set", t, "up"]);
            assert!(made, "TAP {t} in {}", me.ns);
        }
        Some(me)
    }
}

impl Drop for TapNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn nics_on_taps_cold_and_hot_plugged() {
    let Some(mut f) = Fixture::new() else { return };
    let Some(ns) = TapNamespace::new() else {
        return;
    };
    let inner = f.dir.path().join("qemu");
    let w = write_script(
        &f.dir.path().join("qemu-ns"),
        &format!(
            "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
            ns.ns,
            inner.display()
        ),
    )
    .unwrap();
    f.driver = QemuDriver::new(w);
    let xml = domain_xml(
        "nic",
        &guest("idle"),
        "",
        &format!(
            "<interface type='ethernet'><mac address='52:54:00:00:00:01'/><target dev='{}'/>\
             <model type='virtio'/></interface>",
            ns.taps[0]
        ),
    );
    let inst = f.start(&xml, false);
    let rx = watch(&inst);
    let st = inst.stats().unwrap();
    assert_eq!(st["net.count"], 1);
    assert_eq!(st["net.0.name"], ns.taps[0]);

    let hot = Domain::parse(&domain_xml(
        "x",
        &guest("idle"),
        "",
        &format!(
            "<interface type='ethernet'><mac address='52:54:00:00:00:02'/><target dev='{}'/></interface>",
            ns.taps[1]
        ),
    ))
    .unwrap()
    .domain
    .devices
    .interfaces
    .remove(0);
    inst.attach_interface(&hot).unwrap();
    assert_eq!(inst.stats().unwrap()["net.count"], 2);
    assert!(matches!(
        inst.attach_interface(&hot),
        Err(DriverError::Conflict(_))
    ));
    inst.detach_interface(&hot.mac).unwrap();
    assert_eq!(inst.stats().unwrap()["net.count"], 1);
    // Plugged again: the netdev and device ids were really freed.
    inst.attach_interface(&hot).unwrap();
    inst.destroy(false).unwrap();
    assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);
}

/// The firmware machines boot the same guest (SeaBIOS loads it through
/// QEMU's PVH option ROM: seconds of emulated CPL 0 on kvm-pvm), and take
/// a hot-plugged disk: q35 on a PCIe root port, pc on its root bus. Only a
/// guest that handles hot-unplug can give it back there.
#[test]
fn q35_and_pc_boot_and_hot_plug() {
    let Some(f) = Fixture::new() else { return };
    let img = f.dir.path().join("hp.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let disk = Domain::parse(&domain_xml(
        "x",
        &guest("idle"),
        "",
        &format!(
            "<disk type='file'><driver type='raw'/><source file='{}'/><target dev='vdc'/></disk>",
            img.display()
        ),
    ))
    .unwrap()
    .domain
    .devices
    .disks
    .remove(0);
    for machine in ["q35", "pc-i440fx-7.2"] {
        let xml = domain_xml(
            machine,
            &guest("idle"),
            &format!(" machine='{machine}'"),
            "",
        );
        let (inst, con) = f.start_with_console(&xml);
        let rx = watch(&inst);
        let out = console_sees(con, "idle: waiting");
        assert!(out.contains("idle: waiting"), "{machine} console: {out:?}");
        inst.attach_disk(&disk, None).unwrap();
        let st = inst.stats().unwrap();
        assert!(st.contains_key("block.0.rd.reqs"), "{machine}: {st:?}");
        // Unplugging needs the guest's consent here (the firmware powered
        // the slot; pc uses ACPI ejection), and the idle guest halts with
        // interrupts off: a bounded wait, then pending, the disk still
        // there and still in the live definition; asking again waits
        // again, and it is still not finished.
        let begun = Instant::now();
        match inst.detach_disk("vdc") {
            Ok(Unplug::Pending) => {}
            other => panic!("{machine}: detach: {other:?}"),
        }
        assert!(begun.elapsed() < Duration::from_secs(10));
        assert_eq!(inst.stats().unwrap()["block.count"], 1);
        assert!(inst.record().xml.contains("vdc"), "{}", inst.record().xml);
        assert!(!inst.unplug_finished(&Plugged::Disk("vdc".into())).unwrap());
        assert!(matches!(inst.detach_disk("vdc"), Ok(Unplug::Pending)));
        assert_eq!(inst.state().unwrap(), RuntimeState::Running);
        inst.destroy(false).unwrap();
        assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);
    }
}

/// Runs `f` on a thread that has entered the network namespace `ns`, so
/// that the TAPs the driver makes (and the QEMU it forks) live there.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace descriptor
        // this thread holds open.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

fn links_on(ns: &str, master: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "master", master])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn link_exists(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// type='bridge': the driver makes the TAP, attaches it to the bridge and
/// hands QEMU the descriptor (the TAP goes with QEMU); hot-plugged, the
/// same over QMP (`getfd`), so the TAP goes on unplug or when QEMU ends.
#[test]
fn bridge_interfaces_get_driver_made_taps() {
    let Some(f) = Fixture::new() else { return };
    let Some(ns) = TapNamespace::new() else {
        return;
    };
    let ok = Command::new("ip")
        .args(["-n", &ns.ns, "link", "add", "vqbr0", "type", "bridge"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "bridge in {}", ns.ns);
    let f = Arc::new(f);
    let nsname = ns.ns.clone();
    let (f2, n2) = (f.clone(), nsname.clone());
    in_netns(&ns.ns, move || {
        let (f, nsname) = (f2, n2);
        let xml = domain_xml(
            "br",
            &guest("idle"),
            "",
            "<interface type='bridge'><mac address='52:54:00:00:00:11'/><source bridge='vqbr0'/></interface>",
        );
        let inst = f.start(&xml, false);
        let rx = watch(&inst);
        assert!(
            links_on(&nsname, "vqbr0").contains("vq1n0"),
            "{}",
            links_on(&nsname, "vqbr0")
        );
        assert!(inst.record().xml.contains("vq1n0"), "{}", inst.record().xml);

        let hot = Domain::parse(&domain_xml(
            "x",
            &guest("idle"),
            "",
            "<interface type='bridge'><mac address='52:54:00:00:00:12'/><source bridge='vqbr0'/></interface>",
        ))
        .unwrap()
        .domain
        .devices
        .interfaces
        .remove(0);
        inst.attach_interface(&hot).unwrap();
        assert!(links_on(&nsname, "vqbr0").contains("vq1h0012"));
        let details = Command::new("ip")
            .args(["-n", &nsname, "-d", "-o", "link", "show", "vq1h0012"])
            .output()
            .unwrap();
        let details = String::from_utf8_lossy(&details.stdout);
        assert!(details.contains("persist off"), "{details}");
        inst.detach_interface(&hot.mac).unwrap();
        assert!(
            !link_exists(&nsname, "vq1h0012"),
            "hot TAP left after unplug"
        );
        inst.attach_interface(&hot).unwrap();
        assert!(link_exists(&nsname, "vq1h0012"));

        inst.destroy(false).unwrap();
        assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);
        assert!(
            !link_exists(&nsname, "vq1n0"),
            "start-time TAP outlived QEMU"
        );
        assert!(!link_exists(&nsname, "vq1h0012"), "hot TAP outlived QEMU");
    });
    // A bridge that does not exist: one line, nothing started, no TAP.
    let f2 = f.clone();
    let e = in_netns(&ns.ns, move || {
        let xml = domain_xml(
            "nobr",
            &guest("idle"),
            "",
            "<interface type='bridge'><mac address='52:54:00:00:00:13'/><source bridge='nosuchbr'/></interface>",
        );
        let domain = Domain::parse(&xml).unwrap().domain;
        match f2.driver.start(&domain, 2, &f2.ctx(false)) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started on a missing bridge"),
        }
    });
    assert!(e.contains("nosuchbr"), "{e}");
    assert!(!link_exists(&nsname, "vq2n0"));
}

/// bad-insn runs `xrstor` at CPL 0: kvm-pvm cannot emulate it, and QEMU
/// stops the vCPUs in internal-error and stays; the driver ends it as
/// crashed. (With hardware virtualization the guest gets #UD and triple
/// faults instead: a reset.)
#[test]
fn emulation_failure_is_crashed() {
    let Some(f) = Fixture::new() else { return };
    let inst = f.start(&domain_xml("bad", &guest("bad-insn"), "", ""), false);
    let rx = watch(&inst);
    let pid = inst.record().pid;
    match exit_within(&rx, 30) {
        ExitReason::Crashed(why) => assert!(why.contains("internal-error"), "{why}"),
        ExitReason::Reset => {
            eprintln!("this host's KVM raised #UD for xrstor (hardware virtualization): a reset")
        }
        other => panic!("expected Crashed, got {other:?}\nlog:\n{}", f.log()),
    }
    assert!(gone(pid));
}

/// Without <acpi/> microvm has no PCI bus: the guest still boots (COM1 is
/// ISA), and a device that would need PCI is refused before anything runs.
#[test]
fn microvm_without_acpi_boots_and_refuses_pci_devices() {
    let Some(f) = Fixture::new() else { return };
    let xml =
        domain_xml("noacpi", &guest("idle"), "", "").replace("<features><acpi/></features>", "");
    // Held until the console is connected: QEMU drops what the guest
    // writes while no client is connected to the console socket.
    let inst = f.start(&xml, true);
    let rx = watch(&inst);
    let mut con = inst.console().unwrap();
    con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    inst.resume().unwrap();
    let mut out = String::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !out.contains("idle: waiting") {
        match con.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(out.contains("idle: waiting"), "console: {out:?}");
    let disk = Domain::parse(&domain_xml(
        "x",
        &guest("idle"),
        "",
        "<disk type='file'><driver type='raw'/><source file='/dev/null'/><target dev='vdb'/></disk>",
    ))
    .unwrap()
    .domain
    .devices
    .disks
    .remove(0);
    match inst.attach_disk(&disk, None) {
        Err(DriverError::Unsupported(m)) => assert!(m.contains("no hot-plug slot"), "{m}"),
        other => panic!("hot-plug without PCI: {other:?}"),
    }
    inst.destroy(false).unwrap();
    assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);

    let with_rng = domain_xml(
        "noacpi2",
        &guest("idle"),
        "",
        "<rng model='virtio'><backend model='builtin'/></rng>",
    )
    .replace("<features><acpi/></features>", "");
    let e = f
        .driver
        .validate(&Domain::parse(&with_rng).unwrap().domain)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/domain/devices/rng: a microvm without"),
        "{e}"
    );
}

/// QEMU serves one QMP client at a time: while this instance holds the
/// monitor, a second adopt hears no greeting. It must fail within its
/// bound, saying the QEMU runs (not "gone", which would leave it unwatched).
#[test]
fn adopt_of_a_silent_monitor_fails_in_bounded_time() {
    let Some(f) = Fixture::new() else { return };
    let inst = f.start(&domain_xml("silent", &guest("idle"), "", ""), false);
    let rec = inst.record();
    let begun = Instant::now();
    let e = match f.driver.adopt(&rec, &f.ctx(false)) {
        Err(e) => e.to_string(),
        Ok(other) => panic!("adopted a QEMU whose monitor is taken: {}", other.is_some()),
    };
    assert!(
        begun.elapsed() < Duration::from_secs(20),
        "{:?}",
        begun.elapsed()
    );
    assert!(e.contains("runs but its QMP socket does not answer"), "{e}");
    assert_eq!(inst.state().unwrap(), RuntimeState::Running);
    let rx = watch(&inst);
    inst.destroy(false).unwrap();
    assert_eq!(exit_within(&rx, 20), ExitReason::Destroyed);
}
