//! `vireo daemon`: runs the management daemon in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// `vireo daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where definitions, run records and VMM logs are kept.
    #[arg(long, value_name = "DIR", default_value = manager::api::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The read-write API socket; the read-only one (NAME-ro.sock) is made beside it.
    #[arg(long, value_name = "PATH", default_value = manager::api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Append the daemon's log to FILE instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// qemu-system-x86_64 for the QEMU driver (default: found on PATH).
    #[arg(long, value_name = "PATH")]
    pub qemu: Option<PathBuf>,
    /// Seconds after its last renewal that another host may take a volume
    /// lease of a host that stopped renewing (docs/leases.md).
    #[arg(long, value_name = "SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_timeout: u64,
    /// This daemon's name in lease files, unique among the hosts sharing a
    /// pool (default: the host name, told apart by /etc/machine-id and the state directory).
    #[arg(long, value_name = "NAME")]
    pub host_id: Option<String>,
    /// Take no volume leases (a single host, or storage leased by other means).
    #[arg(long, conflicts_with_all = ["lease_timeout", "host_id"])]
    pub no_leases: bool,
    /// The cgroup the domains' cgroups are made in, under each hierarchy
    /// (docs/security.md).
    #[arg(long, value_name = "NAME", default_value = manager::cgroup::DEFAULT_PARENT)]
    pub cgroup_parent: String,
    /// The uids (and equal gids) the domains' VMMs run under, one per
    /// domain, each jailed (`vireo run --jail`; docs/security.md).
    #[arg(long, value_name = "FIRST-LAST", default_value = manager::driver::vireo::DEFAULT_VMM_UIDS)]
    pub vmm_uids: manager::driver::vireo::UidRange,
    /// Run the VMMs unjailed, as root with every capability (for
    /// debugging; seccomp filters and cgroups still apply).
    #[arg(long)]
    pub no_jail: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn daemon_command(args: DaemonArgs, verbose: u8) -> ExitCode {
    let log_file = args.log.is_some();
    if let Err(e) = init_log(args.log.as_deref(), verbose) {
        eprintln!("vireo: {e}");
        return ExitCode::from(1);
    }
    let vmm_binary = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vireo: cannot find the vireo binary for the VMMs: {e}");
            return ExitCode::from(1);
        }
    };
    let run = manager::daemon::default_drivers(
        vmm_binary,
        args.qemu,
        (!args.no_jail).then_some(args.vmm_uids),
    )
    .and_then(|drivers| {
        manager::daemon::run(manager::daemon::Config {
            state_dir: args.state_dir,
            socket: args.socket,
            drivers,
            leases: (!args.no_leases).then(|| manager::daemon::LeaseConfig {
                timeout: std::time::Duration::from_secs(args.lease_timeout),
                host_id: args.host_id,
            }),
            cgroup_parent: Some(args.cgroup_parent),
        })
    });
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once on stderr; in the log file too when there is one.
            if log_file {
                tracing::error!("{e}");
            }
            eprintln!("vireo: {e}");
            ExitCode::from(1)
        }
    }
}

/// The daemon logs at info (every change, with its peer) unless told
/// otherwise, to `log` when given.
fn init_log(log: Option<&std::path::Path>, verbose: u8) -> Result<(), String> {
    let default = match verbose {
        0 | 1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIREO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).with_writer(std::io::stderr).init();
        }
    }
    Ok(())
}
