//! Command-line syntax: every verb and flag, parsed by clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use devices::serial_backend::SerialBackend;
use vmm::config::CpuTopology;
use vmm::config::{parse_memory_size, ConsoleConfig, CpuTemplate, DiskConfig, NetConfig};
use vmm::memory_backend::{parse_memory_backend, MemoryBackend};
use vmm::numa::{NumaCell, NumaDistance};
use vmm::pinning::{CpuList, VcpuPin};

/// Vireo: a KVM virtualization stack.
#[derive(Debug, Parser)]
#[command(name = "vireo", version, about)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); VIREO_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The daemon to talk to (before the verb): vireo:///system, vireo+unix:///system?socket=PATH, vireo+ssh://[user@]host[:port]/system[?...]; default $VIREO_DEFAULT_URI, else vireo:///system.
    #[arg(short = 'c', long = "connect", value_name = "URI")]
    pub connect: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// `vireo run ...` parsed on its own (main's fast path): the same flags
/// as the `run` verb of [`Cli`], with `-v` after the verb.
#[derive(Debug, Parser)]
#[command(
    name = "vireo run",
    bin_name = "vireo run",
    about = "Boot one VM and run it until the guest powers off or resets."
)]
pub struct RunCli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); VIREO_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(flatten)]
    pub args: RunArgs,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot one VM and run it until the guest powers off or resets.
    Run(Box<RunArgs>),
    /// Boot the guest embedded in this binary: it prints what it finds and powers off.
    Demo(DemoArgs),
    /// Create, inspect, check, convert, resize and snapshot disk images.
    Img(crate::img::ImgArgs),
    /// Control a running VM through its API socket (`vireo run --api-socket`).
    Vm(crate::vm_cli::VmArgs),
    /// Run the management daemon in the foreground (domains, lifecycle, events, the API).
    Daemon(crate::daemon_cmd::DaemonArgs),
    /// Join stdin/stdout to the daemon's socket (what vireo+ssh:// runs on the far host).
    Proxy(crate::proxy::ProxyArgs),
    #[command(flatten)]
    Virsh(crate::virsh::VirshCommand),
}

/// Options shared by `run` and `demo`: the machine's shape.
#[derive(Debug, Args)]
pub struct MachineArgs {
    /// Guest RAM, a multiple of 4 KiB: a number of MiB, or a size such as 512M, 1.5G, 4GiB.
    #[arg(short, long, default_value = "128M", value_parser = parse_memory_size)]
    pub memory: u64,
    /// What backs guest RAM: backend=anon|memfd|file, path=FILE|DIR, hugepages=2M|1G,
    /// shared=on|off, prealloc=on|off, prealloc-threads=N, thp=on|off (docs/run.md).
    #[arg(long, value_name = "KEY=VALUE,...", value_parser = parse_memory_backend, default_value = "")]
    pub memory_backend: MemoryBackend,
    /// Number of vCPUs.
    #[arg(short, long, default_value_t = 1)]
    pub cpus: u32,
    /// CPU features shown to the guest: host, or minimal (hides XSAVE, CMPXCHG16B, AVX+).
    #[arg(long, default_value = "host")]
    pub cpu_template: CpuTemplate,
    /// Guest CPU topology: sockets=S,dies=D,cores=C,threads=T (dies optional); S*D*C*T must equal --cpus.
    #[arg(long, value_name = "sockets=S,cores=C,threads=T")]
    pub cpu_topology: Option<CpuTopology>,
    /// A guest NUMA cell: cell=ID,memory=SIZE[,cpus=LIST...][,host-nodes=LIST...][,policy=strict|preferred|interleave|restrictive]. Repeatable.
    #[arg(long, value_name = "OPTIONS")]
    pub numa: Vec<NumaCell>,
    /// Distance between two NUMA cells: src=A,dst=B,value=V (11 to 254; default 20). Repeatable.
    #[arg(long, value_name = "src=A,dst=B,value=V")]
    pub numa_distance: Vec<NumaDistance>,
    /// Pin a vCPU's thread to host CPUs: VCPU:CPULIST (e.g. 0:2-3). Repeatable.
    #[arg(long, value_name = "VCPU:CPULIST")]
    pub vcpu_pin: Vec<VcpuPin>,
    /// Pin every thread that is not a vCPU (main, API, device and I/O workers) to host CPUs.
    #[arg(long, value_name = "CPULIST")]
    pub emulator_pin: Option<CpuList>,
    /// An I/O thread for disks to name with iothread=ID: id=ID[,cpus=CPULIST]; a disk on it runs
    /// its worker and I/O threads on those CPUs, apart from the emulator's. Repeatable.
    #[arg(long, value_name = "id=ID[,cpus=CPULIST]")]
    pub iothread: Vec<vmm::pinning::IoThread>,
    /// Interrupt controllers: kernel (KVM's LAPICs, IOAPIC and PICs), or split (KVM's LAPICs,
    /// Vireo's IOAPIC, no PIC). Default split; kernel with --pit.
    #[arg(long, value_name = "split|kernel", value_parser = parse_irqchip)]
    pub irqchip: Option<hypervisor::IrqchipMode>,
    /// Add KVM's i8254 PIT (needs --irqchip=kernel, which it implies); missed ticks are
    /// dropped unless --pit=reinject.
    #[arg(long, value_name = "reinject", num_args = 0..=1, require_equals = true, default_missing_value = "", value_parser = parse_pit)]
    pub pit: Option<hypervisor::PitMode>,
    /// Serial console: stdout, file:PATH (truncated), unix:PATH (listening; output before a client connects is replayed), unix-connect:PATH, pty or off.
    #[arg(long, default_value = "stdout")]
    pub serial: SerialBackend,
}

fn parse_irqchip(s: &str) -> Result<hypervisor::IrqchipMode, String> {
    match s {
        "split" => Ok(hypervisor::IrqchipMode::Split),
        "kernel" => Ok(hypervisor::IrqchipMode::Kernel),
        _ => Err(format!("unknown irqchip '{s}' (expected split or kernel)")),
    }
}

fn parse_pit(s: &str) -> Result<hypervisor::PitMode, String> {
    match s {
        "" => Ok(hypervisor::PitMode::NoReinject),
        "reinject" => Ok(hypervisor::PitMode::Reinject),
        _ => Err(format!("unknown PIT option '{s}' (expected reinject)")),
    }
}

/// `vireo run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel image: a bzImage, or an ELF (PVH entry if it has the note). Optional with --api-socket.
    #[arg(short, long)]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(short, long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = vmm::config::DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Serve the control API (HTTP/JSON) on this unix socket, mode 0600 (a path of at most 107 bytes).
    #[arg(long, value_name = "PATH", value_parser = parse_socket_path)]
    pub api_socket: Option<PathBuf>,
    /// On guest reset, boot the VM again instead of exiting.
    #[arg(long)]
    pub reboot: bool,
    /// Hold the vCPUs before the guest's first instruction until PUT /vm/resume (needs --api-socket).
    #[arg(long)]
    pub paused: bool,
    /// Write why the VM ended to this file (JSON, atomically) just before exiting.
    #[arg(long, value_name = "PATH")]
    pub exit_status: Option<PathBuf>,
    /// A virtio-blk disk: path=IMAGE[,readonly=on][,cache=none|writeback][,serial=S][,queues=N][,id=NAME][,secret=ID]. Repeatable.
    #[arg(long, value_name = "OPTIONS")]
    pub disk: Vec<DiskConfig>,
    /// A secret for a disk: id=ID,file=PATH (the file holds the secret itself) or id=ID,fd=N (an inherited descriptor, read to its end). A --disk iscsi://USER@HOST/IQN/LUN,secret=ID logs in with it as its CHAP secret, which then stands in no command line. Repeatable.
    #[arg(long, value_name = "OPTIONS")]
    pub secret: Vec<vmm::config::SecretConfig>,
    /// A virtio-net card on a TAP: [tap=NAME|fd=N][,mac=MAC][,queues=N][,id=NAME]. Without tap, a new TAP is created; fd=N is an inherited TAP descriptor; without mac, a random 52:54:00 one. Repeatable.
    #[arg(long, value_name = "OPTIONS")]
    pub net: Vec<NetConfig>,
    /// A virtio-console port: stdout, file:PATH, unix:PATH (listening, as --serial) or unix-connect:PATH. Repeatable.
    #[arg(long, value_name = "BACKEND")]
    pub console: Vec<ConsoleConfig>,
    /// Give the guest a virtio-rng device fed by the host's getrandom.
    #[arg(long)]
    pub rng: bool,
    /// Seccomp filters on every thread: kill (a forbidden system call stops the VM, naming the thread and the call), log (the kernel logs it and it goes through) or off (docs/security.md).
    #[arg(long, value_name = "MODE", default_value = "kill")]
    pub seccomp: confine::Mode,
    /// Network disk drivers (iscsi, nfs) to load at start, so the API can still add such disks once the VMM has confined itself: a comma-separated list, all or none. Default: what the --disk options need, and all with --api-socket.
    #[arg(long, value_name = "LIST")]
    pub disk_drivers: Option<DiskDrivers>,
    /// Confine the VMM in a jail mounted on DIR (an existing directory, left untouched): own PID, mount, IPC, UTS and network namespaces, an empty root, --uid/--gid, no capabilities, no_new_privs. Needs root and --kernel (docs/security.md).
    #[arg(long, value_name = "DIR")]
    pub jail: Option<PathBuf>,
    /// The jailed VMM's uid (not 0).
    #[arg(long, value_name = "N", requires = "jail", default_value_t = jail::DEFAULT_ID)]
    pub uid: u32,
    /// The jailed VMM's gid (not 0).
    #[arg(long, value_name = "N", requires = "jail", default_value_t = jail::DEFAULT_ID)]
    pub gid: u32,
    /// A virtio-balloon device: [target=SIZE][,deflate-on-oom=on|off][,free-page-reporting=on|off][,stats-period=SECS]. target is the guest memory the balloon aims for (default: all of --memory; a bare number is MiB); stats-period 0 (default) never asks for statistics.
    #[arg(long, value_name = "OPTIONS", num_args = 0..=1, default_missing_value = "")]
    pub balloon: Option<vmm::balloon::BalloonConfig>,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// `--disk-drivers`: the network disk drivers to load at start, among
/// those of this build ([`block::NETWORK_DRIVERS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskDrivers(pub Vec<&'static str>);

impl std::str::FromStr for DiskDrivers {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => return Ok(DiskDrivers(block::NETWORK_DRIVERS.to_vec())),
            "none" => return Ok(DiskDrivers(Vec::new())),
            _ => {}
        }
        let mut out = Vec::new();
        for name in s.split(',') {
            let Some(known) = block::NETWORK_DRIVERS.iter().find(|d| **d == name) else {
                return Err(format!(
                    "'{}' is not a disk driver of this build (it has: {}; or all, none)",
                    name.escape_debug(),
                    block::NETWORK_DRIVERS.join(", ")
                ));
            };
            if !out.contains(known) {
                out.push(*known);
            }
        }
        Ok(DiskDrivers(out))
    }
}

/// `vireo demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Command line handed to the demo guest (it prints it back).
    #[arg(long, default_value = "vireo demo")]
    pub cmdline: String,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// A unix socket path that fits a socket address.
fn parse_socket_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the path is empty".into());
    }
    let path = PathBuf::from(s);
    devices::serial_backend::check_socket_path(&path)?;
    Ok(path)
}
