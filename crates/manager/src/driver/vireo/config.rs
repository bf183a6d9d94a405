//! From a domain definition to a `vireo run` command line.
//!
//! virtxml has already refused, at parse time, what no Vireo VM can have
//! (firmware, a device with no model, a disk bus other than virtio). What
//! is left here is what this driver cannot honour of a well-formed
//! definition; each refusal is one line naming the domain and the
//! element's path, as virtxml's errors do.
//!
//! The mapping, element by element:
//!
//! | definition | `vireo run` |
//! |---|---|
//! | `memory` (KiB) | `--memory NK`; a multiple of 4 KiB, at least 4 MiB |
//! | `currentMemory`, `memoryBacking`, `cpu/topology`, `cpu/numa`, `numatune`, `cputune`, `memballoon` | see [`placement`](super::placement) |
//! | `vcpu` | `--cpus`, 1 to 254 |
//! | `os/kernel`, `os/initrd` | `--kernel`, `--initrd`; absolute paths |
//! | `os/cmdline` | `--cmdline`; when absent, the VMM's default (`console=ttyS0 reboot=k panic=1`) |
//! | `cpu mode='host-passthrough'`, `'host-model'`, `custom` without a model | `--cpu-template host` |
//! | `cpu mode='custom'` with a named model | `--cpu-template minimal`: a conservative baseline (no XSAVE, AVX, CMPXCHG16B or TSC deadline timer), the nearest Vireo has to a named older model |
//! | `cpu/feature` | refused: the VMM offers no per-feature switches |
//! | `disk` | `--disk path=,format=,id=TARGET[,readonly=on][,cache=][,serial=]`; `format=` always (never probed); `cache='unsafe'` runs as `writeback`; a `type='network'` iSCSI disk (or an `iscsi-direct` volume) as `path=iscsi://HOST:PORT/IQN/LUN` |
//! | `interface type='ethernet'` | `--net tap=TARGET,mac=MAC,id=net-MAC` (without `target dev` the VMM creates a TAP the kernel names) |
//! | `interface type='bridge'` | the daemon creates the TAP (`target dev`, or `vrIDnN`), attaches it to the bridge and hands the VMM its descriptor (`--net fd=N`); the TAP goes when the VMM exits. Hot-plugged, the TAP is made persistent and named instead, and removed when unplugged or when the domain ends |
//! | `interface type='network'` | as `bridge`, on the bridge of the network the daemon plugged it into (`source bridge=` in the live XML); without one (not through the daemon) refused |
//! | `interface type='direct'` | the daemon creates a macvtap (`target dev`, or `vrIDdN`) on `source dev` in `source mode` with the guest's MAC, opens its `/dev/tapN` and hands the VMM the descriptor (`--net fd=N`); the macvtap is deleted when the VMM ends. Hot-plugged (`vrIDmN`), the VMM opens it by name; it is deleted when unplugged or when the domain ends |
//! | `serial` / `console` (COM1), `pty` or `null` | `--serial unix:RUN_DIR/console.sock`, what [`Instance::console`](crate::driver::Instance::console) connects to |
//! | `serial` / `console` (COM1), `unix mode='bind'` | `--serial unix:PATH` (the console connects there) |
//! | `serial` / `console` (COM1), `file` or `unix mode='connect'` | refused: COM1 must stay reachable as the domain's console |
//! | `console type='virtio'` | `--console file:PATH`, `unix:PATH`, `unix-connect:PATH`; `null` is `file:/dev/null`; `pty` and `append='on'` refused |
//! | `rng` | `--rng` (the host's getrandom, as `/dev/urandom` is); one at most |
//! | `on_reboot='restart'` | `--reboot`: the guest reboots inside the same process; otherwise the VMM exits on a reset |
//! | `on_poweroff`, `on_crash` | `destroy` and `restart` are the daemon's to act on; `preserve`, `rename-restart` and `coredump-*` are refused |

use std::path::{Path, PathBuf};

use virtxml::{
    CharBackend, CharDevice, CharTarget, CpuModel, Disk, DiskCache, DiskErrorPolicy, DiskFormat,
    Domain, Interface, InterfaceKind, LifecycleAction, MacAddress,
};

use crate::driver::DriverError;

/// The most vCPUs Vireo's VMM gives a guest.
const MAX_VCPUS: u32 = 254;

/// A TAP the daemon creates for a bridge interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct BridgeTap {
    /// The TAP's name.
    pub tap: String,
    /// The bridge it joins.
    pub bridge: String,
    /// The VLAN the port is an untagged member of (`vlan/tag`).
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Whether VLAN filtering may be turned on on the bridge for it: a
    /// network's bridge, not a host bridge someone else configures.
    #[serde(default)]
    pub may_filter: bool,
}

impl BridgeTap {
    /// The port for `iface` as TAP `tap` on `bridge`.
    pub fn for_interface(tap: String, bridge: &str, iface: &Interface) -> BridgeTap {
        BridgeTap {
            tap,
            bridge: bridge.to_string(),
            vlan: iface.vlan,
            may_filter: matches!(iface.kind, InterfaceKind::Network { .. }),
        }
    }
}

/// A bridge interface's TAP, made at start and handed to the VMM by
/// descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BridgePort {
    /// The TAP and its bridge.
    pub port: BridgeTap,
    /// The index in [`Plan::args`] of its `--net` value, which gets
    /// `,fd=N` once the TAP is open.
    pub arg: usize,
    /// The interface's index in the definition (the live definition
    /// names the TAP in its `target dev`).
    pub iface: usize,
}

/// A macvtap the daemon creates for a direct interface: deleted when
/// the domain ends or the card is unplugged (it does not go with its last
/// descriptor, as a TAP does).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DirectLink {
    /// The macvtap's name.
    pub name: String,
    /// The host device it sits on.
    pub dev: String,
}

/// A direct interface's macvtap, made at start and handed to the VMM by
/// descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirectPort {
    /// The macvtap and its host device.
    pub link: DirectLink,
    /// How it shares the device.
    pub mode: netvirt::link::MacvlanMode,
    /// The guest's MAC, which the macvtap takes.
    pub mac: MacAddress,
    /// The index in [`Plan::args`] of its `--net` value.
    pub arg: usize,
    /// The interface's index in the definition.
    pub iface: usize,
}

/// What starting a domain takes: the VMM's arguments and the host work
/// the driver does around it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Arguments after `vireo`.
    pub args: Vec<String>,
    /// The per-VM API socket.
    pub api_socket: PathBuf,
    /// Where COM1 listens.
    pub console_socket: PathBuf,
    /// Where the VMM writes why it ended.
    pub exit_status: PathBuf,
    /// TAPs to create and attach before the VMM starts.
    pub bridge_ports: Vec<BridgePort>,
    /// Macvtaps to create before the VMM starts.
    pub direct_ports: Vec<DirectPort>,
    /// The disks (their target names) whose CHAP secret the VMM reads
    /// from an inherited descriptor (`--secret id=TARGET,fd=N`, added at
    /// start), never from its command line.
    pub secrets: Vec<String>,
}

pub(super) fn push(args: &mut Vec<String>, flag: &str, value: String) {
    args.push(flag.into());
    args.push(value);
}

/// One refusal line: the domain, the element's path, what is wrong.
pub(super) fn refuse(domain: &Domain, path: &str, message: impl std::fmt::Display) -> DriverError {
    DriverError::Unsupported(format!("domain {}: {path}: {message}", domain.name))
}

/// A path the VMM opens: absolute, since it does not run in the client's
/// directory.
fn absolute(domain: &Domain, path: &str, what: &str, value: &str) -> Result<(), DriverError> {
    if Path::new(value).is_absolute() {
        Ok(())
    } else {
        Err(refuse(
            domain,
            path,
            format!("{what} '{value}' must be an absolute path (the VMM does not run in the client's directory)"),
        ))
    }
}

/// The host path of `disk`'s data; a volume the daemon has not looked up
/// in its pool has none.
fn host_path<'a>(domain: &Domain, path: &str, disk: &'a Disk) -> Result<&'a str, DriverError> {
    disk.source.host_path().ok_or_else(|| {
        refuse(
            domain,
            path,
            format!(
                "volume '{}' has not been looked up in its storage pool",
                disk.source.describe()
            ),
        )
    })
}

/// An iSCSI disk's URL with its CHAP user (`iscsi://USER@HOST/...`)
/// when it logs in with CHAP: the VMM is given the secret apart.
fn with_chap_user(disk: &Disk, url: &str) -> String {
    match (disk.source.chap(), url.strip_prefix("iscsi://")) {
        (Some(a), Some(rest)) => format!("iscsi://{}@{rest}", a.username),
        _ => url.to_string(),
    }
}

/// A value inside a `--disk`/`--net`/... option list: commas doubled.
fn opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// The API id of the NIC with this MAC: stable across attach and detach.
pub(crate) fn net_id(mac: &MacAddress) -> String {
    let b = mac.0;
    format!(
        "net-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

/// The TAP name for a bridge interface of domain `id` when the definition
/// gives none: `vr`, the id (mod 100000), then `n` + the interface's index
/// at start or `h` + a per-domain count for a hot-plugged one (`kind`),
/// mod 10000: at most 13 bytes, within IFNAMSIZ's 15 (as the QEMU
/// driver's `vq` names). A name that wrapped onto a TAP still in use is
/// refused by the kernel (busy), never shared.
pub(crate) fn bridge_tap_name(id: u32, kind: char, n: usize) -> String {
    format!("vr{}{kind}{}", id % 100_000, n % 10_000)
}

/// Checks `domain` and builds the command line for running it as `id`
/// with its sockets in `run_dir`, paused or not.
pub(crate) fn plan(
    domain: &Domain,
    id: u32,
    run_dir: &Path,
    paused: bool,
) -> Result<Plan, DriverError> {
    let api_socket = run_dir.join("api.sock");
    let exit_status = run_dir.join("exit.json");
    let mut args: Vec<String> = vec!["run".into()];

    check_lifecycle(domain)?;
    if !domain.memory_kib.is_multiple_of(4) || domain.memory_kib < 4096 {
        return Err(refuse(
            domain,
            "/domain/memory",
            format!(
                "{} KiB is not a multiple of 4 KiB of at least 4 MiB (guest RAM is mapped in pages)",
                domain.memory_kib
            ),
        ));
    }
    if domain.vcpu.count == 0 || domain.vcpu.count > MAX_VCPUS {
        return Err(refuse(
            domain,
            "/domain/vcpu",
            format!(
                "{} vCPUs: Vireo's VMM gives a guest 1 to {MAX_VCPUS}",
                domain.vcpu.count
            ),
        ));
    }
    absolute(domain, "/domain/os/kernel", "the kernel", &domain.os.kernel)?;
    push(&mut args, "--kernel", domain.os.kernel.clone());
    if let Some(initrd) = &domain.os.initrd {
        absolute(domain, "/domain/os/initrd", "the initrd", initrd)?;
        push(&mut args, "--initrd", initrd.clone());
    }
    if let Some(cmdline) = &domain.os.cmdline {
        push(&mut args, "--cmdline", cmdline.clone());
    }
    push(&mut args, "--memory", format!("{}K", domain.memory_kib));
    push(&mut args, "--cpus", domain.vcpu.count.to_string());
    push(&mut args, "--cpu-template", cpu_template(domain)?.into());
    super::placement::push_placement(domain, run_dir, &mut args)?;

    let mut secrets = Vec::new();
    for (i, disk) in domain.devices.disks.iter().enumerate() {
        push(&mut args, "--disk", disk_option(domain, i + 1, disk)?);
        if disk.source.chap().is_some() {
            secrets.push(disk.target.clone());
        }
    }
    let mut bridge_ports = Vec::new();
    let mut direct_ports = Vec::new();
    for (i, iface) in domain.devices.interfaces.iter().enumerate() {
        let path = format!("/domain/devices/interface[{}]", i + 1);
        let tap = match (&iface.kind, iface.host_bridge()) {
            (InterfaceKind::Ethernet, _) => iface.target.clone(),
            (InterfaceKind::Direct { dev, mode }, _) => {
                direct_ports.push(DirectPort {
                    link: DirectLink {
                        name: iface
                            .target
                            .clone()
                            .unwrap_or_else(|| bridge_tap_name(id, 'd', i)),
                        dev: dev.clone(),
                    },
                    mode: crate::driver::macvlan_mode(*mode),
                    mac: iface.mac,
                    arg: args.len() + 1,
                    iface: i,
                });
                None
            }
            (_, Some(bridge)) => {
                let tap = iface
                    .target
                    .clone()
                    .unwrap_or_else(|| bridge_tap_name(id, 'n', i));
                bridge_ports.push(BridgePort {
                    port: BridgeTap::for_interface(tap, bridge, iface),
                    arg: args.len() + 1,
                    iface: i,
                });
                // Handed over by descriptor: no tap= for the VMM.
                None
            }
            (_, None) => return Err(refuse(domain, &path, unresolved_network(iface))),
        };
        push(&mut args, "--net", net_option(iface, tap.as_deref()));
    }
    let console_socket = serial_socket(domain, run_dir)?;
    push(
        &mut args,
        "--serial",
        format!("unix:{}", console_socket.display()),
    );
    for (i, console) in domain.devices.consoles.iter().enumerate() {
        if console.target == CharTarget::Virtio {
            let path = format!("/domain/devices/console[{}]", i + 1);
            push(
                &mut args,
                "--console",
                virtio_console(domain, &path, console)?,
            );
        }
    }
    match domain.devices.rngs.len() {
        0 => {}
        1 => args.push("--rng".into()),
        _ => {
            return Err(refuse(
                domain,
                "/domain/devices/rng[2]",
                "a second rng: Vireo's VMM gives the guest one virtio-rng device",
            ))
        }
    }
    if domain.on_reboot == LifecycleAction::Restart {
        args.push("--reboot".into());
    }
    if paused {
        args.push("--paused".into());
    }
    args.push("--exit-status".into());
    args.push(exit_status.display().to_string());
    // Every thread confined, a forbidden call the end of the VMM (said in
    // exit.json), whatever `vireo run`'s default becomes.
    args.push("--seccomp=kill".into());
    args.push("--api-socket".into());
    args.push(api_socket.display().to_string());
    Ok(Plan {
        args,
        api_socket,
        console_socket,
        exit_status,
        bridge_ports,
        direct_ports,
        secrets,
    })
}

fn check_lifecycle(domain: &Domain) -> Result<(), DriverError> {
    for (name, action) in [
        ("on_poweroff", domain.on_poweroff),
        ("on_reboot", domain.on_reboot),
        ("on_crash", domain.on_crash),
    ] {
        let why = match action {
            LifecycleAction::Destroy | LifecycleAction::Restart => continue,
            LifecycleAction::Preserve => "keeping a stopped VM's resources is not supported",
            LifecycleAction::RenameRestart => "rename-restart is Xen's",
            LifecycleAction::CoredumpDestroy | LifecycleAction::CoredumpRestart => {
                "Vireo takes no guest memory dumps"
            }
        };
        return Err(refuse(
            domain,
            &format!("/domain/{name}"),
            format!(
                "'{}' is not supported: {why}; use destroy or restart",
                action.as_str()
            ),
        ));
    }
    Ok(())
}

fn cpu_template(domain: &Domain) -> Result<&'static str, DriverError> {
    let Some(cpu) = &domain.cpu else {
        return Ok("host");
    };
    if let Some(feature) = cpu.features.first() {
        return Err(refuse(
            domain,
            "/domain/cpu/feature[1]",
            format!(
                "feature '{}' (policy '{}'): Vireo's VMM has no per-feature CPU switches; choose a mode (host-passthrough, or custom with a model for the minimal template)",
                feature.name,
                feature.policy.as_str()
            ),
        ));
    }
    Ok(match &cpu.model {
        CpuModel::HostPassthrough | CpuModel::HostModel | CpuModel::Custom(None) => "host",
        CpuModel::Custom(Some(_)) => "minimal",
    })
}

fn disk_option(domain: &Domain, index: usize, disk: &Disk) -> Result<String, DriverError> {
    let path = format!("/domain/devices/disk[{index}]/source");
    let source = with_chap_user(disk, host_path(domain, &path, disk)?);
    let source = source.as_str();
    // A network disk's source is its iscsi:// or nfs:// URL, which the
    // VMM opens (an NFS file as raw or qcow2, as the driver type says).
    if !disk.source.is_network() {
        absolute(domain, &path, "the disk source", source)?;
    }
    let format = match disk.format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    };
    let mut o = format!(
        "path={},format={format},id={}",
        opt(source),
        opt(&disk.target)
    );
    // The CHAP secret comes on a descriptor (`--secret`), never here.
    if disk.source.chap().is_some() {
        o.push_str(&format!(",secret={}", opt(&disk.target)));
    }
    if disk.readonly {
        o.push_str(",readonly=on");
    }
    match disk.cache {
        Some(DiskCache::None) => o.push_str(",cache=none"),
        Some(DiskCache::Writeback | DiskCache::Unsafe) => o.push_str(",cache=writeback"),
        None => {}
    }
    if let Some(serial) = &disk.serial {
        o.push_str(&format!(",serial={}", opt(serial)));
    }
    let (werror, rerror) = error_policies(disk);
    if let Some(t) = &disk.iotune {
        for (key, v) in [
            ("bps", t.total_bytes_sec),
            ("bps_rd", t.read_bytes_sec),
            ("bps_wr", t.write_bytes_sec),
            ("iops", t.total_iops_sec),
            ("iops_rd", t.read_iops_sec),
            ("iops_wr", t.write_iops_sec),
        ] {
            if let Some(v) = v {
                o.push_str(&format!(",{key}={v}"));
            }
        }
    }
    if let Some(p) = werror {
        o.push_str(&format!(",werror={}", p.as_str()));
    }
    if let Some(p) = rerror {
        o.push_str(&format!(",rerror={}", p.as_str()));
    }
    if let Some(id) = disk.iothread {
        o.push_str(&format!(",iothread={id}"));
    }
    Ok(o)
}

/// libvirt's rule: `error_policy` covers reads too unless `rerror_policy`
/// says otherwise (and `enospace`, which reads cannot meet, covers only
/// writes).
fn error_policies(disk: &Disk) -> (Option<DiskErrorPolicy>, Option<DiskErrorPolicy>) {
    let read = disk
        .rerror_policy
        .or(disk.error_policy.filter(|p| *p != DiskErrorPolicy::Enospc));
    (disk.error_policy, read)
}

/// `--disk` for a hot-plug: the same fields as JSON for `PUT /vm/add-disk`.
pub(crate) fn disk_spec(domain: &Domain, disk: &Disk) -> Result<serde_json::Value, DriverError> {
    let source = with_chap_user(disk, host_path(domain, "/disk/source", disk)?);
    let source = source.as_str();
    if !disk.source.is_network() {
        absolute(domain, "/disk/source", "the disk source", source)?;
    }
    let mut spec = serde_json::json!({
        "id": disk.target,
        "path": source,
        "format": match disk.format { DiskFormat::Raw => "raw", DiskFormat::Qcow2 => "qcow2" },
        "readonly": disk.readonly,
    });
    if let Some(cache) = disk.cache {
        spec["cache"] = match cache {
            DiskCache::None => "none",
            DiskCache::Writeback | DiskCache::Unsafe => "writeback",
        }
        .into();
    }
    if let Some(serial) = &disk.serial {
        spec["serial"] = serial.clone().into();
    }
    if disk.iotune.is_some() {
        return Err(refuse(
            domain,
            "/disk/iotune",
            "I/O limits on a hot-plugged disk are not supported yet: attach it without <iotune>, or define it and restart",
        ));
    }
    if disk.iothread.is_some() {
        return Err(refuse(
            domain,
            "/disk/driver",
            "an I/O thread for a hot-plugged disk is not supported yet: attach it without iothread=, or define it and restart",
        ));
    }
    let (werror, rerror) = error_policies(disk);
    if let Some(p) = werror {
        spec["werror"] = p.as_str().into();
    }
    if let Some(p) = rerror {
        spec["rerror"] = p.as_str().into();
    }
    Ok(spec)
}

fn net_option(iface: &Interface, tap: Option<&str>) -> String {
    let mut o = format!("id={},mac={}", net_id(&iface.mac), iface.mac);
    if let Some(tap) = tap {
        o.push_str(&format!(",tap={}", opt(tap)));
    }
    o
}

/// Where COM1 listens: the run directory's console socket unless the
/// definition names a unix socket to bind.
fn serial_socket(domain: &Domain, run_dir: &Path) -> Result<PathBuf, DriverError> {
    let com1 = domain
        .devices
        .serials
        .iter()
        .map(|s| ("serial", s))
        .chain(
            domain
                .devices
                .consoles
                .iter()
                .filter(|c| c.target == CharTarget::Serial)
                .map(|c| ("console", c)),
        )
        .next();
    let Some((element, dev)) = com1 else {
        return Ok(run_dir.join("console.sock"));
    };
    let path = format!("/domain/devices/{element}[1]");
    match &dev.backend {
        CharBackend::Pty | CharBackend::Null => Ok(run_dir.join("console.sock")),
        CharBackend::Unix {
            mode: virtxml::devices::chardev::UnixMode::Bind,
            path: socket,
        } => {
            absolute(domain, &path, "the socket", socket)?;
            Ok(PathBuf::from(socket))
        }
        CharBackend::Unix { .. } => Err(refuse(
            domain,
            &path,
            "a unix back-end in connect mode is not supported on COM1: the serial port stays the domain's console (use pty, or unix mode='bind')",
        )),
        CharBackend::File { .. } => Err(refuse(
            domain,
            &path,
            "a file back-end is not supported on COM1: the serial port stays the domain's console (use pty; the daemon keeps the VMM's log)",
        )),
    }
}

fn virtio_console(domain: &Domain, path: &str, dev: &CharDevice) -> Result<String, DriverError> {
    match &dev.backend {
        CharBackend::File { path: file, append } => {
            if *append == Some(true) {
                return Err(refuse(
                    domain,
                    path,
                    "append='on' is not supported: Vireo's VMM truncates a console file",
                ));
            }
            absolute(domain, path, "the file", file)?;
            Ok(format!("file:{file}"))
        }
        CharBackend::Null => Ok("file:/dev/null".into()),
        CharBackend::Unix { mode, path: socket } => {
            absolute(domain, path, "the socket", socket)?;
            Ok(match mode {
                virtxml::devices::chardev::UnixMode::Bind => format!("unix:{socket}"),
                virtxml::devices::chardev::UnixMode::Connect => format!("unix-connect:{socket}"),
            })
        }
        CharBackend::Pty => Err(refuse(
            domain,
            path,
            "a virtio console on a pty is not supported by Vireo's VMM: use unix or file",
        )),
    }
}

/// Why a `network` interface reached a driver without its bridge: the
/// daemon fills the bridge in from the active network before a start or an
/// attach, so only a caller other than the daemon sees this.
pub(crate) fn unresolved_network(iface: &virtxml::Interface) -> String {
    match &iface.kind {
        InterfaceKind::Network { network, .. } => format!(
            "type='network' (network '{network}') needs the daemon, which plugs it into the network's bridge"
        ),
        _ => "this interface type needs the daemon".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_tap_names_fit_ifnamsiz() {
        assert_eq!(bridge_tap_name(7, 'n', 0), "vr7n0");
        assert_eq!(bridge_tap_name(7, 'h', 3), "vr7h3");
        let longest = bridge_tap_name(u32::MAX, 'h', usize::MAX);
        assert!(longest.len() <= 15, "{longest}");
        assert!(bridge_tap_name(99_999, 'n', 9_999).len() <= 15);
    }

    const BASE: &str = "<domain type='kvm'><name>t</name><memory unit='MiB'>64</memory>\
        <os><type>hvm</type><kernel>/k.elf</kernel></os>";

    fn domain(extra: &str) -> Domain {
        Domain::parse(&format!("{BASE}{extra}</domain>"))
            .unwrap()
            .domain
    }

    fn refusal(extra: &str) -> String {
        plan(&domain(extra), 1, Path::new("/run/v/1"), false)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn iotune_and_error_policies_ride_on_the_disk_option() {
        let d = domain(
            "<devices><disk type='file'><driver name='qemu' type='raw' error_policy='enospace'/>\
             <source file='/a.img'/><target dev='vda'/><iotune><total_iops_sec>400</total_iops_sec>\
             <read_bytes_sec>1000</read_bytes_sec></iotune></disk></devices>",
        );
        let p = plan(&d, 1, Path::new("/run/v/1"), false).unwrap();
        let i = p.args.iter().position(|a| a == "--disk").unwrap();
        assert_eq!(
            p.args[i + 1],
            "path=/a.img,format=raw,id=vda,bps_rd=1000,iops=400,werror=enospc"
        );
        let e = disk_spec(&d, &d.devices.disks[0]).unwrap_err().to_string();
        assert!(e.contains("hot-plugged disk"), "{e}");
    }

    #[test]
    fn an_nfs_network_disk_is_handed_over_as_its_url_raw_or_qcow2() {
        let d = domain(
            "<devices><disk type='network' device='disk'><driver name='qemu' type='raw'/>\
             <source protocol='nfs' name='srv/vm/disk.img'><host name='169.254.78.1'/>\
             <identity user='+0' group='+0'/></source><target dev='vda' bus='virtio'/></disk></devices>",
        );
        let p = plan(&d, 3, Path::new("/run/v/3"), false).unwrap();
        let line = p.args.join(" ");
        assert!(
            line.contains(
                "--disk path=nfs://169.254.78.1/srv/vm/disk.img?uid=0&gid=0,format=raw,id=vda"
            ),
            "{line}"
        );
        let spec = disk_spec(&d, &d.devices.disks[0]).unwrap();
        assert_eq!(
            spec["path"],
            "nfs://169.254.78.1/srv/vm/disk.img?uid=0&gid=0"
        );
        let q = domain(
            "<devices><disk type='network'><driver type='qcow2'/>\
             <source protocol='nfs' name='e/f.qcow2'><host name='h'/></source><target dev='vda'/></disk></devices>",
        );
        let p = plan(&q, 3, Path::new("/run/v/3"), false).unwrap();
        let line = p.args.join(" ");
        assert!(
            line.contains("--disk path=nfs://h/e/f.qcow2,format=qcow2,id=vda"),
            "{line}"
        );
        let spec = disk_spec(&q, &q.devices.disks[0]).unwrap();
        assert_eq!(spec["format"], "qcow2");
    }

    #[test]
    fn an_iscsi_network_disk_is_handed_over_as_its_url() {
        let d = domain(
            "<devices><disk type='network' device='disk'><driver name='qemu' type='raw'/>\
             <source protocol='iscsi' name='iqn.2026-01.org.vireo:t1/1'><host name='169.254.77.1'/></source>\
             <target dev='vda' bus='virtio'/></disk></devices>",
        );
        let p = plan(&d, 3, Path::new("/run/v/3"), false).unwrap();
        let line = p.args.join(" ");
        assert!(
            line.contains("--disk path=iscsi://169.254.77.1:3260/iqn.2026-01.org.vireo:t1/1,format=raw,id=vda"),
            "{line}"
        );
    }

    #[test]
    fn a_chap_disk_names_its_user_and_secret_id_but_never_the_secret() {
        let d = domain(
            "<devices><disk type='network' device='disk'><driver name='qemu' type='raw'/>\
             <source protocol='iscsi' name='iqn.2026-01.org.vireo:t1/1'><host name='169.254.77.1'/>\
             <auth username='vireo'><secret type='iscsi' usage='san'/></auth></source>\
             <target dev='vda' bus='virtio'/></disk></devices>",
        );
        let p = plan(&d, 3, Path::new("/run/v/3"), false).unwrap();
        let line = p.args.join(" ");
        assert!(
            line.contains("--disk path=iscsi://vireo@169.254.77.1:3260/iqn.2026-01.org.vireo:t1/1,format=raw,id=vda,secret=vda"),
            "{line}"
        );
        assert_eq!(p.secrets, vec!["vda".to_string()]);
        let spec = disk_spec(&d, &d.devices.disks[0]).unwrap();
        assert_eq!(
            spec["path"],
            "iscsi://vireo@169.254.77.1:3260/iqn.2026-01.org.vireo:t1/1"
        );
        assert!(spec.get("chap_secret").is_none());
    }

    #[test]
    fn maps_a_full_definition() {
        let d = domain(
            "<vcpu>2</vcpu><cpu mode='host-passthrough'/><on_reboot>restart</on_reboot>\
             <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>\
             <source file='/img/a,b.qcow2'/><target dev='vda' bus='virtio'/><serial>S1</serial></disk>\
             <interface type='ethernet'><mac address='52:54:00:00:00:01'/><target dev='tap7'/></interface>\
             <interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/></interface>\
             <serial type='pty'/><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng></devices>",
        );
        let p = plan(&d, 9, Path::new("/run/v/9"), true).unwrap();
        let line = p.args.join(" ");
        for part in [
            "--kernel /k.elf",
            "--memory 65536K",
            "--cpus 2",
            "--cpu-template host",
            "--disk path=/img/a,,b.qcow2,format=qcow2,id=vda,cache=none,serial=S1",
            "--net id=net-525400000001,mac=52:54:00:00:00:01,tap=tap7",
            "--net id=net-525400000002,mac=52:54:00:00:00:02 ",
            "--serial unix:/run/v/9/console.sock",
            "--rng",
            "--reboot",
            "--paused",
            "--exit-status /run/v/9/exit.json",
            "--seccomp=kill",
            "--api-socket /run/v/9/api.sock",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        assert_eq!(p.bridge_ports.len(), 1);
        let port = &p.bridge_ports[0];
        assert_eq!(
            port.port,
            BridgeTap {
                tap: "vr9n1".into(),
                bridge: "br0".into(),
                vlan: None,
                may_filter: false,
            }
        );
        assert_eq!(p.args[port.arg - 1], "--net");
        assert_eq!(
            p.args[port.arg],
            "id=net-525400000002,mac=52:54:00:00:00:02"
        );
    }

    #[test]
    fn refusals_name_the_domain_and_the_path() {
        assert_eq!(
            refusal("<currentMemory unit='MiB'>32</currentMemory>"),
            "domain t: /domain/currentMemory: 32768 KiB below memory (65536 KiB) needs a memory balloon: add <memballoon model='virtio'/>"
        );
        assert!(refusal("<on_crash>preserve</on_crash>")
            .starts_with("domain t: /domain/on_crash: 'preserve' is not supported"));
        assert!(refusal("<cpu mode='custom'><model>Skylake</model><feature policy='require' name='avx2'/></cpu>")
            .starts_with("domain t: /domain/cpu/feature[1]: feature 'avx2'"));
        assert!(refusal(
            "<devices><interface type='network'><source network='default'/></interface></devices>"
        )
        .starts_with("domain t: /domain/devices/interface[1]: type='network'"));
        assert!(
            refusal("<devices><serial type='file'><source path='/tmp/x'/></serial></devices>")
                .starts_with("domain t: /domain/devices/serial[1]: a file back-end")
        );
        assert!(refusal(
            "<devices><disk type='file'><driver type='raw'/><source file='rel.img'/><target dev='vda' bus='virtio'/></disk></devices>"
        )
        .starts_with("domain t: /domain/devices/disk[1]/source: the disk source 'rel.img' must be an absolute path"));
        let relative_kernel = Domain::parse(
            "<domain type='kvm'><name>t</name><memory unit='MiB'>64</memory><os><type>hvm</type><kernel>k.elf</kernel></os></domain>",
        )
        .unwrap()
        .domain;
        assert!(plan(&relative_kernel, 1, Path::new("/r"), false)
            .unwrap_err()
            .to_string()
            .starts_with(
                "domain t: /domain/os/kernel: the kernel 'k.elf' must be an absolute path"
            ));
    }

    #[test]
    fn consoles_rng_and_vcpus() {
        let d = domain(
            "<vcpu>4</vcpu><devices><serial type='unix'><source mode='bind' path='/run/c.sock'/></serial>\
             <console type='file'><source path='/var/log/c.log'/><target type='virtio'/></console>\
             <console type='null'><target type='virtio'/></console>\
             <console type='unix'><source mode='connect' path='/run/peer.sock'/><target type='virtio'/></console></devices>",
        );
        let line = plan(&d, 1, Path::new("/r"), false).unwrap().args.join(" ");
        for part in [
            "--cpus 4",
            "--serial unix:/run/c.sock",
            "--console file:/var/log/c.log",
            "--console file:/dev/null",
            "--console unix-connect:/run/peer.sock",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        assert!(!line.contains("console.sock"), "{line}");
        assert!(refusal("<vcpu>255</vcpu>")
            .starts_with("domain t: /domain/vcpu: 255 vCPUs: Vireo's VMM gives a guest 1 to 254"));
        let two_rngs =
            "<devices><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\
            <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng></devices>";
        assert!(refusal(two_rngs).starts_with("domain t: /domain/devices/rng[2]: a second rng"));
        assert!(refusal(
            "<devices><console type='pty'><target type='virtio'/></console></devices>"
        )
        .starts_with("domain t: /domain/devices/console[1]: a virtio console on a pty"));
    }

    #[test]
    fn a_named_custom_model_gets_the_minimal_template_and_no_reboot_flag_without_restart() {
        let d = domain(
            "<cpu mode='custom'><model>Westmere</model></cpu><on_reboot>destroy</on_reboot>",
        );
        let p = plan(&d, 1, Path::new("/r"), false).unwrap();
        assert!(p.args.join(" ").contains("--cpu-template minimal"));
        assert!(!p.args.iter().any(|a| a == "--reboot" || a == "--paused"));
    }
}
