//! Device options as the user writes them (`--disk path=a.img,readonly=on`):
//! comma-separated `key=value` lists, parsed into typed configurations
//! with one clear error per mistake.

use std::path::PathBuf;
use std::str::FromStr;

/// How a disk's host side caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Through the host page cache; the guest's flushes make data durable.
    #[default]
    Writeback,
    /// Bypass the host page cache (O_DIRECT), as QEMU's `cache=none`.
    None,
}

/// One `--disk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Name for the control API; defaults to `disk<N>`.
    pub id: Option<String>,
    /// Image path.
    pub path: PathBuf,
    /// Image format; probed from the image's first bytes when `None`,
    /// which docs/security.md explains is only safe for trusted images.
    pub format: Option<block::ImageFormat>,
    /// Open read-only; the guest sees a read-only disk.
    pub readonly: bool,
    /// Host caching.
    pub cache: CacheMode,
    /// Serial the guest reads with GET_ID; defaults to `vireo-disk<N>`.
    pub serial: Option<String>,
    /// Request queues.
    pub queues: u16,
    /// What a failed write, flush or discard does (`werror=`).
    pub werror: virtio::block::ErrorAction,
    /// What a failed read does (`rerror=`).
    pub rerror: virtio::block::ErrorAction,
    /// I/O limits (`iops=`, `bps=`, ...), as QEMU's drive options.
    pub limits: virtio::block::IoLimits,
    /// The `--iothread` whose CPUs the disk's threads run on (`iothread=`).
    pub iothread: Option<u32>,
    /// The image as a descriptor passed over the control API with the
    /// `add-disk` that made this disk (`image_fd`): hot-plug into a VMM
    /// that cannot open `path` (a jailed one). `path` then only names it.
    pub passed: Option<crate::passed_fd::PassedFd>,
    /// The `--secret` holding the CHAP secret of an `iscsi://USER@...`
    /// disk (`secret=ID`).
    pub secret: Option<String>,
    /// That secret, once read (`--secret`), or as the `add-disk` request
    /// carried it (`chap_secret`).
    pub chap_secret: Option<crate::secret::SecretText>,
}

/// The largest I/O limit accepted (a number QEMU's limits also stay under).
const MAX_LIMIT: u64 = 1 << 50;

impl DiskConfig {
    /// Whether a failure may stop the VM until it is resumed.
    pub fn may_stop(&self) -> bool {
        use virtio::block::ErrorAction::{Enospc, Stop};
        matches!(self.werror, Stop | Enospc) || self.rerror == Stop
    }
}

/// One `--net`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetConfig {
    /// Name for the control API; defaults to `net<N>`.
    pub id: Option<String>,
    /// TAP interface to attach to, or to create under this name; `None`
    /// lets the kernel name a new one (`vireoN`). A TAP Vireo creates
    /// disappears when the VM exits.
    pub tap: Option<String>,
    /// The guest's MAC; `None` derives a stable one from the command line.
    pub mac: Option<[u8; 6]>,
    /// Queue pairs (multiqueue when more than one).
    pub queues: u16,
    /// A TAP queue descriptor this process inherited (`fd=N`, command
    /// line only): the management daemon creates the TAP and hands it
    /// over, so the VMM needs no privilege to make one. Instead of `tap`.
    pub fd: Option<i32>,
    /// A TAP queue descriptor passed over the control API with the
    /// `add-net` that made this card (`tap_fd`): hot-plug without the
    /// privilege to make a TAP. Instead of `tap` and `fd`.
    pub passed: Option<crate::passed_fd::PassedFd>,
    /// Every queue of the TAP `tap` names (or a new one), opened ahead of
    /// the boots by [`crate::hold_taps`] (a VMM that enters a jail):
    /// each boot takes duplicates, never opening `/dev/net/tun` again.
    pub held: Vec<crate::passed_fd::PassedFd>,
}

impl NetConfig {
    /// A card with every option at its default.
    pub fn new() -> Self {
        Self {
            queues: 1,
            ..Default::default()
        }
    }

    /// Set option `key` from its text, checked as `--net` checks it;
    /// `what` names the source in the error.
    pub fn set(&mut self, what: &str, key: &str, v: &str) -> Result<(), String> {
        match key {
            "id" => self.id = Some(device_id(what, v)?),
            "tap" => {
                // IFNAMSIZ is 16 with the NUL.
                if v.is_empty() || v.len() > 15 || v.contains(['/', ' ', ':']) {
                    return Err(format!("{what}: tap={v} is not a valid interface name"));
                }
                self.tap = Some(v.to_string());
            }
            "mac" => {
                self.mac = Some(parse_mac(v).ok_or_else(|| {
                    format!("{what}: mac={v} is not a unicast MAC like 52:54:00:12:34:56")
                })?)
            }
            "queues" => self.queues = queue_count(what, v, 16)?,
            "fd" => {
                self.fd = Some(v.parse().ok().filter(|fd| *fd >= 3).ok_or_else(|| {
                    format!("{what}: fd={v} is not a descriptor number of 3 or more")
                })?)
            }
            _ => unreachable_key(key)?,
        }
        Ok(())
    }
}

impl FromStr for NetConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const WHAT: &str = "--net";
        let mut net = NetConfig::new();
        for (k, v) in pairs(WHAT, s, &["id", "tap", "mac", "queues", "fd"])? {
            net.set(WHAT, &k, &v)?;
        }
        if net.fd.is_some() && net.tap.is_some() {
            return Err(format!("{WHAT}: give tap= or fd=, not both"));
        }
        if net.fd.is_some() && net.queues != 1 {
            return Err(format!(
                "{WHAT}: fd= hands over one queue; queues must be 1"
            ));
        }
        Ok(net)
    }
}

/// Parse `xx:xx:xx:xx:xx:xx`; multicast and all-zero addresses are refused.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    let unicast = mac[0] & 1 == 0 && mac != [0; 6];
    (parts.next().is_none() && unicast).then_some(mac)
}

/// Where a virtio console's port goes. The words mean what they mean for
/// `--serial`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleConfig {
    /// Vireo's standard output (shared with the serial console's stdout).
    Stdout,
    /// Written to a file, created or truncated.
    File(PathBuf),
    /// A unix socket Vireo listens on (removed at exit): the connected
    /// client gets guest output (and what the guest wrote before it came)
    /// and its input reaches the guest.
    Unix(PathBuf),
    /// A unix stream socket someone else listens on; Vireo connects once.
    UnixConnect(PathBuf),
}

impl FromStr for ConsoleConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let path = |p: &str| {
            if p.is_empty() {
                Err(format!("--console {s}: the path is empty"))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        let socket = |p: &str| {
            let p = path(p)?;
            devices::serial_backend::check_socket_path(&p)
                .map_err(|e| format!("--console {s}: {e}"))?;
            Ok::<_, String>(p)
        };
        match s.split_once(':') {
            None if s == "stdout" => Ok(Self::Stdout),
            Some(("file", p)) => Ok(Self::File(path(p)?)),
            Some(("unix", p)) => Ok(Self::Unix(socket(p)?)),
            Some(("unix-connect", p)) => Ok(Self::UnixConnect(socket(p)?)),
            _ => Err(format!(
                "--console {s}: expected stdout, file:PATH, unix:PATH or unix-connect:PATH"
            )),
        }
    }
}

/// Split `key=value,key=value`, refusing unknown and repeated keys. As in
/// QEMU, a doubled comma is a comma within a value (`path=a,,b.img` names
/// `a,b.img`).
pub(crate) fn pairs(
    what: &str,
    spec: &str,
    known: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in split_options(spec).into_iter().filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{what}: '{item}' is not key=value"))?;
        if !known.contains(&k) {
            return Err(format!(
                "{what}: unknown option '{k}' (known: {})",
                known.join(", ")
            ));
        }
        if out.iter().any(|(seen, _)| seen == k) {
            return Err(format!("{what}: '{k}' given twice"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Split `spec` at single commas; `,,` stands for a literal comma.
fn split_options(spec: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut item = String::new();
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != ',' {
            item.push(c);
        } else if chars.next_if_eq(&',').is_some() {
            item.push(',');
        } else {
            items.push(std::mem::take(&mut item));
        }
    }
    items.push(item);
    items
}

/// A device name: 1 to 32 letters, digits, `-` or `_`.
pub fn device_id(what: &str, v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!(
            "{what}: id={v} must be 1 to 32 letters, digits, - or _"
        ))
    }
}

pub(crate) fn on_off(what: &str, key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("{what}: {key}={v} must be on or off")),
    }
}

fn queue_count(what: &str, v: &str, max: u16) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{what}: queues={v} must be 1 to {max}")),
    }
}

impl DiskConfig {
    /// A disk at `path` with every option at its default.
    pub fn new(path: PathBuf) -> Self {
        Self {
            id: None,
            path,
            format: None,
            readonly: false,
            cache: CacheMode::default(),
            serial: None,
            queues: 1,
            werror: virtio::block::ErrorAction::Report,
            rerror: virtio::block::ErrorAction::Report,
            limits: virtio::block::IoLimits::default(),
            iothread: None,
            passed: None,
            secret: None,
            chap_secret: None,
        }
    }

    /// Set option `key` (other than `path`) from its text, checked as
    /// `--disk` checks it; `what` names the source in the error.
    pub fn set(&mut self, what: &str, key: &str, v: &str) -> Result<(), String> {
        match key {
            "id" => self.id = Some(device_id(what, v)?),
            "format" => {
                self.format = Some(match v {
                    "raw" => block::ImageFormat::Raw,
                    "qcow2" => block::ImageFormat::Qcow2,
                    _ => return Err(format!("{what}: format={v} must be raw or qcow2")),
                })
            }
            "readonly" => self.readonly = on_off(what, key, v)?,
            "cache" => {
                self.cache = match v {
                    "none" => CacheMode::None,
                    "writeback" => CacheMode::Writeback,
                    _ => return Err(format!("{what}: cache={v} must be none or writeback")),
                }
            }
            "serial" => {
                if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!(
                        "{what}: serial={v} must be at most 20 printable ASCII characters"
                    ));
                }
                self.serial = Some(v.to_string());
            }
            "queues" => self.queues = queue_count(what, v, 16)?,
            "werror" => {
                self.werror = virtio::block::ErrorAction::parse(v).ok_or_else(|| {
                    format!("{what}: werror={v} must be report, ignore, stop or enospc")
                })?
            }
            "iops" | "iops_rd" | "iops_wr" | "bps" | "bps_rd" | "bps_wr" | "burst" => {
                let n: u64 = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0 && *n <= MAX_LIMIT)
                    .ok_or_else(|| {
                        format!("{what}: {key}={v} must be a number from 1 to {MAX_LIMIT}")
                    })?;
                let l = &mut self.limits;
                let slot = match key {
                    "iops" => &mut l.iops_total,
                    "iops_rd" => &mut l.iops_read,
                    "iops_wr" => &mut l.iops_write,
                    "bps" => &mut l.bps_total,
                    "bps_rd" => &mut l.bps_read,
                    "bps_wr" => &mut l.bps_write,
                    _ => &mut l.burst_secs,
                };
                *slot = Some(n);
            }
            "iothread" => {
                self.iothread =
                    Some(v.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                        format!("{what}: iothread={v} is not an I/O thread id (1 up)")
                    })?)
            }
            "rerror" => {
                self.rerror = virtio::block::ErrorAction::parse(v)
                    .filter(|a| *a != virtio::block::ErrorAction::Enospc)
                    .ok_or_else(|| format!("{what}: rerror={v} must be report, ignore or stop"))?
            }
            _ => unreachable_key(key)?,
        }
        Ok(())
    }
}

impl FromStr for DiskConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const WHAT: &str = "--disk";
        let mut disk = DiskConfig::new(PathBuf::new());
        let known = [
            "id", "path", "format", "readonly", "cache", "serial", "queues", "werror", "rerror",
            "iops", "iops_rd", "iops_wr", "bps", "bps_rd", "bps_wr", "burst", "iothread", "secret",
        ];
        // `--disk iscsi://HOST/IQN/LUN[,options]` or
        // `--disk nfs://SERVER/EXPORT/PATH[,options]`: the URL holds no comma.
        let s = match [block::ISCSI_SCHEME, block::NFS_SCHEME]
            .into_iter()
            .find(|scheme| s.starts_with(scheme))
        {
            Some(scheme) => {
                let (url, rest) = s.split_once(',').unwrap_or((s, ""));
                disk.path = PathBuf::from(url);
                if rest.split(',').any(|kv| kv.starts_with("path=")) {
                    return Err(format!("{WHAT}: give an {scheme} URL or path=, not both"));
                }
                rest
            }
            None => s,
        };
        for (k, v) in pairs(WHAT, s, &known)? {
            match k.as_str() {
                "path" => disk.path = PathBuf::from(v),
                "secret" => disk.secret = Some(device_id(WHAT, &v)?),
                k => disk.set(WHAT, k, &v)?,
            }
        }
        if disk.path.as_os_str().is_empty() {
            return Err(format!("{WHAT}: path=... is required"));
        }
        if disk.secret.is_some() && !disk.path.to_string_lossy().starts_with(block::ISCSI_SCHEME) {
            return Err(format!(
                "{WHAT}: secret= is the CHAP secret of an iscsi://USER@HOST/IQN/LUN disk"
            ));
        }
        Ok(disk)
    }
}

fn unreachable_key(k: &str) -> Result<(), String> {
    // `pairs` only returns known keys; this keeps the match exhaustive
    // without a panic path.
    Err(format!("option '{k}' is not handled"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_options() {
        let d: DiskConfig = "path=/tmp/a.img,readonly=on,cache=none,serial=abc,queues=4"
            .parse()
            .unwrap();
        assert_eq!(d.path, PathBuf::from("/tmp/a.img"));
        assert!(d.readonly);
        assert_eq!(d.cache, CacheMode::None);
        assert_eq!(d.serial.as_deref(), Some("abc"));
        assert_eq!(d.queues, 4);
        let d: DiskConfig = "iscsi://169.254.77.1/iqn.x:y/1,readonly=on"
            .parse()
            .unwrap();
        assert_eq!(d.path, PathBuf::from("iscsi://169.254.77.1/iqn.x:y/1"));
        assert!(d.readonly);
        assert!("iscsi://h/iqn/1,path=x".parse::<DiskConfig>().is_err());
        let d: DiskConfig = "nfs://169.254.78.1/srv/vm/disk.img?uid=0,format=raw,werror=stop"
            .parse()
            .unwrap();
        assert_eq!(
            d.path,
            PathBuf::from("nfs://169.254.78.1/srv/vm/disk.img?uid=0")
        );
        assert!("nfs://h/e/f,path=x".parse::<DiskConfig>().is_err());
        let d: DiskConfig = "id=data,path=x".parse().unwrap();
        assert_eq!(d.id.as_deref(), Some("data"));
        assert!("id=a/b,path=x"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("id=a/b"));
        let d: DiskConfig = "path=x".parse().unwrap();
        assert!(!d.readonly);
        assert_eq!(d.cache, CacheMode::Writeback);
    }

    #[test]
    fn net_options() {
        let n: NetConfig = "tap=tap0,mac=52:54:00:12:34:56,queues=2".parse().unwrap();
        assert_eq!(n.tap.as_deref(), Some("tap0"));
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(n.queues, 2);
        let n: NetConfig = "".parse().unwrap();
        assert_eq!(
            n,
            NetConfig {
                queues: 1,
                ..Default::default()
            }
        );
        let err = |s: &str| s.parse::<NetConfig>().unwrap_err();
        assert!(err("mac=01:00:5e:00:00:01").contains("unicast"));
        assert!(err("mac=52:54:00:12:34").contains("unicast"));
        assert!(err("mac=52:54:00:12:34:56:78").contains("unicast"));
        assert!(err("mac=00:00:00:00:00:00").contains("unicast"));
        assert!(err("tap=a/b").contains("interface name"));
        assert!(err("tap=abcdefghijklmnop").contains("interface name"));
        assert!(err("queues=17").contains("1 to 16"));
        let n: NetConfig = "fd=5,mac=52:54:00:12:34:56".parse().unwrap();
        assert_eq!(n.fd, Some(5));
        assert!(err("fd=2").contains("3 or more"));
        assert!(err("fd=x").contains("3 or more"));
        assert!(err("fd=5,tap=t0").contains("not both"));
        assert!(err("fd=5,queues=2").contains("queues must be 1"));
    }

    #[test]
    fn console_backends() {
        assert_eq!("stdout".parse::<ConsoleConfig>(), Ok(ConsoleConfig::Stdout));
        assert_eq!(
            "file:/tmp/x".parse::<ConsoleConfig>(),
            Ok(ConsoleConfig::File("/tmp/x".into()))
        );
        assert_eq!(
            "unix:/tmp/s".parse::<ConsoleConfig>(),
            Ok(ConsoleConfig::Unix("/tmp/s".into()))
        );
        assert_eq!(
            "unix-connect:/tmp/s".parse::<ConsoleConfig>(),
            Ok(ConsoleConfig::UnixConnect("/tmp/s".into()))
        );
        let long = format!("unix:/{}", "x".repeat(120));
        assert!(long
            .parse::<ConsoleConfig>()
            .unwrap_err()
            .contains("at most 107"));
        assert!("file:".parse::<ConsoleConfig>().is_err());
        assert!("pty"
            .parse::<ConsoleConfig>()
            .unwrap_err()
            .contains("expected stdout"));
    }

    #[test]
    fn disk_format_and_escaped_commas() {
        let d: DiskConfig = "path=a.img,format=raw".parse().unwrap();
        assert_eq!(d.format, Some(block::ImageFormat::Raw));
        let d: DiskConfig = "format=qcow2,path=b".parse().unwrap();
        assert_eq!(d.format, Some(block::ImageFormat::Qcow2));
        assert_eq!("path=x".parse::<DiskConfig>().unwrap().format, None);
        assert!("path=x,format=vmdk"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("format=vmdk must be raw or qcow2"));
        // QEMU's escape: a doubled comma is a comma in the value.
        let d: DiskConfig = "path=/tmp/a,,b.img,readonly=on".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("/tmp/a,b.img"));
        assert!(d.readonly);
        let d: DiskConfig = "path=a,,,,b,,".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("a,,b,"));
        let d: DiskConfig = "path=a,,,format=raw".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("a,"));
        assert_eq!(d.format, Some(block::ImageFormat::Raw));
        assert!("path=a,b.img"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("'b.img' is not key=value"));
    }

    #[test]
    fn disk_mistakes_are_named() {
        let err = |s: &str| s.parse::<DiskConfig>().unwrap_err();
        assert!(err("readonly=on").contains("path=... is required"));
        assert!(err("path=a,bogus=1").contains("unknown option 'bogus'"));
        assert!(err("path=a,path=b").contains("given twice"));
        assert!(err("path=a,readonly=maybe").contains("on or off"));
        assert!(err("path=a,cache=unsafe").contains("none or writeback"));
        assert!(err("path=a,queues=0").contains("1 to 16"));
        assert!(err("path=a,serial=abcdefghijklmnopqrstuvwxyz").contains("20 printable"));
        assert!(err("path").contains("not key=value"));
    }
}
