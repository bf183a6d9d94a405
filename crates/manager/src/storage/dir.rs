//! `dir` pools: a directory of image files, one volume each.
//!
//! A new volume is made under a hidden temporary name and linked into
//! place, so a volume is either whole or absent, and an existing one of
//! the same name is never touched. Files whose names start with `.` are
//! not volumes (they are ours in the making, or the user's).

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use block::qcow2::header::Header;
use block::ImageFormat;
use virtxml::{BackingStore, Permissions, Pool, PoolSpace, Volume, VolumeFormat};

use super::{copy, wipe, StorageError, VolumeInfo};

/// A `dir` pool's directory.
#[derive(Debug, Clone)]
pub struct DirPool {
    path: PathBuf,
}

/// The suffix of a volume in the making (after a leading `.`).
const TEMP_SUFFIX: &str = ".vireo-new";

/// Largest qcow2 cluster: the most of a file read to decode its header.
const MAX_HEADER_READ: u64 = 2 << 20;

impl DirPool {
    /// The pool `pool` defines (its `target/path`).
    pub fn new(pool: &Pool) -> Result<DirPool, StorageError> {
        let path = pool.target.path.as_ref().ok_or_else(|| {
            StorageError::Invalid(format!("pool '{}' has no target path", pool.name))
        })?;
        Ok(DirPool {
            path: PathBuf::from(path),
        })
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `pool-build`: makes the directory (and its parents) with the
    /// definition's permissions.
    pub fn build(&self, perms: &Permissions) -> Result<(), StorageError> {
        if let Ok(m) = fs::symlink_metadata(&self.path) {
            if !m.is_dir() {
                return Err(StorageError::Conflict(format!(
                    "{} exists and is not a directory",
                    self.path.display()
                )));
            }
        }
        fs::create_dir_all(&self.path).map_err(|e| host(&self.path, e))?;
        apply(&self.path, perms)
    }

    /// Whether the pool can start: its directory exists and is one.
    pub fn check(&self) -> Result<(), StorageError> {
        match fs::metadata(&self.path) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Invalid(format!(
                "target path {} is not a directory",
                self.path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::NotFound(format!(
                    "target path {} does not exist (pool-build makes it)",
                    self.path.display()
                )))
            }
            Err(e) => Err(host(&self.path, e)),
        }
    }

    /// `pool-delete`: removes the directory, which must hold no volume.
    pub fn delete(&self) -> Result<(), StorageError> {
        // Free leases of volumes gone do not keep the directory.
        super::lease::remove_lease_dir(&self.path).map_err(|e| {
            StorageError::Conflict(format!("cannot remove the pool's volume leases: {e}"))
        })?;
        match fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                Err(StorageError::Conflict(format!(
                    "{} is not empty: delete its volumes first",
                    self.path.display()
                )))
            }
            Err(e) => Err(host(&self.path, e)),
        }
    }

    /// The filesystem's figures, as libvirt reports a `dir` pool's.
    pub fn space(&self) -> Result<PoolSpace, StorageError> {
        let st = statvfs(&self.path)?;
        let frsize = st.f_frsize;
        let capacity = st.f_blocks.saturating_mul(frsize);
        Ok(PoolSpace {
            capacity,
            allocation: capacity.saturating_sub(st.f_bfree.saturating_mul(frsize)),
            available: st.f_bavail.saturating_mul(frsize),
        })
    }

    /// Its volumes, by name. A file whose format Vireo cannot read (or
    /// that vanished meanwhile) is left out, as libvirt leaves out what
    /// it cannot open.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(|e| host(&self.path, e))? {
            let entry = entry.map_err(|e| host(&self.path, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                names.push(name);
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names {
            match self.volume(&name) {
                Ok(v) => out.push(v),
                Err(e) => tracing::debug!("pool {}: skipping {name}: {e}", self.path.display()),
            }
        }
        Ok(out)
    }

    /// One volume.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, StorageError> {
        let path = self.volume_path(name)?;
        let meta = fs::symlink_metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => no_volume(name),
            _ => host(&path, e),
        })?;
        if !meta.is_file() {
            return Err(no_volume(name));
        }
        inspect(name, &path, &meta)
    }

    /// `vol-create`: makes `vol` in the pool; refuses a name in use and
    /// a capacity beyond the pool's free space.
    pub fn create(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        self.create_with(vol, false)
    }

    /// [`DirPool::create`], a qcow2 volume's metadata preallocated if
    /// `prealloc_metadata` (before the volume appears under its name).
    /// The capacity is bounded by the pool's free space, as for any
    /// volume, which bounds the clusters mapped.
    pub fn create_with(
        &self,
        vol: &Volume,
        prealloc_metadata: bool,
    ) -> Result<VolumeInfo, StorageError> {
        let target = self.volume_path(&vol.name)?;
        if fs::symlink_metadata(&target).is_ok() {
            return Err(in_use(&vol.name));
        }
        let backing = match &vol.backing {
            Some(b) => Some(self.backing_size(b)?),
            None => None,
        };
        let capacity = match (vol.capacity, backing) {
            (0, Some(size)) => size,
            (c, _) => c,
        };
        let need = vol.allocation.unwrap_or(0).max(capacity);
        let available = self.space()?.available;
        if need > available {
            return Err(StorageError::Invalid(format!(
                "volume '{}' needs {need} bytes; pool has {available} free",
                vol.name
            )));
        }
        let temp = self.temp_path(&vol.name);
        let _ = fs::remove_file(&temp);
        let made = self
            .make(vol, capacity, &temp, prealloc_metadata)
            .and_then(|()| publish(vol, &temp, &target));
        self.settle(&vol.name, &temp, made)
    }

    /// `vol-create-from` and `vol-clone`: a new volume as `vol` defines
    /// it holding the guest data of `source` (converted between raw and
    /// qcow2, sparse). It is written under a hidden temporary name, synced,
    /// and linked into place only when whole, so a crash leaves no half
    /// volume (and [`DirPool::sweep`] removes the leftover). A `vol` with
    /// a backing store becomes a qcow2 overlay on `source` instead.
    pub fn create_from(
        &self,
        vol: &Volume,
        source: &VolumeInfo,
        how: super::CopyOptions,
    ) -> Result<VolumeInfo, StorageError> {
        let target = self.volume_path(&vol.name)?;
        if fs::symlink_metadata(&target).is_ok() {
            return Err(in_use(&vol.name));
        }
        // Never smaller than the source (libvirt's rule too).
        let capacity = vol.capacity.max(source.capacity);
        if how.prealloc_metadata && vol.format != Some(VolumeFormat::Qcow2) {
            return Err(StorageError::Invalid(format!(
                "metadata preallocation is for qcow2 volumes; volume '{}' is {}",
                vol.name,
                vol.format.unwrap_or(VolumeFormat::Raw).as_str()
            )));
        }
        if how.reflink {
            return self.clone_blocks(vol, source, capacity, &target);
        }
        if let Some(b) = &vol.backing {
            return self.overlay(vol, b, source, capacity);
        }
        let available = self.space()?.available;
        let need = vol.allocation.unwrap_or(0).max(source.allocation);
        if need > available {
            return Err(StorageError::Invalid(format!(
                "volume '{}' needs about {need} bytes; pool has {available} free",
                vol.name
            )));
        }
        let format = vol.format.unwrap_or(VolumeFormat::Raw);
        let src = copy::open_source(&source.path, image_format(source.format))?;
        let temp = self.temp_path(&vol.name);
        let _ = fs::remove_file(&temp);
        let made = self
            .make(vol, capacity, &temp, how.prealloc_metadata)
            .and_then(|()| {
                let dst = copy::open_destination(&temp, image_format(format))?;
                let stats = copy::copy(src.as_ref(), dst.as_ref())
                    .map_err(|e| copy::describe(e, &source.path, &target))?;
                drop(dst);
                tracing::info!(
                    "copied {} into {}: {} bytes read, {} written",
                    source.path.display(),
                    target.display(),
                    stats.read,
                    stats.written
                );
                fs::File::open(&temp)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| host(&temp, e))?;
                publish(vol, &temp, &target)
            });
        self.settle(&vol.name, &temp, made)
    }

    /// `--reflink`: a raw volume sharing every block of the raw volume
    /// `source` (FICLONE: a copy-on-write clone, as `cp --reflink=always`
    /// makes), then grown to `capacity`. As libvirt's, it fails rather
    /// than copy: the source or the new volume not raw, an overlay asked
    /// for, or a filesystem (or a pair of them) that cannot share blocks.
    fn clone_blocks(
        &self,
        vol: &Volume,
        source: &VolumeInfo,
        capacity: u64,
        target: &Path,
    ) -> Result<VolumeInfo, StorageError> {
        let refuse = |why: String| StorageError::Invalid(format!("--reflink: {why}"));
        if vol.backing.is_some() {
            return Err(refuse(
                "a volume with a backingStore is an overlay, not a clone".into(),
            ));
        }
        let format = vol.format.unwrap_or(VolumeFormat::Raw);
        if source.format != VolumeFormat::Raw || format != VolumeFormat::Raw {
            return Err(refuse(format!(
                "only a raw volume is cloned into a raw one (the input is {}, the new volume {})",
                source.format.as_str(),
                format.as_str()
            )));
        }
        let src = fs::File::open(&source.path).map_err(|e| host(&source.path, e))?;
        let temp = self.temp_path(&vol.name);
        let _ = fs::remove_file(&temp);
        let made = (|| {
            let dst = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)
                .map_err(|e| host(&temp, e))?;
            // SAFETY: FICLONE reads the source descriptor (an int) from
            // the argument; both descriptors are ours and open.
            let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) };
            if r != 0 {
                let e = std::io::Error::last_os_error();
                return Err(refuse(format!(
                    "{} and {} cannot share blocks ({e}): reflinks need one filesystem that has them (btrfs, XFS with reflink=1)",
                    source.path.display(),
                    self.path.display()
                )));
            }
            if capacity > source.capacity {
                dst.set_len(capacity).map_err(|e| host(&temp, e))?;
            }
            dst.sync_all().map_err(|e| host(&temp, e))?;
            publish(vol, &temp, target)
        })();
        self.settle(&vol.name, &temp, made)
    }

    /// The end of making a volume under a temporary name: the temporary
    /// file goes whatever happened; when `made` succeeded the directory
    /// entry is synced and the new volume read back.
    fn settle(
        &self,
        name: &str,
        temp: &Path,
        made: Result<(), StorageError>,
    ) -> Result<VolumeInfo, StorageError> {
        let _ = fs::remove_file(temp);
        made?;
        sync_dir(&self.path)?;
        self.volume(name)
    }

    /// A qcow2 overlay whose backing store is `source`: the volume reads
    /// as `source` does without a copy. A backing store naming another
    /// image is refused, since the new volume would not hold `source`'s
    /// data.
    fn overlay(
        &self,
        vol: &Volume,
        backing: &BackingStore,
        source: &VolumeInfo,
        capacity: u64,
    ) -> Result<VolumeInfo, StorageError> {
        let same = block::FileId::of(Path::new(&backing.path)).is_some()
            && block::FileId::of(Path::new(&backing.path)) == block::FileId::of(&source.path);
        if !same {
            return Err(StorageError::Invalid(format!(
                "the new volume's backingStore {} is not the input volume {}: an overlay on it would not hold the input's data",
                backing.path,
                source.path.display()
            )));
        }
        if vol.format == Some(VolumeFormat::Raw) {
            return Err(StorageError::Invalid(
                "a volume with a backingStore is a qcow2 overlay: its format cannot be raw".into(),
            ));
        }
        let mut overlay = vol.clone();
        overlay.format = Some(VolumeFormat::Qcow2);
        overlay.capacity = capacity;
        self.create(&overlay)
    }

    /// `vol-wipe`: zeroes the whole file (see [`super::wipe`]).
    pub fn wipe(&self, name: &str, algorithm: wipe::Algorithm) -> Result<VolumeInfo, StorageError> {
        let v = self.volume(name)?;
        wipe::wipe(&v.path, algorithm)?;
        self.volume(name)
    }

    /// Removes what a daemon killed while making a volume left behind
    /// (hidden temporary files of ours); called when the pool starts and
    /// when a restarted daemon finds it active.
    pub fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => tracing::warn!(
                        "pool {}: removed {name}, an unfinished volume",
                        self.path.display()
                    ),
                    Err(e) => tracing::warn!("pool {}: {name}: {e}", self.path.display()),
                }
            }
        }
    }

    fn temp_path(&self, name: &str) -> PathBuf {
        self.path.join(format!(".{name}{TEMP_SUFFIX}"))
    }

    /// Writes the new image at `temp` (a qcow2 one with its metadata
    /// preallocated if `prealloc_metadata`).
    fn make(
        &self,
        vol: &Volume,
        capacity: u64,
        temp: &Path,
        prealloc_metadata: bool,
    ) -> Result<(), StorageError> {
        match vol.format.unwrap_or(VolumeFormat::Raw) {
            VolumeFormat::Raw => {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(temp)
                    .map_err(|e| host(temp, e))?;
                file.set_len(capacity).map_err(|e| host(temp, e))?;
                if let Some(a) = vol.allocation.filter(|a| *a > 0) {
                    fallocate(&file, a).map_err(|e| host(temp, e))?;
                }
                file.sync_all().map_err(|e| host(temp, e))
            }
            VolumeFormat::Qcow2 => {
                let opts = block::qcow2::CreateOptions {
                    size: capacity,
                    version: if vol.compat.as_deref() == Some("0.10") {
                        2
                    } else {
                        3
                    },
                    backing_file: vol.backing.as_ref().map(|b| b.path.clone()),
                    backing_format: vol.backing.as_ref().map(|b| image_format(b.format)),
                    preallocate_metadata: prealloc_metadata,
                    ..block::qcow2::CreateOptions::default()
                };
                block::qcow2::create(temp, &opts).map_err(|e| StorageError::Invalid(e.to_string()))
            }
        }
    }

    /// The virtual size of a backing image, which must exist and be of
    /// the stated format.
    fn backing_size(&self, b: &BackingStore) -> Result<u64, StorageError> {
        let path = Path::new(&b.path);
        let meta = fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                StorageError::NotFound(format!("backing volume {} does not exist", b.path))
            }
            _ => host(path, e),
        })?;
        let found = inspect(&b.path, path, &meta)?;
        if found.format != b.format {
            return Err(StorageError::Invalid(format!(
                "backing volume {} is {}, not {}",
                b.path,
                found.format.as_str(),
                b.format.as_str()
            )));
        }
        Ok(found.capacity)
    }

    /// `vol-delete`. The caller makes sure no domain uses it.
    pub fn delete_volume(&self, name: &str) -> Result<(), StorageError> {
        let path = self.volume_path(name)?;
        self.volume(name)?;
        fs::remove_file(&path).map_err(|e| host(&path, e))?;
        sync_dir(&self.path)
    }

    /// `vol-resize`: to `capacity` bytes; smaller only when `shrink`.
    /// The image is opened (and locked) for writing, so one a running
    /// guest uses is refused.
    pub fn resize(
        &self,
        name: &str,
        capacity: u64,
        shrink: bool,
    ) -> Result<VolumeInfo, StorageError> {
        let current = self.volume(name)?;
        if capacity < current.capacity && !shrink {
            return Err(StorageError::Invalid(format!(
                "volume '{name}' is {} bytes: making it {capacity} needs --shrink (data past the new end is lost)",
                current.capacity
            )));
        }
        let grow = capacity.saturating_sub(current.capacity);
        let available = self.space()?.available;
        if current.format == VolumeFormat::Raw && grow > available {
            return Err(StorageError::Invalid(format!(
                "volume '{name}' would grow by {grow} bytes; pool has {available} free"
            )));
        }
        let disk = block::open(
            &current.path,
            &block::OpenOptions {
                read_only: false,
                direct: false,
                format: Some(image_format(current.format)),
                ..block::OpenOptions::default()
            },
        )
        .map_err(|e| StorageError::Conflict(e.to_string()))?;
        disk.resize(capacity)
            .map_err(|e| StorageError::Invalid(e.to_string()))?;
        disk.flush()
            .map_err(|e| StorageError::Host(e.to_string()))?;
        drop(disk);
        self.volume(name)
    }

    /// The path of volume `name`; a name that is not a file name is
    /// refused before it reaches the filesystem.
    fn volume_path(&self, name: &str) -> Result<PathBuf, StorageError> {
        virtxml::storage::volume::validate_volume_name(name).map_err(StorageError::Invalid)?;
        if name.starts_with('.') {
            return Err(StorageError::Invalid(format!(
                "volume name '{name}' starts with '.': such files are not volumes"
            )));
        }
        Ok(self.path.join(name))
    }
}

/// Reads what a volume file is, without locking it (a running guest may
/// hold it): the format from its first bytes, the size from its header.
fn inspect(name: &str, path: &Path, meta: &fs::Metadata) -> Result<VolumeInfo, StorageError> {
    let format = block::probe(path).map_err(|e| StorageError::Invalid(e.to_string()))?;
    let physical = meta.len();
    let allocation = meta.blocks().saturating_mul(512);
    let (format, capacity, backing) = match format {
        ImageFormat::Raw => (VolumeFormat::Raw, physical, None),
        ImageFormat::Qcow2 => {
            let header = read_header(path, physical)?;
            let backing = header.backing_file.as_ref().map(|p| BackingStore {
                path: p.clone(),
                format: header
                    .backing_format
                    .as_deref()
                    .and_then(VolumeFormat::parse)
                    .unwrap_or(VolumeFormat::Raw),
            });
            (VolumeFormat::Qcow2, header.size, backing)
        }
    };
    Ok(VolumeInfo {
        name: name.to_string(),
        path: path.to_path_buf(),
        format,
        capacity,
        allocation,
        physical,
        backing,
    })
}

/// A qcow2 header: its first cluster read (at most [`MAX_HEADER_READ`]).
fn read_header(path: &Path, len: u64) -> Result<Header, StorageError> {
    let mut file = fs::File::open(path).map_err(|e| host(path, e))?;
    let mut first = vec![0u8; 4096.min(usize::try_from(len).unwrap_or(4096))];
    file.read_exact(&mut first).map_err(|e| host(path, e))?;
    // cluster_bits sits at byte 20; read the whole first cluster.
    let bits = first
        .get(20..24)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    let cluster = 1u64.checked_shl(bits).unwrap_or(0).min(MAX_HEADER_READ);
    let want = cluster.min(len);
    if want > first.len() as u64 {
        let mut rest = vec![0u8; usize::try_from(want).unwrap_or(0) - first.len()];
        file.read_exact(&mut rest).map_err(|e| host(path, e))?;
        first.extend_from_slice(&rest);
    }
    Header::parse(&first, len)
        .map_err(|e| StorageError::Invalid(format!("{}: {e}", path.display())))
}

fn image_format(f: VolumeFormat) -> ImageFormat {
    match f {
        VolumeFormat::Raw => ImageFormat::Raw,
        VolumeFormat::Qcow2 => ImageFormat::Qcow2,
    }
}

/// Sets the mode, owner and group `perms` states on `path`.
fn apply(path: &Path, perms: &Permissions) -> Result<(), StorageError> {
    if let Some(mode) = perms.mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| host(path, e))?;
    }
    if perms.owner.is_some() || perms.group.is_some() {
        std::os::unix::fs::chown(path, perms.owner, perms.group).map_err(|e| host(path, e))?;
    }
    Ok(())
}

fn fallocate(file: &fs::File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: fallocate on an open descriptor we own, mode 0 (allocate).
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn statvfs(path: &Path) -> Result<libc::statvfs, StorageError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StorageError::Invalid(format!("{} contains a NUL", path.display())))?;
    // SAFETY: statvfs is plain data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } < 0 {
        return Err(host(path, std::io::Error::last_os_error()));
    }
    Ok(st)
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| host(dir, e))
}

/// A finished temporary file `temp` given `vol`'s permissions and its
/// name `target`. A hard link fails if the name was taken meanwhile:
/// nothing existing is ever replaced.
fn publish(vol: &Volume, temp: &Path, target: &Path) -> Result<(), StorageError> {
    apply(temp, &vol.permissions)?;
    fs::hard_link(temp, target).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => in_use(&vol.name),
        _ => host(target, e),
    })
}

/// `FICLONE` (linux/fs.h: `_IOW(0x94, 9, int)`).
const FICLONE: libc::c_ulong = 0x4004_9409;

fn host(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Host(format!("{}: {e}", path.display()))
}

fn no_volume(name: &str) -> StorageError {
    StorageError::NotFound(format!("no storage volume with matching name '{name}'"))
}

fn in_use(name: &str) -> StorageError {
    StorageError::Conflict(format!("storage volume name '{name}' already in use"))
}

#[cfg(test)]
mod tests;
