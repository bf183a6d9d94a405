//! What the host enforces on a NIC's port: `filterref` (libvirt's stock
//! anti-spoofing filters) and `bandwidth` (rate limits each way).
//!
//! Only the filters Vireo implements itself are accepted by name: a
//! libvirt installation can define any filter, but Vireo has no filter
//! language, so an unknown name would silently protect nothing.

use std::net::Ipv4Addr;

use crate::error::Error;
use crate::node::{parse_number, Ctx, Node};
use crate::raw::XmlWriter;

use super::interface::MacAddress;

/// One of libvirt's stock network filters that Vireo enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFilter {
    /// `clean-traffic`: no MAC, IP or ARP spoofing, DHCP allowed, and
    /// only IPv4 and ARP frames leave the guest (as libvirt's, which
    /// includes `no-other-l2-traffic`).
    CleanTraffic,
    /// `no-mac-spoofing`: frames must carry the NIC's MAC as source.
    NoMacSpoofing,
    /// `no-ip-spoofing`: IPv4 packets must come from an allowed address
    /// (a DHCP client's broadcast from 0.0.0.0 excepted).
    NoIpSpoofing,
    /// `no-arp-spoofing`: ARP must name the NIC's MAC and an allowed address.
    NoArpSpoofing,
    /// `allow-dhcp`: a DHCP client's broadcast passes the other checks.
    AllowDhcp,
}

impl NetFilter {
    /// Every filter with its libvirt name.
    pub const ALL: [(NetFilter, &'static str); 5] = [
        (NetFilter::CleanTraffic, "clean-traffic"),
        (NetFilter::NoMacSpoofing, "no-mac-spoofing"),
        (NetFilter::NoIpSpoofing, "no-ip-spoofing"),
        (NetFilter::NoArpSpoofing, "no-arp-spoofing"),
        (NetFilter::AllowDhcp, "allow-dhcp"),
    ];

    /// The libvirt name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("clean-traffic", |(_, n)| n)
    }

    /// The filter called `name`, if Vireo has it.
    pub fn from_name(name: &str) -> Option<NetFilter> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }
}

/// `<filterref filter='...'>` with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterRef {
    /// The filter.
    pub filter: NetFilter,
    /// `parameter name='IP'`: the addresses the guest may send from. Empty
    /// means the address is learnt from the network's DHCP lease.
    pub ips: Vec<Ipv4Addr>,
    /// `parameter name='MAC'`: the source MAC allowed, when not the NIC's.
    pub mac: Option<MacAddress>,
}

/// Limits for one direction, in libvirt's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Long-term rate, KiB/s (at least 1).
    pub average: u64,
    /// Rate while bursting, KiB/s (not below `average`).
    pub peak: Option<u64>,
    /// How much may be sent at `peak`, KiB.
    pub burst: Option<u64>,
    /// Guaranteed minimum (inbound only in libvirt); kept, not enforced.
    pub floor: Option<u64>,
}

/// Highest accepted rate or size: 2^32 - 1 KiB(/s), about 4 TiB/s, far
/// above any NIC, and small enough that the bit rate given to tc fits 64 bits.
pub const MAX_RATE_KIB: u64 = u32::MAX as u64;

/// `<bandwidth>`: `inbound` is traffic to the guest, `outbound` from it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bandwidth {
    /// Limits on what the guest receives.
    pub inbound: Option<RateLimit>,
    /// Limits on what the guest sends.
    pub outbound: Option<RateLimit>,
}

impl Bandwidth {
    /// Whether neither direction is limited.
    pub fn is_empty(&self) -> bool {
        self.inbound.is_none() && self.outbound.is_none()
    }
}

pub(crate) fn parse_filterref(node: &Node<'_>, ctx: &mut Ctx) -> Result<FilterRef, Error> {
    node.check_attrs(ctx, &["filter"]);
    let name = node.need("filter")?;
    let filter = NetFilter::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = NetFilter::ALL.iter().map(|(_, n)| *n).collect();
        node.refuse(format!(
            "filter '{name}' is not supported: use {}",
            known.join(", ")
        ))
    })?;
    let mut out = FilterRef {
        filter,
        ips: Vec::new(),
        mac: None,
    };
    for child in node.children() {
        let c = child.node();
        if c.name() != "parameter" {
            return Err(c.refuse(format!(
                "<{}> inside <filterref> is not supported",
                c.name()
            )));
        }
        c.leaf(ctx, &["name", "value"])?;
        let value = c.need("value")?;
        match c.need("name")? {
            "IP" => {
                let ip: Ipv4Addr = value.parse().map_err(|_| {
                    c.refuse(format!("parameter IP '{value}' is not an IPv4 address"))
                })?;
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                    return Err(c.refuse(format!(
                        "parameter IP '{value}' cannot be a guest's own address"
                    )));
                }
                if !out.ips.contains(&ip) {
                    out.ips.push(ip);
                }
            }
            "MAC" => {
                c.once(&out.mac)?;
                out.mac = Some(
                    MacAddress::parse(value)
                        .map_err(|e| c.refuse(format!("parameter MAC: {e}")))?,
                );
            }
            other => {
                return Err(c.refuse(format!(
                    "filter parameter '{other}' is not supported: use IP or MAC"
                )))
            }
        }
    }
    Ok(out)
}

pub(crate) fn parse_bandwidth(node: &Node<'_>, ctx: &mut Ctx) -> Result<Bandwidth, Error> {
    node.check_attrs(ctx, &[]);
    let mut bw = Bandwidth::default();
    for child in node.children() {
        let c = child.node();
        let slot = match c.name() {
            "inbound" => &mut bw.inbound,
            "outbound" => &mut bw.outbound,
            other => return Err(c.refuse(format!("<{other}> inside <bandwidth> is not supported"))),
        };
        c.once(slot)?;
        *slot = Some(parse_rate(&c, ctx)?);
    }
    Ok(bw)
}

fn parse_rate(c: &Node<'_>, ctx: &mut Ctx) -> Result<RateLimit, Error> {
    c.leaf(ctx, &["average", "peak", "burst", "floor"])?;
    let number = |name: &str| -> Result<Option<u64>, Error> {
        let Some(v) = c.attr(name) else {
            return Ok(None);
        };
        let n: u64 = parse_number(c, name, v)?;
        if n == 0 {
            return Err(c.refuse(format!("{name}='0': a limit must be at least 1")));
        }
        if n > MAX_RATE_KIB {
            return Err(c.refuse(format!("{name}='{v}' is over the maximum {MAX_RATE_KIB}")));
        }
        Ok(Some(n))
    };
    let average = number("average")?;
    let peak = number("peak")?;
    let burst = number("burst")?;
    let floor = number("floor")?;
    if floor.is_some() {
        c.warn(
            ctx,
            "floor is kept but not acted on: no minimum is guaranteed",
        );
    }
    let average =
        average.ok_or_else(|| c.refuse(format!("<{}> needs an average= attribute", c.name())))?;
    if let Some(p) = peak {
        if p < average {
            return Err(c.refuse(format!("peak='{p}' is below average='{average}'")));
        }
    }
    Ok(RateLimit {
        average,
        peak,
        burst,
        floor,
    })
}

impl FilterRef {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        if self.ips.is_empty() && self.mac.is_none() {
            w.empty("filterref", &[("filter", self.filter.name())]);
            return;
        }
        w.open("filterref", &[("filter", self.filter.name())]);
        if let Some(m) = &self.mac {
            w.empty("parameter", &[("name", "MAC"), ("value", &m.to_string())]);
        }
        for ip in &self.ips {
            w.empty("parameter", &[("name", "IP"), ("value", &ip.to_string())]);
        }
        w.close("filterref");
    }
}

impl Bandwidth {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        if self.is_empty() {
            return;
        }
        w.open("bandwidth", &[]);
        for (name, rate) in [("inbound", &self.inbound), ("outbound", &self.outbound)] {
            let Some(r) = rate else { continue };
            let mut attrs = vec![("average", r.average.to_string())];
            for (k, v) in [("peak", r.peak), ("burst", r.burst), ("floor", r.floor)] {
                if let Some(v) = v {
                    attrs.push((k, v.to_string()));
                }
            }
            let refs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            w.empty(name, &refs);
        }
        w.close("bandwidth");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::interface::{parse_interface, Interface};
    use crate::tree::read;

    fn iface(inner: &str) -> Result<(Interface, Vec<String>), Error> {
        let xml = format!(
            "<interface type='network'><source network='lan'/>\
             <mac address='52:54:00:00:00:07'/>{inner}</interface>"
        );
        let el = read(&xml).unwrap();
        let mut ctx = Ctx::default();
        let i = parse_interface(&Node::root(&el, "/domain/devices/interface[1]"), &mut ctx)?;
        Ok((i, ctx.warnings.iter().map(|w| w.to_string()).collect()))
    }

    fn written(i: &Interface) -> String {
        let mut w = XmlWriter::default();
        i.write(&mut w);
        w.finish()
    }

    #[test]
    fn filters_with_parameters_parse_and_write_back() {
        let (i, warnings) = iface(
            "<filterref filter='clean-traffic'><parameter name='IP' value='192.0.2.7'/>\
             <parameter name='IP' value='192.0.2.8'/>\
             <parameter name='MAC' value='52:54:00:00:00:09'/></filterref>",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let f = i.filterref.clone().unwrap();
        assert_eq!(f.filter, NetFilter::CleanTraffic);
        assert_eq!(
            f.ips,
            vec![Ipv4Addr::new(192, 0, 2, 7), Ipv4Addr::new(192, 0, 2, 8)]
        );
        assert_eq!(f.mac.unwrap().to_string(), "52:54:00:00:00:09");
        let xml = written(&i);
        assert!(
            xml.contains("<parameter name='IP' value='192.0.2.8'/>"),
            "{xml}"
        );
        let again = crate::Domain::parse(&format!(
            "<domain type='kvm'><name>a</name><memory>1024</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os><devices>{xml}</devices></domain>"
        ))
        .unwrap();
        assert_eq!(again.domain.devices.interfaces[0].filterref, Some(f));
        for (filter, name) in NetFilter::ALL {
            let (i, _) = iface(&format!("<filterref filter='{name}'/>")).unwrap();
            assert_eq!(i.filterref.unwrap().filter, filter);
            assert_eq!(filter.name(), name);
        }
    }

    #[test]
    fn bandwidth_parses_warns_on_floor_and_writes_back() {
        let (i, warnings) = iface(
            "<bandwidth><inbound average='1000' peak='5000' burst='1024' floor='200'/>\
             <outbound average='128'/></bandwidth>",
        )
        .unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("floor"), "{warnings:?}");
        let b = i.bandwidth.clone().unwrap();
        assert_eq!(
            b.inbound,
            Some(RateLimit {
                average: 1000,
                peak: Some(5000),
                burst: Some(1024),
                floor: Some(200)
            })
        );
        assert_eq!(b.outbound.unwrap().average, 128);
        let xml = written(&i);
        assert!(
            xml.contains("<inbound average='1000' peak='5000' burst='1024' floor='200'/>")
                && xml.contains("<outbound average='128'/>"),
            "{xml}"
        );
        let (i, _) = iface("<bandwidth/>").unwrap();
        assert_eq!(i.bandwidth, None);
    }

    #[test]
    fn bad_filters_and_rates_are_refused_naming_the_path() {
        for (bad, says) in [
            ("<filterref filter='allow-arp'/>", "filter 'allow-arp'"),
            ("<filterref/>", "filter="),
            (
                "<filterref filter='clean-traffic'><parameter name='IP' value='2001:db8::1'/></filterref>",
                "not an IPv4",
            ),
            (
                "<filterref filter='clean-traffic'><parameter name='IP' value='0.0.0.0'/></filterref>",
                "own address",
            ),
            (
                "<filterref filter='clean-traffic'><parameter name='DHCPSERVER' value='192.0.2.1'/></filterref>",
                "DHCPSERVER",
            ),
            (
                "<filterref filter='clean-traffic'><parameter name='MAC' value='zz'/></filterref>",
                "MAC",
            ),
            ("<filterref filter='clean-traffic'/><filterref filter='allow-dhcp'/>", "more than once"),
            ("<bandwidth><inbound average='0'/></bandwidth>", "at least 1"),
            ("<bandwidth><inbound average='4294967296'/></bandwidth>", "maximum"),
            ("<bandwidth><inbound average='99999999999999999999999'/></bandwidth>", "valid number"),
            ("<bandwidth><inbound average='-5'/></bandwidth>", "valid number"),
            ("<bandwidth><inbound peak='10'/></bandwidth>", "average="),
            ("<bandwidth><outbound average='10' peak='5'/></bandwidth>", "below"),
            ("<bandwidth><outbound average='10' burst='0'/></bandwidth>", "burst='0'"),
            ("<bandwidth><sideways average='10'/></bandwidth>", "sideways"),
            ("<bandwidth><inbound average='1'/><inbound average='2'/></bandwidth>", "more than once"),
        ] {
            let e = iface(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.starts_with("/domain/devices/interface[1]/"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
