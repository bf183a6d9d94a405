//! `ip/dhcp`: the ranges a network's DHCP server hands out and its fixed
//! leases, checked against the subnet of the `ip` that holds them.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use crate::devices::interface::MacAddress;
use crate::error::Error;
use crate::node::{parse_number, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

use super::ip::{bits, parse_addr, IpDef};

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
    /// The guest's DHCP unique identifier (`id=`, IPv6 only), hex bytes
    /// separated by ':'.
    pub id: Option<String>,
    /// The guest's host name.
    pub name: Option<String>,
    /// The address it is given.
    pub ip: IpAddr,
}

/// Shortest finite lease dnsmasq accepts, seconds.
pub const MIN_LEASE_SECONDS: u64 = 120;

const DHCP_UNMODELLED: &[(&str, Unmodelled)] = &[(
    "bootp",
    Unmodelled::Keep("Vireo's guests boot their kernel directly, never by PXE"),
)];

pub(crate) fn parse_dhcp(node: &Node<'_>, ctx: &mut Ctx, ip: &IpDef) -> Result<Dhcp, Error> {
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
    let mut ids = HashSet::new();
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
                }
                if let Some(d) = &h.id {
                    if !ids.insert(d.clone()) {
                        return Err(c.refuse(format!("id {d} is given more than one host")));
                    }
                }
                if let (None, None, Some(n)) = (h.mac, &h.id, &h.name) {
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

/// Longest DUID, bytes (RFC 8415: 128 bytes after the 2-byte type).
const MAX_DUID_BYTES: usize = 130;

/// A DUID as libvirt takes it: hex bytes separated by ':'.
fn validate_duid(d: &str) -> Result<(), String> {
    let parts: Vec<&str> = d.split(':').collect();
    let ok = parts.len() >= 3
        && parts.len() <= MAX_DUID_BYTES
        && parts
            .iter()
            .all(|p| (1..=2).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "id '{}' is not a DUID (3 to {MAX_DUID_BYTES} hex bytes separated by ':')",
            d.escape_debug()
        ))
    }
}

fn parse_host(node: &Node<'_>, ctx: &mut Ctx, ip: &IpDef) -> Result<DhcpHost, Error> {
    node.leaf(ctx, &["mac", "id", "name", "ip"])?;
    let mac = match node.attr("mac") {
        Some(_) if ip.is_ipv6() => {
            return Err(node.refuse("a DHCPv6 host is matched by id or name, not mac"))
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
    let id = match node.attr("id") {
        Some(_) if !ip.is_ipv6() => {
            return Err(
                node.refuse("id= (a DHCPv6 DUID) is for IPv6 hosts; an IPv4 host takes mac=")
            )
        }
        Some(d) => {
            validate_duid(d).map_err(|e| node.refuse(e))?;
            Some(d.to_ascii_lowercase())
        }
        None => None,
    };
    if mac.is_none() && id.is_none() && name.is_none() {
        let what = if ip.is_ipv6() {
            "an id= or a name="
        } else {
            "a mac= or a name="
        };
        return Err(node.refuse(format!("<host> needs {what}")));
    }
    let addr = parse_addr(node, "ip", node.need("ip")?)?;
    check_in_subnet(node, "ip", addr, ip)?;
    if addr == ip.address {
        return Err(node.refuse(format!("ip {addr} is the network's own address")));
    }
    Ok(DhcpHost {
        mac,
        id,
        name,
        ip: addr,
    })
}

impl Dhcp {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
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
            if let Some(d) = &h.id {
                attrs.push(("id", d.as_str()));
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
