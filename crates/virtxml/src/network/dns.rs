//! `dns`: the names the network's DNS server answers for itself, and
//! where it forwards the rest.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::error::Error;
use crate::node::{Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

use super::link::{parse_yes_no, validate_dns_name, yes_no};

/// The `dns` element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    /// `enable='no'` turns the DNS server off (DHCP still runs).
    pub enable: Option<bool>,
    /// `forwardPlainNames`: whether names without a dot are forwarded.
    pub forward_plain_names: Option<bool>,
    /// `host` entries.
    pub hosts: Vec<DnsHost>,
    /// `forwarder` entries.
    pub forwarders: Vec<Forwarder>,
    /// Children kept without being acted on (none today: TXT and SRV
    /// records are refused until they are served).
    pub kept: Vec<RawElement>,
}

/// `dns/host`: names for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsHost {
    /// The address the names resolve to.
    pub ip: IpAddr,
    /// The `hostname` children, at least one.
    pub hostnames: Vec<String>,
}

/// `dns/forwarder`: an upstream server, for every name or one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarder {
    /// The server's address; absent with a domain, the domain is
    /// answered locally only.
    pub addr: Option<IpAddr>,
    /// The domain forwarded to it.
    pub domain: Option<String>,
}

const DNS_UNMODELLED: &[(&str, Unmodelled)] = &[
    ("txt", Unmodelled::Refuse("TXT records are not served yet")),
    ("srv", Unmodelled::Refuse("SRV records are not served yet")),
];

pub(crate) fn parse_dns(node: &Node<'_>, ctx: &mut Ctx) -> Result<Dns, Error> {
    node.check_attrs(ctx, &["enable", "forwardPlainNames"]);
    let mut dns = Dns {
        enable: parse_yes_no(node, "enable")?,
        forward_plain_names: parse_yes_no(node, "forwardPlainNames")?,
        ..Dns::default()
    };
    let mut ips = HashSet::new();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "host" => {
                c.check_attrs(ctx, &["ip"]);
                let v = c.need("ip")?;
                let ip: IpAddr = v
                    .trim()
                    .parse()
                    .map_err(|_| c.refuse(format!("ip '{v}' is not an IP address")))?;
                let mut hostnames = Vec::new();
                for h in c.children() {
                    let h = h.node();
                    if h.name() != "hostname" {
                        return Err(
                            h.refuse(format!("<{}> inside <host> is not supported", h.name()))
                        );
                    }
                    h.check_attrs(ctx, &[]);
                    let name = h.text()?;
                    validate_dns_name(&name).map_err(|e| h.refuse(e))?;
                    hostnames.push(name);
                }
                if hostnames.is_empty() {
                    return Err(c.refuse("<host> needs at least one <hostname>"));
                }
                if !ips.insert(ip) {
                    return Err(c.refuse(format!("ip {ip} has another <host> already")));
                }
                dns.hosts.push(DnsHost { ip, hostnames });
            }
            "forwarder" => {
                c.leaf(ctx, &["addr", "domain"])?;
                let addr = match c.attr("addr") {
                    Some(v) => Some(
                        v.trim()
                            .parse()
                            .map_err(|_| c.refuse(format!("addr '{v}' is not an IP address")))?,
                    ),
                    None => None,
                };
                let domain = match c.attr("domain") {
                    Some(d) => {
                        validate_dns_name(d).map_err(|e| c.refuse(format!("domain: {e}")))?;
                        Some(d.to_string())
                    }
                    None => None,
                };
                if addr.is_none() && domain.is_none() {
                    return Err(c.refuse("<forwarder> needs an addr= or a domain="));
                }
                dns.forwarders.push(Forwarder { addr, domain });
            }
            _ => dns.kept.push(c.unmodelled(ctx, DNS_UNMODELLED)?),
        }
    }
    Ok(dns)
}

impl Dns {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let mut attrs = Vec::new();
        if let Some(e) = self.enable {
            attrs.push(("enable", yes_no(e)));
        }
        if let Some(f) = self.forward_plain_names {
            attrs.push(("forwardPlainNames", yes_no(f)));
        }
        if self.hosts.is_empty() && self.forwarders.is_empty() && self.kept.is_empty() {
            w.empty("dns", &attrs);
            return;
        }
        w.open("dns", &attrs);
        for f in &self.forwarders {
            let addr = f.addr.map(|a| a.to_string());
            let mut a = Vec::new();
            if let Some(d) = &f.domain {
                a.push(("domain", d.as_str()));
            }
            if let Some(x) = &addr {
                a.push(("addr", x.as_str()));
            }
            w.empty("forwarder", &a);
        }
        for h in &self.hosts {
            let ip = h.ip.to_string();
            w.open("host", &[("ip", &ip)]);
            for n in &h.hostnames {
                w.text("hostname", &[], n);
            }
            w.close("host");
        }
        w.raws(&self.kept);
        w.close("dns");
    }
}
