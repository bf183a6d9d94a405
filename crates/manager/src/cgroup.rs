//! Each running domain in a control group of its own, with libvirt's
//! resource limits (`cputune` shares and bandwidth, `memtune`,
//! `blkiotune`), on cgroup v1 or v2.
//!
//! The layout: `vireo/<name>-<first 8 hex of the UUID>` (the parent
//! name is `vireo daemon --cgroup-parent`'s) under each
//! hierarchy's root (`/sys/fs/cgroup/<controller>/` on v1, one tree on v2),
//! so two daemons' domains of the same name never share one. The VMM joins
//! it between fork and exec (it writes `0` to `cgroup.procs`), so every
//! thread it makes and every page it touches is counted from the start.
//!
//! A v2 hierarchy is used when it has the controllers (`cgroup.controllers`
//! lists `cpu` and `memory`); otherwise the v1 mounts are. A host with
//! neither (or without permission) runs domains without limits, and a
//! domain that asks for a limit is refused at start with one line.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The parent of every domain's cgroup, set once by the daemon.
static PARENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The default parent cgroup.
pub const DEFAULT_PARENT: &str = "vireo";

/// Sets the parent cgroup's name (one path component) for this process's
/// daemon; only the first call counts.
pub fn set_parent(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(format!(
            "cgroup parent '{}' must be 1 to 64 of A-Z a-z 0-9 . _ -",
            name.escape_debug()
        ));
    }
    let _ = PARENT.set(name.to_string());
    Ok(())
}

fn parent() -> &'static str {
    PARENT.get().map_or(DEFAULT_PARENT, String::as_str)
}

/// The limits a definition asks for, in libvirt's units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuning {
    /// `cputune/shares`: relative CPU weight (v1 shares; 2 to 262144).
    pub cpu_shares: Option<u64>,
    /// `cputune/global_period`, µs.
    pub cpu_period: Option<u64>,
    /// `cputune/global_quota`, µs per period; negative is unlimited.
    pub cpu_quota: Option<i64>,
    /// `memtune/hard_limit`, KiB.
    pub memory_hard_kib: Option<u64>,
    /// `memtune/soft_limit`, KiB.
    pub memory_soft_kib: Option<u64>,
    /// `memtune/swap_hard_limit` (memory plus swap), KiB.
    pub swap_hard_kib: Option<u64>,
    /// `blkiotune/weight` (100 to 1000).
    pub blkio_weight: Option<u64>,
    /// `blkiotune/device` throttles.
    pub devices: Vec<DeviceThrottle>,
}

/// Per-device I/O limits (`blkiotune/device`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceThrottle {
    /// The block device's major and minor numbers.
    pub dev: (u32, u32),
    /// Its weight (100 to 1000).
    pub weight: Option<u64>,
    /// Bytes per second read.
    pub read_bytes_sec: Option<u64>,
    /// Bytes per second written.
    pub write_bytes_sec: Option<u64>,
    /// Read operations per second.
    pub read_iops_sec: Option<u64>,
    /// Write operations per second.
    pub write_iops_sec: Option<u64>,
}

impl Tuning {
    /// Whether anything is asked for.
    pub fn is_empty(&self) -> bool {
        *self == Tuning::default()
    }
}

/// Which cgroup layout the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One unified tree at this path.
    V2(PathBuf),
    /// Controller name to its mount.
    V1(Vec<(String, PathBuf)>),
}

/// The v1 controllers used.
const V1_CONTROLLERS: &[&str] = &["cpu", "memory", "blkio", "pids"];

/// The v2 controllers enabled for domains.
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "io", "pids"];

/// Finds the hierarchy from a `/proc/self/mounts` text.
pub fn detect(mounts: &str) -> Option<Hierarchy> {
    let mut v1 = Vec::new();
    let mut v2 = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[1].contains('\\') {
            continue;
        }
        match f[2] {
            "cgroup2" => {
                let path = PathBuf::from(f[1]);
                let controllers =
                    fs::read_to_string(path.join("cgroup.controllers")).unwrap_or_default();
                let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
                if has("cpu") && has("memory") {
                    v2 = Some(path);
                }
            }
            "cgroup" => {
                for opt in f[3].split(',') {
                    if V1_CONTROLLERS.contains(&opt) {
                        v1.push((opt.to_string(), PathBuf::from(f[1])));
                    }
                }
            }
            _ => {}
        }
    }
    match v2 {
        Some(p) => Some(Hierarchy::V2(p)),
        None if !v1.is_empty() => Some(Hierarchy::V1(v1)),
        None => None,
    }
}

/// The host's hierarchy, read from `/proc/self/mounts`.
pub fn host() -> Option<Hierarchy> {
    detect(&fs::read_to_string("/proc/self/mounts").ok()?)
}

/// A domain's cgroup name: its name made safe for a path, and its UUID's
/// first 8 hex digits.
pub fn group_name(name: &str, uuid: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let id: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(8)
        .collect();
    format!("{safe}-{id}")
}

/// One domain's cgroup: a directory per hierarchy (one on v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainCgroup {
    v2: bool,
    /// (controller, directory); on v2 the controller is empty.
    dirs: Vec<(String, PathBuf)>,
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::write(path, value).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl DomainCgroup {
    /// The cgroup `group` under `vireo/`, whether or not it exists.
    pub fn at(h: &Hierarchy, group: &str) -> DomainCgroup {
        match h {
            Hierarchy::V2(root) => DomainCgroup {
                v2: true,
                dirs: vec![(String::new(), root.join(parent()).join(group))],
            },
            Hierarchy::V1(mounts) => DomainCgroup {
                v2: false,
                dirs: mounts
                    .iter()
                    .map(|(c, m)| (c.clone(), m.join(parent()).join(group)))
                    .collect(),
            },
        }
    }

    /// Whether its directories exist.
    pub fn exists(&self) -> bool {
        self.dirs.iter().all(|(_, d)| d.is_dir())
    }

    /// Makes (or takes again) the cgroup `group` under `vireo/`.
    pub fn create(h: &Hierarchy, group: &str) -> io::Result<DomainCgroup> {
        match h {
            Hierarchy::V2(root) => {
                let parent = root.join(parent());
                fs::create_dir_all(&parent)?;
                // Controllers reach a cgroup only through its parents'
                // subtree_control.
                for dir in [root.as_path(), parent.as_path()] {
                    let file = dir.join("cgroup.subtree_control");
                    for c in V2_CONTROLLERS {
                        // A controller the kernel lacks is left out.
                        let _ = write(&file, &format!("+{c}"));
                    }
                }
                let dir = parent.join(group);
                ensure_dir(&dir)?;
                Ok(DomainCgroup {
                    v2: true,
                    dirs: vec![(String::new(), dir)],
                })
            }
            Hierarchy::V1(mounts) => {
                let mut dirs = Vec::new();
                for (controller, mount) in mounts {
                    let parent = mount.join(parent());
                    ensure_dir(&parent)?;
                    let dir = parent.join(group);
                    ensure_dir(&dir)?;
                    dirs.push((controller.clone(), dir));
                }
                Ok(DomainCgroup { v2: false, dirs })
            }
        }
    }

    /// The `cgroup.procs` files the VMM writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut seen = Vec::new();
        for (_, d) in &self.dirs {
            let f = d.join("cgroup.procs");
            if !seen.contains(&f) {
                seen.push(f);
            }
        }
        seen
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| self.v2 || c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn set(&self, controller: &str, file: &str, value: &str) -> io::Result<()> {
        let dir = self.dir(controller).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the host has no {controller} cgroup controller"),
            )
        })?;
        write(&dir.join(file), value)
    }

    fn get(&self, controller: &str, file: &str) -> Option<String> {
        let dir = self.dir(controller)?;
        fs::read_to_string(dir.join(file))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Applies `t`; fields left `None` are not touched.
    pub fn apply(&self, t: &Tuning) -> io::Result<()> {
        if let Some(shares) = t.cpu_shares {
            if self.v2 {
                // libvirt's conversion of v1 shares to a v2 weight.
                let weight = 1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142;
                self.set("cpu", "cpu.weight", &weight.to_string())?;
            } else {
                self.set("cpu", "cpu.shares", &shares.to_string())?;
            }
        }
        if t.cpu_period.is_some() || t.cpu_quota.is_some() {
            let period = t.cpu_period.unwrap_or(100_000);
            let quota = t.cpu_quota.filter(|q| *q > 0);
            if self.v2 {
                let q = quota.map_or("max".to_string(), |q| q.to_string());
                self.set("cpu", "cpu.max", &format!("{q} {period}"))?;
            } else {
                self.set("cpu", "cpu.cfs_period_us", &period.to_string())?;
                self.set(
                    "cpu",
                    "cpu.cfs_quota_us",
                    &quota.map_or(-1, |q| q).to_string(),
                )?;
            }
        }
        let bytes = |kib: u64| kib.saturating_mul(1024).to_string();
        if let Some(kib) = t.memory_hard_kib {
            let file = if self.v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            self.set("memory", file, &bytes(kib))?;
        }
        if let Some(kib) = t.memory_soft_kib {
            let file = if self.v2 {
                "memory.high"
            } else {
                "memory.soft_limit_in_bytes"
            };
            self.set("memory", file, &bytes(kib))?;
        }
        if let Some(kib) = t.swap_hard_kib {
            if self.v2 {
                // v2 limits swap alone; libvirt's limit is memory plus swap.
                let swap = kib.saturating_sub(t.memory_hard_kib.unwrap_or(0));
                self.set("memory", "memory.swap.max", &bytes(swap))?;
            } else {
                self.set("memory", "memory.memsw.limit_in_bytes", &bytes(kib))?;
            }
        }
        if let Some(w) = t.blkio_weight {
            if self.v2 {
                self.set("io", "io.weight", &format!("default {w}"))?;
            } else {
                self.set("blkio", "blkio.weight", &w.to_string())?;
            }
        }
        for d in &t.devices {
            let (maj, min) = d.dev;
            if let Some(w) = d.weight {
                let (file, line) = if self.v2 {
                    ("io.weight", format!("{maj}:{min} {w}"))
                } else {
                    ("blkio.weight_device", format!("{maj}:{min} {w}"))
                };
                self.set(if self.v2 { "io" } else { "blkio" }, file, &line)?;
            }
            if self.v2 {
                let mut line = format!("{maj}:{min}");
                for (key, v) in [
                    ("rbps", d.read_bytes_sec),
                    ("wbps", d.write_bytes_sec),
                    ("riops", d.read_iops_sec),
                    ("wiops", d.write_iops_sec),
                ] {
                    if let Some(v) = v {
                        line.push_str(&format!(" {key}={v}"));
                    }
                }
                self.set("io", "io.max", &line)?;
            } else {
                for (file, v) in [
                    ("blkio.throttle.read_bps_device", d.read_bytes_sec),
                    ("blkio.throttle.write_bps_device", d.write_bytes_sec),
                    ("blkio.throttle.read_iops_device", d.read_iops_sec),
                    ("blkio.throttle.write_iops_device", d.write_iops_sec),
                ] {
                    if let Some(v) = v {
                        self.set("blkio", file, &format!("{maj}:{min} {v}"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// What the cgroup holds now: shares, period and quota, and the memory
    /// limits (KiB; `None` when unlimited).
    pub fn read(&self) -> Tuning {
        let num = |c: &str, f: &str| self.get(c, f).and_then(|v| v.parse::<u64>().ok());
        let kib = |c: &str, f: &str| {
            // Unlimited reads as "max" (v2) or a huge page-rounded number (v1).
            num(c, f).filter(|b| *b < (1 << 60)).map(|b| b / 1024)
        };
        let mut t = Tuning::default();
        if self.v2 {
            t.cpu_shares =
                num("cpu", "cpu.weight").map(|w| 2 + (w.saturating_sub(1)) * 262_142 / 9999);
            if let Some(max) = self.get("cpu", "cpu.max") {
                let mut it = max.split_whitespace();
                t.cpu_quota = it.next().map(|q| q.parse().unwrap_or(-1));
                t.cpu_period = it.next().and_then(|p| p.parse().ok());
            }
            t.memory_hard_kib = kib("memory", "memory.max");
            t.memory_soft_kib = kib("memory", "memory.high");
            t.swap_hard_kib = kib("memory", "memory.swap.max");
        } else {
            t.cpu_shares = num("cpu", "cpu.shares");
            t.cpu_period = num("cpu", "cpu.cfs_period_us");
            t.cpu_quota = self
                .get("cpu", "cpu.cfs_quota_us")
                .and_then(|q| q.parse().ok());
            t.memory_hard_kib = kib("memory", "memory.limit_in_bytes");
            t.memory_soft_kib = kib("memory", "memory.soft_limit_in_bytes");
            t.swap_hard_kib = kib("memory", "memory.memsw.limit_in_bytes");
        }
        t
    }

    /// Removes the directories (once the VMM is gone; a directory that
    /// still holds a process stays, and is taken again by the next start).
    pub fn remove(&self) {
        for (_, d) in &self.dirs {
            let _ = fs::remove_dir(d);
        }
    }

    /// How long ago its youngest directory was made or changed (a leaf
    /// cgroup's directory changes only when it is made), of those that
    /// exist; `None` if one cannot be read or the clock went back.
    pub fn age(&self) -> Option<std::time::Duration> {
        self.dirs
            .iter()
            .filter(|(_, d)| d.exists())
            .map(|(_, d)| {
                fs::metadata(d)
                    .and_then(|m| m.modified())
                    .ok()?
                    .elapsed()
                    .ok()
            })
            .try_fold(std::time::Duration::MAX, |min, a| Some(min.min(a?)))
    }

    /// The directories, for messages and tests.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }
}

fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_mounts_are_found_by_controller() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                      cgroup /sys/fs/cgroup/net_cls cgroup rw,net_cls 0 0\n\
                      cgroup2 /nonexistent/unified cgroup2 rw 0 0\n";
        assert_eq!(
            detect(mounts),
            Some(Hierarchy::V1(vec![
                ("cpu".into(), "/sys/fs/cgroup/cpu".into()),
                ("memory".into(), "/sys/fs/cgroup/memory".into()),
            ]))
        );
        assert_eq!(detect("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn names_are_safe_and_unique_per_uuid() {
        assert_eq!(
            group_name("web/1 x", "5d1c0f6e-63a4-4c43-9b1e-6f0e2a7f3b11"),
            "web_1_x-5d1c0f6e"
        );
        assert_eq!(group_name("..", "ab"), "..-ab");
    }

    #[test]
    fn limits_land_in_v1_and_v2_files() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = DomainCgroup {
            v2: false,
            dirs: vec![
                ("cpu".into(), dir.path().join("cpu")),
                ("memory".into(), dir.path().join("memory")),
                ("blkio".into(), dir.path().join("blkio")),
            ],
        };
        let v2 = DomainCgroup {
            v2: true,
            dirs: vec![(String::new(), dir.path().join("v2"))],
        };
        for (_, d) in v1.dirs.iter().chain(&v2.dirs) {
            fs::create_dir_all(d).unwrap();
        }
        let t = Tuning {
            cpu_shares: Some(2048),
            cpu_period: Some(100_000),
            cpu_quota: Some(20_000),
            memory_hard_kib: Some(65536),
            swap_hard_kib: Some(98304),
            blkio_weight: Some(500),
            devices: vec![DeviceThrottle {
                dev: (7, 3),
                read_iops_sec: Some(100),
                ..Default::default()
            }],
            ..Default::default()
        };
        v1.apply(&t).unwrap();
        let read = |p: &str| fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("cpu/cpu.shares"), "2048");
        assert_eq!(read("cpu/cpu.cfs_quota_us"), "20000");
        assert_eq!(read("memory/memory.limit_in_bytes"), "67108864");
        assert_eq!(read("memory/memory.memsw.limit_in_bytes"), "100663296");
        assert_eq!(read("blkio/blkio.throttle.read_iops_device"), "7:3 100");
        let back = v1.read();
        assert_eq!(
            (back.cpu_shares, back.cpu_quota, back.memory_hard_kib),
            (Some(2048), Some(20000), Some(65536))
        );
        v2.apply(&t).unwrap();
        assert_eq!(read("v2/cpu.max"), "20000 100000");
        assert_eq!(read("v2/cpu.weight"), "79");
        assert_eq!(read("v2/memory.max"), "67108864");
        assert_eq!(read("v2/memory.swap.max"), "33554432");
        assert_eq!(read("v2/io.weight"), "default 500");
        assert_eq!(read("v2/io.max"), "7:3 riops=100");
        assert_eq!(v2.read().cpu_quota, Some(20000));
    }
}
