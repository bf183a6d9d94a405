//! The virsh-like verbs end to end: the `vireo` CLI against a real
//! `vireo daemon` process on its socket, domains running as real VMMs on
//! /dev/kvm with the project's test guests. Human output is compared with
//! the layout virsh 9 prints (tables, dominfo, messages, blank lines).

mod daemon_harness;
mod virsh_cli;

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use daemon_harness::{domain_xml, have_kvm, Daemon};
use serde_json::Value;
use virsh_cli::{lines_of, run_command, vireo, vireo_command, wait_bounded, wait_line, RUN_LIMIT};

fn uri(d: &Daemon) -> String {
    format!("vireo+unix:///system?socket={}", d.socket.display())
}

fn write_xml(dir: &std::path::Path, name: &str, xml: &str) -> String {
    let path = dir.join(format!("{name}.xml"));
    std::fs::write(&path, xml).unwrap();
    path.display().to_string()
}

fn kvm_or_skip() -> bool {
    if have_kvm() {
        return true;
    }
    testkit::skip("no usable /dev/kvm: domains cannot run");
    false
}

#[test]
fn no_daemon_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let r = vireo(
        &format!("vireo+unix:///system?socket={}", socket.display()),
        &["list", "--all"],
    );
    assert_eq!(
        r.error(),
        format!(
            "cannot connect to the vireo daemon at {}: No such file or directory",
            socket.display()
        )
    );
    // virsh's closing blank line goes to stdout even on failure.
    assert_eq!(r.stdout, "\n");
    // --json output carries no blank line.
    let r = vireo(
        &format!("vireo+unix:///system?socket={}", socket.display()),
        &["list", "--json"],
    );
    assert_eq!(r.stdout, "");
    assert_eq!(r.code, Some(1));

    // VIREO_DEFAULT_URI names the daemon when -c does not.
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vireo"));
    c.args(["domstate", "x"]).env(
        "VIREO_DEFAULT_URI",
        format!("vireo:///system?socket={}", socket.display()),
    );
    let r = run_command(c, b"", RUN_LIMIT);
    assert!(r.error().starts_with(&format!(
        "cannot connect to the vireo daemon at {}",
        socket.display()
    )));

    // A bad URI is one line too.
    let r = vireo("vireo://elsewhere/system", &["list"]);
    assert_eq!(
        r.error(),
        "invalid URI 'vireo://elsewhere/system': a host needs the ssh transport: vireo+ssh://[user@]HOST[:PORT]/system"
    );
    // A timeout too large for the clock is refused in one line, not a
    // panic on the deadline's overflow.
    let mut c = vireo_command(
        &format!("vireo:///system?socket={}", socket.display()),
        &["list"],
    );
    c.env("VIREO_TIMEOUT", "18446744073709551615");
    let r = run_command(c, b"", RUN_LIMIT);
    assert_eq!(
        r.error(),
        "VIREO_TIMEOUT='18446744073709551615': expected a whole number of seconds, 1 to 31536000"
    );
    let r = vireo(
        &format!("vireo:///system?socket={}", socket.display()),
        &["event", "--timeout", "18446744073709551615"],
    );
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("--timeout"), "{r:?}");
    assert!(!r.stderr.contains("panicked"), "{r:?}");

    // A definition file is read only up to what the daemon accepts:
    // /dev/zero is refused at once, not read until memory runs out.
    for verb in ["define", "create"] {
        let r = vireo(
            &format!("vireo:///system?socket={}", socket.display()),
            &[verb, "/dev/zero"],
        );
        assert_eq!(
            r.error(),
            "Failed to open file '/dev/zero': over 1048576 bytes, the largest definition the daemon accepts"
        );
        assert!(r.took < Duration::from_secs(10), "{r:?}");
    }

    // `uri` says which URI is in use without needing the daemon.
    assert_eq!(
        vireo("vireo+unix:///system?socket=/x", &["uri"]).ok(),
        "vireo+unix:///system?socket=/x\n\n"
    );
}

#[test]
fn a_daemon_that_does_not_answer_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    // Connections queue in the backlog; nobody ever answers.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut c = vireo_command(
        &format!("vireo+unix:///system?socket={}", socket.display()),
        &["list"],
    );
    c.env("VIREO_TIMEOUT", "2");
    let r = run_command(c, b"", RUN_LIMIT);
    assert_eq!(
        r.error(),
        format!(
            "the vireo daemon at {} did not answer within 2 s",
            socket.display()
        )
    );
    assert!(r.took < Duration::from_secs(5), "{:?}", r.took);
}

#[test]
fn lifecycle_through_every_verb() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let v = |args: &[&str]| vireo(&u, args);

    assert_eq!(
        v(&["list", "--all"]).ok(),
        " Id   Name   State\n--------------------\n\n"
    );
    // `machine=` is accepted with a warning line on stderr.
    let xml = domain_xml("web-1", "idle", "")
        .replace("<type arch='x86_64'>", "<type arch='x86_64' machine='pc'>");
    let file = write_xml(dir.path(), "web-1", &xml);
    let r = v(&["define", &file]);
    assert_eq!(r.ok(), format!("Domain 'web-1' defined from {file}\n\n"));
    assert!(
        r.stderr
            .lines()
            .any(|l| l.starts_with("warning: ") && l.contains("machine")),
        "{r:?}"
    );
    assert_eq!(
        v(&["list", "--all"]).ok(),
        " Id   Name    State\n------------------------\n -    web-1   shut off\n\n"
    );
    assert_eq!(
        v(&["list"]).ok(),
        " Id   Name   State\n--------------------\n\n"
    );
    assert_eq!(v(&["list", "--inactive", "--name"]).ok(), "web-1\n\n");
    let uuid = v(&["domuuid", "web-1"]).ok().trim().to_string();
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(v(&["domname", &uuid]).ok(), "web-1\n\n");
    assert_eq!(v(&["domid", "web-1"]).ok(), "-\n\n");
    assert_eq!(
        v(&["domstate", "web-1", "--reason"]).ok(),
        "shut off (unknown)\n\n"
    );
    let info = v(&["dominfo", "web-1"]).ok().to_string();
    assert_eq!(
        info,
        format!(
            "Id:             -\nName:           web-1\nUUID:           {uuid}\nOS Type:        hvm\n\
             State:          shut off\nCPU(s):         1\nMax memory:     32768 KiB\n\
             Used memory:    32768 KiB\nPersistent:     yes\nAutostart:      disable\n\
             Managed save:   no\n\n"
        )
    );
    let xml_out = v(&["dumpxml", "web-1"]).ok().to_string();
    assert!(xml_out.starts_with("<domain"), "{xml_out}");
    assert!(xml_out.contains(&format!("<uuid>{uuid}</uuid>")));

    // start, and the table with the id.
    assert_eq!(v(&["start", "web-1"]).ok(), "Domain 'web-1' started\n\n");
    assert_eq!(
        v(&["list"]).ok(),
        " Id   Name    State\n-----------------------\n 1    web-1   running\n\n"
    );
    assert_eq!(v(&["domid", "web-1"]).ok(), "1\n\n");
    assert_eq!(
        v(&["domstate", "1", "--reason"]).ok(),
        "running (booted)\n\n"
    );
    assert_eq!(
        v(&["list", "--uuid", "--name"]).ok(),
        format!("{uuid} web-1\n\n")
    );
    let info = v(&["dominfo", "1"]).ok().to_string();
    assert!(
        info.starts_with("Id:             1\nName:           web-1\n"),
        "{info}"
    );
    assert!(info.contains("\nState:          running\n"), "{info}");

    // --json is the API's JSON.
    let list: Value = serde_json::from_str(v(&["list", "--all", "--json"]).ok()).unwrap();
    assert_eq!(list[0]["name"], "web-1");
    assert_eq!(list[0]["state"], "running");
    assert_eq!(list[0]["id"], 1);
    let info: Value = serde_json::from_str(v(&["dominfo", "web-1", "--json"]).ok()).unwrap();
    assert_eq!(info["uuid"], uuid.as_str());
    assert_eq!(info["vcpus"], 1);
    assert!(info["pid"].as_u64().is_some(), "{info}");
    let st: Value = serde_json::from_str(v(&["domstate", "web-1", "--json"]).ok()).unwrap();
    assert_eq!(
        (st["state"].as_str(), st["reason"].as_str()),
        (Some("running"), Some("booted"))
    );
    let stats = v(&["domstats", "web-1"]).ok().to_string();
    assert!(stats.starts_with("Domain: 'web-1'\n  "), "{stats}");
    assert!(stats.contains("\n  state.state=1\n"), "{stats}");
    let stats: Value = serde_json::from_str(v(&["domstats", "--json"]).ok()).unwrap();
    assert_eq!(stats[0]["name"], "web-1");
    let x: Value = serde_json::from_str(v(&["dumpxml", "web-1", "--json"]).ok()).unwrap();
    assert!(x["xml"].as_str().unwrap().contains("<name>web-1</name>"));

    // suspend / resume.
    assert_eq!(
        v(&["suspend", "web-1"]).ok(),
        "Domain 'web-1' suspended\n\n"
    );
    assert_eq!(
        v(&["domstate", "web-1", "--reason"]).ok(),
        "paused (user)\n\n"
    );
    assert_eq!(v(&["list", "--state-paused", "--name"]).ok(), "web-1\n\n");
    assert_eq!(v(&["resume", "web-1"]).ok(), "Domain 'web-1' resumed\n\n");
    assert_eq!(
        v(&["domstate", "web-1", "--reason"]).ok(),
        "running (unpaused)\n\n"
    );

    // reset, reboot, shutdown (the idle guest ignores the power button).
    assert_eq!(v(&["reset", "web-1"]).ok(), "Domain 'web-1' was reset\n\n");
    assert_eq!(
        v(&["reboot", "web-1"]).ok(),
        "Domain 'web-1' is being rebooted\n\n"
    );
    assert_eq!(
        v(&["shutdown", "web-1"]).ok(),
        "Domain 'web-1' is being shutdown\n\n"
    );
    assert_eq!(v(&["domstate", "web-1"]).ok(), "in shutdown\n\n");

    // autostart.
    assert_eq!(
        v(&["autostart", "web-1"]).ok(),
        "Domain 'web-1' marked as autostarted\n\n"
    );
    assert_eq!(
        v(&["list", "--all", "--autostart", "--name"]).ok(),
        "web-1\n\n"
    );
    assert!(v(&["dominfo", "web-1"])
        .ok()
        .contains("\nAutostart:      enable\n"));
    assert_eq!(
        v(&["autostart", "--disable", "web-1"]).ok(),
        "Domain 'web-1' unmarked as autostarted\n\n"
    );
    assert_eq!(v(&["list", "--all", "--autostart", "--name"]).ok(), "\n");

    // destroy, and destroy --graceful after another start.
    assert_eq!(
        v(&["destroy", "web-1"]).ok(),
        "Domain 'web-1' destroyed\n\n"
    );
    assert_eq!(
        v(&["domstate", "web-1", "--reason"]).ok(),
        "shut off (destroyed)\n\n"
    );
    assert_eq!(
        v(&["start", "--paused", &uuid]).ok(),
        "Domain 'web-1' started\n\n"
    );
    assert_eq!(
        v(&["domstate", "web-1", "--reason"]).ok(),
        "paused (user)\n\n"
    );
    assert_eq!(
        v(&["destroy", "--graceful", "web-1"]).ok(),
        "Domain 'web-1' destroyed\n\n"
    );
    assert_eq!(v(&["list", "--state-shutoff", "--name"]).ok(), "web-1\n\n");

    // create: transient, gone once destroyed; undefine of a running
    // domain leaves it running, transient.
    let file2 = write_xml(dir.path(), "tmp-1", &domain_xml("tmp-1", "idle", ""));
    assert_eq!(
        v(&["create", &file2, "--paused"]).ok(),
        format!("Domain 'tmp-1' created from {file2}\n\n")
    );
    assert!(v(&["dominfo", "tmp-1"])
        .ok()
        .contains("\nPersistent:     no\n"));
    assert_eq!(v(&["list", "--transient", "--name"]).ok(), "tmp-1\n\n");
    assert_eq!(
        v(&["destroy", "tmp-1"]).ok(),
        "Domain 'tmp-1' destroyed\n\n"
    );
    assert_eq!(v(&["list", "--all", "--name"]).ok(), "web-1\n\n");

    assert_eq!(v(&["start", "web-1"]).ok(), "Domain 'web-1' started\n\n");
    assert_eq!(
        v(&["undefine", "web-1"]).ok(),
        "Domain 'web-1' has been undefined\n\n"
    );
    assert!(v(&["dominfo", "web-1"])
        .ok()
        .contains("\nPersistent:     no\n"));
    assert_eq!(
        v(&["destroy", "web-1"]).ok(),
        "Domain 'web-1' destroyed\n\n"
    );
    assert_eq!(
        v(&["list", "--all"]).ok(),
        " Id   Name   State\n--------------------\n\n"
    );
}

#[test]
fn host_verbs() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let version = vireo(&u, &["version", "--daemon"]).ok().to_string();
    let ours = env!("CARGO_PKG_VERSION");
    assert!(
        version.starts_with(&format!(
            "Compiled against library: vireo {ours}\nUsing library: vireo {ours}\nUsing API: vireo {ours}\nRunning hypervisor: vireo "
        )),
        "{version}"
    );
    assert!(version.ends_with(&format!("Running against daemon: {ours}\n\n")));
    let host = vireo(&u, &["hostname"]).ok().to_string();
    let expected = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(host, format!("{}\n\n", expected.trim()));
    let node = vireo(&u, &["nodeinfo"]).ok().to_string();
    let labels: Vec<&str> = node.lines().map(|l| l.get(..21).unwrap_or(l)).collect();
    assert_eq!(
        labels,
        [
            "CPU model:           ",
            "CPU(s):              ",
            "CPU frequency:       ",
            "CPU socket(s):       ",
            "Core(s) per socket:  ",
            "Thread(s) per core:  ",
            "NUMA cell(s):        ",
            "Memory size:         ",
            ""
        ]
    );
    let json: Value = serde_json::from_str(vireo(&u, &["nodeinfo", "--json"]).ok()).unwrap();
    assert!(node.contains(&format!("CPU(s):              {}\n", json["cpus"])));
    assert!(vireo(&u, &["capabilities"]).ok().contains("<capabilities>"));
}

#[test]
fn errors_are_one_line_and_exit_1() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let v = |args: &[&str]| vireo(&u, args);

    let e = v(&["dominfo", "nosuch"]).error();
    assert!(e.contains("nosuch"), "{e}");
    assert!(v(&["start", "nosuch"]).error().contains("nosuch"));
    let e = v(&["define", "/nonexistent/x.xml"]).error();
    assert_eq!(
        e,
        "Failed to open file '/nonexistent/x.xml': No such file or directory"
    );
    let bad = write_xml(dir.path(), "bad", "<domain><name>x</name");
    let e = v(&["define", &bad]).error();
    assert!(e.contains("line 1"), "{e}");

    let file = write_xml(dir.path(), "e1", &domain_xml("e1", "idle", ""));
    v(&["define", &file]).ok();
    let e = v(&["console", "e1"]).error();
    assert_eq!(e, "domain 'e1' is not running");
    v(&["start", "e1"]).ok();
    assert_eq!(
        v(&["start", "e1"]).error(),
        "domain 'e1' is already running"
    );
    // The read-only socket refuses writes with the daemon's line.
    let ro = format!("vireo+unix:///system?socket={}", d.ro_socket.display());
    assert_eq!(
        vireo(&ro, &["destroy", "e1"]).error(),
        "operation forbidden: read only access"
    );
    assert!(vireo(&ro, &["list"]).ok().contains(" e1 "));
    v(&["destroy", "e1"]).ok();
    // A usage error is clap's one line and exit 2.
    let r = v(&["start"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
}

#[test]
fn edit_defines_what_the_editor_saved_and_nothing_invalid() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let file = write_xml(dir.path(), "ed", &domain_xml("ed", "idle", ""));
    vireo(&u, &["define", &file]).ok();
    let edit = |editor: &str| {
        let mut c = vireo_command(&u, &["edit", "ed"]);
        c.env("EDITOR", editor).env_remove("VISUAL");
        run_command(c, b"", RUN_LIMIT)
    };
    assert_eq!(
        edit("true").ok(),
        "Domain 'ed' XML configuration not changed.\n\n"
    );
    assert_eq!(
        edit("sed -i s/32768/65536/").ok(),
        "Domain 'ed' XML configuration edited.\n\n"
    );
    assert!(vireo(&u, &["dominfo", "ed"])
        .ok()
        .contains("\nMax memory:     65536 KiB\n"));
    // An edit the daemon refuses leaves the definition as it was.
    let before = vireo(&u, &["dumpxml", "ed", "--inactive"]).ok().to_string();
    let e = edit("sed -i s/hvm/xen/").error();
    assert!(e.ends_with("; domain 'ed' is unchanged"), "{e}");
    assert_eq!(vireo(&u, &["dumpxml", "ed", "--inactive"]).ok(), before);
    let e = edit("false").error();
    assert!(e.starts_with("the editor 'false' failed"), "{e}");
}

#[test]
fn device_verbs() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let v = |args: &[&str]| vireo(&u, args);
    let file = write_xml(dir.path(), "dev", &domain_xml("dev", "idle", ""));
    v(&["define", &file]).ok();
    let image = dir.path().join("disk.raw");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let image = image.display().to_string();

    // On a shut off domain the default scope is the definition.
    assert!(v(&["attach-disk", "dev", &image, "vdb"])
        .error()
        .contains("--subdriver"));
    assert_eq!(
        v(&["attach-disk", "dev", &image, "vdb", "--subdriver", "raw"]).ok(),
        "Disk attached successfully\n\n"
    );
    let t = v(&["domblklist", "dev"]).ok().to_string();
    let dashes = "-".repeat(12 + image.len());
    assert_eq!(
        t,
        format!(" Target   Source\n{dashes}\n vdb      {image}\n\n")
    );
    let rows: Value = serde_json::from_str(v(&["domblklist", "dev", "--json"]).ok()).unwrap();
    assert_eq!(rows[0]["target"], "vdb");
    assert!(v(&["domblklist", "dev", "--details"])
        .ok()
        .contains(&format!(" file   disk     vdb      {image}\n")));
    assert_eq!(
        v(&["detach-disk", "dev", &image]).ok(),
        "Disk detached successfully\n\n"
    );
    assert_eq!(
        v(&["detach-disk", "dev", "vdb"]).error(),
        "No disk found whose source path or target is vdb"
    );

    // Live, on the running domain.
    v(&["start", "dev"]).ok();
    assert_eq!(
        v(&[
            "attach-disk",
            "dev",
            &image,
            "vdc",
            "--subdriver",
            "raw",
            "--live"
        ])
        .ok(),
        "Disk attached successfully\n\n"
    );
    assert!(v(&["domblklist", "dev"]).ok().contains(" vdc "));
    assert!(!v(&["dumpxml", "dev", "--inactive"]).ok().contains("vdc"));
    assert_eq!(
        v(&["detach-disk", "dev", "vdc", "--live"]).ok(),
        "Disk detached successfully\n\n"
    );
    v(&["destroy", "dev"]).ok();

    // Interfaces, in the definition.
    assert_eq!(
        v(&[
            "attach-interface",
            "dev",
            "--type",
            "ethernet",
            "--target",
            "vtap9",
            "--mac",
            "52:54:00:aa:bb:01",
            "--config"
        ])
        .ok(),
        "Interface attached successfully\n\n"
    );
    assert_eq!(
        v(&["domiflist", "dev"]).ok(),
        " Interface   Type       Source   Model    MAC\n\
         -------------------------------------------------------------\n \
         vtap9       ethernet   -        virtio   52:54:00:aa:bb:01\n\n"
    );
    assert_eq!(
        v(&["detach-interface", "dev", "--type", "bridge"]).error(),
        "No interface found whose type is bridge"
    );
    assert_eq!(
        v(&["detach-interface", "dev", "--type", "ethernet", "--config"]).ok(),
        "Interface detached successfully\n\n"
    );
    assert_eq!(v(&["domiflist", "dev", "--json"]).ok(), "[]\n");
}

#[test]
fn event_loop_prints_lifecycle_lines() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let file = write_xml(dir.path(), "ev", &domain_xml("ev", "idle", ""));
    vireo(&u, &["define", &file]).ok();
    // Defined again from its own XML (same UUID): an update, and an event.
    let xml = vireo(&u, &["dumpxml", "ev", "--inactive"]).ok().to_string();
    let file = write_xml(dir.path(), "ev-again", &xml);

    let mut human = vireo_command(
        &u,
        &["event", "--loop", "--domain", "ev", "--timeout", "30"],
    );
    let mut human = human
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut json = vireo_command(&u, &["event", "--loop", "--json"]);
    let mut json = json.stdout(Stdio::piped()).spawn().unwrap();
    let human_lines = lines_of(human.stdout.take().unwrap());
    let json_lines = lines_of(json.stdout.take().unwrap());

    // Nothing says when a stream is subscribed: redefine (an event) until
    // both have printed one.
    let mut subscribed = (false, false);
    for _ in 0..200 {
        vireo(&u, &["define", &file]).ok();
        subscribed.0 |= human_lines
            .recv_timeout(Duration::from_millis(50))
            .is_ok_and(|l| l == "event 'lifecycle' for domain 'ev': Defined Updated");
        subscribed.1 |= json_lines.recv_timeout(Duration::from_millis(50)).is_ok();
        if subscribed == (true, true) {
            break;
        }
    }
    assert_eq!(subscribed, (true, true));

    vireo(&u, &["start", "ev"]).ok();
    vireo(&u, &["destroy", "ev"]).ok();
    let lifecycle = |l: &str| l.contains("Started") || l.contains("Stopped");
    let seen = wait_line(&human_lines, Duration::from_secs(20), |l| {
        l == "event 'lifecycle' for domain 'ev': Stopped Destroyed"
    })
    .unwrap_or_else(|seen| panic!("no Stopped line: {seen:?}"));
    let seen: Vec<&String> = seen.iter().filter(|l| lifecycle(l)).collect();
    assert_eq!(seen, ["event 'lifecycle' for domain 'ev': Started Booted"]);
    wait_line(&json_lines, Duration::from_secs(20), |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|e| {
            e["event"] == "stopped" && e["detail"] == "Destroyed" && e["domain"] == "ev"
        })
    })
    .unwrap_or_else(|seen| panic!("no stopped JSON line: {seen:?}"));

    let _ = json.kill();
    let _ = json.wait();
    // Ctrl-C ends the loop with virsh's summary, exit 0.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(human.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(wait_bounded(&mut human, Duration::from_secs(10)), Some(0));
    let rest: Vec<String> = human_lines.iter().collect();
    let n = rest.len();
    assert!(n >= 3, "{rest:?}");
    assert_eq!(rest[n - 3], "event loop interrupted", "{rest:?}");
    assert!(rest[n - 2].starts_with("events received: "), "{rest:?}");
    assert_eq!(rest[n - 1], "", "{rest:?}");

    // --timeout ends the loop with virsh's two lines.
    let r = vireo(&u, &["event", "--loop", "--timeout", "1"]);
    assert_eq!(r.ok(), "event loop timed out\nevents received: 0\n\n");
}

#[test]
fn console_round_trip() {
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let u = uri(&d);
    let file = write_xml(dir.path(), "con", &domain_xml("con", "idle", ""));
    vireo(&u, &["define", &file]).ok();
    vireo(&u, &["start", "con"]).ok();

    let mut cmd = vireo_command(&u, &["console", "con"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let before = wait_line(&lines, Duration::from_secs(20), |l| l == "idle: waiting")
        .unwrap_or_else(|seen| panic!("no guest output: {seen:?}"));
    assert_eq!(
        before,
        [
            "Connected to domain 'con'",
            "Escape character is ^] (Ctrl + ])"
        ]
    );
    // Keys reach the guest's serial (it ignores them), then Ctrl-] detaches.
    stdin.write_all(b"hello guest\r").unwrap();
    stdin.write_all(b"\x1d").unwrap();
    assert_eq!(wait_bounded(&mut child, Duration::from_secs(10)), Some(0));
    // Detached, the domain still runs and the console can be taken again.
    assert_eq!(vireo(&u, &["domstate", "con"]).ok(), "running\n\n");
    let r = run_command(vireo_command(&u, &["console", "con"]), b"\x1d", RUN_LIMIT);
    assert!(r.ok().starts_with("Connected to domain 'con'\n"), "{r:?}");

    // start --console attaches once started; the console ends (exit 0)
    // when the domain is destroyed under it.
    vireo(&u, &["destroy", "con"]).ok();
    let mut cmd = vireo_command(&u, &["start", "con", "--console"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let before = wait_line(&lines, Duration::from_secs(20), |l| l == "idle: waiting")
        .unwrap_or_else(|seen| panic!("no guest output: {seen:?}"));
    assert_eq!(
        before,
        [
            "Domain 'con' started",
            "Connected to domain 'con'",
            "Escape character is ^] (Ctrl + ])"
        ]
    );
    vireo(&u, &["destroy", "con"]).ok();
    assert_eq!(wait_bounded(&mut child, Duration::from_secs(20)), Some(0));

    // create --console: a transient domain, and its console at once.
    let file = write_xml(dir.path(), "tcon", &domain_xml("tcon", "idle", ""));
    let mut cmd = vireo_command(&u, &["create", &file, "--console"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let before = wait_line(&lines, Duration::from_secs(20), |l| l == "idle: waiting")
        .unwrap_or_else(|seen| panic!("no guest output: {seen:?}"));
    assert_eq!(
        before,
        [
            format!("Domain 'tcon' created from {file}"),
            "Connected to domain 'tcon'".to_string(),
            "Escape character is ^] (Ctrl + ])".to_string()
        ]
    );
    child.stdin.take().unwrap().write_all(b"\x1d").unwrap();
    assert_eq!(wait_bounded(&mut child, Duration::from_secs(10)), Some(0));
    assert_eq!(vireo(&u, &["domstate", "tcon"]).ok(), "running\n\n");
    vireo(&u, &["destroy", "tcon"]).ok();
}

#[test]
fn proxy_joins_stdin_and_stdout_to_the_daemon() {
    use std::io::Read as _;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vireo"))
        .args(["proxy", "--socket"])
        .arg(&d.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Two requests on one connection (keep-alive through the proxy).
    for _ in 0..2 {
        stdin
            .write_all(b"GET /version HTTP/1.1\r\nHost: vireo\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\"kernel\"") {
            let n = stdout.read(&mut buf).unwrap();
            assert_ne!(n, 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    }
    // The client closing its side ends the proxy, exit 0.
    drop(stdin);
    assert_eq!(wait_bounded(&mut child, Duration::from_secs(10)), Some(0));

    // No daemon: one line, exit 1.
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vireo"));
    c.args(["proxy", "--socket"])
        .arg(dir.path().join("none.sock"));
    let r = run_command(c, b"", RUN_LIMIT);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr,
        format!(
            "vireo: cannot connect to the vireo daemon at {}: No such file or directory\n",
            dir.path().join("none.sock").display()
        )
    );
    assert_eq!(r.stdout, "");
}
