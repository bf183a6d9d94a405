//! `protocol`: the static addresses of one family a host interface gets
//! when it starts. Vireo runs no DHCP client and installs no routes on
//! the host, so `dhcp`, `autoconf` and `route` are refused: an interface
//! started without the address it was defined to get would be noticed
//! by everything that reaches the host through it.

use std::net::IpAddr;

use crate::error::Error;
use crate::network::ip::parse_addr;
use crate::node::{parse_number, Ctx, Node};
use crate::raw::XmlWriter;

/// Most addresses one `protocol` may hold.
pub const MAX_ADDRESSES: usize = 64;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl Family {
    /// The name in `family=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// One `protocol` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    /// Its family.
    pub family: Family,
    /// The addresses, each with its prefix length, in document order.
    pub addresses: Vec<(IpAddr, u8)>,
}

pub(crate) fn parse_protocol(node: &Node<'_>, ctx: &mut Ctx) -> Result<Protocol, Error> {
    node.check_attrs(ctx, &["family"]);
    let family = match node.need("family")? {
        "ipv4" => Family::Ipv4,
        "ipv6" => Family::Ipv6,
        f => return Err(node.refuse(format!("family '{f}' must be ipv4 or ipv6"))),
    };
    let mut addresses: Vec<(IpAddr, u8)> = Vec::new();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "ip" => {
                if addresses.len() >= MAX_ADDRESSES {
                    return Err(c.refuse(format!(
                        "a <protocol> has at most {MAX_ADDRESSES} <ip> elements"
                    )));
                }
                let a = parse_address(&c, ctx, family)?;
                if addresses.iter().any(|(o, _)| *o == a.0) {
                    return Err(c.refuse(format!("address {} appears more than once", a.0)));
                }
                addresses.push(a);
            }
            "dhcp" => {
                return Err(c.refuse(
                    "<dhcp> is not supported: Vireo runs no DHCP client on the host; give a static <ip address= prefix=/>",
                ))
            }
            "autoconf" => {
                return Err(c.refuse(
                    "<autoconf> is not supported: Vireo does not configure SLAAC; give a static <ip address= prefix=/>",
                ))
            }
            "route" => {
                return Err(c.refuse(
                    "<route> is not supported: static routes are not installed on the host",
                ))
            }
            other => {
                return Err(c.refuse(format!("<{other}> inside <protocol> is not supported")));
            }
        }
    }
    Ok(Protocol { family, addresses })
}

fn parse_address(node: &Node<'_>, ctx: &mut Ctx, family: Family) -> Result<(IpAddr, u8), Error> {
    node.leaf(ctx, &["address", "prefix"])?;
    let address = parse_addr(node, "address", node.need("address")?)?;
    let (want, width) = match address {
        IpAddr::V4(_) => (Family::Ipv4, 32),
        IpAddr::V6(_) => (Family::Ipv6, 128),
    };
    if want != family {
        return Err(node.refuse(format!(
            "address {address} is not of family '{}'",
            family.as_str()
        )));
    }
    let prefix: u8 = parse_number(node, "prefix", node.need("prefix")?)?;
    if prefix == 0 || prefix > width {
        return Err(node.refuse(format!("prefix {prefix} is outside 1-{width}")));
    }
    if address.is_unspecified() || address.is_multicast() {
        return Err(node.refuse(format!("address {address} cannot be an interface's")));
    }
    Ok((address, prefix))
}

impl Protocol {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let attrs = [("family", self.family.as_str())];
        if self.addresses.is_empty() {
            w.empty("protocol", &attrs);
            return;
        }
        w.open("protocol", &attrs);
        for (a, p) in &self.addresses {
            w.empty(
                "ip",
                &[("address", &a.to_string()), ("prefix", &p.to_string())],
            );
        }
        w.close("protocol");
    }
}
