//! What `fs` and `disk` pools ask of the host about a block device: that
//! it is one, its size and sector size, what signature it carries
//! (through util-linux's `blkid`), and where it is mounted (from
//! `/proc/self/mountinfo`).

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::StorageError;

/// The most of `/proc/self/mountinfo` read: far more than a host with
/// thousands of mounts has, and a bound on a hostile one.
const MAX_MOUNTINFO: u64 = 16 << 20;

/// The device number (`st_rdev`) of the block device at `path`, or one
/// line saying what it is instead.
pub fn block_device(path: &Path) -> Result<u64, StorageError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            StorageError::NotFound(format!("source device {} does not exist", path.display()))
        }
        _ => host(path, e),
    })?;
    if meta.file_type().is_block_device() {
        return Ok(meta.rdev());
    }
    let what = if meta.is_file() {
        "a regular file: attach it with `losetup --find --show --partscan FILE` and use the loop device"
    } else if meta.is_dir() {
        "a directory"
    } else {
        "not a block device"
    };
    Err(StorageError::Invalid(format!(
        "source device {} is {what}",
        path.display()
    )))
}

/// The kernel's name of device number `rdev` (`loop0`, `vda`), from sysfs.
pub fn kernel_name(rdev: u64) -> Result<String, StorageError> {
    let link = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(rdev),
        libc::minor(rdev)
    ));
    let target = fs::read_link(&link).map_err(|e| host(&link, e))?;
    target
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| StorageError::Host(format!("{} names no device", link.display())))
}

/// Whether `name` (a kernel name) is a partition rather than a whole disk.
pub fn is_partition(name: &str) -> bool {
    Path::new("/sys/class/block")
        .join(name)
        .join("partition")
        .exists()
}

/// Whether the kernel keeps partitions on disk `name` (a loop device
/// attached without partition scanning does not).
pub fn scans_partitions(name: &str) -> bool {
    fs::read_to_string(Path::new("/sys/block").join(name).join("partscan"))
        .map(|s| s.trim() == "1")
        .unwrap_or(true)
}

/// A device's size in bytes and its logical sector size.
pub fn geometry(file: &fs::File, path: &Path) -> Result<(u64, u32), StorageError> {
    const BLKSSZGET: libc::c_ulong = 0x1268;
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer we pass.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) } < 0 {
        return Err(host(path, std::io::Error::last_os_error()));
    }
    let mut sector: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer we pass.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut sector) } < 0 {
        return Err(host(path, std::io::Error::last_os_error()));
    }
    let sector = u32::try_from(sector)
        .ok()
        .filter(|s| s.is_power_of_two() && (512..=65536).contains(s))
        .ok_or_else(|| {
            StorageError::Host(format!(
                "{}: the kernel reports sector size {sector}",
                path.display()
            ))
        })?;
    Ok((size, sector))
}

/// What `blkid` finds on a device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    /// A filesystem (or other content) type: `ext4`, `xfs`, `swap`.
    pub kind: Option<String>,
    /// A partition table type: `gpt`, `dos`.
    pub table: Option<String>,
}

impl Signature {
    /// Whether the device carries anything at all.
    pub fn is_empty(&self) -> bool {
        self.kind.is_none() && self.table.is_none()
    }

    /// What it carries, for a message.
    pub fn describe(&self) -> String {
        match (&self.kind, &self.table) {
            (Some(k), _) => format!("a {k} filesystem"),
            (None, Some(t)) => format!("a {t} partition table"),
            (None, None) => "nothing".into(),
        }
    }
}

/// Probes `device`'s superblocks (not blkid's cache): `blkid -p`.
pub fn probe(device: &Path) -> Result<Signature, StorageError> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(device)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            StorageError::Host(format!("cannot run blkid (Debian package util-linux): {e}"))
        })?;
    // blkid exits 2 when it finds nothing to report.
    match out.status.code() {
        Some(0) => {}
        Some(2) => return Ok(Signature::default()),
        _ => {
            return Err(StorageError::Host(format!(
                "blkid {}: {}",
                device.display(),
                last_line(&out.stderr)
            )))
        }
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sig = Signature::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("TYPE=") {
            sig.kind = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("PTTYPE=") {
            sig.table = Some(v.to_string());
        }
    }
    Ok(sig)
}

/// One line of `/proc/self/mountinfo`, the fields the pools need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mounted device's number.
    pub rdev: u64,
    /// Where it is mounted.
    pub point: PathBuf,
    /// Its filesystem type.
    pub fstype: String,
    /// What was mounted, as the kernel names it (`/dev/vdb`,
    /// `server:/export`).
    pub source: String,
}

/// The mounts this process sees, in mount order.
pub fn mounts() -> Result<Vec<Mount>, StorageError> {
    let path = Path::new("/proc/self/mountinfo");
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_MOUNTINFO).read_to_string(&mut text))
        .map_err(|e| host(path, e))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`:
/// device at field 3, mount point at 5, type just after the `-`.
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let dev = fields.nth(2)?;
    let point = fields.nth(1)?;
    let mut rest = fields.skip_while(|f| *f != "-").skip(1);
    let fstype = rest.next()?;
    let source = rest.next()?;
    let (major, minor) = dev.split_once(':')?;
    Some(Mount {
        rdev: libc::makedev(major.parse().ok()?, minor.parse().ok()?),
        point: PathBuf::from(unescape(point)),
        fstype: fstype.to_string(),
        source: unescape(source),
    })
}

/// The kernel writes space, tab, newline and backslash in mount points as
/// `\ooo` octal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last non-empty line a tool printed, for a one-line error.
pub fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no message)")
        .trim()
        .to_string()
}

/// An I/O error on `path`, as one line.
pub fn host(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Host(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_device_point_and_type() {
        let m = parse_mountinfo_line(
            "36 35 7:3 / /srv/pool\\040a rw,noatime shared:1 - ext4 /dev/loop3 rw",
        )
        .unwrap();
        assert_eq!(m.rdev, libc::makedev(7, 3));
        assert_eq!(m.point, PathBuf::from("/srv/pool a"));
        assert_eq!(m.fstype, "ext4");
        assert_eq!(m.source, "/dev/loop3");
        assert!(parse_mountinfo_line("garbage").is_none());
        assert!(parse_mountinfo_line("1 2 x:y / /m rw - ext4 d rw").is_none());
    }

    #[test]
    fn escapes_that_are_not_octal_stay() {
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("end\\04"), "end\\04");
        assert_eq!(unescape("\\777"), "\\777");
    }

    #[test]
    fn a_regular_file_is_refused_with_the_way_to_attach_it() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = block_device(f.path()).unwrap_err().to_string();
        assert!(e.contains("losetup"), "{e}");
        let e = block_device(Path::new("/nonexistent/dev")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
