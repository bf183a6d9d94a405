//! `os` (direct kernel boot; Vireo has no firmware) and `features`.

use crate::error::Error;
use crate::node::{Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

/// How the guest boots: always a kernel loaded directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Os {
    /// `type/@arch`; only x86_64 is accepted.
    pub arch: Option<String>,
    /// `type/@machine` as written; kept, but Vireo's machine is its own.
    pub machine: Option<String>,
    /// Path of the kernel (bzImage or PVH ELF) on the host.
    pub kernel: String,
    /// Path of the initrd on the host.
    pub initrd: Option<String>,
    /// The kernel command line.
    pub cmdline: Option<String>,
    /// Hints kept for writing back (`boot`, `bootmenu`, `bios`).
    pub kept: Vec<RawElement>,
}

const OS_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "boot",
        Unmodelled::Keep("the kernel is booted directly, so there is no boot order"),
    ),
    (
        "bootmenu",
        Unmodelled::Keep("there is no firmware boot menu"),
    ),
    ("bios", Unmodelled::Keep("there is no BIOS")),
    (
        "loader",
        Unmodelled::Refuse("Vireo has no firmware; boot a kernel with <kernel>"),
    ),
    (
        "nvram",
        Unmodelled::Refuse("Vireo has no firmware, so no firmware variables"),
    ),
    ("firmware", Unmodelled::Refuse("Vireo has no firmware")),
    (
        "smbios",
        Unmodelled::Refuse("Vireo provides no SMBIOS tables"),
    ),
    (
        "acpi",
        Unmodelled::Refuse("Vireo builds its own ACPI tables"),
    ),
    ("dtb", Unmodelled::Refuse("x86 guests have no device tree")),
];

pub(crate) fn parse_os(node: &Node<'_>, ctx: &mut Ctx) -> Result<Os, Error> {
    node.check_attrs(ctx, &["firmware"]);
    if let Some(fw) = node.attr("firmware") {
        return Err(node.refuse(format!(
            "firmware='{fw}' is not supported: Vireo has no firmware; boot a kernel with <kernel>"
        )));
    }
    let mut os_type = None;
    let mut arch = None;
    let mut machine = None;
    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = None;
    let mut kept = Vec::new();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "type" => {
                c.once(&os_type)?;
                c.check_attrs(ctx, &["arch", "machine"]);
                let t = c.text()?;
                if t != "hvm" {
                    return Err(c.refuse(format!(
                        "os type '{t}' is not supported: Vireo runs full (hvm) virtual machines"
                    )));
                }
                os_type = Some(t);
                if let Some(a) = c.attr("arch") {
                    if a != "x86_64" {
                        return Err(c.refuse(format!(
                            "arch='{a}' is not supported: Vireo runs x86_64 guests"
                        )));
                    }
                    arch = Some(a.to_string());
                }
                if let Some(m) = c.attr("machine") {
                    c.warn(
                        ctx,
                        format!("machine='{m}' is kept but Vireo's guest always sees Vireo's own machine"),
                    );
                    machine = Some(m.to_string());
                }
            }
            "kernel" | "initrd" | "cmdline" => {
                c.check_attrs(ctx, &[]);
                let slot = match c.name() {
                    "kernel" => &mut kernel,
                    "initrd" => &mut initrd,
                    _ => &mut cmdline,
                };
                c.once(slot)?;
                *slot = Some(c.raw_text()?);
            }
            _ => kept.push(c.unmodelled(ctx, OS_UNMODELLED)?),
        }
    }
    if os_type.is_none() {
        return Err(node.refuse("<os> needs a <type>hvm</type>"));
    }
    let kernel = kernel.filter(|k| !k.trim().is_empty()).ok_or_else(|| {
        node.refuse("<os> needs a <kernel>: Vireo has no firmware and boots a kernel directly")
    })?;
    Ok(Os {
        arch,
        machine,
        kernel: kernel.trim().to_string(),
        initrd: initrd
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()),
        cmdline,
        kept,
    })
}

impl Os {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("os", &[]);
        let mut attrs = Vec::new();
        if let Some(a) = &self.arch {
            attrs.push(("arch", a.as_str()));
        }
        if let Some(m) = &self.machine {
            attrs.push(("machine", m.as_str()));
        }
        w.text("type", &attrs, "hvm");
        w.text("kernel", &[], &self.kernel);
        if let Some(i) = &self.initrd {
            w.text("initrd", &[], i);
        }
        if let Some(c) = &self.cmdline {
            w.text("cmdline", &[], c);
        }
        w.raws(&self.kept);
        w.close("os");
    }
}

/// The `features` element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Features {
    /// The guest gets ACPI tables (and so the power button).
    pub acpi: bool,
    /// Stated; Vireo's guest always has a local APIC.
    pub apic: bool,
    /// Stated; an x86_64 CPU always has PAE.
    pub pae: bool,
    /// Hints kept for writing back.
    pub kept: Vec<RawElement>,
}

const FEATURES_UNMODELLED: &[(&str, Unmodelled)] = &[
    ("vmport", Unmodelled::Keep("Vireo has no VMware port")),
    (
        "hyperv",
        Unmodelled::Refuse("Vireo offers no Hyper-V enlightenments"),
    ),
    (
        "kvm",
        Unmodelled::Refuse("KVM feature switches are not offered"),
    ),
    (
        "smm",
        Unmodelled::Refuse("Vireo has no system management mode"),
    ),
    ("ioapic", Unmodelled::Refuse("the IOAPIC is always KVM's")),
    (
        "pvspinlock",
        Unmodelled::Refuse("paravirtual spinlock switches are not offered"),
    ),
];

pub(crate) fn parse_features(node: &Node<'_>, ctx: &mut Ctx) -> Result<Features, Error> {
    node.check_attrs(ctx, &[]);
    let mut f = Features::default();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "acpi" => {
                c.leaf(ctx, &[])?;
                f.acpi = true;
            }
            "apic" | "pae" => {
                c.leaf(ctx, &[])?;
                c.warn(
                    ctx,
                    format!("<{}> states what Vireo's guest always has", c.name()),
                );
                if c.name() == "apic" {
                    f.apic = true;
                } else {
                    f.pae = true;
                }
            }
            "vmport" if c.attr("state") == Some("off") => {
                f.kept.push(c.unmodelled(ctx, FEATURES_UNMODELLED)?)
            }
            "vmport" => return Err(c.refuse("<vmport> is not supported: Vireo has no VMware port")),
            _ => f.kept.push(c.unmodelled(ctx, FEATURES_UNMODELLED)?),
        }
    }
    Ok(f)
}

impl Features {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("features", &[]);
        if self.acpi {
            w.empty("acpi", &[]);
        }
        if self.apic {
            w.empty("apic", &[]);
        }
        if self.pae {
            w.empty("pae", &[]);
        }
        w.raws(&self.kept);
        w.close("features");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn os(xml: &str) -> Result<(Os, usize), Error> {
        let el = read(xml).unwrap();
        let mut ctx = Ctx::default();
        let os = parse_os(&Node::root(&el, "/domain/os"), &mut ctx)?;
        Ok((os, ctx.warnings.len()))
    }

    #[test]
    fn direct_kernel_boot() {
        let (o, warnings) = os(
            "<os><type arch='x86_64' machine='q35'>hvm</type><kernel>/k</kernel>\
             <initrd>/i</initrd><cmdline>console=ttyS0</cmdline><boot dev='hd'/></os>",
        )
        .unwrap();
        assert_eq!(o.kernel, "/k");
        assert_eq!(o.initrd.as_deref(), Some("/i"));
        assert_eq!(o.cmdline.as_deref(), Some("console=ttyS0"));
        assert_eq!(o.machine.as_deref(), Some("q35"));
        assert_eq!(o.kept.len(), 1);
        assert_eq!(warnings, 2, "machine and boot each warn once");
    }

    #[test]
    fn firmware_and_foreign_guests_are_refused() {
        let e =
            os("<os><type>hvm</type><loader>/usr/share/OVMF.fd</loader><kernel>/k</kernel></os>")
                .unwrap_err()
                .to_string();
        assert!(
            e.starts_with("/domain/os/loader (line 1, column 21): <loader> is not supported"),
            "{e}"
        );
        assert!(os("<os firmware='efi'><type>hvm</type><kernel>/k</kernel></os>").is_err());
        assert!(os("<os><type arch='aarch64'>hvm</type><kernel>/k</kernel></os>").is_err());
        assert!(os("<os><type>xen</type><kernel>/k</kernel></os>").is_err());
        let e = os("<os><type>hvm</type></os>").unwrap_err().to_string();
        assert!(e.contains("needs a <kernel>"), "{e}");
    }

    #[test]
    fn features_acpi_and_noops() {
        let el = read("<features><acpi/><apic/><pae/><vmport state='off'/></features>").unwrap();
        let mut ctx = Ctx::default();
        let f = parse_features(&Node::root(&el, "/domain/features"), &mut ctx).unwrap();
        assert!(f.acpi && f.apic && f.pae);
        assert_eq!(f.kept.len(), 1);
        assert_eq!(ctx.warnings.len(), 3);
        let el = read("<features><hyperv/></features>").unwrap();
        let e = parse_features(&Node::root(&el, "/domain/features"), &mut ctx).unwrap_err();
        assert!(e.to_string().contains("/domain/features/hyperv"), "{e}");
    }
}
