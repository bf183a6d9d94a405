//! The `qemu-system-x86_64` command line for a domain, and the check of
//! what this driver can map (`validate`).
//!
//! Devices are given as JSON (`-blockdev {...}`, `-device {...}`) where
//! QEMU 7.2 takes it, so a path holding a comma cannot split an option;
//! the QemuOpts-style options left (`-chardev`, `-netdev`, `-machine`)
//! double their commas.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use virtxml::devices::disk::{DiskDiscard, DiskIo};
use virtxml::devices::rng::RngBackend;
use virtxml::{
    CharBackend, CharDevice, CharTarget, CpuModel, Disk, DiskCache, DiskFormat, DiskSource, Domain,
    Interface, InterfaceKind, LifecycleAction, NetworkProtocol,
};

use crate::driver::DriverError;

/// PCIe root ports added at start for hot-plugged devices (QEMU cannot
/// hot-plug onto the root bus of microvm or q35).
pub const HOTPLUG_PORTS: usize = 4;

/// The machine family a domain runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `microvm` with PCIe (`pcie=on`): no firmware to emulate, the fast
    /// choice on kvm-pvm, and the default.
    Microvm,
    /// `microvm` for a domain without `<acpi/>`: QEMU's microvm describes
    /// its PCIe host through ACPI only, so there is no PCI bus at all.
    MicrovmNoPci,
    /// `pc` (i440FX): SeaBIOS, ACPI PCI hot-plug on its root bus.
    Pc,
    /// `q35`: SeaBIOS, PCIe.
    Q35,
}

impl Machine {
    /// The machine for `os/type/@machine`; `None` for a name this driver
    /// does not run.
    pub fn from_os(machine: Option<&str>) -> Option<Machine> {
        match machine {
            None | Some("microvm") => Some(Machine::Microvm),
            Some(m) if m == "pc" || m.starts_with("pc-i440fx") => Some(Machine::Pc),
            Some(m) if m == "q35" || m.starts_with("pc-q35") => Some(Machine::Q35),
            Some(_) => None,
        }
    }

    /// The machine for `os/type/@machine` and whether the domain has
    /// ACPI; `None` for a name this driver does not run.
    pub fn for_domain(domain: &Domain) -> Option<Machine> {
        let acpi = domain.features.as_ref().is_some_and(|f| f.acpi);
        match Machine::from_os(domain.os.machine.as_deref())? {
            Machine::Microvm if !acpi => Some(Machine::MicrovmNoPci),
            m => Some(m),
        }
    }

    /// The name kept in the run record ([`Machine::from_record`] reads it).
    pub fn record_name(self) -> &'static str {
        match self {
            Machine::MicrovmNoPci => "microvm-nopci",
            m => m.name(),
        }
    }

    /// The machine a run record names.
    pub fn from_record(name: &str) -> Option<Machine> {
        match name {
            "microvm-nopci" => Some(Machine::MicrovmNoPci),
            n => Machine::from_os(Some(n)),
        }
    }

    /// QEMU's name of the machine family.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Microvm | Machine::MicrovmNoPci => "microvm",
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        }
    }

    /// The bus cold-plugged PCI devices go on.
    pub fn root_bus(self) -> &'static str {
        match self {
            Machine::Pc => "pci.0",
            Machine::Microvm | Machine::MicrovmNoPci | Machine::Q35 => "pcie.0",
        }
    }

    /// The buses a hot-plugged device may go on, tried in order.
    pub fn hotplug_buses(self) -> Vec<String> {
        match self {
            Machine::Pc => vec!["pci.0".to_string()],
            Machine::MicrovmNoPci => Vec::new(),
            Machine::Microvm | Machine::Q35 => {
                (0..HOTPLUG_PORTS).map(|i| format!("hotplug{i}")).collect()
            }
        }
    }
}

/// The sockets and files a started QEMU has, all under the run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// The QMP socket.
    pub qmp: PathBuf,
    /// The socket standing in for the first `pty` console.
    pub console: PathBuf,
    /// QEMU's pid file.
    pub pidfile: PathBuf,
}

impl RunPaths {
    /// The paths under `run_dir`.
    pub fn new(run_dir: &Path) -> RunPaths {
        RunPaths {
            qmp: run_dir.join("qmp.sock"),
            console: run_dir.join("console.sock"),
            pidfile: run_dir.join("qemu.pid"),
        }
    }
}

/// Refuses, with one line naming the element, what this driver cannot map.
pub fn validate(domain: &Domain) -> Result<Machine, DriverError> {
    let refuse = |what: String| Err(DriverError::Unsupported(what));
    let Some(machine) = Machine::for_domain(domain) else {
        return refuse(format!(
            "/domain/os/type: machine '{}' is not run by the QEMU driver (use microvm, pc, q35, pc-i440fx-* or pc-q35-*)",
            domain.os.machine.as_deref().unwrap_or_default()
        ));
    };
    // Placement is the vireo driver's for now: refused here rather than
    // silently run unplaced.
    let d = domain;
    let unplaced = [
        (d.vcpu.cpuset.is_some(), "/domain/vcpu: cpuset="),
        (d.memory_backing.is_some(), "/domain/memoryBacking"),
        (
            d.cputune.as_ref().is_some_and(|t| {
                !t.vcpupins.is_empty() || t.emulatorpin.is_some() || !t.iothreadpins.is_empty()
            }),
            "/domain/cputune",
        ),
        (!d.iothreads.is_empty(), "/domain/iothreads"),
        (d.numatune.is_some(), "/domain/numatune"),
        (
            d.cpu.as_ref().is_some_and(|c| !c.numa.is_empty()),
            "/domain/cpu/numa",
        ),
        (
            d.devices.memballoon.as_ref().is_some_and(|b| b.virtio),
            "/domain/devices/memballoon",
        ),
        (
            d.current_memory_kib.is_some_and(|c| c != d.memory_kib),
            "/domain/currentMemory",
        ),
    ];
    let stops = |p: Option<virtxml::DiskErrorPolicy>| {
        matches!(
            p,
            Some(virtxml::DiskErrorPolicy::Stop | virtxml::DiskErrorPolicy::Enospc)
        )
    };
    if let Some(i) = d
        .devices
        .disks
        .iter()
        .position(|k| stops(k.error_policy) || stops(k.rerror_policy))
    {
        return refuse(format!(
            "/domain/devices/disk[{}]/driver: error policies that pause the VM are not handled by the QEMU driver yet (use report or ignore, or the vireo driver)",
            i + 1
        ));
    }
    if let Some((_, what)) = unplaced.iter().find(|(set, _)| *set) {
        return refuse(format!(
            "{what} is not applied by the QEMU driver (remove it or use the vireo driver)"
        ));
    }
    if machine == Machine::MicrovmNoPci {
        let d = &domain.devices;
        let virtio_console = d
            .serials
            .iter()
            .chain(&d.consoles)
            .any(|c| c.target == CharTarget::Virtio);
        let device = if !d.disks.is_empty() {
            Some("disk")
        } else if !d.interfaces.is_empty() {
            Some("interface")
        } else if !d.rngs.is_empty() {
            Some("rng")
        } else if virtio_console {
            Some("console")
        } else {
            None
        };
        if let Some(device) = device {
            return refuse(format!(
                "/domain/devices/{device}: a microvm without <features><acpi/> has no PCI bus under the QEMU driver (QEMU describes microvm's PCIe through ACPI): add <acpi/>, or use machine pc or q35"
            ));
        }
    }
    for (i, disk) in domain.devices.disks.iter().enumerate() {
        check_disk(disk, &format!("/domain/devices/disk[{}]", i + 1))?;
    }
    for (i, iface) in domain.devices.interfaces.iter().enumerate() {
        check_interface(iface, &format!("/domain/devices/interface[{}]", i + 1))?;
    }
    Ok(machine)
}

/// Refuses a disk this driver cannot map (`at` is its path, for the line).
pub fn check_disk(disk: &Disk, at: &str) -> Result<(), DriverError> {
    if disk.source.host_path().is_none() {
        return Err(DriverError::Unsupported(format!(
            "{at}/source: volume '{}' has not been looked up in its storage pool",
            disk.source.describe()
        )));
    }
    if disk.source.chap().is_some() {
        return Err(DriverError::Unsupported(format!(
            "{at}/source/auth: CHAP for iSCSI disks is not supported by the qemu driver yet: use the vireo driver"
        )));
    }
    if let DiskSource::Network(n) = &disk.source {
        if n.protocol == NetworkProtocol::Nfs && n.port.is_some() {
            return Err(DriverError::Unsupported(format!(
                "{at}/source/host: QEMU's nfs driver takes no port (it asks the server's portmapper); remove port= or use the vireo driver"
            )));
        }
    }
    if disk.io == Some(DiskIo::Native) && disk.cache != Some(DiskCache::None) {
        return Err(DriverError::Unsupported(format!(
            "{at}/driver: io='native' needs cache='none' under QEMU (it requires O_DIRECT)"
        )));
    }
    if !node_name_ok(&disk.target) {
        return Err(DriverError::Unsupported(format!(
            "{at}/target: dev '{}' cannot name a QEMU device (letters, digits, '-', '_', at most 24 bytes, starting with a letter)",
            disk.target.escape_debug()
        )));
    }
    Ok(())
}

/// Refuses an interface this driver cannot map.
pub fn check_interface(iface: &Interface, at: &str) -> Result<(), DriverError> {
    match (&iface.kind, iface.host_bridge()) {
        (InterfaceKind::Ethernet | InterfaceKind::Direct { .. }, _) | (_, Some(_)) => Ok(()),
        (_, None) => Err(DriverError::Unsupported(format!(
            "{at}: type 'network' needs the daemon, which plugs it into the network's bridge"
        ))),
    }
}

/// QEMU's node names and device ids: a letter, then letters, digits,
/// `-` and `_`; node names hold 31 bytes and ours add a 5-byte prefix.
fn node_name_ok(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && s.len() <= 24
}

/// Doubles the commas of a QemuOpts value.
fn opt(s: &str) -> String {
    s.replace(',', ",,")
}

/// The `-m` size: MiB when it divides, else KiB.
fn memory_arg(kib: u64) -> String {
    if kib.is_multiple_of(1024) {
        format!("{}M", kib / 1024)
    } else {
        format!("{kib}K")
    }
}

/// The `-cpu` value. `host` for host-passthrough and host-model (libvirt
/// expands host-model into a named model; this driver does not).
fn cpu_arg(domain: &Domain) -> String {
    let Some(cpu) = &domain.cpu else {
        return "host".to_string();
    };
    let mut s = match &cpu.model {
        CpuModel::HostPassthrough | CpuModel::HostModel => "host".to_string(),
        CpuModel::Custom(Some(name)) => name.clone(),
        CpuModel::Custom(None) => "qemu64".to_string(),
    };
    use virtxml::cpu::FeaturePolicy as P;
    for f in &cpu.features {
        let sign = match f.policy {
            P::Force | P::Require | P::Optional => '+',
            P::Disable | P::Forbid => '-',
        };
        s.push(',');
        s.push(sign);
        s.push_str(&opt(&f.name));
    }
    s
}

/// `iscsi://PORTAL/IQN/LUN` (as virtxml and the iscsi-direct pool write
/// it) split into QEMU's iscsi blockdev fields.
fn iscsi_parts(url: &str) -> Option<(&str, &str, u16)> {
    let rest = url.strip_prefix("iscsi://")?;
    let (portal, path) = rest.split_once('/')?;
    let (target, lun) = path.rsplit_once('/')?;
    Some((portal, target, lun.parse().ok()?))
}

/// The two `-blockdev` nodes (protocol, format) for `disk`, named
/// `file-TARGET` and `disk-TARGET`.
pub fn blockdev_nodes(disk: &Disk) -> (Value, Value) {
    // validate() refused a volume that was not resolved.
    let filename = disk.source.host_path().unwrap_or_default();
    let driver = if disk.source.is_block() {
        "host_device"
    } else {
        "file"
    };
    let nfs = match &disk.source {
        DiskSource::Network(n) if n.protocol == NetworkProtocol::Nfs => Some(n),
        _ => None,
    };
    let mut file = match (nfs, iscsi_parts(filename)) {
        // QEMU's own NFS client (block/nfs.c, libnfs; qemu-block-extra):
        // the file's whole path on the server, which it splits into the
        // export and the file as Vireo does.
        (Some(n), _) => {
            let mut f = json!({
                "driver": "nfs",
                "node-name": format!("file-{}", disk.target),
                "server": { "type": "inet", "host": n.host },
                "path": format!("/{}", n.target.trim_start_matches('/')),
                "read-only": disk.readonly,
            });
            if let Some(uid) = n.identity.and_then(|i| i.uid) {
                f["user"] = json!(uid);
            }
            if let Some(gid) = n.identity.and_then(|i| i.gid) {
                f["group"] = json!(gid);
            }
            f
        }
        // QEMU's own initiator (block/iscsi.c, libiscsi).
        (None, Some((portal, target, lun))) => json!({
            "driver": "iscsi",
            "node-name": format!("file-{}", disk.target),
            "transport": "tcp",
            "portal": portal,
            "target": target,
            "lun": lun,
            "read-only": disk.readonly,
        }),
        (None, None) => json!({
            "driver": driver,
            "node-name": format!("file-{}", disk.target),
            "filename": filename,
            "read-only": disk.readonly,
        }),
    };
    match disk.cache {
        Some(DiskCache::None) => file["cache"] = json!({ "direct": true }),
        Some(DiskCache::Unsafe) => file["cache"] = json!({ "no-flush": true }),
        Some(DiskCache::Writeback) | None => {}
    }
    // aio= is the file drivers' own option; the iscsi and nfs drivers
    // have none.
    let io = if disk.source.is_network() {
        None
    } else {
        disk.io
    };
    match io {
        Some(DiskIo::Native) => file["aio"] = json!("native"),
        Some(DiskIo::Threads) => file["aio"] = json!("threads"),
        Some(DiskIo::IoUring) => file["aio"] = json!("io_uring"),
        None => {}
    }
    let mut format = json!({
        "driver": match disk.format { DiskFormat::Raw => "raw", DiskFormat::Qcow2 => "qcow2" },
        "node-name": format!("disk-{}", disk.target),
        "file": format!("file-{}", disk.target),
        "read-only": disk.readonly,
    });
    if let Some(d) = disk.discard {
        let d = match d {
            DiskDiscard::Unmap => "unmap",
            DiskDiscard::Ignore => "ignore",
        };
        file["discard"] = json!(d);
        format["discard"] = json!(d);
    }
    if let Some(cache) = file.get("cache").cloned() {
        format["cache"] = cache;
    }
    (file, format)
}

/// The `virtio-blk-pci` device for `disk` on `bus`, id = target dev.
pub fn disk_device(disk: &Disk, bus: &str) -> Value {
    let mut dev = json!({
        "driver": "virtio-blk-pci",
        "id": disk.target,
        "drive": format!("disk-{}", disk.target),
        "bus": bus,
    });
    if let Some(s) = &disk.serial {
        dev["serial"] = json!(s);
    }
    // Only report and ignore reach here: `validate` refuses the rest.
    if let Some(p) = disk.error_policy {
        dev["werror"] = json!(p.as_str());
        if disk.rerror_policy.is_none() {
            dev["rerror"] = json!(p.as_str());
        }
    }
    if let Some(p) = disk.rerror_policy {
        dev["rerror"] = json!(p.as_str());
    }
    dev
}

/// The device id of a NIC: `net-` and its MAC's hex digits.
pub fn nic_id(mac: &virtxml::MacAddress) -> String {
    let b = mac.0;
    format!(
        "net-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

/// The netdev (as QMP `netdev_add` arguments) for an ethernet NIC.
pub fn netdev(iface: &Interface) -> Value {
    let mut nd = json!({
        "type": "tap",
        "id": format!("nd-{}", &nic_id(&iface.mac)[4..]),
        "script": "no",
        "downscript": "no",
    });
    if let Some(tap) = &iface.target {
        nd["ifname"] = json!(tap);
    }
    nd
}

/// The `virtio-net-pci` device for `iface` on `bus`.
pub fn nic_device(iface: &Interface, bus: &str) -> Value {
    json!({
        "driver": "virtio-net-pci",
        "id": nic_id(&iface.mac),
        "netdev": format!("nd-{}", &nic_id(&iface.mac)[4..]),
        "mac": iface.mac.to_string(),
        "bus": bus,
        // The guest boots its kernel directly: no PXE option ROM (whose
        // file comes in another package, ipxe-qemu).
        "romfile": "",
    })
}

/// A `-chardev` for `dev`, id `id`; a `pty` becomes a socket server at
/// `pty_socket` (QEMU's own pty would need a terminal to read).
fn chardev_arg(dev: &CharDevice, id: &str, pty_socket: &Path) -> String {
    match &dev.backend {
        CharBackend::Pty => format!(
            "socket,id={id},path={},server=on,wait=off",
            opt(&pty_socket.to_string_lossy())
        ),
        CharBackend::File { path, append } => format!(
            "file,id={id},path={},append={}",
            opt(path),
            if append.unwrap_or(false) { "on" } else { "off" }
        ),
        CharBackend::Unix { mode, path } => {
            let server = matches!(mode, virtxml::devices::chardev::UnixMode::Bind);
            if server {
                format!("socket,id={id},path={},server=on,wait=off", opt(path))
            } else {
                format!("socket,id={id},path={},server=off", opt(path))
            }
        }
        CharBackend::Null => format!("null,id={id}"),
    }
}

/// The TAP name for a bridge interface that names none: `vq`, the
/// domain's id (mod 100000) and `n` + its index at start or `h` + the
/// MAC's last two bytes when hot-plugged; at most 15 bytes.
pub fn bridge_tap_name(id: u32, iface: &Interface, index: Option<usize>) -> String {
    if let Some(t) = &iface.target {
        return t.clone();
    }
    let id = id % 100_000;
    match index {
        Some(i) => format!("vq{id}n{}", i % 1000),
        None => format!("vq{id}h{:02x}{:02x}", iface.mac.0[4], iface.mac.0[5]),
    }
}

/// The macvtap name for a hot-plugged direct interface that names none:
/// `vq`, the domain's id (mod 100000), `m` and the MAC's last two bytes.
pub fn direct_link_name(id: u32, iface: &Interface) -> String {
    if let Some(t) = &iface.target {
        return t.clone();
    }
    format!(
        "vq{}m{:02x}{:02x}",
        id % 100_000,
        iface.mac.0[4],
        iface.mac.0[5]
    )
}

/// The whole command line (without the program). `tap_fds[i]` is the
/// descriptor QEMU inherits for interface `i` when the driver opened its
/// TAP (a bridge port); the others are opened by name.
pub fn build(
    domain: &Domain,
    machine: Machine,
    paths: &RunPaths,
    debug_exit: bool,
    tap_fds: &[Option<i32>],
) -> Vec<OsString> {
    let acpi = domain.features.as_ref().is_some_and(|f| f.acpi);
    let acpi = if acpi { "on" } else { "off" };
    let machine_opts = match machine {
        Machine::Microvm => format!("microvm,accel=kvm,pcie=on,rtc=on,acpi={acpi}"),
        Machine::MicrovmNoPci => "microvm,accel=kvm,pcie=off,rtc=on,acpi=off".to_string(),
        Machine::Pc | Machine::Q35 => format!("{},accel=kvm,acpi={acpi}", machine.name()),
    };
    let mut a: Vec<String> = vec![
        "-nodefaults".to_string(),
        "-no-user-config".to_string(),
        "-display".to_string(),
        "none".to_string(),
        // Always held at start: the driver connects QMP before the guest
        // runs its first instruction, so no event is missed, then `cont`s
        // unless the domain starts paused.
        "-S".to_string(),
    ];
    let mut push = |k: &str, v: String| {
        a.push(k.to_string());
        a.push(v);
    };
    push(
        "-name",
        format!("guest={},debug-threads=on", opt(&domain.name)),
    );
    push("-uuid", domain.uuid.to_string());
    push("-machine", machine_opts);
    push("-cpu", cpu_arg(domain));
    push("-m", memory_arg(domain.memory_kib));
    let mut smp = domain.vcpu.count.to_string();
    if let Some(t) = domain.cpu.as_ref().and_then(|c| c.topology) {
        smp.push_str(&format!(
            ",sockets={},dies={},cores={},threads={}",
            t.sockets, t.dies, t.cores, t.threads
        ));
    }
    push("-smp", smp);
    push("-kernel", domain.os.kernel.clone());
    if let Some(i) = &domain.os.initrd {
        push("-initrd", i.clone());
    }
    if let Some(c) = &domain.os.cmdline {
        push("-append", c.clone());
    }
    let bus = machine.root_bus();
    if matches!(machine, Machine::Microvm | Machine::Q35) {
        for (i, _) in machine.hotplug_buses().iter().enumerate() {
            push(
                "-device",
                json!({
                    "driver": "pcie-root-port",
                    "id": format!("hotplug{i}"),
                    "bus": "pcie.0",
                    "chassis": i + 1,
                })
                .to_string(),
            );
        }
    }
    for disk in &domain.devices.disks {
        let (file, format) = blockdev_nodes(disk);
        push("-blockdev", file.to_string());
        push("-blockdev", format.to_string());
        push("-device", disk_device(disk, bus).to_string());
    }
    for (i, iface) in domain.devices.interfaces.iter().enumerate() {
        let nd = netdev(iface);
        let id = nd["id"].as_str().unwrap_or_default();
        // QEMU takes fd= alone: no ifname or scripts beside it.
        let s = match tap_fds.get(i).copied().flatten() {
            Some(fd) => format!("tap,id={id},fd={fd}"),
            None => {
                let mut s = format!("tap,id={id},script=no,downscript=no");
                if let Some(t) = &iface.target {
                    s.push_str(&format!(",ifname={}", opt(t)));
                }
                s
            }
        };
        push("-netdev", s);
        push("-device", nic_device(iface, bus).to_string());
    }
    // COM1: the first serial, else a console whose target is the serial
    // port (libvirt makes those one device).
    let com1 = domain.devices.serials.first().or_else(|| {
        domain
            .devices
            .consoles
            .iter()
            .find(|c| c.target == CharTarget::Serial)
    });
    let mut pty_used = false;
    let mut pty_socket = |dev: &CharDevice, n: usize| -> PathBuf {
        if matches!(dev.backend, CharBackend::Pty) && !pty_used {
            pty_used = true;
            paths.console.clone()
        } else {
            paths.console.with_file_name(format!("console{n}.sock"))
        }
    };
    if let Some(dev) = com1 {
        let sock = pty_socket(dev, 0);
        push("-chardev", chardev_arg(dev, "com1", &sock));
        push("-serial", "chardev:com1".into());
    }
    let virtio: Vec<&CharDevice> = domain
        .devices
        .serials
        .iter()
        .chain(&domain.devices.consoles)
        .filter(|c| c.target == CharTarget::Virtio)
        .collect();
    if !virtio.is_empty() {
        push(
            "-device",
            json!({"driver": "virtio-serial-pci", "id": "vserial0", "bus": bus}).to_string(),
        );
    }
    for (i, dev) in virtio.iter().enumerate() {
        let id = format!("vcon{i}");
        let sock = pty_socket(dev, i + 1);
        push("-chardev", chardev_arg(dev, &id, &sock));
        push(
            "-device",
            json!({"driver": "virtconsole", "chardev": id, "id": format!("virtconsole{i}")})
                .to_string(),
        );
    }
    for (i, rng) in domain.devices.rngs.iter().enumerate() {
        let id = format!("rng{i}");
        let obj = match &rng.backend {
            RngBackend::Random(path) => format!("rng-random,id={id},filename={}", opt(path)),
            RngBackend::Builtin => format!("rng-builtin,id={id}"),
        };
        push("-object", obj);
        push(
            "-device",
            json!({"driver": "virtio-rng-pci", "rng": id, "id": format!("virtio-rng{i}"), "bus": bus})
                .to_string(),
        );
    }
    if debug_exit {
        push(
            "-device",
            json!({"driver": "isa-debug-exit", "iobase": 0xf4, "iosize": 4}).to_string(),
        );
    }
    push(
        "-qmp",
        format!(
            "unix:{},server=on,wait=off",
            opt(&paths.qmp.to_string_lossy())
        ),
    );
    if domain.on_reboot != LifecycleAction::Restart {
        a.push("-no-reboot".into());
    }
    a.push("-pidfile".into());
    a.push(paths.pidfile.to_string_lossy().into_owned());
    a.into_iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(extra_os: &str, devices: &str, cpu: &str) -> Domain {
        Domain::parse(&format!(
            "<domain type='kvm'><name>d,1</name><memory unit='MiB'>128</memory><vcpu>2</vcpu>\
             <os><type arch='x86_64'{extra_os}>hvm</type><kernel>/k</kernel><cmdline>a b</cmdline></os>\
             <features><acpi/></features>{cpu}<on_reboot>destroy</on_reboot>\
             <devices>{devices}</devices></domain>"
        ))
        .unwrap()
        .domain
    }

    fn args(d: &Domain) -> Vec<String> {
        let m = validate(d).unwrap();
        build(
            d,
            m,
            &RunPaths::new(Path::new("/run/x")),
            true,
            &[None, Some(9)],
        )
        .into_iter()
        .map(|s| s.into_string().unwrap())
        .collect()
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn maps_an_iscsi_disk_to_qemus_iscsi_driver() {
        let d = domain(
            "",
            "<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none' io='native'/>\
             <source protocol='iscsi' name='iqn.2026-01.org.vireo:t1/2'><host name='169.254.77.1' port='3261'/></source>\
             <target dev='vda' bus='virtio'/></disk>",
            "",
        );
        let a = args(&d);
        let bd: Vec<Value> = after(&a, "-blockdev")
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(bd.len(), 2);
        assert_eq!(
            bd[0],
            json!({
                "driver": "iscsi",
                "node-name": "file-vda",
                "transport": "tcp",
                "portal": "169.254.77.1:3261",
                "target": "iqn.2026-01.org.vireo:t1",
                "lun": 2,
                "read-only": false,
                "cache": { "direct": true },
            })
        );
        assert_eq!(bd[1]["driver"], "raw");
        assert_eq!(bd[1]["file"], "file-vda");
    }

    #[test]
    fn maps_an_nfs_disk_to_qemus_nfs_driver() {
        let d = domain(
            "",
            "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
             <source protocol='nfs' name='srv/vm/disk.img'><host name='169.254.78.1'/>\
             <identity user='+0' group='+0'/></source><target dev='vda' bus='virtio'/></disk>",
            "",
        );
        let a = args(&d);
        let bd: Vec<Value> = after(&a, "-blockdev")
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(
            bd[0],
            json!({
                "driver": "nfs",
                "node-name": "file-vda",
                "server": { "type": "inet", "host": "169.254.78.1" },
                "path": "/srv/vm/disk.img",
                "read-only": false,
                "user": 0,
                "group": 0,
            })
        );
        assert_eq!(bd[1]["driver"], "raw");
        let with_port = domain(
            "",
            "<disk type='network'><driver type='raw'/><source protocol='nfs' name='e/f'>\
             <host name='h' port='2049'/></source><target dev='vda'/></disk>",
            "",
        );
        let e = validate(&with_port).unwrap_err().to_string();
        assert!(e.contains("takes no port"), "{e}");
    }

    #[test]
    fn maps_a_full_domain() {
        let d = domain(
            "",
            "<disk type='file'><driver type='qcow2' cache='none' io='native' discard='unmap'/>\
             <source file='/i,1.qcow2'/><target dev='vda'/><serial>S1</serial><readonly/></disk>\
             <disk type='block'><driver type='raw'/><source dev='/dev/sdz'/><target dev='vdb'/></disk>\
             <interface type='ethernet'><mac address='52:54:00:aa:bb:cc'/><target dev='tap7'/></interface>\
             <serial type='pty'/><rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>",
            "<cpu mode='custom'><model>qemu64</model><topology sockets='1' cores='2' threads='1'/>\
             <feature policy='disable' name='pni'/></cpu>",
        );
        let a = args(&d);
        assert_eq!(
            after(&a, "-machine"),
            ["microvm,accel=kvm,pcie=on,rtc=on,acpi=on"]
        );
        assert_eq!(after(&a, "-cpu"), ["qemu64,-pni"]);
        assert_eq!(after(&a, "-m"), ["128M"]);
        assert_eq!(after(&a, "-smp"), ["2,sockets=1,dies=1,cores=2,threads=1"]);
        assert_eq!(after(&a, "-append"), ["a b"]);
        assert_eq!(after(&a, "-name"), ["guest=d,,1,debug-threads=on"]);
        let bd: Vec<Value> = after(&a, "-blockdev")
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        assert_eq!(bd.len(), 4);
        assert_eq!(bd[0]["filename"], "/i,1.qcow2");
        assert_eq!(bd[0]["aio"], "native");
        assert_eq!(bd[0]["cache"]["direct"], true);
        assert_eq!(bd[0]["read-only"], true);
        assert_eq!(bd[1]["driver"], "qcow2");
        assert_eq!(bd[1]["discard"], "unmap");
        assert_eq!(bd[2]["driver"], "host_device");
        assert_eq!(bd[3]["driver"], "raw");
        let devs: Vec<Value> = after(&a, "-device")
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        let vda = devs.iter().find(|d| d["id"] == "vda").unwrap();
        assert_eq!(vda["serial"], "S1");
        assert_eq!(vda["drive"], "disk-vda");
        let nic = devs
            .iter()
            .find(|d| d["driver"] == "virtio-net-pci")
            .unwrap();
        assert_eq!(nic["mac"], "52:54:00:aa:bb:cc");
        assert_eq!(nic["id"], "net-525400aabbcc");
        assert_eq!(
            after(&a, "-netdev"),
            ["tap,id=nd-525400aabbcc,script=no,downscript=no,ifname=tap7"]
        );
        assert!(devs.iter().any(|d| d["driver"] == "virtio-rng-pci"));
        assert_eq!(
            devs.iter()
                .filter(|d| d["driver"] == "pcie-root-port")
                .count(),
            HOTPLUG_PORTS
        );
        assert_eq!(
            after(&a, "-chardev"),
            ["socket,id=com1,path=/run/x/console.sock,server=on,wait=off"]
        );
        assert_eq!(after(&a, "-serial"), ["chardev:com1"]);
        assert_eq!(
            after(&a, "-qmp"),
            ["unix:/run/x/qmp.sock,server=on,wait=off"]
        );
        assert!(a.contains(&"-no-reboot".to_string()));
        assert!(a.contains(&"-S".to_string()));
        assert_eq!(after(&a, "-pidfile"), ["/run/x/qemu.pid"]);
    }

    #[test]
    fn machines_and_cpus() {
        let d = domain(
            " machine='pc-q35-8.2'",
            "",
            "<cpu mode='host-passthrough'/>",
        );
        let a = args(&d);
        assert_eq!(after(&a, "-machine"), ["q35,accel=kvm,acpi=on"]);
        assert_eq!(after(&a, "-cpu"), ["host"]);
        let d = domain(" machine='pc'", "", "");
        let a = args(&d);
        assert_eq!(after(&a, "-machine"), ["pc,accel=kvm,acpi=on"]);
        assert!(!a.iter().any(|s| s.contains("pcie-root-port")));
        let d = Domain::parse(
            "<domain type='kvm'><name>n</name><memory>65536</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os></domain>",
        )
        .unwrap()
        .domain;
        let a = args(&d);
        assert_eq!(
            after(&a, "-machine"),
            ["microvm,accel=kvm,pcie=off,rtc=on,acpi=off"]
        );
        assert!(!a.iter().any(|s| s.contains("pcie-root-port")));
        let mut with_disk = Domain::parse(
            "<domain type='kvm'><name>n</name><memory>65536</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os><devices><disk type='file'>\
             <driver type='raw'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
        )
        .unwrap()
        .domain;
        let e = validate(&with_disk).unwrap_err().to_string();
        assert!(
            e.starts_with("/domain/devices/disk: a microvm without"),
            "{e}"
        );
        with_disk.os.machine = Some("pc".into());
        assert_eq!(validate(&with_disk).unwrap(), Machine::Pc);
        let d = domain(" machine='virt'", "", "");
        let e = validate(&d).unwrap_err().to_string();
        assert!(e.starts_with("/domain/os/type: machine 'virt'"), "{e}");
    }

    #[test]
    fn bridge_ports_are_passed_by_descriptor() {
        let d = domain(
            "",
            "<interface type='ethernet'><mac address='52:54:00:00:00:01'/><target dev='t0'/></interface>\
             <interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/></interface>",
            "",
        );
        let a = args(&d);
        assert_eq!(
            after(&a, "-netdev"),
            [
                "tap,id=nd-525400000001,script=no,downscript=no,ifname=t0",
                "tap,id=nd-525400000002,fd=9"
            ]
        );
        let br = &d.devices.interfaces[1];
        assert_eq!(bridge_tap_name(7, br, Some(1)), "vq7n1");
        assert_eq!(bridge_tap_name(4_000_000_000, br, None), "vq0h0002");
        assert_eq!(bridge_tap_name(7, &d.devices.interfaces[0], None), "t0");
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let d = domain(
            "",
            "<interface type='network'><source network='default'/></interface>",
            "",
        );
        let e = validate(&d).unwrap_err().to_string();
        assert!(
            e.starts_with("/domain/devices/interface[1]: type 'network'"),
            "{e}"
        );
        let d = domain(
            "",
            "<disk type='file'><driver type='raw' io='native'/><source file='/a'/><target dev='vda'/></disk>",
            "",
        );
        let e = validate(&d).unwrap_err().to_string();
        assert!(
            e.starts_with("/domain/devices/disk[1]/driver: io='native'"),
            "{e}"
        );
        let d = domain(
            "",
            "<disk type='file'><driver type='raw'/><source file='/a'/><target dev='vd.a'/></disk>",
            "",
        );
        let e = validate(&d).unwrap_err().to_string();
        assert!(e.starts_with("/domain/devices/disk[1]/target: dev"), "{e}");
    }
}
