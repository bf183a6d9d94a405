//! `ip`: an address of the network's bridge and its subnet; the DHCP
//! service on it is in [`super::dhcp`].

use std::net::IpAddr;

use crate::error::Error;
use crate::node::{parse_number, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

use super::dhcp::{self, Dhcp};

/// An `ip` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpDef {
    /// The bridge's address on the network.
    pub address: IpAddr,
    /// The subnet's prefix length (from `prefix=` or `netmask=`).
    pub prefix: u8,
    /// The DHCP service, when present.
    pub dhcp: Option<Dhcp>,
    /// Children kept without being acted on (`tftp`).
    pub kept: Vec<RawElement>,
}

const IP_UNMODELLED: &[(&str, Unmodelled)] = &[(
    "tftp",
    Unmodelled::Keep("Vireo's guests boot their kernel directly, never over TFTP"),
)];

/// The address as a 128-bit number and its width in bits.
pub(crate) fn bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

/// Whether `a` lies in the subnet `net`/`prefix` (same family only).
pub(crate) fn in_subnet(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ((x, wx), (y, wy)) = (bits(a), bits(net));
    if wx != wy {
        return false;
    }
    let host_bits = u32::from(wx - prefix.min(wx));
    let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
    x & mask == y & mask
}

impl IpDef {
    /// Whether this is an IPv6 address.
    pub fn is_ipv6(&self) -> bool {
        self.address.is_ipv6()
    }

    /// Whether `a` is in this address's subnet.
    pub fn contains(&self, a: IpAddr) -> bool {
        in_subnet(a, self.address, self.prefix)
    }

    /// The IPv4 subnet's network and broadcast addresses, which no host
    /// may have (none for IPv6, or for a /31 or /32, which have no such
    /// addresses).
    pub(crate) fn reserved(&self) -> Option<(IpAddr, IpAddr)> {
        match self.address {
            IpAddr::V4(v) if self.prefix <= 30 => {
                let host = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                let v = u32::from(v);
                Some((
                    IpAddr::V4((v & !host).into()),
                    IpAddr::V4((v | host).into()),
                ))
            }
            _ => None,
        }
    }
}

pub(crate) fn parse_addr(node: &Node<'_>, what: &str, v: &str) -> Result<IpAddr, Error> {
    v.trim()
        .parse()
        .map_err(|_| node.refuse(format!("{what} '{v}' is not an IP address")))
}

/// libvirt's default prefix when neither `prefix` nor `netmask` is
/// given: the IPv4 address class, 64 for IPv6.
fn default_prefix(node: &Node<'_>, a: IpAddr) -> Result<u8, Error> {
    match a {
        IpAddr::V6(_) => Ok(64),
        IpAddr::V4(v) => match v.octets()[0] {
            0..=127 => Ok(8),
            128..=191 => Ok(16),
            192..=223 => Ok(24),
            _ => Err(node.refuse(format!(
                "{v} has no address class: give a prefix= or netmask="
            ))),
        },
    }
}

pub(crate) fn parse_ip(node: &Node<'_>, ctx: &mut Ctx) -> Result<IpDef, Error> {
    node.check_attrs(ctx, &["address", "netmask", "prefix", "family", "localPtr"]);
    // Dropping it would turn a route through a gateway into an address
    // on the bridge.
    if node.attr("via").is_some() {
        return Err(node.refuse(
            "via= (a route through a gateway) is not supported: static routes are not installed",
        ));
    }
    if let Some(v) = node.attr("localPtr") {
        node.warn(ctx, format!("localPtr='{v}' is ignored"));
    }
    let address = parse_addr(node, "address", node.need("address")?)?;
    match (node.attr("family"), address) {
        (None | Some("ipv4"), IpAddr::V4(_)) | (None | Some("ipv6"), IpAddr::V6(_)) => {}
        (Some(f @ ("ipv4" | "ipv6")), a) => {
            return Err(node.refuse(format!("address {a} is not of family '{f}'")))
        }
        (Some(f), _) => return Err(node.refuse(format!("family '{f}' must be ipv4 or ipv6"))),
    }
    let width = bits(address).1;
    let prefix = match (node.attr("prefix"), node.attr("netmask")) {
        (Some(_), Some(_)) => return Err(node.refuse("give prefix= or netmask=, not both")),
        (Some(p), None) => {
            let p: u8 = parse_number(node, "prefix", p)?;
            if p == 0 || p > width {
                return Err(node.refuse(format!("prefix {p} is outside 1-{width}")));
            }
            p
        }
        (None, Some(m)) => {
            if address.is_ipv6() {
                return Err(node.refuse("netmask= is for IPv4; an IPv6 address takes prefix="));
            }
            let m4: std::net::Ipv4Addr = m
                .trim()
                .parse()
                .map_err(|_| node.refuse(format!("netmask '{m}' is not an IPv4 netmask")))?;
            let n = u32::from(m4);
            if n == 0 || n.leading_ones() + n.trailing_zeros() != 32 {
                return Err(node.refuse(format!("netmask '{m}' is not a contiguous netmask")));
            }
            // At most 32, so it fits.
            u8::try_from(n.leading_ones()).unwrap_or(32)
        }
        (None, None) => default_prefix(node, address)?,
    };
    let mut ip = IpDef {
        address,
        prefix,
        dhcp: None,
        kept: Vec::new(),
    };
    if let Some((network, broadcast)) = ip.reserved() {
        if address == network || address == broadcast {
            let which = if address == network {
                "network"
            } else {
                "broadcast"
            };
            return Err(node.refuse(format!(
                "address {address} is the {which} address of {network}/{prefix}, not a host's"
            )));
        }
    }
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "dhcp" => {
                c.once(&ip.dhcp)?;
                ip.dhcp = Some(dhcp::parse_dhcp(&c, ctx, &ip)?);
            }
            _ => ip.kept.push(c.unmodelled(ctx, IP_UNMODELLED)?),
        }
    }
    Ok(ip)
}

impl IpDef {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let addr = self.address.to_string();
        let prefix = self.prefix.to_string();
        let family = if self.is_ipv6() { "ipv6" } else { "ipv4" };
        let attrs = [
            ("family", family),
            ("address", addr.as_str()),
            ("prefix", prefix.as_str()),
        ];
        if self.dhcp.is_none() && self.kept.is_empty() {
            w.empty("ip", &attrs);
            return;
        }
        w.open("ip", &attrs);
        if let Some(d) = &self.dhcp {
            d.write(w);
        }
        w.raws(&self.kept);
        w.close("ip");
    }
}
