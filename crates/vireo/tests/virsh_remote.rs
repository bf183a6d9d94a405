//! The CLI over SSH: a real `sshd` (Debian's openssh-server) listening on
//! 127.0.0.1 inside a network namespace this test creates, a generated
//! ed25519 key, and `vireo -c vireo+ssh://...` run in the same namespace.
//! The far side runs `vireo proxy`, which joins the SSH channel to a real
//! `vireo daemon`'s socket; domains run as real VMMs.

mod daemon_harness;
mod virsh_cli;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon_harness::{domain_xml, have_kvm, Daemon};
use virsh_cli::{lines_of, run_command, vireo, wait_bounded, wait_line, Run, RUN_LIMIT};

const SSHD: &str = "/usr/sbin/sshd";
/// The port sshd listens on, inside the test's own namespace.
const PORT: u16 = 2222;

/// Install openssh-server when it is missing; the reason when it cannot be.
fn sshd_available() -> Result<(), String> {
    if Path::new(SSHD).exists() {
        return Ok(());
    }
    let mut c = Command::new("apt-get");
    c.args(["install", "-y", "-q", "openssh-server"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    let r = run_command(c, b"", Duration::from_secs(300));
    if Path::new(SSHD).exists() {
        Ok(())
    } else {
        Err(format!(
            "{SSHD} is missing and apt-get install openssh-server failed: {}",
            r.stderr.lines().last().unwrap_or("")
        ))
    }
}

fn sh(cmd: &mut Command) -> Run {
    let what = format!("{cmd:?}");
    let r = run_command(std::mem::replace(cmd, Command::new("true")), b"", RUN_LIMIT);
    assert_eq!(r.code, Some(0), "{what}: {r:?}");
    r
}

/// A network namespace with loopback up and an sshd on 127.0.0.1:PORT.
struct SshHost {
    ns: String,
    sshd: Child,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl SshHost {
    fn start(dir: &Path) -> Result<SshHost, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = format!("vireo-ssh-{}-{n}", std::process::id());
        let r = run_command(
            {
                let mut c = Command::new("ip");
                c.args(["netns", "add", &ns]);
                c
            },
            b"",
            RUN_LIMIT,
        );
        if r.code != Some(0) {
            return Err(format!(
                "cannot create a network namespace: {}",
                r.stderr.trim()
            ));
        }
        sh(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        let key = dir.join("id_ed25519");
        let host_key = dir.join("host_ed25519");
        for k in [&key, &host_key] {
            sh(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(k));
        }
        let authorized = dir.join("authorized_keys");
        std::fs::copy(dir.join("id_ed25519.pub"), &authorized).unwrap();
        let host_pub = std::fs::read_to_string(dir.join("host_ed25519.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        let mut fields = host_pub.split_whitespace();
        let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{PORT} {kind} {blob}\n")).unwrap();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {PORT}\nListenAddress 127.0.0.1\nHostKey {}\nPermitRootLogin prohibit-password\n\
                 AuthorizedKeysFile {}\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nStrictModes no\nPidFile {}\nLogLevel ERROR\n",
                host_key.display(),
                authorized.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory, as its service unit makes.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        let sshd = Command::new("ip")
            .args(["netns", "exec", &ns, SSHD, "-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .map_err(|e| format!("cannot start sshd: {e}"))?;
        let host = SshHost {
            ns,
            sshd,
            key,
            known_hosts,
        };
        // Listening once a TCP connect inside the namespace succeeds.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut c = host.in_ns("bash");
            c.arg("-c")
                .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{PORT}"));
            if run_command(c, b"", RUN_LIMIT).code == Some(0) {
                return Ok(host);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "sshd did not listen within 20 s: {}",
                    std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A TCP listener on 127.0.0.1:`port` in the namespace that accepts
    /// (through its backlog) and never answers.
    fn silent_listener(&self, port: u16) -> std::net::TcpListener {
        let ns_path = format!("/run/netns/{}", self.ns);
        // setns changes only the calling thread's namespace: a thread of
        // its own, and the socket stays in the namespace it was made in.
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&ns_path).expect("open the namespace");
            // SAFETY: setns(2) on an open namespace descriptor; it affects
            // only this short-lived thread.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind")
        })
        .join()
        .expect("listener thread")
    }

    /// `ip netns exec NS program`.
    fn in_ns(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// The URI of `daemon` through this sshd.
    fn uri(&self, socket: &Path) -> String {
        format!(
            "vireo+ssh://root@127.0.0.1:{PORT}/system?socket={}&keyfile={}&known_hosts={}&proxy={}",
            socket.display(),
            self.key.display(),
            self.known_hosts.display(),
            env!("CARGO_BIN_EXE_vireo")
        )
    }

    /// `vireo -c URI ARGS...` inside the namespace.
    fn vireo(&self, uri: &str, args: &[&str]) -> Command {
        let mut c = self.in_ns(env!("CARGO_BIN_EXE_vireo"));
        c.arg("-c")
            .arg(uri)
            .args(args)
            .env_remove("VIREO_DEFAULT_URI");
        c
    }

    fn run(&self, uri: &str, args: &[&str]) -> Run {
        run_command(self.vireo(uri, args), b"", RUN_LIMIT)
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn list_start_console_and_events_over_ssh() {
    if !have_kvm() {
        testkit::skip("no usable /dev/kvm: domains cannot run");
        return;
    }
    if let Err(why) = sshd_available() {
        testkit::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = match SshHost::start(dir.path()) {
        Ok(h) => h,
        Err(why) => {
            testkit::skip(&why);
            return;
        }
    };
    std::fs::create_dir(dir.path().join("daemon")).unwrap();
    let d = Daemon::start(&dir.path().join("daemon"));
    let local = format!("vireo+unix:///system?socket={}", d.socket.display());
    let remote = host.uri(&d.socket);
    let file = dir.path().join("r1.xml");
    std::fs::write(&file, domain_xml("r1", "idle", "")).unwrap();
    vireo(&local, &["define", &file.display().to_string()]).ok();

    // list, start and state over ssh.
    assert_eq!(
        host.run(&remote, &["list", "--all"]).ok(),
        " Id   Name   State\n-----------------------\n -    r1     shut off\n\n"
    );
    let start = Instant::now();
    assert_eq!(
        host.run(&remote, &["start", "r1"]).ok(),
        "Domain 'r1' started\n\n"
    );
    eprintln!("start over ssh: {:?}", start.elapsed());
    assert_eq!(
        vireo(&local, &["domstate", "r1", "--reason"]).ok(),
        "running (booted)\n\n"
    );
    assert_eq!(host.run(&remote, &["uri"]).ok(), format!("{remote}\n\n"));

    // The console: the guest's output comes through ssh; Ctrl-] detaches.
    let mut child = host
        .vireo(&remote, &["console", "r1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let before = wait_line(&lines, Duration::from_secs(30), |l| l == "idle: waiting")
        .unwrap_or_else(|seen| panic!("no guest output over ssh: {seen:?}"));
    assert_eq!(
        before,
        [
            "Connected to domain 'r1'",
            "Escape character is ^] (Ctrl + ])"
        ]
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x1d").unwrap();
    assert_eq!(wait_bounded(&mut child, Duration::from_secs(20)), Some(0));

    // Events: a remote `event --loop` sees a local destroy.
    let mut events = host
        .vireo(&remote, &["event", "--loop", "--domain", "r1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(events.stdout.take().unwrap());
    // Subscribed once a redefinition (an event) shows up.
    let xml = vireo(&local, &["dumpxml", "r1", "--inactive"])
        .ok()
        .to_string();
    let again = dir.path().join("r1-again.xml");
    std::fs::write(&again, xml).unwrap();
    let again = again.display().to_string();
    let mut subscribed = false;
    for _ in 0..100 {
        vireo(&local, &["define", &again]).ok();
        if lines
            .recv_timeout(Duration::from_millis(200))
            .is_ok_and(|l| l == "event 'lifecycle' for domain 'r1': Defined Updated")
        {
            subscribed = true;
            break;
        }
    }
    assert!(subscribed, "no event came over ssh");
    vireo(&local, &["destroy", "r1"]).ok();
    wait_line(&lines, Duration::from_secs(20), |l| {
        l == "event 'lifecycle' for domain 'r1': Stopped Destroyed"
    })
    .unwrap_or_else(|seen| panic!("no Stopped line over ssh: {seen:?}"));
    // Ctrl-C ends the remote loop as the local one: virsh's summary, exit
    // 0, and the ssh session closed behind it.
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs vireo).
    unsafe { libc::kill(events.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(wait_bounded(&mut events, Duration::from_secs(10)), Some(0));
    let rest: Vec<String> = lines.iter().collect();
    assert!(
        rest.iter().any(|l| l == "event loop interrupted"),
        "{rest:?}"
    );

    // The other verbs over ssh print what they print locally.
    vireo(&local, &["start", "r1"]).ok();
    for args in [
        &["dominfo", "r1"][..],
        &["domstate", "r1", "--reason"],
        &["dumpxml", "r1"],
        &["domid", "r1"],
        &["domuuid", "r1"],
        &["domblklist", "r1"],
        &["domiflist", "r1"],
        &["list", "--all", "--json"],
        &["version"],
        &["hostname"],
        &["nodeinfo"],
        &["capabilities"],
    ] {
        // CPU time moves between two calls; everything else is equal.
        let steady = |text: &str| -> String {
            text.lines()
                .filter(|l| !l.starts_with("CPU time:"))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let here = steady(vireo(&local, args).ok());
        let there = host.run(&remote, args);
        assert_eq!(steady(there.ok()), here, "{args:?}");
    }
    let stats = host.run(&remote, &["domstats", "r1"]);
    assert!(stats.ok().starts_with("Domain: 'r1'\n  "), "{stats:?}");
    for (args, said) in [
        (&["suspend", "r1"][..], "Domain 'r1' suspended\n\n"),
        (&["resume", "r1"], "Domain 'r1' resumed\n\n"),
        (
            &["autostart", "r1"],
            "Domain 'r1' marked as autostarted\n\n",
        ),
        (
            &["autostart", "--disable", "r1"],
            "Domain 'r1' unmarked as autostarted\n\n",
        ),
        (&["destroy", "r1"], "Domain 'r1' destroyed\n\n"),
    ] {
        assert_eq!(host.run(&remote, args).ok(), said, "{args:?}");
    }
    // An error from the far daemon is its one line, exit 1.
    assert_eq!(
        host.run(&remote, &["console", "r1"]).error(),
        "domain 'r1' is not running"
    );

    // A socket nobody serves on the far host: the far proxy's cause.
    let missing = dir.path().join("nobody.sock");
    let r = host.run(&host.uri(&missing), &["list"]);
    assert_eq!(
        r.error(),
        format!(
            "cannot connect to the vireo daemon at {} on root@127.0.0.1:{PORT}: No such file or directory",
            missing.display()
        )
    );
    // A wrong key: ssh's own line.
    let other = dir.path().join("other_key");
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other));
    let bad_key = remote.replace(
        &host.key.display().to_string(),
        &other.display().to_string(),
    );
    let e = host.run(&bad_key, &["list"]).error();
    assert!(e.contains("Permission denied"), "{e}");
}

#[test]
fn an_ssh_port_where_nothing_listens_is_one_line() {
    if let Err(why) = sshd_available() {
        testkit::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = match SshHost::start(dir.path()) {
        Ok(h) => h,
        Err(why) => {
            testkit::skip(&why);
            return;
        }
    };
    // Port 2223 in the namespace: refused at once.
    let uri = host
        .uri(&dir.path().join("s"))
        .replace(&format!(":{PORT}/"), ":2223/");
    let r = host.run(&uri, &["list"]);
    assert!(r.took < Duration::from_secs(15), "{:?}", r.took);
    let e = r.error();
    assert!(
        e.starts_with(&format!(
            "cannot connect to the vireo daemon at {} on root@127.0.0.1:2223: ssh: connect to host 127.0.0.1 port 2223: Connection refused",
            dir.path().join("s").display()
        )),
        "{e}"
    );
    // A host that accepts and never speaks: the wait is bounded by ssh's
    // ConnectTimeout (10 s), then one line.
    let _silent = host.silent_listener(2224);
    let uri = uri.replace(":2223/", ":2224/");
    let r = host.run(&uri, &["list"]);
    assert!(r.took < Duration::from_secs(20), "{:?}", r.took);
    let e = r.error();
    assert!(
        e.ends_with("Connection to 127.0.0.1 port 2224 timed out"),
        "{e}"
    );
}

#[test]
fn volumes_upload_and_download_over_ssh() {
    if let Err(why) = sshd_available() {
        testkit::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let host = match SshHost::start(dir.path()) {
        Ok(h) => h,
        Err(why) => {
            testkit::skip(&why);
            return;
        }
    };
    std::fs::create_dir(dir.path().join("daemon")).unwrap();
    let d = Daemon::start(&dir.path().join("daemon"));
    let local = format!("vireo+unix:///system?socket={}", d.socket.display());
    let remote = host.uri(&d.socket);
    let images = dir.path().join("images");
    let target = images.display().to_string();
    vireo(&local, &["pool-define-as", "p", "dir", "--target", &target]).ok();
    vireo(&local, &["pool-build", "p"]).ok();
    vireo(&local, &["pool-start", "p"]).ok();
    vireo(&local, &["vol-create-as", "p", "v", "24M"]).ok();

    // 24 MiB: data with a hole in the middle, through ssh both ways.
    let data = dir.path().join("data.bin");
    let mut bytes: Vec<u8> = (0..24u32 << 20).map(|i| (i % 253) as u8).collect();
    bytes[8 << 20..16 << 20].fill(0);
    std::fs::write(&data, &bytes).unwrap();
    let up = host.run(
        &remote,
        &[
            "vol-upload",
            "v",
            &data.display().to_string(),
            "--pool",
            "p",
        ],
    );
    assert_eq!(up.ok(), "\n");
    assert!(std::fs::read(images.join("v")).unwrap() == bytes);
    let back = dir.path().join("back.bin");
    host.run(
        &remote,
        &[
            "vol-download",
            "v",
            &back.display().to_string(),
            "--pool",
            "p",
        ],
    )
    .ok();
    assert!(std::fs::read(&back).unwrap() == bytes);

    // A transport that fails is one line, and no data went anywhere.
    let dead = remote.replace(&format!(":{PORT}/"), ":2223/");
    let e = host
        .run(
            &dead,
            &[
                "vol-upload",
                "v",
                &data.display().to_string(),
                "--pool",
                "p",
            ],
        )
        .error();
    assert!(e.contains("Connection refused"), "{e}");
}
