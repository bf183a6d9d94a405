//! A domain's cgroup from the daemon's side: made with the definition's
//! limits before the VMM starts, removed when it ends, read and changed
//! by `schedinfo`, `memtune` and `blkiotune`.

use std::os::unix::fs::MetadataExt;

use virtxml::{Domain, Uuid};

use super::failure::Failure;
use crate::cgroup::{self, DeviceThrottle, DomainCgroup, Hierarchy, Tuning};

/// The limits `domain` asks for, its block devices resolved to major and
/// minor numbers.
pub(crate) fn tuning_of(domain: &Domain) -> Result<Tuning, Failure> {
    let mut t = Tuning::default();
    if let Some(c) = &domain.cputune {
        t.cpu_shares = c.shares;
        t.cpu_period = c.global_period;
        t.cpu_quota = c.global_quota;
    }
    if let Some(m) = &domain.memtune {
        t.memory_hard_kib = m.hard_limit_kib;
        t.memory_soft_kib = m.soft_limit_kib;
        t.swap_hard_kib = m.swap_hard_limit_kib;
    }
    if let Some(b) = &domain.blkiotune {
        t.blkio_weight = b.weight;
        for d in &b.devices {
            t.devices.push(DeviceThrottle {
                dev: device_numbers(&d.path)?,
                weight: d.weight,
                read_bytes_sec: d.read_bytes_sec,
                write_bytes_sec: d.write_bytes_sec,
                read_iops_sec: d.read_iops_sec,
                write_iops_sec: d.write_iops_sec,
            });
        }
    }
    Ok(t)
}

/// A block device's major and minor numbers.
pub(crate) fn device_numbers(path: &str) -> Result<(u32, u32), Failure> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::unprocessable(format!("blkiotune device {path}: {e}")))?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_block_device() {
        return Err(Failure::unprocessable(format!(
            "blkiotune device {path} is not a block device"
        )));
    }
    let rdev = meta.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

fn group(name: &str, uuid: Uuid) -> String {
    cgroup::group_name(name, &uuid.to_string())
}

/// Makes the domain's cgroup with its limits, before its VMM starts.
/// Without a usable hierarchy a domain that asks for no limit runs
/// without one; one that asks for a limit is refused.
pub(crate) fn prepare(
    name: &str,
    uuid: Uuid,
    domain: &Domain,
) -> Result<Option<DomainCgroup>, Failure> {
    let tuning = tuning_of(domain)?;
    let fail = |why: String| {
        if tuning.is_empty() {
            tracing::debug!("domain '{name}' runs without a cgroup: {why}");
            Ok(None)
        } else {
            Err(Failure::unprocessable(format!(
                "domain '{name}' asks for resource limits, but {why}"
            )))
        }
    };
    let Some(h) = cgroup::host() else {
        return fail(
            "this host has no cgroup hierarchy with the cpu and memory controllers".into(),
        );
    };
    let cg = match DomainCgroup::create(&h, &group(name, uuid)) {
        Ok(cg) => cg,
        Err(e) => return fail(format!("its cgroup cannot be made: {e}")),
    };
    if let Err(e) = cg.apply(&tuning) {
        cg.remove();
        return Err(Failure::unprocessable(format!(
            "domain '{name}': a resource limit cannot be set: {e}"
        )));
    }
    Ok(Some(cg))
}

/// The domain's cgroup, if it has one now.
pub(crate) fn existing(name: &str, uuid: Uuid) -> Option<DomainCgroup> {
    let h: Hierarchy = cgroup::host()?;
    let cg = DomainCgroup::at(&h, &group(name, uuid));
    cg.exists().then_some(cg)
}

/// Removes the cgroup of domain `name` as the table knows it (a VMM
/// found gone when the daemon starts again).
pub(crate) fn remove_by_name(d: &super::Daemon, name: &str) {
    let uuid = d.registry.lock().domains.get(name).map(|e| e.uuid);
    if let Some(uuid) = uuid {
        remove(name, uuid);
    }
}

/// How old an unused cgroup must be before the sweep removes it: a
/// cgroup is empty between being made and its VMM joining it (a few
/// milliseconds), and another daemon sharing the parent (`--cgroup-parent`
/// is a setting, and two daemons on one host may keep the default) may be
/// starting a domain of the same name and UUID right then.
const STRAY_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// Removes the cgroups of this daemon's domains that are not running:
/// those a daemon killed between making a domain's cgroup and recording
/// its start, or between removing its record and its cgroup, left
/// behind. Only the cgroups of domains this daemon defines are looked
/// at (other daemons may share the parent), only those older than
/// [`STRAY_AGE`], and only empty ones go (the kernel refuses to remove a
/// cgroup with a process in it), so a running VMM is never touched.
/// Called once the daemon has adopted its running domains, before any
/// client.
pub(crate) fn sweep(d: &super::Daemon) {
    let Some(h) = cgroup::host() else {
        return;
    };
    let idle: Vec<String> = d
        .registry
        .lock()
        .domains
        .iter()
        .filter(|(_, e)| e.live.is_none())
        .map(|(n, e)| group(n, e.uuid))
        .collect();
    for name in idle {
        let cg = DomainCgroup::at(&h, &name);
        if !cg.dirs().iter().any(|d| d.exists()) {
            continue;
        }
        if cg.age().is_none_or(|a| a < STRAY_AGE) {
            tracing::debug!("left the unused cgroup {name}: it was made moments ago");
            continue;
        }
        cg.remove();
        if cg.dirs().iter().all(|d| !d.exists()) {
            tracing::info!("removed the stray cgroup {name}");
        }
    }
}

/// Removes the domain's cgroup once its VMM has ended.
pub(crate) fn remove(name: &str, uuid: Uuid) {
    if let Some(cg) = existing(name, uuid) {
        cg.remove();
    }
}
