//! The `devices` element: what Vireo models, and the rule for the rest.

pub mod balloon;
pub mod chardev;
pub mod disk;
pub mod host_port;
pub mod interface;
pub mod interface_policy;
pub mod network_disk;
pub mod rng;

use crate::error::Error;
use crate::node::{Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

use balloon::MemBalloon;
use chardev::CharDevice;
use disk::Disk;
use interface::Interface;
use rng::Rng;

/// The domain's devices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Devices {
    /// `emulator`: kept; it does not choose the driver.
    pub emulator: Option<String>,
    /// Disks, in document order.
    pub disks: Vec<Disk>,
    /// NICs, in document order.
    pub interfaces: Vec<Interface>,
    /// Serial ports (at most one: COM1).
    pub serials: Vec<CharDevice>,
    /// Consoles.
    pub consoles: Vec<CharDevice>,
    /// Entropy devices.
    pub rngs: Vec<Rng>,
    /// The memory balloon, when the document has a `memballoon`.
    pub memballoon: Option<MemBalloon>,
    /// Devices stated but needing nothing from Vireo, kept for writing back.
    pub kept: Vec<RawElement>,
}

const DEVICES_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "controller",
        Unmodelled::Keep(
            "controllers are implied (every Vireo device sits on Vireo's own PCI root)",
        ),
    ),
    (
        "channel",
        Unmodelled::Keep("guest agent and other channels are not provided yet"),
    ),
    (
        "graphics",
        Unmodelled::Refuse("Vireo has no display; use a serial or virtio console"),
    ),
    (
        "video",
        Unmodelled::Refuse("Vireo has no display adapter (only model type='none' is accepted)"),
    ),
    ("sound", Unmodelled::Refuse("Vireo has no sound device")),
    ("audio", Unmodelled::Refuse("Vireo has no sound device")),
    (
        "hostdev",
        Unmodelled::Refuse("Vireo has no device assignment"),
    ),
    ("redirdev", Unmodelled::Refuse("Vireo has no USB")),
    ("hub", Unmodelled::Refuse("Vireo has no USB")),
    (
        "smartcard",
        Unmodelled::Refuse("Vireo has no smartcard device"),
    ),
    ("tpm", Unmodelled::Refuse("Vireo has no TPM")),
    (
        "watchdog",
        Unmodelled::Refuse("Vireo has no watchdog device"),
    ),
    (
        "filesystem",
        Unmodelled::Refuse("Vireo has no shared filesystem device"),
    ),
    ("parallel", Unmodelled::Refuse("Vireo has no parallel port")),
    ("panic", Unmodelled::Refuse("Vireo has no panic device")),
    (
        "shmem",
        Unmodelled::Refuse("Vireo has no shared memory device"),
    ),
    (
        "memory",
        Unmodelled::Refuse("memory hot-plug is not supported"),
    ),
    ("iommu", Unmodelled::Refuse("Vireo has no IOMMU")),
    ("vsock", Unmodelled::Refuse("vsock is not supported yet")),
    (
        "lease",
        Unmodelled::Refuse("leases come with storage pools"),
    ),
    ("crypto", Unmodelled::Refuse("Vireo has no crypto device")),
];

pub(crate) fn parse_devices(node: &Node<'_>, ctx: &mut Ctx) -> Result<Devices, Error> {
    node.check_attrs(ctx, &[]);
    let mut d = Devices::default();
    let mut targets = std::collections::HashSet::new();
    let mut taps = std::collections::HashSet::new();
    for child in node.children_indexed(true) {
        let c = child.node();
        match c.name() {
            "emulator" => {
                c.once(&d.emulator)?;
                c.check_attrs(ctx, &[]);
                c.warn(
                    ctx,
                    "<emulator> is kept but not acted on: the domain runs on Vireo's own VMM",
                );
                d.emulator = Some(c.text()?);
            }
            "disk" => {
                let disk = disk::parse_disk(&c, ctx)?;
                if !targets.insert(disk.target.clone()) {
                    return Err(c.refuse(format!("a second disk has target '{}'", disk.target)));
                }
                d.disks.push(disk);
            }
            "interface" => {
                let nic = interface::parse_interface(&c, ctx)?;
                if let Some(tap) = &nic.target {
                    if !taps.insert(tap.clone()) {
                        return Err(c.refuse(format!("a second interface has target '{tap}'")));
                    }
                }
                d.interfaces.push(nic);
            }
            "serial" => {
                if !d.serials.is_empty() {
                    return Err(c.refuse(
                        "a second serial port is not supported: Vireo's guest has one (COM1)",
                    ));
                }
                let serial = chardev::parse_chardev(&c, ctx)?;
                let differs = d.consoles.iter().any(|k| {
                    k.target == chardev::CharTarget::Serial && k.backend != serial.backend
                });
                if differs {
                    return Err(c.refuse(
                        "the serial port's type or source differs from the console on it",
                    ));
                }
                d.serials.push(serial);
            }
            "console" => {
                let console = chardev::parse_chardev(&c, ctx)?;
                check_serial_console(&c, &d, &console)?;
                d.consoles.push(console);
            }
            "rng" => d.rngs.push(rng::parse_rng(&c, ctx)?),
            "memballoon" => {
                c.once(&d.memballoon)?;
                d.memballoon = Some(balloon::parse_balloon(&c, ctx)?);
            }
            "input" => {
                let (kind, bus) = (c.attr("type").unwrap_or(""), c.attr("bus").unwrap_or("ps2"));
                if !matches!(kind, "mouse" | "keyboard") || bus != "ps2" {
                    return Err(c.refuse(format!(
                        "input type '{kind}' on bus '{bus}' is not supported: only the PS/2 keyboard and mouse every PC has are accepted"
                    )));
                }
                c.warn(ctx, "<input> is kept but not acted on: it states the PS/2 port Vireo's i8042 provides");
                d.kept.push(c.el.to_raw());
            }
            "video" if video_is_none(&c) => {
                c.warn(
                    ctx,
                    "<video> is kept but not acted on: it states that there is no display",
                );
                d.kept.push(c.el.to_raw());
            }
            _ => d.kept.push(c.unmodelled(ctx, DEVICES_UNMODELLED)?),
        }
    }
    Ok(d)
}

fn serial_consoles(d: &Devices) -> usize {
    d.consoles
        .iter()
        .filter(|c| c.target == chardev::CharTarget::Serial)
        .count()
}

/// A console of target type serial is, as in libvirt, another view of
/// the one serial port: it must agree with the `serial` element when
/// there is one (libvirt writes both for one UART).
fn check_serial_console(node: &Node<'_>, d: &Devices, console: &CharDevice) -> Result<(), Error> {
    if console.target != chardev::CharTarget::Serial {
        return Ok(());
    }
    if serial_consoles(d) > 0 {
        return Err(node.refuse(
            "a second console on the serial port is not supported: Vireo's guest has one (COM1)",
        ));
    }
    match d.serials.first() {
        Some(serial) if serial.backend != console.backend => Err(node.refuse(
            "this console is the serial port, but its type or source differs from the <serial> element's",
        )),
        _ => Ok(()),
    }
}

fn video_is_none(node: &Node<'_>) -> bool {
    node.children()
        .iter()
        .any(|m| m.el.name == "model" && m.node().attr("type") == Some("none"))
}

impl Devices {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("devices", &[]);
        if let Some(e) = &self.emulator {
            w.text("emulator", &[], e);
        }
        for d in &self.disks {
            d.write(w);
        }
        for i in &self.interfaces {
            i.write(w);
        }
        for s in &self.serials {
            s.write(w, "serial");
        }
        for c in &self.consoles {
            c.write(w, "console");
        }
        if let Some(b) = &self.memballoon {
            b.write(w);
        }
        for r in &self.rngs {
            r.write(w);
        }
        w.raws(&self.kept);
        w.close("devices");
    }
}
