//! Reading dnsmasq's lease file.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use super::{conf, DnsmasqError, Lease};

/// Largest lease file we read; a network's leases fit many times over.
const MAX_LEASES_FILE: u64 = 4 << 20;

/// The leases in `dir`'s lease file; none if the file does not exist yet.
pub(super) fn read(dir: &Path) -> Result<Vec<Lease>, DnsmasqError> {
    let path = dir.join(conf::LEASES);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(conf::io_err(&path, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_LEASES_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| conf::io_err(&path, e))?;
    if bytes.len() as u64 > MAX_LEASES_FILE {
        return Err(DnsmasqError::Io(format!(
            "{}: larger than {MAX_LEASES_FILE} bytes",
            path.display()
        )));
    }
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

/// Every lease of a lease file's text. dnsmasq writes its DHCPv4 leases
/// first, then a "duid SERVER-DUID" line and its DHCPv6 leases.
fn parse(text: &str) -> Vec<Lease> {
    let mut v6 = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("duid ") {
            v6 = true;
        } else if let Some(l) = if v6 { parse_v6(line) } else { parse_v4(line) } {
            out.push(l);
        }
    }
    out
}

/// One "expiry mac ip hostname client-id" line; None for damage.
fn parse_v4(line: &str) -> Option<Lease> {
    let mut f = line.split_ascii_whitespace();
    let expiry = f.next()?.parse().ok()?;
    let mac = parse_mac(f.next()?)?;
    let ip: IpAddr = f.next()?.parse().ok()?;
    let hostname = field(f.next());
    let client_id = field(f.next());
    Some(Lease {
        expiry,
        mac,
        ip: ip.is_ipv4().then_some(ip)?,
        hostname,
        client_id,
    })
}

/// One DHCPv6 "expiry [T]iaid ipv6 hostname client-duid" line. dnsmasq
/// keys these by the client's DUID, not its MAC; a lease is listed (as
/// libvirt lists it, by MAC) when the DUID carries the client's Ethernet
/// address, as the link-layer DUIDs (DUID-LLT, DUID-LL: RFC 8415 11.2,
/// 11.4) that Linux clients make by default do. None for other DUIDs and
/// damage.
fn parse_v6(line: &str) -> Option<Lease> {
    let mut f = line.split_ascii_whitespace();
    let expiry = f.next()?.parse().ok()?;
    let iaid = f.next()?;
    iaid.strip_prefix('T').unwrap_or(iaid).parse::<u32>().ok()?;
    let ip: IpAddr = f.next()?.parse().ok()?;
    let hostname = field(f.next());
    let duid = field(f.next())?;
    Some(Lease {
        expiry,
        mac: mac_of_duid(&duid)?,
        ip: ip.is_ipv6().then_some(ip)?,
        hostname,
        client_id: Some(duid),
    })
}

/// A lease file field, "*" meaning none.
fn field(s: Option<&str>) -> Option<String> {
    s.filter(|s| *s != "*").map(str::to_owned)
}

/// The Ethernet address in a DUID-LLT (type 1: type, hardware type, time,
/// address) or DUID-LL (type 3: type, hardware type, address), written as
/// colon-separated hex bytes; None for other types and other hardware.
fn mac_of_duid(duid: &str) -> Option<[u8; 6]> {
    let bytes = duid
        .split(':')
        .map(|b| {
            (b.len() == 2)
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
        })
        .collect::<Option<Vec<u8>>>()?;
    let address = match bytes.as_slice() {
        [0, 1, 0, 1, _, _, _, _, rest @ ..] | [0, 3, 0, 1, rest @ ..] => rest,
        _ => return None,
    };
    address.try_into().ok()
}

pub(super) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_damage_is_skipped() {
        let parse_line = parse_v4;
        let l =
            parse_line("1700000000 52:54:00:12:34:56 192.0.2.5 vm1 01:52:54:00:12:34:56").unwrap();
        assert_eq!(l.expiry, 1_700_000_000);
        assert_eq!(l.mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(l.hostname.as_deref(), Some("vm1"));
        let l = parse_line("0 52:54:00:12:34:56 192.0.2.5 * *").unwrap();
        assert_eq!((l.hostname, l.client_id), (None, None));
        assert!(parse_line("duid 00:01:00:01").is_none());
        assert!(parse_line("1 52:54:00:12:34 192.0.2.5 * *").is_none());
        assert!(parse_line("1 52:54:00:12:34:56 not-an-ip * *").is_none());
        assert!(parse_line("").is_none());
    }

    #[test]
    fn dhcpv6_leases_follow_the_duid_line_and_take_the_mac_from_the_duid() {
        let text = "1700000000 52:54:00:12:34:56 192.0.2.5 vm1 *\n\
                    duid 00:01:00:01:2c:aa:bb:cc:52:54:00:00:00:01\n\
                    1700000100 1234 2001:db8::105 vm1 00:01:00:01:2c:aa:bb:cc:52:54:00:12:34:56\n\
                    1700000200 T77 2001:db8::106 * 00:03:00:01:52:54:00:ab:cd:ef\n\
                    1700000300 9 2001:db8::107 * 00:02:00:00:ab:11:01:02:03:04\n\
                    1700000400 9 192.0.2.9 * 00:03:00:01:52:54:00:ab:cd:ef\n\
                    1700000500 x 2001:db8::108 * 00:03:00:01:52:54:00:ab:cd:ef\n";
        let leases = parse(text);
        let got: Vec<(String, [u8; 6], Option<&str>)> = leases
            .iter()
            .map(|l| (l.ip.to_string(), l.mac, l.hostname.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "192.0.2.5".into(),
                    [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                    Some("vm1")
                ),
                (
                    "2001:db8::105".into(),
                    [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                    Some("vm1")
                ),
                (
                    "2001:db8::106".into(),
                    [0x52, 0x54, 0, 0xab, 0xcd, 0xef],
                    None
                ),
            ]
        );
        assert_eq!(
            leases[1].client_id.as_deref(),
            Some("00:01:00:01:2c:aa:bb:cc:52:54:00:12:34:56")
        );
        // Not Ethernet, too short, not hex.
        assert_eq!(mac_of_duid("00:03:00:06:52:54:00:ab:cd:ef"), None);
        assert_eq!(mac_of_duid("00:03:00:01:52:54"), None);
        assert_eq!(mac_of_duid("00:03:00:01:52:54:00:ab:cd:zz"), None);
    }
}
