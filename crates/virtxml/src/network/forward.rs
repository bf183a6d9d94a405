//! `forward`: how a network reaches beyond its bridge (NAT, routed,
//! open, an existing host bridge), or nothing at all (isolated).

use std::net::Ipv4Addr;

use crate::devices::interface::validate_ifname;
use crate::error::Error;
use crate::node::{parse_number, Ctx, Node};
use crate::raw::XmlWriter;

use super::link::{parse_yes_no, yes_no};

/// The forwarding modes Vireo implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardMode {
    /// Masquerade traffic leaving the network (libvirt's default mode).
    Nat,
    /// Route the network's subnet, without address translation.
    Route,
    /// Route with no firewall rules at all.
    Open,
    /// Attach guests to an existing host bridge (`bridge name=`).
    Bridge,
}

impl ForwardMode {
    /// The name libvirt uses in `mode=`.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Nat => "nat",
            ForwardMode::Route => "route",
            ForwardMode::Open => "open",
            ForwardMode::Bridge => "bridge",
        }
    }
}

/// `forward/nat`: the ranges masquerading may use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Nat {
    /// `address start end`: the public IPv4 addresses to masquerade to.
    pub addresses: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `port start end`: the source ports to masquerade to.
    pub ports: Option<(u16, u16)>,
    /// `ipv6='yes'`: masquerade IPv6 too (NAT66), not only IPv4.
    pub ipv6: Option<bool>,
}

/// The `forward` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The mode (`<forward/>` alone means NAT, as in libvirt).
    pub mode: ForwardMode,
    /// `dev=`: the only host interface traffic may leave by.
    pub dev: Option<String>,
    /// `nat` ranges (mode NAT only).
    pub nat: Option<Nat>,
}

pub(crate) fn parse_forward(node: &Node<'_>, ctx: &mut Ctx) -> Result<Forward, Error> {
    node.check_attrs(ctx, &["mode", "dev"]);
    let mode = match node.attr("mode").unwrap_or("nat") {
        "nat" => ForwardMode::Nat,
        "route" => ForwardMode::Route,
        "open" => ForwardMode::Open,
        "bridge" => ForwardMode::Bridge,
        m @ ("private" | "vepa" | "passthrough" | "hostdev") => {
            return Err(node.refuse(format!(
                "forward mode '{m}' is not supported: Vireo forwards by nat, route, open or bridge"
            )))
        }
        m => return Err(node.refuse(format!("forward mode '{m}' is not a libvirt mode"))),
    };
    let dev = match node.attr("dev") {
        Some(d) => {
            validate_ifname(d).map_err(|e| node.refuse(format!("dev: {e}")))?;
            Some(d.to_string())
        }
        None => None,
    };
    let mut nat = None;
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "nat" if mode == ForwardMode::Nat => {
                c.once(&nat)?;
                nat = Some(parse_nat(&c, ctx)?);
            }
            "nat" => {
                return Err(c.refuse(format!(
                    "<nat> belongs to forward mode 'nat', not '{}'",
                    mode.as_str()
                )))
            }
            "interface" | "pf" | "address" => {
                return Err(c.refuse(format!(
                    "<{}> inside <forward> is not supported: Vireo does not hand host devices to guests",
                    c.name()
                )))
            }
            other => return Err(c.refuse(format!("<{other}> inside <forward> is not supported"))),
        }
    }
    Ok(Forward { mode, dev, nat })
}

fn parse_nat(node: &Node<'_>, ctx: &mut Ctx) -> Result<Nat, Error> {
    node.check_attrs(ctx, &["ipv6"]);
    let mut out = Nat {
        ipv6: parse_yes_no(node, "ipv6")?,
        ..Nat::default()
    };
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "address" => {
                c.once(&out.addresses)?;
                c.leaf(ctx, &["start", "end"])?;
                let parse = |what: &str| -> Result<Ipv4Addr, Error> {
                    let v = c.need(what)?;
                    v.parse()
                        .map_err(|_| c.refuse(format!("{what} '{v}' is not an IPv4 address")))
                };
                let start = parse("start")?;
                let end = match c.attr("end") {
                    Some(_) => parse("end")?,
                    None => start,
                };
                if start > end {
                    return Err(c.refuse(format!("start {start} is after end {end}")));
                }
                out.addresses = Some((start, end));
            }
            "port" => {
                c.once(&out.ports)?;
                c.leaf(ctx, &["start", "end"])?;
                let start: u16 = parse_number(&c, "start", c.need("start")?)?;
                let end: u16 = parse_number(&c, "end", c.need("end")?)?;
                if start == 0 || start > end {
                    return Err(c.refuse(format!(
                        "port range {start}-{end} must be within 1-65535 with start <= end"
                    )));
                }
                out.ports = Some((start, end));
            }
            other => return Err(c.refuse(format!("<{other}> inside <nat> is not supported"))),
        }
    }
    Ok(out)
}

impl Forward {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let mut attrs = vec![("mode", self.mode.as_str())];
        if let Some(d) = &self.dev {
            attrs.push(("dev", d));
        }
        let Some(nat) = self.nat.as_ref().filter(|n| **n != Nat::default()) else {
            w.empty("forward", &attrs);
            return;
        };
        w.open("forward", &attrs);
        match nat.ipv6 {
            Some(v) => w.open("nat", &[("ipv6", yes_no(v))]),
            None => w.open("nat", &[]),
        }
        if let Some((s, e)) = nat.addresses {
            w.empty(
                "address",
                &[("start", &s.to_string()), ("end", &e.to_string())],
            );
        }
        if let Some((s, e)) = nat.ports {
            w.empty(
                "port",
                &[("start", &s.to_string()), ("end", &e.to_string())],
            );
        }
        w.close("nat");
        w.close("forward");
    }
}
