//! Device verbs: attach-disk, detach-disk, attach-interface,
//! detach-interface, domblklist, domiflist.
//!
//! virsh's `--live`, `--config`, `--persistent` and `--current` are
//! resolved here against the domain's state, so the daemon always hears
//! exactly which of the running domain and its definition to change.

use clap::Args;
use manager::api::DeviceRequest;
use manager::client::{Client, DeviceKind};

use super::info::DomJsonArgs;
use super::table::Table;
use super::{Failure, Output};

/// Where a change applies (virsh's flags).
#[derive(Debug, Default, Args)]
pub struct Scope {
    /// Change the running domain.
    #[arg(long)]
    pub live: bool,
    /// Change the persistent definition (the next boot).
    #[arg(long)]
    pub config: bool,
    /// Both when running, else the definition.
    #[arg(long)]
    pub persistent: bool,
    /// The running domain if it runs, else the definition (the default).
    #[arg(long)]
    pub current: bool,
}

/// `attach-disk`.
#[derive(Debug, Args)]
pub struct AttachDiskArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// The image file or block device (a path on the daemon's host).
    pub source: String,
    /// The guest's name for it (vdb).
    pub target: String,
    /// The driver name (qemu, the only one).
    #[arg(long, default_value = "qemu")]
    pub driver: String,
    /// The image format: raw or qcow2 (required: Vireo never probes it).
    #[arg(long)]
    pub subdriver: Option<String>,
    /// readonly, to attach it read-only.
    #[arg(long)]
    pub mode: Option<String>,
    /// file or block (default: block for a block device here, else file).
    #[arg(long)]
    pub sourcetype: Option<String>,
    /// Cache mode (none, writeback).
    #[arg(long)]
    pub cache: Option<String>,
    /// The disk's serial.
    #[arg(long)]
    pub serial: Option<String>,
    /// Print the XML instead of attaching.
    #[arg(long)]
    pub print_xml: bool,
    #[command(flatten)]
    pub scope: Scope,
}

/// `detach-disk`.
#[derive(Debug, Args)]
pub struct DetachDiskArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// The disk's target (vdb) or source path.
    pub target: String,
    #[command(flatten)]
    pub scope: Scope,
}

/// `attach-interface`.
#[derive(Debug, Args)]
pub struct AttachInterfaceArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// bridge, ethernet or direct.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// The host bridge (bridge), the host device (direct), or the TAP when --target is not given (ethernet).
    #[arg(long)]
    pub source: Option<String>,
    /// How a direct NIC shares its device: bridge, vepa, private or passthrough (libvirt's default: vepa).
    #[arg(long)]
    pub source_mode: Option<String>,
    /// The host TAP device's name.
    #[arg(long)]
    pub target: Option<String>,
    /// The guest's MAC address (default: generated).
    #[arg(long)]
    pub mac: Option<String>,
    /// The NIC model (virtio).
    #[arg(long, default_value = "virtio")]
    pub model: String,
    /// Print the XML instead of attaching.
    #[arg(long)]
    pub print_xml: bool,
    #[command(flatten)]
    pub scope: Scope,
}

/// `detach-interface`.
#[derive(Debug, Args)]
pub struct DetachInterfaceArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// bridge, ethernet, network or direct.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// Which one, when several of that type exist.
    #[arg(long)]
    pub mac: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
}

/// `domblklist`.
#[derive(Debug, Args)]
pub struct DomblklistArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Also the type and device columns.
    #[arg(long)]
    pub details: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `(live, config)` for `scope` on a domain that is (not) active.
fn resolve_scope(c: &mut Client, domain: &str, s: &Scope) -> Result<(bool, bool), Failure> {
    if s.current && (s.live || s.config || s.persistent) {
        return Err(Failure(
            "--current cannot be combined with --live, --config or --persistent".into(),
        ));
    }
    if s.live || s.config {
        return Ok((s.live || s.persistent, s.config || s.persistent));
    }
    let active = c.info(domain)?.value.summary.state.is_active();
    Ok(if s.persistent {
        (active, true)
    } else {
        (active, !active)
    })
}

/// XML-escape an attribute value (or text).
pub(super) fn attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The `<disk>` element `attach-disk` sends.
pub fn disk_xml(a: &AttachDiskArgs, source: &str, block: bool) -> Result<String, Failure> {
    let Some(format) = a.subdriver.as_deref() else {
        return Err(Failure(
            "attach-disk needs --subdriver raw or qcow2: Vireo never probes an image's format"
                .into(),
        ));
    };
    let kind = match a.sourcetype.as_deref() {
        Some("file") => "file",
        Some("block") => "block",
        None if block => "block",
        None => "file",
        Some(other) => {
            return Err(Failure(format!(
                "--sourcetype '{other}' is not supported: use file or block"
            )))
        }
    };
    let source_attr = if kind == "block" { "dev" } else { "file" };
    let mut driver = format!("<driver name='{}' type='{}'", attr(&a.driver), attr(format));
    if let Some(cache) = &a.cache {
        driver.push_str(&format!(" cache='{}'", attr(cache)));
    }
    driver.push_str("/>");
    let mut xml = format!(
        "<disk type='{kind}' device='disk'>\n  {driver}\n  <source {source_attr}='{}'/>\n  <target dev='{}' bus='virtio'/>\n",
        attr(source),
        attr(&a.target)
    );
    match a.mode.as_deref() {
        None => {}
        Some("readonly") => xml.push_str("  <readonly/>\n"),
        Some(other) => {
            return Err(Failure(format!(
                "--mode '{other}' is not supported: use readonly"
            )))
        }
    }
    if let Some(serial) = &a.serial {
        xml.push_str(&format!("  <serial>{}</serial>\n", attr(serial)));
    }
    xml.push_str("</disk>\n");
    Ok(xml)
}

/// `attach-disk`.
pub fn attach_disk(c: &mut Client, a: &AttachDiskArgs) -> Result<Output, Failure> {
    // The path is the daemon's; over a local socket it is also ours, so a
    // relative one is made absolute and a block device is recognised.
    let local = matches!(
        c.uri().transport,
        manager::client::uri::Transport::Unix { .. }
    );
    let mut args_source = a.source.clone();
    let mut block = false;
    if local {
        if let Ok(abs) = std::path::absolute(&a.source) {
            args_source = abs.display().to_string();
        }
        block = std::fs::metadata(&args_source)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    }
    let xml = disk_xml(a, &args_source, block)?;
    if a.print_xml {
        return Ok(Output::text(xml));
    }
    let (live, config) = resolve_scope(c, &a.domain, &a.scope)?;
    c.attach(
        &a.domain,
        DeviceKind::Disk,
        &DeviceRequest { xml, live, config },
    )?;
    Ok(Output::line("Disk attached successfully"))
}

/// `detach-disk`.
pub fn detach_disk(c: &mut Client, a: &DetachDiskArgs) -> Result<Output, Failure> {
    let disks = c.disks(&a.domain)?.value;
    let Some(disk) = disks
        .iter()
        .find(|d| d.target == a.target || d.source == a.target)
    else {
        return Err(Failure(format!(
            "No disk found whose source path or target is {}",
            a.target
        )));
    };
    let target = disk.target.clone();
    let (live, config) = resolve_scope(c, &a.domain, &a.scope)?;
    c.detach(&a.domain, DeviceKind::Disk, &target, live, config)?;
    Ok(Output::line("Disk detached successfully"))
}

/// The `<interface>` element `attach-interface` sends.
pub fn interface_xml(a: &AttachInterfaceArgs) -> Result<String, Failure> {
    let mut xml = format!("<interface type='{}'>\n", attr(&a.kind));
    match a.kind.as_str() {
        "bridge" => {
            let Some(bridge) = &a.source else {
                return Err(Failure(
                    "attach-interface --type bridge needs --source BRIDGE".into(),
                ));
            };
            xml.push_str(&format!("  <source bridge='{}'/>\n", attr(bridge)));
        }
        "direct" => {
            let Some(dev) = &a.source else {
                return Err(Failure(
                    "attach-interface --type direct needs --source DEVICE".into(),
                ));
            };
            match &a.source_mode {
                Some(m) => xml.push_str(&format!(
                    "  <source dev='{}' mode='{}'/>\n",
                    attr(dev),
                    attr(m)
                )),
                None => xml.push_str(&format!("  <source dev='{}'/>\n", attr(dev))),
            }
        }
        "ethernet" => {}
        other => {
            return Err(Failure(format!(
                "interface type '{other}' is not supported: use bridge, direct or ethernet"
            )))
        }
    }
    if a.source_mode.is_some() && a.kind != "direct" {
        return Err(Failure(
            "attach-interface --source-mode is for --type direct".into(),
        ));
    }
    let tap = match a.kind.as_str() {
        "ethernet" => a.target.as_ref().or(a.source.as_ref()),
        _ => a.target.as_ref(),
    };
    if let Some(tap) = tap {
        xml.push_str(&format!("  <target dev='{}'/>\n", attr(tap)));
    }
    if let Some(mac) = &a.mac {
        xml.push_str(&format!("  <mac address='{}'/>\n", attr(mac)));
    }
    xml.push_str(&format!(
        "  <model type='{}'/>\n</interface>\n",
        attr(&a.model)
    ));
    Ok(xml)
}

/// `attach-interface`.
pub fn attach_interface(c: &mut Client, a: &AttachInterfaceArgs) -> Result<Output, Failure> {
    let xml = interface_xml(a)?;
    if a.print_xml {
        return Ok(Output::text(xml));
    }
    let (live, config) = resolve_scope(c, &a.domain, &a.scope)?;
    c.attach(
        &a.domain,
        DeviceKind::Interface,
        &DeviceRequest { xml, live, config },
    )?;
    Ok(Output::line("Interface attached successfully"))
}

/// `detach-interface`.
pub fn detach_interface(c: &mut Client, a: &DetachInterfaceArgs) -> Result<Output, Failure> {
    let rows = c.interfaces(&a.domain)?.value;
    let matching: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == a.kind)
        .filter(|r| a.mac.as_ref().is_none_or(|m| r.mac.eq_ignore_ascii_case(m)))
        .collect();
    let mac = match (matching.as_slice(), &a.mac) {
        ([one], _) => one.mac.clone(),
        ([], Some(m)) => {
            return Err(Failure(format!(
                "No interface found whose type is {} and MAC address is {m}",
                a.kind
            )))
        }
        ([], None) => {
            return Err(Failure(format!(
                "No interface found whose type is {}",
                a.kind
            )))
        }
        (many, _) => {
            return Err(Failure(format!(
                "Domain has {} interfaces. Please specify which one to detach using --mac",
                many.len()
            )))
        }
    };
    let (live, config) = resolve_scope(c, &a.domain, &a.scope)?;
    c.detach(&a.domain, DeviceKind::Interface, &mac, live, config)?;
    Ok(Output::line("Interface detached successfully"))
}

/// `domblklist`.
pub fn domblklist(c: &mut Client, a: &DomblklistArgs) -> Result<Output, Failure> {
    let r = c.disks(&a.domain)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let mut t = if a.details {
        Table::new(&["Type", "Device", "Target", "Source"])
    } else {
        Table::new(&["Target", "Source"])
    };
    for d in &r.value {
        let source = if d.source.is_empty() { "-" } else { &d.source };
        if a.details {
            t.row(vec![
                d.kind.clone(),
                d.device.clone(),
                d.target.clone(),
                source.to_string(),
            ]);
        } else {
            t.row(vec![d.target.clone(), source.to_string()]);
        }
    }
    Ok(Output::text(t.render()))
}

/// `domiflist`.
pub fn domiflist(c: &mut Client, a: &DomJsonArgs) -> Result<Output, Failure> {
    let r = c.interfaces(&a.domain)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let mut t = Table::new(&["Interface", "Type", "Source", "Model", "MAC"]);
    for i in &r.value {
        t.row(vec![
            i.interface.clone(),
            i.kind.clone(),
            i.source.clone(),
            i.model.clone(),
            i.mac.clone(),
        ]);
    }
    Ok(Output::text(t.render()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_args(source: &str) -> AttachDiskArgs {
        AttachDiskArgs {
            domain: "d".into(),
            source: source.into(),
            target: "vdb".into(),
            driver: "qemu".into(),
            subdriver: Some("qcow2".into()),
            mode: Some("readonly".into()),
            sourcetype: None,
            cache: None,
            serial: None,
            print_xml: false,
            scope: Scope::default(),
        }
    }

    #[test]
    fn disk_element() {
        assert_eq!(
            disk_xml(&disk_args("x"), "/img/a'b.qcow2", false).unwrap(),
            "<disk type='file' device='disk'>\n  <driver name='qemu' type='qcow2'/>\n  \
             <source file='/img/a&apos;b.qcow2'/>\n  <target dev='vdb' bus='virtio'/>\n  \
             <readonly/>\n</disk>\n"
        );
        assert!(disk_xml(&disk_args("x"), "/dev/sdz", true)
            .unwrap()
            .contains("<disk type='block' device='disk'>\n  <driver name='qemu' type='qcow2'/>\n  <source dev='/dev/sdz'/>"));
        let mut a = disk_args("/x");
        a.subdriver = None;
        assert!(disk_xml(&a, "/x", false)
            .unwrap_err()
            .0
            .contains("--subdriver"));
    }

    #[test]
    fn interface_element() {
        let mut a = AttachInterfaceArgs {
            domain: "d".into(),
            kind: "bridge".into(),
            source: Some("br0".into()),
            target: None,
            mac: Some("52:54:00:00:00:01".into()),
            model: "virtio".into(),
            print_xml: false,
            scope: Scope::default(),
            source_mode: None,
        };
        assert_eq!(
            interface_xml(&a).unwrap(),
            "<interface type='bridge'>\n  <source bridge='br0'/>\n  \
             <mac address='52:54:00:00:00:01'/>\n  <model type='virtio'/>\n</interface>\n"
        );
        a.kind = "ethernet".into();
        a.source = Some("tap7".into());
        assert!(interface_xml(&a)
            .unwrap()
            .starts_with("<interface type='ethernet'>\n  <target dev='tap7'/>\n"));
        a.kind = "network".into();
        assert!(interface_xml(&a).is_err());
        a.kind = "direct".into();
        a.source = Some("eth1".into());
        a.source_mode = Some("bridge".into());
        assert!(interface_xml(&a)
            .unwrap()
            .starts_with("<interface type='direct'>\n  <source dev='eth1' mode='bridge'/>\n"));
        a.source_mode = None;
        assert!(interface_xml(&a).unwrap().contains("<source dev='eth1'/>"));
        a.source = None;
        assert!(interface_xml(&a).unwrap_err().0.contains("--source DEVICE"));
        a.kind = "bridge".into();
        a.source = Some("br0".into());
        a.source_mode = Some("vepa".into());
        assert!(interface_xml(&a).unwrap_err().0.contains("--source-mode"));
    }
}
