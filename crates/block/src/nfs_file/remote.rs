//! A file on an NFS export as the file an image format lives in (the
//! qcow2 driver's [`ImageFile`]), and how images on an export and their
//! backing files are opened.
//!
//! What NFSv3 cannot do as a host file does: there is no hole punching
//! (a freed cluster keeps its bytes, and what must read as zeroes is
//! written as zeroes), no host lock (as with raw NFS disks: nothing stops
//! a second writer on another host), no inode number (a chain is checked
//! for loops by URL). The file grows by writes past its end and shrinks by
//! SETATTR; a flush is a COMMIT.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nfs::{FileQueue, FileUrl, RemoteFile};

use super::{connect, remote, NfsDisk, TIMEOUT};
use crate::file::{iov_len, Iov};
use crate::image_file::ImageFile;
use crate::open_chain::{Chain, FileKey};
use crate::qcow2::Qcow2Disk;
use crate::{DirectFile, DiskImage, Error, ImageFormat, OpenOptions, Result};

/// One file on an export, read and written by an image format.
///
/// While its image opens, calls go straight to the connection on the
/// opening thread: the service thread of a [`FileQueue`] must not start
/// yet (a VMM opens its disks while it still has one thread, before it
/// confines itself). Once the image has opened ([`ImageFile::opened`]),
/// the connection moves to its queue and calls from many threads are in
/// flight at once.
#[derive(Debug)]
pub struct NfsFile {
    url: FileUrl,
    read_only: bool,
    /// The file's length as this process made it: nothing else writes
    /// the file while an image on it is open (the same promise a host
    /// lock would enforce), so no GETATTR is needed to know where a read
    /// runs past the end.
    len: AtomicU64,
    /// The connection until the image has opened.
    opening: Mutex<Option<RemoteFile>>,
    /// The connection afterwards.
    serving: OnceLock<FileQueue>,
}

impl NfsFile {
    /// Mount the export `url` names and open its file, each step bounded
    /// by `timeout`.
    pub fn open(url: &FileUrl, read_only: bool, timeout: Duration) -> Result<Self> {
        let mut file = connect(url, read_only, timeout)?;
        let len = file.stat().map_err(remote)?.size;
        Ok(Self {
            url: url.clone(),
            read_only,
            len: AtomicU64::new(len),
            opening: Mutex::new(Some(file)),
            serving: OnceLock::new(),
        })
    }

    /// Run a call on whichever connection the file has now.
    fn call<T>(
        &self,
        serving: impl FnOnce(&FileQueue) -> nfs::Result<T>,
        opening: impl FnOnce(&mut RemoteFile) -> nfs::Result<T>,
    ) -> Result<T> {
        let r = match self.serving.get() {
            Some(queue) => serving(queue),
            None => {
                let mut guard = self.opening.lock().unwrap_or_else(|e| e.into_inner());
                match (guard.as_mut(), self.serving.get()) {
                    (Some(file), _) => opening(file),
                    (None, Some(queue)) => serving(queue),
                    (None, None) => {
                        return Err(Error::Remote(format!(
                            "{}: the connection was not kept after a failed start",
                            self.url
                        )))
                    }
                }
            }
        };
        r.map_err(|e| {
            if e.is_transport() {
                tracing::warn!("{}: {e}", self.url);
            }
            remote(e)
        })
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// Note that the file now reaches at least `end`.
    fn grown_to(&self, end: u64) {
        self.len.fetch_max(end, Ordering::AcqRel);
    }
}

impl ImageFile for NfsFile {
    fn read_iov(&self, offset: u64, iovs: &[Iov]) -> Result<u64> {
        let total = iov_len(iovs);
        if total == 0 {
            return Ok(0);
        }
        let raw: Vec<(*mut u8, usize)> = iovs.iter().map(|v| (v.ptr, v.len)).collect();
        self.call(
            // SAFETY: every Iov is writable memory its owner keeps valid
            // and untouched for the request's duration, which spans this
            // call.
            |q| unsafe { q.read_raw(offset, &raw) },
            // SAFETY: as above.
            |f| unsafe { f.read_raw(offset, &raw) },
        )?;
        // libnfs zero-fills what lies past the end; report where the end
        // was, as a short pread would.
        let len = self.len.load(Ordering::Acquire);
        Ok(total.min(len.saturating_sub(offset)))
    }

    fn write_iov(&self, offset: u64, iovs: &[Iov]) -> Result<()> {
        self.writable()?;
        let total = iov_len(iovs);
        if total == 0 {
            return Ok(());
        }
        let gathered;
        let data: &[u8] = match iovs {
            // SAFETY: an Iov is readable for its length while the request
            // runs; libnfs only reads it.
            [one] => unsafe { std::slice::from_raw_parts(one.ptr, one.len) },
            _ => {
                // libnfs takes one buffer per WRITE: gather (a copy).
                let n = usize::try_from(total)
                    .map_err(|_| Error::Refused("request too large".into()))?;
                let mut buf = vec![0u8; n];
                crate::file::iov_copy_to(iovs, 0, &mut buf);
                gathered = buf;
                &gathered
            }
        };
        self.call(|q| q.write_at(offset, data), |f| f.write_at(offset, data))?;
        self.grown_to(offset + total);
        Ok(())
    }

    fn sync_data(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.call(FileQueue::fsync, RemoteFile::fsync)
    }

    fn len(&self) -> Result<u64> {
        Ok(self.len.load(Ordering::Acquire))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.writable()?;
        self.call(|q| q.truncate(len), |f| f.truncate(len))?;
        self.len.store(len, Ordering::Release);
        Ok(())
    }

    /// NFSv3 has no call that frees part of a file.
    fn punch_hole(&self, _offset: u64, _len: u64) -> Result<bool> {
        self.writable()?;
        Ok(false)
    }

    fn allocated_bytes(&self) -> Result<u64> {
        Ok(self.call(FileQueue::stat, RemoteFile::stat)?.allocated)
    }

    fn direct_file(&self) -> Option<DirectFile> {
        None
    }

    fn key(&self) -> Result<FileKey> {
        Ok(FileKey::Remote(self.url.to_string()))
    }

    /// Only a file beside the image on the same export, named relative to
    /// it (`base.qcow2`, `./base.qcow2`): the URL names an export and one
    /// file in its root, and the host's paths are not the server's.
    fn backing_location(image: &Path, name: &str) -> Result<PathBuf> {
        let refuse = |reason: &str| {
            Err(Error::BackingRefused {
                path: PathBuf::from(name),
                reason: format!(
                    "{reason}; an image on an NFS export reaches only a backing file beside it \
                     on the same export, named relative to it"
                ),
            })
        };
        let Some(image) = image.to_str() else {
            return refuse("the image's URL is not UTF-8");
        };
        if name.starts_with(crate::NFS_SCHEME) || name.contains("://") {
            return refuse("it is a URL");
        }
        if name.starts_with('/') {
            return refuse("it is an absolute host path, which the image's server does not see");
        }
        let mut file = name;
        while let Some(rest) = file.strip_prefix("./") {
            file = rest;
        }
        if file.is_empty() || file == "." || file == ".." {
            return refuse("it names no file");
        }
        if file.contains('/') {
            return refuse("it is in another directory");
        }
        if file.contains(['?', '\0', '\n']) {
            return refuse("it holds a character an nfs:// URL cannot carry");
        }
        let (base, args) = match image.split_once('?') {
            Some((b, a)) => (b, Some(a)),
            None => (image, None),
        };
        let Some((dir, _)) = base.rsplit_once('/') else {
            return refuse("the image's URL has no directory");
        };
        let url = match args {
            Some(a) => format!("{dir}/{file}?{a}"),
            None => format!("{dir}/{file}"),
        };
        FileUrl::parse(&url).map_err(remote)?;
        Ok(PathBuf::from(url))
    }

    fn open_backing(
        location: &Path,
        options: &OpenOptions,
        chain: &mut Chain,
    ) -> Result<Arc<dyn DiskImage>> {
        let url = location
            .to_str()
            .ok_or_else(|| Error::Refused("the backing file's URL is not UTF-8".into()))?;
        open_in_chain(url, options, chain)
    }

    fn opened(&self) -> Result<()> {
        let mut guard = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = guard.take() else {
            return Ok(());
        };
        let queue = FileQueue::start(file, |body| {
            confine::spawn(confine::ThreadKind::DiskIo, "nfs-io".into(), body)
        })
        .map_err(remote)?;
        // Only this thread moves the connection, under the lock: the cell
        // is empty.
        let _ = self.serving.set(queue);
        Ok(())
    }
}

/// Open the image `url` names on an export as one more image of `chain`
/// (its top, or a backing file of the image above): raw or qcow2 as
/// `options.format` says, never probed into a format. A probed raw disk
/// (no format given) refuses a file that starts as a qcow2 image. No host
/// lock is taken.
pub(crate) fn open_in_chain(
    url: &str,
    options: &OpenOptions,
    chain: &mut Chain,
) -> Result<Arc<dyn DiskImage>> {
    chain.check_depth()?;
    let parsed = FileUrl::parse(url).map_err(remote)?;
    let path = Path::new(url);
    let backing = chain.len() > 0;
    chain.enter_key(path, FileKey::Remote(parsed.to_string()))?;
    if backing {
        admit_backing(path, options)?;
    }
    match options.format {
        None if backing => Err(Error::BackingRefused {
            path: path.to_owned(),
            reason: "the image above does not record its format, and no format is probed over \
                     nfs:// (qemu-img rebase -u -F FORMAT sets it)"
                .into(),
        }),
        None => Ok(Arc::new(NfsDisk::open_unnamed(
            &parsed,
            options.read_only,
            true,
            TIMEOUT,
        )?)),
        Some(ImageFormat::Raw) => Ok(Arc::new(NfsDisk::open_unnamed(
            &parsed,
            options.read_only,
            false,
            TIMEOUT,
        )?)),
        Some(ImageFormat::Qcow2) => {
            let file = NfsFile::open(&parsed, options.read_only, TIMEOUT)?;
            Ok(Arc::new(Qcow2Disk::from_file(file, path, options, chain)?))
        }
    }
}

/// What [`crate::BackingPolicy`] says of a backing file on an export: its
/// directories are the host's, which no remote file lies in.
fn admit_backing(path: &Path, options: &OpenOptions) -> Result<()> {
    let refuse = |reason: &str| {
        Err(Error::BackingRefused {
            path: path.to_owned(),
            reason: reason.into(),
        })
    };
    if options.backing.deny_all {
        return refuse("backing files are not allowed");
    }
    if !options.backing.allowed_dirs.is_empty() {
        return refuse("it is on an NFS export, outside the allowed backing directories");
    }
    Ok(())
}
