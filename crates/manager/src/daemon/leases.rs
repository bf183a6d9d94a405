//! Volume leases across hosts (libvirt's virtlockd or sanlock role): a
//! running domain's writable disks that are volumes of a file-based pool
//! (`dir`, `fs`) are leased in the pool itself ([`crate::storage::lease`]),
//! so a daemon on another host that shares the pool refuses to start a
//! domain on them.
//!
//! Leases are taken before a VMM starts and when a disk is plugged, renewed
//! by [`keep`] while the domain runs, and released when it ends or the disk
//! is unplugged. Which leases a domain should hold is always derived from
//! the registry (its live disks and the disks a start in progress claims),
//! so every end of a domain releases them the same way
//! ([`release_unwanted`]), and [`keep`] releases what no domain accounts
//! for.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use virtxml::Uuid;

use super::failure::Failure;
use super::{pools, Daemon};
use crate::storage::lease::{
    decide, lease_path, now_secs, peek, Holder, HostId, LockedLease, Observer, Record, Verdict,
    LEASE_DIR,
};

/// How leases are taken, when they are.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// A lease not renewed for this long may be taken by another host.
    pub timeout: Duration,
    /// This daemon as lease files name it.
    pub host: HostId,
}

impl LeaseSettings {
    /// How often held leases are renewed and other hosts' watched.
    fn period(&self) -> Duration {
        (self.timeout / 5).max(Duration::from_millis(100))
    }

    /// A lease not renewed for this long is given up (two renewals in a
    /// row failed). Seen at the next check, at most a period later, that
    /// is four fifths of the timeout: a fifth before another host, which
    /// waits `timeout` on its own clock from the last change it saw, can
    /// take it, for the pause to land.
    fn give_up(&self) -> Duration {
        self.timeout * 3 / 5
    }
}

/// Where the lease of one disk lives.
#[derive(Debug, Clone)]
struct Place {
    file: PathBuf,
    pool: String,
    volume: String,
}

impl Place {
    fn what(&self) -> String {
        format!(
            "volume '{}' of pool '{}'",
            self.volume.escape_debug(),
            self.pool.escape_debug()
        )
    }
}

/// A lease this daemon holds.
struct Held {
    place: Place,
    /// The disk it covers, as the registry names it.
    disk: PathBuf,
    domain: String,
    uuid: Uuid,
    /// The counter last written (0 while being taken).
    counter: u64,
    /// The last successful write, on this host's clock.
    renewed: Instant,
    /// Being taken: not renewed, not released by others.
    pending: bool,
    /// Why it was lost, once it was (someone else holds it now).
    lost: Option<String>,
}

/// The daemon's leases.
pub(crate) struct Leases {
    settings: Option<LeaseSettings>,
    held: Mutex<HashMap<PathBuf, Held>>,
    observer: Mutex<Observer>,
}

impl Leases {
    /// Leases as `settings` say; `None` turns them off.
    pub fn new(settings: Option<LeaseSettings>) -> Leases {
        Leases {
            settings,
            held: Mutex::default(),
            observer: Mutex::default(),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<PathBuf, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn observer(&self) -> MutexGuard<'_, Observer> {
        self.observer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The leases `disks` need: writable disks that are files directly in an
/// active file-based pool's directory. Blocking (canonical paths).
fn places(d: &Daemon, disks: &[(PathBuf, bool)]) -> Vec<(PathBuf, Place)> {
    let pools: Vec<(String, PathBuf)> = pools::file_pool_dirs(d)
        .into_iter()
        .map(|(n, p)| (n, std::fs::canonicalize(&p).unwrap_or(p)))
        .collect();
    let mut out: Vec<(PathBuf, Place)> = Vec::new();
    for (disk, readonly) in disks {
        if *readonly {
            continue;
        }
        let (Some(parent), Some(volume)) = (disk.parent(), disk.file_name()) else {
            continue;
        };
        let Some(volume) = volume.to_str() else {
            continue;
        };
        let Some((pool, dir)) = pools.iter().find(|(_, dir)| dir == parent) else {
            continue;
        };
        let Ok(file) = lease_path(dir, volume) else {
            continue;
        };
        if !out.iter().any(|(_, p)| p.file == file) {
            let place = Place {
                file,
                pool: pool.clone(),
                volume: volume.to_string(),
            };
            out.push((disk.clone(), place));
        }
    }
    out
}

/// Takes the leases of `disks` for domain `name`, all or none. Blocking.
pub(crate) fn acquire(
    d: &Daemon,
    name: &str,
    uuid: Uuid,
    disks: &[(PathBuf, bool)],
) -> Result<(), Failure> {
    let Some(s) = &d.leases.settings else {
        return Ok(());
    };
    let mut taken: Vec<PathBuf> = Vec::new();
    for (disk, place) in places(d, disks) {
        {
            let mut held = d.leases.held();
            match held.get(&place.file) {
                Some(h) if h.uuid == uuid && h.lost.is_none() => continue,
                Some(h) if h.uuid != uuid => {
                    let msg = format!(
                        "{} is in use by domain '{}' on this host",
                        place.what(),
                        h.domain
                    );
                    drop(held);
                    release_files(d, &taken);
                    return Err(Failure::conflict(msg));
                }
                _ => {}
            }
            held.insert(
                place.file.clone(),
                Held {
                    place: place.clone(),
                    disk,
                    domain: name.to_string(),
                    uuid,
                    counter: 0,
                    renewed: Instant::now(),
                    pending: true,
                    lost: None,
                },
            );
        }
        match take(d, s, &place, name, uuid) {
            Ok(counter) => {
                if let Some(h) = d.leases.held().get_mut(&place.file) {
                    h.counter = counter;
                    h.renewed = Instant::now();
                    h.pending = false;
                }
                taken.push(place.file);
            }
            Err(e) => {
                d.leases.held().remove(&place.file);
                release_files(d, &taken);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Reads the lease at `place` under its lock and takes it if it may.
fn take(
    d: &Daemon,
    s: &LeaseSettings,
    place: &Place,
    name: &str,
    uuid: Uuid,
) -> Result<u64, Failure> {
    let io = |e: std::io::Error| {
        Failure::driver(format!(
            "cannot take the lease of {} ({}): {e}",
            place.what(),
            place.file.display()
        ))
    };
    let lease = LockedLease::open(&place.file).map_err(io)?;
    let (bytes, record) = lease.read().map_err(io)?;
    let unchanged = d
        .leases
        .observer()
        .observe(&place.file, &bytes, Instant::now());
    match decide(&record, &s.host, &place.what(), unchanged, s.timeout) {
        Verdict::Refuse(msg) => Err(Failure::conflict(msg)),
        Verdict::Take(previous) => {
            if let Some(previous) = previous {
                tracing::warn!("{}: taking its lease over: {previous}", place.what());
            }
            let counter = record.counter().wrapping_add(1);
            lease
                .write(&Record::Held(Holder {
                    host_key: s.host.key.clone(),
                    host: s.host.name.clone(),
                    domain: name.to_string(),
                    uuid: uuid.to_string(),
                    counter,
                    renewed: now_secs(),
                }))
                .map_err(io)?;
            Ok(counter)
        }
    }
}

/// Releases the leases of domain `name` (`uuid`) that neither its live
/// disks nor a start in progress need any more: all of them once it has
/// ended. Blocking.
pub(crate) fn release_unwanted(d: &Daemon, name: &str, uuid: Uuid) {
    if d.leases.settings.is_none() {
        return;
    }
    let wanted: HashSet<PathBuf> = {
        let table = d.registry.lock();
        table
            .domains
            .get(name)
            .filter(|e| e.uuid == uuid)
            .map(|e| {
                e.live
                    .iter()
                    .flat_map(|l| l.disks.iter())
                    .chain(e.claimed.iter())
                    .filter(|(_, ro)| !ro)
                    .map(|(p, _)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let files: Vec<PathBuf> = d
        .leases
        .held()
        .iter()
        .filter(|(_, h)| h.uuid == uuid && !h.pending && !wanted.contains(&h.disk))
        .map(|(f, _)| f.clone())
        .collect();
    release_files(d, &files);
}

/// Releases the leases at `files` (this daemon's), leaving one that
/// another holder took meanwhile alone.
fn release_files(d: &Daemon, files: &[PathBuf]) {
    let Some(s) = &d.leases.settings else {
        return;
    };
    for file in files {
        let Some(h) = d.leases.held().remove(file) else {
            continue;
        };
        if let Err(e) = free(s, file, h.uuid) {
            // Unrenewed, it expires on other hosts after the timeout.
            tracing::warn!(
                "cannot release the lease of {} ({}): {e}",
                h.place.what(),
                file.display()
            );
        }
    }
}

/// Marks the lease at `file` free if this host holds it for `uuid`.
fn free(s: &LeaseSettings, file: &Path, uuid: Uuid) -> std::io::Result<()> {
    let lease = LockedLease::open(file)?;
    let (_, record) = lease.read()?;
    match &record {
        Record::Held(h) if h.host_key == s.host.key && h.uuid == uuid.to_string() => {
            lease.write(&Record::Free {
                counter: record.counter().wrapping_add(1),
            })
        }
        _ => Ok(()),
    }
}

/// Renews every lease held; marks those another holder took as lost.
fn renew_all(d: &Daemon, s: &LeaseSettings) {
    let due: Vec<(PathBuf, Uuid, u64)> = d
        .leases
        .held()
        .iter()
        .filter(|(_, h)| !h.pending && h.lost.is_none())
        .map(|(f, h)| (f.clone(), h.uuid, h.counter))
        .collect();
    for (file, uuid, counter) in due {
        let renewed = (|| -> std::io::Result<Result<u64, String>> {
            let lease = LockedLease::open(&file)?;
            let (_, record) = lease.read()?;
            match &record {
                Record::Held(h)
                    if h.host_key == s.host.key
                        && h.uuid == uuid.to_string()
                        && h.counter == counter =>
                {
                    let mut next = h.clone();
                    next.counter = counter.wrapping_add(1);
                    next.renewed = now_secs();
                    lease.write(&Record::Held(next))?;
                    Ok(Ok(counter.wrapping_add(1)))
                }
                Record::Held(h) => Ok(Err(format!(
                    "domain '{}' on host '{}' holds it now",
                    h.domain.escape_debug(),
                    h.host.escape_debug()
                ))),
                Record::Free { .. } => Ok(Err("it was marked free".to_string())),
                Record::Damaged(why) => Ok(Err(format!("its lease file is damaged ({why})"))),
            }
        })();
        let mut held = d.leases.held();
        let Some(h) = held
            .get_mut(&file)
            .filter(|h| h.uuid == uuid && h.counter == counter)
        else {
            continue;
        };
        match renewed {
            Ok(Ok(next)) => {
                h.counter = next;
                h.renewed = Instant::now();
            }
            Ok(Err(why)) => h.lost = Some(why),
            Err(e) => tracing::warn!(
                "cannot renew the lease of {} ({}): {e}",
                h.place.what(),
                file.display()
            ),
        }
    }
}

/// Reads every lease file of the active file pools, so that a holder that
/// stopped renewing is seen as stale `timeout` after it stopped, whether
/// or not anyone tried to start a domain on its volumes meanwhile.
fn watch_pools(d: &Daemon) {
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for (_, dir) in pools::file_pool_dirs(d) {
        let Ok(entries) = std::fs::read_dir(dir.join(LEASE_DIR)) else {
            continue;
        };
        for entry in entries.flatten().take(MAX_WATCHED) {
            let path = entry.path();
            if let Ok(bytes) = peek(&path) {
                d.leases.observer().observe(&path, &bytes, Instant::now());
                seen.insert(path);
            }
        }
    }
    d.leases.observer().retain(|p| seen.contains(p));
}

/// Most lease files watched per pool: a pool with more volumes than
/// this still has them leased, but a stale holder of one beyond it is
/// only timed from the first start that tries it.
const MAX_WATCHED: usize = 10_000;

/// Releases held leases whose domain is neither running nor starting
/// (a path that ended a domain without releasing them).
fn release_orphans(d: &Daemon) {
    let files: Vec<PathBuf> = {
        let held = d.leases.held();
        let table = d.registry.lock();
        held.iter()
            .filter(|(_, h)| !h.pending)
            .filter(|(_, h)| {
                !table
                    .domains
                    .get(&h.domain)
                    .filter(|e| e.uuid == h.uuid)
                    .is_some_and(|e| e.live.is_some() || !e.claimed.is_empty())
            })
            .map(|(f, _)| f.clone())
            .collect()
    };
    if !files.is_empty() {
        tracing::info!(
            "releasing {} lease(s) of domains no longer running",
            files.len()
        );
        release_files(d, &files);
    }
}

/// Renews this daemon's leases every fifth of the timeout and watches
/// other hosts'; pauses a domain whose lease is lost (taken by another
/// holder, or not renewed for three fifths of the timeout: storage gone).
pub(crate) async fn keep(d: Arc<Daemon>) {
    let Some(s) = d.leases.settings.clone() else {
        return;
    };
    let mut work: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::time::sleep(s.period()).await;
        // A renewal stuck on dead storage is not stacked up on; the lost
        // check below still runs.
        if work.as_ref().is_none_or(|w| w.is_finished()) {
            let (wd, ws) = (d.clone(), s.clone());
            work = Some(tokio::task::spawn_blocking(move || {
                renew_all(&wd, &ws);
                release_orphans(&wd);
                watch_pools(&wd);
            }));
        }
        let lost: Vec<(String, Uuid, String)> = {
            let mut held = d.leases.held();
            let gone: Vec<PathBuf> = held
                .iter()
                .filter(|(_, h)| {
                    !h.pending && (h.lost.is_some() || h.renewed.elapsed() > s.give_up())
                })
                .map(|(f, _)| f.clone())
                .collect();
            gone.iter()
                .filter_map(|f| held.remove(f))
                .map(|h| {
                    let why = h.lost.unwrap_or_else(|| {
                        format!("not renewed for {} s", h.renewed.elapsed().as_secs())
                    });
                    (h.domain, h.uuid, format!("{}: {why}", h.place.what()))
                })
                .collect()
        };
        for (name, uuid, why) in lost {
            tokio::spawn(pause_lost(d.clone(), name, uuid, why));
        }
    }
}

/// A domain that lost a lease is paused (as libvirt's
/// `on_lockfailure='pause'`): another host may write the volume now.
async fn pause_lost(d: Arc<Daemon>, name: String, uuid: Uuid, why: String) {
    tracing::error!("domain '{name}' lost the lease of {why}; it is paused");
    let running = d
        .registry
        .lock()
        .get_mut(&name, uuid)
        .is_some_and(|e| e.live.is_some());
    if !running {
        return;
    }
    if let Err(e) = super::ops::suspend(&d, &uuid.to_string()).await {
        tracing::error!("domain '{name}': cannot pause it: {}", e.message);
    }
}

/// A running domain's name, UUID and disks.
type RunningDisks = (String, Uuid, Vec<(PathBuf, bool)>);

/// After re-adoption at daemon start: takes the leases of every running
/// domain again (pausing one whose lease another host holds now) and
/// frees this host's leases that no surviving domain holds.
pub(crate) async fn adopt(d: &Arc<Daemon>) {
    if d.leases.settings.is_none() {
        return;
    }
    let running: Vec<RunningDisks> = {
        let table = d.registry.lock();
        table
            .domains
            .iter()
            .filter_map(|(n, e)| Some((n.clone(), e.uuid, e.live.as_ref()?.disks.clone())))
            .collect()
    };
    for (name, uuid, disks) in running {
        let ad = d.clone();
        let n = name.clone();
        let taken = tokio::task::spawn_blocking(move || acquire(&ad, &n, uuid, &disks)).await;
        if let Ok(Err(e)) = taken {
            pause_lost(d.clone(), name, uuid, e.message).await;
        }
    }
    let od = d.clone();
    let _ = tokio::task::spawn_blocking(move || free_strays(&od)).await;
}

/// Frees lease files of the active file pools that name this host but no
/// lease it holds (their domains did not survive a restart).
fn free_strays(d: &Daemon) {
    let Some(s) = &d.leases.settings else {
        return;
    };
    for (pool, dir) in pools::file_pool_dirs(d) {
        let Ok(entries) = std::fs::read_dir(dir.join(LEASE_DIR)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if d.leases.held().contains_key(&path) {
                continue;
            }
            let freed = (|| -> std::io::Result<Option<String>> {
                let lease = LockedLease::open(&path)?;
                let (_, record) = lease.read()?;
                match &record {
                    Record::Held(h) if h.host_key == s.host.key => {
                        lease.write(&Record::Free {
                            counter: record.counter().wrapping_add(1),
                        })?;
                        Ok(Some(h.domain.clone()))
                    }
                    _ => Ok(None),
                }
            })();
            match freed {
                Ok(Some(domain)) => tracing::info!(
                    "released the lease of {} in pool '{pool}': domain '{domain}' did not survive",
                    path.display()
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!("lease file {}: {e}", path.display()),
            }
        }
    }
}

/// How long the end of a domain waits for its leases' release: storage
/// that hangs must not keep the domain from being recorded as ended. A
/// release not done by then is forgotten here (never renewed again) and
/// expires on other hosts after the timeout.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// [`release_unwanted`] off the async thread, waited for at most
/// [`RELEASE_WAIT`].
pub(crate) async fn settle(d: &Arc<Daemon>, name: &str, uuid: Uuid) {
    let (sd, n) = (d.clone(), name.to_string());
    let release = tokio::task::spawn_blocking(move || release_unwanted(&sd, &n, uuid));
    if tokio::time::timeout(RELEASE_WAIT, release).await.is_err() {
        tracing::warn!(
            "domain '{name}': releasing its leases takes more than {} s; \
             they expire on other hosts by themselves",
            RELEASE_WAIT.as_secs()
        );
    }
}

/// [`acquire`] off the async thread.
pub(crate) async fn take_for(
    d: &Arc<Daemon>,
    name: &str,
    uuid: Uuid,
    disks: Vec<(PathBuf, bool)>,
) -> Result<(), Failure> {
    let (ad, n) = (d.clone(), name.to_string());
    tokio::task::spawn_blocking(move || acquire(&ad, &n, uuid, &disks)).await?
}

/// The one line refusing to delete volume `vol` of `pool` (its directory
/// `dir`) while another host holds a live lease of it (`vol-delete`);
/// `None` when it may go. Blocking.
pub(crate) fn held_elsewhere(d: &Daemon, pool: &str, dir: &Path, vol: &str) -> Option<String> {
    let s = d.leases.settings.as_ref()?;
    let file = lease_path(dir, vol).ok()?;
    let bytes = peek(&file).ok()?;
    let record = Record::parse(&bytes);
    if matches!(&record, Record::Held(h) if h.host_key == s.host.key) {
        // Ours: the registry's own check decides.
        return None;
    }
    let unchanged = d.leases.observer().observe(&file, &bytes, Instant::now());
    let what = format!(
        "storage volume '{}' of pool '{}'",
        vol.escape_debug(),
        pool.escape_debug()
    );
    match decide(&record, &s.host, &what, unchanged, s.timeout) {
        Verdict::Refuse(msg) => Some(msg),
        Verdict::Take(_) => None,
    }
}
