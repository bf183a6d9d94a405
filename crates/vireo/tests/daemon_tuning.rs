//! Memory and CPU placement through the daemon: `setmem`, `dommemstat`,
//! `vcpuinfo`, `vcpupin`, `emulatorpin` and `numatune`, with the `vireo`
//! CLI against a real daemon, on definitions and on running VMMs.

mod daemon_harness;
mod virsh_cli;

use daemon_harness::{domain_xml, have_kvm, Daemon};
use virsh_cli::vireo;

fn uri(d: &Daemon) -> String {
    format!("vireo+unix:///system?socket={}", d.socket.display())
}

fn online_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn placement_verbs_change_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let xml = domain_xml("p", "idle", "")
        .replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>")
        .replace(
            "<name>p</name>",
            "<name>p</name><uuid>5d1c0f6e-63a4-4c43-9b1e-6f0e2a7f3b11</uuid>",
        );
    d.define(&xml);

    // Nothing pinned: every vCPU may use every host CPU.
    let all = online_cpus();
    assert_eq!(
        vireo(&u, &["vcpupin", "p"]).ok(),
        format!(" VCPU   CPU Affinity\n----------------------\n 0      {all}\n 1      {all}\n\n")
    );
    vireo(&u, &["vcpupin", "p", "1", "0"]).ok();
    assert_eq!(
        vireo(&u, &["vcpupin", "p", "1"]).ok(),
        " VCPU   CPU Affinity\n----------------------\n 1      0\n\n"
    );
    vireo(&u, &["emulatorpin", "p", "0"]).ok();
    assert!(vireo(&u, &["emulatorpin", "p"])
        .ok()
        .ends_with("       *: 0\n\n"));
    vireo(&u, &["numatune", "p", "--nodeset", "0"]).ok();
    assert_eq!(
        vireo(&u, &["numatune", "p"]).ok(),
        "numa_mode      : strict\nnuma_nodeset   : 0\n\n"
    );
    let dumped = vireo(&u, &["dumpxml", "p"]).ok().to_string();
    for part in [
        "<vcpupin vcpu='1' cpuset='0'/>",
        "<emulatorpin cpuset='0'/>",
        "<memory mode='strict' nodeset='0'/>",
    ] {
        assert!(dumped.contains(part), "{part} missing from {dumped}");
    }
    let file = std::fs::read_to_string(d.state.join("domains/p.xml")).unwrap();
    assert!(file.contains("<vcpupin vcpu='1' cpuset='0'/>"), "{file}");

    // An inactive domain's vCPUs are offline, with their pinning.
    let info = vireo(&u, &["vcpuinfo", "p", "--json"]).ok().to_string();
    let rows: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(rows[1]["state"], "offline");
    assert_eq!(rows[1]["affinity"], "0");

    // Bad input: one line each, nothing changed.
    for (args, want) in [
        (
            vec!["vcpupin", "p", "2", "0"],
            "has 2 vCPUs: there is no vCPU 2",
        ),
        (
            vec!["vcpupin", "p", "0", "9999"],
            "host CPU 9999 does not exist",
        ),
        (vec!["vcpupin", "p", "0", "3-1"], "runs backwards"),
        (
            vec!["numatune", "p", "--nodeset", "7"],
            "host NUMA node 7 does not exist",
        ),
        (
            vec!["numatune", "p", "--mode", "bind"],
            "must be strict, preferred",
        ),
        (
            vec!["numatune", "p", "--live", "--mode", "interleave"],
            "not running",
        ),
        (vec!["setmem", "p", "16M"], "needs a memory balloon"),
        (
            vec!["setmem", "p", "64M"],
            "outside 4096 KiB to its maximum memory (32768 KiB)",
        ),
        (vec!["setmem", "p", "16Q"], "invalid memory size"),
        (vec!["dommemstat", "p"], "not running"),
        (
            vec!["vcpupin", "p", "--current", "--live"],
            "--current cannot be combined",
        ),
    ] {
        let e = vireo(&u, &args).error();
        assert!(e.contains(want), "{args:?}: {e}");
    }
    assert_eq!(
        std::fs::read_to_string(d.state.join("domains/p.xml")).unwrap(),
        file
    );

    // With a balloon, setmem records currentMemory.
    let balloon = xml.replace(
        "<serial type='pty'/>",
        "<serial type='pty'/><memballoon model='virtio'><stats period='5'/></memballoon>",
    );
    d.define(&balloon);
    vireo(&u, &["setmem", "p", "16M", "--config"]).ok();
    let dumped = vireo(&u, &["dumpxml", "p", "--inactive"]).ok().to_string();
    assert!(
        dumped.contains("<currentMemory unit='KiB'>16384</currentMemory>"),
        "{dumped}"
    );
    assert!(dumped.contains("<stats period='5'/>"), "{dumped}");
}

#[test]
fn a_running_domain_reports_its_memory_and_emulator_threads() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    d.define(&domain_xml("r", "idle", ""));
    d.ok("POST", "/domains/r/start", None);

    // No balloon: the guest has what it started with, and the VMM's RSS.
    let stats = vireo(&u, &["dommemstat", "r"]).ok().to_string();
    let mut lines = stats.lines();
    assert_eq!(lines.next(), Some("actual 32768"), "{stats}");
    let rss: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("rss "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{stats}"));
    assert!(rss > 0, "{stats}");
    let e = vireo(&u, &["setmem", "r", "16M", "--live"]).error();
    assert!(e.contains("has no memory balloon"), "{e}");

    // The emulator's affinity is the VMM's own.
    let pid = d.vmm_processes()[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    assert!(
        vireo(&u, &["emulatorpin", "r"])
            .ok()
            .ends_with(&format!("       *: {allowed}\n\n")),
        "{allowed}"
    );
    let e = vireo(
        &u,
        &["numatune", "r", "--mode", "interleave", "--nodeset", "0"],
    )
    .error();
    assert!(e.contains("placed when it started"), "{e}");
    d.ok("POST", "/domains/r/destroy", None);
}

#[test]
fn numa_cells_topology_and_distances_from_the_xml_reach_the_guest() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    // Two vCPUs: each one's CPL-0 start is emulated, slowly, on this host.
    let placement = "<vcpu>2</vcpu><numatune><memory mode='strict' nodeset='0'/></numatune>\
        <cpu mode='host-passthrough'><topology sockets='2' cores='1' threads='1'/><numa>\
        <cell id='0' cpus='0' memory='32' unit='MiB'><distances><sibling id='1' value='31'/></distances></cell>\
        <cell id='1' cpus='1' memory='32' unit='MiB'/></numa></cpu>";
    let xml = domain_xml("cells", "numa", "")
        .replace(
            "<memory unit='MiB'>32</memory><vcpu>1</vcpu>",
            "<memory unit='MiB'>64</memory>",
        )
        .replace("</os>", &format!("</os>{placement}"));
    d.define(&xml);
    d.ok(
        "POST",
        "/domains/cells/start",
        Some(&serde_json::json!({"paused": true})),
    );
    let mut console = daemon_harness::console(&d.socket, "cells", false).unwrap();
    d.ok("POST", "/domains/cells/resume", None);
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    console
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    while !seen.contains("numa: ok") && std::time::Instant::now() < deadline {
        let mut buf = [0u8; 4096];
        match std::io::Read::read(&mut console, &mut buf) {
            Ok(0) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    for line in [
        "numa: cpu apic 0 node 0",
        "numa: cpu apic 1 node 1",
        "numa: mem 0x0000000000000000 0x0000000002000000 node 0",
        "numa: mem 0x0000000002000000 0x0000000002000000 node 1",
        "numa: slit row 0: 10 31",
        "numa: slit row 1: 31 10",
        "numa: ok",
    ] {
        assert!(seen.contains(line), "no '{line}' in:\n{seen}");
    }
}

#[test]
fn a_running_domain_is_pinned_and_ballooned_through_the_verbs() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let xml = domain_xml("b", "idle", "")
        .replace(
            "<memory unit='MiB'>32</memory>",
            "<memory unit='MiB'>64</memory><currentMemory unit='MiB'>48</currentMemory>",
        )
        .replace(
            "<vcpu>1</vcpu>",
            "<vcpu>2</vcpu><cputune><vcpupin vcpu='1' cpuset='0'/></cputune>",
        )
        .replace(
            "<serial type='pty'/>",
            "<serial type='pty'/><memballoon model='virtio'><stats period='5'/></memballoon>",
        );
    d.define(&xml);
    d.ok("POST", "/domains/b/start", None);
    let pid = d.vmm_processes()[0];

    // The balloon got currentMemory as its target; the idle guest has no
    // driver, so actual stays whole.
    let stats = vireo(&u, &["dommemstat", "b"]).ok().to_string();
    assert!(stats.starts_with("actual 65536\n"), "{stats}");
    assert!(stats.contains("\nrss "), "{stats}");
    vireo(&u, &["setmem", "b", "40M", "--live"]).ok();
    let live = vireo(&u, &["dumpxml", "b"]).ok().to_string();
    assert!(
        live.contains("<currentMemory unit='KiB'>40960</currentMemory>"),
        "{live}"
    );
    let e = vireo(&u, &["setmem", "b", "128M", "--live"]).error();
    assert!(e.contains("outside 4096 KiB to its maximum memory"), "{e}");

    // vCPU 1 runs where vcpupin put it; vcpuinfo says so from the VMM.
    let info = vireo(&u, &["vcpuinfo", "b", "--json"]).ok().to_string();
    let rows: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(rows[1]["affinity"], "0", "{rows}");
    assert_eq!(rows[1]["state"], "running");
    let text = vireo(&u, &["vcpuinfo", "b"]).ok().to_string();
    assert!(text.contains("VCPU:           1\n"), "{text}");

    // Pinned live, it moves; the emulator too.
    vireo(&u, &["vcpupin", "b", "0", "0", "--live"]).ok();
    let rows: serde_json::Value =
        serde_json::from_str(vireo(&u, &["vcpuinfo", "b", "--json"]).ok()).unwrap();
    assert_eq!(rows[0]["affinity"], "0", "{rows}");
    vireo(&u, &["emulatorpin", "b", "0", "--live"]).ok();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Cpus_allowed_list:\t0\n"), "{status}");
    assert!(vireo(&u, &["emulatorpin", "b"])
        .ok()
        .ends_with("       *: 0\n\n"));
    d.ok("POST", "/domains/b/destroy", None);
}

/// `Cpus_allowed_list` of each thread of `pid`, with its name.
fn thread_affinities(pid: u32) -> Vec<(String, String)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?.path();
            let name = std::fs::read_to_string(t.join("comm")).ok()?;
            let status = std::fs::read_to_string(t.join("status")).ok()?;
            let cpus = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
                .trim()
                .to_string();
            Some((name.trim().to_string(), cpus))
        })
        .collect()
}

/// `iothreads`, `iothreadpin` and a disk's `driver iothread=` reach the
/// VMM: the disk's worker and I/O threads run on the I/O thread's CPU, the
/// emulator's on its own.
#[test]
fn a_disk_on_a_pinned_iothread_runs_where_the_definition_says() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        testkit::skip("needs two host CPUs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let image = dir.path().join("io.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let xml = domain_xml(
        "io",
        "virtio",
        "<iothreads>1</iothreads><cputune><emulatorpin cpuset='0'/><iothreadpin iothread='1' cpuset='1'/></cputune>",
    )
    .replace("<memory unit='MiB'>32</memory>", "<memory unit='MiB'>128</memory>")
    .replace("</kernel>", "</kernel><cmdline>blk wait-power-button=60000</cmdline>")
    .replace(
        "<devices>",
        &format!(
            "<devices><disk type='file' device='disk'><driver name='qemu' type='raw' iothread='1'/><source file='{}'/><target dev='vda'/></disk>",
            image.display()
        ),
    );
    d.define(&xml);
    d.ok("POST", "/domains/io/start", None);
    let pid = d.vmm_processes()[0];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let threads = loop {
        let threads = thread_affinities(pid);
        if threads.iter().any(|(n, _)| n == "virtio-blk") {
            break threads;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest never started the disk: {threads:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    for (name, cpus) in &threads {
        if name == "virtio-blk" || name.starts_with("disk-io-") {
            assert_eq!(cpus, "1", "{name}: {threads:?}");
        } else if name == "vireo" || name.starts_with("vireo-api") {
            assert_eq!(cpus, "0", "{name}: {threads:?}");
        }
    }
    d.ok("POST", "/domains/io/destroy", None);
}
