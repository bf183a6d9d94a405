//! libvirt's interface XML (what `virsh iface-dumpxml` prints): a host
//! interface, plain Ethernet, a bridge with its ports, a VLAN device on
//! its parent, or a bond with its slaves. Same accept / warn / refuse
//! rule as the domain and network XML (see `docs/interface-xml.md`).
//!
//! One element family a file: [`protocol`] (addresses), [`kinds`]
//! (`bridge`, `vlan`, `bond`). No name appears twice in one tree: each
//! port or slave is checked against its master and earlier siblings as
//! it is read, so the refusal points at the element at fault.

pub mod kinds;
pub mod protocol;

use crate::devices::interface::{validate_ifname, MacAddress};
use crate::error::{Error, Warning};
use crate::network::link::parse_mtu;
use crate::node::{Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

use kinds::{BondDef, BridgeDef, VlanDef};
use protocol::Protocol;

/// When the host brings the interface up (`start mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// With the daemon: Vireo starts it when the daemon starts.
    Onboot,
    /// Only on `iface-start`.
    None,
    /// When its device appears; Vireo does not watch for devices, so it
    /// behaves as `none` (with a warning at define).
    Hotplug,
}

impl StartMode {
    /// The name in `mode=`.
    pub fn as_str(self) -> &'static str {
        match self {
            StartMode::Onboot => "onboot",
            StartMode::None => "none",
            StartMode::Hotplug => "hotplug",
        }
    }
}

/// What the interface is, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostInterfaceKind {
    /// `type='ethernet'`: an existing device (a NIC, one end of a veth).
    Ethernet,
    /// `type='bridge'`: a Linux bridge and its ports.
    Bridge(BridgeDef),
    /// `type='vlan'`: an 802.1Q device on a parent.
    Vlan(VlanDef),
    /// `type='bond'`: a bond and its slaves.
    Bond(BondDef),
}

impl HostInterfaceKind {
    /// The name in `type=`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HostInterfaceKind::Ethernet => "ethernet",
            HostInterfaceKind::Bridge(_) => "bridge",
            HostInterfaceKind::Vlan(_) => "vlan",
            HostInterfaceKind::Bond(_) => "bond",
        }
    }
}

/// A host interface definition, or one port of a bridge or slave of a
/// bond (which have no `start` and no `protocol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    /// The Linux interface name.
    pub name: String,
    /// What it is.
    pub kind: HostInterfaceKind,
    /// `start mode=`; absent on ports and slaves.
    pub start: Option<StartMode>,
    /// The MAC set when it starts.
    pub mac: Option<MacAddress>,
    /// The MTU set when it starts.
    pub mtu: Option<u32>,
    /// Addresses by family, at most one `protocol` per family.
    pub protocols: Vec<Protocol>,
    /// Elements kept for writing back (`link`).
    pub kept: Vec<RawElement>,
}

/// A parsed interface definition and what was accepted without being
/// acted on.
#[derive(Debug, Clone)]
pub struct ParsedHostInterface {
    /// The definition.
    pub interface: HostInterface,
    /// One warning per element or attribute kept or dropped unused.
    pub warnings: Vec<Warning>,
}

/// Where an interface sits in the tree: what it may hold follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The document's root.
    Top,
    /// A port of a bridge.
    BridgePort,
    /// A slave of a bond.
    BondSlave,
}

const IFACE_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "link",
        Unmodelled::Keep("link speed and state are the hardware's, reported and never set"),
    ),
    ("description", Unmodelled::Keep("it is for people")),
];

impl HostInterface {
    /// Parses an interface definition. Fails on malformed XML (with line
    /// and column) and on anything Vireo cannot make on the host (naming
    /// the element, its path and position); accepts with one warning each
    /// what it keeps without acting on.
    pub fn parse(xml: &str) -> Result<ParsedHostInterface, Error> {
        let (interface, warnings) = crate::node::parse_document(xml, |node, ctx| {
            if node.name() != "interface" {
                return Err(node.refuse(format!(
                    "the root element is <{}>, not <interface>",
                    node.name()
                )));
            }
            parse_iface(node, ctx, Role::Top)
        })?;
        Ok(ParsedHostInterface {
            interface,
            warnings,
        })
    }

    /// Every interface of the tree, this one first, then ports and
    /// slaves depth first.
    pub fn all(&self) -> Vec<&HostInterface> {
        let mut out = vec![self];
        for m in self.members() {
            out.extend(m.all());
        }
        out
    }

    /// The bridge's ports or the bond's slaves (none for the others).
    pub fn members(&self) -> &[HostInterface] {
        match &self.kind {
            HostInterfaceKind::Bridge(b) => &b.members,
            HostInterfaceKind::Bond(b) => &b.members,
            _ => &[],
        }
    }

    /// The start mode, `none` when unset.
    pub fn start_mode(&self) -> StartMode {
        self.start.unwrap_or(StartMode::None)
    }

    /// Writes the definition back as libvirt interface XML, kept
    /// elements included.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::default();
        self.write(&mut w);
        w.finish()
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let attrs = [("type", self.kind.as_str()), ("name", self.name.as_str())];
        let empty = self.start.is_none()
            && self.mac.is_none()
            && self.mtu.is_none()
            && self.protocols.is_empty()
            && self.kept.is_empty()
            && matches!(self.kind, HostInterfaceKind::Ethernet);
        if empty {
            w.empty("interface", &attrs);
            return;
        }
        w.open("interface", &attrs);
        if let Some(s) = self.start {
            w.empty("start", &[("mode", s.as_str())]);
        }
        if let Some(m) = self.mac {
            w.empty("mac", &[("address", &m.to_string())]);
        }
        if let Some(m) = self.mtu {
            w.empty("mtu", &[("size", &m.to_string())]);
        }
        for p in &self.protocols {
            p.write(w);
        }
        match &self.kind {
            HostInterfaceKind::Ethernet => {}
            HostInterfaceKind::Bridge(b) => b.write(w),
            HostInterfaceKind::Vlan(v) => v.write(w),
            HostInterfaceKind::Bond(b) => b.write(w),
        }
        w.raws(&self.kept);
        w.close("interface");
    }
}

/// The `type=` values, and where each may appear.
fn parse_type(node: &Node<'_>, role: Role) -> Result<&'static str, Error> {
    let ty = node.need("type")?;
    let ty = match ty {
        "ethernet" => "ethernet",
        "bridge" => "bridge",
        "vlan" => "vlan",
        "bond" => "bond",
        other => {
            return Err(node.refuse(format!(
                "interface type '{other}' is not supported: Vireo makes ethernet, bridge, vlan and bond interfaces"
            )))
        }
    };
    match (role, ty) {
        (Role::BridgePort, "bridge") => {
            Err(node
                .refuse("a bridge cannot be a port of another bridge: Linux bridges do not nest"))
        }
        (Role::BondSlave, "ethernet") | (Role::Top | Role::BridgePort, _) => Ok(ty),
        (Role::BondSlave, other) => Err(node.refuse(format!(
            "a bond's slave must be type='ethernet', not '{other}'"
        ))),
    }
}

pub(crate) fn parse_iface(
    node: &Node<'_>,
    ctx: &mut Ctx,
    role: Role,
) -> Result<HostInterface, Error> {
    node.check_attrs(ctx, &["type", "name"]);
    let ty = parse_type(node, role)?;
    let name = node.need("name")?;
    validate_ifname(name).map_err(|e| node.refuse(format!("name: {e}")))?;
    let mut start = None;
    let mut mac = None;
    let mut mtu = None;
    let mut protocols: Vec<Protocol> = Vec::new();
    let mut bridge = None;
    let mut vlan = None;
    let mut bond = None;
    let mut kept = Vec::new();
    for child in node.children() {
        let c = child.node();
        let only_for = |want: &str| -> Result<(), Error> {
            if ty == want {
                Ok(())
            } else {
                Err(c.refuse(format!(
                    "<{}> is only for type='{want}', not '{ty}'",
                    c.name()
                )))
            }
        };
        match c.name() {
            "start" => {
                if role != Role::Top {
                    return Err(c.refuse(
                        "<start> is not allowed on a port or slave: it starts with its master",
                    ));
                }
                c.once(&start)?;
                c.leaf(ctx, &["mode"])?;
                start = Some(match c.need("mode")? {
                    "onboot" => StartMode::Onboot,
                    "none" => StartMode::None,
                    "hotplug" => {
                        c.warn(
                            ctx,
                            "mode='hotplug' acts as 'none': Vireo does not watch for devices, so iface-start starts it",
                        );
                        StartMode::Hotplug
                    }
                    other => {
                        return Err(c.refuse(format!(
                            "start mode '{other}' must be onboot, none or hotplug"
                        )))
                    }
                });
            }
            "mac" => {
                c.once(&mac)?;
                c.leaf(ctx, &["address"])?;
                mac = Some(
                    MacAddress::parse(c.need("address")?)
                        .map_err(|e| c.refuse(format!("address: {e}")))?,
                );
            }
            "mtu" => {
                c.once(&mtu)?;
                mtu = Some(parse_mtu(&c, ctx)?);
            }
            "protocol" => {
                if role != Role::Top {
                    return Err(c.refuse(
                        "<protocol> is not allowed on a port or slave: an enslaved device has no address of its own",
                    ));
                }
                let p = protocol::parse_protocol(&c, ctx)?;
                if protocols.iter().any(|o| o.family == p.family) {
                    return Err(c.refuse(format!(
                        "a second <protocol family='{}'>: give every address of a family in one",
                        p.family.as_str()
                    )));
                }
                protocols.push(p);
            }
            "bridge" => {
                only_for("bridge")?;
                c.once(&bridge)?;
                bridge = Some(kinds::parse_bridge(&c, ctx, name)?);
            }
            "vlan" => {
                only_for("vlan")?;
                c.once(&vlan)?;
                vlan = Some(kinds::parse_vlan(&c, ctx)?);
            }
            "bond" => {
                only_for("bond")?;
                c.once(&bond)?;
                bond = Some(kinds::parse_bond(&c, ctx, name)?);
            }
            _ => kept.push(c.unmodelled(ctx, IFACE_UNMODELLED)?),
        }
    }
    let missing = |what: &str| node.refuse(format!("type='{ty}' needs a <{what}> element"));
    let kind = match ty {
        "bridge" => HostInterfaceKind::Bridge(bridge.ok_or_else(|| missing("bridge"))?),
        "vlan" => HostInterfaceKind::Vlan(vlan.ok_or_else(|| missing("vlan"))?),
        "bond" => HostInterfaceKind::Bond(bond.ok_or_else(|| missing("bond"))?),
        _ => HostInterfaceKind::Ethernet,
    };
    if let HostInterfaceKind::Vlan(v) = &kind {
        if v.parent == name {
            return Err(node.refuse(format!("vlan '{name}' cannot be its own parent")));
        }
    }
    Ok(HostInterface {
        name: name.to_string(),
        kind,
        start,
        mac,
        mtu,
        protocols,
        kept,
    })
}

#[cfg(test)]
mod tests;
