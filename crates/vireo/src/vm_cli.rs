//! `vireo vm`: control one running VM through its API socket
//! (`vireo run --api-socket PATH`).
//!
//! One HTTP/1.1 request per invocation over the unix socket
//! (`Connection: close`), through the daemon client's bounded HTTP code.
//! Output is for people by default; `--json` prints the VM's JSON answer
//! as it came (`{}` when it had none). Exit codes: 0 done, 1 the VM
//! refused or the exchange failed, 2 usage or no connection.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use manager::client::http::{Connection, HttpError};
use manager::client::transport::Stream;
use serde_json::Value;
use vmm::api::{
    BalloonInfo, BalloonSpec, Counters, DiskSpec, EmulatorPinSpec, NetSpec, NumaInfo,
    RemoveDeviceSpec, ResizeDiskSpec, VcpuInfo, VcpuPinSpec, VmInfo,
};
use vmm::config::{CacheMode, DiskConfig, NetConfig};
use vmm::pinning::{cpu_list_string, CpuList};

/// The VM refused, or the exchange failed after connecting.
const EXIT_REFUSED: u8 = 1;
/// Bad usage, or nobody answers on the socket.
const EXIT_USAGE: u8 = 2;

/// How long to wait for an answer: pause and power-off wait for vCPUs,
/// hot-plug for the host to open an image.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// `writeln!` into the output being built (writing to a String cannot fail).
macro_rules! w {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// `vireo vm`.
#[derive(Debug, Args)]
pub struct VmArgs {
    /// The VM's API socket (`vireo run --api-socket PATH`).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the VM's JSON answer as it came (`{}` when it had none).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: VmCommand,
}

/// What to do to the VM.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// State, vCPUs, memory, kernel and devices.
    Info,
    /// Per device bytes, requests and errors; per vCPU exits by reason.
    Counters,
    /// Hold every vCPU out of the guest.
    Pause,
    /// Run a paused VM again.
    Resume,
    /// Press the ACPI power button; the guest decides what to do.
    Shutdown,
    /// Reset the VM.
    Reset,
    /// Stop the VM now, without asking the guest.
    Poweroff,
    /// Hot-plug a virtio-blk disk.
    AddDisk(AddDiskArgs),
    /// Hot-plug a virtio-net card.
    AddNet(AddNetArgs),
    /// Unplug a hot-plugged device.
    #[command(visible_alias = "remove")]
    RemoveDevice {
        /// The device's id (as `info` lists it).
        id: String,
    },
    /// Change a disk's capacity; the guest is told.
    ResizeDisk {
        /// The disk's id.
        id: String,
        /// New size in bytes, or with a K, M, G or T suffix (2G).
        #[arg(value_parser = parse_disk_size)]
        size: u64,
        /// Allow a size below the current one: the data past it is lost
        /// (as `vireo img resize --shrink`).
        #[arg(long)]
        shrink: bool,
    },
    /// Set the balloon's target: the guest memory it aims for (libvirt's setmem).
    Balloon {
        /// Guest memory to aim for: a number of MiB, or a size such as 512M, 1.5G.
        #[arg(value_parser = vmm::config::parse_memory_size)]
        size: Option<u64>,
        /// Also set the seconds between requests for statistics (0: stop asking).
        #[arg(long, value_name = "SECS")]
        stats_period: Option<u32>,
    },
    /// The balloon's target, actual size and the guest's memory statistics
    /// (libvirt's dommemstat names, sizes in KiB).
    BalloonStats,
    /// Each vCPU: APIC ID, host thread, the host CPU it last ran on, its affinity, CPU time.
    Vcpus,
    /// Pin a vCPU's thread to host CPUs.
    VcpuPin {
        /// The vCPU's index.
        vcpu: u32,
        /// Host CPUs, as taskset writes them (0-3,6).
        cpus: CpuList,
    },
    /// Pin every thread that is not a vCPU (main, API, device and I/O workers) to host CPUs.
    EmulatorPin {
        /// Host CPUs, as taskset writes them (0-3,6).
        cpus: CpuList,
    },
    /// The guest NUMA cells and distances.
    Numa,
}

/// `vireo vm add-disk`.
#[derive(Debug, Args)]
pub struct AddDiskArgs {
    /// As `vireo run --disk`: path=IMAGE[,id=NAME][,readonly=on][,cache=none|writeback][,serial=S][,queues=N]. A relative IMAGE is taken from the current directory.
    #[arg(value_name = "DISK")]
    pub options: DiskConfig,
    /// Name for later requests, as id= in OPTIONS (default: chosen by the VM, disk<N>).
    #[arg(long)]
    pub id: Option<String>,
}

/// `vireo vm add-net`.
#[derive(Debug, Args)]
pub struct AddNetArgs {
    /// As `vireo run --net`: [id=NAME][,tap=NAME][,mac=MAC][,queues=N].
    #[arg(value_name = "NET", default_value = "")]
    pub options: NetConfig,
    /// Name for later requests, as id= in OPTIONS (default: chosen by the VM, net<N>).
    #[arg(long)]
    pub id: Option<String>,
}

/// Why a command failed, and so its exit code.
enum Failure {
    Usage(String),
    Refused(String),
}

/// Run `vireo vm`.
pub fn vm_command(args: VmArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("vireo: {m}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Refused(m)) => {
            eprintln!("vireo: {m}");
            ExitCode::from(EXIT_REFUSED)
        }
    }
}

fn run(args: VmArgs) -> Result<(), Failure> {
    let socket = args
        .socket
        .ok_or_else(|| Failure::Usage("vm: --socket PATH is required".into()))?;
    let (method, path, body) = request_for(&args.command)?;
    let answer = call(&socket, method, path, body.as_deref())?;
    let mut out = String::new();
    if args.json {
        if answer.is_empty() {
            out.push_str("{}\n");
        } else {
            w!(out, "{}", String::from_utf8_lossy(&answer).trim_end());
        }
    } else {
        print_human(&mut out, &args.command, &answer);
    }
    // One write; a reader that went away (`| head`) is not an error.
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::Refused(format!("writing the answer: {e}")))
        }
        _ => Ok(()),
    }
}

/// The HTTP method, path and JSON body for a command.
fn request_for(
    command: &VmCommand,
) -> Result<(&'static str, &'static str, Option<Vec<u8>>), Failure> {
    let encode = |v: Result<Vec<u8>, serde_json::Error>| {
        v.map(Some)
            .map_err(|e| Failure::Usage(format!("cannot encode the request: {e}")))
    };
    Ok(match command {
        VmCommand::Info => ("GET", "/vm", None),
        VmCommand::Counters => ("GET", "/vm/counters", None),
        VmCommand::Pause => ("PUT", "/vm/pause", None),
        VmCommand::Resume => ("PUT", "/vm/resume", None),
        VmCommand::Shutdown => ("PUT", "/vm/shutdown", None),
        VmCommand::Reset => ("PUT", "/vm/reset", None),
        VmCommand::Poweroff => ("PUT", "/vm/power-off", None),
        VmCommand::AddDisk(a) => {
            if a.options.secret.is_some() {
                return Err(Failure::Usage(
                    "add-disk: secret= is for vireo run (with --secret); over the API the CHAP secret goes in the request body (chap_secret)".into(),
                ));
            }
            let id = one_id(a.options.id.as_ref(), a.id.as_ref())?;
            let mut spec = disk_spec(&a.options, id);
            // The VM runs elsewhere (its own directory): a relative path
            // means the caller's directory, so send it absolute. An
            // iscsi:// or nfs:// URL is no path and goes as it is.
            if !block::is_network(&spec.path) {
                spec.path = std::path::absolute(&spec.path).map_err(|e| {
                    Failure::Usage(format!(
                        "vm: cannot make {} absolute: {e}",
                        spec.path.display()
                    ))
                })?;
            }
            ("PUT", "/vm/add-disk", encode(serde_json::to_vec(&spec))?)
        }
        VmCommand::AddNet(a) => {
            if a.options.fd.is_some() {
                // A descriptor number means nothing to another process.
                return Err(Failure::Usage(
                    "add-net: fd= is for vireo run only; name the TAP with tap=".into(),
                ));
            }
            let id = one_id(a.options.id.as_ref(), a.id.as_ref())?;
            (
                "PUT",
                "/vm/add-net",
                encode(serde_json::to_vec(&net_spec(&a.options, id)))?,
            )
        }
        VmCommand::RemoveDevice { id } => (
            "PUT",
            "/vm/remove-device",
            encode(serde_json::to_vec(&RemoveDeviceSpec { id: id.clone() }))?,
        ),
        VmCommand::ResizeDisk { id, size, shrink } => (
            "PUT",
            "/vm/resize-disk",
            encode(serde_json::to_vec(&ResizeDiskSpec {
                id: id.clone(),
                size_bytes: *size,
                shrink: *shrink,
            }))?,
        ),
        VmCommand::Balloon { size, stats_period } => {
            if size.is_none() && stats_period.is_none() {
                return Err(Failure::Usage(
                    "balloon: give a SIZE, --stats-period, or both".into(),
                ));
            }
            let spec = BalloonSpec {
                target_kib: size.map(|s| s >> 10),
                stats_period: *stats_period,
            };
            ("PUT", "/vm/balloon", encode(serde_json::to_vec(&spec))?)
        }
        VmCommand::BalloonStats => ("GET", "/vm/balloon", None),
        VmCommand::Vcpus => ("GET", "/vm/vcpus", None),
        VmCommand::VcpuPin { vcpu, cpus } => (
            "PUT",
            "/vm/vcpu-pin",
            encode(serde_json::to_vec(&VcpuPinSpec {
                vcpu: *vcpu,
                cpus: cpus.0.clone(),
            }))?,
        ),
        VmCommand::EmulatorPin { cpus } => (
            "PUT",
            "/vm/emulator-pin",
            encode(serde_json::to_vec(&EmulatorPinSpec {
                cpus: cpus.0.clone(),
            }))?,
        ),
        VmCommand::Numa => ("GET", "/vm/numa", None),
    })
}

/// The device's name, from `id=` in the options or `--id`; both is fine
/// only if they agree.
fn one_id(in_options: Option<&String>, flag: Option<&String>) -> Result<Option<String>, Failure> {
    match (in_options, flag) {
        (Some(a), Some(b)) if a != b => Err(Failure::Usage(format!(
            "vm: id={a} and --id {b} disagree; give one"
        ))),
        (a, b) => Ok(a.or(b).cloned()),
    }
}

/// An error policy for the API: left out when it is the default.
fn policy(action: &str) -> Option<String> {
    (action != "report").then(|| action.to_string())
}

/// `--disk` options as the API's DiskSpec.
fn disk_spec(disk: &DiskConfig, id: Option<String>) -> DiskSpec {
    DiskSpec {
        id,
        path: disk.path.clone(),
        format: disk.format.map(|f| f.name().to_string()),
        readonly: disk.readonly,
        cache: Some(
            match disk.cache {
                CacheMode::None => "none",
                CacheMode::Writeback => "writeback",
            }
            .to_string(),
        ),
        serial: disk.serial.clone(),
        queues: Some(disk.queues),
        werror: policy(disk.werror.as_str()),
        rerror: policy(disk.rerror.as_str()),
        image_fd: false,
        passed: None,
        chap_secret: None,
    }
}

/// `--net` options as the API's NetSpec.
fn net_spec(net: &NetConfig, id: Option<String>) -> NetSpec {
    NetSpec {
        id,
        tap: net.tap.clone(),
        mac: net.mac.map(|m| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        }),
        queues: Some(net.queues),
        // fd= is refused above: `vireo vm` passes no descriptor.
        tap_fd: false,
        passed: None,
    }
}

/// A disk size: bytes, or a number with a binary K, M, G or T suffix
/// (optionally followed by B or iB). Unlike memory sizes, a bare number is
/// bytes, as `qemu-img resize` takes it.
fn parse_disk_size(s: &str) -> Result<u64, String> {
    match vmm::config::parse_size(s, 0, "size", "2G, 512M, 1073741824")? {
        0 => Err("a disk cannot be resized to 0 bytes".into()),
        size => Ok(size),
    }
}

/// Send one request; the answer's body on success (2xx), a failure
/// carrying the VM's `{"error": ...}` message otherwise. The exchange is
/// the daemon client's HTTP/1.1 ([`manager::client::http`]): bounded
/// heads and bodies, interim answers skipped, one deadline for the answer.
fn call(socket: &Path, method: &str, path: &str, body: Option<&[u8]>) -> Result<Vec<u8>, Failure> {
    let stream = Stream::unix(socket).map_err(|e| {
        Failure::Usage(format!(
            "cannot connect to the VM at {}: {e}",
            socket.display()
        ))
    })?;
    let mut conn = Connection::new(stream);
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let body = body.filter(|b| !b.is_empty());
    conn.send(method, path, &["Connection: close"], body)
        .map_err(http_failure)?;
    let head = conn.read_head(method, deadline).map_err(http_failure)?;
    let answer = conn.read_body(deadline).map_err(http_failure)?;
    if (200..300).contains(&head.status) {
        return Ok(answer);
    }
    let message = serde_json::from_slice::<Value>(&answer)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| format!("the VM answered HTTP {}", head.status));
    Err(Failure::Refused(message))
}

/// One line for a failed exchange with the VM.
fn http_failure(e: HttpError) -> Failure {
    Failure::Refused(match e {
        HttpError::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            format!(
                "no answer from the VM within {} s",
                ANSWER_TIMEOUT.as_secs()
            )
        }
        HttpError::Io(e) => format!("talking to the VM: {e}"),
        HttpError::Closed { .. } => "the VM's answer is garbled: it ended early".into(),
        HttpError::Protocol(what) => format!("the VM's answer is garbled: {what}"),
    })
}

fn print_human(out: &mut String, command: &VmCommand, answer: &[u8]) {
    let value: Value = serde_json::from_slice(answer).unwrap_or(Value::Null);
    match command {
        VmCommand::Info => match serde_json::from_value::<VmInfo>(value.clone()) {
            Ok(info) => print_info(out, &info),
            Err(_) => print_json(out, &value),
        },
        VmCommand::Counters => match serde_json::from_value::<Counters>(value.clone()) {
            Ok(counters) => print_counters(out, &counters),
            Err(_) => print_json(out, &value),
        },
        VmCommand::BalloonStats => match serde_json::from_value::<BalloonInfo>(value.clone()) {
            Ok(info) => print_balloon(out, &info),
            Err(_) => print_json(out, &value),
        },
        VmCommand::Vcpus => match serde_json::from_value::<Vec<VcpuInfo>>(value.clone()) {
            Ok(vcpus) => print_vcpus(out, &vcpus),
            Err(_) => print_json(out, &value),
        },
        VmCommand::Numa => match serde_json::from_value::<NumaInfo>(value.clone()) {
            Ok(numa) => print_numa(out, &numa),
            Err(_) => print_json(out, &value),
        },
        VmCommand::AddDisk(_) | VmCommand::AddNet(_) => match added(&value) {
            Some((id, pci)) => w!(out, "added {id} at {pci}"),
            None if value.is_null() => w!(out, "added"),
            None => print_json(out, &value),
        },
        _ if !value.is_null() => print_json(out, &value),
        VmCommand::Pause => w!(out, "paused"),
        VmCommand::Resume => w!(out, "resumed"),
        VmCommand::Shutdown => w!(out, "power button pressed; the guest decides"),
        VmCommand::Reset => w!(out, "reset"),
        VmCommand::Poweroff => w!(out, "powering off"),
        VmCommand::RemoveDevice { id } => {
            w!(
                out,
                "asked the guest to release {id}; it goes when the guest ejects it"
            )
        }
        VmCommand::ResizeDisk { id, size, .. } => {
            w!(out, "resized {id} to {}", human_size(*size))
        }
        VmCommand::Balloon { size, stats_period } => {
            if let Some(size) = size {
                w!(out, "balloon target set to {}", human_size(*size));
            }
            if let Some(period) = stats_period {
                w!(out, "balloon statistics period set to {period} s");
            }
        }
        VmCommand::VcpuPin { vcpu, cpus } => {
            w!(
                out,
                "vCPU {vcpu} pinned to host CPUs {}",
                cpu_list_string(&cpus.0)
            )
        }
        VmCommand::EmulatorPin { cpus } => {
            w!(
                out,
                "emulator threads pinned to host CPUs {}",
                cpu_list_string(&cpus.0)
            )
        }
    }
}

/// One line per vCPU, as virsh vcpuinfo says it, in columns.
fn print_vcpus(out: &mut String, vcpus: &[VcpuInfo]) {
    w!(
        out,
        "{:<5} {:<5} {:<8} {:<4} {:<12} CPU-TIME",
        "VCPU",
        "APIC",
        "TID",
        "CPU",
        "AFFINITY"
    );
    for v in vcpus {
        w!(
            out,
            "{:<5} {:<5} {:<8} {:<4} {:<12} {:.3}s",
            v.id,
            v.apic_id,
            v.tid,
            v.cpu,
            cpu_list_string(&v.affinity),
            // Display only: seconds with millisecond precision.
            std::time::Duration::from_nanos(v.cpu_time_ns).as_secs_f64()
        );
    }
}

/// The cells, then the distance matrix.
fn print_numa(out: &mut String, numa: &NumaInfo) {
    if numa.cells.is_empty() {
        w!(out, "no NUMA cells: the guest sees one node");
        return;
    }
    for c in &numa.cells {
        let ids = |v: &[u32]| vmm::numa::list_string(v);
        let binding = match (&c.policy, c.host_nodes.is_empty()) {
            (Some(p), false) => format!(", host nodes {} ({p})", ids(&c.host_nodes)),
            _ => String::new(),
        };
        w!(
            out,
            "cell {}: {}, vCPUs {}{binding}",
            c.id,
            human_size(c.memory_bytes),
            ids(&c.cpus)
        );
    }
    w!(out, "distances:");
    for (i, row) in numa.distances.iter().enumerate() {
        let cols: Vec<String> = row.iter().map(|d| format!("{d:>4}")).collect();
        w!(out, "  {i:>3}:{}", cols.join(""));
    }
}

/// `name value` lines, as virsh dommemstat prints them (KiB for sizes).
fn print_balloon(out: &mut String, info: &BalloonInfo) {
    w!(out, "actual {}", info.actual_kib);
    w!(out, "target {}", info.target_kib);
    for (name, value) in &info.stats {
        w!(out, "{name} {value}");
    }
    if let Some(t) = info.last_update {
        w!(out, "last_update {t}");
    }
    w!(out, "stats_period {}", info.stats_period);
}

/// The id and PCI address of a hot-plugged device, from the VM's answer.
fn added(value: &Value) -> Option<(&str, &str)> {
    Some((value.get("id")?.as_str()?, value.get("pci")?.as_str()?))
}

fn print_json(out: &mut String, value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => w!(out, "{text}"),
        Err(_) => w!(out, "{value}"),
    }
}

fn print_info(out: &mut String, info: &VmInfo) {
    let state = serde_json::to_value(info.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", info.state));
    w!(out, "state:   {state}");
    w!(out, "cpus:    {}", info.cpus);
    w!(out, "memory:  {}", human_size(info.memory_bytes));
    if let Some(kernel) = &info.kernel {
        w!(out, "kernel:  {kernel}");
    }
    if let Some(cmdline) = &info.cmdline {
        w!(out, "cmdline: {cmdline}");
    }
    if info.devices.is_empty() {
        w!(out, "devices: none");
        return;
    }
    w!(out, "devices:");
    let id_w = info.devices.iter().map(|d| d.id.len()).max().unwrap_or(0);
    let kind_w = info.devices.iter().map(|d| d.kind.len()).max().unwrap_or(0);
    for d in &info.devices {
        let details: Vec<String> = d.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let line = format!(
            "  {:id_w$}  {:kind_w$}  {}  {}",
            d.id,
            d.kind,
            d.pci,
            details.join(" ")
        );
        w!(out, "{}", line.trim_end());
    }
}

fn print_counters(out: &mut String, counters: &Counters) {
    let mut rows: Vec<[String; 3]> = Vec::new();
    for (device, values) in &counters.devices {
        for (name, value) in values {
            rows.push([device.clone(), name.clone(), value.to_string()]);
        }
    }
    print_table(out, ["DEVICE", "COUNTER", "VALUE"], &rows);
    let mut rows: Vec<[String; 3]> = Vec::new();
    for (vcpu, exits) in &counters.vcpus {
        for (reason, count) in exits {
            rows.push([vcpu.to_string(), reason.clone(), count.to_string()]);
        }
    }
    w!(out);
    print_table(out, ["VCPU", "EXIT", "COUNT"], &rows);
}

/// Left-aligned columns, the last (numbers) right-aligned.
fn print_table(out: &mut String, header: [&str; 3], rows: &[[String; 3]]) {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let (a, b, c) = (width(0), width(1), width(2));
    w!(out, "{:a$}  {:b$}  {:>c$}", header[0], header[1], header[2]);
    for r in rows {
        w!(out, "{:a$}  {:b$}  {:>c$}", r[0], r[1], r[2]);
    }
}

/// Bytes as the largest binary unit that divides them exactly.
fn human_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes & ((1 << shift) - 1) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_sizes() {
        assert_eq!(parse_disk_size("2G"), Ok(2 << 30));
        assert_eq!(parse_disk_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_disk_size("4096"), Ok(4096));
        assert_eq!(parse_disk_size("1k"), Ok(1024));
        assert!(parse_disk_size("0").is_err());
        assert_eq!(parse_disk_size("1.5G"), Ok(3 << 29));
        assert!(parse_disk_size("G").is_err());
        assert!(parse_disk_size("99999999999T").is_err());
    }

    #[test]
    fn specs_from_run_syntax() {
        let d: DiskConfig = "path=/a.img,readonly=on,cache=none,serial=s,queues=2"
            .parse()
            .unwrap();
        let spec = disk_spec(&d, Some("d1".into()));
        assert_eq!(spec.id.as_deref(), Some("d1"));
        assert_eq!(spec.path, PathBuf::from("/a.img"));
        assert!(spec.readonly);
        assert_eq!(spec.cache.as_deref(), Some("none"));
        assert_eq!(spec.queues, Some(2));
        let n: NetConfig = "tap=t0,mac=52:54:00:ab:cd:0e".parse().unwrap();
        let spec = net_spec(&n, None);
        assert_eq!(spec.mac.as_deref(), Some("52:54:00:ab:cd:0e"));
        assert_eq!(spec.tap.as_deref(), Some("t0"));
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(128 << 20), "128 MiB");
        assert_eq!(human_size(3 << 30), "3 GiB");
        assert_eq!(human_size(1536 << 20), "1536 MiB");
        assert_eq!(human_size(1000), "1000 bytes");
    }
}
