//! The verbs that change a domain, other than start and destroy
//! ([`super::lifecycle`]) and devices ([`super::devices`]).

use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;
use virtxml::{Domain, Uuid};

use super::failure::Failure;
use super::lifecycle::{check_memory, not_running, start_locked};
use super::registry::{driver_name, no_domain, Entry};
use super::Daemon;
use crate::api::{DefineResponse, DomainState, EventKind, StateReason};
use crate::driver::{DriverError, Instance};

/// A domain with its operation lock held.
pub(crate) struct Held {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: Uuid,
    _op: OwnedMutexGuard<()>,
}

/// Takes the operation lock of the domain `key` names.
pub(crate) async fn hold(d: &Daemon, key: &str) -> Result<Held, Failure> {
    let (name, uuid, ops) = super::lifecycle::resolve(d, key)?;
    let op = ops.lock_owned().await;
    // It may have been undefined while we waited.
    if d.registry.lock().get_mut(&name, uuid).is_none() {
        return Err(no_domain(key));
    }
    Ok(Held {
        name,
        uuid,
        _op: op,
    })
}

/// The running instance of a held domain and its run's generation.
pub(crate) fn live_instance(d: &Daemon, held: &Held) -> Result<(Arc<dyn Instance>, u64), Failure> {
    let mut table = d.registry.lock();
    let entry = table
        .get_mut(&held.name, held.uuid)
        .ok_or_else(|| no_domain(&held.name))?;
    let live = entry.live.as_ref().ok_or_else(|| not_running(&held.name))?;
    Ok((live.instance.clone(), live.generation))
}

/// Runs a blocking driver call off the async thread.
pub(crate) async fn call<T: Send + 'static>(
    instance: Arc<dyn Instance>,
    f: impl FnOnce(&dyn Instance) -> Result<T, DriverError> + Send + 'static,
) -> Result<T, Failure> {
    Ok(tokio::task::spawn_blocking(move || f(&*instance)).await??)
}

/// Changes the entry if the run `generation` is still the live one (the
/// VMM may have ended meanwhile).
fn update_live(d: &Daemon, held: &Held, generation: u64, f: impl FnOnce(&mut Entry)) -> bool {
    let mut table = d.registry.lock();
    match table.get_mut(&held.name, held.uuid) {
        Some(e) if e.live.as_ref().is_some_and(|l| l.generation == generation) => {
            f(e);
            true
        }
        _ => false,
    }
}

/// Parses a definition and checks it against the drivers and the host,
/// off the async thread (a document may be a megabyte; driver calls are
/// blocking by contract).
async fn parse_definition(d: &Daemon, xml: &str) -> Result<(Domain, Vec<String>), Failure> {
    let drivers = d.drivers.clone();
    let xml = xml.to_string();
    tokio::task::spawn_blocking(move || {
        let parsed = Domain::parse(&xml).map_err(|e| Failure::unprocessable(e.to_string()))?;
        let domain = parsed.domain;
        check_memory(&domain.name, &domain)?;
        let wanted = driver_name(domain.driver);
        let driver = drivers.iter().find(|d| d.name() == wanted).ok_or_else(|| {
            Failure::unprocessable(format!(
                "domain '{}' selects the {wanted} driver, which this daemon does not run",
                domain.name
            ))
        })?;
        driver.validate(&domain)?;
        Ok((
            domain,
            parsed.warnings.iter().map(|w| w.to_string()).collect(),
        ))
    })
    .await?
}

/// `POST /domains`.
pub(crate) async fn define(d: &Arc<Daemon>, xml: &str) -> Result<DefineResponse, Failure> {
    let (domain, warnings) = parse_definition(d, xml).await?;
    let name = domain.name.clone();
    let uuid = domain.uuid;
    let _ns = d.namespace.lock().await;
    let existing = d.registry.lock().check_identity(&name, uuid)?;
    let _held = if existing {
        Some(hold(d, &uuid.to_string()).await?)
    } else {
        None
    };
    let text = domain.to_xml();
    let (store_d, store_name) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || store_d.store.save_definition(&store_name, &text))
        .await?
        .map_err(Failure::storage)?;
    let domain = Arc::new(domain);
    {
        let mut table = d.registry.lock();
        match table.get_mut(&name, uuid) {
            // An active domain keeps its live definition; this one
            // applies from its next start.
            Some(entry) => entry.config = Some(domain),
            None => {
                table
                    .domains
                    .insert(name.clone(), Entry::new(uuid, Some(domain)));
            }
        }
    }
    let detail = if existing { "Updated" } else { "Added" };
    d.events.emit(&name, uuid, EventKind::Defined, detail);
    Ok(DefineResponse {
        name,
        uuid: uuid.to_string(),
        warnings,
        updated: existing,
    })
}

/// `DELETE /domains/{dom}`.
pub(crate) async fn undefine(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ns = d.namespace.lock().await;
    let held = hold(d, key).await?;
    {
        let table = d.registry.lock();
        let entry = table
            .domains
            .get(&held.name)
            .ok_or_else(|| no_domain(key))?;
        if !entry.persistent() {
            return Err(Failure::conflict(format!(
                "domain '{}' is transient: there is no definition to undefine",
                held.name
            )));
        }
    }
    let (store_d, store_name) = (d.clone(), held.name.clone());
    tokio::task::spawn_blocking(move || store_d.store.remove_definition(&store_name))
        .await?
        .map_err(Failure::storage)?;
    {
        let mut table = d.registry.lock();
        if let Some(entry) = table.get_mut(&held.name, held.uuid) {
            entry.config = None;
            entry.autostart = false;
            // A running domain lives on as a transient one.
            if entry.live.is_none() {
                table.domains.remove(&held.name);
            }
        }
    }
    d.events
        .emit(&held.name, held.uuid, EventKind::Undefined, "Removed");
    Ok(())
}

/// `POST /domains/create`: a transient domain, started. A persistent
/// domain of the same name and UUID that is not running starts with
/// this definition as its live one, as libvirt does.
pub(crate) async fn create(
    d: &Arc<Daemon>,
    xml: &str,
    paused: bool,
) -> Result<DefineResponse, Failure> {
    let (domain, warnings) = parse_definition(d, xml).await?;
    let name = domain.name.clone();
    let uuid = domain.uuid;
    let ns = d.namespace.lock().await;
    let existing = d.registry.lock().check_identity(&name, uuid)?;
    if !existing {
        d.registry
            .lock()
            .domains
            .insert(name.clone(), Entry::new(uuid, None));
    }
    let held = hold(d, &uuid.to_string()).await?;
    drop(ns);
    start_locked(d, &held.name, uuid, Some(Arc::new(domain)), paused, None).await?;
    Ok(DefineResponse {
        name,
        uuid: uuid.to_string(),
        warnings,
        updated: false,
    })
}

/// `POST /domains/{dom}/shutdown`: the ACPI power button.
pub(crate) async fn shutdown(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let held = hold(d, key).await?;
    let (instance, generation) = live_instance(d, &held)?;
    // A power-off from here on ends the domain, even after a `reboot`
    // the guest ignored. Set first: the guest may power off at once.
    update_live(d, &held, generation, |e| e.fake_reboot = false);
    call(instance, |i| i.shutdown()).await?;
    update_live(d, &held, generation, |e| {
        e.state = DomainState::InShutdown;
        e.reason = StateReason::User;
    });
    Ok(())
}

/// `POST /domains/{dom}/reboot`: the power button, and a power-off then
/// boots the domain again (libvirt's way with ACPI).
pub(crate) async fn reboot(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let held = hold(d, key).await?;
    let (instance, generation) = live_instance(d, &held)?;
    // Set first: the guest may power off before the call returns.
    update_live(d, &held, generation, |e| e.fake_reboot = true);
    if let Err(e) = call(instance, |i| i.shutdown()).await {
        update_live(d, &held, generation, |e| e.fake_reboot = false);
        return Err(e);
    }
    Ok(())
}

/// `POST /domains/{dom}/reset`.
pub(crate) async fn reset(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let held = hold(d, key).await?;
    let (instance, generation) = live_instance(d, &held)?;
    call(instance, |i| i.reset()).await?;
    update_live(d, &held, generation, |e| {
        if e.state == DomainState::InShutdown {
            e.state = DomainState::Running;
            e.reason = StateReason::Booted;
        }
    });
    Ok(())
}

/// `POST /domains/{dom}/suspend`.
pub(crate) async fn suspend(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let held = hold(d, key).await?;
    let (instance, generation) = live_instance(d, &held)?;
    call(instance, |i| i.pause()).await?;
    if update_live(d, &held, generation, |e| {
        e.state = DomainState::Paused;
        e.reason = StateReason::User;
    }) {
        d.events
            .emit(&held.name, held.uuid, EventKind::Suspended, "Paused");
    }
    Ok(())
}

/// `POST /domains/{dom}/resume`.
pub(crate) async fn resume(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let held = hold(d, key).await?;
    let (instance, generation) = live_instance(d, &held)?;
    // A domain paused for a lost lease runs again only with it back.
    let disks = d
        .registry
        .lock()
        .get_mut(&held.name, held.uuid)
        .and_then(|e| e.live.as_ref().map(|l| l.disks.clone()))
        .unwrap_or_default();
    super::leases::take_for(d, &held.name, held.uuid, disks).await?;
    call(instance, |i| i.resume()).await?;
    if update_live(d, &held, generation, |e| {
        e.state = DomainState::Running;
        e.reason = StateReason::Unpaused;
    }) {
        d.events
            .emit(&held.name, held.uuid, EventKind::Resumed, "Unpaused");
    }
    Ok(())
}

/// `PUT /domains/{dom}/autostart`.
pub(crate) async fn autostart(d: &Arc<Daemon>, key: &str, enabled: bool) -> Result<(), Failure> {
    let held = hold(d, key).await?;
    let persistent = d
        .registry
        .lock()
        .domains
        .get(&held.name)
        .is_some_and(Entry::persistent);
    if !persistent {
        return Err(Failure::conflict(format!(
            "domain '{}' is transient: it cannot start with the daemon",
            held.name
        )));
    }
    let (store_d, store_name) = (d.clone(), held.name.clone());
    tokio::task::spawn_blocking(move || store_d.store.set_autostart(&store_name, enabled))
        .await?
        .map_err(Failure::storage)?;
    if let Some(e) = d.registry.lock().get_mut(&held.name, held.uuid) {
        e.autostart = enabled;
    }
    Ok(())
}
