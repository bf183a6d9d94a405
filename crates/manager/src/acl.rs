//! Access for a confined VMM's uid to the files its domain uses: a POSIX
//! ACL entry (`user:UID:rw-` or `r--`) added while the domain runs and
//! removed when it stops, libvirt's dynamic ownership done with ACLs.
//!
//! Why an ACL entry rather than `chown`: each domain's VMM runs under its
//! own uid, and a shareable disk is used by two domains at once; an owner
//! can only be one of them. An entry per uid leaves the file's owner, its
//! mode for everyone else and any entries others made as they were, and
//! removing the domain's entry is the whole restore: nothing about the
//! file's previous state has to be remembered across a daemon restart.
//!
//! The ACL is read and written as the kernel's `system.posix_acl_access`
//! extended attribute (the layout of `linux/posix_acl_xattr.h`), so no
//! libacl is needed. When the ACL left after a removal says no more than
//! the mode bits, the kernel drops the attribute and the mode is as before.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const XATTR: &[u8] = b"system.posix_acl_access\0";
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;
const ENTRY: usize = 8;

/// The access a domain's uid gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only (a read-only disk, a backing file, a kernel).
    Read,
    /// Read and write.
    ReadWrite,
}

impl Access {
    fn perm(self) -> u16 {
        match self {
            Self::Read => 4,
            Self::ReadWrite => 6,
        }
    }
}

/// One ACL entry: tag, permission bits (rwx = 4|2|1), and the uid or gid
/// of a named entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    tag: u16,
    id: u32,
    perm: u16,
}

/// Gives `uid` `access` to `path` (replacing an entry it had).
pub fn grant(path: &Path, uid: u32, access: Access) -> io::Result<()> {
    let mut acl = read(path)?;
    acl.retain(|e| !(e.tag == USER && e.id == uid));
    acl.push(Entry {
        tag: USER,
        id: uid,
        perm: access.perm(),
    });
    write(path, acl)
}

/// Takes `uid`'s entry off `path`; nothing to do when it has none (or the
/// file is gone).
pub fn revoke(path: &Path, uid: u32) -> io::Result<()> {
    let mut acl = match read(path) {
        Ok(acl) => acl,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let before = acl.len();
    acl.retain(|e| !(e.tag == USER && e.id == uid));
    if acl.len() == before {
        return Ok(());
    }
    write(path, acl)
}

/// The access `uid`'s own entry on `path` gives, if it has one.
pub fn entry_for(path: &Path, uid: u32) -> io::Result<Option<Access>> {
    Ok(read(path)?
        .iter()
        .find(|e| e.tag == USER && e.id == uid)
        .map(|e| {
            if e.perm & 2 != 0 {
                Access::ReadWrite
            } else {
                Access::Read
            }
        }))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// The file's ACL; a file without one has the three entries its mode says.
fn read(path: &Path) -> io::Result<Vec<Entry>> {
    let c = c_path(path)?;
    let mut buf = vec![0u8; 4 + 32 * ENTRY];
    loop {
        // SAFETY: both strings are NUL-terminated and `buf` is writable
        // for its whole length, which is what the call is told.
        let n = unsafe {
            libc::getxattr(
                c.as_ptr(),
                XATTR.as_ptr().cast(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if let Ok(n) = usize::try_from(n) {
            buf.truncate(n);
            return decode(&buf);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => {
                // The permission bits only: they fit a u16.
                let mode = (std::fs::metadata(path)?.mode() & 0o777) as u16;
                return Ok(vec![
                    Entry {
                        tag: USER_OBJ,
                        id: UNDEFINED_ID,
                        perm: (mode >> 6) & 7,
                    },
                    Entry {
                        tag: GROUP_OBJ,
                        id: UNDEFINED_ID,
                        perm: (mode >> 3) & 7,
                    },
                    Entry {
                        tag: OTHER,
                        id: UNDEFINED_ID,
                        perm: mode & 7,
                    },
                ]);
            }
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(e),
        }
    }
}

/// Writes `acl` back with its mask recomputed: the mask is the union of
/// the group class (the owning group and every named entry), and there is
/// none when no named entry is left, so the kernel can fold the ACL into
/// the mode bits.
fn write(path: &Path, mut acl: Vec<Entry>) -> io::Result<()> {
    acl.retain(|e| e.tag != MASK);
    let named = acl.iter().any(|e| e.tag == USER || e.tag == GROUP);
    if named {
        let perm = acl
            .iter()
            .filter(|e| matches!(e.tag, USER | GROUP | GROUP_OBJ))
            .fold(0, |m, e| m | e.perm);
        acl.push(Entry {
            tag: MASK,
            id: UNDEFINED_ID,
            perm,
        });
    }
    acl.sort();
    let buf = encode(&acl);
    let c = c_path(path)?;
    // SAFETY: both strings are NUL-terminated and `buf` is readable for
    // the length given.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            XATTR.as_ptr().cast(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn decode(buf: &[u8]) -> io::Result<Vec<Entry>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("ACL: {why}"));
    if buf.len() < 4 || !(buf.len() - 4).is_multiple_of(ENTRY) {
        return Err(bad("its length is not a header and whole entries"));
    }
    if u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) != VERSION {
        return Err(bad("not version 2"));
    }
    Ok(buf[4..]
        .chunks_exact(ENTRY)
        .map(|c| Entry {
            tag: u16::from_le_bytes([c[0], c[1]]),
            perm: u16::from_le_bytes([c[2], c[3]]),
            id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

fn encode(acl: &[Entry]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(4 + acl.len() * ENTRY);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    for e in acl {
        buf.extend_from_slice(&e.tag.to_le_bytes());
        buf.extend_from_slice(&e.perm.to_le_bytes());
        buf.extend_from_slice(&e.id.to_le_bytes());
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn has_acl(path: &Path) -> bool {
        let c = c_path(path).unwrap();
        // SAFETY: a size query: NUL-terminated strings, no buffer.
        unsafe { libc::getxattr(c.as_ptr(), XATTR.as_ptr().cast(), std::ptr::null_mut(), 0) >= 0 }
    }

    /// Whether `uid` can open `path` for writing, tried by a child that
    /// runs as that uid.
    fn can_write_as(uid: u32, path: &Path) -> bool {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sh")
            .arg("-c")
            .arg("echo x >> \"$0\"")
            .arg(path)
            .uid(uid)
            .gid(uid)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    #[test]
    fn the_entry_is_what_lets_the_uid_in() {
        // SAFETY: geteuid only reads the caller's credentials.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to run a child as another uid");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let f = dir.path().join("disk.img");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!can_write_as(100_003, &f));
        grant(&f, 100_003, Access::ReadWrite).unwrap();
        assert!(can_write_as(100_003, &f));
        assert!(!can_write_as(100_004, &f), "another uid stays out");
        grant(&f, 100_003, Access::Read).unwrap();
        assert!(!can_write_as(100_003, &f), "read-only is read-only");
        revoke(&f, 100_003).unwrap();
        assert!(!can_write_as(100_003, &f));
    }

    #[test]
    fn entries_round_trip_through_the_kernels_layout() {
        let acl = vec![
            Entry {
                tag: USER_OBJ,
                id: UNDEFINED_ID,
                perm: 6,
            },
            Entry {
                tag: USER,
                id: 100_000,
                perm: 4,
            },
        ];
        assert_eq!(decode(&encode(&acl)).unwrap(), acl);
        assert!(decode(&[2, 0, 0, 0, 1]).is_err());
        assert!(decode(&[3, 0, 0, 0]).is_err());
    }

    #[test]
    fn grant_then_revoke_leaves_the_file_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("disk.img");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        grant(&f, 100_001, Access::ReadWrite).unwrap();
        assert_eq!(entry_for(&f, 100_001).unwrap(), Some(Access::ReadWrite));
        // The mask is the group class bits of the mode while an entry is there.
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o660);
        grant(&f, 100_002, Access::Read).unwrap();
        assert_eq!(entry_for(&f, 100_002).unwrap(), Some(Access::Read));
        revoke(&f, 100_001).unwrap();
        assert_eq!(entry_for(&f, 100_001).unwrap(), None);
        assert_eq!(entry_for(&f, 100_002).unwrap(), Some(Access::Read));
        revoke(&f, 100_002).unwrap();
        assert!(!has_acl(&f), "an ACL equal to the mode is folded away");
        assert_eq!(std::fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        // Revoking what is not there, or on a file that is gone, is no error.
        revoke(&f, 100_002).unwrap();
        revoke(&dir.path().join("gone"), 100_002).unwrap();
    }
}
