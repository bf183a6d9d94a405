//! Host interfaces in the daemon (libvirt's `iface-*`): their
//! definitions, starting and destroying them through [`super::iface_links`],
//! and starting the `start mode='onboot'` ones with the daemon.
//!
//! Whether an interface is active is asked of the host each time (the
//! link exists and is up), as libvirt does: a link someone else brought
//! down is inactive. What the daemon's own start made is kept in a run
//! record, so that `iface-destroy` (after a daemon restart too) undoes
//! exactly that. Every change is serialized by one lock
//! ([`HostIfaces::ops`]); the table's mutex is held only for quick reads
//! and writes, never across host work or an `.await`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use netvirt::link::Netlink;
use serde::{Deserialize, Serialize};
use virtxml::{HostInterface, StartMode};

use super::failure::Failure;
use super::iface_links::{self, Snapshot, Undo};
use super::store::Store;
use super::Daemon;
use crate::api::{InterfaceDefineResponse, InterfaceSummary};

/// What a start made: the definition it ran with and how to undo it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IfaceRecord {
    /// The definition started, as XML.
    pub xml: String,
    /// The changes' inverses, in the order the changes were made.
    pub undo: Vec<Undo>,
    /// The kernel's boot id when they were made: after a reboot the
    /// links it names are other links, never to be touched.
    #[serde(default)]
    pub boot_id: String,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), empty if unknown.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// One interface the daemon knows.
pub(crate) struct IfaceEntry {
    /// The persistent definition; `None` once undefined while the
    /// daemon's start of it still stands.
    pub config: Option<Arc<HostInterface>>,
    /// Set while the daemon's start of it stands.
    pub started: Option<(Arc<HostInterface>, IfaceRecord)>,
}

impl IfaceEntry {
    fn current(&self) -> Option<&Arc<HostInterface>> {
        self.started
            .as_ref()
            .map(|(i, _)| i)
            .or(self.config.as_ref())
    }
}

/// The interfaces, their store and their lock.
pub(crate) struct HostIfaces {
    /// `STATE/interface`.
    pub store: Store,
    table: Mutex<BTreeMap<String, IfaceEntry>>,
    /// Serializes every change of every interface.
    pub ops: tokio::sync::Mutex<()>,
}

impl HostIfaces {
    /// Opens the interfaces' store under the state directory.
    pub fn open(state_dir: &std::path::Path) -> std::io::Result<HostIfaces> {
        Ok(HostIfaces {
            store: Store::open_interfaces(state_dir)?,
            table: Mutex::default(),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, IfaceEntry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn no_iface(key: &str) -> Failure {
    Failure::not_found(format!(
        "Interface not found: couldn't find interface named '{}'",
        key.escape_debug()
    ))
}

/// One look at the host's links, off the async thread.
async fn snapshot() -> Result<Snapshot, Failure> {
    tokio::task::spawn_blocking(|| {
        let mut nl = Netlink::open().map_err(iface_links::link_failure)?;
        Snapshot::take(&mut nl)
    })
    .await?
}

fn mac_text(m: [u8; 6]) -> String {
    virtxml::MacAddress(m).to_string()
}

fn summary(name: &str, e: &IfaceEntry, snap: &Snapshot) -> Option<InterfaceSummary> {
    let i = e.current()?;
    let link = snap.get(name);
    Some(InterfaceSummary {
        name: name.to_string(),
        kind: i.kind.as_str().into(),
        active: snap.active(name),
        mac: link
            .and_then(|l| l.mac)
            .map(mac_text)
            .or_else(|| i.mac.map(|m| m.to_string())),
        persistent: e.config.is_some(),
        start_mode: i.start_mode().as_str().into(),
    })
}

/// `GET /interfaces`.
pub(crate) async fn list(
    d: &Daemon,
    active: bool,
    inactive: bool,
) -> Result<Vec<InterfaceSummary>, Failure> {
    let snap = snapshot().await?;
    Ok(d.interfaces
        .lock()
        .iter()
        .filter_map(|(n, e)| summary(n, e, &snap))
        .filter(|s| if s.active { active } else { inactive })
        .collect())
}

/// `GET /interfaces/{iface}`.
pub(crate) async fn info(d: &Daemon, key: &str) -> Result<InterfaceSummary, Failure> {
    let snap = snapshot().await?;
    let table = d.interfaces.lock();
    table
        .get(key)
        .and_then(|e| summary(key, e, &snap))
        .ok_or_else(|| no_iface(key))
}

/// `GET /interfaces/{iface}/xml`: the definition it was started with
/// while the daemon's start stands, else the persistent one.
pub(crate) fn xml(d: &Daemon, key: &str, inactive: bool) -> Result<String, Failure> {
    let table = d.interfaces.lock();
    let e = table.get(key).ok_or_else(|| no_iface(key))?;
    let i = if inactive {
        e.config.as_ref().or(e.current())
    } else {
        e.current()
    };
    i.map(|i| i.to_xml()).ok_or_else(|| no_iface(key))
}

/// `POST /interfaces`: iface-define. A name the host already uses is
/// fine, as in libvirt (defining the host's own eth0 is the usual case),
/// and so is a port another definition has too (two ways of using one
/// NIC, one at a time): whether it can be started is checked by
/// iface-start, against the host as it is then.
pub(crate) async fn define(d: &Arc<Daemon>, xml: &str) -> Result<InterfaceDefineResponse, Failure> {
    let _ops = d.interfaces.ops.lock().await;
    let xml = xml.to_string();
    let parsed = tokio::task::spawn_blocking(move || HostInterface::parse(&xml))
        .await?
        .map_err(|e| Failure::unprocessable(e.to_string()))?;
    let iface = parsed.interface;
    let warnings = parsed.warnings.iter().map(|w| w.to_string()).collect();
    let name = iface.name.clone();
    let text = iface.to_xml();
    let (store_d, store_name) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || {
        store_d.interfaces.store.save_definition(&store_name, &text)
    })
    .await?
    .map_err(Failure::storage)?;
    let iface = Arc::new(iface);
    let updated = {
        let mut table = d.interfaces.lock();
        match table.get_mut(&name) {
            Some(e) => {
                let had = e.config.is_some();
                e.config = Some(iface);
                had
            }
            None => {
                table.insert(
                    name.clone(),
                    IfaceEntry {
                        config: Some(iface),
                        started: None,
                    },
                );
                false
            }
        }
    };
    Ok(InterfaceDefineResponse {
        name,
        warnings,
        updated,
    })
}

/// `DELETE /interfaces/{iface}`: iface-undefine. An interface the daemon
/// started stays up, and listed, until it is destroyed.
pub(crate) async fn undefine(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.interfaces.ops.lock().await;
    let persistent = d
        .interfaces
        .lock()
        .get(key)
        .map(|e| e.config.is_some())
        .ok_or_else(|| no_iface(key))?;
    if !persistent {
        return Err(no_iface(key));
    }
    let (store_d, store_name) = (d.clone(), key.to_string());
    tokio::task::spawn_blocking(move || store_d.interfaces.store.remove_definition(&store_name))
        .await?
        .map_err(Failure::storage)?;
    let mut table = d.interfaces.lock();
    if let Some(e) = table.get_mut(key) {
        e.config = None;
        if e.started.is_none() {
            table.remove(key);
        }
    }
    Ok(())
}

/// `POST /interfaces/{iface}/start`.
pub(crate) async fn start(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.interfaces.ops.lock().await;
    start_locked(d, key).await
}

async fn start_locked(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let (iface, stale) = {
        let table = d.interfaces.lock();
        let e = table.get(key).ok_or_else(|| no_iface(key))?;
        let iface = e.config.clone().ok_or_else(|| no_iface(key))?;
        (iface, e.started.as_ref().map(|(_, r)| r.undo.clone()))
    };
    let (run_d, name) = (d.clone(), key.to_string());
    let started = iface.clone();
    // Whether a stale record was played back and removed, whatever came
    // after; and the start's own outcome.
    let (stale_gone, record) = tokio::task::spawn_blocking(move || {
        let mut stale_gone = false;
        let r = (|| -> Result<IfaceRecord, Failure> {
            let mut nl = Netlink::open().map_err(iface_links::link_failure)?;
            let snap = Snapshot::take(&mut nl)?;
            // Another kind of link up under this name is not this
            // interface active: say what it is.
            iface_links::check_kind(&snap, &started, &format!("interface {name}"))?;
            if snap.active(&name) {
                return Err(Failure::conflict(format!(
                    "Requested operation is not valid: interface {name} is already active"
                )));
            }
            // An earlier start whose link someone took down: what is left
            // of it goes first, so this start begins from the host as it was.
            let snap = match stale {
                Some(undo) => {
                    iface_links::play_back(&mut nl, &undo)?;
                    run_d
                        .interfaces
                        .store
                        .remove_record(&name)
                        .map_err(Failure::storage)?;
                    stale_gone = true;
                    Snapshot::take(&mut nl)?
                }
                None => snap,
            };
            let store = &run_d.interfaces.store;
            let (xml, boot) = (started.to_xml(), boot_id());
            let record_of = |undo: &[Undo]| IfaceRecord {
                xml: xml.clone(),
                undo: undo.to_vec(),
                boot_id: boot.clone(),
            };
            let mut note = |undo: &[Undo]| {
                store
                    .save_record(&name, &record_of(undo))
                    .map_err(Failure::storage)
            };
            let undo = match iface_links::start(&mut nl, &snap, &started, &mut note) {
                Ok(undo) => undo,
                Err(e) => {
                    // What was noted has been undone.
                    let _ = store.remove_record(&name);
                    return Err(e);
                }
            };
            // Noted change by change already; written once more as the
            // whole record, so that a start is never answered before it.
            let record = record_of(&undo);
            if let Err(e) = store.save_record(&name, &record) {
                // Without its record a later destroy would not know what
                // to undo: take it down now.
                let _ = iface_links::play_back(&mut nl, &record.undo);
                let _ = store.remove_record(&name);
                return Err(Failure::storage(e));
            }
            Ok(record)
        })();
        (stale_gone, r)
    })
    .await?;
    if stale_gone {
        if let Some(e) = d.interfaces.lock().get_mut(key) {
            e.started = None;
        }
    }
    let record = record?;
    if let Some(e) = d.interfaces.lock().get_mut(key) {
        e.started = Some((iface, record));
    }
    tracing::info!("interface {key} started");
    Ok(())
}

/// `POST /interfaces/{iface}/destroy`: undoes what the daemon's start
/// made; an active interface it did not start (the host's own, or one
/// it found up) is only taken down.
pub(crate) async fn destroy(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.interfaces.ops.lock().await;
    let undo = {
        let table = d.interfaces.lock();
        let e = table.get(key).ok_or_else(|| no_iface(key))?;
        e.started.as_ref().map(|(_, r)| r.undo.clone())
    };
    let (run_d, name) = (d.clone(), key.to_string());
    tokio::task::spawn_blocking(move || -> Result<(), Failure> {
        let mut nl = Netlink::open().map_err(iface_links::link_failure)?;
        let snap = Snapshot::take(&mut nl)?;
        match undo {
            Some(undo) => {
                // Even when someone took its link down meanwhile: what the
                // start made is still the daemon's to remove.
                let r = iface_links::play_back(&mut nl, &undo);
                run_d
                    .interfaces
                    .store
                    .remove_record(&name)
                    .map_err(Failure::storage)?;
                r
            }
            None if snap.active(&name) => {
                nl.set_up(&name, false).map_err(iface_links::link_failure)
            }
            None => Err(Failure::conflict(format!(
                "Requested operation is not valid: interface {name} is not active"
            ))),
        }
    })
    .await??;
    let mut table = d.interfaces.lock();
    if let Some(e) = table.get_mut(key) {
        e.started = None;
        if e.config.is_none() {
            table.remove(key);
        }
    }
    tracing::info!("interface {key} destroyed");
    Ok(())
}

/// Reads the definitions and the run records of the daemon's starts.
pub(crate) async fn load(d: &Arc<Daemon>) -> std::io::Result<()> {
    let load_d = d.clone();
    let entries = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let s = &load_d.interfaces.store;
        let mut entries = BTreeMap::new();
        for (file_name, xml) in s.definitions()? {
            match HostInterface::parse(&xml) {
                Ok(p) if p.interface.name == file_name => {
                    entries.insert(
                        file_name,
                        IfaceEntry {
                            config: Some(Arc::new(p.interface)),
                            started: None,
                        },
                    );
                }
                Ok(p) => tracing::error!(
                    "interface definition file of '{file_name}' names interface '{}'; skipped",
                    p.interface.name
                ),
                Err(e) => tracing::error!(
                    "interface definition of '{file_name}' does not parse ({e}); skipped"
                ),
            }
        }
        let records: BTreeMap<String, IfaceRecord> = s.records()?;
        let this_boot = boot_id();
        for (name, record) in records {
            if record.boot_id != this_boot {
                tracing::warn!(
                    "run record of interface '{name}' is from an earlier boot; dropped without undoing it"
                );
                let _ = s.remove_record(&name);
                continue;
            }
            match HostInterface::parse(&record.xml) {
                Ok(p) => {
                    let e = entries.entry(name).or_insert(IfaceEntry {
                        config: None,
                        started: None,
                    });
                    e.started = Some((Arc::new(p.interface), record));
                }
                Err(e) => {
                    tracing::error!("run record of interface '{name}' does not parse ({e}); undoing what it lists");
                    if let Ok(mut nl) = Netlink::open() {
                        let _ = iface_links::play_back(&mut nl, &record.undo);
                    }
                    let _ = s.remove_record(&name);
                }
            }
        }
        Ok(entries)
    })
    .await
    .map_err(std::io::Error::other)??;
    *d.interfaces.lock() = entries;
    Ok(())
}

/// Starts the `start mode='onboot'` interfaces that are not active,
/// before the networks, which may sit on them.
pub(crate) async fn start_onboot(d: &Arc<Daemon>) {
    let names: Vec<String> = d
        .interfaces
        .lock()
        .iter()
        .filter(|(_, e)| {
            e.config
                .as_ref()
                .is_some_and(|c| c.start_mode() == StartMode::Onboot)
        })
        .map(|(n, _)| n.clone())
        .collect();
    let Ok(snap) = snapshot().await else {
        tracing::error!("cannot list the host's links: onboot interfaces not started");
        return;
    };
    for name in names.into_iter().filter(|n| !snap.active(n)) {
        let _ops = d.interfaces.ops.lock().await;
        match start_locked(d, &name).await {
            Ok(()) => tracing::info!("started onboot interface {name}"),
            Err(e) => tracing::error!("onboot start of interface {name} failed: {}", e.message),
        }
    }
}
