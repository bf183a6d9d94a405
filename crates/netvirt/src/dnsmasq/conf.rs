//! dnsmasq's configuration for one network: the conf file, the DHCP hosts
//! file and the extra DNS hosts file, each written atomically.
//!
//! Every string comes from untrusted XML, so each is checked against the
//! characters dnsmasq treats specially (newlines end an option, commas
//! split fields, '/' delimits domains, '#' starts a comment) before it
//! reaches a file.

use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::{Config, DnsmasqError, Range};

/// Names of the files dnsmasq uses inside the network's directory.
pub(super) const CONF: &str = "dnsmasq.conf";
pub(super) const HOSTSFILE: &str = "dhcp-hosts";
pub(super) const ADDNHOSTS: &str = "addn-hosts";
pub(super) const LEASES: &str = "leases";
pub(super) const PIDFILE: &str = "dnsmasq.pid";

/// Write all three files; the conf file's path.
pub(super) fn write_all(cfg: &Config) -> Result<PathBuf, DnsmasqError> {
    let (conf, hosts, addn) = render(cfg)?;
    fs::create_dir_all(&cfg.dir).map_err(|e| io_err(&cfg.dir, e))?;
    write_atomic(&cfg.dir.join(HOSTSFILE), &hosts)?;
    write_atomic(&cfg.dir.join(ADDNHOSTS), &addn)?;
    let path = cfg.dir.join(CONF);
    write_atomic(&path, &conf)?;
    Ok(path)
}

/// Write only the files dnsmasq re-reads on SIGHUP.
pub(super) fn write_hosts(cfg: &Config) -> Result<(), DnsmasqError> {
    let (_, hosts, addn) = render(cfg)?;
    write_atomic(&cfg.dir.join(HOSTSFILE), &hosts)?;
    write_atomic(&cfg.dir.join(ADDNHOSTS), &addn)
}

/// The conf, hosts file and addn-hosts file contents, after validation.
fn render(cfg: &Config) -> Result<(String, String, String), DnsmasqError> {
    check_ifname(&cfg.bridge)?;
    let dir = cfg
        .dir
        .to_str()
        .filter(|d| d.starts_with('/') && !d.contains(['\n', '\r', ',', '#']))
        .ok_or_else(|| {
            invalid(format!(
                "state directory {:?} must be an absolute plain path",
                cfg.dir
            ))
        })?;
    let mut c = String::new();
    // Ask forwarders in the configured order, as libvirt does.
    c.push_str("strict-order\n");
    let _ = writeln!(c, "pid-file={dir}/{PIDFILE}");
    // Root is kept: the files live in a root-owned directory the daemon
    // manages, and dropping to "nobody" would leave the lease file
    // unwritable there.
    c.push_str("user=root\n");
    // Answers come only from this network's own data, never /etc/hosts.
    c.push_str("no-hosts\n");
    c.push_str("except-interface=lo\n");
    // bind-dynamic: bind only the bridge's addresses, following them as
    // they appear, and leave port 53 elsewhere to other servers.
    c.push_str("bind-dynamic\n");
    if !cfg.dns {
        c.push_str("port=0\n");
    }
    let _ = writeln!(c, "interface={}", cfg.bridge);
    for a in &cfg.listen {
        let _ = writeln!(c, "listen-address={a}");
    }
    if let Some(d) = &cfg.domain {
        check_name("domain", d)?;
        let _ = writeln!(c, "domain={d}");
        if cfg.local_only_domain {
            let _ = writeln!(c, "local=/{d}/");
        }
        c.push_str("expand-hosts\n");
    }
    let mut no_resolv = cfg.no_resolv;
    for f in &cfg.forwarders {
        match (&f.domain, f.addr) {
            (Some(d), Some(a)) => {
                check_name("forwarder domain", d)?;
                let _ = writeln!(c, "server=/{d}/{a}");
            }
            (Some(d), None) => {
                check_name("forwarder domain", d)?;
                let _ = writeln!(c, "local=/{d}/");
            }
            (None, Some(a)) => {
                let _ = writeln!(c, "server={a}");
                // Explicit upstream servers replace the host's resolv.conf.
                no_resolv = true;
            }
            (None, None) => return Err(invalid("a forwarder needs an address or a domain".into())),
        }
    }
    if no_resolv {
        c.push_str("no-resolv\n");
    }
    let mut lease_max: u64 = 0;
    for r in &cfg.ranges {
        let _ = writeln!(c, "dhcp-range={}", range(r)?);
        lease_max = lease_max.saturating_add(range_size(r));
    }
    if !cfg.router {
        // An empty option 3: no router at all.
        c.push_str("dhcp-option=3\n");
    }
    if cfg.ranges.iter().any(|r| r.start.is_ipv6()) {
        // DHCPv6 clients only ask once router advertisements tell them to.
        c.push_str("enable-ra\n");
    }
    if !cfg.ranges.is_empty() {
        c.push_str("dhcp-no-override\ndhcp-authoritative\n");
        let _ = writeln!(c, "dhcp-lease-max={}", lease_max.min(1 << 24));
        let _ = writeln!(c, "dhcp-leasefile={dir}/{LEASES}");
        let _ = writeln!(c, "dhcp-hostsfile={dir}/{HOSTSFILE}");
    }
    let _ = writeln!(c, "addn-hosts={dir}/{ADDNHOSTS}");

    let mut hosts = String::new();
    let mut addn = String::new();
    for h in &cfg.hosts {
        if let Some(n) = &h.name {
            check_name("host name", n)?;
        }
        let mut fields = Vec::new();
        if let Some(m) = h.mac {
            fields.push(
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            );
        }
        match h.ip {
            Some(IpAddr::V6(a)) => fields.push(format!("[{a}]")),
            Some(a) => fields.push(a.to_string()),
            None => {}
        }
        if let Some(n) = &h.name {
            fields.push(n.clone());
        }
        if h.mac.is_none() && h.name.is_none() {
            return Err(invalid("a DHCP host needs a MAC address or a name".into()));
        }
        if h.ip.is_none() && h.mac.is_some() && h.name.is_none() {
            return Err(invalid(
                "a DHCP host with only a MAC address does nothing".into(),
            ));
        }
        let _ = writeln!(hosts, "{}", fields.join(","));
        if let (Some(ip), Some(n)) = (h.ip, &h.name) {
            let _ = writeln!(addn, "{ip} {n}");
        }
    }
    for (ip, names) in &cfg.dns_hosts {
        if names.is_empty() {
            return Err(invalid(format!("DNS host {ip} has no names")));
        }
        for n in names {
            check_name("DNS host name", n)?;
        }
        let _ = writeln!(addn, "{ip} {}", names.join(" "));
    }
    Ok((c, hosts, addn))
}

/// One dhcp-range value: start,end,mask-or-prefix,lease.
fn range(r: &Range) -> Result<String, DnsmasqError> {
    let lease = match r.lease {
        None => "1h".to_string(),
        Some(d) if d.as_secs() == 0 => "infinite".to_string(),
        // dnsmasq's own floor.
        Some(d) if d.as_secs() < 120 => {
            return Err(invalid(format!(
                "lease time {}s is under 2 minutes",
                d.as_secs()
            )))
        }
        Some(d) => d.as_secs().to_string(),
    };
    match (r.start, r.end) {
        (IpAddr::V4(s), IpAddr::V4(e)) if r.prefix <= 32 && s <= e => {
            let mask = u32::MAX.checked_shl(32 - u32::from(r.prefix)).unwrap_or(0);
            if u32::from(s) & mask != u32::from(e) & mask {
                return Err(invalid(format!(
                    "range {s}-{e} spans more than one /{} subnet",
                    r.prefix
                )));
            }
            Ok(format!(
                "{s},{e},{},{lease}",
                std::net::Ipv4Addr::from(mask)
            ))
        }
        (IpAddr::V6(s), IpAddr::V6(e)) if r.prefix <= 128 && s <= e => {
            Ok(format!("{s},{e},{},{lease}", r.prefix))
        }
        _ => Err(invalid(format!(
            "DHCP range {}-{}/{} is invalid",
            r.start, r.end, r.prefix
        ))),
    }
}

/// Addresses in a range. dnsmasq's lease limit counts DHCPv4 and DHCPv6
/// leases alike, so an IPv6 range adds its size too (saturated: the
/// caller caps the sum), or a network with only IPv6 ranges would lease
/// nothing.
fn range_size(r: &Range) -> u64 {
    match (r.start, r.end) {
        (IpAddr::V4(s), IpAddr::V4(e)) => u64::from(u32::from(e).saturating_sub(u32::from(s))) + 1,
        (IpAddr::V6(s), IpAddr::V6(e)) => {
            let n = u128::from(e)
                .saturating_sub(u128::from(s))
                .saturating_add(1);
            u64::try_from(n).unwrap_or(u64::MAX)
        }
        _ => 0,
    }
}

/// A DNS name: letters, digits, '-', '_' and dots, 1..=253 bytes.
fn check_name(what: &str, n: &str) -> Result<(), DnsmasqError> {
    let ok = !n.is_empty()
        && n.len() <= 253
        && !n.starts_with(['.', '-'])
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{what} {n:?} is not a valid DNS name")))
    }
}

fn check_ifname(n: &str) -> Result<(), DnsmasqError> {
    let ok = !n.is_empty()
        && n.len() < 16
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "bridge {n:?} is not a valid interface name"
        )))
    }
}

fn invalid(msg: String) -> DnsmasqError {
    DnsmasqError::Invalid(msg)
}

pub(super) fn io_err(path: &Path, e: std::io::Error) -> DnsmasqError {
    DnsmasqError::Io(format!("{}: {e}", path.display()))
}

/// Write via a temporary file and rename, so dnsmasq never reads half a file.
fn write_atomic(path: &Path, text: &str) -> Result<(), DnsmasqError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dnsmasq::{Forwarder, Host};
    use std::time::Duration;

    fn cfg() -> Config {
        Config {
            network: "n".into(),
            bridge: "br0".into(),
            dir: "/run/vireo/net/n".into(),
            domain: Some("vnet".into()),
            local_only_domain: true,
            listen: vec!["192.0.2.1".parse().unwrap()],
            ranges: vec![
                Range {
                    start: "192.0.2.2".parse().unwrap(),
                    end: "192.0.2.254".parse().unwrap(),
                    prefix: 24,
                    lease: None,
                },
                Range {
                    start: "2001:db8::10".parse().unwrap(),
                    end: "2001:db8::ff".parse().unwrap(),
                    prefix: 64,
                    lease: Some(Duration::ZERO),
                },
            ],
            hosts: vec![Host {
                mac: Some([0x52, 0x54, 0, 1, 2, 3]),
                name: Some("vm".into()),
                ip: Some("2001:db8::5".parse().unwrap()),
            }],
            dns_hosts: vec![],
            forwarders: vec![
                Forwarder {
                    addr: Some("198.51.100.53".parse().unwrap()),
                    domain: Some("corp".into()),
                },
                Forwarder {
                    addr: None,
                    domain: Some("lan".into()),
                },
            ],
            no_resolv: false,
            dns: true,
            router: true,
        }
    }

    #[test]
    fn renders_libvirt_style_options() {
        let (c, hosts, addn) = render(&cfg()).unwrap();
        for line in [
            "strict-order",
            "bind-dynamic",
            "interface=br0",
            "except-interface=lo",
            "no-hosts",
            "local=/vnet/",
            "expand-hosts",
            "server=/corp/198.51.100.53",
            "local=/lan/",
            "dhcp-range=192.0.2.2,192.0.2.254,255.255.255.0,1h",
            "dhcp-range=2001:db8::10,2001:db8::ff,64,infinite",
            "enable-ra",
            // 253 IPv4 and 240 IPv6 addresses: dnsmasq counts both.
            "dhcp-lease-max=493",
            "dhcp-leasefile=/run/vireo/net/n/leases",
            "pid-file=/run/vireo/net/n/dnsmasq.pid",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing from\n{c}");
        }
        // Only domain forwarders: the host's resolvers still serve the rest.
        assert!(!c.contains("no-resolv"));
        assert_eq!(hosts, "52:54:00:01:02:03,[2001:db8::5],vm\n");
        assert_eq!(addn, "2001:db8::5 vm\n");
    }

    #[test]
    fn dns_off_closes_port_53_but_keeps_dhcp() {
        let on = render(&cfg()).unwrap().0;
        assert!(!on.lines().any(|l| l == "port=0"));
        let off = render(&Config {
            dns: false,
            ..cfg()
        })
        .unwrap()
        .0;
        assert!(off.lines().any(|l| l == "port=0"), "{off}");
        assert!(off.lines().any(|l| l.starts_with("dhcp-range=")));
    }

    #[test]
    fn no_router_is_an_empty_option_3() {
        assert!(!render(&cfg()).unwrap().0.contains("dhcp-option=3"));
        let c = render(&Config {
            router: false,
            ..cfg()
        })
        .unwrap()
        .0;
        assert!(c.lines().any(|l| l == "dhcp-option=3"), "{c}");
    }
}
