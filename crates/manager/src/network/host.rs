//! Making a [`Plan`] real on the host, taking it down, and finding it
//! again after a daemon restart. Blocking: the daemon calls these off its
//! async thread.
//!
//! A start either completes or leaves nothing: each step that succeeded is
//! undone, newest first, when a later one fails.

use std::net::IpAddr;

use netvirt::dnsmasq::Dnsmasq;
use netvirt::link::{BridgeOptions, Netlink, VxlanOptions};
use netvirt::nft;
use serde::{Deserialize, Serialize};

use super::plan::{BridgePlan, Plan};

/// What an active network made, saved by the daemon so that a later daemon
/// (or `net-destroy`) removes exactly that.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRecord {
    /// The bridge guests are plugged into.
    pub bridge: String,
    /// Whether the network made the bridge (and removes it).
    pub own_bridge: bool,
    /// Whether the network loaded firewall rules.
    pub rules: bool,
    /// Whether the network runs a dnsmasq.
    pub dnsmasq: bool,
    /// The definition the network was started with (its live XML).
    pub xml: String,
    /// The VXLAN device the network made on its bridge, when it has an
    /// overlay.
    #[serde(default)]
    pub vxlan: Option<String>,
}

/// Why a network could not be started or stopped. Each displays as one
/// line.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The host refused a link operation.
    #[error(transparent)]
    Link(#[from] netvirt::link::LinkError),
    /// nft refused the rules.
    #[error(transparent)]
    Rules(#[from] nft::NftError),
    /// dnsmasq could not be started or stopped.
    #[error(transparent)]
    Dnsmasq(#[from] netvirt::dnsmasq::DnsmasqError),
    /// Something on the host is in the way, or missing.
    #[error("{0}")]
    Host(String),
}

/// A started network: its record and its running dnsmasq.
pub struct Started {
    /// What to save.
    pub record: NetworkRecord,
    /// The DHCP/DNS server, when the network has one.
    pub dnsmasq: Option<Dnsmasq>,
}

/// Undoes what a start made when dropped, unless disarmed.
struct Rollback<'a> {
    plan: &'a Plan,
    bridge_made: bool,
    vxlan_made: bool,
    rules_loaded: bool,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.rules_loaded {
            if let Err(e) = nft::remove(&self.plan.network) {
                tracing::warn!("network '{}': undoing its rules: {e}", self.plan.network);
            }
        }
        if let (true, Some(o)) = (self.vxlan_made, &self.plan.overlay) {
            if let Err(e) = Netlink::open().and_then(|mut nl| nl.delete(&o.name)) {
                tracing::warn!(
                    "network '{}': removing VXLAN device {}: {e}",
                    self.plan.network,
                    o.name
                );
            }
        }
        if self.bridge_made {
            let name = self.plan.bridge.name();
            if let Err(e) = Netlink::open().and_then(|mut nl| nl.delete(name)) {
                tracing::warn!(
                    "network '{}': removing bridge {name}: {e}",
                    self.plan.network
                );
            }
        }
    }
}

/// Makes the network's bridge, addresses, rules and dnsmasq, or nothing.
/// `xml` is the definition saved in the record.
pub fn start(plan: &Plan, xml: &str) -> Result<Started, NetworkError> {
    let mut nl = Netlink::open()?;
    let network = &plan.network;
    if let Some(rules) = &plan.rules {
        if let nft::Forward::Nat {
            out_dev: Some(dev), ..
        }
        | nft::Forward::Route { out_dev: Some(dev) } = &rules.forward
        {
            if nl.index(dev)?.is_none() {
                return Err(NetworkError::Host(format!(
                    "network '{network}': forward dev '{dev}' does not exist"
                )));
            }
        }
    }
    if let Some(o) = &plan.overlay {
        if let Some(dev) = &o.dev {
            if nl.index(dev)?.is_none() {
                return Err(NetworkError::Host(format!(
                    "network '{network}': overlay dev '{dev}' does not exist"
                )));
            }
        }
        if nl.index(&o.name)?.is_some() {
            return Err(NetworkError::Host(format!(
                "network '{network}': VXLAN device '{}' exists already (another network on VNI {}?)",
                o.name, o.vni
            )));
        }
    }
    let mut rollback = Rollback {
        plan,
        bridge_made: false,
        vxlan_made: false,
        rules_loaded: false,
        armed: true,
    };
    match &plan.bridge {
        BridgePlan::Existing(name) => match nl.link(name)? {
            Some(l) if l.kind.as_deref() == Some("bridge") => {}
            Some(_) => {
                return Err(NetworkError::Host(format!(
                    "network '{network}': '{name}' is not a bridge"
                )))
            }
            None => {
                return Err(NetworkError::Host(format!(
                    "network '{network}': bridge '{name}' does not exist"
                )))
            }
        },
        BridgePlan::Own {
            name,
            stp,
            delay_ms,
            mtu,
            mac,
        } => {
            if nl.index(name)?.is_some() {
                return Err(NetworkError::Host(format!(
                    "network '{network}': bridge name '{name}' is in use by another interface"
                )));
            }
            nl.create_bridge(
                name,
                &BridgeOptions {
                    stp: *stp,
                    forward_delay_ms: *delay_ms,
                    mtu: *mtu,
                    mac: *mac,
                },
            )?;
            rollback.bridge_made = true;
            for (addr, prefix) in &plan.addresses {
                nl.add_address(name, *addr, *prefix)?;
            }
            nl.set_up(name, true)?;
        }
    }
    if let Some(o) = &plan.overlay {
        nl.create_vxlan(
            &o.name,
            &VxlanOptions {
                vni: o.vni,
                port: o.port,
                local: o.local,
                group: None,
                dev: o.dev.clone(),
                // Guests' MACs are learnt from what arrives, so unicast
                // goes to one host; only floods go to every remote.
                learning: true,
            },
        )?;
        rollback.vxlan_made = true;
        for remote in &o.remotes {
            nl.add_fdb_remote(&o.name, *remote)?;
        }
        nl.set_master(&o.name, Some(plan.bridge.name()))?;
        nl.set_up(&o.name, true)?;
    }
    if plan.ipv4_forwarding {
        netvirt::link::set_ipv4_forwarding(true).map_err(|e| {
            NetworkError::Host(format!(
                "network '{network}': cannot turn on IPv4 forwarding: {e}"
            ))
        })?;
    }
    if let Some(rules) = &plan.rules {
        // Marked first: a failed apply may have left part of a table.
        rollback.rules_loaded = true;
        nft::apply(rules)?;
    }
    let dnsmasq = match &plan.dnsmasq {
        Some(cfg) => Some(Dnsmasq::start(cfg)?),
        None => None,
    };
    rollback.armed = false;
    Ok(Started {
        record: NetworkRecord {
            bridge: plan.bridge.name().to_string(),
            own_bridge: matches!(plan.bridge, BridgePlan::Own { .. }),
            rules: plan.rules.is_some(),
            dnsmasq: dnsmasq.is_some(),
            xml: xml.to_string(),
            vxlan: plan.overlay.as_ref().map(|o| o.name.clone()),
        },
        dnsmasq,
    })
}

/// Removes what the network made: dnsmasq (and its directory), the rules,
/// the bridge. Goes on past a failed step so that as much as possible is
/// gone, and reports the first failure.
pub fn stop(
    network: &str,
    record: &NetworkRecord,
    dnsmasq: Option<Dnsmasq>,
    dir: &std::path::Path,
) -> Result<(), NetworkError> {
    let mut first: Option<NetworkError> = None;
    let mut keep = |r: Result<(), NetworkError>| {
        if let Err(e) = r {
            tracing::warn!("network '{network}': {e}");
            first.get_or_insert(e);
        }
    };
    let running = match dnsmasq {
        Some(d) => Some(d),
        None if record.dnsmasq => Dnsmasq::adopt(dir).unwrap_or(None),
        None => None,
    };
    if let Some(d) = running {
        keep(d.stop().map_err(NetworkError::from));
    }
    if record.rules {
        keep(nft::remove(network).map_err(NetworkError::from));
    }
    if let Some(vxlan) = &record.vxlan {
        keep(
            Netlink::open()
                .and_then(|mut nl| match nl.link(vxlan)? {
                    Some(l) if l.kind.as_deref() == Some("vxlan") => nl.delete(vxlan),
                    _ => Ok(()),
                })
                .map_err(NetworkError::from),
        );
    }
    if record.own_bridge {
        keep(
            Netlink::open()
                .and_then(|mut nl| match nl.index(&record.bridge)? {
                    Some(_) => nl.delete(&record.bridge),
                    None => Ok(()),
                })
                .map_err(NetworkError::from),
        );
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => keep(Err(NetworkError::Host(format!(
            "removing {}: {e}",
            dir.display()
        )))),
    }
    first.map_or(Ok(()), Err)
}

/// Whether a recorded network is still there after a daemon restart: its
/// bridge exists. Its dnsmasq, when it has one, is found again (the
/// daemon restarts it when it is not).
pub fn bridge_exists(record: &NetworkRecord) -> Result<bool, NetworkError> {
    Ok(Netlink::open()?.index(&record.bridge)?.is_some())
}

/// The addresses already on the host's interfaces, other than those of
/// `except` (a network's own bridge), for the overlap check.
pub fn host_subnets(except: &[&str]) -> Result<Vec<(String, IpAddr, u8)>, NetworkError> {
    let mut nl = Netlink::open()?;
    let mut out = Vec::new();
    for link in nl.links()? {
        if except.contains(&link.name.as_str()) || link.name == "lo" {
            continue;
        }
        for (addr, prefix) in nl.addresses(&link.name)? {
            // Link-local IPv6 addresses are on every interface and never
            // routed: they overlap nothing.
            if let IpAddr::V6(v6) = addr {
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    continue;
                }
            }
            out.push((link.name.clone(), addr, prefix));
        }
    }
    Ok(out)
}
