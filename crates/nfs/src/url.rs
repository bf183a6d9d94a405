//! `nfs://SERVER[:PORT]/EXPORT/PATH[?ARG=VALUE&...]`, the URL libnfs and
//! QEMU's nfs block driver use to name one file on an export. As both
//! of them do, the export is the path without its last component and the
//! file is that component.

use crate::{Error, Result};

/// One file on an NFS export, as an `nfs://` URL names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUrl {
    /// Server name or address (an IPv6 address without its brackets).
    pub server: String,
    /// The NFS program's port, when given (the portmapper is not asked
    /// for it then).
    pub port: Option<u16>,
    /// The export's path on the server (`/EXPORT`).
    pub export: String,
    /// The file's name in the export (no slash).
    pub file: String,
    /// `uid=`: the user ID presented to the server (AUTH_SYS).
    pub uid: Option<u32>,
    /// `gid=`: the group ID presented to the server.
    pub gid: Option<u32>,
    /// `version=3|4`: the NFS version (3 when not given).
    pub version: u8,
    /// `mountport=`: the MOUNT program's port (NFSv3), when given.
    pub mount_port: Option<u16>,
    /// `tcp-syncnt=`: SYNs sent before a connect gives up.
    pub tcp_syncnt: Option<u32>,
}

impl FileUrl {
    /// Parse an `nfs://` URL.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Url(format!(
                "{url}: {why} (expected nfs://SERVER[:PORT]/EXPORT/PATH)"
            ))
        };
        let rest = url
            .strip_prefix("nfs://")
            .ok_or_else(|| bad("not an nfs:// URL"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
        let (server, port) = split_host_port(authority).ok_or_else(|| bad("bad server or port"))?;
        let path = format!("/{path}");
        if path.contains(['\0', '\n']) || path.split('/').any(|c| c == "..") {
            return Err(bad("bad path"));
        }
        let (export, file) = path.rsplit_once('/').ok_or_else(|| bad("no file"))?;
        if file.is_empty() {
            return Err(bad("the URL names a directory, not a file"));
        }
        let export = if export.is_empty() { "/" } else { export };
        let mut me = Self {
            server,
            port,
            export: export.to_string(),
            file: file.to_string(),
            uid: None,
            gid: None,
            version: 3,
            mount_port: None,
            tcp_syncnt: None,
        };
        for arg in query.unwrap_or("").split('&').filter(|a| !a.is_empty()) {
            let (name, value) = arg
                .split_once('=')
                .ok_or_else(|| bad(&format!("argument {arg} has no value")))?;
            let number = || {
                value
                    .parse::<u32>()
                    .map_err(|_| bad(&format!("{name}={value} is not a number")))
            };
            let port = || {
                value
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| bad(&format!("{name}={value} is not a port")))
            };
            match name {
                "uid" => me.uid = Some(number()?),
                "gid" => me.gid = Some(number()?),
                "tcp-syncnt" => me.tcp_syncnt = Some(number()?),
                "mountport" => me.mount_port = Some(port()?),
                "nfsport" => me.port = Some(port()?),
                "version" => {
                    me.version = match value {
                        "3" => 3,
                        "4" => 4,
                        _ => return Err(bad("version must be 3 or 4")),
                    }
                }
                other => return Err(bad(&format!("unknown argument {other}"))),
            }
        }
        Ok(me)
    }

    /// The file's path from the export's root (`/FILE`).
    pub fn file_path(&self) -> String {
        format!("/{}", self.file)
    }

    /// The server as a host name or address, IPv6 in brackets.
    pub fn server_host(&self) -> String {
        if self.server.contains(':') {
            format!("[{}]", self.server)
        } else {
            self.server.clone()
        }
    }
}

impl std::fmt::Display for FileUrl {
    /// The URL without its arguments.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nfs://{}", self.server_host())?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        let export = self.export.trim_end_matches('/');
        write!(f, "{export}/{}", self.file)
    }
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
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
        None => None,
        Some(p) => Some(p.parse().ok().filter(|p| *p != 0)?),
    };
    ok_host.then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_qemu_takes() {
        let u = FileUrl::parse("nfs://169.254.78.1/srv/vm/disk.img").unwrap();
        assert_eq!(u.server, "169.254.78.1");
        assert_eq!(u.port, None);
        assert_eq!(u.export, "/srv/vm");
        assert_eq!(u.file, "disk.img");
        assert_eq!(u.file_path(), "/disk.img");
        assert_eq!(u.version, 3);
        assert_eq!(u.to_string(), "nfs://169.254.78.1/srv/vm/disk.img");
        let u = FileUrl::parse("nfs://[fe80::1]:2050/e/f?uid=0&gid=0&mountport=20048").unwrap();
        assert_eq!((u.server.as_str(), u.port), ("fe80::1", Some(2050)));
        assert_eq!(
            (u.uid, u.gid, u.mount_port),
            (Some(0), Some(0), Some(20048))
        );
        assert_eq!(u.to_string(), "nfs://[fe80::1]:2050/e/f");
        let u = FileUrl::parse("nfs://h/f?version=4").unwrap();
        assert_eq!(
            (u.export.as_str(), u.file.as_str(), u.version),
            ("/", "f", 4)
        );
    }

    #[test]
    fn refuses_malformed_urls() {
        for bad in [
            "file:///x",
            "nfs://h",
            "nfs://h/",
            "nfs://h/export/",
            "nfs:///export/f",
            "nfs://h:0/e/f",
            "nfs://h:x/e/f",
            "nfs://h/e/../f",
            "nfs://h/e/f?uid=x",
            "nfs://h/e/f?version=2",
            "nfs://h/e/f?cache=none",
            "nfs://h/e/f?uid",
        ] {
            assert!(FileUrl::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
