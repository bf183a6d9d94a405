//! `disk` pools: a whole block device with a GPT label; each partition is
//! a volume, named as the kernel names it (`vda1`, `loop0p2`), at
//! `/dev/<name>`.
//!
//! The label is read and written by `disk/gpt.rs`; the kernel learns of each
//! change through BLKPG (add or delete one partition), so partitions in
//! use elsewhere on the disk never stop a change, and a partition in use
//! cannot be deleted (the kernel refuses). A loop device must be attached
//! with partition scanning (`losetup -P`), or the kernel keeps none.

mod gpt;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use virtxml::{Permissions, Pool, PoolSpace, Volume, VolumeFormat};

use super::blockdev::{self, host};
use super::{BuildMode, StorageError, VolumeInfo};
use gpt::{Label, Partition};

/// A `disk` pool's device.
#[derive(Debug, Clone)]
pub struct DiskPool {
    device: PathBuf,
}

/// The open device with what the kernel calls it and its label.
struct Opened {
    file: File,
    name: String,
    size: u64,
    sector: u32,
}

impl DiskPool {
    /// The pool `pool` defines: one `source/device`, label `gpt`, and a
    /// target path that is `/dev` (or none).
    pub fn new(pool: &Pool) -> Result<DiskPool, StorageError> {
        let device = match pool.source.devices.as_slice() {
            [one] => PathBuf::from(one),
            _ => {
                return Err(StorageError::Invalid(format!(
                    "disk pool '{}' needs exactly one <source><device path='...'/>",
                    pool.name
                )))
            }
        };
        if let Some(f) = pool.source.format.as_deref().filter(|f| *f != "gpt") {
            return Err(StorageError::Invalid(format!(
                "disk pool label '{f}' is not supported: Vireo writes gpt only"
            )));
        }
        if let Some(t) = pool.target.path.as_deref().filter(|t| *t != "/dev") {
            return Err(StorageError::Invalid(format!(
                "a disk pool's target path is /dev, not {t}: its volumes are the kernel's partition devices"
            )));
        }
        Ok(DiskPool { device })
    }

    /// Opens the device, checking it is a whole disk whose partitions the
    /// kernel keeps.
    fn open(&self, write: bool) -> Result<Opened, StorageError> {
        let rdev = blockdev::block_device(&self.device)?;
        let name = blockdev::kernel_name(rdev)?;
        if blockdev::is_partition(&name) {
            return Err(StorageError::Invalid(format!(
                "source device {} is a partition ({name}): a disk pool takes a whole disk",
                self.device.display()
            )));
        }
        if !blockdev::scans_partitions(&name) {
            return Err(StorageError::Invalid(format!(
                "the kernel keeps no partitions on {name}: attach it with `losetup --partscan` (-P)"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.device)
            .map_err(|e| host(&self.device, e))?;
        let (size, sector) = blockdev::geometry(&file, &self.device)?;
        Ok(Opened {
            file,
            name,
            size,
            sector,
        })
    }

    fn label(&self, o: &Opened) -> Result<Label, StorageError> {
        match Label::read(&o.file, o.size, o.sector) {
            Ok(Some(l)) => Ok(l),
            Ok(None) => {
                let found = blockdev::probe(&self.device)?;
                Err(StorageError::Invalid(if found.is_empty() {
                    format!(
                        "source device {} has no GPT label: pool-build writes one",
                        self.device.display()
                    )
                } else {
                    format!(
                        "source device {} holds {}, not a GPT label: pool-build --overwrite replaces it",
                        self.device.display(),
                        found.describe()
                    )
                }))
            }
            Err(e) => Err(StorageError::Invalid(format!(
                "source device {}: {e}",
                self.device.display()
            ))),
        }
    }

    /// `pool-build`: writes a new, empty GPT label; without `--overwrite`
    /// only on a device that carries no signature at all, as libvirt.
    pub fn build(&self, mode: BuildMode) -> Result<(), StorageError> {
        let o = self.open(true)?;
        if mode != BuildMode::Overwrite {
            let found = blockdev::probe(&self.device)?;
            if !found.is_empty() {
                return Err(StorageError::Conflict(format!(
                    "source device {} already holds {}: pool-build --overwrite replaces it",
                    self.device.display(),
                    found.describe()
                )));
            }
        }
        let label = Label::new(o.size, o.sector).map_err(StorageError::Invalid)?;
        label.write(&o.file).map_err(|e| host(&self.device, e))?;
        reread(&o.file).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => StorageError::Conflict(format!(
                "the new label is written, but a partition of {} is in use, so the kernel keeps the old ones until it is free",
                self.device.display()
            )),
            _ => host(&self.device, e),
        })
    }

    /// Whether the pool can start, or is still up: a whole disk with a
    /// sound GPT label.
    pub fn check(&self) -> Result<(), StorageError> {
        let o = self.open(false)?;
        self.label(&o).map(|_| ())
    }

    /// `pool-delete`: libvirt leaves the device as it is; so does Vireo
    /// (its partitions are volumes, deleted one by one).
    pub fn delete(&self) -> Result<(), StorageError> {
        let o = self.open(false)?;
        let label = self.label(&o)?;
        if !label.partitions().is_empty() {
            return Err(StorageError::Conflict(format!(
                "{} still has partitions: delete its volumes first",
                self.device.display()
            )));
        }
        Ok(())
    }

    /// The device's size, what partitions use, and what is free for new
    /// ones, as libvirt reports a disk pool.
    pub fn space(&self) -> Result<PoolSpace, StorageError> {
        let o = self.open(false)?;
        let l = self.label(&o)?;
        let used: u64 = l.partitions().iter().map(Partition::sectors).sum();
        let free: u64 = l.free_extents().iter().map(|e| e.1).sum();
        Ok(PoolSpace {
            capacity: o.size,
            allocation: used * l.sector(),
            available: free * l.sector(),
        })
    }

    /// Every partition, by number.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let o = self.open(false)?;
        let l = self.label(&o)?;
        Ok(l.partitions()
            .iter()
            .map(|p| info(&o.name, p, l.sector()))
            .collect())
    }

    /// The partition called `name`.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, StorageError> {
        let o = self.open(false)?;
        let l = self.label(&o)?;
        let p = number(&o.name, name)
            .and_then(|n| l.partition(n))
            .ok_or_else(|| no_volume(name))?;
        Ok(info(&o.name, &p, l.sector()))
    }

    /// `vol-create`: a new partition of the volume's capacity. Its name
    /// must be the one the kernel will give it (libvirt's rule), so the
    /// name is never a surprise afterwards.
    pub fn create(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        if vol.format.is_some_and(|f| f != VolumeFormat::Raw) {
            return Err(StorageError::Invalid(
                "a disk pool's volumes are partitions, which hold raw data: use format raw".into(),
            ));
        }
        if vol.backing.is_some() {
            return Err(StorageError::Invalid(
                "a partition cannot have a backing volume".into(),
            ));
        }
        if vol.permissions != Permissions::default() {
            return Err(StorageError::Invalid(
                "a partition's device node permissions are not set by Vireo: leave <permissions> out".into(),
            ));
        }
        if vol.capacity == 0 {
            return Err(StorageError::Invalid(
                "a partition needs a capacity above 0".into(),
            ));
        }
        let o = self.open(true)?;
        let mut l = self.label(&o)?;
        let next = l.next_number().ok_or_else(|| {
            StorageError::Invalid("every entry of the GPT label is in use".into())
        })?;
        let expected = partition_name(&o.name, next);
        if vol.name != expected {
            return Err(StorageError::Invalid(format!(
                "a disk pool's volumes are named after their partitions: the next one is '{expected}', not '{}'",
                vol.name
            )));
        }
        let p = l
            .add(vol.capacity, &vol.name)
            .map_err(|e| StorageError::Invalid(format!("volume '{}': {e}", vol.name)))?;
        l.write(&o.file).map_err(|e| host(&self.device, e))?;
        if let Err(e) = blkpg(&o.file, BLKPG_ADD_PARTITION, &p, l.sector()) {
            // Undo, so the label and the kernel agree again.
            l.remove(p.number);
            let undone = l.write(&o.file);
            return Err(StorageError::Host(format!(
                "the kernel refused partition {}: {e}{}",
                expected,
                if undone.is_err() {
                    " (and the label could not be restored)"
                } else {
                    ""
                }
            )));
        }
        Ok(info(&o.name, &p, l.sector()))
    }

    /// `vol-create-from` and `vol-clone` into this pool are refused: a
    /// new partition is visible from the moment it is made, so a copy
    /// cut short would leave a half volume. A partition can be the
    /// source of a copy into a `dir` or `fs` pool.
    pub fn create_from(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        Err(StorageError::Invalid(format!(
            "cannot copy into disk pool volume '{}': a partition is visible before the copy ends; copy into a dir or fs pool",
            vol.name
        )))
    }

    /// `vol-wipe`: zeroes the whole partition.
    pub fn wipe(
        &self,
        name: &str,
        algorithm: super::wipe::Algorithm,
    ) -> Result<VolumeInfo, StorageError> {
        let v = self.volume(name)?;
        super::wipe::wipe(&v.path, algorithm)?;
        Ok(v)
    }

    /// `vol-delete`: the kernel drops the partition first (refused while
    /// anything holds it open), then the label forgets it.
    pub fn delete_volume(&self, name: &str) -> Result<(), StorageError> {
        let o = self.open(true)?;
        let mut l = self.label(&o)?;
        let p = number(&o.name, name)
            .and_then(|n| l.partition(n))
            .ok_or_else(|| no_volume(name))?;
        match blkpg(&o.file, BLKPG_DEL_PARTITION, &p, l.sector()) {
            Ok(()) => {}
            // The kernel did not know it (the table was changed behind
            // the daemon's back): the label is what counts.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                return Err(StorageError::Conflict(format!(
                    "storage volume '{name}' is in use (open by a process)"
                )))
            }
            Err(e) => return Err(host(&self.device, e)),
        }
        l.remove(p.number);
        l.write(&o.file).map_err(|e| host(&self.device, e))
    }

    /// `vol-resize` is not offered for partitions.
    pub fn resize(
        &self,
        name: &str,
        _capacity: u64,
        _shrink: bool,
    ) -> Result<VolumeInfo, StorageError> {
        self.volume(name)?;
        Err(StorageError::Invalid(
            "resizing a partition is not supported: delete the volume and create it again".into(),
        ))
    }
}

/// The kernel's name of partition `n` of disk `disk`: a `p` between when
/// the disk's name ends in a digit (`loop0p1`, `nvme0n1p1`, but `vda1`).
fn partition_name(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

/// The partition number a volume name stands for on `disk`.
fn number(disk: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(disk)?;
    let digits = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        rest.strip_prefix('p')?
    } else {
        rest
    };
    if digits.is_empty() || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn info(disk: &str, p: &Partition, sector: u64) -> VolumeInfo {
    let name = partition_name(disk, p.number);
    let bytes = p.sectors() * sector;
    VolumeInfo {
        path: Path::new("/dev").join(&name),
        name,
        format: VolumeFormat::Raw,
        capacity: bytes,
        allocation: bytes,
        physical: bytes,
        backing: None,
    }
}

fn no_volume(name: &str) -> StorageError {
    StorageError::NotFound(format!("no storage volume with matching name '{name}'"))
}

const BLKRRPART: libc::c_ulong = 0x125F;
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;

/// `struct blkpg_partition` of <linux/blkpg.h>.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// Tells the kernel of one partition added or deleted.
fn blkpg(disk: &File, op: libc::c_int, p: &Partition, sector: u64) -> std::io::Result<()> {
    let bad = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let mut part = BlkpgPartition {
        start: i64::try_from(p.first * sector).map_err(bad)?,
        length: i64::try_from(p.sectors() * sector).map_err(bad)?,
        pno: i32::try_from(p.number).map_err(bad)?,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgArg {
        op,
        flags: 0,
        datalen: libc::c_int::try_from(std::mem::size_of::<BlkpgPartition>()).map_err(bad)?,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: BLKPG reads the argument struct and the partition struct it
    // points at, both alive for the call.
    if unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG, &mut arg) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to read the whole table again (after a new label).
fn reread(disk: &File) -> std::io::Result<()> {
    // The label was written through the same descriptor; the kernel reads
    // it through the page cache, which is now current.
    // SAFETY: BLKRRPART takes no argument.
    if unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_name("vda", 1), "vda1");
        assert_eq!(partition_name("loop0", 3), "loop0p3");
        assert_eq!(partition_name("nvme0n1", 2), "nvme0n1p2");
        assert_eq!(number("loop0", "loop0p3"), Some(3));
        assert_eq!(number("vda", "vda12"), Some(12));
        for bad in [
            "loop03", "loop0p", "loop0p03", "vdb1", "vda", "vda1x", "loop0p-1",
        ] {
            let disk = if bad.starts_with("loop") {
                "loop0"
            } else {
                "vda"
            };
            assert_eq!(number(disk, bad), None, "{bad}");
        }
    }

    #[test]
    fn definitions_are_checked_before_any_device_is_touched() {
        let xml = |target: &str, format: &str| {
            format!(
                "<pool type='disk'><name>d</name><source><device path='/dev/vdz'/>\
                 <format type='{format}'/></source>{target}</pool>"
            )
        };
        let p = Pool::parse(&xml("<target><path>/dev</path></target>", "gpt"))
            .unwrap()
            .pool;
        assert!(DiskPool::new(&p).is_ok());
        let p = Pool::parse(&xml("<target><path>/srv</path></target>", "gpt"))
            .unwrap()
            .pool;
        assert!(DiskPool::new(&p).unwrap_err().to_string().contains("/dev"));
    }
}
