//! Volume leases kept on the pool itself: one small file per volume in
//! `POOL/.vireo-leases/`, holding which host and domain write the volume
//! and a heartbeat counter the holder advances while it runs.
//!
//! Every read-modify-write of a lease file happens under an OFD lock on
//! that file. On a shared filesystem (NFS, OCFS2, GFS2, CephFS) those are
//! the cluster's locks, so two hosts never both see a lease free and both
//! take it. A holder that stops renewing is noticed by the others as a
//! record that does not change: each contender times that on its own
//! monotonic clock ([`Observer`]), as sanlock's delta leases do, so clock
//! skew between hosts does not matter.
//!
//! This module knows files and records only; the daemon decides when to
//! take, renew and release (`daemon/leases.rs`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The directory of lease files inside a pool's target directory (a
/// dot-name, so it is never listed as a volume).
pub const LEASE_DIR: &str = ".vireo-leases";

/// Every record is written as exactly this many bytes at offset 0, so a
/// shorter record never leaves the tail of a longer one behind.
pub const RECORD_SIZE: usize = 4096;

/// Longest value of one field.
const MAX_FIELD: usize = 1024;

/// How long a lease file's lock is waited for: another host holds it
/// only for one read and one write.
const LOCK_WAIT: Duration = Duration::from_secs(5);

const MAGIC: &str = "vireo-lease v1";

/// Who takes leases: a stable key that tells hosts apart and the name
/// errors show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostId {
    /// Compared to decide whether a lease is ours: stable across daemon
    /// restarts, different on every host (and state directory).
    pub key: String,
    /// Shown in errors.
    pub name: String,
}

/// A lease held by a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holding host's [`HostId::key`].
    pub host_key: String,
    /// The holding host's [`HostId::name`].
    pub host: String,
    /// The domain's name.
    pub domain: String,
    /// The domain's UUID, as text.
    pub uuid: String,
    /// Advanced by every renewal.
    pub counter: u64,
    /// Wall-clock time of the last renewal (seconds since the epoch), for
    /// people: expiry never reads it.
    pub renewed: u64,
}

/// What a lease file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Nobody holds the volume; `counter` carries on from the last holder.
    Free {
        /// The last counter written.
        counter: u64,
    },
    /// A domain holds it.
    Held(Holder),
    /// Not a record this version writes (truncated, foreign, hostile).
    Damaged(String),
}

impl Record {
    /// The counter a following record continues from.
    pub fn counter(&self) -> u64 {
        match self {
            Record::Free { counter } => *counter,
            Record::Held(h) => h.counter,
            Record::Damaged(_) => 0,
        }
    }

    /// Parses the bytes of a lease file. Never fails: what is not a
    /// record is [`Record::Damaged`], saying why.
    pub fn parse(bytes: &[u8]) -> Record {
        let end = bytes
            .iter()
            .rposition(|b| *b != b'\n' && *b != 0)
            .map_or(0, |i| i + 1);
        if end == 0 {
            // A lease file just made, never written.
            return Record::Free { counter: 0 };
        }
        let Ok(text) = std::str::from_utf8(&bytes[..end]) else {
            return Record::Damaged("not UTF-8 text".to_string());
        };
        let mut lines = text.split('\n');
        if lines.next() != Some(MAGIC) {
            return Record::Damaged(format!("does not start with '{MAGIC}'"));
        }
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for line in lines {
            let Some((k, v)) = line.split_once('=') else {
                return Record::Damaged(format!("line '{}' is not key=value", line.escape_debug()));
            };
            if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                return Record::Damaged(format!(
                    "field '{}' is too long or not text",
                    k.escape_debug()
                ));
            }
            if fields.insert(k, v).is_some() {
                return Record::Damaged(format!("field '{}' is repeated", k.escape_debug()));
            }
        }
        let mut take = |k: &str| fields.remove(k);
        let number = |v: Option<&str>, k: &str| {
            v.and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Record::Damaged(format!("field '{k}' is missing or not a number")))
        };
        let state = take("state");
        let counter = match number(take("counter"), "counter") {
            Ok(c) => c,
            Err(r) => return r,
        };
        let record = match state {
            Some("free") => Record::Free { counter },
            Some("held") => {
                let renewed = match number(take("renewed"), "renewed") {
                    Ok(r) => r,
                    Err(r) => return r,
                };
                let mut text = |k: &str| take(k).filter(|v| !v.is_empty()).map(str::to_string);
                match (text("host-key"), text("host"), text("domain"), text("uuid")) {
                    (Some(host_key), Some(host), Some(domain), Some(uuid)) => {
                        Record::Held(Holder {
                            host_key,
                            host,
                            domain,
                            uuid,
                            counter,
                            renewed,
                        })
                    }
                    _ => return Record::Damaged("a held lease without its holder".to_string()),
                }
            }
            _ => return Record::Damaged("no state=free or state=held".to_string()),
        };
        match fields.keys().next() {
            Some(k) => Record::Damaged(format!("unknown field '{}'", k.escape_debug())),
            None => record,
        }
    }

    /// The record as written: [`RECORD_SIZE`] bytes.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let text = match self {
            Record::Free { counter } => format!("{MAGIC}\nstate=free\ncounter={counter}\n"),
            Record::Held(h) => {
                for v in [&h.host_key, &h.host, &h.domain, &h.uuid] {
                    if v.is_empty() || v.len() > MAX_FIELD || v.chars().any(char::is_control) {
                        return Err(invalid(format!(
                            "'{}' cannot be written in a lease",
                            v.escape_debug()
                        )));
                    }
                }
                format!(
                    "{MAGIC}\nstate=held\nhost-key={}\nhost={}\ndomain={}\nuuid={}\ncounter={}\nrenewed={}\n",
                    h.host_key, h.host, h.domain, h.uuid, h.counter, h.renewed
                )
            }
            Record::Damaged(_) => return Err(invalid("a damaged record is never written".into())),
        };
        let mut bytes = text.into_bytes();
        if bytes.len() > RECORD_SIZE {
            return Err(invalid("the lease record is too long".into()));
        }
        bytes.resize(RECORD_SIZE, b'\n');
        Ok(bytes)
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Seconds since the epoch now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The lease file of volume `volume` of the pool whose target directory
/// is `pool_dir`. Volume names are file names in the pool, so two hosts
/// that mount the pool at different paths name the same file.
pub fn lease_path(pool_dir: &Path, volume: &str) -> io::Result<PathBuf> {
    if volume.is_empty()
        || volume == "."
        || volume == ".."
        || volume.contains('/')
        || volume.contains('\0')
        || volume.len() > 255
    {
        return Err(invalid(format!(
            "'{}' cannot name a lease file",
            volume.escape_debug()
        )));
    }
    Ok(pool_dir.join(LEASE_DIR).join(volume))
}

/// A lease file, open and locked (OFD lock, whole file) until dropped.
pub struct LockedLease {
    file: File,
    path: PathBuf,
}

impl LockedLease {
    /// Opens (making it and its directory if need be) and locks the lease
    /// file at `path` ([`lease_path`]). Symbolic links and anything but a
    /// regular file are refused: a lease file is written to.
    pub fn open(path: &Path) -> io::Result<LockedLease> {
        let dir = path
            .parent()
            .ok_or_else(|| invalid(format!("{} has no directory", path.display())))?;
        match std::fs::DirBuilder::new().create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !std::fs::symlink_metadata(dir)?.is_dir() {
            return Err(invalid(format!("{} is not a directory", dir.display())));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    invalid(format!("{} is a symbolic link", path.display()))
                } else {
                    e
                }
            })?;
        if !file.metadata()?.is_file() {
            return Err(invalid(format!("{} is not a regular file", path.display())));
        }
        let deadline = Instant::now() + LOCK_WAIT;
        while !try_lock(&file)? {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} stayed locked by another process for {} s",
                        path.display(),
                        LOCK_WAIT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(LockedLease {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The raw bytes (at most [`RECORD_SIZE`] of them; more makes the
    /// record damaged) and the record they hold.
    pub fn read(&self) -> io::Result<(Vec<u8>, Record)> {
        let bytes = read_bounded(&self.file)?;
        let record = if bytes.len() > RECORD_SIZE {
            Record::Damaged(format!("longer than {RECORD_SIZE} bytes"))
        } else {
            Record::parse(&bytes)
        };
        Ok((bytes, record))
    }

    /// Writes `record` durably.
    pub fn write(&self, record: &Record) -> io::Result<()> {
        let bytes = record.to_bytes()?;
        self.file.write_all_at(&bytes, 0)?;
        if self.file.metadata()?.len() != bytes.len() as u64 {
            self.file.set_len(bytes.len() as u64)?;
        }
        self.file.sync_data()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One more byte than a record, so that an oversized file is seen.
fn read_bounded(file: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; RECORD_SIZE + 1];
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Reads the lease file at `path` without locking it (for watching other
/// hosts' heartbeats: a torn read only looks like a change).
pub fn peek(path: &Path) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(invalid(format!("{} is not a regular file", path.display())));
    }
    read_bounded(&file)
}

/// Removes `pool_dir`'s lease directory when it is all that is left in
/// the pool (`pool-delete`) and every lease in it is free. A held lease
/// (of a volume deleted while leased) is left, and its holder named.
pub fn remove_lease_dir(pool_dir: &Path) -> io::Result<()> {
    let dir = pool_dir.join(LEASE_DIR);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        _ => return Ok(()),
    }
    let others = std::fs::read_dir(pool_dir)?
        .flatten()
        .any(|e| e.file_name() != LEASE_DIR);
    if others {
        return Ok(());
    }
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let lease = LockedLease::open(&path)?;
        if let (_, Record::Held(h)) = lease.read()? {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "{} is held by domain '{}' on host '{}'",
                    path.display(),
                    h.domain.escape_debug(),
                    h.host.escape_debug()
                ),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    std::fs::remove_dir(&dir)
}

fn try_lock(file: &File) -> io::Result<bool> {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::c_short::try_from(libc::F_WRLCK).unwrap_or(1);
    fl.l_whence = libc::c_short::try_from(libc::SEEK_SET).unwrap_or(0);
    // SAFETY: fcntl on a descriptor `file` owns, with a pointer to a live
    // flock for the duration of the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) | Some(libc::EINTR) => Ok(false),
        _ => Err(e),
    }
}

/// How long each lease file seen has kept the same bytes, on this
/// host's monotonic clock.
#[derive(Default)]
pub struct Observer {
    seen: HashMap<PathBuf, (u64, Instant)>,
}

impl Observer {
    /// Records that `path` holds `bytes` at `now`; answers how long it has
    /// held exactly these bytes (zero when they are new).
    pub fn observe(&mut self, path: &Path, bytes: &[u8], now: Instant) -> Duration {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        let digest = h.finish();
        match self.seen.get(path) {
            Some((d, since)) if *d == digest => now.saturating_duration_since(*since),
            _ => {
                self.seen.insert(path.to_path_buf(), (digest, now));
                Duration::ZERO
            }
        }
    }

    /// Forgets every file not in `keep` (files gone, pools stopped).
    pub fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        self.seen.retain(|p, _| keep(p));
    }
}

/// Whether a lease can be taken, and if not, the one line that says why.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Free, ours, or given up by a holder that stopped renewing (`Some`
    /// says whose, for the log).
    Take(Option<String>),
    /// Held by a live holder (or damaged and not yet stale).
    Refuse(String),
}

/// Decides on `record` of the lease of `what` ("volume 'v' of pool 'p'"),
/// unchanged for `unchanged` on this host's clock, with leases expiring
/// after `timeout` without a renewal.
pub fn decide(
    record: &Record,
    me: &HostId,
    what: &str,
    unchanged: Duration,
    timeout: Duration,
) -> Verdict {
    let stale = unchanged >= timeout;
    match record {
        Record::Free { .. } => Verdict::Take(None),
        Record::Held(h) if h.host_key == me.key => Verdict::Take(None),
        Record::Held(h) if stale => Verdict::Take(Some(format!(
            "domain '{}' on host '{}' stopped renewing its lease for {} s",
            h.domain.escape_debug(),
            h.host.escape_debug(),
            unchanged.as_secs()
        ))),
        Record::Held(h) => {
            let age = now_secs().saturating_sub(h.renewed);
            Verdict::Refuse(format!(
                "{what} is in use by domain '{}' on host '{}' (lease renewed {age} s ago; \
                 it expires {} s after its last renewal)",
                h.domain.escape_debug(),
                h.host.escape_debug(),
                timeout.as_secs()
            ))
        }
        Record::Damaged(why) if stale => Verdict::Take(Some(format!(
            "its lease file was damaged ({why}) and unchanged for {} s",
            unchanged.as_secs()
        ))),
        Record::Damaged(why) => Verdict::Refuse(format!(
            "{what} has a damaged lease file ({why}); it is taken over once unchanged for {} s",
            timeout.as_secs()
        )),
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
