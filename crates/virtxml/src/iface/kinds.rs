//! What only one kind of host interface has: a bridge's `bridge` element
//! with its ports, a VLAN's `vlan` with its tag and parent, a bond's
//! `bond` with its policy, link monitor and slaves.

use std::collections::HashSet;

use crate::devices::interface::validate_ifname;
use crate::error::Error;
use crate::node::{parse_number, parse_switch, Ctx, Node};
use crate::raw::XmlWriter;

use super::{parse_iface, HostInterface, Role};

/// Most ports one bridge, or slaves one bond, may have in a definition.
pub const MAX_MEMBERS: usize = 64;

/// Longest forwarding delay accepted, in milliseconds. With spanning
/// tree on the kernel takes 2 to 30 s; off, the delay is unused, and an
/// hour is far beyond any use.
pub const MAX_DELAY_MS: u32 = 3_600_000;

/// The `bridge` element of a `type='bridge'` interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeDef {
    /// Spanning tree on or off; unset leaves the kernel's default (off).
    pub stp: Option<bool>,
    /// Forwarding delay in milliseconds (libvirt writes seconds, with a
    /// fraction: `delay='0.01'`).
    pub delay_ms: Option<u32>,
    /// The ports: existing devices, or VLANs and bonds made with it.
    pub members: Vec<HostInterface>,
}

/// The `vlan` element of a `type='vlan'` interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanDef {
    /// The 802.1Q tag, 1 to 4094.
    pub tag: u16,
    /// The device it is made on (`<interface name='eth0'/>`), which must
    /// exist when it starts.
    pub parent: String,
}

/// Bonding policies, as libvirt names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondMode {
    /// Round robin (the kernel's default).
    BalanceRr,
    /// One slave at a time, another on failure.
    ActiveBackup,
    /// By a hash of the addresses.
    BalanceXor,
    /// Everything on every slave.
    Broadcast,
    /// IEEE 802.3ad link aggregation (LACP).
    Ieee8023ad,
    /// Adaptive transmit load balancing.
    BalanceTlb,
    /// Adaptive load balancing, both ways.
    BalanceAlb,
}

impl BondMode {
    const ALL: [BondMode; 7] = [
        BondMode::BalanceRr,
        BondMode::ActiveBackup,
        BondMode::BalanceXor,
        BondMode::Broadcast,
        BondMode::Ieee8023ad,
        BondMode::BalanceTlb,
        BondMode::BalanceAlb,
    ];

    /// The name in `mode=`.
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Ieee8023ad => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

/// The `bond` element of a `type='bond'` interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondDef {
    /// The policy; unset is the kernel's default, balance-rr.
    pub mode: Option<BondMode>,
    /// MII link monitoring interval in milliseconds (`miimon freq=`);
    /// unset or 0 turns it off.
    pub miimon_ms: Option<u32>,
    /// The slaves, existing devices all.
    pub members: Vec<HostInterface>,
}

/// Parses `delay=`: seconds, with up to three decimals.
fn parse_delay(node: &Node<'_>, v: &str) -> Result<u32, Error> {
    let bad = || {
        node.refuse(format!(
            "delay '{v}' is not a number of seconds (such as 0, 2 or 0.5, at most three decimals)"
        ))
    };
    let (whole, frac) = v.trim().split_once('.').unwrap_or((v.trim(), ""));
    if whole.is_empty()
        || whole.len() > 7
        || frac.len() > 3
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let mut ms = 0u32;
    for (i, b) in frac.bytes().enumerate() {
        let scale = [100, 10, 1][i];
        ms += u32::from(b - b'0') * scale;
    }
    let total = whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(ms))
        .filter(|&t| t <= MAX_DELAY_MS)
        .ok_or_else(|| {
            node.refuse(format!(
                "delay '{v}' is longer than {} seconds",
                MAX_DELAY_MS / 1000
            ))
        })?;
    Ok(total)
}

/// Milliseconds as libvirt's seconds: `2`, `0.5`, `0.015`.
fn delay_text(ms: u32) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return s.to_string();
    }
    let f = format!("{frac:03}");
    format!("{s}.{}", f.trim_end_matches('0'))
}

/// Reads the ports or slaves of `master` under `node`, each checked
/// against the master's name and the earlier ones': one device cannot
/// be enslaved twice, nor to itself.
fn parse_members(
    node: &Node<'_>,
    ctx: &mut Ctx,
    master: &str,
    role: Role,
    others: &[&str],
) -> Result<Vec<HostInterface>, Error> {
    let mut members: Vec<HostInterface> = Vec::new();
    // Every name in the earlier members' trees.
    let mut seen: HashSet<String> = HashSet::new();
    for child in node.children() {
        let c = child.node();
        if others.contains(&c.name()) {
            continue;
        }
        if c.name() != "interface" {
            return Err(c.refuse(format!(
                "<{}> inside <{}> is not supported",
                c.name(),
                node.name()
            )));
        }
        if members.len() >= MAX_MEMBERS {
            return Err(c.refuse(format!(
                "a <{}> has at most {MAX_MEMBERS} member interfaces",
                node.name()
            )));
        }
        let m = parse_iface(&c, ctx, role)?;
        let names: Vec<&HostInterface> = m.all();
        for name in names.iter().map(|i| i.name.as_str()) {
            if name == master {
                return Err(c.refuse(format!("'{name}' cannot be a member of itself")));
            }
            if seen.contains(name) {
                return Err(c.refuse(format!("interface '{name}' is a member more than once")));
            }
        }
        seen.extend(names.iter().map(|i| i.name.clone()));
        members.push(m);
    }
    Ok(members)
}

pub(crate) fn parse_bridge(
    node: &Node<'_>,
    ctx: &mut Ctx,
    master: &str,
) -> Result<BridgeDef, Error> {
    node.check_attrs(ctx, &["stp", "delay"]);
    let stp = match node.attr("stp") {
        Some(v) => Some(parse_switch(node, "stp", v)?),
        None => None,
    };
    let delay_ms = match node.attr("delay") {
        Some(v) => Some(parse_delay(node, v)?),
        None => None,
    };
    let members = parse_members(node, ctx, master, Role::BridgePort, &[])?;
    Ok(BridgeDef {
        stp,
        delay_ms,
        members,
    })
}

pub(crate) fn parse_vlan(node: &Node<'_>, ctx: &mut Ctx) -> Result<VlanDef, Error> {
    node.check_attrs(ctx, &["tag"]);
    let tag: u16 = parse_number(node, "vlan tag", node.need("tag")?)?;
    if !(1..=4094).contains(&tag) {
        return Err(node.refuse(format!("vlan tag {tag} is outside 1-4094")));
    }
    let mut parent = None;
    for child in node.children() {
        let c = child.node();
        if c.name() != "interface" {
            return Err(c.refuse(format!("<{}> inside <vlan> is not supported", c.name())));
        }
        c.once(&parent)?;
        c.leaf(ctx, &["name"])?;
        let name = c.need("name")?;
        validate_ifname(name).map_err(|e| c.refuse(format!("name: {e}")))?;
        parent = Some(name.to_string());
    }
    let parent = parent
        .ok_or_else(|| node.refuse("<vlan> needs its parent device: <interface name='...'/>"))?;
    Ok(VlanDef { tag, parent })
}

pub(crate) fn parse_bond(node: &Node<'_>, ctx: &mut Ctx, master: &str) -> Result<BondDef, Error> {
    node.check_attrs(ctx, &["mode"]);
    let mode = match node.attr("mode") {
        None => None,
        Some(m) => Some(
            BondMode::ALL
                .into_iter()
                .find(|b| b.as_str() == m)
                .ok_or_else(|| {
                    node.refuse(format!(
                        "bond mode '{m}' must be balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb"
                    ))
                })?,
        ),
    };
    let mut miimon_ms = None;
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "miimon" => {
                c.once(&miimon_ms)?;
                miimon_ms = Some(parse_miimon(&c, ctx)?);
            }
            "arpmon" => {
                return Err(c.refuse(
                    "<arpmon> is not supported: ARP monitoring is not set up; use <miimon>",
                ))
            }
            _ => {}
        }
    }
    let slaves = parse_members(node, ctx, master, Role::BondSlave, &["miimon"])?;
    if slaves.is_empty() {
        return Err(node.refuse("a bond needs at least one slave <interface>"));
    }
    Ok(BondDef {
        mode,
        miimon_ms,
        members: slaves,
    })
}

fn parse_miimon(node: &Node<'_>, ctx: &mut Ctx) -> Result<u32, Error> {
    node.leaf(ctx, &["freq", "updelay", "downdelay", "carrier"])?;
    let freq: u32 = parse_number(node, "miimon freq", node.need("freq")?)?;
    // The delays change when a slave is taken in or out of use; not
    // applying them would change failover as the host sees it.
    for delay in ["updelay", "downdelay"] {
        if let Some(v) = node.attr(delay) {
            let n: u32 = parse_number(node, delay, v)?;
            if n != 0 {
                return Err(node.refuse(format!(
                    "{delay}='{v}' is not supported: slaves are taken in and out of use at once"
                )));
            }
        }
    }
    match node.attr("carrier") {
        None | Some("netif") => {}
        Some("ioctl") => {
            return Err(node.refuse(
                "carrier='ioctl' is not supported: the kernel reads the carrier from the device (netif)",
            ))
        }
        Some(v) => {
            return Err(node.refuse(format!("carrier '{v}' must be netif or ioctl")));
        }
    }
    Ok(freq)
}

impl BridgeDef {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let delay = self.delay_ms.map(delay_text);
        let mut attrs = Vec::new();
        if let Some(s) = self.stp {
            attrs.push(("stp", if s { "on" } else { "off" }));
        }
        if let Some(d) = &delay {
            attrs.push(("delay", d.as_str()));
        }
        if self.members.is_empty() {
            w.empty("bridge", &attrs);
            return;
        }
        w.open("bridge", &attrs);
        for m in &self.members {
            m.write(w);
        }
        w.close("bridge");
    }
}

impl VlanDef {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("vlan", &[("tag", &self.tag.to_string())]);
        w.empty("interface", &[("name", &self.parent)]);
        w.close("vlan");
    }
}

impl BondDef {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        match self.mode {
            Some(m) => w.open("bond", &[("mode", m.as_str())]),
            None => w.open("bond", &[]),
        }
        if let Some(f) = self.miimon_ms {
            w.empty("miimon", &[("freq", &f.to_string())]);
        }
        for m in &self.members {
            m.write(w);
        }
        w.close("bond");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_seconds_with_a_fraction() {
        for (ms, text) in [
            (0, "0"),
            (2000, "2"),
            (500, "0.5"),
            (15, "0.015"),
            (10, "0.01"),
        ] {
            assert_eq!(delay_text(ms), text);
        }
    }
}
