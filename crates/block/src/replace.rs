//! Writing a new image over a path without ever damaging what is there
//! until the new image is complete: `vireo img create` and `convert`.
//!
//! The existing file (if any) is locked exclusively first, as a VM would
//! lock it, so an image some VM is using is refused with "in use" before
//! anything is written. The new image is built in a temporary file next
//! to the target and renamed over it only once it is complete; a failure
//! at any step leaves the old file byte for byte as it was.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::file::HostFile;
use crate::{Error, Result};

/// A new image being built for `target`; see the module documentation.
#[derive(Debug)]
pub struct Replacement {
    target: PathBuf,
    temp: PathBuf,
    /// The existing target, locked against every other user until the
    /// new file has replaced it.
    _old: Option<HostFile>,
    committed: bool,
}

/// The identity of a file: its device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
}

impl FileId {
    /// The identity of the file `path` names (following symlinks), or
    /// `None` when there is no such file.
    pub fn of(path: &Path) -> Option<FileId> {
        std::fs::metadata(path).ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

fn open_error(path: &Path, op: &'static str, e: std::io::Error) -> Error {
    Error::Open {
        path: path.to_owned(),
        source: Box::new(Error::io(op, e)),
    }
}

impl Replacement {
    /// Get ready to replace (or create) `target`: lock the existing file
    /// exclusively (failing with [`Error::InUse`] when a VM or another
    /// tool uses it) and create an empty temporary file beside it.
    pub fn begin(target: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let (real, old, mode) = match std::fs::metadata(target) {
            Ok(meta) => {
                if !meta.is_file() {
                    return Err(Error::Open {
                        path: target.to_owned(),
                        source: Box::new(Error::Refused(
                            "not a regular file (only regular files are replaced by a new image)"
                                .into(),
                        )),
                    });
                }
                // Replace the file a symlink names, not the link.
                let real =
                    std::fs::canonicalize(target).map_err(|e| open_error(target, "resolve", e))?;
                let lock = HostFile::open(&real, false, false).map_err(|e| match e {
                    e @ Error::InUse(_) => e,
                    e => Error::Open {
                        path: target.to_owned(),
                        source: Box::new(e),
                    },
                })?;
                let owner = (meta.uid(), meta.gid());
                (
                    real,
                    Some((lock, owner)),
                    meta.permissions().mode() & 0o7777,
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (target.to_owned(), None, 0),
            Err(e) => return Err(open_error(target, "stat", e)),
        };
        let dir = match real.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = real
            .file_name()
            .ok_or_else(|| open_error(target, "create", std::io::ErrorKind::InvalidInput.into()))?
            .to_string_lossy()
            .into_owned();
        let temp = dir.join(format!(
            ".{name}.vireo-new-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // A new file gets the mode any new file would (umask applied).
            .mode(if old.is_some() { 0o600 } else { 0o666 })
            .open(&temp);
        let file = match created {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(open_error(
                    target,
                    "create",
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("directory {} does not exist", dir.display()),
                    ),
                ));
            }
            Err(e) => return Err(open_error(target, "create", e)),
        };
        let (lock, owner) = old.map_or((None, None), |(l, o)| (Some(l), Some(o)));
        // From here on, dropping `new` removes the temporary file.
        let new = Self {
            target: real,
            temp,
            _old: lock,
            committed: false,
        };
        // Keep the old file's owner (when allowed to: as root) and mode, as
        // an overwrite in place would.
        if let Some((uid, gid)) = owner {
            let _ = std::os::unix::fs::fchown(&file, Some(uid), Some(gid));
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| open_error(target, "chmod", e))?;
        }
        Ok(new)
    }

    /// The temporary file to build the new image in.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The file that will be replaced (symlinks resolved).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Put the new image in place of the old one (one atomic rename) and
    /// make the rename durable.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.temp, &self.target)
            .map_err(|e| open_error(&self.target, "rename", e))?;
        self.committed = true;
        if let Some(dir) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                d.sync_all().map_err(|e| open_error(dir, "fsync", e))?;
            }
        }
        Ok(())
    }
}

impl Drop for Replacement {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
