//! `iscsi://[USER[%SECRET]@]HOST[:PORT]/IQN/LUN`, the URL libiscsi and
//! QEMU use to name one LUN. `USER@` without `%SECRET` names the CHAP
//! user only: its secret is given apart (`vireo run --secret`), so that it
//! never stands in a command line.

use crate::{Chap, Error, Result};

/// The iSCSI port when a URL or portal names none.
pub const DEFAULT_PORT: u16 = 3260;

/// One LUN of one target, as an `iscsi://` URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunUrl {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The target's IQN.
    pub target: String,
    /// The LUN.
    pub lun: u16,
    /// CHAP credentials given in the URL; the secret is empty when the
    /// URL names only the user (`USER@`).
    pub chap: Option<Chap>,
}

impl LunUrl {
    /// Parse an `iscsi://` URL.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Url(format!(
                "{}: {why} (expected iscsi://HOST[:PORT]/IQN/LUN)",
                redact(url)
            ))
        };
        let rest = url
            .strip_prefix("iscsi://")
            .ok_or_else(|| bad("not an iscsi:// URL"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no target"))?;
        let (chap, hostport) = match authority.rsplit_once('@') {
            Some((cred, hp)) => {
                let (user, secret) = cred.split_once('%').unwrap_or((cred, ""));
                if user.is_empty() {
                    return Err(bad("empty CHAP user"));
                }
                (
                    Some(Chap {
                        user: user.to_string(),
                        secret: secret.to_string(),
                    }),
                    hp,
                )
            }
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("bad host or port"))?;
        let (target, lun) = path.rsplit_once('/').ok_or_else(|| bad("no LUN"))?;
        if target.is_empty() || target.contains(['/', ' ', '\0']) {
            return Err(bad("bad target name"));
        }
        let lun = lun
            .parse::<u16>()
            .ok()
            .filter(|l| *l < 16384)
            .ok_or_else(|| bad("the LUN must be a number below 16384"))?;
        Ok(Self {
            host,
            port,
            target: target.to_string(),
            lun,
            chap,
        })
    }

    /// `HOST:PORT`, as libiscsi takes a portal.
    pub fn portal(&self) -> String {
        portal(&self.host, self.port)
    }
}

impl std::fmt::Display for LunUrl {
    /// The URL without its secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "iscsi://")?;
        if let Some(chap) = &self.chap {
            write!(f, "{}@", chap.user)?;
        }
        write!(f, "{}/{}/{}", self.portal(), self.target, self.lun)
    }
}

/// `HOST:PORT` with brackets around an IPv6 address.
pub fn portal(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`.
fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let ok_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b));
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
    };
    ok_host.then(|| (host.to_string(), port))
}

/// `url` with any secret replaced, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            let user = cred.split('%').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_qemu_takes() {
        let u = LunUrl::parse("iscsi://169.254.77.1/iqn.2026-01.org.vireo:t1/1").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.lun), ("169.254.77.1", 3260, 1));
        assert_eq!(u.target, "iqn.2026-01.org.vireo:t1");
        assert_eq!(u.portal(), "169.254.77.1:3260");
        let u = LunUrl::parse("iscsi://me%pw@[fe80::1]:3261/iqn.x:y/0").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::1", 3261));
        assert_eq!(u.chap.as_ref().map(|c| c.secret.as_str()), Some("pw"));
        assert_eq!(u.to_string(), "iscsi://me@[fe80::1]:3261/iqn.x:y/0");
        // The user alone: the secret comes apart.
        let u = LunUrl::parse("iscsi://me@h/iqn.x:y/1").unwrap();
        let chap = u.chap.as_ref().unwrap();
        assert_eq!((chap.user.as_str(), chap.secret.as_str()), ("me", ""));
        assert_eq!(u.to_string(), "iscsi://me@h:3260/iqn.x:y/1");
        assert!(LunUrl::parse("iscsi://@h/iqn.x:y/1").is_err());
    }

    #[test]
    fn refuses_malformed_urls_without_showing_the_secret() {
        for bad in [
            "file:///x",
            "iscsi://h",
            "iscsi://h/iqn",
            "iscsi://h/iqn/x",
            "iscsi://h/iqn/99999",
            "iscsi://h:0/iqn/1",
            "iscsi://h:x/iqn/1",
            "iscsi:///iqn/1",
            "iscsi://h//1",
        ] {
            assert!(LunUrl::parse(bad).is_err(), "{bad} accepted");
        }
        let e = LunUrl::parse("iscsi://u%secret@h/iqn/x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
