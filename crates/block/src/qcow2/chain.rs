//! The files a backing chain names, without opening it as images: for
//! refusing to write an image over its own source or backing file.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::FileId;

use super::header::{self, Header};

/// Most files listed; a longer chain is refused when opened anyway.
const MAX_CHAIN: usize = 64;

/// `path` and every backing file its qcow2 header chain names (relative
/// names resolved against the naming image's directory), each with its
/// identity. Best effort: the walk stops at a missing or non-regular
/// file, a header that does not parse, or a file seen before (a loop).
pub fn backing_chain(path: &Path) -> Vec<(PathBuf, FileId)> {
    let mut out: Vec<(PathBuf, FileId)> = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(p) = next.take() {
        if out.len() >= MAX_CHAIN {
            break;
        }
        let Ok(meta) = std::fs::metadata(&p) else {
            break;
        };
        let Some(id) = FileId::of(&p) else {
            break;
        };
        if out.iter().any(|(_, seen)| *seen == id) {
            break;
        }
        out.push((p.clone(), id));
        if !meta.is_file() {
            break;
        }
        next = backing_name(&p, meta.len()).map(|name| resolve(&p, &name));
    }
    out
}

/// The backing file name in the qcow2 header of the regular file `path`.
fn backing_name(path: &Path, file_len: u64) -> Option<String> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let mut probe = vec![0u8; 4096.min(usize::try_from(file_len).ok()?)];
    f.read_exact(&mut probe).ok()?;
    if probe.len() < 24 {
        return None;
    }
    let bits = u32::from_be_bytes([probe[20], probe[21], probe[22], probe[23]]);
    if !(header::MIN_CLUSTER_BITS..=header::MAX_CLUSTER_BITS).contains(&bits) {
        return None;
    }
    let want = usize::try_from((1u64 << bits).min(file_len)).ok()?;
    if want > probe.len() {
        let mut rest = vec![0u8; want - probe.len()];
        f.read_exact(&mut rest).ok()?;
        probe.extend_from_slice(&rest);
    }
    Header::parse(&probe, file_len).ok()?.backing_file
}

/// A backing file name as the image at `image` means it.
pub fn resolve(image: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_owned()
    } else {
        image.parent().unwrap_or_else(|| Path::new(".")).join(p)
    }
}
