//! Connection URIs, as libvirt spells them for its own drivers:
//!
//! - `vireo:///system`: the daemon's default socket on this host;
//! - `vireo+unix:///system?socket=PATH`: another socket on this host;
//! - `vireo+ssh://[user@]host[:port]/system[?socket=PATH&keyfile=PATH&proxy=REMOTE_VIREO&known_hosts=PATH&no_verify=1]`:
//!   the daemon on another host, reached through `ssh` running
//!   `vireo proxy` there.
//!
//! Everything a URI says ends up on an `ssh` command line or in a path, so
//! parsing is strict: an unknown parameter, a host or user that could be
//! read as an `ssh` option, or a path other than `/system` is refused.

use std::path::PathBuf;

use super::ClientError;
use crate::api::DEFAULT_SOCKET;

/// The URI used when neither `-c` nor `VIREO_DEFAULT_URI` names one.
pub const DEFAULT_URI: &str = "vireo:///system";

/// The environment variable naming the URI when `-c` does not.
pub const DEFAULT_URI_ENV: &str = "VIREO_DEFAULT_URI";

/// A parsed connection URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectUri {
    /// The URI as given (what `vireo uri` prints).
    pub text: String,
    /// How to reach the daemon.
    pub transport: Transport,
}

/// How to reach the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A unix socket on this host.
    Unix {
        /// The daemon's socket.
        socket: PathBuf,
    },
    /// `ssh` to another host, running `vireo proxy` there.
    Ssh(SshTarget),
}

/// The far end of a `vireo+ssh://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The login (`user@`), else ssh's default.
    pub user: Option<String>,
    /// Host name or address (without IPv6 brackets).
    pub host: String,
    /// Port, else ssh's default.
    pub port: Option<u16>,
    /// The daemon's socket on the far host, else `vireo proxy`'s default.
    pub socket: Option<PathBuf>,
    /// The private key (`ssh -i`).
    pub keyfile: Option<PathBuf>,
    /// The `vireo` binary on the far host (`vireo` on its PATH by default).
    pub proxy: String,
    /// The known-hosts file (`ssh -o UserKnownHostsFile=`).
    pub known_hosts: Option<PathBuf>,
    /// Do not check the host's key (`StrictHostKeyChecking=no`).
    pub no_verify: bool,
}

impl SshTarget {
    /// `user@host:port` for messages.
    pub fn display_host(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }
}

impl ConnectUri {
    /// The URI to use: `explicit` (`-c`), else `VIREO_DEFAULT_URI` when
    /// set and not empty, else [`DEFAULT_URI`].
    pub fn resolve(explicit: Option<&str>) -> Result<Self, ClientError> {
        let env = std::env::var(DEFAULT_URI_ENV).ok();
        let text = explicit
            .or(env.as_deref().filter(|s| !s.is_empty()))
            .unwrap_or(DEFAULT_URI);
        Self::parse(text)
    }

    /// Parse a URI.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Uri(format!("invalid URI '{text}': {why}"));
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| bad("expected SCHEME://[HOST]/system"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path != "/system" {
            return Err(bad("the path must be /system"));
        }
        let params = parse_query(query.unwrap_or("")).map_err(|e| bad(&e))?;
        match scheme {
            "vireo" | "vireo+unix" => {
                if !authority.is_empty() {
                    return Err(bad(
                        "a host needs the ssh transport: vireo+ssh://[user@]HOST[:PORT]/system",
                    ));
                }
                let mut socket = PathBuf::from(DEFAULT_SOCKET);
                for (k, v) in params {
                    match k.as_str() {
                        "socket" => socket = nonempty_path(&k, v).map_err(|e| bad(&e))?,
                        _ => return Err(bad(&format!("unknown parameter '{k}' (known: socket)"))),
                    }
                }
                Ok(Self {
                    text: text.to_string(),
                    transport: Transport::Unix { socket },
                })
            }
            "vireo+ssh" => {
                let target = ssh_target(authority, params).map_err(|e| bad(&e))?;
                Ok(Self {
                    text: text.to_string(),
                    transport: Transport::Ssh(target),
                })
            }
            other => Err(bad(&format!(
                "unknown scheme '{other}' (use vireo, vireo+unix or vireo+ssh)"
            ))),
        }
    }
}

fn ssh_target(authority: &str, params: Vec<(String, String)>) -> Result<SshTarget, String> {
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(percent_decode(u)?), h),
        None => (None, authority),
    };
    if let Some(u) = &user {
        if u.is_empty() || u.starts_with('-') || !u.chars().all(is_name_char) {
            return Err(format!("invalid user name '{u}'"));
        }
    }
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs its closing ']'")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :PORT after ']'")?),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("vireo+ssh needs a host: vireo+ssh://[user@]HOST[:PORT]/system".into());
    }
    // ssh would read a host starting with '-' as an option.
    if host.starts_with('-') || !host.chars().all(|c| is_name_char(c) || c == ':') {
        return Err(format!("invalid host '{host}'"));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("invalid port '{p}'"))?,
        ),
    };
    let mut target = SshTarget {
        user,
        host,
        port,
        socket: None,
        keyfile: None,
        proxy: "vireo".to_string(),
        known_hosts: None,
        no_verify: false,
    };
    for (k, v) in params {
        match k.as_str() {
            "socket" => target.socket = Some(nonempty_path(&k, v)?),
            "keyfile" => target.keyfile = Some(nonempty_path(&k, v)?),
            "known_hosts" => target.known_hosts = Some(known_hosts_path(v)?),
            "proxy" => {
                if v.is_empty() {
                    return Err("proxy= is empty".into());
                }
                target.proxy = v;
            }
            "no_verify" => {
                target.no_verify = match v.as_str() {
                    "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => return Err(format!("no_verify='{v}': use 1 or 0")),
                }
            }
            _ => {
                return Err(format!(
                "unknown parameter '{k}' (known: socket, keyfile, proxy, known_hosts, no_verify)"
            ))
            }
        }
    }
    Ok(target)
}

/// Characters of a host name, an IPv4 address or a login name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn nonempty_path(key: &str, value: String) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err(format!("{key}= is empty"));
    }
    Ok(PathBuf::from(value))
}

/// The `known_hosts=` path. It reaches ssh inside one `-o` option, which
/// ssh splits at whitespace (a path with a space would become two files,
/// neither the one meant), unquotes, and expands `%` tokens in: such a path
/// is refused rather than silently read as something else.
fn known_hosts_path(value: String) -> Result<PathBuf, String> {
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '%'))
    {
        return Err(format!(
            "known_hosts='{value}' holds '{c}', which ssh would not read as part of a path"
        ));
    }
    nonempty_path("known_hosts", value)
}

/// `a=1&b=2`, percent-decoded; a repeated key is refused.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)?;
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("parameter '{k}' is given twice"));
        }
        out.push((k, percent_decode(v)?));
    }
    Ok(out)
}

/// `%2F` → `/` (and `+` stays `+`: these are paths, not form data).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in '{s}'"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).map_err(|_| format!("'{s}' is not UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(format!("'{s}' holds a control character"));
    }
    Ok(text)
}

/// Percent-encode one path segment or query value (a domain name may hold
/// spaces, `?`, `#` or `%`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_socket(uri: &str) -> PathBuf {
        match ConnectUri::parse(uri).unwrap().transport {
            Transport::Unix { socket } => socket,
            t => panic!("{uri}: {t:?}"),
        }
    }

    fn ssh(uri: &str) -> SshTarget {
        match ConnectUri::parse(uri).unwrap().transport {
            Transport::Ssh(t) => t,
            t => panic!("{uri}: {t:?}"),
        }
    }

    fn error(uri: &str) -> String {
        ConnectUri::parse(uri).unwrap_err().to_string()
    }

    #[test]
    fn local_uris() {
        assert_eq!(
            unix_socket("vireo:///system"),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            unix_socket("vireo+unix:///system"),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            unix_socket("vireo+unix:///system?socket=/tmp/a%20b.sock"),
            PathBuf::from("/tmp/a b.sock")
        );
        assert_eq!(
            unix_socket("vireo:///system?socket=/x/s"),
            PathBuf::from("/x/s")
        );
    }

    #[test]
    fn ssh_uris() {
        let t = ssh("vireo+ssh://root@10.0.0.1:2222/system?socket=/run/v.sock&keyfile=/k&known_hosts=/kh&no_verify=1&proxy=/opt/vireo");
        assert_eq!(t.user.as_deref(), Some("root"));
        assert_eq!(t.host, "10.0.0.1");
        assert_eq!(t.port, Some(2222));
        assert_eq!(t.socket, Some(PathBuf::from("/run/v.sock")));
        assert_eq!(t.keyfile, Some(PathBuf::from("/k")));
        assert_eq!(t.known_hosts, Some(PathBuf::from("/kh")));
        assert!(t.no_verify);
        assert_eq!(t.proxy, "/opt/vireo");
        assert_eq!(t.display_host(), "root@10.0.0.1:2222");

        let t = ssh("vireo+ssh://host.example/system");
        assert_eq!((t.user, t.port, t.socket), (None, None, None));
        assert_eq!(t.proxy, "vireo");
        assert!(!t.no_verify);

        let t = ssh("vireo+ssh://[2001:db8::1]:22/system");
        assert_eq!(t.host, "2001:db8::1");
        assert_eq!(t.port, Some(22));
    }

    #[test]
    fn bad_uris_are_one_line_each() {
        for (uri, why) in [
            ("qemu:///system", "unknown scheme 'qemu'"),
            ("vireo:///session", "the path must be /system"),
            ("vireo://host/system", "a host needs the ssh transport"),
            ("vireo:///system?sock=/x", "unknown parameter 'sock'"),
            ("vireo+ssh:///system", "needs a host"),
            ("vireo+ssh://-oProxyCommand=x/system", "invalid host"),
            ("vireo+ssh://-l@h/system", "invalid user name"),
            ("vireo+ssh://h:0/system", "invalid port '0'"),
            ("vireo+ssh://h:99999/system", "invalid port"),
            ("vireo+ssh://h/system?no_verify=maybe", "no_verify='maybe'"),
            ("vireo+ssh://h/system?keyfile=", "keyfile= is empty"),
            ("vireo+ssh://h/system?known_hosts=", "known_hosts= is empty"),
            (
                "vireo+ssh://h/system?known_hosts=/a%20b",
                "known_hosts='/a b' holds ' '",
            ),
            (
                "vireo+ssh://h/system?known_hosts=/k%25h",
                "known_hosts='/k%h' holds '%'",
            ),
            (
                "vireo+ssh://h/system?known_hosts=/a%22b",
                "known_hosts='/a\"b' holds '\"'",
            ),
            ("vireo+ssh://h/system?socket=/a&socket=/b", "given twice"),
            ("vireo:///system?socket=%zz", "bad percent escape"),
            ("vireo:///system?socket=/a%0Ab", "control character"),
            ("nothing", "expected SCHEME://"),
        ] {
            let e = error(uri);
            assert!(e.contains(why), "{uri}: {e}");
            assert!(e.starts_with(&format!("invalid URI '{uri}'")), "{e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn encoding() {
        assert_eq!(percent_encode("a b/c?%"), "a%20b%2Fc%3F%25");
        assert_eq!(percent_encode("web-1.x_y~"), "web-1.x_y~");
    }
}
