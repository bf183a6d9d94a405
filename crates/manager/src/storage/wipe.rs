//! `vol-wipe --algorithm NAME`: a volume's file (or partition, or logical
//! volume) overwritten as libvirt's algorithms say.
//!
//! As libvirt does, the file is overwritten, not the guest's view of it: a
//! qcow2 volume's header goes too, and the volume afterwards is a raw
//! volume as long as the file was (its `physical` size). The algorithms
//! are libvirt's (which runs scrub(1) for all but `zero` and `trim`): a
//! sequence of passes, each a repeated byte pattern, a pseudo-random
//! stream, or a verification that the previous pass reads back. The
//! pseudo-random passes come from a generator seeded by the kernel's
//! random source; they are meant to overwrite, not to be secret.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use super::StorageError;

/// The algorithms `vol-wipe` accepts, by libvirt's names.
pub const ALGORITHMS: &[&str] = &[
    "zero",
    "nnsa",
    "dod",
    "bsi",
    "gutmann",
    "schneier",
    "pfitzner7",
    "pfitzner33",
    "random",
    "trim",
];

/// One wipe algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// One pass of zeroes (the default).
    Zero,
    /// NNSA NAP-14.1-C: two random passes, zeroes, verified.
    Nnsa,
    /// DoD 5220.22-M: a random pass, zeroes, ones, verified.
    Dod,
    /// BSI: nine passes, 0xff then each byte with one bit cleared.
    Bsi,
    /// Gutmann's 35 passes: 4 random, 27 patterns, 4 random.
    Gutmann,
    /// Schneier's 7 passes: zeroes, ones, 5 random.
    Schneier,
    /// Pfitzner's 7 random passes.
    Pfitzner7,
    /// Pfitzner's 33 random passes.
    Pfitzner33,
    /// One random pass.
    Random,
    /// Discard the whole volume (TRIM, a punched hole in a file).
    Trim,
}

/// One pass over the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The pattern repeated from the first byte.
    Fill(&'static [u8]),
    /// A pseudo-random stream.
    Random,
    /// Read everything back and compare with the pass before.
    Verify,
}

const RANDOM4: [Pass; 4] = [Pass::Random; 4];

/// Gutmann's patterns, passes 5 to 31.
const GUTMANN_PATTERNS: [&[u8]; 27] = [
    &[0x55],
    &[0xaa],
    &[0x92, 0x49, 0x24],
    &[0x49, 0x24, 0x92],
    &[0x24, 0x92, 0x49],
    &[0x00],
    &[0x11],
    &[0x22],
    &[0x33],
    &[0x44],
    &[0x55],
    &[0x66],
    &[0x77],
    &[0x88],
    &[0x99],
    &[0xaa],
    &[0xbb],
    &[0xcc],
    &[0xdd],
    &[0xee],
    &[0xff],
    &[0x92, 0x49, 0x24],
    &[0x49, 0x24, 0x92],
    &[0x24, 0x92, 0x49],
    &[0x6d, 0xb6, 0xdb],
    &[0xb6, 0xdb, 0x6d],
    &[0xdb, 0x6d, 0xb6],
];

impl Algorithm {
    /// The algorithm `name` names; `None` is the default, zero.
    pub fn parse(name: Option<&str>) -> Result<Algorithm, StorageError> {
        Ok(match name.unwrap_or("zero") {
            "zero" => Algorithm::Zero,
            "nnsa" => Algorithm::Nnsa,
            "dod" => Algorithm::Dod,
            "bsi" => Algorithm::Bsi,
            "gutmann" => Algorithm::Gutmann,
            "schneier" => Algorithm::Schneier,
            "pfitzner7" => Algorithm::Pfitzner7,
            "pfitzner33" => Algorithm::Pfitzner33,
            "random" => Algorithm::Random,
            "trim" => Algorithm::Trim,
            other => {
                return Err(StorageError::Invalid(format!(
                    "unknown wipe algorithm '{}': one of {}",
                    other.escape_debug(),
                    ALGORITHMS.join(", ")
                )))
            }
        })
    }

    /// Its passes, in order (none for zero and trim, which are done
    /// without writing patterns when the storage can).
    fn passes(self) -> Vec<Pass> {
        match self {
            Algorithm::Zero | Algorithm::Trim => Vec::new(),
            Algorithm::Nnsa => vec![Pass::Random, Pass::Random, Pass::Fill(&[0]), Pass::Verify],
            Algorithm::Dod => vec![
                Pass::Random,
                Pass::Fill(&[0]),
                Pass::Fill(&[0xff]),
                Pass::Verify,
            ],
            Algorithm::Bsi => [0xff, 0xfe, 0xfd, 0xfb, 0xf7, 0xef, 0xdf, 0xbf, 0x7f]
                .iter()
                .map(|b| Pass::Fill(std::slice::from_ref(b)))
                .collect(),
            Algorithm::Gutmann => RANDOM4
                .into_iter()
                .chain(GUTMANN_PATTERNS.iter().map(|p| Pass::Fill(p)))
                .chain(RANDOM4)
                .collect(),
            Algorithm::Schneier => [Pass::Fill(&[0]), Pass::Fill(&[0xff])]
                .into_iter()
                .chain([Pass::Random; 5])
                .collect(),
            Algorithm::Pfitzner7 => vec![Pass::Random; 7],
            Algorithm::Pfitzner33 => vec![Pass::Random; 33],
            Algorithm::Random => vec![Pass::Random],
        }
    }
}

/// Wipes all of `path` with `algorithm`; returns the bytes wiped.
pub fn wipe(path: &Path, algorithm: Algorithm) -> Result<u64, StorageError> {
    match algorithm {
        Algorithm::Zero => return zero(path),
        Algorithm::Trim => return trim(path),
        _ => {}
    }
    let (file, len, _) = open(path)?;
    let mut last: Option<Pass> = None;
    let mut seed = 0u64;
    for pass in algorithm.passes() {
        match pass {
            Pass::Fill(pattern) => fill(&file, len, |buf, at| repeat(pattern, buf, at)),
            Pass::Random => {
                seed = random_seed().map_err(|e| host(path, e))?;
                let mut rng = Rng::new(seed);
                fill(&file, len, |buf, _| rng.fill(buf))
            }
            Pass::Verify => {
                file.sync_all().map_err(|e| host(path, e))?;
                verify(&file, len, last, seed, path)?;
                continue;
            }
        }
        .map_err(|e| host(path, e))?;
        last = Some(pass);
    }
    file.sync_all().map_err(|e| host(path, e))?;
    Ok(len)
}

/// The volume opened for writing (and reading, for verification): its
/// file, its length, whether it is a block device.
fn open(path: &Path) -> Result<(File, u64, bool), StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| host(path, e))?;
    let meta = file.metadata().map_err(|e| host(path, e))?;
    let block = meta.file_type().is_block_device();
    let len = if block {
        super::blockdev::geometry(&file, path)?.0
    } else {
        meta.len()
    };
    Ok((file, len, block))
}

/// Writes `len` bytes from the start, each step's buffer filled by
/// `make(buf, offset)`.
fn fill(file: &File, len: u64, mut make: impl FnMut(&mut [u8], u64)) -> std::io::Result<()> {
    let mut buf = vec![0u8; STEP];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(STEP as u64)).unwrap_or(STEP);
        make(&mut buf[..n], at);
        file.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// `buf` filled with `pattern` repeated as if it started at byte 0 of the
/// volume and `buf` began at `at`.
fn repeat(pattern: &[u8], buf: &mut [u8], at: u64) {
    let k = pattern.len() as u64;
    let phase = usize::try_from(at % k).unwrap_or(0);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern[(phase + i) % pattern.len()];
    }
}

/// Reads the volume back and compares it with what `last` wrote (a
/// random pass is generated again from its `seed`).
fn verify(
    file: &File,
    len: u64,
    last: Option<Pass>,
    seed: u64,
    path: &Path,
) -> Result<(), StorageError> {
    let mut want = vec![0u8; STEP];
    let mut got = vec![0u8; STEP];
    let mut rng = Rng::new(seed);
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(STEP as u64)).unwrap_or(STEP);
        match last {
            Some(Pass::Fill(p)) => repeat(p, &mut want[..n], at),
            Some(Pass::Random) => rng.fill(&mut want[..n]),
            Some(Pass::Verify) | None => return Ok(()),
        }
        file.read_exact_at(&mut got[..n], at)
            .map_err(|e| host(path, e))?;
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            return Err(StorageError::Host(format!(
                "{}: the wipe did not read back at byte {}: the storage did not keep what was written",
                path.display(),
                at + i as u64
            )));
        }
        at += n as u64;
    }
    Ok(())
}

/// A seed from the kernel's random source.
fn random_seed() -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(b))
}

/// xoshiro256** seeded through splitmix64: fast enough to keep up with a
/// disk, and its stream can be made again for verification.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `trim`: the whole volume discarded: a file's blocks given back (a hole
/// as long as the file), a block device's range discarded (BLKDISCARD).
/// Refused, saying so, where the storage cannot discard.
pub fn trim(path: &Path) -> Result<u64, StorageError> {
    let (file, len, block) = open(path)?;
    let fd = file.as_raw_fd();
    let done = if block {
        let range = [0u64, len];
        // SAFETY: BLKDISCARD reads two u64s (start, length) from `range`.
        unsafe { libc::ioctl(fd, BLKDISCARD, range.as_ptr()) == 0 }
    } else {
        let Ok(l) = libc::off_t::try_from(len) else {
            return Err(StorageError::Invalid(format!(
                "{}: too large",
                path.display()
            )));
        };
        // SAFETY: fallocate on a descriptor we own; no memory is passed.
        len == 0
            || unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    0,
                    l,
                ) == 0
            }
    };
    if !done {
        let e = std::io::Error::last_os_error();
        return Err(StorageError::Invalid(format!(
            "{}: the storage cannot discard (wipe algorithm 'trim'): {e}",
            path.display()
        )));
    }
    file.sync_all().map_err(|e| host(path, e))?;
    Ok(len)
}

/// `BLKDISCARD` (linux/fs.h: `_IO(0x12, 119)`).
const BLKDISCARD: libc::c_ulong = 0x1277;

/// Bytes written per step.
const STEP: usize = 1 << 20;

/// Zeroes all of `path`; returns the bytes zeroed.
fn zero(path: &Path) -> Result<u64, StorageError> {
    let (file, len, block) = open(path)?;
    // The filesystem zeroes a range without writing it when it can
    // (unwritten extents keep the space allocated, as writing would);
    // else zeroes are written.
    if block || !zero_range(&file, len) {
        fill(&file, len, |buf, _| buf.fill(0)).map_err(|e| host(path, e))?;
    }
    file.sync_all().map_err(|e| host(path, e))?;
    Ok(len)
}

fn zero_range(file: &File, len: u64) -> bool {
    let Ok(len) = libc::off_t::try_from(len) else {
        return false;
    };
    if len == 0 {
        return true;
    }
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_ZERO_RANGE, 0, len) == 0 }
}

fn host(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Host(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_reads_as_zeroes_and_keeps_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, vec![0xa5u8; 3 << 20]).unwrap();
        assert_eq!(zero(&p).unwrap(), 3 << 20);
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 3 << 20);
        assert!(data.iter().all(|&b| b == 0));
    }

    #[test]
    fn libvirts_names_are_accepted_and_others_refused_with_the_list() {
        for name in ALGORITHMS {
            assert!(Algorithm::parse(Some(name)).is_ok(), "{name}");
        }
        assert_eq!(Algorithm::parse(None).unwrap(), Algorithm::Zero);
        let e = Algorithm::parse(Some("shred")).unwrap_err().to_string();
        assert!(e.contains("'shred'") && e.contains("gutmann"), "{e}");
    }

    #[test]
    fn the_pass_counts_are_libvirts() {
        let count = |a: Algorithm| a.passes().len();
        assert_eq!(count(Algorithm::Nnsa), 4);
        assert_eq!(count(Algorithm::Dod), 4);
        assert_eq!(count(Algorithm::Bsi), 9);
        assert_eq!(count(Algorithm::Gutmann), 35);
        assert_eq!(count(Algorithm::Schneier), 7);
        assert_eq!(count(Algorithm::Pfitzner7), 7);
        assert_eq!(count(Algorithm::Pfitzner33), 33);
        assert_eq!(count(Algorithm::Random), 1);
        assert_eq!(Algorithm::Gutmann.passes()[4], Pass::Fill(&[0x55]));
        assert_eq!(
            Algorithm::Gutmann.passes()[30],
            Pass::Fill(&[0xdb, 0x6d, 0xb6])
        );
    }

    /// A file longer than one step and not a multiple of the pattern, so
    /// the phase of three-byte patterns across steps is exercised.
    fn victim(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("v");
        std::fs::write(&p, vec![0xa5u8; (3 << 20) + 5]).unwrap();
        p
    }

    #[test]
    fn pattern_passes_leave_the_last_pattern_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = victim(dir.path());
        for (a, last) in [
            (Algorithm::Dod, 0xffu8),
            (Algorithm::Nnsa, 0),
            (Algorithm::Bsi, 0x7f),
        ] {
            assert_eq!(wipe(&p, a).unwrap(), (3 << 20) + 5);
            let data = std::fs::read(&p).unwrap();
            assert_eq!(data.len(), (3 << 20) + 5, "{a:?}");
            assert!(data.iter().all(|&b| b == last), "{a:?}");
        }
        wipe(&p, Algorithm::Gutmann).unwrap();
        let data = std::fs::read(&p).unwrap();
        // The last four passes are random: nothing of the old bytes, and
        // not one value throughout.
        assert!(data.windows(2).any(|w| w[0] != w[1]));
        assert!(data.chunks(4096).all(|c| c.iter().any(|&b| b != 0xa5)));
    }

    #[test]
    fn a_three_byte_pattern_keeps_its_phase_across_steps() {
        let mut buf = vec![0u8; 7];
        repeat(&[1, 2, 3], &mut buf, STEP as u64);
        // STEP = 1 MiB = 1048576 = 3 * 349525 + 1: the step starts at phase 1.
        assert_eq!(buf, [2, 3, 1, 2, 3, 1, 2]);
    }

    #[test]
    fn random_passes_differ_each_time_and_regenerate_for_verification() {
        let dir = tempfile::tempdir().unwrap();
        let p = victim(dir.path());
        wipe(&p, Algorithm::Random).unwrap();
        let a = std::fs::read(&p).unwrap();
        wipe(&p, Algorithm::Random).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_ne!(a, b);
        let (mut x, mut y) = (Rng::new(7), Rng::new(7));
        let (mut bx, mut by) = (vec![0u8; 13], vec![0u8; 13]);
        x.fill(&mut bx);
        y.fill(&mut by);
        assert_eq!(bx, by);
        let f = File::open(&p).unwrap();
        let e = verify(&f, 4096, Some(Pass::Fill(&[0x11])), 0, &p).unwrap_err();
        assert!(e.to_string().contains("did not read back at byte 0"), "{e}");
    }

    #[test]
    fn trim_leaves_a_hole_as_long_as_the_file() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = victim(dir.path());
        match trim(&p) {
            Ok(n) => {
                assert_eq!(n, (3 << 20) + 5);
                let m = std::fs::metadata(&p).unwrap();
                assert_eq!(m.len(), (3 << 20) + 5);
                assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
                assert!(std::fs::read(&p).unwrap().iter().all(|&b| b == 0));
            }
            // A filesystem without hole punching says so.
            Err(e) => assert!(e.to_string().contains("cannot discard"), "{e}"),
        }
    }
}
