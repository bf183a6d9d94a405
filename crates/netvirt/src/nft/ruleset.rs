//! Building one network's nftables ruleset as an nft JSON document.
//!
//! The document deletes the network's table if present and recreates it
//! with all its chains, so nft applies it as one transaction.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{json, Value};

use super::{Forward, NetworkRules, NftError, FAMILY};

/// The whole JSON document for `rules`, living in `table`.
pub(super) fn build(rules: &NetworkRules, table: &str) -> Result<Value, NftError> {
    check_ifname("bridge", &rules.bridge)?;
    let subnets = rules
        .subnets
        .iter()
        .map(|&(addr, len)| network_of(addr, len))
        .collect::<Result<Vec<_>, _>>()?;
    let t = json!({"family": FAMILY, "name": table});
    let mut cmds = vec![
        json!({"add": {"table": t.clone()}}),
        json!({"delete": {"table": t.clone()}}),
        json!({"add": {"table": t}}),
    ];
    let out_dev = match &rules.forward {
        Forward::Open => return Ok(json!({ "nftables": cmds })),
        Forward::Nat { out_dev, .. } | Forward::Route { out_dev } => out_dev.as_deref(),
        Forward::Isolated => None,
    };
    if let Some(dev) = out_dev {
        check_ifname("out_dev", dev)?;
    }
    let mut b = Builder {
        table,
        cmds: &mut cmds,
    };
    b.chain("input", "filter", "input", 0);
    b.chain("forward", "filter", "forward", 0);
    let br = rules.bridge.as_str();

    // Guests reach the network's own dnsmasq whatever the host's policy.
    for (proto, port) in [("udp", 67), ("udp", 547), ("udp", 53), ("tcp", 53)] {
        b.rule(
            "input",
            vec![
                ifname("iifname", br),
                port_is(proto, port),
                verdict("accept"),
            ],
        );
    }

    if let Forward::Nat {
        out_dev,
        addresses,
        ports,
    } = &rules.forward
    {
        b.chain("postrouting", "nat", "postrouting", 100);
        for &(addr, len) in subnets.iter().filter(|(a, _)| a.is_ipv4()) {
            let from = addr_is("saddr", addr, len);
            // Multicast and broadcast stay on the link, as libvirt leaves them.
            b.rule(
                "postrouting",
                vec![
                    from.clone(),
                    addr_is("daddr", IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 24),
                    verdict("return"),
                ],
            );
            b.rule(
                "postrouting",
                vec![
                    from.clone(),
                    addr_is("daddr", IpAddr::V4(Ipv4Addr::BROADCAST), 32),
                    verdict("return"),
                ],
            );
            let mut base = vec![from, not(addr_is("daddr", addr, len))];
            if let Some(dev) = out_dev {
                base.push(ifname("oifname", dev));
            }
            if let Some((lo, hi)) = addresses {
                if lo > hi {
                    return Err(NftError::Invalid(format!(
                        "address range {lo}-{hi} is reversed"
                    )));
                }
            }
            let port_range = match ports {
                Some((lo, hi)) if *lo == 0 || lo > hi => {
                    return Err(NftError::Invalid(format!(
                        "port range {lo}-{hi} is invalid"
                    )))
                }
                Some((lo, hi)) => Some(json!({"range": [lo, hi]})),
                None => None,
            };
            let nat = |port: Option<Value>| -> Value {
                match (addresses, port) {
                    (Some((lo, hi)), port) => {
                        let mut s = json!({"family": "ip", "addr": {"range": [lo.to_string(), hi.to_string()]}});
                        if let Some(p) = port {
                            s["port"] = p;
                        }
                        json!({ "snat": s })
                    }
                    (None, Some(p)) => json!({"masquerade": {"port": p}}),
                    (None, None) => json!({"masquerade": null}),
                }
            };
            // Ports only exist for TCP and UDP; other protocols get the
            // plain translation.
            if let Some(p) = &port_range {
                for proto in ["tcp", "udp"] {
                    let mut r = base.clone();
                    r.push(json!({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": proto}}));
                    r.push(nat(Some(p.clone())));
                    b.rule("postrouting", r);
                }
            }
            let mut r = base;
            r.push(nat(None));
            b.rule("postrouting", r);
        }
    }

    if let Forward::Nat { .. } | Forward::Route { .. } = &rules.forward {
        for &(addr, len) in &subnets {
            // Only replies come back into a NATed IPv4 subnet; IPv6 is
            // always routed (no NAT66, as libvirt).
            let replies_only = matches!(rules.forward, Forward::Nat { .. }) && addr.is_ipv4();
            let mut inbound = vec![ifname("oifname", br), addr_is("daddr", addr, len)];
            let mut outbound = vec![ifname("iifname", br), addr_is("saddr", addr, len)];
            if let Some(dev) = out_dev {
                inbound.push(ifname("iifname", dev));
                outbound.push(ifname("oifname", dev));
            }
            if replies_only {
                inbound.push(json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}));
            }
            inbound.push(verdict("accept"));
            outbound.push(verdict("accept"));
            b.rule("forward", outbound);
            b.rule("forward", inbound);
        }
    }
    // Guests on the same bridge always talk; anything else crossing the
    // bridge that no rule above let through is refused.
    b.rule(
        "forward",
        vec![
            ifname("iifname", br),
            ifname("oifname", br),
            verdict("accept"),
        ],
    );
    b.rule("forward", vec![ifname("iifname", br), verdict("reject")]);
    b.rule("forward", vec![ifname("oifname", br), verdict("reject")]);
    Ok(json!({ "nftables": cmds }))
}

/// Appends chain and rule commands for one table.
struct Builder<'a> {
    table: &'a str,
    cmds: &'a mut Vec<Value>,
}

impl Builder<'_> {
    fn chain(&mut self, name: &str, kind: &str, hook: &str, prio: i32) {
        self.cmds.push(json!({"add": {"chain": {
            "family": FAMILY, "table": self.table, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept",
        }}}));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Value>) {
        self.cmds.push(json!({"add": {"rule": {
            "family": FAMILY, "table": self.table, "chain": chain, "expr": expr,
        }}}));
    }
}

fn verdict(v: &str) -> Value {
    json!({ v: null })
}

fn ifname(key: &str, name: &str) -> Value {
    json!({"match": {"op": "==", "left": {"meta": {"key": key}}, "right": name}})
}

fn port_is(proto: &str, port: u16) -> Value {
    json!({"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "dport"}}, "right": port}})
}

fn addr_is(field: &str, addr: IpAddr, len: u8) -> Value {
    let proto = if addr.is_ipv4() { "ip" } else { "ip6" };
    json!({"match": {"op": "==",
        "left": {"payload": {"protocol": proto, "field": field}},
        "right": {"prefix": {"addr": addr.to_string(), "len": len}}}})
}

fn not(mut m: Value) -> Value {
    m["match"]["op"] = json!("!=");
    m
}

/// The subnet's network address (host bits cleared), checking the length.
fn network_of(addr: IpAddr, len: u8) -> Result<(IpAddr, u8), NftError> {
    match addr {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Ok((IpAddr::V4((u32::from(a) & mask).into()), len))
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            Ok((IpAddr::V6((u128::from(a) & mask).into()), len))
        }
        _ => Err(NftError::Invalid(format!(
            "prefix length {len} too long for {addr}"
        ))),
    }
}

/// Interface names as the kernel accepts them (IFNAMSIZ, no '/' or
/// whitespace), so a bad name fails here with a clear message.
pub(crate) fn check_ifname(what: &str, name: &str) -> Result<(), NftError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':' && b != b'"');
    if ok {
        Ok(())
    } else {
        Err(NftError::Invalid(format!(
            "{what} {name:?} is not a valid interface name"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(forward: Forward) -> NetworkRules {
        NetworkRules {
            network: "n".into(),
            bridge: "br0".into(),
            subnets: vec![
                ("192.0.2.7".parse().unwrap(), 24),
                ("2001:db8::1".parse().unwrap(), 64),
            ],
            forward,
        }
    }

    #[test]
    fn nat_translates_ipv4_only_and_routes_ipv6() {
        let r = rules(Forward::Nat {
            out_dev: None,
            addresses: None,
            ports: None,
        });
        let doc = build(&r, "t").unwrap().to_string();
        // Host bits are cleared from the subnet.
        assert!(doc.contains(r#"{"addr":"192.0.2.0","len":24}"#), "{doc}");
        assert!(doc.contains(r#"{"addr":"2001:db8::","len":64}"#), "{doc}");
        assert_eq!(doc.matches("masquerade").count(), 1);
        let doc = build(&r, "t").unwrap();
        let rules_of = |chain: &str| -> Vec<String> {
            doc["nftables"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["add"]["rule"]["chain"] == chain)
                .map(|c| c["add"]["rule"].to_string())
                .collect()
        };
        assert!(rules_of("postrouting").iter().all(|r| !r.contains("ip6")));
        // IPv6 comes in unconditionally (routed); IPv4 only as replies.
        let inbound: Vec<_> = rules_of("forward")
            .into_iter()
            .filter(|r| r.contains("daddr"))
            .collect();
        assert_eq!(inbound.len(), 2);
        assert!(inbound
            .iter()
            .any(|r| r.contains("\"ip\"") && r.contains("established")));
        assert!(inbound
            .iter()
            .any(|r| r.contains("ip6") && !r.contains("established")));
    }

    #[test]
    fn open_is_an_empty_table_and_bad_ranges_fail() {
        let doc = build(&rules(Forward::Open), "t").unwrap();
        assert_eq!(doc["nftables"].as_array().map(Vec::len), Some(3));
        let a = Ipv4Addr::new(198, 51, 100, 9);
        let b = Ipv4Addr::new(198, 51, 100, 1);
        let r = rules(Forward::Nat {
            out_dev: None,
            addresses: Some((a, b)),
            ports: None,
        });
        assert!(build(&r, "t").is_err());
        let r = rules(Forward::Nat {
            out_dev: None,
            addresses: None,
            ports: Some((0, 10)),
        });
        assert!(build(&r, "t").is_err());
    }
}
