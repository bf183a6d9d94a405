//! What the daemon does as it starts: read the definitions, re-adopt the
//! VMMs a previous daemon left running, account for those that ended or
//! were being started when it died, and start the autostart domains.
//!
//! A recorded VMM that is gone (or whose pid now belongs to another
//! process: the driver compares start times) is recorded as a watched end
//! would be, from what [`crate::driver::Driver::ended`] tells (a crash
//! when it cannot), without `on_*` restarts. A start interrupted before its run record was written left a
//! marker naming its run directory: every process whose command line
//! holds that directory is that start's VMM, and is killed, so that no
//! VMM is left that no record accounts for.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtxml::Domain;

use super::lifecycle::{activate, plan_exit, start};
use super::registry::{resolve_disk_paths, Entry};
use super::Daemon;
use crate::api::{DomainState, EventKind, StateReason};
use crate::driver::{ExitReason, Instance, RunRecord, RuntimeState, StartContext};

/// Reads the state directory into the registry and re-adopts VMMs.
pub(crate) async fn load(d: &Arc<Daemon>) -> io::Result<()> {
    let read_d = d.clone();
    let (definitions, autostart, records, markers) = tokio::task::spawn_blocking(move || {
        let s = &read_d.store;
        io::Result::Ok((
            s.definitions()?,
            s.autostart_names()?,
            s.records::<RunRecord>()?,
            s.markers()?,
        ))
    })
    .await
    .map_err(io::Error::other)??;

    {
        let mut table = d.registry.lock();
        for (file_name, xml) in definitions {
            let domain = match Domain::parse(&xml) {
                Ok(p) => p.domain,
                Err(e) => {
                    tracing::error!("definition of '{file_name}' does not parse ({e}); skipped");
                    continue;
                }
            };
            if domain.name != file_name {
                tracing::error!(
                    "definition file of '{file_name}' names domain '{}'; skipped",
                    domain.name
                );
                continue;
            }
            if let Err(e) = table.check_identity(&domain.name, domain.uuid) {
                tracing::error!("definition of '{file_name}' skipped: {}", e.message);
                continue;
            }
            let mut entry = Entry::new(domain.uuid, Some(Arc::new(domain)));
            entry.autostart = autostart.contains(&file_name);
            table.domains.insert(file_name, entry);
        }
        for record in records.values() {
            table.reserve_ids_through(record.id);
        }
    }

    for (name, marker) in &markers {
        if records.contains_key(name) {
            // The start got as far as its record: adopted below.
        } else if !is_run_dir_of(&marker.run_dir, marker.id) {
            // Never a directory a start made: nothing is killed or removed
            // on its word (`/` would name every process and the root).
            tracing::error!(
                "start marker of domain '{name}' names {}, not a run directory; ignored",
                marker.run_dir.display()
            );
            mark_stopped(d, name, StateReason::Failed, "Failed");
        } else {
            tracing::warn!(
                "domain '{name}' was being started when the daemon stopped; ending what that start left"
            );
            let run_dir = marker.run_dir.clone();
            let (cg_d, cg_name) = (d.clone(), name.clone());
            let killed = tokio::task::spawn_blocking(move || {
                let killed = kill_processes_mentioning(&run_dir);
                let _ = std::fs::remove_dir_all(&run_dir);
                super::cgroups::remove_by_name(&cg_d, &cg_name);
                killed
            })
            .await
            .unwrap_or(0);
            if killed > 0 {
                tracing::warn!(
                    "killed {killed} VMM process(es) of the interrupted start of '{name}'"
                );
            }
            mark_stopped(d, name, StateReason::Failed, "Failed");
        }
        let _ = d.store.remove_marker(name);
    }

    let adoptions: Vec<_> = records
        .into_iter()
        .map(|(name, record)| tokio::spawn(adopt(d.clone(), name, record)))
        .collect();
    for a in adoptions {
        let _ = a.await;
    }
    remove_stale_run_dirs(d).await;
    Ok(())
}

/// Whether `dir` can be the run directory of start `id`: `ROOT/ID`, an
/// absolute path with no `.` or `..` and a root below `/` (the daemon's
/// socket may have moved since, and the run root with it).
fn is_run_dir_of(dir: &Path, id: u32) -> bool {
    use std::path::Component;
    let mut components = dir.components();
    components.next() == Some(Component::RootDir)
        && components.clone().count() >= 2
        && components.all(|c| matches!(c, Component::Normal(_)))
        && dir.file_name() == Some(std::ffi::OsStr::new(&id.to_string()))
}

/// Removes run directories no active domain owns (a daemon killed between
/// a VMM's end and the removal of its directory leaves one).
async fn remove_stale_run_dirs(d: &Arc<Daemon>) {
    let owned: Vec<std::path::PathBuf> = {
        let table = d.registry.lock();
        table
            .domains
            .values()
            .filter_map(|e| e.live.as_ref().map(|l| l.run_dir.clone()))
            .collect()
    };
    let root = d.run_root.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&root) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !owned.contains(&path) {
                tracing::info!("removing the stale run directory {}", path.display());
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    })
    .await;
}

/// Marks a persistent domain shut off after a VMM the daemon had lost.
fn mark_stopped(d: &Daemon, name: &str, reason: StateReason, detail: &str) {
    let uuid = {
        let mut table = d.registry.lock();
        let Some(entry) = table.domains.get_mut(name).filter(|e| e.live.is_none()) else {
            return;
        };
        entry.state = DomainState::ShutOff;
        entry.reason = reason;
        entry.uuid
    };
    d.events.emit(name, uuid, EventKind::Stopped, detail);
}

/// Records the end of a VMM that ended while no daemon watched: as a
/// watched end would be (`plan_exit`), without the restarts `on_*` ask
/// for (autostart decides what starts with the daemon). An end the driver
/// cannot tell is a crash.
fn mark_ended(d: &Daemon, name: &str, record: &RunRecord, reason: Option<ExitReason>) {
    let reason = reason
        .unwrap_or_else(|| ExitReason::Failed("the VMM ended while the daemon was away".into()));
    let domain = Domain::parse(&record.xml).ok().map(|p| p.domain);
    let Some(domain) = domain.or_else(|| {
        let table = d.registry.lock();
        table
            .domains
            .get(name)
            .and_then(|e| e.config.as_ref().map(|c| (**c).clone()))
    }) else {
        return;
    };
    let plan = plan_exit(name, &domain, record.id, &reason, false, false);
    let (state, reason) = match plan.restart {
        // It would have started again: as far as anyone can tell now, it
        // is shut off.
        Some(_) => (DomainState::ShutOff, plan.reason),
        None => (plan.state, plan.reason),
    };
    let uuid = {
        let mut table = d.registry.lock();
        let Some(entry) = table.domains.get_mut(name).filter(|e| e.live.is_none()) else {
            return;
        };
        entry.state = state;
        entry.reason = reason;
        entry.uuid
    };
    for (kind, detail) in &plan.events {
        d.events.emit(name, uuid, *kind, detail);
    }
}

/// What re-adoption found.
enum Adopted {
    /// Alive: the instance, its vCPUs' state and its disks (resolved
    /// here, off the async thread).
    Alive(Box<dyn Instance>, RuntimeState, Vec<(PathBuf, bool)>),
    /// Gone, with how it ended when the driver can tell.
    Gone(Option<ExitReason>),
}

async fn adopt(d: Arc<Daemon>, name: String, record: RunRecord) {
    let ctx = StartContext {
        run_dir: d.run_root.join(record.id.to_string()),
        log_path: d.store.log_path(&name),
        paused: false,
        cgroup_procs: Vec::new(),
        disk_secrets: Default::default(),
    };
    let adopt_d = d.clone();
    let adopt_record = record.clone();
    let adopt_ctx = ctx.clone();
    let found = tokio::task::spawn_blocking(move || {
        let Some(driver) = adopt_d.driver(&adopt_record.driver) else {
            return Err(format!(
                "the {} driver is not available in this daemon",
                adopt_record.driver
            ));
        };
        match driver.adopt(&adopt_record, &adopt_ctx) {
            Ok(Some(instance)) => {
                let state = instance.state().unwrap_or(RuntimeState::Running);
                let disks = Domain::parse(&adopt_record.xml)
                    .map(|p| {
                        resolve_disk_paths(&super::disk_volumes::resolve_adopted(
                            &adopt_d, p.domain,
                        ))
                    })
                    .unwrap_or_default();
                Ok(Adopted::Alive(instance, state, disks))
            }
            // Asked before the run directory (where a driver may keep
            // the VMM's last word) is removed.
            Ok(None) => Ok(Adopted::Gone(driver.ended(&adopt_record))),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));

    let found = match found {
        Ok(f) => f,
        Err(why) => {
            tracing::error!(
                "cannot re-adopt the VMM of domain '{name}' (pid {}): {why}; it is killed",
                record.pid
            );
            let (pid, start_time) = (record.pid, record.start_time);
            let _ = tokio::task::spawn_blocking(move || kill_if_same(pid, start_time)).await;
            Adopted::Gone(None)
        }
    };
    match found {
        Adopted::Alive(instance, runtime_state, disks) => {
            let instance: Arc<dyn Instance> = Arc::from(instance);
            let alive = (instance.clone(), runtime_state, disks);
            if let Err(why) = adopt_alive(&d, &name, &record, &ctx, alive) {
                tracing::error!("domain '{name}': {why}; its VMM is destroyed");
                let _ = tokio::task::spawn_blocking(move || instance.destroy(false)).await;
                forget_record(&d, &name, &record, &ctx).await;
                mark_ended(&d, &name, &record, None);
            }
        }
        Adopted::Gone(reason) => {
            tracing::warn!(
                "the VMM of domain '{name}' (pid {}) ended while the daemon was away: {reason:?}",
                record.pid
            );
            forget_record(&d, &name, &record, &ctx).await;
            mark_ended(&d, &name, &record, reason);
        }
    }
}

/// Puts a re-adopted instance back in the table.
fn adopt_alive(
    d: &Arc<Daemon>,
    name: &str,
    record: &RunRecord,
    ctx: &StartContext,
    (instance, runtime_state, disks): (Arc<dyn Instance>, RuntimeState, Vec<(PathBuf, bool)>),
) -> Result<(), String> {
    let live = match Domain::parse(&record.xml) {
        Ok(p) => Arc::new(super::disk_volumes::resolve_adopted(d, p.domain)),
        Err(e) => return Err(format!("its live definition does not parse: {e}")),
    };
    if live.name != name {
        return Err(format!("its run record names domain '{}'", live.name));
    }
    {
        let mut table = d.registry.lock();
        match table.domains.get(name) {
            Some(entry) if entry.uuid != live.uuid => {
                return Err(format!(
                    "its run record has UUID {}, its definition {}",
                    live.uuid, entry.uuid
                ))
            }
            Some(_) => {}
            // Undefined while it ran: it lives on as a transient domain.
            None => {
                table
                    .domains
                    .insert(name.to_string(), Entry::new(live.uuid, None));
            }
        }
    }
    let (state, reason) = match runtime_state {
        RuntimeState::Running => (DomainState::Running, StateReason::Unknown),
        RuntimeState::Paused => (DomainState::Paused, StateReason::Unknown),
    };
    let uuid = live.uuid;
    tracing::info!(
        "re-adopted domain '{name}' (id {}, pid {})",
        record.id,
        record.pid
    );
    activate(
        d,
        name,
        uuid,
        live,
        record.clone(),
        instance,
        ctx.run_dir.clone(),
        disks,
        state,
        reason,
    )
    .map_err(|e| e.message)
}

async fn forget_record(d: &Arc<Daemon>, name: &str, record: &RunRecord, ctx: &StartContext) {
    let (forget_d, n, run_dir) = (d.clone(), name.to_string(), ctx.run_dir.clone());
    // A transient domain is in no table yet: its UUID is in its record.
    let uuid = Domain::parse(&record.xml).ok().map(|p| p.domain.uuid);
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = forget_d.store.remove_record(&n) {
            tracing::error!("cannot remove the run record of '{n}': {e}");
        }
        let _ = std::fs::remove_dir_all(run_dir);
        match uuid {
            Some(uuid) => super::cgroups::remove(&n, uuid),
            None => super::cgroups::remove_by_name(&forget_d, &n),
        }
    })
    .await;
}

/// Starts every autostart domain that is not running.
pub(crate) async fn autostart(d: Arc<Daemon>) {
    let names: Vec<String> = {
        let table = d.registry.lock();
        table
            .domains
            .iter()
            .filter(|(_, e)| e.autostart && e.live.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    };
    let starts: Vec<_> = names
        .into_iter()
        .map(|name| {
            let d = d.clone();
            tokio::spawn(async move {
                match start(&d, &name, false).await {
                    Ok(_) => tracing::info!("autostarted domain '{name}'"),
                    // Started by a client meanwhile: nothing to do.
                    Err(e) if e.status.as_u16() == 409 => {}
                    Err(e) => tracing::error!("autostart of domain '{name}' failed: {}", e.message),
                }
            })
        })
        .collect();
    for s in starts {
        let _ = s.await;
    }
}

/// The start time (`/proc/PID/stat` field 22) of `pid`, if it runs.
/// SIGKILLs `pid` if it is still the process started at `start`, through
/// a pidfd: the pid cannot name another process between the check and
/// the signal.
fn kill_if_same(pid: u32, start: u64) {
    if let Ok(Some(process)) = crate::driver::process::PidFd::open(pid, start) {
        let _ = process.signal(libc::SIGKILL);
    }
}

fn kill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 || pid == std::process::id().try_into().unwrap_or(0) {
        return;
    }
    // SAFETY: kill(2) with a pid and a signal number; no memory is passed.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// SIGKILLs every process whose command line names a file in `dir`
/// (`DIR/...`: so that `.../1` never matches `.../10/api.sock`); returns
/// how many.
fn kill_processes_mentioning(dir: &Path) -> usize {
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    if needle.is_empty() {
        return 0;
    }
    if needle.last() != Some(&b'/') {
        needle.push(b'/');
    }
    let needle = needle.as_slice();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    let mut by_pid = BTreeMap::new();
    for p in procs.filter_map(Result::ok) {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) {
            by_pid.insert(pid, cmdline);
        }
    }
    for (pid, cmdline) in by_pid {
        if cmdline.windows(needle.len()).any(|w| w == needle) {
            kill(pid);
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::PathBuf;

    #[test]
    fn only_a_run_directory_is_taken_from_a_marker() {
        assert!(is_run_dir_of(Path::new("/run/vireo/vireo.sock.d/7"), 7));
        assert!(is_run_dir_of(Path::new("/x/7"), 7));
        for bad in ["/", "", "/7", "7", "x/7", "/x/8", "/x/../7"] {
            assert!(!is_run_dir_of(Path::new(bad), 7), "{bad}");
        }
    }

    #[test]
    fn processes_are_found_by_their_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("run-dir-of-test");
        let shell = |arg: PathBuf| {
            std::process::Command::new("sh")
                .arg("-c")
                // The shell's own `read` blocks: no child process is left.
                .arg("read line")
                .arg(arg)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let mut child = shell(marker.join("api.sock"));
        let mut other = shell(dir.path().join("run-dir-of-test0/api.sock"));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(kill_processes_mentioning(&marker), 1);
        assert_eq!(
            other.try_wait().unwrap(),
            None,
            "a longer name is another directory"
        );
        other.kill().unwrap();
        other.wait().unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert_eq!(kill_processes_mentioning(&marker), 0);
    }
}
