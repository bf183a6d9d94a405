//! A real NFS server for tests: nfs-ganesha (VFS backend, NFSv3 and v4)
//! exporting a directory, in a network namespace the fixture makes
//! (address 169.254.78.1/32 on its loopback). ganesha registers its
//! programs with a portmapper, so an `rpcbind` runs beside it, in a
//! mount namespace of its own whose private `/run` keeps its socket
//! from any other rpcbind's. Nothing is added to the root network
//! namespace; everything is torn down on drop.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The server's address inside its namespace.
pub const ADDRESS: &str = "169.254.78.1";

/// The NFS port ganesha listens on.
pub const NFS_PORT: u16 = 2049;

/// The MOUNT port ganesha listens on.
pub const MOUNT_PORT: u16 = 20048;

static NEXT: AtomicU16 = AtomicU16::new(0);

/// Why the fixture could not start.
#[derive(Debug)]
pub enum StartError {
    /// nfs-ganesha (or rpcbind) is not installed: the test should skip.
    NotInstalled(String),
    /// It is installed but did not come up.
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::NotInstalled(s) | StartError::Failed(s) => f.write_str(s),
        }
    }
}

/// A running nfs-ganesha in its own network namespace.
#[derive(Debug)]
pub struct TestServer {
    netns: String,
    rpcbind: Option<Child>,
    ganesha: Option<Child>,
    export: PathBuf,
    state: PathBuf,
}

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

fn installed(program: &str) -> bool {
    ["/usr/bin", "/usr/sbin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).exists())
}

impl TestServer {
    /// Start ganesha in a new namespace named after `tag`, exporting
    /// `export` (an absolute directory) read-write with no root squash;
    /// its configuration and log go to `state`.
    pub fn start(tag: &str, export: &Path, state: &Path) -> Result<Self, StartError> {
        for program in ["ganesha.nfsd", "rpcbind"] {
            if !installed(program) {
                return Err(StartError::NotInstalled(format!(
                    "{program} is not installed (Debian: nfs-ganesha nfs-ganesha-vfs rpcbind)"
                )));
            }
        }
        if !Path::new("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so").exists()
            && !Path::new("/usr/lib/ganesha/libfsalvfs.so").exists()
        {
            return Err(StartError::NotInstalled(
                "ganesha's VFS backend is not installed (Debian: nfs-ganesha-vfs)".into(),
            ));
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let netns = format!("vnfs{tag}{}-{n}", std::process::id());
        let failed = StartError::Failed;
        let _ = run(Command::new("ip").args(["netns", "del", &netns]));
        run(Command::new("ip").args(["netns", "add", &netns])).map_err(failed)?;
        let mut me = Self {
            netns,
            rpcbind: None,
            ganesha: None,
            export: export.to_path_buf(),
            state: state.to_path_buf(),
        };
        me.ip(&["link", "set", "lo", "up"]).map_err(failed)?;
        me.ip(&["addr", "add", &format!("{ADDRESS}/32"), "dev", "lo"])
            .map_err(failed)?;
        std::fs::write(me.config_path(), me.config())
            .map_err(|e| StartError::Failed(format!("ganesha.conf: {e}")))?;
        me.start_rpcbind().map_err(failed)?;
        me.launch().map_err(failed)?;
        Ok(me)
    }

    fn config_path(&self) -> PathBuf {
        self.state.join("ganesha.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.state.join("ganesha.log")
    }

    fn config(&self) -> String {
        let export = self.export.display();
        format!(
            r#"NFS_CORE_PARAM {{
    Bind_Addr = {ADDRESS};
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    NFS_Port = {NFS_PORT};
    MNT_Port = {MOUNT_PORT};
}}
NFSV4 {{ Graceless = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = {export};
    Pseudo = {export};
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"#
        )
    }

    /// rpcbind in the namespace, with a private `/run` (its socket) and
    /// `/var/lib/nfs/ganesha` (ganesha's recovery state), which ganesha
    /// then shares by entering the same mount namespace.
    fn start_rpcbind(&mut self) -> Result<(), String> {
        let script = "mount -t tmpfs vireo-nfs-run /run && \
                      mkdir -p /var/lib/nfs/ganesha && \
                      mount -t tmpfs vireo-nfs-state /var/lib/nfs/ganesha && \
                      exec rpcbind -f";
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("rpcbind: {e}"))?;
        self.rpcbind = Some(child);
        self.wait_listening(111, "rpcbind")
    }

    /// Run ganesha and wait for its NFS and MOUNT ports.
    fn launch(&mut self) -> Result<(), String> {
        let pid = self
            .rpcbind
            .as_ref()
            .map(Child::id)
            .ok_or("rpcbind is not running")?;
        let _ = std::fs::remove_file(self.log_path());
        let child = Command::new("nsenter")
            .arg(format!("--mount=/proc/{pid}/ns/mnt"))
            .arg(format!("--net=/run/netns/{}", self.netns))
            .args(["ganesha.nfsd", "-F", "-N", "NIV_EVENT", "-L"])
            .arg(self.log_path())
            .arg("-f")
            .arg(self.config_path())
            .arg("-p")
            .arg(self.state.join("ganesha.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ganesha.nfsd: {e}"))?;
        self.ganesha = Some(child);
        self.wait_listening(NFS_PORT, "ganesha")?;
        self.wait_listening(MOUNT_PORT, "ganesha")
    }

    /// Wait (10 s at most) until something listens on `port` in the
    /// namespace.
    fn wait_listening(&mut self, port: u16, who: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = format!(":{port} ");
        loop {
            let out = run(Command::new("ip").args(["netns", "exec", &self.netns, "ss", "-ltnH"]))?;
            if out.contains(&want) {
                return Ok(());
            }
            let child = if who == "rpcbind" {
                self.rpcbind.as_mut()
            } else {
                self.ganesha.as_mut()
            };
            if let Some(status) = child.and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!("{who} exited at start ({status}): {tail:?}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{who} did not listen on port {port} within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ip(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ip").args(["-n", &self.netns]).args(args))
    }

    /// The network namespace's name (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Move the calling thread into the server's namespace until the
    /// guard drops (then back to where it was).
    pub fn enter(&self) -> Result<NetnsGuard, String> {
        let here = File::open("/proc/thread-self/ns/net").map_err(|e| format!("own netns: {e}"))?;
        let there = File::open(format!("/run/netns/{}", self.netns))
            .map_err(|e| format!("netns {}: {e}", self.netns))?;
        setns(&there)?;
        Ok(NetnsGuard { back: here })
    }

    /// The exported directory.
    pub fn export(&self) -> &Path {
        &self.export
    }

    /// `nfs://ADDRESS/EXPORT/FILE`.
    pub fn url(&self, file: &str) -> String {
        format!("nfs://{ADDRESS}{}/{file}", self.export.display())
    }

    /// Kill ganesha at once (SIGKILL): its connections are reset, and
    /// nothing listens on its ports until [`TestServer::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.ganesha.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze ganesha (SIGSTOP): it keeps its connections but answers
    /// nothing. Returns once every thread of it has stopped.
    pub fn freeze(&self) {
        let Some(child) = &self.ganesha else {
            return;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        // SAFETY: signalling our own child, which we have not reaped.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !all_stopped(pid) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kill ganesha and start it again on the same export.
    pub fn restart(&mut self) -> Result<(), String> {
        if let Some(child) = &self.ganesha {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: as in `freeze`; a stopped process dies of SIGKILL
                // too, this only wakes it first.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
        self.kill();
        self.launch()
    }
}

/// Whether every thread of `pid` is stopped.
fn all_stopped(pid: libc::pid_t) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the command name's closing parenthesis.
        stat.rsplit_once(") ")
            .is_none_or(|(_, rest)| rest.starts_with(['T', 't', 'Z', 'X']))
    })
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut child) = self.rpcbind.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run(Command::new("ip").args(["netns", "del", &self.netns]));
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
