//! Storage pools in the daemon: their definitions, which are active,
//! their volumes through [`crate::storage`], and finding active pools
//! again after a restart.
//!
//! Every change of a pool or of its volumes is serialized by one lock
//! ([`Pools::ops`]): changes are rare, and the checks between pools (one
//! target path each) need the whole set to stand still. The table's mutex
//! is held only for quick reads and writes, never across host work.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use virtxml::{Permissions, Pool, Uuid, Volume, VolumeState};

use super::failure::Failure;
use super::store::Store;
use super::Daemon;
use crate::api::{DefineResponse, PoolSummary, VolumeSummary};
use crate::storage::{self, Backend, BuildMode, StorageError, VolumeInfo};

/// One pool.
pub(crate) struct PoolEntry {
    /// Its UUID.
    pub uuid: Uuid,
    /// The persistent definition; `None` for a transient pool.
    pub config: Option<Arc<Pool>>,
    /// Whether it starts with the daemon.
    pub autostart: bool,
    /// The definition it is active with, while it is.
    pub live: Option<Arc<Pool>>,
}

impl PoolEntry {
    fn current(&self) -> Option<&Arc<Pool>> {
        self.live.as_ref().or(self.config.as_ref())
    }
}

/// What is kept of an active pool, to find it again after a restart.
#[derive(Debug, Serialize, Deserialize)]
struct PoolRecord {
    /// The definition it is active with.
    xml: String,
}

/// The pools, their store and their lock.
pub(crate) struct Pools {
    store: Store,
    table: Mutex<BTreeMap<String, PoolEntry>>,
    /// Serializes every change of every pool and volume.
    pub(super) ops: tokio::sync::Mutex<()>,
}

impl Pools {
    /// Opens the pools' store under the state directory.
    pub fn open(state_dir: &Path) -> std::io::Result<Pools> {
        Ok(Pools {
            store: Store::open_pools(state_dir)?,
            table: Mutex::default(),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PoolEntry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn find(table: &BTreeMap<String, PoolEntry>, key: &str) -> Option<String> {
    if table.contains_key(key) {
        return Some(key.to_string());
    }
    let uuid = Uuid::parse(key).ok()?;
    table
        .iter()
        .find(|(_, e)| e.uuid == uuid)
        .map(|(n, _)| n.clone())
}

fn no_pool(key: &str) -> Failure {
    Failure::not_found(format!(
        "Storage pool not found: no storage pool with matching name '{key}'"
    ))
}

fn lookup(d: &Daemon, key: &str) -> Result<String, Failure> {
    find(&d.pools.lock(), key).ok_or_else(|| no_pool(key))
}

pub(super) fn failure(e: StorageError) -> Failure {
    match e {
        StorageError::NotFound(m) => Failure::not_found(m),
        StorageError::Conflict(m) => Failure::conflict(m),
        StorageError::Invalid(m) => Failure::unprocessable(m),
        StorageError::Host(m) => Failure::driver(m),
    }
}

/// The backend of `pool`, logging in with the CHAP credentials its
/// `<auth>` names (looked up now, so a changed secret is used at once).
pub(super) fn backend(d: &Daemon, pool: &Pool) -> Result<Backend, StorageError> {
    let chap = pool
        .source
        .auth
        .as_ref()
        .map(|a| {
            super::secrets::credentials(&d.secrets, a, &format!("storage pool '{}'", pool.name))
        })
        .transpose()?;
    Backend::open_with(pool, chap)
}

/// Runs host work off the async thread.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f).await?.map_err(failure)
}

fn summary(d: &Daemon, name: &str, e: &PoolEntry) -> PoolSummary {
    let pool = e.current();
    let space = e
        .live
        .as_ref()
        .and_then(|p| backend(d, p).ok())
        .and_then(|dp| dp.space().ok())
        .unwrap_or_default();
    PoolSummary {
        name: name.to_string(),
        uuid: e.uuid.to_string(),
        kind: pool.map(|p| p.kind.as_str()).unwrap_or("dir").to_string(),
        active: e.live.is_some(),
        persistent: e.config.is_some(),
        autostart: e.autostart,
        path: pool.and_then(|p| p.target.path.clone()),
        capacity: space.capacity,
        allocation: space.allocation,
        available: space.available,
    }
}

/// `GET /pools`. A pool's space is one `statvfs`, cheap for the local
/// filesystems a `dir` pool lives on.
pub(crate) async fn list(d: &Arc<Daemon>, active: bool, inactive: bool) -> Vec<PoolSummary> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        d.pools
            .lock()
            .iter()
            .filter(|(_, e)| if e.live.is_some() { active } else { inactive })
            .map(|(n, e)| summary(&d, n, e))
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// `GET /pools/{pool}`.
pub(crate) fn info(d: &Daemon, key: &str) -> Result<PoolSummary, Failure> {
    let table = d.pools.lock();
    let name = find(&table, key).ok_or_else(|| no_pool(key))?;
    Ok(summary(d, &name, &table[&name]))
}

/// `GET /pools/{pool}/xml`: an active pool's with its figures.
pub(crate) fn xml(d: &Daemon, key: &str, inactive: bool) -> Result<String, Failure> {
    let table = d.pools.lock();
    let name = find(&table, key).ok_or_else(|| no_pool(key))?;
    let e = &table[&name];
    match (&e.live, inactive) {
        (Some(live), false) => {
            let space = backend(d, live).and_then(|b| b.space()).map_err(failure)?;
            Ok(live.to_xml(Some(space)))
        }
        _ => e
            .config
            .as_ref()
            .or(e.current())
            .map(|p| p.to_xml(None))
            .ok_or_else(|| no_pool(key)),
    }
}

/// Parses a pool definition and checks it against the other pools.
fn parse(d: &Daemon, xml: &str) -> Result<(Pool, Vec<String>), Failure> {
    let parsed = Pool::parse(xml).map_err(|e| Failure::unprocessable(e.to_string()))?;
    let pool = parsed.pool;
    storage::supported(pool.kind).map_err(Failure::unprocessable)?;
    Backend::open(&pool).map_err(|e| Failure::unprocessable(e.to_string()))?;
    let table = d.pools.lock();
    if let Some(e) = table.get(&pool.name) {
        if e.uuid != pool.uuid {
            return Err(Failure::unprocessable(format!(
                "pool '{}' already exists with uuid {}",
                pool.name, e.uuid
            )));
        }
    } else if let Some((other, _)) = table.iter().find(|(_, e)| e.uuid == pool.uuid) {
        return Err(Failure::unprocessable(format!(
            "pool '{other}' is already defined with uuid {}",
            pool.uuid
        )));
    }
    // Disk pools all have /dev as target and iSCSI pools
    // /dev/disk/by-path (or none); their devices tell them apart.
    let path = pool.target.path.as_ref().filter(|_| {
        !matches!(
            pool.kind,
            virtxml::PoolType::Disk | virtxml::PoolType::Iscsi | virtxml::PoolType::IscsiDirect
        )
    });
    let on_devices = |k| {
        matches!(
            k,
            virtxml::PoolType::Fs | virtxml::PoolType::Disk | virtxml::PoolType::Logical
        )
    };
    let local = on_devices(pool.kind);
    let vg_of = |p: &Pool| p.source.name.clone().unwrap_or_else(|| p.name.clone());
    for (other, e) in table.iter().filter(|(n, _)| **n != pool.name) {
        for p in [e.config.as_ref(), e.live.as_ref()].into_iter().flatten() {
            if let Some(path) = path.filter(|t| p.target.path.as_ref() == Some(*t)) {
                return Err(Failure::unprocessable(format!(
                    "Storage source conflict with pool: '{other}' uses target path {path}"
                )));
            }
            if pool.kind == virtxml::PoolType::Logical
                && p.kind == virtxml::PoolType::Logical
                && vg_of(p) == vg_of(&pool)
            {
                return Err(Failure::unprocessable(format!(
                    "Storage source conflict with pool: '{other}' uses volume group {}",
                    vg_of(&pool)
                )));
            }
            // Two kernel-initiator pools on one target share its session:
            // one's pool-destroy would log the other out.
            if pool.kind == virtxml::PoolType::Iscsi
                && p.kind == virtxml::PoolType::Iscsi
                && p.source.devices == pool.source.devices
                && p.source.host.as_ref().map(|h| &h.name)
                    == pool.source.host.as_ref().map(|h| &h.name)
            {
                return Err(Failure::unprocessable(format!(
                    "Storage source conflict with pool: '{other}' uses iSCSI target {}",
                    pool.source.devices.join(", ")
                )));
            }
            let shared = on_devices(p.kind)
                && local
                && p.source
                    .devices
                    .iter()
                    .any(|d| pool.source.devices.contains(d));
            if shared {
                return Err(Failure::unprocessable(format!(
                    "Storage source conflict with pool: '{other}' uses source device {}",
                    pool.source.devices.join(", ")
                )));
            }
        }
    }
    Ok((
        pool,
        parsed.warnings.iter().map(|w| w.to_string()).collect(),
    ))
}

/// `POST /pools`: pool-define.
pub(crate) async fn define(d: &Arc<Daemon>, xml: &str) -> Result<DefineResponse, Failure> {
    let _ops = d.pools.ops.lock().await;
    let (pool, warnings) = parse(d, xml)?;
    let (name, uuid) = (pool.name.clone(), pool.uuid);
    let existing = d.pools.lock().contains_key(&name);
    let text = pool.to_xml(None);
    let (sd, sn) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || sd.pools.store.save_definition(&sn, &text))
        .await?
        .map_err(Failure::storage)?;
    let pool = Arc::new(pool);
    d.pools
        .lock()
        .entry(name.clone())
        .and_modify(|e| e.config = Some(pool.clone()))
        .or_insert(PoolEntry {
            uuid,
            config: Some(pool),
            autostart: false,
            live: None,
        });
    Ok(DefineResponse {
        name,
        uuid: uuid.to_string(),
        warnings,
        updated: existing,
    })
}

/// `POST /pools/create`: pool-create, a transient pool started now.
pub(crate) async fn create(d: &Arc<Daemon>, xml: &str) -> Result<DefineResponse, Failure> {
    let _ops = d.pools.ops.lock().await;
    let (pool, warnings) = parse(d, xml)?;
    let (name, uuid) = (pool.name.clone(), pool.uuid);
    if d.pools.lock().contains_key(&name) {
        return Err(Failure::unprocessable(format!(
            "pool '{name}' already exists"
        )));
    }
    d.pools.lock().insert(
        name.clone(),
        PoolEntry {
            uuid,
            config: None,
            autostart: false,
            live: None,
        },
    );
    if let Err(e) = start_locked(d, &name, Arc::new(pool)).await {
        d.pools.lock().remove(&name);
        return Err(e);
    }
    Ok(DefineResponse {
        name,
        uuid: uuid.to_string(),
        warnings,
        updated: false,
    })
}

/// `DELETE /pools/{pool}`: pool-undefine; an active pool becomes
/// transient, as libvirt's does.
pub(crate) async fn undefine(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.pools.ops.lock().await;
    let name = lookup(d, key)?;
    if d.pools.lock()[&name].config.is_none() {
        return Err(Failure::conflict(format!(
            "pool '{name}' is transient: there is no definition to undefine"
        )));
    }
    let (sd, sn) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || sd.pools.store.remove_definition(&sn))
        .await?
        .map_err(Failure::storage)?;
    let mut table = d.pools.lock();
    if let Some(e) = table.get_mut(&name) {
        e.config = None;
        e.autostart = false;
        if e.live.is_none() {
            table.remove(&name);
        }
    }
    Ok(())
}

/// `PUT /pools/{pool}/autostart`.
pub(crate) async fn set_autostart(d: &Arc<Daemon>, key: &str, on: bool) -> Result<(), Failure> {
    let _ops = d.pools.ops.lock().await;
    let name = lookup(d, key)?;
    if d.pools.lock()[&name].config.is_none() {
        return Err(Failure::conflict(format!(
            "cannot set autostart for transient pool '{name}'"
        )));
    }
    let (sd, sn) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || sd.pools.store.set_autostart(&sn, on))
        .await?
        .map_err(Failure::storage)?;
    if let Some(e) = d.pools.lock().get_mut(&name) {
        e.autostart = on;
    }
    Ok(())
}

/// The inactive pool `key`'s definition, for build and delete.
fn inactive(d: &Daemon, key: &str, verb: &str) -> Result<Arc<Pool>, Failure> {
    let name = lookup(d, key)?;
    let table = d.pools.lock();
    let e = &table[&name];
    if e.live.is_some() {
        return Err(Failure::conflict(format!(
            "Requested operation is not valid: storage pool '{name}' is active: {verb} needs it stopped"
        )));
    }
    e.config.clone().ok_or_else(|| no_pool(key))
}

/// The active pool `key`'s definition, for its volumes.
pub(super) fn active(d: &Daemon, key: &str) -> Result<Arc<Pool>, Failure> {
    let name = lookup(d, key)?;
    let table = d.pools.lock();
    table[&name].live.clone().ok_or_else(|| {
        Failure::conflict(format!(
            "Requested operation is not valid: storage pool '{name}' is not active"
        ))
    })
}

/// The active pools whose volumes are files of one directory (`dir`,
/// `fs`, `netfs`): name and target directory, where their leases are kept.
pub(super) fn file_pool_dirs(d: &Daemon) -> Vec<(String, PathBuf)> {
    d.pools
        .lock()
        .iter()
        .filter_map(|(name, e)| {
            let pool = e.live.as_ref()?;
            match pool.kind {
                virtxml::PoolType::Dir | virtxml::PoolType::Fs | virtxml::PoolType::Netfs => {}
                _ => return None,
            }
            Some((name.clone(), PathBuf::from(pool.target.path.as_ref()?)))
        })
        .collect()
}

/// `POST /pools/{pool}/build`: makes its directory, filesystem or label;
/// `mode` says whether what a device holds may be replaced.
pub(crate) async fn build(d: &Arc<Daemon>, key: &str, mode: BuildMode) -> Result<(), Failure> {
    let _ops = d.pools.ops.lock().await;
    let pool = inactive(d, key, "pool-build")?;
    let b = backend(d, &pool).map_err(failure)?;
    blocking(move || b.build(&pool.target.permissions, mode)).await
}

/// `POST /pools/{pool}/delete`: removes its (empty) directory.
pub(crate) async fn delete(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.pools.ops.lock().await;
    let pool = inactive(d, key, "pool-delete")?;
    let b = backend(d, &pool).map_err(failure)?;
    blocking(move || b.delete()).await
}

/// `POST /pools/{pool}/start`.
pub(crate) async fn start(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.pools.ops.lock().await;
    let name = lookup(d, key)?;
    let pool = {
        let table = d.pools.lock();
        let e = &table[&name];
        if e.live.is_some() {
            return Err(Failure::conflict(format!(
                "Requested operation is not valid: storage pool '{name}' is already active"
            )));
        }
        e.config.clone().ok_or_else(|| no_pool(key))?
    };
    start_locked(d, &name, pool).await
}

async fn start_locked(d: &Arc<Daemon>, name: &str, pool: Arc<Pool>) -> Result<(), Failure> {
    let b = backend(d, &pool).map_err(failure)?;
    blocking(move || {
        b.start()?;
        b.sweep();
        Ok(())
    })
    .await?;
    let record = PoolRecord {
        xml: pool.to_xml(None),
    };
    let (sd, sn) = (d.clone(), name.to_string());
    tokio::task::spawn_blocking(move || sd.pools.store.save_record(&sn, &record))
        .await?
        .map_err(Failure::storage)?;
    if let Some(e) = d.pools.lock().get_mut(name) {
        e.live = Some(pool);
    }
    Ok(())
}

/// `POST /pools/{pool}/destroy`: the pool stops; its volumes stay.
pub(crate) async fn destroy(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.pools.ops.lock().await;
    let name = lookup(d, key)?;
    let pool = active(d, key)?;
    let b = backend(d, &pool).map_err(failure)?;
    blocking(move || b.stop()).await?;
    let (sd, sn) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || sd.pools.store.remove_record(&sn))
        .await?
        .map_err(Failure::storage)?;
    let mut table = d.pools.lock();
    if let Some(e) = table.get_mut(&name) {
        e.live = None;
        if e.config.is_none() {
            table.remove(&name);
        }
    }
    Ok(())
}

/// `POST /pools/{pool}/refresh`: a `dir` pool caches nothing, so this
/// checks that its directory is still there.
pub(crate) async fn refresh(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let pool = active(d, key)?;
    let b = backend(d, &pool).map_err(failure)?;
    blocking(move || b.check()).await
}

/// libvirt's volume type: `block` for a partition, `file` for an image.
fn volume_kind(path: &Path) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => "block",
        _ => "file",
    }
}

pub(super) fn volume_summary(v: &VolumeInfo) -> VolumeSummary {
    VolumeSummary {
        name: v.name.clone(),
        path: v.path.display().to_string(),
        kind: volume_kind(&v.path).into(),
        format: v.format.as_str().into(),
        capacity: v.capacity,
        allocation: v.allocation,
        physical: v.physical,
    }
}

/// `GET /pools/{pool}/volumes`.
pub(crate) async fn volumes(d: &Arc<Daemon>, key: &str) -> Result<Vec<VolumeSummary>, Failure> {
    let pool = active(d, key)?;
    let b = backend(d, &pool).map_err(failure)?;
    let list = blocking(move || b.volumes()).await?;
    Ok(list.iter().map(volume_summary).collect())
}

/// `GET /pools/{pool}/volumes/{vol}`.
pub(crate) async fn volume(
    d: &Arc<Daemon>,
    key: &str,
    vol: &str,
) -> Result<VolumeSummary, Failure> {
    let pool = active(d, key)?;
    let vol = vol.to_string();
    let b = backend(d, &pool).map_err(failure)?;
    let v = blocking(move || b.volume(&vol)).await?;
    Ok(volume_summary(&v))
}

/// `GET /pools/{pool}/volumes/{vol}/xml`: vol-dumpxml.
pub(crate) async fn volume_xml(d: &Arc<Daemon>, key: &str, vol: &str) -> Result<String, Failure> {
    let pool = active(d, key)?;
    let vol = vol.to_string();
    let b = backend(d, &pool).map_err(failure)?;
    blocking(move || {
        let v = b.volume(&vol)?;
        let meta = std::fs::metadata(&v.path)
            .map_err(|e| StorageError::Host(format!("{}: {e}", v.path.display())))?;
        let model = Volume {
            name: v.name.clone(),
            capacity: v.capacity,
            allocation: None,
            format: Some(v.format),
            permissions: Permissions {
                mode: Some(meta.mode() & 0o7777),
                owner: Some(meta.uid()),
                group: Some(meta.gid()),
            },
            compat: None,
            backing: v.backing.clone(),
            kept: Vec::new(),
        };
        let path = v.path.display().to_string();
        Ok(model.to_xml(&VolumeState {
            kind: volume_kind(&v.path),
            key: path.clone(),
            path,
            allocation: v.allocation,
            physical: v.physical,
        }))
    })
    .await
}

/// `POST /pools/{pool}/volumes`: vol-create; with `prealloc_metadata`
/// (a qcow2 volume only, as libvirt's), every cluster of the new volume
/// is mapped before it is answered (qemu-img's preallocation=metadata).
pub(crate) async fn create_volume(
    d: &Arc<Daemon>,
    key: &str,
    xml: &str,
    prealloc_metadata: bool,
) -> Result<VolumeSummary, Failure> {
    let _ops = d.pools.ops.lock().await;
    let pool = active(d, key)?;
    let vol = Volume::parse(xml)
        .map_err(|e| Failure::unprocessable(e.to_string()))?
        .volume;
    if prealloc_metadata && vol.format != Some(virtxml::VolumeFormat::Qcow2) {
        return Err(Failure::unprocessable(format!(
            "metadata preallocation is for qcow2 volumes; volume '{}' is {}",
            vol.name,
            vol.format.unwrap_or(virtxml::VolumeFormat::Raw).as_str()
        )));
    }
    let b = backend(d, &pool).map_err(failure)?;
    let v = blocking(move || {
        if prealloc_metadata {
            b.create_preallocated(&vol)
        } else {
            b.create(&vol)
        }
    })
    .await?;
    Ok(volume_summary(&v))
}

/// The running domains whose disks include `path`.
pub(super) fn users(d: &Daemon, path: &Path) -> Vec<String> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    d.registry
        .lock()
        .domains
        .iter()
        .filter(|(_, e)| {
            e.live
                .as_ref()
                .is_some_and(|l| l.disks.iter().any(|(p, _)| *p == canonical))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// `DELETE /pools/{pool}/volumes/{vol}`: refused while a running domain
/// uses it.
pub(crate) async fn delete_volume(d: &Arc<Daemon>, key: &str, vol: &str) -> Result<(), Failure> {
    let _ops = d.pools.ops.lock().await;
    let pool = active(d, key)?;
    let path: PathBuf = {
        let (p, v) = (pool.clone(), vol.to_string());
        let b = backend(d, &p).map_err(failure)?;
        blocking(move || b.volume(&v)).await?.path
    };
    let using = users(d, &path);
    if !using.is_empty() {
        return Err(Failure::conflict(format!(
            "storage volume '{vol}' is in use by running domain(s) {}",
            using.join(", ")
        )));
    }
    // A domain of another host sharing the pool may be writing it.
    if let (Some(dir), virtxml::PoolType::Dir | virtxml::PoolType::Fs) =
        (pool.target.path.clone(), pool.kind)
    {
        let (ld, p, v) = (d.clone(), pool.name.clone(), vol.to_string());
        let elsewhere = tokio::task::spawn_blocking(move || {
            super::leases::held_elsewhere(&ld, &p, Path::new(&dir), &v)
        })
        .await?;
        if let Some(msg) = elsewhere {
            return Err(Failure::conflict(msg));
        }
    }
    let vol = vol.to_string();
    let b = backend(d, &pool).map_err(failure)?;
    blocking(move || b.delete_volume(&vol)).await
}

/// `POST /pools/{pool}/volumes/{vol}/resize`.
pub(crate) async fn resize_volume(
    d: &Arc<Daemon>,
    key: &str,
    vol: &str,
    capacity: u64,
    shrink: bool,
) -> Result<VolumeSummary, Failure> {
    let _ops = d.pools.ops.lock().await;
    let pool = active(d, key)?;
    let vol = vol.to_string();
    let b = backend(d, &pool).map_err(failure)?;
    let v = blocking(move || b.resize(&vol, capacity, shrink)).await?;
    Ok(volume_summary(&v))
}

/// Reads the pools' definitions and records: a pool that was active is
/// again if its directory is still there.
pub(crate) async fn load(d: &Arc<Daemon>) -> std::io::Result<()> {
    let ld = d.clone();
    let entries = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let s = &ld.pools.store;
        let autostart = s.autostart_names()?;
        let mut entries = BTreeMap::new();
        for (file_name, xml) in s.definitions()? {
            match Pool::parse(&xml) {
                Ok(p) if p.pool.name == file_name => {
                    entries.insert(
                        file_name.clone(),
                        PoolEntry {
                            uuid: p.pool.uuid,
                            config: Some(Arc::new(p.pool)),
                            autostart: autostart.contains(&file_name),
                            live: None,
                        },
                    );
                }
                Ok(p) => tracing::error!(
                    "pool definition file of '{file_name}' names pool '{}'; skipped",
                    p.pool.name
                ),
                Err(e) => tracing::error!(
                    "pool definition of '{file_name}' does not parse ({e}); skipped"
                ),
            }
        }
        let records: BTreeMap<String, PoolRecord> = s.records()?;
        for (name, record) in records {
            let pool = match Pool::parse(&record.xml) {
                Ok(p) => p.pool,
                Err(e) => {
                    tracing::error!("run record of pool '{name}' does not parse ({e}); inactive");
                    let _ = s.remove_record(&name);
                    continue;
                }
            };
            match backend(&ld, &pool).and_then(|b| b.check().map(|()| b)) {
                Ok(b) => b.sweep(),
                Err(e) => {
                    tracing::warn!("pool '{name}' is inactive now: {e}");
                    let _ = s.remove_record(&name);
                    continue;
                }
            }
            let entry = entries.entry(name).or_insert_with(|| PoolEntry {
                uuid: pool.uuid,
                config: None,
                autostart: false,
                live: None,
            });
            entry.live = Some(Arc::new(pool));
        }
        Ok(entries)
    })
    .await
    .map_err(std::io::Error::other)??;
    *d.pools.lock() = entries;
    Ok(())
}

/// Starts the pools marked autostart (before the domains, whose disks may
/// be their volumes).
pub(crate) async fn autostart(d: &Arc<Daemon>) {
    let names: Vec<String> = d
        .pools
        .lock()
        .iter()
        .filter(|(_, e)| e.autostart && e.live.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    for name in names {
        match start(d, &name).await {
            Ok(()) => tracing::info!("autostarted pool '{name}'"),
            Err(e) => tracing::error!("autostart of pool '{name}' failed: {}", e.message),
        }
    }
}
