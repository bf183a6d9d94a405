//! The host file under an image: positioned vectored I/O straight from
//! [`IoBuf`] pointers, `O_DIRECT` alignment, OFD locks, hole punching.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::{Error, IoBuf, IoBufMut, Result};

/// Most iovecs one `preadv`/`pwritev` call takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Alignment used for `O_DIRECT` bounce buffers; covers 512 and 4096-byte
/// logical blocks.
const DIRECT_ALIGN: usize = 4096;

/// An open host file or block device.
#[derive(Debug)]
pub struct HostFile {
    file: File,
    direct: bool,
    /// Logical block size when `direct`; 1 otherwise.
    align: usize,
    block_device: bool,
    read_only: bool,
    /// QEMU's `cache=unsafe`: [`HostFile::sync_data`] does nothing (see
    /// [`crate::OpenOptions::unsafe_cache`]).
    unsafe_cache: bool,
}

/// One contiguous piece of memory for vectored I/O.
#[derive(Debug, Clone, Copy)]
pub struct Iov {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: an Iov is a memory range whose owner promised (through IoBuf or a
// host buffer) that it stays valid while the request runs, on any thread.
unsafe impl Send for Iov {}

impl Iov {
    pub fn from_bufs(bufs: &[IoBuf]) -> Vec<Iov> {
        bufs.iter()
            .map(|b| Iov {
                ptr: b.as_ptr().cast_mut(),
                len: b.len(),
            })
            .collect()
    }

    pub fn from_bufs_mut(bufs: &[IoBufMut]) -> Vec<Iov> {
        bufs.iter()
            .map(|b| Iov {
                ptr: b.as_mut_ptr(),
                len: b.len(),
            })
            .collect()
    }

    /// A range the kernel will write into.
    pub fn from_mut(buf: &mut [u8]) -> Iov {
        Iov {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// A range only ever read from.
    pub fn from_slice(buf: &[u8]) -> Iov {
        Iov {
            ptr: buf.as_ptr().cast_mut(),
            len: buf.len(),
        }
    }
}

/// Total length of `iovs`.
pub(crate) fn iov_len(iovs: &[Iov]) -> u64 {
    iovs.iter().map(|v| v.len as u64).sum()
}

/// The part `[start, start + len)` of the byte stream `iovs` describe.
pub(crate) fn iov_slice(iovs: &[Iov], start: u64, len: u64) -> Vec<Iov> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let end = start + len;
    for v in iovs {
        let v_end = pos + v.len as u64;
        if v_end > start && pos < end {
            let from = start.max(pos) - pos;
            let to = end.min(v_end) - pos;
            // from and to are within v.len, a usize.
            let from = usize::try_from(from).unwrap_or(0);
            let to = usize::try_from(to).unwrap_or(v.len);
            // wrapping_add: the pointer stays inside the caller's buffer.
            out.push(Iov {
                ptr: v.ptr.wrapping_add(from),
                len: to - from,
            });
        }
        pos = v_end;
        if pos >= end {
            break;
        }
    }
    out
}

/// Fill every byte of `iovs` with zero.
pub(crate) fn iov_zero(iovs: &[Iov]) {
    for v in iovs {
        // SAFETY: the range is writable memory the request owns (see Iov).
        unsafe { std::ptr::write_bytes(v.ptr, 0, v.len) };
    }
}

/// Copy `src` into the byte stream `iovs`, starting `at` bytes into it.
pub(crate) fn iov_copy_from(iovs: &[Iov], at: u64, src: &[u8]) {
    let mut done = 0usize;
    for v in iov_slice(iovs, at, src.len() as u64) {
        // SAFETY: `v` is writable request memory of v.len bytes; `src` has
        // at least done + v.len bytes since the slices cover src.len().
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(done), v.ptr, v.len) };
        done += v.len;
    }
}

/// Copy `dst.len()` bytes of the byte stream `iovs`, from `at`, into `dst`.
pub(crate) fn iov_copy_to(iovs: &[Iov], at: u64, dst: &mut [u8]) {
    let mut done = 0usize;
    for v in iov_slice(iovs, at, dst.len() as u64) {
        // SAFETY: `v` is readable request memory; `dst` has room (as above).
        unsafe { std::ptr::copy_nonoverlapping(v.ptr, dst.as_mut_ptr().add(done), v.len) };
        done += v.len;
    }
}

/// A heap buffer aligned for `O_DIRECT`.
pub(crate) struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Result<Self> {
        let layout = std::alloc::Layout::from_size_align(len.max(1), DIRECT_ALIGN)
            .map_err(|_| Error::InvalidImage(format!("buffer of {len} bytes")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::io(
                "allocate",
                std::io::Error::from(std::io::ErrorKind::OutOfMemory),
            ));
        }
        Ok(Self { ptr, len })
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is a live, initialised (zeroed) allocation of len bytes
        // owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Ok(layout) = std::alloc::Layout::from_size_align(self.len.max(1), DIRECT_ALIGN) {
            // SAFETY: allocated in new() with this very layout.
            unsafe { std::alloc::dealloc(self.ptr, layout) };
        }
    }
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}

fn to_iovecs(iovs: &[Iov]) -> Vec<libc::iovec> {
    iovs.iter()
        .filter(|v| v.len > 0)
        .map(|v| libc::iovec {
            iov_base: v.ptr.cast(),
            iov_len: v.len,
        })
        .collect()
}

fn off_t(offset: u64) -> Result<libc::off_t> {
    libc::off_t::try_from(offset).map_err(|_| Error::OutOfRange {
        offset,
        len: 0,
        size: i64::MAX as u64,
    })
}

/// How long a conflicting lock is looked at again before the image is
/// reported in use, and the first and longest wait between looks. A lock
/// can outlive its user for a moment: a child another thread is spawning
/// holds a copy of the fd until its exec (microseconds), and a VMM killed
/// with io_uring requests in flight is reaped before the kernel has torn
/// its ring down and let go of the file (measured: 3 of 150 SIGKILLs left
/// the lock held 4.7 to 7.8 ms after the reap; tests/disk_locks.rs). The
/// kernel drops that last reference from a worker thread, which a loaded
/// host can delay: 200 ms covers it many times over, and is still quick
/// to report an image that really is in use.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(200);
const LOCK_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(2);
const LOCK_MAX_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

impl HostFile {
    /// Open `path` and lock it: exclusively when writable, shared otherwise.
    pub fn open(path: &Path, read_only: bool, direct: bool) -> Result<Self> {
        let host = Self::open_unlocked(path, read_only, direct)?;
        host.lock_retrying(path)?;
        Ok(host)
    }

    /// Open `path` without locking it (the caller locks it with
    /// [`HostFile::lock_retrying`] once it knows it wants it).
    ///
    /// Only a regular file or a block device is opened. Anything else is
    /// refused before `open` (a FIFO would block it, a character device
    /// may act on being opened), and checked again on the open file, since
    /// the path may have changed in between. `O_NONBLOCK` makes that open
    /// return even if it is a FIFO by then; it is cleared afterwards.
    pub fn open_unlocked(path: &Path, read_only: bool, direct: bool) -> Result<Self> {
        let before = std::fs::metadata(path).map_err(|e| Error::io("open", e))?;
        image_kind(&before.file_type())?;
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(!read_only);
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY;
        if direct {
            flags |= libc::O_DIRECT;
        }
        opts.custom_flags(flags);
        let file = opts.open(path).map_err(|e| Error::io("open", e))?;
        let meta = file.metadata().map_err(|e| Error::io("stat", e))?;
        let block_device = image_kind(&meta.file_type())?;
        clear_nonblock(&file)?;
        let align = if direct {
            logical_block_size(&file, block_device)
        } else {
            1
        };
        Ok(Self {
            file,
            direct,
            align,
            block_device,
            read_only,
            unsafe_cache: false,
        })
    }

    /// An image file another process opened and passed to this one: its
    /// type is checked as [`HostFile::open_unlocked`] checks it, and its
    /// access mode must allow what `read_only` asks (a writable disk
    /// needs a descriptor opened for writing). `direct` turns `O_DIRECT`
    /// on. Not locked.
    pub fn from_file(file: File, read_only: bool, direct: bool) -> Result<Self> {
        let meta = file.metadata().map_err(|e| Error::io("stat", e))?;
        let block_device = image_kind(&meta.file_type())?;
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL takes and returns plain integers; the fd is open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(Error::io("fcntl", std::io::Error::last_os_error()));
        }
        if !read_only && flags & libc::O_ACCMODE == libc::O_RDONLY {
            return Err(Error::io(
                "open",
                std::io::Error::other(
                    "the descriptor is open read-only, and the disk is not (pass readonly, or a descriptor opened for reading and writing)",
                ),
            ));
        }
        let wanted = if direct {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        // SAFETY: as above.
        if wanted != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, wanted) } < 0 {
            return Err(Error::io("fcntl", std::io::Error::last_os_error()));
        }
        clear_nonblock(&file)?;
        let align = if direct {
            logical_block_size(&file, block_device)
        } else {
            1
        };
        Ok(Self {
            file,
            direct,
            align,
            block_device,
            read_only,
            unsafe_cache: false,
        })
    }

    /// The file's identity (device and inode), which names it whatever
    /// path reached it.
    pub fn identity(&self) -> Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().map_err(|e| Error::io("stat", e))?;
        Ok((meta.dev(), meta.ino()))
    }

    /// A block device rather than a regular file.
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    /// The path the open file has now (what `/proc/self/fd` says), for
    /// policy checks that must judge what was opened, not what was named.
    pub fn real_path(&self) -> Result<std::path::PathBuf> {
        let link = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        std::fs::read_link(link).map_err(|e| Error::io("readlink /proc/self/fd", e))
    }

    /// Lock the image (see [`HostFile::lock`]), looking again a few times
    /// before calling a conflict real.
    pub fn lock_retrying(&self, path: &Path) -> Result<()> {
        // An OFD lock lives as long as its open file description, which
        // can outlive the user that closed it for a moment (see
        // LOCK_PATIENCE): only a conflict that persists is a real user.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let mut delay = LOCK_FIRST_DELAY;
        loop {
            match self.lock(path) {
                Err(Error::InUse(_)) => {
                    self.unlock();
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Err(Error::InUse(path.to_owned()));
                    }
                    std::thread::sleep(delay.min(left));
                    delay = (delay * 2).min(LOCK_MAX_DELAY);
                }
                other => return other,
            }
        }
    }

    /// Lock the image the way QEMU does, so vireo and QEMU exclude each
    /// other too. QEMU locks byte 100 + p to say "I use permission p" and
    /// byte 200 + p to say "nobody else may use p" (p = 0: consistent
    /// read, 1: write). We take 100 and 201 (we read and let nobody else
    /// write) and, when writable, 101. Then any lock another process holds
    /// on a byte that contradicts ours (101 or 201 when we write, 101
    /// when we read) is a conflict.
    ///
    /// The locks are OFD locks: they belong to this open file description,
    /// so they go away when the image is closed and threads share them.
    fn lock(&self, path: &Path) -> Result<()> {
        const PERM_READ: i64 = 100;
        const PERM_WRITE: i64 = 101;
        const UNSHARE_WRITE: i64 = 201;
        let mut mine = vec![PERM_READ, UNSHARE_WRITE];
        let mut theirs = vec![PERM_WRITE];
        if !self.read_only {
            mine.push(PERM_WRITE);
            theirs.push(UNSHARE_WRITE);
        }
        for byte in mine {
            if let Err(e) = self.ofd_lock(libc::F_OFD_SETLK, libc::F_RDLCK, byte) {
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EACCES) => Err(Error::InUse(path.to_owned())),
                    _ => Err(Error::io("lock", e)),
                };
            }
        }
        for byte in theirs {
            let held = self
                .ofd_lock(libc::F_OFD_GETLK, libc::F_WRLCK, byte)
                .map_err(|e| Error::io("lock", e))?;
            if held != libc::F_UNLCK {
                return Err(Error::InUse(path.to_owned()));
            }
        }
        Ok(())
    }

    /// Drop whatever locks a failed [`HostFile::lock`] took.
    fn unlock(&self) {
        for byte in [100, 101, 201] {
            let _ = self.ofd_lock(libc::F_OFD_SETLK, libc::F_UNLCK, byte);
        }
    }

    /// One OFD lock call on one byte; returns the lock type fcntl leaves
    /// in the flock (for F_OFD_GETLK: F_UNLCK when nothing conflicts).
    fn ofd_lock(&self, cmd: libc::c_int, kind: libc::c_int, byte: i64) -> std::io::Result<i32> {
        // SAFETY: flock is plain data; all-zero is a valid value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = i16::try_from(kind).unwrap_or(0);
        fl.l_whence = i16::try_from(libc::SEEK_SET).unwrap_or(0);
        fl.l_start = byte;
        fl.l_len = 1;
        // SAFETY: fcntl with an OFD lock command reads and may update the
        // flock we pass; the fd is open.
        let r = unsafe { libc::fcntl(self.file.as_raw_fd(), cmd, &mut fl) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(i32::from(fl.l_type))
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Opened with `O_DIRECT`.
    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Alignment `O_DIRECT` needs (1 without it).
    pub fn align(&self) -> usize {
        self.align
    }

    pub fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Current length of the file or device.
    pub fn len(&self) -> Result<u64> {
        (&self.file)
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io("seek", e))
    }

    /// Bytes allocated on the host filesystem.
    pub fn allocated_bytes(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let meta = self.file.metadata().map_err(|e| Error::io("stat", e))?;
        Ok(meta.blocks() * 512)
    }

    fn aligned(&self, offset: u64, iovs: &[Iov]) -> bool {
        let a = self.align as u64;
        offset.is_multiple_of(a)
            && iovs.iter().all(|v| {
                (v.ptr as usize).is_multiple_of(self.align) && v.len.is_multiple_of(self.align)
            })
    }

    /// Read the byte stream `iovs` from `offset`; returns the bytes read,
    /// less than asked only at end of file.
    pub fn read_iov(&self, offset: u64, iovs: &[Iov]) -> Result<u64> {
        if self.direct && !self.aligned(offset, iovs) {
            return self.read_bounced(offset, iovs);
        }
        self.transfer(false, offset, iovs)
    }

    /// Read exactly; past end of file reads as zeroes.
    pub fn read_iov_zero_fill(&self, offset: u64, iovs: &[Iov]) -> Result<()> {
        let n = self.read_iov(offset, iovs)?;
        let total = iov_len(iovs);
        if n < total {
            iov_zero(&iov_slice(iovs, n, total - n));
        }
        Ok(())
    }

    /// Write all of `iovs` at `offset`.
    pub fn write_iov(&self, offset: u64, iovs: &[Iov]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.direct && !self.aligned(offset, iovs) {
            return self.write_bounced(offset, iovs);
        }
        let total = iov_len(iovs);
        if self.transfer(true, offset, iovs)? < total {
            return Err(Error::io(
                "write",
                std::io::Error::from(std::io::ErrorKind::WriteZero),
            ));
        }
        Ok(())
    }

    /// `preadv` (or, with `write`, `pwritev`) the byte stream `iovs` at
    /// `offset`, continuing short transfers; returns the bytes moved, less
    /// than asked only when the call moved nothing (end of file).
    fn transfer(&self, write: bool, offset: u64, iovs: &[Iov]) -> Result<u64> {
        let total = iov_len(iovs);
        let mut done = 0u64;
        while done < total {
            let rest = iov_slice(iovs, done, total - done);
            let vecs = to_iovecs(&rest);
            // At most IOV_MAX, so it fits in c_int.
            let cnt = libc::c_int::try_from(vecs.len().min(IOV_MAX)).unwrap_or(libc::c_int::MAX);
            let at = off_t(offset + done)?;
            let fd = self.file.as_raw_fd();
            // SAFETY: every iovec points at request memory (Iov's contract):
            // writable for preadv, which writes at most iov_len bytes into
            // each; readable for pwritev.
            let r = unsafe {
                if write {
                    libc::pwritev(fd, vecs.as_ptr(), cnt, at)
                } else {
                    libc::preadv(fd, vecs.as_ptr(), cnt, at)
                }
            };
            if r < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io(if write { "write" } else { "read" }, err));
            }
            if r == 0 {
                break;
            }
            done += r.unsigned_abs() as u64;
        }
        Ok(done)
    }

    /// The aligned window `[start, end)` around `[offset, offset + len)`.
    fn window(&self, offset: u64, len: u64) -> (u64, u64) {
        let a = self.align as u64;
        let start = offset - offset % a;
        let end = (offset + len).div_ceil(a) * a;
        (start, end)
    }

    fn bounce(&self, start: u64, end: u64) -> Result<AlignedBuf> {
        let len = usize::try_from(end - start)
            .map_err(|_| Error::InvalidImage("request too large".into()))?;
        AlignedBuf::new(len)
    }

    fn read_bounced(&self, offset: u64, iovs: &[Iov]) -> Result<u64> {
        let total = iov_len(iovs);
        let (start, end) = self.window(offset, total);
        let mut buf = self.bounce(start, end)?;
        let got = {
            let s = buf.as_mut_slice();
            self.read_iov(start, &[Iov::from_mut(s)])?
        };
        let skip = offset - start;
        let avail = got.saturating_sub(skip).min(total);
        let skip_us = usize::try_from(skip).unwrap_or(0);
        let avail_us = usize::try_from(avail).unwrap_or(0);
        iov_copy_from(iovs, 0, &buf.as_slice()[skip_us..skip_us + avail_us]);
        Ok(avail)
    }

    /// An unaligned write under `O_DIRECT`: read the edge blocks, merge,
    /// write the aligned window.
    fn write_bounced(&self, offset: u64, iovs: &[Iov]) -> Result<()> {
        let total = iov_len(iovs);
        let (start, end) = self.window(offset, total);
        let mut buf = self.bounce(start, end)?;
        let a = self.align as u64;
        if start < offset || end > offset + total {
            // Only the first and last blocks hold bytes we must keep.
            let s = buf.as_mut_slice();
            let a_us = self.align;
            let head = Iov::from_mut(&mut s[..a_us]);
            self.read_iov(start, &[head])?;
            if end - start > a {
                let tail_at = s.len() - a_us;
                let tail = Iov::from_mut(&mut s[tail_at..]);
                self.read_iov(end - a, &[tail])?;
            }
        }
        let skip = usize::try_from(offset - start).unwrap_or(0);
        let total_us = usize::try_from(total).unwrap_or(0);
        iov_copy_to(iovs, 0, &mut buf.as_mut_slice()[skip..skip + total_us]);
        self.write_iov(start, &[Iov::from_slice(buf.as_slice())])
    }

    /// Read into a host buffer; past end of file reads as zeroes.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_iov_zero_fill(offset, &[Iov::from_mut(buf)])
    }

    /// Read into a host buffer; fails if the file ends first.
    pub fn read_exact_strict(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let want = buf.len() as u64;
        let n = self.read_iov(offset, &[Iov::from_mut(buf)])?;
        if n < want {
            return Err(Error::InvalidImage(format!(
                "the file ends before offset {:#x}",
                offset + want
            )));
        }
        Ok(())
    }

    /// Read up to `buf.len()` bytes from offset 0 (for probing).
    pub fn read_prefix(&self, buf: &mut [u8]) -> Result<usize> {
        let n = self.read_iov(0, &[Iov::from_mut(buf)])?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Write a host buffer.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.write_iov(offset, &[Iov::from_slice(buf)])
    }

    /// `fdatasync`; nothing with an unsafe cache.
    pub fn sync_data(&self) -> Result<()> {
        if self.unsafe_cache {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| Error::io("fdatasync", e))
    }

    /// Skip every sync from now on: the image's user syncs the file
    /// itself once it is complete.
    pub fn set_unsafe_cache(&mut self) {
        self.unsafe_cache = true;
    }

    /// Set the length of a regular file (block devices keep theirs).
    pub fn set_len(&self, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.block_device {
            return Err(Error::Unsupported("resizing a block device"));
        }
        self.file.set_len(len).map_err(|e| Error::io("truncate", e))
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
        let off = libc::off_t::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let len = libc::off_t::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        loop {
            // SAFETY: fallocate takes plain integers; the fd is open.
            let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
            if r == 0 {
                return Ok(());
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Free the host blocks of a range (it reads as zeroes afterwards).
    /// Returns false when the filesystem cannot punch holes.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<bool> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if len == 0 {
            return Ok(true);
        }
        match self.fallocate(
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(e) if is_unsupported(&e) => Ok(false),
            Err(e) => Err(Error::io("punch hole", e)),
        }
    }

    /// Make a range read as zeroes, keeping it allocated: `ZERO_RANGE` when
    /// the filesystem has it, written zeroes otherwise.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if len == 0 {
            return Ok(());
        }
        match self.fallocate(
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            Err(e) if is_unsupported(&e) => self.write_zeroes_slow(offset, len),
            Err(e) => Err(Error::io("zero range", e)),
        }
    }

    /// Write zero bytes over a range, a megabyte at a time.
    pub fn write_zeroes_slow(&self, offset: u64, len: u64) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeroes = AlignedBuf::new(1 << 20)?;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            let n_us = usize::try_from(n).unwrap_or(0);
            self.write_all_at(&zeroes.as_slice()[..n_us], offset + done)?;
            done += n;
        }
        Ok(())
    }
}

/// Whether a file of type `t` can be an image: `Ok(true)` for a block
/// device, `Ok(false)` for a regular file, an error naming the type for
/// anything else.
fn image_kind(t: &std::fs::FileType) -> Result<bool> {
    let kind = if t.is_file() {
        return Ok(false);
    } else if t.is_block_device() {
        return Ok(true);
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(Error::FileType(kind))
}

/// Clear the `O_NONBLOCK` the file was opened with: image I/O blocks.
fn clear_nonblock(file: &File) -> Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: F_GETFL and F_SETFL take and return plain integers; the fd
    // is open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(Error::io("fcntl", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn is_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

/// The device's logical block size for `O_DIRECT` (4096 for files: safe on
/// every filesystem, and what a 4Kn disk needs).
fn logical_block_size(file: &File, block_device: bool) -> usize {
    if block_device {
        let mut size: libc::c_int = 0;
        // BLKSSZGET: _IO(0x12, 104).
        const BLKSSZGET: libc::c_ulong = 0x1268;
        // SAFETY: BLKSSZGET writes one int into `size`.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut size) };
        if r == 0 && size > 0 {
            return usize::try_from(size).unwrap_or(DIRECT_ALIGN);
        }
    }
    DIRECT_ALIGN
}
