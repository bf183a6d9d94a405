//! A real iSCSI target for tests: `tgtd` in a network namespace the
//! fixture makes (address 169.254.77.1/32 on its loopback), with
//! file-backed LUNs made through `tgtadm`. Nothing is added to the root
//! network namespace; everything is torn down on drop.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The target's address inside its namespace.
pub const ADDRESS: &str = "169.254.77.1";

/// One LUN to create (LUN numbers start at 1; LUN 0 is tgtd's controller).
#[derive(Debug, Clone, Copy)]
pub struct LunSpec {
    /// Size in bytes.
    pub size: u64,
    /// Thin provisioning on: the LUN takes UNMAP.
    pub thin: bool,
}

/// A running tgtd in its own network namespace.
#[derive(Debug)]
pub struct TestTarget {
    netns: String,
    control: u16,
    tgtd: Option<Child>,
    dir: PathBuf,
    iqn: String,
    luns: usize,
    specs: Vec<LunSpec>,
    chap: Option<(String, String)>,
}

static NEXT: AtomicU16 = AtomicU16::new(0);

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl TestTarget {
    /// Start tgtd in a new namespace named after `tag`, with a target
    /// holding `luns` as LUNs 1.. (their files in `dir`); with `chap`,
    /// the target admits only that user and secret.
    pub fn start(
        tag: &str,
        dir: &Path,
        luns: &[LunSpec],
        chap: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let netns = format!("visc{tag}{pid}-{n}");
        // tgtd's control socket is a path, shared by every namespace: each
        // fixture gets its own number.
        // tgtd takes numbers up to 32767.
        let control = u16::try_from(1_000 + (pid % 3_800) * 8).unwrap_or(1_000) + n % 8;
        let _ = run(Command::new("ip").args(["netns", "del", &netns]));
        run(Command::new("ip").args(["netns", "add", &netns]))?;
        let mut me = Self {
            netns,
            control,
            tgtd: None,
            dir: dir.to_path_buf(),
            iqn: format!("iqn.2026-01.org.vireo.test:{tag}"),
            luns: luns.len(),
            specs: luns.to_vec(),
            chap: chap.map(|(u, s)| (u.to_string(), s.to_string())),
        };
        me.ip(&["link", "set", "lo", "up"])?;
        me.ip(&["addr", "add", &format!("{ADDRESS}/32"), "dev", "lo"])?;
        for (i, spec) in luns.iter().enumerate() {
            let file = me.lun_file(i + 1);
            File::create(&file)
                .and_then(|f| f.set_len(spec.size))
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        me.launch()?;
        Ok(me)
    }

    /// Run tgtd and configure the target, its LUNs (on the existing
    /// files) and its account.
    fn launch(&mut self) -> Result<(), String> {
        let me = self;
        let control = me.control;
        me.remove_control_socket();
        let child = Command::new("ip")
            .args(["netns", "exec", &me.netns, "tgtd", "-f", "-C"])
            .arg(control.to_string())
            .args(["--iscsi", &format!("portal={ADDRESS}:3260")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("tgtd: {e}"))?;
        me.tgtd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while me.adm(&["--op", "show", "--mode", "sys"]).is_err() {
            let exited = me.tgtd.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!("tgtd exited at start ({status})"));
            }
            if Instant::now() > deadline {
                return Err("tgtd did not come up within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let iqn = me.iqn.clone();
        me.adm(&[
            "--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", "1", "-T", &iqn,
        ])?;
        for (i, spec) in me.specs.clone().iter().enumerate() {
            let lun = (i + 1).to_string();
            let file = me.lun_file(i + 1);
            let path = file.to_string_lossy().into_owned();
            me.adm(&[
                "--lld",
                "iscsi",
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                &lun,
                "-b",
                &path,
            ])?;
            if spec.thin {
                me.adm(&[
                    "--lld",
                    "iscsi",
                    "--op",
                    "update",
                    "--mode",
                    "logicalunit",
                    "--tid",
                    "1",
                    "--lun",
                    &lun,
                    "--params",
                    "thin_provisioning=1",
                ])?;
            }
        }
        if let Some((user, secret)) = me.chap.clone() {
            let (user, secret) = (user.as_str(), secret.as_str());
            me.adm(&[
                "--lld",
                "iscsi",
                "--op",
                "new",
                "--mode",
                "account",
                "--user",
                user,
                "--password",
                secret,
            ])?;
            me.adm(&[
                "--lld", "iscsi", "--op", "bind", "--mode", "account", "--tid", "1", "--user", user,
            ])?;
        }
        me.adm(&[
            "--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ])?;
        Ok(())
    }

    /// Kill tgtd and start it again on the same LUN files: every
    /// connection to it is lost, and it takes new ones.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.launch()
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ip").args(["-n", &self.netns]).args(args))
    }

    fn adm(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("tgtadm")
            .args(["-C", &self.control.to_string()])
            .args(args))
    }

    fn remove_control_socket(&self) {
        for suffix in ["", ".lock"] {
            let _ = std::fs::remove_file(format!("/var/run/tgtd/socket.{}{suffix}", self.control));
        }
    }

    /// The network namespace's name (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The target's IQN.
    pub fn iqn(&self) -> &str {
        &self.iqn
    }

    /// The portal, `ADDRESS:3260`.
    pub fn portal(&self) -> String {
        format!("{ADDRESS}:3260")
    }

    /// `iscsi://ADDRESS/IQN/LUN`.
    pub fn url(&self, lun: u16) -> String {
        format!("iscsi://{ADDRESS}/{}/{lun}", self.iqn)
    }

    /// The file behind LUN `lun` (1-based).
    pub fn lun_file(&self, lun: usize) -> PathBuf {
        self.dir.join(format!("lun{lun}.img"))
    }

    /// Number of file-backed LUNs.
    pub fn lun_count(&self) -> usize {
        self.luns
    }

    /// Move the calling thread into the target's namespace until the
    /// guard drops (then back to where it was).
    pub fn enter(&self) -> Result<NetnsGuard, String> {
        let here = File::open("/proc/thread-self/ns/net").map_err(|e| format!("own netns: {e}"))?;
        let there = File::open(format!("/run/netns/{}", self.netns))
            .map_err(|e| format!("netns {}: {e}", self.netns))?;
        setns(&there)?;
        Ok(NetnsGuard { back: here })
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(child) = &self.tgtd {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: signalling our own child, which we have not reaped.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }

    /// Freeze tgtd (SIGSTOP): it keeps its connections but answers nothing.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Kill tgtd at once (SIGKILL): its connections are reset.
    pub fn kill(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.tgtd.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        self.kill();
        self.remove_control_socket();
        let _ = run(Command::new("ip").args(["netns", "del", &self.netns]));
        for lun in 1..=self.luns {
            let _ = std::fs::remove_file(self.lun_file(lun));
        }
    }
}

/// The calling thread's way back to its own network namespace.
#[derive(Debug)]
pub struct NetnsGuard {
    back: File,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = setns(&self.back);
    }
}

fn setns(ns: &File) -> Result<(), String> {
    // SAFETY: a valid descriptor of a network namespace; affects only the
    // calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
