//! The table of domains: definitions, states and running instances.
//!
//! One `std::sync::Mutex` guards the table and is held only for quick
//! reads and writes of it, never across a driver call, a disk write or an
//! `.await`: `list`, `dominfo` and `state` read a snapshot and so never
//! wait on a VMM. Operations on one domain are serialized by that
//! domain's own async lock ([`Entry::ops`]), taken before the table's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;
use virtxml::{Domain, DriverKind, Uuid};

use super::failure::Failure;
use crate::api::{DomainState, DomainSummary, StateReason};
use crate::driver::{Instance, RunRecord};

/// A running domain.
#[derive(Clone)]
pub(crate) struct Live {
    /// Its numeric id.
    pub id: u32,
    /// Tells this run from a later one of the same domain.
    pub generation: u64,
    /// The definition it runs with (the live XML).
    pub domain: Arc<Domain>,
    /// What is persisted to find it again.
    pub record: RunRecord,
    /// The driver's handle.
    pub instance: Arc<dyn Instance>,
    /// Its private run directory.
    pub run_dir: PathBuf,
    /// The disks it uses, canonical, with whether read-only.
    pub disks: Vec<(PathBuf, bool)>,
    /// Turns true once the VMM has ended and the table says so.
    pub exited: watch::Receiver<bool>,
    /// When it started (or was re-adopted).
    pub since: std::time::Instant,
    /// Set once its VMM has ended, before its run record is removed: a
    /// hot-plug that rewrites the record after that removes it again.
    pub ended: Arc<std::sync::atomic::AtomicBool>,
}

/// One domain.
pub(crate) struct Entry {
    /// Its UUID (fixed for the entry's life).
    pub uuid: Uuid,
    /// The persistent definition; `None` for a transient domain.
    pub config: Option<Arc<Domain>>,
    /// Whether it starts with the daemon.
    pub autostart: bool,
    /// Its state and why.
    pub state: DomainState,
    /// Why it is in its state.
    pub reason: StateReason,
    /// The running instance.
    pub live: Option<Live>,
    /// Serializes operations on this domain.
    pub ops: Arc<tokio::sync::Mutex<()>>,
    /// Disks claimed by a start in progress, or by a restart (reboot,
    /// `on_*`) waiting to start (so that two domains starting at once
    /// cannot both take one disk, and a rebooting one keeps its leases).
    pub claimed: Vec<(PathBuf, bool)>,
    /// `reboot` pressed the power button: a power-off boots it again.
    pub fake_reboot: bool,
    /// `destroy` is ending it: whatever the driver saw, it was destroyed.
    pub destroying: bool,
    /// The console session attached, by number, and how to end it.
    pub console: Option<(u64, tokio::task::AbortHandle)>,
}

impl Entry {
    /// A new, inactive entry.
    pub fn new(uuid: Uuid, config: Option<Arc<Domain>>) -> Entry {
        Entry {
            uuid,
            config,
            autostart: false,
            state: DomainState::ShutOff,
            reason: StateReason::Defined,
            live: None,
            ops: Arc::new(tokio::sync::Mutex::new(())),
            claimed: Vec::new(),
            fake_reboot: false,
            destroying: false,
            console: None,
        }
    }

    /// The definition that describes it now: the live one while it runs.
    pub fn current(&self) -> Option<&Arc<Domain>> {
        self.live
            .as_ref()
            .map(|l| &l.domain)
            .or(self.config.as_ref())
    }

    /// Whether a definition is kept.
    pub fn persistent(&self) -> bool {
        self.config.is_some()
    }

    /// A row of `list`.
    pub fn summary(&self, name: &str) -> DomainSummary {
        DomainSummary {
            id: self.live.as_ref().map(|l| l.id),
            name: name.to_string(),
            uuid: self.uuid.to_string(),
            state: self.state,
            reason: self.reason,
            persistent: self.persistent(),
            autostart: self.autostart,
        }
    }
}

/// The table itself.
#[derive(Default)]
pub(crate) struct Table {
    /// Domains by name.
    pub domains: BTreeMap<String, Entry>,
    next_id: u32,
    next_generation: u64,
}

impl Table {
    /// Finds a domain as virsh does: an all-digit key is an id first, then
    /// a UUID, then a name.
    pub fn find(&self, key: &str) -> Option<&str> {
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(id) = key.parse::<u32>() {
                let by_id = self
                    .domains
                    .iter()
                    .find(|(_, e)| e.live.as_ref().is_some_and(|l| l.id == id));
                if let Some((name, _)) = by_id {
                    return Some(name);
                }
            }
        }
        if let Ok(uuid) = Uuid::parse(key) {
            if let Some((name, _)) = self.domains.iter().find(|(_, e)| e.uuid == uuid) {
                return Some(name);
            }
        }
        self.domains.get_key_value(key).map(|(n, _)| n.as_str())
    }

    /// The entry named `key` (a name, UUID or id), or 404.
    pub fn lookup(&self, key: &str) -> Result<(&str, &Entry), Failure> {
        let name = self.find(key).ok_or_else(|| no_domain(key))?;
        let entry = self.domains.get(name).ok_or_else(|| no_domain(key))?;
        Ok((name, entry))
    }

    /// The entry `name` if it still has `uuid`.
    pub fn get_mut(&mut self, name: &str, uuid: Uuid) -> Option<&mut Entry> {
        self.domains.get_mut(name).filter(|e| e.uuid == uuid)
    }

    /// Checks a definition's name and UUID against the others: `Ok(true)`
    /// when it is the existing domain of that name and UUID, `Ok(false)`
    /// when it is new, 422 when either is taken by another domain.
    pub fn check_identity(&self, name: &str, uuid: Uuid) -> Result<bool, Failure> {
        if let Some(entry) = self.domains.get(name) {
            if entry.uuid != uuid {
                return Err(Failure::unprocessable(format!(
                    "domain '{name}' already exists with UUID {}",
                    entry.uuid
                )));
            }
            return Ok(true);
        }
        if let Some((other, _)) = self.domains.iter().find(|(_, e)| e.uuid == uuid) {
            return Err(Failure::unprocessable(format!(
                "domain '{other}' already has UUID {uuid}"
            )));
        }
        Ok(false)
    }

    /// The first disk of `disks` that another domain (running, or
    /// starting) uses, unless both use it read-only: `(other, path)`.
    pub fn disk_conflict(
        &self,
        name: &str,
        disks: &[(PathBuf, bool)],
    ) -> Option<(String, PathBuf)> {
        for (other, entry) in &self.domains {
            if other == name {
                continue;
            }
            let theirs = entry
                .live
                .iter()
                .flat_map(|l| l.disks.iter())
                .chain(entry.claimed.iter());
            for (path, readonly) in theirs {
                if let Some((mine, _)) = disks
                    .iter()
                    .find(|(p, ro)| p == path && !(*ro && *readonly))
                {
                    return Some((other.clone(), mine.clone()));
                }
            }
        }
        None
    }

    /// A new numeric id: 1, 2, 3... never reused while the daemon lives.
    pub fn allocate_id(&mut self) -> u32 {
        self.next_id = self.next_id.max(1);
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        id
    }

    /// Ids handed out from here on are above `id` (after re-adoption).
    pub fn reserve_ids_through(&mut self, id: u32) {
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    /// A new run generation.
    pub fn allocate_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }
}

/// The shared table.
#[derive(Default)]
pub(crate) struct Registry {
    table: Mutex<Table>,
}

impl Registry {
    /// The table, for a quick read or write. A panic while it was held
    /// leaves a consistent table (every write is one assignment), so a
    /// poisoned lock is taken over.
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The rows of `list`: active domains by id, then inactive by name.
    pub fn summaries(&self, active: bool, inactive: bool) -> Vec<DomainSummary> {
        let table = self.lock();
        let mut rows: Vec<DomainSummary> = table
            .domains
            .iter()
            .filter(|(_, e)| {
                let is_active = e.live.is_some();
                (active && is_active) || (inactive && !is_active)
            })
            .map(|(name, e)| e.summary(name))
            .collect();
        drop(table);
        rows.sort_by(|a, b| match (a.id, b.id) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.name.cmp(&b.name),
        });
        rows
    }
}

/// 404 for `key`.
pub(crate) fn no_domain(key: &str) -> Failure {
    Failure::not_found(format!(
        "domain not found: no domain with matching name, UUID or id '{}'",
        key.escape_debug()
    ))
}

/// The disks of `domain`, canonical where they exist, with whether each
/// is read-only. Off the async thread: resolving a path on a stuck
/// network mount must not stall the daemon.
pub(crate) async fn disk_paths(domain: &Arc<Domain>) -> Vec<(PathBuf, bool)> {
    let domain = domain.clone();
    tokio::task::spawn_blocking(move || resolve_disk_paths(&domain))
        .await
        .unwrap_or_default()
}

/// [`disk_paths`], blocking.
pub(crate) fn resolve_disk_paths(domain: &Domain) -> Vec<(PathBuf, bool)> {
    domain
        .devices
        .disks
        .iter()
        .map(|d| {
            // A volume is claimed by its path once the daemon found it,
            // by its pool and name before.
            let described;
            let path = match d.source.host_path() {
                Some(p) => Path::new(p),
                None => {
                    described = d.source.describe();
                    Path::new(&described)
                }
            };
            (
                std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
                d.readonly,
            )
        })
        .collect()
}

/// The driver name a domain asks for.
pub(crate) fn driver_name(kind: DriverKind) -> &'static str {
    match kind {
        DriverKind::Vireo => "vireo",
        DriverKind::Qemu => "qemu",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str, uuid: &str) -> Arc<Domain> {
        let xml = format!(
            "<domain type='kvm'><name>{name}</name><uuid>{uuid}</uuid><memory>1024</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os></domain>"
        );
        Arc::new(Domain::parse(&xml).unwrap().domain)
    }

    const U1: &str = "11111111-1111-4111-8111-111111111111";
    const U2: &str = "22222222-2222-4222-8222-222222222222";

    #[test]
    fn identity_rules() {
        let mut t = Table::default();
        let d = domain("a", U1);
        t.domains.insert("a".into(), Entry::new(d.uuid, Some(d)));
        let u1 = Uuid::parse(U1).unwrap();
        let u2 = Uuid::parse(U2).unwrap();
        assert_eq!(t.check_identity("a", u1), Ok(true));
        assert_eq!(t.check_identity("b", u2), Ok(false));
        let e = t.check_identity("a", u2).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert!(e.message.contains("already exists"), "{}", e.message);
        let e = t.check_identity("b", u1).unwrap_err();
        assert!(e.message.contains("already has UUID"), "{}", e.message);
    }

    #[test]
    fn lookup_by_name_uuid_and_ids_never_reused() {
        let mut t = Table::default();
        let d = domain("42", U1);
        t.domains.insert("42".into(), Entry::new(d.uuid, Some(d)));
        assert_eq!(t.find("42"), Some("42"), "no id 42: falls back to the name");
        assert_eq!(t.find(U1), Some("42"));
        assert_eq!(t.find(&U1.to_uppercase()), Some("42"));
        assert_eq!(t.find("nope"), None);
        assert_eq!(t.lookup("nope").err().map(|e| e.status.as_u16()), Some(404));
        let ids: Vec<u32> = (0..3).map(|_| t.allocate_id()).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        t.reserve_ids_through(10);
        assert_eq!(t.allocate_id(), 11);
        t.reserve_ids_through(5);
        assert_eq!(t.allocate_id(), 12);
    }

    #[test]
    fn claimed_disks_conflict_unless_both_read_only() {
        let mut t = Table::default();
        let d = domain("a", U1);
        let mut e = Entry::new(d.uuid, Some(d));
        e.claimed = vec![
            (PathBuf::from("/img/a"), false),
            (PathBuf::from("/img/ro"), true),
        ];
        t.domains.insert("a".into(), e);
        let hit = t.disk_conflict("b", &[(PathBuf::from("/img/a"), true)]);
        assert_eq!(hit, Some(("a".to_string(), PathBuf::from("/img/a"))));
        assert_eq!(
            t.disk_conflict("b", &[(PathBuf::from("/img/ro"), true)]),
            None
        );
        assert!(t
            .disk_conflict("b", &[(PathBuf::from("/img/ro"), false)])
            .is_some());
        assert_eq!(
            t.disk_conflict("a", &[(PathBuf::from("/img/a"), false)]),
            None
        );
    }
}
