//! What backs guest RAM (`--memory-backend`): the parsed choice and the
//! host's huge page pool it is checked against before the guest starts.

use std::path::{Path, PathBuf};

/// Where guest RAM pages come from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// Anonymous memory (the default).
    #[default]
    Anon,
    /// One memfd (shareable with another process, e.g. vhost-user).
    Memfd,
    /// A file, or an unlinked file created in a directory (a hugetlbfs mount).
    File(PathBuf),
}

/// A huge page size guest RAM is mapped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePageSize {
    /// 2 MiB pages.
    Size2M,
    /// 1 GiB pages.
    Size1G,
}

impl HugePageSize {
    /// The page size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            Self::Size2M => 2 << 20,
            Self::Size1G => 1 << 30,
        }
    }

    /// The name used in messages ("2 MiB").
    pub fn name(self) -> &'static str {
        match self {
            Self::Size2M => "2 MiB",
            Self::Size1G => "1 GiB",
        }
    }

    /// log2 of the page size, as MAP_HUGE_SHIFT and MFD_HUGE_SHIFT encode it.
    pub fn shift(self) -> i32 {
        match self {
            Self::Size2M => 21,
            Self::Size1G => 30,
        }
    }

    /// The host's pool of these pages in sysfs.
    fn sysfs_dir(self) -> PathBuf {
        PathBuf::from(format!(
            "/sys/kernel/mm/hugepages/hugepages-{}kB",
            self.bytes() >> 10
        ))
    }
}

/// How guest RAM is backed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryBackend {
    /// Where the pages come from.
    pub kind: BackendKind,
    /// Map with huge pages of this size (hugetlb), if any.
    pub hugepages: Option<HugePageSize>,
    /// MAP_SHARED instead of MAP_PRIVATE (memfd defaults to shared).
    pub shared: bool,
    /// Touch every page before the guest starts.
    pub prealloc: bool,
    /// Threads that share the touching.
    pub prealloc_threads: usize,
    /// Transparent huge pages advised on or off for all of guest RAM; left
    /// out, anonymous RAM is advised on above its first 2 MiB and other
    /// backings follow the host's policy.
    pub thp: Option<bool>,
    /// Lock guest memory in RAM (`mlock`): never swapped, every page
    /// faulted in before the guest starts (libvirt's `<locked/>`).
    pub lock: bool,
}

impl MemoryBackend {
    /// Whether this is the default (anonymous, lazy, THP advised above 2 MiB).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn on_off(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(format!("memory backend: {key}='{v}' is not on or off")),
    }
}

/// Parse `backend=anon|memfd|file,path=..,hugepages=2M|1G,shared=on|off,
/// prealloc=on|off,prealloc-threads=N,thp=on|off,lock=on|off`.
pub fn parse_memory_backend(s: &str) -> Result<MemoryBackend, String> {
    let mut backend: Option<&str> = None;
    let mut path: Option<PathBuf> = None;
    let mut shared: Option<bool> = None;
    let mut threads: Option<usize> = None;
    let mut m = MemoryBackend::default();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (key, v) = part
            .split_once('=')
            .ok_or_else(|| format!("memory backend: '{part}' is not key=value"))?;
        match key {
            "backend" => backend = Some(v),
            "path" if !v.is_empty() => path = Some(PathBuf::from(v)),
            "hugepages" => {
                m.hugepages = Some(match v {
                    "2M" | "2m" | "2MiB" => HugePageSize::Size2M,
                    "1G" | "1g" | "1GiB" => HugePageSize::Size1G,
                    _ => return Err(format!("memory backend: hugepages='{v}' is not 2M or 1G")),
                })
            }
            "shared" => shared = Some(on_off(key, v)?),
            "prealloc" => m.prealloc = on_off(key, v)?,
            "prealloc-threads" => {
                threads = Some(match v.parse::<usize>() {
                    Ok(n @ 1..=256) => n,
                    _ => {
                        return Err(format!(
                            "memory backend: prealloc-threads='{v}' is not a number from 1 to 256"
                        ))
                    }
                })
            }
            "thp" => m.thp = Some(on_off(key, v)?),
            "lock" => m.lock = on_off(key, v)?,
            _ => {
                return Err(format!(
                    "memory backend: unknown key '{key}' (backend, path, hugepages, shared, \
                     prealloc, prealloc-threads, thp, lock)"
                ))
            }
        }
    }
    m.kind = match (
        backend.unwrap_or(if path.is_some() { "file" } else { "anon" }),
        path,
    ) {
        ("anon", None) => BackendKind::Anon,
        ("memfd", None) => BackendKind::Memfd,
        ("file", Some(p)) => BackendKind::File(p),
        ("file", None) => return Err("memory backend: backend=file needs path=".into()),
        ("anon" | "memfd", Some(_)) => {
            return Err("memory backend: path= is only for backend=file".into())
        }
        (other, _) => {
            return Err(format!(
                "memory backend: backend='{other}' is not anon, memfd or file"
            ))
        }
    };
    m.shared = shared.unwrap_or(m.kind == BackendKind::Memfd);
    if m.shared && m.kind == BackendKind::Anon {
        return Err("memory backend: shared=on needs backend=memfd or backend=file".into());
    }
    if let Some(n) = threads {
        if !m.prealloc {
            return Err("memory backend: prealloc-threads needs prealloc=on".into());
        }
        m.prealloc_threads = n;
    } else if m.prealloc {
        m.prealloc_threads = 1;
    }
    if m.hugepages.is_some() && m.thp == Some(true) {
        return Err(
            "memory backend: thp=on does not apply to hugepages (they are huge already)".into(),
        );
    }
    Ok(m)
}

/// Refuse a RAM size (or region length) that is not whole huge pages.
pub fn check_huge_multiple(size: u64, page: HugePageSize, what: &str) -> Result<(), String> {
    if size.is_multiple_of(page.bytes()) {
        Ok(())
    } else {
        Err(format!(
            "{what} {} MiB is not a multiple of the {} huge page size",
            size >> 20,
            page.name()
        ))
    }
}

/// The one-line shortfall message, or None when `free - reserved` covers `size`.
pub fn huge_page_shortfall(
    size: u64,
    page: HugePageSize,
    free: u64,
    reserved: u64,
) -> Option<String> {
    let needed = size.div_ceil(page.bytes());
    let available = free.saturating_sub(reserved);
    (available < needed).then(|| {
        let knob = if page == HugePageSize::Size2M {
            "/proc/sys/vm/nr_hugepages".to_string()
        } else {
            format!("{}/nr_hugepages", page.sysfs_dir().display())
        };
        format!(
            "--memory {} MiB with {} huge pages needs {needed} pages; the host has {available} \
             free (echo {needed} > {knob})",
            size >> 20,
            page.name()
        )
    })
}

fn read_count(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: not a number", path.display()))
}

/// Check the host's pool of `page`-sized huge pages can back `size` bytes.
pub fn check_huge_page_pool(size: u64, page: HugePageSize) -> Result<(), String> {
    let dir = page.sysfs_dir();
    if !dir.is_dir() {
        return Err(format!(
            "this host has no {} huge pages ({} does not exist)",
            page.name(),
            dir.display()
        ));
    }
    let free = read_count(&dir.join("free_hugepages"))?;
    let reserved = read_count(&dir.join("resv_hugepages"))?;
    match huge_page_shortfall(size, page, free, reserved) {
        Some(msg) => Err(msg),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_backend() {
        assert!(parse_memory_backend("").unwrap().is_default());
        assert!(parse_memory_backend("backend=anon").unwrap().is_default());
        let m = parse_memory_backend("backend=memfd,hugepages=2M,prealloc=on").unwrap();
        assert_eq!(m.kind, BackendKind::Memfd);
        assert!(m.shared && m.prealloc);
        assert_eq!(m.prealloc_threads, 1);
        assert_eq!(m.hugepages, Some(HugePageSize::Size2M));
        let m = parse_memory_backend("path=/dev/hugepages,hugepages=1G,shared=off").unwrap();
        assert_eq!(m.kind, BackendKind::File("/dev/hugepages".into()));
        assert!(!m.shared);
        let m = parse_memory_backend("prealloc=on,prealloc-threads=2,thp=off").unwrap();
        assert_eq!((m.prealloc_threads, m.thp), (2, Some(false)));
    }

    #[test]
    fn refuses_bad_specs_with_a_reason() {
        for (spec, why) in [
            ("backend=disk", "not anon, memfd or file"),
            ("backend=file", "needs path="),
            ("backend=memfd,path=/x", "only for backend=file"),
            ("hugepages=4M", "not 2M or 1G"),
            ("prealloc-threads=2", "needs prealloc=on"),
            ("prealloc=on,prealloc-threads=0", "1 to 256"),
            ("shared=on", "needs backend=memfd"),
            ("thp=maybe", "not on or off"),
            ("colour=red", "unknown key 'colour'"),
            ("memfd", "not key=value"),
            ("hugepages=2M,thp=on", "huge already"),
        ] {
            let err = parse_memory_backend(spec).unwrap_err();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[test]
    fn shortfall_arithmetic() {
        let msg = huge_page_shortfall(1 << 30, HugePageSize::Size2M, 100, 0).unwrap();
        assert_eq!(
            msg,
            "--memory 1024 MiB with 2 MiB huge pages needs 512 pages; the host has 100 free \
             (echo 512 > /proc/sys/vm/nr_hugepages)"
        );
        // Pages reserved by other mappings are not free for us.
        let msg = huge_page_shortfall(1 << 30, HugePageSize::Size2M, 512, 10).unwrap();
        assert!(msg.contains("has 502 free"), "{msg}");
        assert!(huge_page_shortfall(1 << 30, HugePageSize::Size2M, 512, 0).is_none());
        let msg = huge_page_shortfall(2 << 30, HugePageSize::Size1G, 0, 0).unwrap();
        assert!(msg.contains("needs 2 pages; the host has 0 free"), "{msg}");
        assert!(msg.contains("hugepages-1048576kB/nr_hugepages"), "{msg}");
    }

    #[test]
    fn sizes_must_be_whole_huge_pages() {
        check_huge_multiple(4 << 20, HugePageSize::Size2M, "--memory").unwrap();
        let err = check_huge_multiple(3 << 20, HugePageSize::Size2M, "--memory").unwrap_err();
        assert!(
            err.contains("--memory 3 MiB is not a multiple of the 2 MiB"),
            "{err}"
        );
    }
}
