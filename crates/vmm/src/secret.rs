//! Secrets the VMM is given for its disks: `--secret id=ID,file=PATH|fd=N`
//! (QEMU's `-object secret`), read once at start before the VMM confines
//! itself, and named by `--disk ...,secret=ID`; and [`SecretText`], how a
//! secret is held (never printed, zeroed when dropped).

use std::path::PathBuf;
use std::str::FromStr;

use crate::device_config::{device_id, pairs, DiskConfig};

/// A secret's text (a CHAP password): never printed, zeroed when dropped.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// `text` as a secret.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The text itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        // SAFETY: the bytes are overwritten with zeroes, which keeps the
        // string valid UTF-8; volatile so the store is not elided.
        for b in unsafe { self.0.as_bytes_mut() } {
            // SAFETY: a valid, aligned `&mut u8`.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The largest secret `--secret` reads, in bytes.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Where a `--secret` is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding the secret itself (`file=PATH`).
    File(PathBuf),
    /// An inherited descriptor (a pipe, a memfd) read to its end and
    /// closed (`fd=N`): what the management daemon hands over.
    Fd(i32),
}

/// One `--secret id=ID,file=PATH|fd=N`, QEMU's `-object secret` for the
/// VMM: a value read at start, before the VMM confines itself, and named
/// by `secret=ID` in a `--disk` option, so it never stands in the
/// command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretConfig {
    /// The name `--disk ...,secret=ID` uses.
    pub id: String,
    /// Where the value is.
    pub source: SecretSource,
}

impl FromStr for SecretConfig {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const WHAT: &str = "--secret";
        let mut id = None;
        let mut source = None;
        for (k, v) in pairs(WHAT, s, &["id", "file", "fd"])? {
            match k.as_str() {
                "id" => id = Some(device_id(WHAT, &v)?),
                "file" if source.is_none() => source = Some(SecretSource::File(PathBuf::from(v))),
                "fd" if source.is_none() => {
                    let fd = v.parse::<i32>().ok().filter(|fd| *fd > 2).ok_or_else(|| {
                        format!("{WHAT}: fd={v} must be an inherited descriptor above 2")
                    })?;
                    source = Some(SecretSource::Fd(fd));
                }
                _ => return Err(format!("{WHAT}: give one of file= and fd=")),
            }
        }
        Ok(SecretConfig {
            id: id.ok_or_else(|| format!("{WHAT}: id=... is required"))?,
            source: source.ok_or_else(|| format!("{WHAT}: file=PATH or fd=N is required"))?,
        })
    }
}

impl SecretConfig {
    /// Reads the value (once: an `fd=` is closed after). It must be text
    /// without NUL bytes, as a CHAP secret is.
    pub fn read(&self) -> Result<SecretText, String> {
        use std::io::Read;
        let what = format!("--secret id={}", self.id);
        let mut bytes = Vec::new();
        let read = match &self.source {
            SecretSource::File(path) => std::fs::File::open(path)
                .and_then(|f| f.take(MAX_SECRET_BYTES + 1).read_to_end(&mut bytes))
                .map_err(|e| format!("{what}: {}: {e}", path.display())),
            SecretSource::Fd(fd) => {
                // SAFETY: F_GETFD only asks whether the descriptor is open.
                if unsafe { libc::fcntl(*fd, libc::F_GETFD) } < 0 {
                    return Err(format!("{what}: fd={fd} is not an open descriptor"));
                }
                // SAFETY: the descriptor is open and named by this option
                // only: this takes it over, and closes it after reading.
                let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(*fd) };
                file.take(MAX_SECRET_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(|e| format!("{what}: fd={fd}: {e}"))
            }
        };
        let result = read.and_then(|n| {
            if n as u64 > MAX_SECRET_BYTES {
                return Err(format!("{what}: over {MAX_SECRET_BYTES} bytes"));
            }
            Ok(())
        });
        let text = result.and_then(|()| {
            String::from_utf8(std::mem::take(&mut bytes))
                .ok()
                .filter(|t| !t.is_empty() && !t.contains('\0'))
                .ok_or_else(|| {
                    format!("{what}: the secret must be text without NUL bytes, and not empty")
                })
        });
        bytes.fill(0);
        text.map(SecretText)
    }
}

/// Gives each disk that names a `--secret` (`secret=ID`) its value, read
/// now: before the VMM confines itself, it reads every secret it was
/// given (an unused one too, so that its descriptor is closed).
pub fn resolve_secrets(disks: &mut [DiskConfig], secrets: &[SecretConfig]) -> Result<(), String> {
    let mut read = Vec::new();
    for (i, s) in secrets.iter().enumerate() {
        if secrets[..i].iter().any(|o| o.id == s.id) {
            return Err(format!("--secret id={} is given twice", s.id));
        }
        read.push((s.id.clone(), s.read()?));
    }
    for disk in disks {
        let Some(id) = &disk.secret else {
            continue;
        };
        let value = read
            .iter()
            .find(|(sid, _)| sid == id)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                format!(
                    "--disk {}: secret={id} names no --secret",
                    disk.path.display()
                )
            })?;
        disk.chap_secret = Some(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_from_a_file_or_a_descriptor_and_given_to_their_disk() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("vireo-secret-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "file-secret").unwrap();
        let by_file: SecretConfig = format!("id=a,file={}", file.display()).parse().unwrap();
        assert_eq!(by_file.read().unwrap().expose(), "file-secret");
        assert!(!format!("{:?}", by_file.read().unwrap()).contains("file-secret"));
        let mut fds = [0i32; 2];
        // SAFETY: pipe writes two new descriptors into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the write end is new and owned here.
        let mut w = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        w.write_all(b"fd-secret").unwrap();
        drop(w);
        let by_fd: SecretConfig = format!("id=b,fd={}", fds[0]).parse().unwrap();
        let mut disks: Vec<DiskConfig> = vec![
            "iscsi://u@h/iqn.x:y/1,secret=b".parse().unwrap(),
            "path=/x.img".parse().unwrap(),
        ];
        resolve_secrets(&mut disks, &[by_file.clone(), by_fd]).unwrap();
        assert_eq!(disks[0].chap_secret.as_ref().unwrap().expose(), "fd-secret");
        assert!(disks[1].chap_secret.is_none());
        // The descriptor was closed after reading.
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        assert!(unsafe { libc::fcntl(fds[0], libc::F_GETFD) } < 0);
        let mut orphan: Vec<DiskConfig> = vec!["iscsi://u@h/iqn.x:y/1,secret=zz".parse().unwrap()];
        let e = resolve_secrets(&mut orphan, std::slice::from_ref(&by_file)).unwrap_err();
        assert!(e.contains("secret=zz names no --secret"), "{e}");
        let e = resolve_secrets(&mut [], &[by_file.clone(), by_file]).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        for bad in [
            "id=a",
            "file=/x",
            "id=a,file=/x,fd=7",
            "id=a,fd=1",
            "id=a/b,file=/x",
        ] {
            assert!(bad.parse::<SecretConfig>().is_err(), "{bad}");
        }
        assert!("path=/x.img,secret=a".parse::<DiskConfig>().is_err());
        let empty = dir.join("empty");
        std::fs::write(&empty, "").unwrap();
        let e: SecretConfig = format!("id=e,file={}", empty.display()).parse().unwrap();
        assert!(e.read().is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
