//! Anti-spoofing on a guest NIC's bridge port (libvirt's `clean-traffic`
//! family of network filters), in the nftables bridge family.
//!
//! All ports share one table, `bridge vireo_ports`. Each port has a base
//! chain of its own on the bridge's prerouting hook, whose first rule lets
//! through every frame not from that port: installing, replacing or
//! removing one port's rules is then one transaction on one chain, never
//! touching another port's. Prerouting sees a frame before the bridge
//! decides between forwarding it and delivering it to the host, so frames
//! to the network's own DHCP/DNS server and gateway are checked as well.
//!
//! Only frames *from* the guest are filtered: what reaches the guest is
//! the network's business.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::nft::{run, NftError};

/// The table every port chain lives in.
pub const TABLE: &str = "vireo_ports";
const FAMILY: &str = "bridge";
/// Prefix of a port's chain name.
const CHAIN_PREFIX: &str = "port_";

/// Serializes changes to the shared table: a port's removal deletes the
/// table once it is empty, which must not race another port's install.
static TABLE_LOCK: Mutex<()> = Mutex::new(());

/// Which checks a port gets (each a libvirt filter of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checks {
    /// `no-mac-spoofing`: the Ethernet source must be the NIC's MAC.
    pub mac: bool,
    /// `no-ip-spoofing`: IPv4 sources must be among the allowed addresses.
    pub ip: bool,
    /// `no-arp-spoofing`: ARP sender MAC and IPv4 address must be the NIC's.
    pub arp: bool,
    /// `allow-dhcp`: a DHCP client's 0.0.0.0:68 -> 255.255.255.255:67
    /// broadcast passes the IP check.
    pub dhcp: bool,
    /// `no-other-l2-traffic` (part of libvirt's `clean-traffic`): only
    /// IPv4 and ARP frames leave the guest.
    pub only_ipv4_arp: bool,
}

impl Checks {
    /// libvirt's `clean-traffic`: every check.
    pub const CLEAN_TRAFFIC: Checks = Checks {
        mac: true,
        ip: true,
        arp: true,
        dhcp: true,
        only_ipv4_arp: true,
    };
}

/// What one port is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFilter {
    /// The port's interface (the guest's TAP).
    pub port: String,
    /// The guest NIC's MAC.
    pub mac: [u8; 6],
    /// The IPv4 addresses the guest may send from; empty means none yet
    /// (only the DHCP broadcast passes, when `checks.dhcp`).
    pub ips: Vec<Ipv4Addr>,
    /// The checks.
    pub checks: Checks,
}

/// The chain name of `port`: letters and digits kept, every other byte
/// as `_xx`, so two port names never share a chain.
pub fn chain_name(port: &str) -> String {
    let mut name = String::from(CHAIN_PREFIX);
    for b in port.bytes() {
        if b.is_ascii_alphanumeric() {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("_{b:02x}"));
        }
    }
    name
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn table() -> Value {
    json!({"family": FAMILY, "name": TABLE})
}

fn base_chain(name: &str) -> Value {
    // Bridge filter priority: before anything else on the hook.
    json!({"family": FAMILY, "table": TABLE, "name": name,
        "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"})
}

fn matches(op: &str, protocol: &str, field: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": {"payload": {"protocol": protocol, "field": field}}, "right": right}})
}

/// A set of addresses, or the one address (nft wants no one-element set).
fn addresses(ips: &[Ipv4Addr]) -> Value {
    match ips {
        [one] => json!(one.to_string()),
        _ => json!({"set": ips.iter().map(ToString::to_string).collect::<Vec<_>>()}),
    }
}

/// The rules of `f`'s chain, in order.
fn rules(f: &PortFilter) -> Vec<Vec<Value>> {
    let c = f.checks;
    let mac = mac_text(f.mac);
    let drop = json!({"drop": null});
    let accept = json!({"accept": null});
    let mut out = vec![vec![
        json!({"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": f.port}}),
        accept.clone(),
    ]];
    if c.mac {
        out.push(vec![
            matches("!=", "ether", "saddr", json!(mac)),
            drop.clone(),
        ]);
    }
    if c.only_ipv4_arp {
        out.push(vec![
            matches("!=", "ether", "type", json!({"set": ["ip", "arp"]})),
            drop.clone(),
        ]);
    }
    if c.dhcp {
        out.push(vec![
            matches("==", "ip", "saddr", json!("0.0.0.0")),
            matches("==", "ip", "daddr", json!("255.255.255.255")),
            matches("==", "udp", "sport", json!(68)),
            matches("==", "udp", "dport", json!(67)),
            accept,
        ]);
    }
    if c.ip {
        if f.ips.is_empty() {
            out.push(vec![
                matches("==", "ether", "type", json!("ip")),
                drop.clone(),
            ]);
        } else {
            out.push(vec![
                matches("!=", "ip", "saddr", addresses(&f.ips)),
                drop.clone(),
            ]);
        }
    }
    if c.arp {
        out.push(vec![
            matches("!=", "arp", "saddr ether", json!(mac)),
            drop.clone(),
        ]);
        if f.ips.is_empty() {
            out.push(vec![matches("==", "ether", "type", json!("arp")), drop]);
        } else {
            out.push(vec![
                matches("!=", "arp", "saddr ip", addresses(&f.ips)),
                drop,
            ]);
        }
    }
    out
}

fn check_port(port: &str) -> Result<(), NftError> {
    crate::nft::check_ifname("port", port)
}

/// The nft JSON document installing `f`, replacing what the port had.
fn document(f: &PortFilter) -> Result<Value, NftError> {
    check_port(&f.port)?;
    if f.mac[0] & 1 != 0 {
        return Err(NftError::Invalid(format!(
            "{} is a multicast MAC address",
            mac_text(f.mac)
        )));
    }
    let chain = chain_name(&f.port);
    let mut cmds = vec![
        json!({"add": {"table": table()}}),
        json!({"add": {"chain": base_chain(&chain)}}),
        json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}}),
    ];
    for expr in rules(f) {
        cmds.push(json!({"add": {"rule": {
            "family": FAMILY, "table": TABLE, "chain": chain, "expr": expr,
        }}}));
    }
    Ok(json!({ "nftables": cmds }))
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    TABLE_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Install `f` on its port, replacing the port's earlier rules in one
/// transaction (so a refreshed address list never leaves a gap).
pub fn apply(f: &PortFilter) -> Result<(), NftError> {
    let doc = document(f)?;
    let _held = lock();
    run(&["-j", "-f", "-"], Some(&doc.to_string())).map(|_| ())
}

/// Remove the rules of `port`; Ok when it had none. The table goes with
/// its last port.
pub fn remove(port: &str) -> Result<(), NftError> {
    check_port(port)?;
    let chain = chain_name(port);
    let _held = lock();
    // Adding first makes the delete succeed when nothing is there; the
    // flush empties the chain so the kernel lets it go.
    let doc = json!({"nftables": [
        {"add": {"table": table()}},
        {"add": {"chain": base_chain(&chain)}},
        {"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}},
        {"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}},
    ]});
    run(&["-j", "-f", "-"], Some(&doc.to_string()))?;
    if chains()?.is_empty() {
        let doc = json!({"nftables": [{"delete": {"table": table()}}]});
        run(&["-j", "-f", "-"], Some(&doc.to_string()))?;
    }
    Ok(())
}

/// The ports that have rules (by chain name, see [`chain_name`]).
pub fn chains() -> Result<Vec<String>, NftError> {
    let out = match run(&["-j", "list", "table", FAMILY, TABLE], None) {
        Ok(out) => out,
        // No table: no ports.
        Err(NftError::Failed(m)) if m.contains("No such file") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let doc: Value =
        serde_json::from_str(&out).map_err(|e| NftError::Output(format!("not JSON: {e}")))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NftError::Output("no \"nftables\" array".into()))?;
    Ok(items
        .iter()
        .filter_map(|i| i.get("chain"))
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .filter(|n| n.starts_with(CHAIN_PREFIX))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(ips: Vec<Ipv4Addr>, checks: Checks) -> PortFilter {
        PortFilter {
            port: "vnet0".into(),
            mac: [0x52, 0x54, 0, 0, 0, 7],
            ips,
            checks,
        }
    }

    #[test]
    fn chain_names_are_injective() {
        assert_eq!(chain_name("vnet0"), "port_vnet0");
        assert_eq!(chain_name("a-b"), "port_a_2db");
        assert_eq!(chain_name("a_2db"), "port_a_5f2db");
    }

    #[test]
    fn clean_traffic_checks_in_order() {
        let f = filter(vec![Ipv4Addr::new(192, 0, 2, 7)], Checks::CLEAN_TRAFFIC);
        let text: Vec<String> = rules(&f).iter().map(|r| json!(r).to_string()).collect();
        assert_eq!(text.len(), 7, "{text:#?}");
        assert!(text[0].contains("iifname") && text[0].contains("vnet0"));
        assert!(text[1].contains("52:54:00:00:00:07"));
        // DHCP is accepted only after the MAC check and before the IP one.
        assert!(text[3].contains("255.255.255.255") && text[3].contains("accept"));
        assert!(text[4].contains("192.0.2.7") && text[4].contains("saddr"));
        assert!(text[6].contains("saddr ip"));
    }

    #[test]
    fn without_addresses_only_dhcp_passes_and_bad_input_fails() {
        let f = filter(Vec::new(), Checks::CLEAN_TRAFFIC);
        let text = json!(rules(&f)).to_string();
        assert!(!text.contains("\"set\":[]"), "{text}");
        let mut bad = filter(Vec::new(), Checks::CLEAN_TRAFFIC);
        bad.port = "a b".into();
        assert!(document(&bad).is_err());
        bad.port = "vnet0".into();
        bad.mac = [1, 0, 0, 0, 0, 1];
        assert!(document(&bad).is_err());
    }
}
