//! The network's own link: `bridge`, `mac`, `mtu`, and the DNS `domain`.

use crate::devices::interface::validate_ifname;
use crate::error::Error;
use crate::node::{parse_number, parse_switch, Ctx, Node};
use crate::raw::XmlWriter;

/// The `bridge` element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bridge {
    /// The Linux bridge's name; when absent the daemon picks one
    /// (`virbrN`), as libvirt does.
    pub name: Option<String>,
    /// Spanning tree on or off (libvirt's default is on).
    pub stp: Option<bool>,
    /// Forwarding delay, seconds.
    pub delay: Option<u32>,
}

/// The `domain` element: the DNS domain guests are named in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDomain {
    /// The domain name.
    pub name: String,
    /// `localOnly='yes'`: queries in the domain are never forwarded.
    pub local_only: Option<bool>,
}

/// Smallest MTU accepted: IPv4's minimum.
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted: what a Linux bridge can carry.
pub const MAX_MTU: u32 = 65_535;

pub(crate) fn parse_bridge(node: &Node<'_>, ctx: &mut Ctx) -> Result<Bridge, Error> {
    node.leaf(ctx, &["name", "stp", "delay", "macTableManager", "zone"])?;
    for extra in ["macTableManager", "zone"] {
        if let Some(v) = node.attr(extra) {
            node.warn(ctx, format!("{extra}='{v}' is ignored"));
        }
    }
    let name = match node.attr("name") {
        Some(n) => {
            validate_ifname(n).map_err(|e| node.refuse(format!("name: {e}")))?;
            Some(n.to_string())
        }
        None => None,
    };
    let stp = match node.attr("stp") {
        Some(v) => Some(parse_switch(node, "stp", v)?),
        None => None,
    };
    let delay = match node.attr("delay") {
        Some(v) => Some(parse_number(node, "delay", v)?),
        None => None,
    };
    Ok(Bridge { name, stp, delay })
}

pub(crate) fn parse_mtu(node: &Node<'_>, ctx: &mut Ctx) -> Result<u32, Error> {
    node.leaf(ctx, &["size"])?;
    let size: u32 = parse_number(node, "mtu size", node.need("size")?)?;
    if !(MIN_MTU..=MAX_MTU).contains(&size) {
        return Err(node.refuse(format!("mtu size {size} is outside {MIN_MTU}-{MAX_MTU}")));
    }
    Ok(size)
}

/// A DNS name: labels of letters, digits, '-' and '_' (which libvirt and
/// dnsmasq take, as in `_sip` names), each 1 to 63 bytes, 253 bytes at
/// most. dnsmasq is handed the name, so nothing else passes: no spaces,
/// no control characters, nothing its configuration file would misread.
pub(crate) fn validate_dns_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' is not a DNS name (dot-separated labels of letters, digits, '-' and '_')",
            name.escape_debug()
        ))
    }
}

pub(crate) fn parse_domain(node: &Node<'_>, ctx: &mut Ctx) -> Result<DnsDomain, Error> {
    node.leaf(ctx, &["name", "localOnly", "register"])?;
    if let Some(v) = node.attr("register") {
        node.warn(ctx, format!("register='{v}' is ignored"));
    }
    let name = node.need("name")?;
    validate_dns_name(name).map_err(|e| node.refuse(format!("name: {e}")))?;
    let local_only = parse_yes_no(node, "localOnly")?;
    Ok(DnsDomain {
        name: name.to_string(),
        local_only,
    })
}

/// Parses a yes/no attribute (libvirt also takes on/off here).
pub(crate) fn parse_yes_no(node: &Node<'_>, name: &str) -> Result<Option<bool>, Error> {
    match node.attr(name) {
        None => Ok(None),
        Some("yes" | "on") => Ok(Some(true)),
        Some("no" | "off") => Ok(Some(false)),
        Some(v) => Err(node.refuse(format!("{name}='{v}' must be yes or no"))),
    }
}

pub(crate) fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl Bridge {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let delay = self.delay.map(|d| d.to_string());
        let mut attrs = Vec::new();
        if let Some(n) = &self.name {
            attrs.push(("name", n.as_str()));
        }
        if let Some(s) = self.stp {
            attrs.push(("stp", if s { "on" } else { "off" }));
        }
        if let Some(d) = &delay {
            attrs.push(("delay", d.as_str()));
        }
        w.empty("bridge", &attrs);
    }
}

impl DnsDomain {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let mut attrs = vec![("name", self.name.as_str())];
        if let Some(l) = self.local_only {
            attrs.push(("localOnly", yes_no(l)));
        }
        w.empty("domain", &attrs);
    }
}
