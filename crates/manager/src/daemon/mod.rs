//! `vireo daemon`: the domain registry, its persistence, the lifecycle of
//! running domains through their drivers, events, and the HTTP API of
//! [`crate::api`] on two unix sockets (read-write and read-only).
//!
//! The daemon runs on a current-thread tokio runtime (its work is I/O and
//! bookkeeping) with a bounded pool of blocking threads for driver calls,
//! which may wait on a VMM. Each running domain has one small thread of
//! its own blocked in [`crate::driver::Instance::wait_exit`].
//!
//! VMMs outlive the daemon: stopping it (SIGTERM, SIGINT, or `kill -9`)
//! leaves them running, and the next daemon re-adopts them from their run
//! records (see `boot.rs`).

mod boot;
#[cfg(test)]
mod boot_tests;
mod cgroups;
mod console;
mod devices;
mod disk_volumes;
mod drivers;
mod events;
mod failure;
mod host;
mod host_ifaces;
mod host_numa;
mod iface_links;
mod iface_routes;
mod io_errors;
mod leases;
mod lifecycle;
mod net_routes;
mod networks;
mod ops;
mod pool_routes;
mod pools;
mod port_policy;
mod registry;
mod routes;
mod secret_routes;
mod secrets;
mod server;
mod store;
mod tuning;
mod tuning_routes;
mod vol_ops;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

pub use drivers::default_drivers;
pub use leases::LeaseSettings;

use crate::driver::Driver;

/// How the daemon is started.
pub struct Config {
    /// Where definitions, run records and logs live.
    pub state_dir: PathBuf,
    /// The read-write socket; the read-only one is beside it
    /// ([`crate::api::read_only_socket`]).
    pub socket: PathBuf,
    /// The drivers this daemon runs domains with.
    pub drivers: Vec<Arc<dyn Driver>>,
    /// Volume leases across hosts; `None` turns them off.
    pub leases: Option<LeaseConfig>,
    /// The parent cgroup of the domains' cgroups (`vireo` by default).
    pub cgroup_parent: Option<String>,
}

/// How `vireo daemon --lease-timeout` and `--host-id` set up leases.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// A lease not renewed for this long may be taken by another host.
    pub timeout: Duration,
    /// This daemon's name in lease files; by default the host name, with
    /// `/etc/machine-id` and the state directory telling daemons apart.
    pub host_id: Option<String>,
}

/// Why the daemon could not start or stopped on an error. Each displays
/// as one line.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory could not be prepared or read.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Another daemon holds the state directory.
    #[error("another vireo daemon uses the state directory {0}")]
    StateDirBusy(PathBuf),
    /// Another daemon answers on the socket.
    #[error("another vireo daemon already serves {0}")]
    SocketBusy(PathBuf),
    /// A socket could not be made.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A driver could not be set up (`--qemu` names no executable).
    #[error("{0}")]
    Driver(String),
    /// An option is out of range.
    #[error("{0}")]
    Config(String),
    /// The async runtime could not be built, or a signal handler set.
    #[error("cannot start the daemon's runtime: {0}")]
    Runtime(std::io::Error),
}

/// What every request handler and task shares.
pub(crate) struct Daemon {
    /// The state directory.
    pub store: store::Store,
    /// The domains.
    pub registry: registry::Registry,
    /// The virtual networks.
    pub networks: networks::Networks,
    /// The host interfaces (`iface-*`).
    pub interfaces: host_ifaces::HostIfaces,
    /// The storage pools.
    pub pools: pools::Pools,
    /// The secrets (CHAP passwords).
    pub secrets: secrets::Secrets,
    /// The volume leases this daemon holds.
    pub leases: leases::Leases,
    /// The drivers, by [`Driver::name`].
    pub drivers: Vec<Arc<dyn Driver>>,
    /// The lifecycle event stream.
    pub events: events::Events,
    /// Where run directories go: short, beside the socket.
    pub run_root: PathBuf,
    /// Serializes changes of the set of domains (define, undefine,
    /// create) so that two of them cannot take one name.
    pub namespace: tokio::sync::Mutex<()>,
    /// The runtime, for waiter threads to hand exits back.
    pub runtime: tokio::runtime::Handle,
    /// Numbers console sessions.
    pub console_sessions: AtomicU64,
    /// Every change in progress holds a read share; a stopping daemon
    /// takes it for writing, so that it waits for them (bounded).
    pub changes: Arc<tokio::sync::RwLock<()>>,
}

impl Daemon {
    /// The driver called `name`, if this daemon runs it.
    pub fn driver(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.drivers.iter().find(|d| d.name() == name).cloned()
    }
}

/// Blocking threads for driver calls: enough for many domains at once,
/// few enough that a burst cannot grow the daemon without bound.
const MAX_BLOCKING_THREADS: usize = 16;

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(mut config: Config) -> Result<(), DaemonError> {
    // Run records hold paths under both: they must not depend on the
    // directory a later daemon is started from.
    config.state_dir = absolute(&config.state_dir)?;
    config.socket = absolute(&config.socket)?;
    if let Some(parent) = &config.cgroup_parent {
        crate::cgroup::set_parent(parent).map_err(DaemonError::Config)?;
    }
    let state_err = |source| DaemonError::StateDir {
        path: config.state_dir.clone(),
        source,
    };
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(state_err)?;
    }
    // Held (and the lock with it) until the process exits. Taken before
    // the store is opened: opening removes temporary files, which must
    // never be another daemon's writes in progress.
    let _lock = lock_state_dir(&config.state_dir)?;
    let store = store::Store::open(&config.state_dir).map_err(state_err)?;
    let networks = networks::Networks::open(&config.state_dir).map_err(state_err)?;
    let interfaces = host_ifaces::HostIfaces::open(&config.state_dir).map_err(state_err)?;
    let pools = pools::Pools::open(&config.state_dir).map_err(state_err)?;
    // Before the pools are found again: an iscsi-direct pool with <auth>
    // logs in with its secret.
    let secrets = secrets::Secrets::open(&config.state_dir).map_err(state_err)?;
    let lease_settings = config
        .leases
        .as_ref()
        .map(|l| lease_settings(l, &config.state_dir))
        .transpose()?;
    server::check_not_served(&config.socket)?;
    let ro_socket = crate::api::read_only_socket(&config.socket);
    server::check_not_served(&ro_socket)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("vireo-daemon-io")
        .build()
        .map_err(DaemonError::Runtime)?;
    let daemon = Arc::new(Daemon {
        store,
        registry: registry::Registry::default(),
        networks,
        interfaces,
        pools,
        secrets,
        leases: leases::Leases::new(lease_settings),
        drivers: config.drivers,
        events: events::Events::new(),
        run_root: run_root(&config.socket),
        namespace: tokio::sync::Mutex::new(()),
        runtime: runtime.handle().clone(),
        console_sessions: AtomicU64::new(0),
        changes: Arc::default(),
    });
    let result = runtime.block_on(async {
        host_ifaces::load(&daemon).await.map_err(state_err)?;
        networks::load(&daemon).await.map_err(state_err)?;
        pools::load(&daemon).await.map_err(state_err)?;
        boot::load(&daemon).await.map_err(state_err)?;
        {
            let sweep_d = daemon.clone();
            let _ = tokio::task::spawn_blocking(move || cgroups::sweep(&sweep_d)).await;
        }
        // Before any client: a start must not race the stray sweep.
        leases::adopt(&daemon).await;
        tokio::spawn(leases::keep(daemon.clone()));
        let listeners = server::listen(&config.socket, &ro_socket)?;
        let autostart_d = daemon.clone();
        tokio::spawn(async move {
            // Host interfaces first, then networks (which may sit on
            // them), then domains (plugged into networks).
            host_ifaces::start_onboot(&autostart_d).await;
            networks::autostart(&autostart_d).await;
            pools::autostart(&autostart_d).await;
            boot::autostart(autostart_d).await;
        });
        tokio::spawn(networks::supervise(daemon.clone()));
        server::serve(daemon.clone(), listeners).await
    });
    // Driver calls still running (a VMM that does not answer) must not
    // hold the exit: the VMMs live on without the daemon.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// This daemon's lease identity: `--host-id` as given, else the host name
/// shown and `/etc/machine-id` (or the host name) with the state directory
/// as the key, so two daemons on one host are two holders.
fn lease_settings(config: &LeaseConfig, state_dir: &Path) -> Result<LeaseSettings, DaemonError> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let host = match &config.host_id {
        Some(id) => {
            if id.is_empty() || id.len() > 255 || id.chars().any(char::is_control) {
                return Err(DaemonError::Config(format!(
                    "--host-id '{}' must be 1 to 255 bytes of text",
                    id.escape_debug()
                )));
            }
            crate::storage::lease::HostId {
                key: id.clone(),
                name: id.clone(),
            }
        }
        None => {
            let name = read("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into());
            let machine = read("/etc/machine-id").unwrap_or_else(|| name.clone());
            crate::storage::lease::HostId {
                key: format!("{machine}:{}", state_dir.display()),
                name,
            }
        }
    };
    if config.timeout < Duration::from_secs(1) || config.timeout > Duration::from_secs(3600) {
        return Err(DaemonError::Config(
            "--lease-timeout must be 1 to 3600 seconds".to_string(),
        ));
    }
    Ok(LeaseSettings {
        timeout: config.timeout,
        host,
    })
}

fn absolute(path: &Path) -> Result<PathBuf, DaemonError> {
    std::path::absolute(path).map_err(|source| DaemonError::StateDir {
        path: path.to_path_buf(),
        source,
    })
}

/// Where run directories of the daemon on `socket` go: `SOCKET.d/ID`, short
/// enough for the VMM's own unix sockets, and per socket so that two
/// daemons in one directory do not meet.
fn run_root(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".d");
    socket.with_file_name(name)
}

/// How long a starting daemon waits for another holder of the state
/// directory's lock to let it go.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes `STATE/daemon.lock` so that two daemons never share a directory.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File, DaemonError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("daemon.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| DaemonError::StateDir {
            path: path.clone(),
            source,
        })?;
    // A daemon killed while it forked a VMM leaves the child holding the
    // lock's descriptor for the moment until it closes its inherited
    // descriptors: a restart right after such a kill waits that out.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        if std::time::Instant::now() >= deadline {
            return Err(DaemonError::StateDirBusy(dir.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
