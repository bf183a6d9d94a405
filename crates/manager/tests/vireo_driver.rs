//! The Vireo driver end to end: real `vireo run` processes (target/debug/
//! vireo, built by `cargo build -p vireo`) on real /dev/kvm, running the
//! project's test guests, driven through the `Driver`/`Instance` traits
//! as the daemon drives them. Adoption after a daemon restart is in
//! vireo_adopt.rs.

mod vireo_common;

use std::path::Path;
use std::time::{Duration, Instant};

use manager::driver::process::{self, ProcStat};
use manager::driver::{Driver, DriverError, ExitReason, Plugged, RuntimeState, Unplug};
use vireo_common::*;
use virtxml::Domain;

#[test]
fn idle_guest_starts_running_and_destroy_ends_it() {
    let run = Run::new();
    let vm = start("idle1", &guest("idle"), "", &run, false);
    assert_eq!(vm.state().unwrap(), RuntimeState::Running);
    let record = vm.record();
    assert_eq!(record.driver, "vireo");
    assert_eq!(record.id, 7);
    assert!(process::is_alive(record.pid, record.start_time));
    assert!(record.xml.contains("<name>idle1</name>"), "{}", record.xml);
    assert!(record.extra["api_socket"]
        .as_str()
        .unwrap()
        .ends_with("api.sock"));
    vm.destroy(false).unwrap();
    assert_eq!(
        wait_exit_within(vm.as_ref(), Duration::from_secs(5)),
        ExitReason::Destroyed
    );
    // Reaped: not even a zombie is left, and a process that is gone has
    // used no CPU time (whatever its pid names now).
    assert!(ProcStat::read(record.pid).is_err() || gone(record.pid, record.start_time));
    assert_eq!(vm.cpu_time(), Duration::ZERO);
}

#[test]
fn graceful_destroy_lets_the_vmm_clean_up() {
    let run = Run::new();
    let vm = start("idle2", &guest("idle"), "", &run, false);
    vm.destroy(true).unwrap();
    assert_eq!(
        wait_exit_within(vm.as_ref(), Duration::from_secs(5)),
        ExitReason::Destroyed
    );
    // SIGTERM is an orderly stop: the VMM removed its sockets.
    assert!(!run.dir.path().join("api.sock").exists());
    assert!(!run.dir.path().join("console.sock").exists());
}

#[test]
fn a_guest_that_powers_off_ends_with_poweroff() {
    let run = Run::new();
    // exit.elf powers off with its first instruction: start may see it
    // running or find it already gone; both are honest outcomes.
    let d = domain("exit1", &guest("exit"), "");
    match driver().start(&d, 1, &run.ctx(true)) {
        Ok(vm) => {
            assert_eq!(vm.state().unwrap(), RuntimeState::Paused);
            vm.resume().unwrap();
            assert_eq!(
                wait_exit_within(vm.as_ref(), Duration::from_secs(10)),
                ExitReason::Poweroff
            );
            let status = std::fs::read_to_string(run.dir.path().join("exit.json")).unwrap();
            assert!(status.contains("\"poweroff\""), "{status}");
        }
        Err(e) => panic!("a paused exit.elf must start: {e}; log: {}", run.log()),
    }
}

/// A guest that powers off before start() sees it running still started:
/// start succeeds and wait_exit says how it ended, at once.
#[test]
fn a_guest_that_ends_at_once_still_started() {
    let run = Run::new();
    let vm = start("exit2", &guest("exit"), "", &run, false);
    assert_eq!(
        wait_exit_within(vm.as_ref(), Duration::from_secs(5)),
        ExitReason::Poweroff
    );
    let run = Run::new();
    let vm = start("tf2", &guest("triple-fault"), "", &run, false);
    match wait_exit_within(vm.as_ref(), Duration::from_secs(5)) {
        ExitReason::Crashed(why) => assert!(why.contains("triple fault"), "{why}"),
        other => panic!("expected a crash, got {other:?}"),
    }
}

#[test]
fn a_guest_reset_without_restart_ends_with_reset() {
    let run = Run::new();
    let vm = start(
        "reset1",
        &guest("reset"),
        "<on_reboot>destroy</on_reboot>",
        &run,
        true,
    );
    vm.resume().unwrap();
    assert_eq!(
        wait_exit_within(vm.as_ref(), Duration::from_secs(10)),
        ExitReason::Reset
    );
}

#[test]
fn a_triple_fault_is_a_crash_with_its_reason() {
    let run = Run::new();
    let vm = start("tf1", &guest("triple-fault"), "", &run, true);
    vm.resume().unwrap();
    match wait_exit_within(vm.as_ref(), Duration::from_secs(10)) {
        ExitReason::Crashed(why) => assert!(why.contains("triple fault"), "{why}"),
        other => panic!("expected a crash, got {other:?}"),
    }
}

#[test]
fn a_vmm_killed_with_sigkill_is_crashed() {
    let run = Run::new();
    let vm = start("kill1", &guest("idle"), "", &run, false);
    let pid = i32::try_from(vm.record().pid).unwrap();
    // SAFETY: kill(2) on the VMM this test started (still our child, so
    // its pid cannot have been reused).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    match wait_exit_within(vm.as_ref(), Duration::from_secs(5)) {
        ExitReason::Failed(why) => assert!(why.contains("killed"), "{why}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_paused_start_runs_no_guest_instruction_until_resumed() {
    let run = Run::new();
    let vm = start("paused1", &guest("idle"), "", &run, true);
    assert_eq!(vm.state().unwrap(), RuntimeState::Paused);
    let stats = vm.stats().unwrap();
    assert_eq!(stats["state.state"], 3);
    // idle.elf writes "idle: waiting" to COM1 first thing: a port write.
    assert_eq!(stats["vcpu.0.exits.pio_write"], 0, "{stats:?}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(vm.stats().unwrap()["vcpu.0.exits.pio_write"], 0);
    vm.resume().unwrap();
    assert_eq!(vm.state().unwrap(), RuntimeState::Running);
    let out = console_until(vm.as_ref(), "idle: waiting");
    assert!(out.contains("idle: waiting"), "{out:?}");
    vm.pause().unwrap();
    assert_eq!(vm.state().unwrap(), RuntimeState::Paused);
    match vm.pause() {
        Err(DriverError::Conflict(m)) => assert!(m.contains("already paused"), "{m}"),
        other => panic!("a second pause: {other:?}"),
    }
    vm.destroy(false).unwrap();
    assert_eq!(vm.wait_exit(), ExitReason::Destroyed);
}

#[test]
fn console_replays_what_the_guest_printed_before_the_client_came() {
    let run = Run::new();
    let vm = start(
        "console1",
        &guest("idle"),
        "<devices><serial type='pty'/></devices>",
        &run,
        false,
    );
    // Let the guest print before anyone connects.
    std::thread::sleep(Duration::from_millis(200));
    let out = console_until(vm.as_ref(), "idle: waiting");
    assert!(out.contains("idle: waiting"), "{out:?}");
    vm.destroy(false).unwrap();
    vm.wait_exit();
}

#[test]
fn stats_have_virsh_keys_and_never_go_down() {
    let run = Run::new();
    let image = run.dir.path().join("d.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let devices = format!(
        "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='vda' bus='virtio'/></disk>\
         <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng></devices>",
        image.display()
    );
    let vm = start("stats1", &guest("idle"), &devices, &run, false);
    let first = vm.stats().unwrap();
    for key in [
        "state.state",
        "cpu.time",
        "balloon.current",
        "vcpu.current",
        "vcpu.0.state",
        "block.count",
        "block.0.name",
        "block.0.rd.reqs",
        "block.0.rd.bytes",
        "block.0.wr.reqs",
        "block.0.wr.bytes",
        "block.0.fl.reqs",
        "block.0.errors",
        "net.count",
    ] {
        assert!(first.contains_key(key), "{key} missing from {first:?}");
    }
    assert_eq!(first["state.state"], 1);
    assert_eq!(first["block.0.name"], "vda");
    assert_eq!(first["balloon.current"], 32 * 1024);
    std::thread::sleep(Duration::from_millis(100));
    let second = vm.stats().unwrap();
    for (key, value) in &first {
        if let (Some(a), Some(b)) = (value.as_u64(), second.get(key).and_then(|v| v.as_u64())) {
            assert!(b >= a, "{key} went down: {a} -> {b}");
        }
    }
    vm.destroy(false).unwrap();
    vm.wait_exit();
}

#[test]
fn validate_refuses_with_the_element_path() {
    let d = driver();
    let net = domain(
        "v1",
        &guest("idle"),
        "<devices><interface type='network'><source network='default'/></interface></devices>",
    );
    // Checked as the daemon will run it: plugged into its network's
    // bridge, which the daemon fills in at start.
    d.validate(&net).unwrap();
    let relative = domain("v2", "idle.elf", "");
    let e = d.validate(&relative).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "domain v2: /domain/os/kernel: the kernel 'idle.elf' must be an absolute path"
        ),
        "{e}"
    );
    // A definition with no kernel never reaches the driver: virtxml
    // refuses it at parse time, naming the element.
    let e = Domain::parse(
        "<domain type='kvm'><name>v3</name><memory>1024</memory><os><type>hvm</type></os></domain>",
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("/domain/os (line 1"), "{e}");
    assert!(e.contains("<kernel>"), "{e}");
    assert!(d.validate(&domain("v4", &guest("idle"), "")).is_ok());
}

#[test]
fn a_vmm_that_cannot_start_fails_with_its_own_words() {
    let run = Run::new();
    let d = domain("bad1", "/nonexistent/kernel.elf", "");
    let begun = Instant::now();
    let e = match driver().start(&d, 1, &run.ctx(false)) {
        Ok(_) => panic!("a missing kernel started"),
        Err(e) => e.to_string(),
    };
    assert!(begun.elapsed() < Duration::from_secs(5));
    assert!(
        e.starts_with("domain bad1: the VMM exited while starting"),
        "{e}"
    );
    assert!(e.contains("/nonexistent/kernel.elf"), "{e}");
}

#[test]
fn disks_hot_plug_into_the_live_definition() {
    let run = Run::new();
    let vm = start("hp1", &guest("idle"), "", &run, false);
    let image = run.dir.path().join("extra.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let with_disk = domain(
        "hp1",
        &guest("idle"),
        &format!(
            "<devices><disk type='file'><driver type='raw'/><source file='{}'/>\
             <target dev='vdb' bus='virtio'/><readonly/></disk></devices>",
            image.display()
        ),
    );
    let disk = &with_disk.devices.disks[0];
    vm.attach_disk(disk, None).unwrap();
    assert!(vm.record().xml.contains("dev=\"vdb\"") || vm.record().xml.contains("dev='vdb'"));
    assert_eq!(vm.stats().unwrap()["block.0.name"], "vdb");
    match vm.attach_disk(disk, None) {
        Err(DriverError::Conflict(m)) => assert!(m.contains("vdb"), "{m}"),
        other => panic!("a second vdb: {other:?}"),
    }
    // The idle guest never answers the eject request: after the bounded
    // wait the unplug is pending, and the disk stays in the live
    // definition, which says what the guest has.
    let begun = Instant::now();
    assert_eq!(vm.detach_disk("vdb").unwrap(), Unplug::Pending);
    assert!(begun.elapsed() < Duration::from_secs(8));
    assert!(vm.record().xml.contains("vdb"));
    assert!(!vm.unplug_finished(&Plugged::Disk("vdb".into())).unwrap());
    match vm.detach_disk("nope") {
        Err(DriverError::Conflict(m)) => assert!(m.contains("no disk nope"), "{m}"),
        other => panic!("detaching a missing disk: {other:?}"),
    }
    vm.destroy(false).unwrap();
    vm.wait_exit();
}

/// A guest that handles hot-plug events (the virtio guest) takes a disk
/// and ejects it on request: the detach is done and the live definition
/// loses the disk.
#[test]
fn a_guest_that_ejects_finishes_the_unplug() {
    let run = Run::new();
    let image = run.dir.path().join("eject.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let xml = format!(
        "<domain type='kvm'><name>ej1</name><memory unit='MiB'>64</memory>\
         <os><type>hvm</type><kernel>{}</kernel>\
         <cmdline>blk wait-hotplug=30000 hotplug-events=2</cmdline></os></domain>",
        guest("virtio")
    );
    let dom = Domain::parse(&xml).unwrap().domain;
    let vm = driver()
        .start(&dom, 9, &run.ctx(false))
        .unwrap_or_else(|e| panic!("start: {e}; log: {}", run.log()));
    let with_disk = domain(
        "ej1",
        &guest("idle"),
        &format!(
            "<devices><disk type='file'><driver type='raw'/><source file='{}'/>\
             <target dev='vdb' bus='virtio'/></disk></devices>",
            image.display()
        ),
    );
    vm.attach_disk(&with_disk.devices.disks[0], None).unwrap();
    assert_eq!(
        vm.detach_disk("vdb").unwrap(),
        Unplug::Done,
        "{}",
        run.log()
    );
    assert!(!vm.record().xml.contains("vdb"));
    assert!(vm.unplug_finished(&Plugged::Disk("vdb".into())).unwrap());
    vm.destroy(false).unwrap();
    vm.wait_exit();
}

#[test]
fn a_stuck_vmm_gives_a_bounded_error_not_a_hang() {
    let run = Run::new();
    let vm = start("stuck1", &guest("idle"), "", &run, false);
    let pid = i32::try_from(vm.record().pid).unwrap();
    // SAFETY: kill(2) on the VMM this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // The signal lands asynchronously: wait until the process is stopped.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ProcStat::read(vm.record().pid).map(|s| s.state).ok() != Some('T') {
        assert!(Instant::now() < deadline, "the VMM did not stop");
        std::thread::sleep(Duration::from_millis(2));
    }
    let begun = Instant::now();
    let e = vm.state().unwrap_err().to_string();
    assert!(begun.elapsed() < Duration::from_secs(15));
    assert!(e.contains("did not answer within 10 s"), "{e}");
    // SIGKILL ends even a stopped process.
    vm.destroy(false).unwrap();
    assert_eq!(vm.wait_exit(), ExitReason::Destroyed);
}

#[test]
fn start_latency_median() {
    let d = driver();
    let dom = domain("lat1", &guest("idle"), "");
    let mut times = Vec::new();
    for _ in 0..15 {
        let run = Run::new();
        let begun = Instant::now();
        let vm = d.start(&dom, 1, &run.ctx(false)).unwrap();
        times.push(begun.elapsed());
        vm.destroy(false).unwrap();
        vm.wait_exit();
    }
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "driver start -> running, idle.elf, 15 runs: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );
    // Generous: the machine is shared; the figure is in the output.
    assert!(median < Duration::from_millis(500), "median {median:?}");
}

/// A bridge interface inside a network namespace of the test's own (the
/// thread unshares one; the VMM it spawns inherits it): the driver makes
/// the TAP, attaches it to the bridge and hands it to the VMM by
/// descriptor, at start and for a hot-plugged card alike (over the API
/// socket, SCM_RIGHTS); none is persistent, so each is gone once the VM,
/// or for the hot-plugged card the card, has ended.
#[test]
fn bridge_interfaces_get_taps_on_the_bridge_that_go_with_the_vm() {
    if !Path::new("/sys/class/net").exists() || !Path::new("/dev/net/tun").exists() {
        testkit::skip("no /dev/net/tun here: TAPs cannot be made");
        return;
    }
    let idle = guest("idle");
    let outcome = netvirt::netns::run_isolated(move || {
        let (ok, out) = ip(&["link", "add", "br0", "type", "bridge"]);
        assert!(ok, "ip link add br0 type bridge: {out}");
        let run = Run::new();
        let vm = start(
            "br1",
            &idle,
            "<devices><interface type='bridge'><mac address='52:54:00:aa:00:01'/>\
             <source bridge='br0'/><model type='virtio'/></interface></devices>",
            &run,
            false,
        );
        let started = ip(&["-o", "link", "show", "vr7n0"]).1;
        let stats = vm.stats().unwrap();
        let record = vm.record();
        let plugged = domain(
            "x",
            &idle,
            "<devices><interface type='bridge'><mac address='52:54:00:aa:00:02'/>\
             <source bridge='br0'/></interface></devices>",
        )
        .devices
        .interfaces[0]
            .clone();
        vm.attach_interface(&plugged).unwrap();
        let hot = ip(&["-d", "-o", "link", "show", "vr7h0"]).1;
        let stats_after = vm.stats().unwrap();
        let missing = domain(
            "x",
            &idle,
            "<devices><interface type='bridge'><mac address='52:54:00:aa:00:03'/>\
             <source bridge='nosuchbr'/></interface></devices>",
        )
        .devices
        .interfaces[0]
            .clone();
        let refused = vm.attach_interface(&missing).unwrap_err().to_string();
        // An ethernet card names its TAP; the VMM makes it.
        let ethernet = domain(
            "x",
            &idle,
            "<devices><interface type='ethernet'><mac address='52:54:00:aa:00:04'/>\
             <target dev='ethtap0'/></interface></devices>",
        )
        .devices
        .interfaces[0]
            .clone();
        vm.attach_interface(&ethernet).unwrap();
        let eth = ip(&["-o", "link", "show", "ethtap0"]).1;
        let with_eth = vm.stats().unwrap();
        let duplicate = vm.attach_interface(&ethernet).unwrap_err().to_string();
        // The idle guest ejects nothing: pending, and still live.
        let unplug = vm.detach_interface(&ethernet.mac).unwrap();
        let live_xml = (unplug, vm.record().xml);
        vm.destroy(false).unwrap();
        let reason = vm.wait_exit();
        let left = ip(&["-o", "link", "show", "type", "tun"]).1;
        (
            started,
            stats,
            record,
            hot,
            stats_after,
            refused,
            reason,
            left,
            (eth, with_eth, duplicate, live_xml),
        )
    });
    let Ok((started, stats, record, hot, stats_after, refused, reason, left, ethernet_seen)) =
        outcome
    else {
        testkit::skip("unshare(CLONE_NEWNET) failed: a network namespace needs root");
        return;
    };
    assert!(started.contains("master br0"), "{started}");
    assert!(
        started.contains("state UP") || started.contains(",UP"),
        "{started}"
    );
    assert_eq!(stats["net.count"], 1);
    assert_eq!(stats["net.0.name"], "vr7n0");
    assert_eq!(record.extra["bridge_ports"][0]["tap"], "vr7n0");
    assert!(
        record.xml.contains("<target dev=\"vr7n0\"/>")
            || record.xml.contains("<target dev='vr7n0'/>"),
        "{}",
        record.xml
    );
    assert!(hot.contains("master br0"), "{hot}");
    // Handed over, not left for the VMM to open by name.
    assert!(hot.contains("persist off"), "{hot}");
    assert_eq!(stats_after["net.count"], 2);
    assert!(refused.contains("no bridge called 'nosuchbr'"), "{refused}");
    let (eth, with_eth, duplicate, live_xml) = ethernet_seen;
    assert!(eth.contains("ethtap0"), "{eth}");
    assert_eq!(with_eth["net.count"], 3);
    assert_eq!(with_eth["net.2.name"], "ethtap0");
    assert!(
        duplicate.contains("52:54:00:aa:00:04 is attached already"),
        "{duplicate}"
    );
    let (unplug, live_xml) = live_xml;
    assert_eq!(unplug, Unplug::Pending);
    assert!(live_xml.contains("52:54:00:aa:00:04"), "{live_xml}");
    assert!(live_xml.contains("52:54:00:aa:00:02"), "{live_xml}");
    assert_eq!(reason, ExitReason::Destroyed);
    assert!(left.trim().is_empty(), "TAPs left behind: {left}");
}

/// A disk another running domain uses is refused by the VMM (images are
/// locked), and the start error says so in the VMM's words.
#[test]
fn a_disk_in_use_by_another_domain_fails_the_start() {
    let run = Run::new();
    let image = run.dir.path().join("shared.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let devices = format!(
        "<devices><disk type='file'><driver type='raw'/><source file='{}'/>\
         <target dev='vda' bus='virtio'/></disk></devices>",
        image.display()
    );
    let first = start("lock1", &guest("idle"), &devices, &run, false);
    let run2 = Run::new();
    let d = domain("lock2", &guest("idle"), &devices);
    let e = match driver().start(&d, 8, &run2.ctx(false)) {
        Ok(_) => panic!("a second domain started on a disk in use"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with("domain lock2: the VMM exited while starting: "),
        "{e}"
    );
    assert!(e.contains("shared.img"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    first.destroy(false).unwrap();
    first.wait_exit();
}
