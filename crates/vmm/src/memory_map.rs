//! Mapping guest RAM with a chosen backend (memfd, file, huge pages) and
//! preallocating it with several threads before the guest starts.

use std::fs::{File, OpenOptions};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::error::{Error, Result};
use crate::memory::GuestMemory;
use crate::memory_backend::{
    check_huge_multiple, check_huge_page_pool, BackendKind, HugePageSize, MemoryBackend,
};

/// Linux 5.14's populate-for-write advice; older kernels answer EINVAL.
const MADV_POPULATE_WRITE: libc::c_int = 23;
/// Where MAP_HUGETLB and MFD_HUGETLB encode the page size (both 26).
const HUGE_SHIFT: libc::c_int = 26;

fn invalid(msg: String) -> Error {
    Error::InvalidConfig(msg)
}

/// A `backend=file` backing opened ahead of the boots
/// ([`hold_backing_file`]).
enum Held {
    /// An unlinked file made in the directory `path=` names: emptied and
    /// sized again for each boot, as a new one would be.
    Scratch(File),
    /// The regular file `path=` names: kept, grown if need be.
    Kept(File),
}

/// What [`hold_backing_file`] opened, with the path it stands for.
static HELD: std::sync::Mutex<Option<(std::path::PathBuf, Held)>> = std::sync::Mutex::new(None);

/// Open `backend`'s file now (a `backend=file` one; nothing otherwise),
/// for every boot to use instead of its path: what a VMM that enters a
/// jail does, before the path is out of reach.
pub fn hold_backing_file(backend: &MemoryBackend) -> Result<()> {
    let BackendKind::File(path) = &backend.kind else {
        return Ok(());
    };
    if backend.hugepages.is_some() {
        check_on_hugetlbfs(path)?;
    }
    let held = if path.is_dir() {
        Held::Scratch(scratch_file(path)?)
    } else {
        Held::Kept(open_kept(path)?)
    };
    *HELD.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.clone(), held));
    Ok(())
}

/// The held file for `path`, duplicated, and whether it is a scratch one.
fn held_file(path: &std::path::Path) -> Option<Result<(File, bool)>> {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let (held_path, held) = held.as_ref()?;
    if held_path != path {
        return None;
    }
    let (file, scratch) = match held {
        Held::Scratch(f) => (f, true),
        Held::Kept(f) => (f, false),
    };
    Some(
        file.try_clone()
            .map(|f| (f, scratch))
            .map_err(|e| Error::GuestMemory(format!("dup of the held backing file: {e}"))),
    )
}

/// As QEMU's mem-path=<dir>: a private file in the directory (typically a
/// hugetlbfs mount), unlinked so nothing is left behind.
fn scratch_file(path: &std::path::Path) -> Result<File> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.join(format!(
        "vireo-ram-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&name)
        .map_err(|e| {
            invalid(format!(
                "memory backend: cannot create {}: {e}",
                name.display()
            ))
        })?;
    let _ = std::fs::remove_file(&name);
    Ok(file)
}

/// A regular file keeps its contents (shared=on persists guest RAM).
fn open_kept(path: &std::path::Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            invalid(format!(
                "memory backend: cannot open {}: {e}",
                path.display()
            ))
        })
}

/// One fd backing all of guest RAM, regions at increasing offsets.
fn backing_file(backend: &MemoryBackend, size: u64) -> Result<Option<File>> {
    if let BackendKind::File(path) = &backend.kind {
        if let Some(held) = held_file(path) {
            let (file, scratch) = held?;
            if scratch {
                // Emptied: a boot starts from zeroed memory, as on a new file.
                file.set_len(0).map_err(|e| {
                    invalid(format!(
                        "memory backend: cannot empty a file in {}: {e}",
                        path.display()
                    ))
                })?;
            }
            return grown(file, size, path).map(Some);
        }
    }
    let file = match &backend.kind {
        BackendKind::Anon => return Ok(None),
        BackendKind::Memfd => {
            let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
            if let Some(page) = backend.hugepages {
                // The shift is 21 or 30, so the encoded flag stays positive.
                flags |= libc::MFD_HUGETLB | (page.shift().cast_unsigned() << HUGE_SHIFT);
            }
            // SAFETY: the name is a NUL-terminated literal; the call creates a new fd.
            let fd = unsafe { libc::memfd_create(c"vireo-guest-ram".as_ptr(), flags) };
            if fd < 0 {
                return Err(Error::GuestMemory(format!(
                    "memfd_create: {}",
                    std::io::Error::last_os_error()
                )));
            }
            // SAFETY: `fd` is a new fd that nothing else owns.
            let file = unsafe { File::from_raw_fd(fd) };
            file.set_len(size)
                .map_err(|e| Error::GuestMemory(format!("sizing the memfd: {e}")))?;
            // Sealed against shrinking: a peer (vhost-user) cannot pull pages
            // out from under the guest and make it fault.
            // SAFETY: F_ADD_SEALS on an fd we own, with a seal bitmask.
            if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } != 0 {
                return Err(Error::GuestMemory(format!(
                    "sealing the memfd: {}",
                    std::io::Error::last_os_error()
                )));
            }
            file
        }
        BackendKind::File(path) if path.is_dir() => {
            let file = scratch_file(path)?;
            file.set_len(size).map_err(|e| {
                invalid(format!(
                    "memory backend: cannot size a file in {}: {e}",
                    path.display()
                ))
            })?;
            file
        }
        // It is only grown, never cut.
        BackendKind::File(path) => grown(open_kept(path)?, size, path)?,
    };
    Ok(Some(file))
}

/// `file` (the backing of `path=`), at least `size` bytes long.
fn grown(file: File, size: u64, path: &std::path::Path) -> Result<File> {
    let len = file
        .metadata()
        .map_err(|e| invalid(format!("memory backend: {}: {e}", path.display())))?
        .len();
    if len < size {
        file.set_len(size).map_err(|e| {
            invalid(format!(
                "memory backend: cannot grow {}: {e}",
                path.display()
            ))
        })?;
    }
    Ok(file)
}

/// hugetlbfs's statfs magic.
const HUGETLBFS_MAGIC: libc::c_long = 0x9584_58f6;

/// `hugepages=` with `path=` means a hugetlbfs mount: anything else would
/// silently give small pages.
fn check_on_hugetlbfs(path: &std::path::Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(path)
    };
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("memory backend: {} has a NUL byte", dir.display())))?;
    // SAFETY: statfs writes only into the zeroed struct we pass.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` a valid, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(invalid(format!(
            "memory backend: {}: {}",
            dir.display(),
            std::io::Error::last_os_error()
        )));
    }
    if st.f_type != HUGETLBFS_MAGIC {
        return Err(invalid(format!(
            "memory backend: hugepages= with path= needs a hugetlbfs mount, and {} is not one",
            dir.display()
        )));
    }
    Ok(())
}

fn mmap_flags(backend: &MemoryBackend, anon: bool) -> libc::c_int {
    let mut flags = if backend.shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    if anon {
        flags |= libc::MAP_ANONYMOUS;
        if let Some(page) = backend.hugepages {
            flags |= libc::MAP_HUGETLB | (page.shift() << HUGE_SHIFT);
        }
    }
    // Huge pages are reserved at mmap time so a shortfall fails here, not
    // as a SIGBUS once the guest runs; other memory stays lazily committed.
    if backend.hugepages.is_none() {
        flags |= libc::MAP_NORESERVE;
    }
    flags
}

/// Map `ranges` of guest RAM with `backend` (not the default anonymous one).
pub fn map_with_backend(
    size: u64,
    ranges: &[(GuestAddress, usize)],
    bindings: &[crate::memory::Binding<'_>],
    backend: &MemoryBackend,
) -> Result<GuestMemory> {
    if let Some(page) = backend.hugepages {
        check_huge_multiple(size, page, "--memory").map_err(invalid)?;
        for (addr, len) in ranges {
            check_huge_multiple(
                *len as u64,
                page,
                &format!("the RAM region at {:#x}:", addr.0),
            )
            .map_err(invalid)?;
        }
        if let BackendKind::File(path) = &backend.kind {
            // A held file was checked when it was opened.
            if held_file(path).is_none() {
                check_on_hugetlbfs(path)?;
            }
        }
        // A file that exists on hugetlbfs may hold its pages already. A
        // jailed VMM cannot see the pool (no /sys): `validate` looked
        // before the jail, and a later boot short of pages fails to map
        // them, with the reason.
        let jailed = crate::confinement::jail_dir().is_some();
        if !jailed && !matches!(&backend.kind, BackendKind::File(p) if p.is_file()) {
            check_huge_page_pool(size, page).map_err(invalid)?;
        }
    }
    let file = backing_file(backend, size)?;
    let flags = mmap_flags(backend, file.is_none());
    let mut regions = Vec::with_capacity(ranges.len());
    let mut offset = 0u64;
    for (i, &(addr, len)) in ranges.iter().enumerate() {
        let mut builder = MmapRegionBuilder::new(len)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags);
        if let Some(file) = &file {
            let fd = file
                .try_clone()
                .map_err(|e| Error::GuestMemory(format!("dup of the backing fd: {e}")))?;
            builder = builder.with_file_offset(FileOffset::new(fd, offset));
        }
        let mapping = builder
            .build()
            .map_err(|e| map_error(e, backend.hugepages, size))?;
        advise_thp(mapping.as_ptr(), addr, len, backend)?;
        // Before prealloc: the policy places pages as they are faulted.
        crate::memory::bind_region(
            mapping.as_ptr(),
            len as u64,
            bindings.get(i).copied().flatten(),
        )?;
        if backend.prealloc {
            let page = usize::try_from(backend.hugepages.map_or(4096, HugePageSize::bytes))
                .map_err(|_| {
                    Error::GuestMemory("huge page size exceeds the address space".into())
                })?;
            prealloc(mapping.as_ptr(), len, page, backend.prealloc_threads)?;
        }
        if backend.lock {
            lock(mapping.as_ptr(), len)?;
        }
        regions.push(
            GuestRegionMmap::new(mapping, addr)
                .ok_or_else(|| Error::GuestMemory("region wraps the address space".into()))?,
        );
        offset += len as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| Error::GuestMemory(e.to_string()))
}

/// `mlock`s a region: every page is faulted in now and stays in RAM.
fn lock(ptr: *mut u8, len: usize) -> Result<()> {
    // SAFETY: the range is a live mapping this function's caller owns; mlock
    // changes no memory contents.
    if unsafe { libc::mlock(ptr.cast(), len) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::GuestMemory(format!(
            "lock=on: cannot lock {} MiB of guest memory in RAM: {e} (the memlock limit, ulimit -l, must cover it)",
            len >> 20
        )));
    }
    Ok(())
}

fn map_error(e: vm_memory::mmap::MmapRegionError, huge: Option<HugePageSize>, size: u64) -> Error {
    match huge {
        Some(page) => Error::GuestMemory(format!(
            "{e} (mapping {} MiB of {} huge pages: the host's pool is short or the size is refused)",
            size >> 20,
            page.name()
        )),
        None => Error::GuestMemory(e.to_string()),
    }
}

/// Guest RAM below this guest-physical address is left in small pages
/// when the user did not choose (`thp=` left out).
///
/// It holds the boot structures (zero page, page tables, GDT, ACPI,
/// MP tables) and the legacy ISA hole: a small VM touches nothing else,
/// and one huge page there would be 2 MiB of RSS for a few KiB of data.
/// Everything above is where a guest keeps its kernel, page cache and
/// I/O buffers.
pub(crate) const SMALL_PAGE_FLOOR: u64 = 2 << 20;

/// The default advice on an anonymous RAM region that starts at guest
/// address `guest` and is mapped at `ptr`: `MADV_HUGEPAGE` from
/// [`SMALL_PAGE_FLOOR`] up, as QEMU advises all guest RAM.
///
/// Transparent huge pages make the host's share of `O_DIRECT` I/O (it
/// pins a request's pages for each transfer) far cheaper than 4 KiB
/// pages do, and let KVM map the guest with large pages. A kernel
/// without THP refuses the advice (EINVAL): the memory is then as good as
/// it would be without it, so that is not an error.
pub(crate) fn advise_default_thp(ptr: *mut u8, guest: GuestAddress, len: usize) -> Result<()> {
    let skip = SMALL_PAGE_FLOOR.saturating_sub(guest.0);
    let Ok(skip) = usize::try_from(skip) else {
        return Ok(());
    };
    if skip >= len {
        return Ok(());
    }
    // SAFETY: advice on a range inside a mapping this process just made
    // and owns (skip < len); it moves no data.
    let rc = unsafe { libc::madvise(ptr.add(skip).cast(), len - skip, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(Error::GuestMemory(format!(
                "madvise(MADV_HUGEPAGE) on guest RAM: {e}"
            )));
        }
    }
    Ok(())
}

fn advise_thp(ptr: *mut u8, addr: GuestAddress, len: usize, backend: &MemoryBackend) -> Result<()> {
    let advice = match backend.thp {
        Some(true) => libc::MADV_HUGEPAGE,
        Some(false) => libc::MADV_NOHUGEPAGE,
        // hugetlb pages are huge already; a shared file's pages follow the
        // host's shmem policy, which QEMU does not override either.
        None if backend.hugepages.is_none() && backend.kind == BackendKind::Anon => {
            return advise_default_thp(ptr, addr, len)
        }
        None => return Ok(()),
    };
    // SAFETY: advice on a range we just mapped and own; it moves no data.
    if unsafe { libc::madvise(ptr.cast(), len, advice) } != 0 {
        return Err(Error::GuestMemory(format!(
            "madvise(thp={}): {}",
            if backend.thp == Some(true) {
                "on"
            } else {
                "off"
            },
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Fault in `len` bytes at `ptr` with `threads` threads, each its own share.
fn prealloc(ptr: *mut u8, len: usize, page: usize, threads: usize) -> Result<()> {
    let pages = len / page;
    let per = pages.div_ceil(threads.max(1)).max(1);
    let base = ptr as usize;
    let results: Vec<std::io::Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..pages)
            .step_by(per)
            .map(|first| {
                let start = base + first * page;
                let bytes = per.min(pages - first) * page;
                // The main thread's filter allows what these do, so they
                // narrow it to their own first (confine's documentation).
                s.spawn(move || {
                    confine::confine_current(confine::ThreadKind::Prealloc)
                        .map_err(std::io::Error::other)?;
                    populate(start, bytes, page)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("thread panicked")))
            })
            .collect()
    });
    for r in results {
        r.map_err(|e| Error::GuestMemory(format!("prealloc: {e}")))?;
    }
    Ok(())
}

fn populate(start: usize, bytes: usize, page: usize) -> std::io::Result<()> {
    // SAFETY: [start, start+bytes) lies inside a mapping this process owns
    // for the whole call (the scope joins before the mapping can be dropped).
    if unsafe { libc::madvise(start as *mut libc::c_void, bytes, MADV_POPULATE_WRITE) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINVAL) {
        return Err(err);
    }
    // Kernels before 5.14: write each page's own byte back, which faults it
    // in without changing a file's contents.
    for off in (0..bytes).step_by(page) {
        let p = (start + off) as *mut u8;
        // SAFETY: `p` is inside the mapping (see above), readable and writable.
        unsafe { p.write_volatile(p.read_volatile()) };
    }
    Ok(())
}
