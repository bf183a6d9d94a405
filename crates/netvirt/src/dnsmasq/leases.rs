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
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(parse_line)
        .collect())
}

/// One "expiry mac ip hostname client-id" line; None for anything else
/// (the DHCPv6 "duid" line, IAID-keyed DHCPv6 leases, damage).
fn parse_line(line: &str) -> Option<Lease> {
    let mut f = line.split_ascii_whitespace();
    let expiry = f.next()?.parse().ok()?;
    let mac = parse_mac(f.next()?)?;
    let ip: IpAddr = f.next()?.parse().ok()?;
    let opt = |s: Option<&str>| s.filter(|s| *s != "*").map(str::to_owned);
    let hostname = opt(f.next());
    let client_id = opt(f.next());
    Some(Lease {
        expiry,
        mac,
        ip,
        hostname,
        client_id,
    })
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
}
