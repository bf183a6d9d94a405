//! `interface`: a virtio-net NIC on a TAP, a host bridge, a virtual
//! network, or a macvtap on a host device (`type='direct'`).

use std::fmt;

use crate::error::Error;
use crate::node::{Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

use super::host_port::parse_vlan;
pub use super::host_port::DirectMode;
use super::interface_policy::{parse_bandwidth, parse_filterref, Bandwidth, FilterRef};

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// A random address under QEMU's and libvirt's prefix 52:54:00.
    pub fn generate() -> Result<MacAddress, Error> {
        let mut b = [0u8; 3];
        getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
        Ok(MacAddress([0x52, 0x54, 0x00, b[0], b[1], b[2]]))
    }

    /// Parses `xx:xx:xx:xx:xx:xx`; a multicast address is refused.
    pub fn parse(s: &str) -> Result<MacAddress, String> {
        let mut bytes = [0u8; 6];
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("'{s}' is not a MAC address"));
        }
        for (b, p) in bytes.iter_mut().zip(parts) {
            if p.is_empty() || p.len() > 2 {
                return Err(format!("'{s}' is not a MAC address"));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("'{s}' is not a MAC address"))?;
        }
        if bytes[0] & 1 != 0 {
            return Err(format!("'{s}' is a multicast address"));
        }
        Ok(MacAddress(bytes))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// What the NIC is plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceKind {
    /// `type='ethernet'`: a TAP device (named by `target`).
    Ethernet,
    /// `type='bridge'`: a TAP the daemon creates and attaches to this
    /// host bridge.
    Bridge(String),
    /// `type='network'`: a port on a virtual network of the daemon.
    Network {
        /// The network's name.
        network: String,
        /// The network's bridge, filled in by the daemon when the domain
        /// starts (libvirt's live XML shows it as `source bridge=`); what a
        /// definition says here is replaced then.
        bridge: Option<String>,
    },
    /// `type='direct'`: a macvtap device the daemon creates on host device
    /// `dev`, sharing it with the host in `mode`.
    Direct {
        /// The host device (`source dev=`) the macvtap sits on.
        dev: String,
        /// How it shares `dev` (`source mode=`; libvirt's default is vepa).
        mode: DirectMode,
    },
}

/// An `interface` device; the model is always virtio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// What it is plugged into.
    pub kind: InterfaceKind,
    /// The guest's MAC (generated when absent).
    pub mac: MacAddress,
    /// The host-side TAP name (`target dev=`).
    pub target: Option<String>,
    /// Hints kept for writing back (`address`, `alias`, `boot`, `rom`).
    pub kept: Vec<RawElement>,
    /// The VLAN the NIC's port is an untagged member of (`vlan/tag id=`),
    /// on a bridge or network NIC.
    pub vlan: Option<u16>,
    /// `filterref`: the anti-spoofing filter on the NIC's port.
    pub filterref: Option<FilterRef>,
    /// `bandwidth`: rate limits on the NIC's port.
    pub bandwidth: Option<Bandwidth>,
}

/// Longest Linux interface name (IFNAMSIZ less the NUL).
pub const MAX_IFNAME_BYTES: usize = 15;

/// Checks a Linux interface name (TAP or bridge).
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_IFNAME_BYTES
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "'{}' is not an interface name (1 to {MAX_IFNAME_BYTES} bytes, no '/', ':' or spaces)",
            name.escape_debug()
        ));
    }
    Ok(())
}

const INTERFACE_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "address",
        Unmodelled::Keep("Vireo places devices on its PCI bus itself"),
    ),
    ("alias", Unmodelled::Keep("device aliases are not used")),
    (
        "boot",
        Unmodelled::Keep("the kernel is booted directly, so there is no boot order"),
    ),
    (
        "rom",
        Unmodelled::Keep("there is no firmware to run an option ROM"),
    ),
    ("driver", Unmodelled::Keep("back-end tuning is not applied")),
    (
        "mtu",
        Unmodelled::Refuse("the guest would see a different MTU"),
    ),
    (
        "virtualport",
        Unmodelled::Refuse("Open vSwitch ports come with virtual networks"),
    ),
    (
        "ip",
        Unmodelled::Refuse("addresses are the guest's to configure"),
    ),
    (
        "route",
        Unmodelled::Refuse("routes are the guest's to configure"),
    ),
];

pub(crate) fn parse_interface(node: &Node<'_>, ctx: &mut Ctx) -> Result<Interface, Error> {
    node.check_attrs(ctx, &["type"]);
    let kind_name = node.need("type")?;
    if !matches!(kind_name, "ethernet" | "bridge" | "network" | "direct") {
        return Err(node.refuse(format!(
            "interface type '{kind_name}' is not supported: use ethernet, bridge, network or direct"
        )));
    }
    let mut source = None;
    let mut network_bridge = None;
    let mut direct_mode = DirectMode::Vepa;
    let mut mac = None;
    let mut target = None;
    let mut model_seen = None;
    let mut kept = Vec::new();
    let mut vlan = None;
    let mut filterref = None;
    let mut bandwidth = None;
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "source" => {
                c.once(&source)?;
                source = Some(match kind_name {
                    "bridge" => {
                        c.leaf(ctx, &["bridge"])?;
                        let b = c.need("bridge")?;
                        validate_ifname(b).map_err(|e| c.refuse(format!("bridge: {e}")))?;
                        b.to_string()
                    }
                    "network" => {
                        c.leaf(ctx, &["network", "portgroup", "bridge", "portid"])?;
                        if let Some(pg) = c.attr("portgroup") {
                            c.warn(ctx, format!("portgroup='{pg}' is ignored"));
                        }
                        if let Some(b) = c.attr("bridge") {
                            validate_ifname(b).map_err(|e| c.refuse(format!("bridge: {e}")))?;
                            network_bridge = Some(b.to_string());
                        }
                        let n = c.need("network")?;
                        crate::scalars::validate_name(n)
                            .map_err(|e| c.refuse(format!("network: {e}")))?;
                        n.to_string()
                    }
                    "direct" => {
                        c.leaf(ctx, &["dev", "mode"])?;
                        let d = c.need("dev")?;
                        validate_ifname(d).map_err(|e| c.refuse(format!("dev: {e}")))?;
                        if let Some(m) = c.attr("mode") {
                            direct_mode = DirectMode::parse(m).ok_or_else(|| {
                                c.refuse(format!(
                                    "mode '{m}' is not supported: use bridge, vepa, private or passthrough"
                                ))
                            })?;
                        }
                        d.to_string()
                    }
                    _ => {
                        c.leaf(ctx, &[])?;
                        String::new()
                    }
                });
            }
            "vlan" => {
                c.once(&vlan)?;
                if !matches!(kind_name, "bridge" | "network") {
                    return Err(c.refuse(format!(
                        "a VLAN tag on a type='{kind_name}' interface is not supported: the tag is set on a bridge port (use type='bridge' or 'network'{})",
                        if kind_name == "direct" {
                            ", or a VLAN device as the direct source dev"
                        } else {
                            ""
                        }
                    )));
                }
                vlan = Some(parse_vlan(&c, ctx)?);
            }
            "mac" => {
                c.once(&mac)?;
                c.leaf(ctx, &["address"])?;
                let a = c.need("address")?;
                mac = Some(MacAddress::parse(a).map_err(|e| c.refuse(e))?);
            }
            "target" => {
                c.once(&target)?;
                c.leaf(ctx, &["dev"])?;
                let dev = c.need("dev")?;
                validate_ifname(dev).map_err(|e| c.refuse(format!("target dev: {e}")))?;
                target = Some(dev.to_string());
            }
            "model" => {
                c.once(&model_seen)?;
                c.leaf(ctx, &["type"])?;
                let m = c.need("type")?;
                if m != "virtio" {
                    return Err(c.refuse(format!(
                        "NIC model '{m}' is not supported: Vireo's NICs are virtio"
                    )));
                }
                model_seen = Some(());
            }
            "link" => {
                c.check_attrs(ctx, &["state"]);
                match c.attr("state") {
                    Some("up") | None => {
                        c.warn(
                            ctx,
                            "<link> is kept but not acted on: the link is always up",
                        );
                        kept.push(c.el.to_raw());
                    }
                    Some(s) => {
                        return Err(c.refuse(format!(
                            "link state '{s}' is not supported: the link is always up"
                        )))
                    }
                }
            }
            "filterref" => {
                c.once(&filterref)?;
                filterref = Some(parse_filterref(&c, ctx)?);
            }
            "bandwidth" => {
                c.once(&bandwidth)?;
                bandwidth = Some(parse_bandwidth(&c, ctx)?);
            }
            _ => kept.push(c.unmodelled(ctx, INTERFACE_UNMODELLED)?),
        }
    }
    let kind = match kind_name {
        "ethernet" => InterfaceKind::Ethernet,
        "bridge" => InterfaceKind::Bridge(
            source.ok_or_else(|| node.refuse("a bridge interface needs <source bridge=...>"))?,
        ),
        "direct" => InterfaceKind::Direct {
            dev: source.ok_or_else(|| node.refuse("a direct interface needs <source dev=...>"))?,
            mode: direct_mode,
        },
        _ => InterfaceKind::Network {
            network: source
                .ok_or_else(|| node.refuse("a network interface needs <source network=...>"))?,
            bridge: network_bridge,
        },
    };
    let mac = match mac {
        Some(m) => m,
        None => MacAddress::generate()?,
    };
    Ok(Interface {
        kind,
        mac,
        target,
        kept,
        vlan,
        filterref,
        bandwidth: bandwidth.filter(|b: &Bandwidth| !b.is_empty()),
    })
}

impl Interface {
    /// The host bridge the NIC's TAP joins: a `bridge` interface's, or a
    /// `network` interface's once the daemon has filled it in.
    pub fn host_bridge(&self) -> Option<&str> {
        match &self.kind {
            InterfaceKind::Bridge(b)
            | InterfaceKind::Network {
                bridge: Some(b), ..
            } => Some(b),
            _ => None,
        }
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let kind = match &self.kind {
            InterfaceKind::Ethernet => "ethernet",
            InterfaceKind::Bridge(_) => "bridge",
            InterfaceKind::Network { .. } => "network",
            InterfaceKind::Direct { .. } => "direct",
        };
        w.open("interface", &[("type", kind)]);
        match &self.kind {
            InterfaceKind::Ethernet => {}
            InterfaceKind::Bridge(b) => w.empty("source", &[("bridge", b)]),
            InterfaceKind::Network {
                network,
                bridge: None,
            } => w.empty("source", &[("network", network)]),
            InterfaceKind::Network {
                network,
                bridge: Some(b),
            } => w.empty("source", &[("network", network), ("bridge", b)]),
            InterfaceKind::Direct { dev, mode } => {
                w.empty("source", &[("dev", dev), ("mode", mode.as_str())])
            }
        }
        w.empty("mac", &[("address", &self.mac.to_string())]);
        if let Some(t) = &self.target {
            w.empty("target", &[("dev", t)]);
        }
        w.empty("model", &[("type", "virtio")]);
        if let Some(id) = self.vlan {
            w.open("vlan", &[]);
            w.empty("tag", &[("id", &id.to_string())]);
            w.close("vlan");
        }
        w.raws(&self.kept);
        if let Some(f) = &self.filterref {
            f.write(w);
        }
        if let Some(b) = &self.bandwidth {
            b.write(w);
        }
        w.close("interface");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn iface(xml: &str) -> Result<Interface, Error> {
        let el = read(xml).unwrap();
        parse_interface(
            &Node::root(&el, "/domain/devices/interface[1]"),
            &mut Ctx::default(),
        )
    }

    #[test]
    fn ethernet_bridge_and_network() {
        let i = iface(
            "<interface type='ethernet'><target dev='tap0'/><mac address='52:54:00:AA:bb:01'/>\
                       <model type='virtio'/></interface>",
        )
        .unwrap();
        assert_eq!(i.kind, InterfaceKind::Ethernet);
        assert_eq!(i.target.as_deref(), Some("tap0"));
        assert_eq!(i.mac.to_string(), "52:54:00:aa:bb:01");
        let i = iface("<interface type='bridge'><source bridge='br0'/></interface>").unwrap();
        assert_eq!(i.kind, InterfaceKind::Bridge("br0".into()));
        assert_eq!(i.mac.0[..3], [0x52, 0x54, 0x00]);
        let i = iface("<interface type='network'><source network='default'/></interface>").unwrap();
        assert_eq!(
            i.kind,
            InterfaceKind::Network {
                network: "default".into(),
                bridge: None
            }
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "<interface type='user'/>",
            "<interface type='bridge'/>",
            "<interface type='bridge'><source bridge='br0'/><model type='e1000'/></interface>",
            "<interface type='ethernet'><mac address='01:00:00:00:00:01'/></interface>",
            "<interface type='ethernet'><mac address='52:54:00:00:00'/></interface>",
            "<interface type='ethernet'><target dev='a-name-that-is-too-long'/></interface>",
            "<interface type='ethernet'><target dev='a/b'/></interface>",
            "<interface type='ethernet'><mtu size='9000'/></interface>",
            "<interface type='ethernet'><link state='down'/></interface>",
        ] {
            assert!(iface(bad).is_err(), "{bad}");
        }
    }
}
