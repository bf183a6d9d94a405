//! libvirt's network XML: the `network` element, with the same accept /
//! warn / refuse rule as the domain XML (see `docs/network-xml.md`).
//!
//! One file per element family: [`forward`], [`link`] (`bridge`, `mac`,
//! `mtu`, `domain`), [`ip`], [`dhcp`], [`dns`], and [`overlay`] (Vireo's
//! VXLAN overlay, in its own XML namespace). The checks that
//! span families (a bridge-mode network has no address of its own, one
//! DHCP service per address family, subnets that do not overlap) are
//! made here once every child is read.

pub mod dhcp;
pub mod dns;
pub mod forward;
pub mod ip;
pub mod link;
pub mod overlay;

use crate::devices::interface::MacAddress;
use crate::error::{Error, Location, Warning};
use crate::node::{Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};
use crate::scalars;
use crate::uuid::Uuid;

use dns::Dns;
use forward::{Forward, ForwardMode};
use ip::IpDef;
use link::{Bridge, DnsDomain};
use overlay::Overlay;

/// A network definition: the subset of libvirt's network XML Vireo
/// honours, plus the elements it keeps without acting on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The name, unique on the host.
    pub name: String,
    /// The UUID (generated when the document has none).
    pub uuid: Uuid,
    /// `ipv6='yes'` on `network`: guests may talk IPv6 to each other even
    /// though the network has no IPv6 address (libvirt otherwise turns
    /// IPv6 off on such a bridge).
    pub ipv6: Option<bool>,
    /// How traffic leaves the network; `None` is an isolated network.
    pub forward: Option<Forward>,
    /// The Linux bridge.
    pub bridge: Option<Bridge>,
    /// The bridge's own MAC.
    pub mac: Option<MacAddress>,
    /// The bridge's MTU.
    pub mtu: Option<u32>,
    /// The DNS domain of the guests.
    pub domain: Option<DnsDomain>,
    /// The DNS server's configuration.
    pub dns: Option<Dns>,
    /// The bridge's addresses, with their DHCP services.
    pub ips: Vec<IpDef>,
    /// Top-level elements kept for writing back (`metadata`,
    /// `portgroup`, `bandwidth`, `description`, `title`).
    pub kept: Vec<RawElement>,
    /// A VXLAN overlay the bridge carries (`vireo:overlay`).
    pub overlay: Option<Overlay>,
}

/// A parsed network definition and what was accepted without being acted on.
#[derive(Debug, Clone)]
pub struct ParsedNetwork {
    /// The definition.
    pub network: Network,
    /// One warning per element or attribute kept or dropped unused.
    pub warnings: Vec<Warning>,
}

/// Most `ip` elements one network may have. A bridge has one or two
/// addresses; the limit keeps the overlap check between them cheap.
pub const MAX_IPS: usize = 64;

const NETWORK_UNMODELLED: &[(&str, Unmodelled)] = &[
    ("metadata", Unmodelled::Keep("it is for management tools")),
    ("title", Unmodelled::Keep("it is for people")),
    ("description", Unmodelled::Keep("it is for people")),
    (
        "portgroup",
        Unmodelled::Keep("a domain's portgroup= is ignored, so port groups change nothing"),
    ),
    (
        "bandwidth",
        Unmodelled::Keep("a network-wide limit is not applied; limits are set per NIC"),
    ),
    (
        "virtualport",
        Unmodelled::Refuse("Open vSwitch and 802.1Qbh ports are not available"),
    ),
    ("vlan", Unmodelled::Refuse("VLAN tags are set per NIC")),
    (
        "route",
        Unmodelled::Refuse("static routes are not installed"),
    ),
    (
        "port",
        Unmodelled::Refuse("port isolation is not supported"),
    ),
    (
        "dnsmasq:options",
        Unmodelled::Refuse("raw dnsmasq options would bypass Vireo's checks"),
    ),
];

impl Network {
    /// Parses a network definition. Fails on malformed XML (with line
    /// and column) and on anything Vireo cannot honour or a host network
    /// would choke on (naming the element, its path and position);
    /// accepts with one warning each what it keeps without acting on.
    pub fn parse(xml: &str) -> Result<ParsedNetwork, Error> {
        let (network, warnings) = crate::node::parse_document(xml, parse_network)?;
        Ok(ParsedNetwork { network, warnings })
    }

    /// Whether guests on it reach nothing beyond the bridge.
    pub fn is_isolated(&self) -> bool {
        self.forward.is_none()
    }

    /// Writes the definition back as libvirt network XML, kept elements
    /// included.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::default();
        match self.ipv6 {
            Some(v) => w.open("network", &[("ipv6", link::yes_no(v))]),
            None => w.open("network", &[]),
        }
        w.text("name", &[], &self.name);
        w.text("uuid", &[], &self.uuid.to_string());
        if let Some(f) = &self.forward {
            f.write(&mut w);
        }
        if let Some(b) = &self.bridge {
            b.write(&mut w);
        }
        if let Some(m) = self.mac {
            w.empty("mac", &[("address", &m.to_string())]);
        }
        if let Some(m) = self.mtu {
            w.empty("mtu", &[("size", &m.to_string())]);
        }
        if let Some(d) = &self.domain {
            d.write(&mut w);
        }
        if let Some(d) = &self.dns {
            d.write(&mut w);
        }
        for ip in &self.ips {
            ip.write(&mut w);
        }
        if let Some(o) = &self.overlay {
            o.write(&mut w);
        }
        w.raws(&self.kept);
        w.close("network");
        w.finish()
    }
}

/// Where the elements checked against each other were.
#[derive(Default)]
struct Seen {
    forward: Option<Location>,
    ips: Vec<Location>,
    dns: Option<Location>,
    domain: Option<Location>,
    mac: Option<Location>,
    overlay: Option<Location>,
}

fn parse_network(node: &Node<'_>, ctx: &mut Ctx) -> Result<Network, Error> {
    if node.name() != "network" {
        return Err(node.refuse(format!(
            "the root element is <{}>, not <network>",
            node.name()
        )));
    }
    // Namespace declarations are the document's, not settings.
    let root_decls: Vec<(String, String)> = node
        .el
        .attrs
        .iter()
        .filter(|(k, _)| k == "xmlns" || k.starts_with("xmlns:"))
        .cloned()
        .collect();
    let mut known = vec!["ipv6", "trustGuestRxFilters", "connections"];
    known.extend(root_decls.iter().map(|(k, _)| k.as_str()));
    node.check_attrs(ctx, &known);
    for extra in ["trustGuestRxFilters", "connections"] {
        if let Some(v) = node.attr(extra) {
            node.warn(ctx, format!("{extra}='{v}' is ignored"));
        }
    }
    let ipv6 = link::parse_yes_no(node, "ipv6")?;
    let mut name = None;
    let mut uuid = None;
    let mut forward = None;
    let mut bridge = None;
    let mut mac = None;
    let mut mtu = None;
    let mut domain = None;
    let mut dns = None;
    let mut ips = Vec::new();
    let mut kept = Vec::new();
    let mut overlay = None;
    let mut seen = Seen::default();
    for child in node.children() {
        let c = child.node();
        if let Some(local) = overlay::vireo_local_name(&c, &root_decls) {
            if local != "overlay" {
                return Err(c.refuse(format!(
                    "<{}> is not a Vireo network element: the namespace {} has <overlay>",
                    c.name(),
                    overlay::NETWORK_NAMESPACE
                )));
            }
            c.once(&overlay)?;
            overlay = Some(overlay::parse_overlay(&c, ctx, &root_decls)?);
            seen.overlay = Some(c.location());
            continue;
        }
        match c.name() {
            "name" => {
                c.once(&name)?;
                c.check_attrs(ctx, &[]);
                let n = c.raw_text()?;
                scalars::validate_name(&n).map_err(|e| c.refuse(e))?;
                name = Some(n);
            }
            "uuid" => {
                c.once(&uuid)?;
                c.check_attrs(ctx, &[]);
                uuid = Some(Uuid::parse(&c.text()?).map_err(|e| c.refuse(e))?);
            }
            "forward" => {
                c.once(&forward)?;
                forward = Some(forward::parse_forward(&c, ctx)?);
                seen.forward = Some(c.location());
            }
            "bridge" => {
                c.once(&bridge)?;
                bridge = Some(link::parse_bridge(&c, ctx)?);
            }
            "mac" => {
                c.once(&mac)?;
                c.leaf(ctx, &["address"])?;
                let m = MacAddress::parse(c.need("address")?)
                    .map_err(|e| c.refuse(format!("address: {e}")))?;
                mac = Some(m);
                seen.mac = Some(c.location());
            }
            "mtu" => {
                c.once(&mtu)?;
                mtu = Some(link::parse_mtu(&c, ctx)?);
            }
            "domain" => {
                c.once(&domain)?;
                domain = Some(link::parse_domain(&c, ctx)?);
                seen.domain = Some(c.location());
            }
            "dns" => {
                c.once(&dns)?;
                dns = Some(dns::parse_dns(&c, ctx)?);
                seen.dns = Some(c.location());
            }
            "ip" => {
                if ips.len() >= MAX_IPS {
                    return Err(c.refuse(format!("a network has at most {MAX_IPS} <ip> elements")));
                }
                let ip = ip::parse_ip(&c, ctx)?;
                check_against_others(&c, &ip, &ips)?;
                ips.push(ip);
                seen.ips.push(c.location());
            }
            "portgroup" => {
                check_portgroup(&c)?;
                kept.push(c.unmodelled(ctx, NETWORK_UNMODELLED)?);
            }
            _ => kept.push(c.unmodelled(ctx, NETWORK_UNMODELLED)?),
        }
    }
    let name = name.ok_or_else(|| node.refuse("the network has no <name>"))?;
    if let Some(f) = &forward {
        if f.mode == ForwardMode::Bridge {
            check_bridge_mode(node, &bridge, &seen)?;
        }
    }
    let uuid = match uuid {
        Some(u) => u,
        None => Uuid::generate()?,
    };
    Ok(Network {
        name,
        uuid,
        ipv6,
        forward,
        bridge,
        mac,
        mtu,
        domain,
        dns,
        ips,
        kept,
        overlay,
    })
}

/// A port group is kept without being applied; one that would tag or
/// hand NICs to Open vSwitch cannot be, as guests would notice.
fn check_portgroup(node: &Node<'_>) -> Result<(), Error> {
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "bandwidth" => {}
            "vlan" => {
                return Err(
                    c.refuse("<vlan> in a port group is not supported: VLAN tags are set per NIC")
                )
            }
            "virtualport" => return Err(c.refuse(
                "<virtualport> is not supported: Open vSwitch and 802.1Qbh ports are not available",
            )),
            other => return Err(c.refuse(format!("<{other}> inside <portgroup> is not supported"))),
        }
    }
    Ok(())
}

/// One DHCP service per address family, and no two subnets overlapping.
fn check_against_others(node: &Node<'_>, ip: &IpDef, earlier: &[IpDef]) -> Result<(), Error> {
    for o in earlier.iter().filter(|o| o.is_ipv6() == ip.is_ipv6()) {
        if ip.dhcp.is_some() && o.dhcp.is_some() {
            let family = if ip.is_ipv6() { "IPv6" } else { "IPv4" };
            return Err(node.refuse(format!(
                "a second <dhcp> for {family}: dnsmasq serves one {family} DHCP block per network"
            )));
        }
        let shorter = ip.prefix.min(o.prefix);
        if ip::in_subnet(ip.address, o.address, shorter) {
            return Err(node.refuse(format!(
                "subnet {}/{} overlaps {}/{} of an earlier <ip>",
                ip.address, ip.prefix, o.address, o.prefix
            )));
        }
    }
    Ok(())
}

/// A bridge-mode network is a host bridge Vireo only plugs TAPs into: it
/// needs the bridge's name, and has no address, DHCP or DNS of its own.
fn check_bridge_mode(node: &Node<'_>, bridge: &Option<Bridge>, seen: &Seen) -> Result<(), Error> {
    let at = |l: &Option<Location>| l.clone().unwrap_or_else(|| node.location());
    if bridge.as_ref().and_then(|b| b.name.as_ref()).is_none() {
        return Err(Error::Refused {
            location: at(&seen.forward),
            message: "forward mode 'bridge' needs <bridge name='...'/> naming the host bridge"
                .into(),
        });
    }
    let own = [
        (seen.overlay.clone(), "<vireo:overlay>"),
        (seen.ips.first().cloned(), "<ip>"),
        (seen.dns.clone(), "<dns>"),
        (seen.domain.clone(), "<domain>"),
        (seen.mac.clone(), "<mac>"),
    ];
    for (loc, what) in own {
        if let Some(location) = loc {
            return Err(Error::Refused {
                location,
                message: format!(
                    "{what} is not allowed with forward mode 'bridge': the host bridge is not Vireo's to address"
                ),
            });
        }
    }
    Ok(())
}
