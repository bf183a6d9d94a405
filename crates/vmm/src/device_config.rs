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
    /// Image path (raw or qcow2; the format is probed).
    pub path: PathBuf,
    /// Open read-only; the guest sees a read-only disk.
    pub readonly: bool,
    /// Host caching.
    pub cache: CacheMode,
    /// Serial the guest reads with GET_ID; defaults to `vireo-disk<N>`.
    pub serial: Option<String>,
    /// Request queues.
    pub queues: u16,
}

/// Split `key=value,key=value`, refusing unknown and repeated keys.
fn pairs<'a>(what: &str, spec: &'a str, known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("{what}: '{item}' is not key=value"))?;
        if !known.contains(&k) {
            return Err(format!(
                "{what}: unknown option '{k}' (known: {})",
                known.join(", ")
            ));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("{what}: '{k}' given twice"));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn on_off(what: &str, key: &str, v: &str) -> Result<bool, String> {
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

impl FromStr for DiskConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const WHAT: &str = "--disk";
        let mut disk = DiskConfig {
            path: PathBuf::new(),
            readonly: false,
            cache: CacheMode::default(),
            serial: None,
            queues: 1,
        };
        let known = ["path", "readonly", "cache", "serial", "queues"];
        for (k, v) in pairs(WHAT, s, &known)? {
            match k {
                "path" => disk.path = PathBuf::from(v),
                "readonly" => disk.readonly = on_off(WHAT, k, v)?,
                "cache" => {
                    disk.cache = match v {
                        "none" => CacheMode::None,
                        "writeback" => CacheMode::Writeback,
                        _ => return Err(format!("{WHAT}: cache={v} must be none or writeback")),
                    }
                }
                "serial" => {
                    if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(format!(
                            "{WHAT}: serial={v} must be at most 20 printable ASCII characters"
                        ));
                    }
                    disk.serial = Some(v.to_string());
                }
                "queues" => disk.queues = queue_count(WHAT, v, 16)?,
                _ => unreachable_key(k)?,
            }
        }
        if disk.path.as_os_str().is_empty() {
            return Err(format!("{WHAT}: path=... is required"));
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
        let d: DiskConfig = "path=x".parse().unwrap();
        assert!(!d.readonly);
        assert_eq!(d.cache, CacheMode::Writeback);
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
