//! KVM's answer to `KVM_GET_SUPPORTED_CPUID`, kept between runs.
//!
//! The answer is fixed for one loaded KVM module on one boot of the host,
//! but computing it is not cheap where the host is itself a virtual
//! machine: KVM runs the CPUID instruction for every leaf and sub-leaf
//! (about a hundred), and each one exits to the outer hypervisor. On the
//! project's hosts that is 0.37 ms of a 5 ms start (perf: `do_host_cpuid`).
//! So the first VMM of a boot stores the answer and later ones read it.
//!
//! The file is only believed when it was made for the same KVM instance:
//! its first line names the host's boot (`boot_id`), `/dev/kvm`'s device
//! node (recreated when the module is reloaded) and the kernel's objects of
//! the kvm modules in sysfs (new ones at each load); it must belong to
//! this user and be writable by no one else; and every entry must parse.
//! Anything else and the ioctl runs as if there were no file. Root's copy
//! lives in `/run/vireo/cache` (tmpfs: gone at reboot), another user's in
//! `$XDG_RUNTIME_DIR/vireo`.

use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};

/// The format's first word; a new layout gets a new one.
const MAGIC: &str = "vireo-kvm-cpuid-2";
/// Larger files are not read (256 entries of 7 fields come to ~22 KiB).
const MAX_FILE: u64 = 64 << 10;
/// The kvm modules whose load makes the answer another one.
const MODULES: [&str; 4] = ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"];

/// Where this user's cache file is, if it has a place.
pub(crate) fn default_path() -> Option<PathBuf> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/run/vireo/cache/kvm-cpuid"));
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")?;
    Some(Path::new(&runtime).join("vireo").join("kvm-cpuid"))
}

/// What identifies the KVM instance behind `kvm` (an open `/dev/kvm`),
/// or `None` when something cannot be read (no cache then).
pub(crate) fn instance_key(kvm: RawFd) -> Option<String> {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let mut node = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole `stat` into `node` when it succeeds.
    if unsafe { libc::fstat(kvm, node.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so `node` is initialised.
    let node = unsafe { node.assume_init() };
    let mut key = format!(
        "boot={} dev={:x}:{:x}:{} ctime={}.{}",
        boot.trim(),
        node.st_dev,
        node.st_rdev,
        node.st_ino,
        node.st_ctime,
        node.st_ctime_nsec
    );
    for module in MODULES {
        if let Ok(m) = fs::metadata(Path::new("/sys/module").join(module)) {
            let _ = write!(key, " {module}={}", m.ino());
        }
    }
    Some(key)
}

/// The cached answer at `path`, if it was made for `key` and is sound.
pub(crate) fn load(path: &Path, key: &str) -> Option<CpuId> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    // SAFETY: geteuid has no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 || meta.len() > MAX_FILE {
        return None;
    }
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    parse(&text, key)
}

/// Parse a cache file's text, if its key is `key` and it is whole: its
/// last line, `end N`, counts the N entries before it (a file cut short at
/// a line's end would otherwise parse, with leaves missing).
fn parse(text: &str, key: &str) -> Option<CpuId> {
    let mut lines = text.lines();
    let (magic, stored_key) = lines.next()?.split_once(' ')?;
    if magic != MAGIC || stored_key != key {
        return None;
    }
    let mut entries = Vec::new();
    let mut ended = false;
    for line in lines {
        if ended || entries.len() > KVM_MAX_CPUID_ENTRIES {
            return None;
        }
        if let Some(count) = line.strip_prefix("end ") {
            if count.parse::<usize>().ok()? != entries.len() {
                return None;
            }
            ended = true;
            continue;
        }
        let mut fields = [0u32; 7];
        let mut words = line.split(' ');
        for field in &mut fields {
            *field = u32::from_str_radix(words.next()?, 16).ok()?;
        }
        if words.next().is_some() {
            return None;
        }
        let [function, index, flags, eax, ebx, ecx, edx] = fields;
        entries.push(kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        });
    }
    if !ended || entries.is_empty() || entries.len() > KVM_MAX_CPUID_ENTRIES {
        return None;
    }
    CpuId::from_entries(&entries).ok()
}

/// The file's text for `cpuid` under `key`.
fn render(cpuid: &CpuId, key: &str) -> String {
    let mut text = format!("{MAGIC} {key}\n");
    for e in cpuid.as_slice() {
        let _ = writeln!(
            text,
            "{:x} {:x} {:x} {:x} {:x} {:x} {:x}",
            e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx
        );
    }
    let _ = writeln!(text, "end {}", cpuid.as_slice().len());
    text
}

/// A name for this writer's temporary file that no other writer shares:
/// the process id alone is not one (every jailed VMM is PID 1 of its own
/// PID namespace).
fn temporary_name() -> String {
    let mut random = [0u8; 8];
    // SAFETY: getrandom writes at most `random.len()` bytes into it.
    let n = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    let nonce = if usize::try_from(n).is_ok_and(|n| n == random.len()) {
        u64::from_ne_bytes(random)
    } else {
        // No randomness: the thread id and the time still tell this
        // writer from the others.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        // SAFETY: gettid has no arguments and cannot fail.
        let tid = unsafe { libc::gettid() };
        (u64::from(tid.unsigned_abs()) << 32) | u64::from(nanos)
    };
    format!(".kvm-cpuid.{nonce:016x}")
}

/// Store `cpuid` for `key` at `path`: written to a file of this process
/// and renamed over the old one, so a reader sees one whole file or the
/// other. Failing is harmless (the next run asks KVM again), so errors
/// are only returned for the tests.
pub(crate) fn store(path: &Path, key: &str, cpuid: &CpuId) -> std::io::Result<()> {
    let dir = path.parent().ok_or(std::io::ErrorKind::InvalidInput)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let tmp = dir.join(temporary_name());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    // The mode given to open is masked by the umask; the reader insists
    // on no group or other write bit, and wants the others' read bit only
    // as a courtesy.
    // SAFETY: fchmod on a descriptor this function owns.
    unsafe { libc::fchmod(file.as_raw_fd(), 0o644) };
    let written = file.write_all(render(cpuid, key).as_bytes());
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CpuId {
        let entries = [
            kvm_cpuid_entry2 {
                function: 0,
                eax: 0xd,
                ebx: 0x756e_6547,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xd,
                index: 1,
                flags: 1,
                eax: 0xf,
                ecx: u32::MAX,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vireo-cpuid-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn an_answer_stored_is_read_back_for_its_key_only() {
        let dir = temp_dir("roundtrip");
        let path = dir.join("sub").join("kvm-cpuid");
        store(&path, "boot=a dev=1", &sample()).unwrap();
        let back = load(&path, "boot=a dev=1").expect("read back");
        assert_eq!(back.as_slice(), sample().as_slice());
        assert!(load(&path, "boot=b dev=1").is_none(), "another boot");
        assert!(
            load(&path, "boot=a dev=1 kvm=7").is_none(),
            "another module"
        );
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_or_foreign_files_are_not_believed() {
        let key = "boot=a";
        let good = render(&sample(), key);
        assert!(parse(&good, key).is_some());
        for bad in [
            String::new(),
            format!("{MAGIC} {key}\n"),
            format!("{MAGIC} {key}\nend 0\n"),
            good.replace(MAGIC, "vireo-kvm-cpuid-0"),
            good.replace("end 2", "end 3"),
            good.replace("end 2\n", ""),
            // Cut short at a line's end: one entry and no end line.
            good.lines()
                .take(2)
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            format!("{good}end 2\n"),
            good.replace("756e6547", "756e654g"),
            format!("{good}1 2 3\n"),
            format!("{good}1 2 3 4 5 6 7 8\n"),
            format!(
                "{MAGIC} {key}\n{}end {}\n",
                "0 0 0 0 0 0 0\n".repeat(KVM_MAX_CPUID_ENTRIES + 1),
                KVM_MAX_CPUID_ENTRIES + 1
            ),
        ] {
            assert!(parse(&bad, key).is_none(), "{bad}");
        }
        let dir = temp_dir("foreign");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kvm-cpuid");
        fs::write(&path, &good).unwrap();
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        assert!(load(&path, key).is_none(), "writable by others");
        let link = dir.join("link");
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(load(&path, key).is_some());
        assert!(load(&link, key).is_none(), "a symbolic link");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writers_of_one_pid_get_temporary_files_of_their_own() {
        // Every jailed VMM is PID 1: the name must not come from the pid.
        let names: std::collections::BTreeSet<String> = (0..64).map(|_| temporary_name()).collect();
        assert_eq!(names.len(), 64);
        let dir = temp_dir("writers");
        let path = dir.join("kvm-cpuid");
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| store(&path, "boot=w", &sample()).unwrap());
            }
        });
        assert_eq!(
            load(&path, "boot=w").unwrap().as_slice(),
            sample().as_slice()
        );
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["kvm-cpuid"], "temporary files left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_names_this_boot_and_dev_kvm() {
        let Ok(kvm) = fs::File::open("/dev/kvm") else {
            testkit::skip("no /dev/kvm");
            return;
        };
        let key = instance_key(kvm.as_raw_fd()).unwrap();
        let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert!(
            key.starts_with(&format!("boot={} dev=", boot.trim())),
            "{key}"
        );
        assert!(key.contains(" kvm="), "{key}");
        assert_eq!(instance_key(kvm.as_raw_fd()).unwrap(), key, "stable");
    }
}
