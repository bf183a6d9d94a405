//! `ip`: an address of the network's bridge, its subnet, and the DHCP
//! service on it.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use crate::devices::interface::MacAddress;
use crate::error::Error;
use crate::node::{parse_number, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

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

/// A `dhcp` element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dhcp {
    /// Address ranges handed out.
    pub ranges: Vec<DhcpRange>,
    /// Fixed leases.
    pub hosts: Vec<DhcpHost>,
    /// Children kept without being acted on (`bootp`).
    pub kept: Vec<RawElement>,
}

/// `dhcp/range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpRange {
    /// First address handed out.
    pub start: IpAddr,
    /// Last address handed out.
    pub end: IpAddr,
    /// Lease time in seconds (`lease expiry unit`); 0 is forever.
    pub lease_seconds: Option<u64>,
}

/// `dhcp/host`: a fixed address for a guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    /// The guest's MAC (IPv4 only).
    pub mac: Option<MacAddress>,
    /// The guest's host name.
    pub name: Option<String>,
    /// The address it is given.
    pub ip: IpAddr,
}

/// Shortest finite lease dnsmasq accepts, seconds.
pub const MIN_LEASE_SECONDS: u64 = 120;

const IP_UNMODELLED: &[(&str, Unmodelled)] = &[(
    "tftp",
    Unmodelled::Keep("Vireo's guests boot their kernel directly, never over TFTP"),
)];

const DHCP_UNMODELLED: &[(&str, Unmodelled)] = &[(
    "bootp",
    Unmodelled::Keep("Vireo's guests boot their kernel directly, never by PXE"),
)];

/// The address as a 128-bit number and its width in bits.
fn bits(a: IpAddr) -> (u128, u8) {
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
    fn reserved(&self) -> Option<(IpAddr, IpAddr)> {
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

fn parse_addr(node: &Node<'_>, what: &str, v: &str) -> Result<IpAddr, Error> {
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
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "dhcp" => {
                c.once(&ip.dhcp)?;
                ip.dhcp = Some(parse_dhcp(&c, ctx, &ip)?);
            }
            _ => ip.kept.push(c.unmodelled(ctx, IP_UNMODELLED)?),
        }
    }
    Ok(ip)
}

fn parse_dhcp(node: &Node<'_>, ctx: &mut Ctx, ip: &IpDef) -> Result<Dhcp, Error> {
    node.check_attrs(ctx, &[]);
    let mut dhcp = Dhcp::default();
    // Indexes for the duplicate checks, so thousands of hosts or ranges
    // cost n log n, not n squared. Ranges are kept disjoint, so a new
    // one overlaps some range exactly when it overlaps the one starting
    // last at or before its end.
    let mut ranges: BTreeMap<u128, u128> = BTreeMap::new();
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    let mut names = HashSet::new();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "range" => {
                let r = parse_range(&c, ctx, ip)?;
                let (s, e) = (bits(r.start).0, bits(r.end).0);
                if let Some((&os, &oe)) = ranges.range(..=e).next_back() {
                    if oe >= s {
                        return Err(c.refuse(format!(
                            "range {}-{} overlaps range {}-{}",
                            r.start,
                            r.end,
                            from_bits(os, ip),
                            from_bits(oe, ip)
                        )));
                    }
                }
                ranges.insert(s, e);
                dhcp.ranges.push(r);
            }
            "host" => {
                let h = parse_host(&c, ctx, ip)?;
                if !ips.insert(h.ip) {
                    return Err(c.refuse(format!("ip {} is given to another host already", h.ip)));
                }
                if let Some(m) = h.mac {
                    if !macs.insert(m) {
                        return Err(c.refuse(format!("mac {m} is given more than one host")));
                    }
                } else if let Some(n) = &h.name {
                    if !names.insert(n.clone()) {
                        return Err(c.refuse(format!("name '{n}' is given more than one host")));
                    }
                }
                dhcp.hosts.push(h);
            }
            _ => dhcp.kept.push(c.unmodelled(ctx, DHCP_UNMODELLED)?),
        }
    }
    Ok(dhcp)
}

/// The address of the ip's family with this number.
fn from_bits(n: u128, ip: &IpDef) -> IpAddr {
    match ip.address {
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

/// Checks that `a` is a usable host address of the ip's subnet.
fn check_in_subnet(node: &Node<'_>, what: &str, a: IpAddr, ip: &IpDef) -> Result<(), Error> {
    if !ip.contains(a) {
        return Err(node.refuse(format!(
            "{what} {a} is outside the subnet {}/{}",
            ip.address, ip.prefix
        )));
    }
    if let Some((network, broadcast)) = ip.reserved() {
        if a == network {
            return Err(node.refuse(format!("{what} {a} is the subnet's network address")));
        }
        if a == broadcast {
            return Err(node.refuse(format!("{what} {a} is the subnet's broadcast address")));
        }
    }
    Ok(())
}

fn parse_range(node: &Node<'_>, ctx: &mut Ctx, ip: &IpDef) -> Result<DhcpRange, Error> {
    node.check_attrs(ctx, &["start", "end"]);
    let start = parse_addr(node, "start", node.need("start")?)?;
    let end = parse_addr(node, "end", node.need("end")?)?;
    check_in_subnet(node, "start", start, ip)?;
    check_in_subnet(node, "end", end, ip)?;
    if bits(start).0 > bits(end).0 {
        return Err(node.refuse(format!("start {start} is after end {end}")));
    }
    let mut lease_seconds = None;
    for child in node.children() {
        let c = child.node();
        if c.name() != "lease" {
            return Err(c.refuse(format!("<{}> inside <range> is not supported", c.name())));
        }
        c.once(&lease_seconds)?;
        lease_seconds = Some(parse_lease(&c, ctx)?);
    }
    Ok(DhcpRange {
        start,
        end,
        lease_seconds,
    })
}

fn parse_lease(node: &Node<'_>, ctx: &mut Ctx) -> Result<u64, Error> {
    node.leaf(ctx, &["expiry", "unit"])?;
    let n: u64 = parse_number(node, "expiry", node.need("expiry")?)?;
    let scale = match node.attr("unit").unwrap_or("minutes") {
        "seconds" => 1,
        "minutes" => 60,
        "hours" => 3600,
        u => {
            return Err(node.refuse(format!(
                "lease unit '{u}' must be seconds, minutes or hours"
            )))
        }
    };
    let s = n
        .checked_mul(scale)
        .filter(|s| u32::try_from(*s).is_ok())
        .ok_or_else(|| node.refuse(format!("lease expiry {n} is too long")))?;
    if s != 0 && s < MIN_LEASE_SECONDS {
        return Err(node.refuse(format!(
            "a lease of {s} seconds is shorter than dnsmasq's minimum of {MIN_LEASE_SECONDS} (0 is forever)"
        )));
    }
    Ok(s)
}

fn parse_host(node: &Node<'_>, ctx: &mut Ctx, ip: &IpDef) -> Result<DhcpHost, Error> {
    node.leaf(ctx, &["mac", "name", "ip"])?;
    let mac = match node.attr("mac") {
        Some(_) if ip.is_ipv6() => {
            return Err(node.refuse("a DHCPv6 host is matched by name, not mac"))
        }
        Some(m) => Some(MacAddress::parse(m).map_err(|e| node.refuse(format!("mac: {e}")))?),
        None => None,
    };
    let name = match node.attr("name") {
        Some(n) => {
            super::link::validate_dns_name(n).map_err(|e| node.refuse(format!("name: {e}")))?;
            Some(n.to_string())
        }
        None => None,
    };
    if mac.is_none() && name.is_none() {
        return Err(node.refuse("<host> needs a mac= or a name="));
    }
    let addr = parse_addr(node, "ip", node.need("ip")?)?;
    check_in_subnet(node, "ip", addr, ip)?;
    if addr == ip.address {
        return Err(node.refuse(format!("ip {addr} is the network's own address")));
    }
    Ok(DhcpHost {
        mac,
        name,
        ip: addr,
    })
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

impl Dhcp {
    fn write(&self, w: &mut XmlWriter) {
        w.open("dhcp", &[]);
        for r in &self.ranges {
            let (s, e) = (r.start.to_string(), r.end.to_string());
            let attrs = [("start", s.as_str()), ("end", e.as_str())];
            match r.lease_seconds {
                Some(l) => {
                    w.open("range", &attrs);
                    let l = l.to_string();
                    w.empty("lease", &[("expiry", &l), ("unit", "seconds")]);
                    w.close("range");
                }
                None => w.empty("range", &attrs),
            }
        }
        for h in &self.hosts {
            let mac = h.mac.map(|m| m.to_string());
            let ip = h.ip.to_string();
            let mut attrs = Vec::new();
            if let Some(m) = &mac {
                attrs.push(("mac", m.as_str()));
            }
            if let Some(n) = &h.name {
                attrs.push(("name", n.as_str()));
            }
            attrs.push(("ip", ip.as_str()));
            w.empty("host", &attrs);
        }
        w.raws(&self.kept);
        w.close("dhcp");
    }
}
