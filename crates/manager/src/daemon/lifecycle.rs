//! Starting a domain, ending it, and what happens when its VMM ends.
//!
//! The one place a domain stops being active is [`on_exit`], run when the
//! instance's waiter thread sees the VMM end, whoever ended it. `destroy`
//! and friends ask the driver and then wait for that to have happened, so
//! that their answer describes the final state.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use virtxml::{Domain, LifecycleAction, Uuid};

use super::failure::Failure;
use super::registry::{disk_paths, driver_name, no_domain, Live};
use super::store::StartMarker;
use super::{host, Daemon};
use crate::api::{DomainState, DomainStateInfo, EventKind, StateReason};
use crate::driver::{ExitReason, Instance, RunRecord, StartContext};

/// How long a console session may keep forwarding after its domain's
/// VMM ended.
const CONSOLE_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How long `destroy` waits for the VMM's end to be recorded after the
/// driver said it is gone.
const EXIT_RECORD_WAIT: Duration = Duration::from_secs(30);

/// A domain whose run lasted less than this starts again only after this
/// long, so that a guest that powers off at once with
/// `on_poweroff='restart'` cannot spin the daemon.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Stack of a waiter thread: it only blocks in `wait_exit`.
const WAITER_STACK: usize = 256 * 1024;

/// The name, UUID and operation lock of the domain `key` names.
pub(crate) fn resolve(
    d: &Daemon,
    key: &str,
) -> Result<(String, Uuid, Arc<tokio::sync::Mutex<()>>), Failure> {
    let table = d.registry.lock();
    let (name, entry) = table.lookup(key)?;
    Ok((name.to_string(), entry.uuid, entry.ops.clone()))
}

/// `POST /domains/{dom}/start`.
pub(crate) async fn start(
    d: &Arc<Daemon>,
    key: &str,
    paused: bool,
) -> Result<DomainStateInfo, Failure> {
    let (name, uuid, ops) = resolve(d, key)?;
    let _op = ops.lock().await;
    start_locked(d, &name, uuid, None, paused, None).await
}

/// Starts `name` with its operation lock held: with `domain` as its live
/// definition when given (create), else its persistent one; as id `id`
/// when given (a reboot keeps its id), else a new one.
pub(crate) async fn start_locked(
    d: &Arc<Daemon>,
    name: &str,
    uuid: Uuid,
    domain: Option<Arc<Domain>>,
    paused: bool,
    id: Option<u32>,
) -> Result<DomainStateInfo, Failure> {
    let domain = {
        let table = d.registry.lock();
        let entry = table
            .domains
            .get(name)
            .filter(|e| e.uuid == uuid)
            .ok_or_else(|| no_domain(name))?;
        if entry.live.is_some() {
            return Err(Failure::conflict(format!(
                "domain '{name}' is already running"
            )));
        }
        domain
            .or_else(|| entry.config.clone())
            .ok_or_else(|| no_domain(name))?
    };
    let result = prepare_and_start(d, name, uuid, domain, paused, id).await;
    if let Err(e) = &result {
        start_failed(d, name, uuid, e).await;
        super::leases::settle(d, name, uuid).await;
    }
    result
}

/// What follows a failed start: the claim released, a transient domain
/// dropped, a persistent one shut off (failed) if the driver was tried.
async fn start_failed(d: &Arc<Daemon>, name: &str, uuid: Uuid, e: &Failure) {
    tracing::warn!("domain '{name}' did not start: {}", e.message);
    let mut table = d.registry.lock();
    let Some(entry) = table.get_mut(name, uuid) else {
        return;
    };
    entry.claimed.clear();
    if entry.live.is_some() {
        return;
    }
    if !entry.persistent() {
        table.domains.remove(name);
        return;
    }
    // Refusals before the driver ran (a 409 or 422) change nothing.
    if e.status.is_server_error() {
        entry.state = DomainState::ShutOff;
        entry.reason = StateReason::Failed;
        drop(table);
        d.events.emit(name, uuid, EventKind::Stopped, "Failed");
    }
}

async fn prepare_and_start(
    d: &Arc<Daemon>,
    name: &str,
    uuid: Uuid,
    domain: Arc<Domain>,
    paused: bool,
    id: Option<u32>,
) -> Result<DomainStateInfo, Failure> {
    let in_place = id.is_some();
    // A guest whose ports get filters or limits waits for them, paused.
    let hold_for_ports = !paused && super::port_policy::needed(&domain);
    let driver_name = driver_name(domain.driver);
    let driver = d
        .driver(driver_name)
        .ok_or_else(|| missing_driver(name, driver_name))?;
    check_memory(name, &domain)?;
    // The driver runs the domain with its NICs plugged into their
    // networks' bridges, and that is its live definition.
    let domain = super::networks::plug(d, &domain)?;
    let resolve_d = d.clone();
    let domain = Arc::new(
        tokio::task::spawn_blocking(move || super::disk_volumes::resolve(&resolve_d, &domain))
            .await??,
    );
    // Looked up before anything is claimed: a missing secret leaves
    // nothing to undo.
    let disk_secrets = super::secrets::domain_credentials(d, &domain)?;
    let disks = disk_paths(&domain).await;

    let id = {
        let mut table = d.registry.lock();
        if let Some((other, path)) = table.disk_conflict(name, &disks) {
            return Err(Failure::conflict(format!(
                "disk {} of domain '{name}' is in use by running domain '{other}'",
                path.display()
            )));
        }
        let id = match id {
            Some(id) => id,
            None => table.allocate_id(),
        };
        let entry = table.get_mut(name, uuid).ok_or_else(|| no_domain(name))?;
        entry.claimed = disks.clone();
        id
    };
    // Other hosts sharing a pool are kept off its volumes by leases; a
    // refusal names the holder.
    super::leases::take_for(d, name, uuid, disks.clone()).await?;

    let run_dir = d.run_root.join(id.to_string());
    let ctx = StartContext {
        run_dir: run_dir.clone(),
        log_path: d.store.log_path(name),
        paused: paused || hold_for_ports,
        cgroup_procs: Vec::new(),
        disk_secrets,
    };
    let marker = StartMarker {
        id,
        run_dir: run_dir.clone(),
    };
    let (start_d, start_name, start_domain) = (d.clone(), name.to_string(), domain.clone());
    let instance = tokio::task::spawn_blocking(move || -> Result<Box<dyn Instance>, Failure> {
        let mut ctx = ctx;
        driver.validate(&start_domain)?;
        make_run_dir(&start_d.run_root, &ctx.run_dir)?;
        // The cgroup is made after the marker: a daemon killed from here
        // on finds the marker, and its cleanup removes the cgroup too.
        let mut cgroup = None;
        let started = start_d
            .store
            .save_marker(&start_name, &marker)
            .map_err(Failure::storage)
            .and_then(|()| {
                cgroup = super::cgroups::prepare(&start_name, uuid, &start_domain)?;
                ctx.cgroup_procs = cgroup.as_ref().map(|c| c.procs_files()).unwrap_or_default();
                Ok(driver.start(&start_domain, id, &ctx)?)
            });
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&ctx.run_dir);
            let _ = start_d.store.remove_marker(&start_name);
            if let Some(c) = &cgroup {
                c.remove();
            }
        }
        started
    })
    .await??;
    let instance: Arc<dyn Instance> = Arc::from(instance);
    let record = instance.record();
    let saved = {
        let (store_d, n, r) = (d.clone(), name.to_string(), record.clone());
        tokio::task::spawn_blocking(move || {
            let saved = store_d.store.save_record(&n, &r);
            let _ = store_d.store.remove_marker(&n);
            saved
        })
        .await?
    };
    if let Err(e) = saved {
        // Without its record a later daemon could not find the VMM: end it.
        let i = instance.clone();
        let _ = tokio::task::spawn_blocking(move || i.destroy(false)).await;
        let _ = std::fs::remove_dir_all(&run_dir);
        return Err(Failure::storage(e));
    }

    let (state, reason) = if paused {
        (DomainState::Paused, StateReason::User)
    } else {
        (DomainState::Running, StateReason::Booted)
    };
    let activated = activate(
        d,
        name,
        uuid,
        domain,
        record,
        instance.clone(),
        run_dir.clone(),
        disks,
        state,
        reason,
    );
    if let Err(e) = activated {
        let (store_d, n) = (d.clone(), name.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            let _ = instance.destroy(false);
            let _ = store_d.store.remove_record(&n);
            let _ = std::fs::remove_dir_all(&run_dir);
        })
        .await;
        return Err(e);
    }
    let live_domain = d
        .registry
        .lock()
        .get_mut(name, uuid)
        .and_then(|e| e.live.as_ref().map(|l| l.domain.clone()));
    let ported = match live_domain {
        Some(live_domain) => super::port_policy::on_start(d, live_domain).await,
        None => Ok(()),
    };
    let resumed = match ported {
        Ok(()) if hold_for_ports => super::ops::call(instance.clone(), |i| i.resume()).await,
        other => other,
    };
    if let Err(e) = resumed {
        // Its VMM's end is seen by its waiter, which records the stop.
        let _ = super::ops::call(instance, |i| i.destroy(false)).await;
        return Err(e);
    }
    // A reboot in place (the id kept) is no stop and start to a watcher,
    // as a guest rebooting inside one QEMU is not.
    if !in_place {
        d.events.emit(name, uuid, EventKind::Started, "Booted");
    }
    if paused {
        d.events.emit(name, uuid, EventKind::Suspended, "Paused");
    }
    Ok(DomainStateInfo { state, reason })
}

/// Puts a started or re-adopted instance in the table and watches it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn activate(
    d: &Arc<Daemon>,
    name: &str,
    uuid: Uuid,
    domain: Arc<Domain>,
    record: RunRecord,
    instance: Arc<dyn Instance>,
    run_dir: PathBuf,
    disks: Vec<(PathBuf, bool)>,
    state: DomainState,
    reason: StateReason,
) -> Result<(), Failure> {
    // The driver's live XML says what it made at start (the TAP of a bridge
    // NIC, generated MACs): domiflist and the like read that, as libvirt's.
    let domain = match Domain::parse(&record.xml) {
        Ok(mut parsed) => {
            super::disk_volumes::carry_resolved(&domain, &mut parsed.domain);
            Arc::new(parsed.domain)
        }
        Err(_) => domain,
    };
    let (tx, rx) = watch::channel(false);
    let generation = {
        let mut table = d.registry.lock();
        let generation = table.allocate_generation();
        table.reserve_ids_through(record.id);
        let entry = table.get_mut(name, uuid).ok_or_else(|| no_domain(name))?;
        entry.claimed.clear();
        entry.state = state;
        entry.reason = reason;
        entry.live = Some(Live {
            id: record.id,
            generation,
            domain,
            record,
            instance: instance.clone(),
            run_dir,
            disks,
            exited: rx,
            since: std::time::Instant::now(),
            ended: Arc::default(),
        });
        generation
    };
    let waiter_d = d.clone();
    let waiter_name = name.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("wait-{}", generation))
        .stack_size(WAITER_STACK)
        .spawn(move || {
            let reason = instance.wait_exit();
            let runtime = waiter_d.runtime.clone();
            runtime.spawn(on_exit(waiter_d, waiter_name, uuid, generation, reason, tx));
        });
    if spawned.is_ok() {
        super::io_errors::watch(d.clone(), name.to_string(), uuid, generation);
    }
    if let Err(e) = spawned {
        // Its end would go unseen: the caller ends it instead.
        if let Some(entry) = d.registry.lock().get_mut(name, uuid) {
            entry.live = None;
        }
        return Err(Failure::internal(format!(
            "cannot watch the VMM of domain '{name}': {e}"
        )));
    }
    Ok(())
}

/// What a VMM's end leads to.
pub(crate) struct ExitPlan {
    /// The state it leaves the domain in.
    pub state: DomainState,
    /// Why.
    pub reason: StateReason,
    /// The events to send.
    pub events: Vec<(EventKind, &'static str)>,
    /// Start again: `Some(Some(id))` keeps the id (a reboot).
    pub restart: Option<Option<u32>>,
}

/// How the end of a VMM (`reason`) leaves `domain`: its state, events,
/// and whether `on_*` start it again.
pub(crate) fn plan_exit(
    name: &str,
    domain: &Domain,
    id: u32,
    reason: &ExitReason,
    destroyed: bool,
    fake_reboot: bool,
) -> ExitPlan {
    let stopped = |state, reason, events: Vec<(EventKind, &'static str)>| ExitPlan {
        state,
        reason,
        events,
        restart: None,
    };
    let shutdown_events = vec![
        (EventKind::Shutdown, "Finished"),
        (EventKind::Stopped, "Shutdown"),
    ];
    let preserve = |what: &str| {
        tracing::warn!(
            "domain '{name}': {what}='preserve' is not supported; the domain is shut off instead"
        )
    };
    if destroyed {
        return stopped(
            DomainState::ShutOff,
            StateReason::Destroyed,
            vec![(EventKind::Stopped, "Destroyed")],
        );
    }
    match reason {
        ExitReason::Destroyed => stopped(
            DomainState::ShutOff,
            StateReason::Destroyed,
            vec![(EventKind::Stopped, "Destroyed")],
        ),
        ExitReason::Poweroff if fake_reboot => ExitPlan {
            state: DomainState::ShutOff,
            reason: StateReason::Shutdown,
            events: Vec::new(),
            restart: Some(Some(id)),
        },
        ExitReason::Poweroff => {
            let mut plan = stopped(DomainState::ShutOff, StateReason::Shutdown, shutdown_events);
            match domain.on_poweroff {
                LifecycleAction::Restart | LifecycleAction::RenameRestart => {
                    plan.restart = Some(None)
                }
                LifecycleAction::Preserve => preserve("on_poweroff"),
                _ => {}
            }
            plan
        }
        ExitReason::Reset => match domain.on_reboot {
            LifecycleAction::Restart | LifecycleAction::RenameRestart => ExitPlan {
                state: DomainState::ShutOff,
                reason: StateReason::Shutdown,
                events: Vec::new(),
                restart: Some(Some(id)),
            },
            action => {
                if action == LifecycleAction::Preserve {
                    preserve("on_reboot");
                }
                stopped(
                    DomainState::ShutOff,
                    StateReason::Shutdown,
                    vec![(EventKind::Stopped, "Shutdown")],
                )
            }
        },
        ExitReason::Crashed(why) => {
            tracing::warn!("domain '{name}': the guest crashed: {why}");
            // libvirt's order: the crash, then what on_crash made of it.
            let mut plan = stopped(
                DomainState::ShutOff,
                StateReason::Crashed,
                vec![
                    (EventKind::Crashed, "Panicked"),
                    (EventKind::Stopped, "Crashed"),
                ],
            );
            match domain.on_crash {
                LifecycleAction::Restart
                | LifecycleAction::RenameRestart
                | LifecycleAction::CoredumpRestart => plan.restart = Some(None),
                LifecycleAction::Preserve => preserve("on_crash"),
                _ => {}
            }
            plan
        }
        ExitReason::Failed(why) => {
            tracing::warn!("domain '{name}': its VMM failed: {why}");
            stopped(
                DomainState::ShutOff,
                StateReason::Crashed,
                vec![(EventKind::Stopped, "Failed")],
            )
        }
    }
}

/// The VMM of run `generation` of `name` ended: record it, clean up, and
/// act on the domain's `on_*` settings.
async fn on_exit(
    d: Arc<Daemon>,
    name: String,
    uuid: Uuid,
    generation: u64,
    reason: ExitReason,
    exited: watch::Sender<bool>,
) {
    let run_dir = {
        let table = d.registry.lock();
        let live = table
            .domains
            .get(&name)
            .filter(|e| e.uuid == uuid)
            .and_then(|e| e.live.as_ref())
            .filter(|l| l.generation == generation);
        match live {
            Some(live) => {
                live.ended.store(true, std::sync::atomic::Ordering::SeqCst);
                (live.run_dir.clone(), live.domain.clone())
            }
            None => return,
        }
    };
    let (run_dir, ended_domain) = run_dir;
    super::port_policy::on_stop(ended_domain).await;
    // The record goes first: a daemon killed from here on finds no
    // record of a VMM that no longer exists. Nothing else can start the
    // domain meanwhile (it is still active in the table).
    let cleanup_d = d.clone();
    let cleanup_name = name.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let removed = cleanup_d.store.remove_record(&cleanup_name);
        let _ = std::fs::remove_dir_all(&run_dir);
        super::cgroups::remove(&cleanup_name, uuid);
        removed
    })
    .await;
    if let Ok(Err(e)) = removed {
        tracing::error!("domain '{name}': cannot remove its run record: {e}");
    }

    let (plan, restart_with, delay) = {
        let mut table = d.registry.lock();
        let Some(entry) = table.get_mut(&name, uuid) else {
            return;
        };
        let Some(live) = entry.live.take() else {
            return;
        };
        let destroyed = std::mem::take(&mut entry.destroying);
        let fake_reboot = std::mem::take(&mut entry.fake_reboot);
        if let Some((_, console)) = entry.console.take() {
            // The session still has to forward what the guest wrote last
            // (a panic's last lines): it ends by itself when the VMM's
            // socket does, which went with the process. One that does
            // not is ended after a moment.
            tokio::spawn(async move {
                tokio::time::sleep(CONSOLE_DRAIN).await;
                console.abort();
            });
        }
        let plan = plan_exit(
            &name,
            &live.domain,
            live.id,
            &reason,
            destroyed,
            fake_reboot,
        );
        entry.state = plan.state;
        entry.reason = plan.reason;
        if plan.restart.is_some() {
            // Its disks (and their leases) stay its own until it runs
            // again or fails to.
            entry.claimed = live.disks.clone();
        }
        // A reboot keeps the live definition, and a transient domain has
        // no other; other restarts take up a changed definition.
        let transient = !entry.persistent();
        let rebooting = matches!(plan.restart, Some(Some(_)));
        let restart_with = (transient || rebooting).then(|| live.domain.clone());
        if transient && plan.restart.is_none() {
            table.domains.remove(&name);
        }
        let delay = if live.since.elapsed() < RESTART_BACKOFF {
            RESTART_BACKOFF
        } else {
            Duration::ZERO
        };
        (plan, restart_with, delay)
    };
    // Before `destroy` answers: another host may start it right after. A
    // domain starting again (a reboot, an `on_*` restart) keeps its
    // leases; if it does not start, the failed start or the renewal
    // task releases them.
    if plan.restart.is_none() {
        super::leases::settle(&d, &name, uuid).await;
    }
    let _ = exited.send(true);
    tracing::info!(
        "domain '{name}' ended ({reason:?}): {} ({})",
        plan.state.virsh_name(),
        plan.reason.virsh_name()
    );
    for (kind, detail) in &plan.events {
        d.events.emit(&name, uuid, *kind, detail);
    }
    if let Some(keep_id) = plan.restart {
        tokio::spawn(restart(d, name, uuid, restart_with, keep_id, delay));
    }
}

/// Starts a domain again after its VMM ended (reboot, `on_*` restart).
async fn restart(
    d: Arc<Daemon>,
    name: String,
    uuid: Uuid,
    domain: Option<Arc<Domain>>,
    id: Option<u32>,
    delay: Duration,
) {
    tokio::time::sleep(delay).await;
    let ops = {
        let table = d.registry.lock();
        match table.domains.get(&name).filter(|e| e.uuid == uuid) {
            Some(e) => e.ops.clone(),
            None => return,
        }
    };
    let _op = ops.lock().await;
    // Started by a client meanwhile: that start stands.
    let running = d
        .registry
        .lock()
        .get_mut(&name, uuid)
        .is_some_and(|e| e.live.is_some());
    if running {
        return;
    }
    if let Err(e) = start_locked(&d, &name, uuid, domain, false, id).await {
        tracing::warn!(
            "domain '{name}' was to start again but did not: {}",
            e.message
        );
    }
}

/// `POST /domains/{dom}/destroy`.
pub(crate) async fn destroy(d: &Arc<Daemon>, key: &str, graceful: bool) -> Result<(), Failure> {
    let (name, uuid, ops) = resolve(d, key)?;
    let _op = ops.lock().await;
    let (instance, exited) = {
        let mut table = d.registry.lock();
        let entry = table.get_mut(&name, uuid).ok_or_else(|| no_domain(&name))?;
        let live = entry.live.as_ref().ok_or_else(|| not_running(&name))?;
        let pair = (live.instance.clone(), live.exited.clone());
        entry.destroying = true;
        pair
    };
    let ended = tokio::task::spawn_blocking(move || instance.destroy(graceful)).await?;
    if let Err(e) = ended {
        if let Some(entry) = d.registry.lock().get_mut(&name, uuid) {
            entry.destroying = false;
        }
        return Err(e.into());
    }
    wait_recorded(&name, exited).await
}

/// Waits until the table records the end of the run `exited` belongs to.
pub(crate) async fn wait_recorded(
    name: &str,
    mut exited: watch::Receiver<bool>,
) -> Result<(), Failure> {
    match tokio::time::timeout(EXIT_RECORD_WAIT, exited.wait_for(|ended| *ended)).await {
        // A closed channel means the waiter is gone: nothing more to see.
        Ok(_) => Ok(()),
        Err(_) => Err(Failure::driver(format!(
            "the VMM of domain '{name}' was ended but its exit was not seen within {} s",
            EXIT_RECORD_WAIT.as_secs()
        ))),
    }
}

/// 409 for a domain that is not running.
pub(crate) fn not_running(name: &str) -> Failure {
    Failure::conflict(format!("domain '{name}' is not running"))
}

fn missing_driver(name: &str, driver: &str) -> Failure {
    let hint = if driver == "qemu" {
        " (give vireo daemon --qemu PATH, or put qemu-system-x86_64 on its PATH)"
    } else {
        ""
    };
    Failure::unprocessable(format!(
        "domain '{name}' selects the {driver} driver, which this daemon does not run{hint}"
    ))
}

/// Refuses a domain with more memory than the host has (RAM and swap).
pub(crate) fn check_memory(name: &str, domain: &Domain) -> Result<(), Failure> {
    let Some(host_kib) = host::memory_and_swap_kib() else {
        return Ok(());
    };
    if domain.memory_kib > host_kib {
        return Err(Failure::unprocessable(format!(
            "domain '{name}' asks for {} MiB of memory, more than the host's {} MiB of RAM and swap",
            domain.memory_kib / 1024,
            host_kib / 1024
        )));
    }
    Ok(())
}

/// Creates `run_dir` (mode 0700) under `root`, empty.
fn make_run_dir(root: &Path, run_dir: &Path) -> Result<(), Failure> {
    let fail =
        |e: std::io::Error| Failure::internal(format!("cannot create {}: {e}", run_dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(fail)?;
    // A directory of the same id from before a daemon restart is stale.
    match std::fs::remove_dir_all(run_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(run_dir)
        .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(actions: &str) -> Domain {
        Domain::parse(&format!(
            "<domain type='kvm'><name>p</name><memory>4096</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os>{actions}</domain>"
        ))
        .unwrap()
        .domain
    }

    fn plan(actions: &str, reason: ExitReason, destroyed: bool, reboot: bool) -> ExitPlan {
        plan_exit("p", &domain(actions), 7, &reason, destroyed, reboot)
    }

    fn events(p: &ExitPlan) -> Vec<String> {
        p.events
            .iter()
            .map(|(k, d)| format!("{} {d}", k.virsh_name()))
            .collect()
    }

    #[test]
    fn default_actions() {
        let p = plan("", ExitReason::Poweroff, false, false);
        assert_eq!(
            (p.state, p.reason, p.restart),
            (DomainState::ShutOff, StateReason::Shutdown, None)
        );
        assert_eq!(events(&p), ["Shutdown Finished", "Stopped Shutdown"]);

        let p = plan("", ExitReason::Crashed("triple fault".into()), false, false);
        assert_eq!(
            (p.state, p.reason, p.restart),
            (DomainState::ShutOff, StateReason::Crashed, None)
        );
        assert_eq!(events(&p), ["Crashed Panicked", "Stopped Crashed"]);

        // A VMM that dies is no guest crash: on_crash does not apply.
        let p = plan(
            "<on_crash>restart</on_crash>",
            ExitReason::Failed("killed".into()),
            false,
            false,
        );
        assert_eq!(
            (p.state, p.reason, p.restart),
            (DomainState::ShutOff, StateReason::Crashed, None)
        );
        assert_eq!(events(&p), ["Stopped Failed"]);

        // A reset reboots in place, keeping the id.
        let p = plan("", ExitReason::Reset, false, false);
        assert_eq!(p.restart, Some(Some(7)));
        assert!(p.events.is_empty());

        let p = plan("", ExitReason::Destroyed, false, false);
        assert_eq!(
            (p.state, p.reason),
            (DomainState::ShutOff, StateReason::Destroyed)
        );
        assert_eq!(events(&p), ["Stopped Destroyed"]);
    }

    #[test]
    fn destroy_wins_and_reboot_restarts_after_power_off() {
        // Whatever the driver saw, a destroy in progress is a destroy.
        let p = plan("", ExitReason::Failed("SIGKILL".into()), true, false);
        assert_eq!(p.reason, StateReason::Destroyed);
        let p = plan("", ExitReason::Poweroff, false, true);
        assert_eq!(p.restart, Some(Some(7)));
        assert!(p.events.is_empty());
    }

    #[test]
    fn on_actions_are_honoured() {
        let p = plan(
            "<on_poweroff>restart</on_poweroff>",
            ExitReason::Poweroff,
            false,
            false,
        );
        assert_eq!(p.restart, Some(None), "a new id");
        let p = plan(
            "<on_reboot>destroy</on_reboot>",
            ExitReason::Reset,
            false,
            false,
        );
        assert_eq!(
            (p.state, p.reason, p.restart),
            (DomainState::ShutOff, StateReason::Shutdown, None)
        );
        let p = plan(
            "<on_crash>restart</on_crash>",
            ExitReason::Crashed("x".into()),
            false,
            false,
        );
        assert_eq!((p.state, p.restart), (DomainState::ShutOff, Some(None)));
        assert_eq!(events(&p), ["Crashed Panicked", "Stopped Crashed"]);
        let p = plan(
            "<on_poweroff>preserve</on_poweroff>",
            ExitReason::Poweroff,
            false,
            false,
        );
        assert_eq!((p.state, p.restart), (DomainState::ShutOff, None));
    }
}
