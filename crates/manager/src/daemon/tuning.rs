//! Memory and CPU placement verbs: `setmem` and `dommemstat` (the
//! balloon), `vcpupin`, `emulatorpin` and `vcpuinfo` (thread affinity),
//! `numatune` (host memory policy). Each works on the running domain, its
//! definition, or both, with virsh's `--live`/`--config` rule.

use std::sync::Arc;

use virtxml::{
    BlkioDevice, BlkioTune, CpuSet, CpuTune, Domain, MemTune, NodeBinding, NumaMode, NumaTune,
};

use super::devices::{commit_config, commit_live, subject, Subject};
use super::failure::Failure;
use super::lifecycle::{not_running, resolve};
use super::ops::call;
use super::registry::{driver_name, no_domain};
use super::Daemon;
use crate::api::{
    Affinity, DeviceLimits, LimitsRequest, MemoryStat, MemoryStats, NumaTuneInfo, NumaTuneRequest,
    PinRequest, ResourceLimits, SetMemoryRequest, VcpuRow,
};
use crate::driver::{DriverError, Instance};

/// The smallest memory `setmem` leaves a guest, KiB (the balloon's floor
/// in the driver).
const MIN_MEMORY_KIB: u64 = 4096;

/// A definition, and the instance running it when it is the live one.
type Current = (Arc<Domain>, Option<Arc<dyn Instance>>);

/// The running domain's live definition and instance, or its persistent
/// definition (with `config`, or when it does not run).
fn current(d: &Daemon, key: &str, config: bool) -> Result<Current, Failure> {
    let (name, uuid, _) = resolve(d, key)?;
    let mut table = d.registry.lock();
    let entry = table.get_mut(&name, uuid).ok_or_else(|| no_domain(key))?;
    match (&entry.live, config) {
        (Some(l), false) => Ok((l.domain.clone(), Some(l.instance.clone()))),
        _ => entry.config.clone().map(|c| (c, None)).ok_or_else(|| {
            Failure::conflict(format!(
                "domain '{name}' is transient: it has no definition"
            ))
        }),
    }
}

/// A definition changed by a verb, checked by its driver as `define`
/// checks one, so that no definition the driver refuses is saved.
async fn checked(d: &Daemon, domain: Domain) -> Result<Domain, Failure> {
    let driver = d.driver(driver_name(domain.driver));
    tokio::task::spawn_blocking(move || {
        if let Some(driver) = driver {
            driver.validate(&domain)?;
        }
        Ok(domain)
    })
    .await?
}

fn cpuset(text: &str) -> Result<CpuSet, Failure> {
    CpuSet::parse(text).map_err(|e| Failure::bad_request(format!("cpuset {e}")))
}

/// Refuses host CPUs this host does not have, naming the first.
fn host_cpus_exist(set: &CpuSet) -> Result<(), Failure> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| CpuSet::parse(t.trim()).ok());
    if let Some(online) = online {
        if let Some(c) = set.iter().find(|c| !online.contains(*c)) {
            return Err(Failure::unprocessable(format!(
                "host CPU {c} does not exist or is offline (online: {online})"
            )));
        }
    }
    Ok(())
}

/// `GET /domains/{dom}/memory` (virsh `dommemstat`).
pub(crate) async fn memory_stats(d: &Arc<Daemon>, key: &str) -> Result<MemoryStats, Failure> {
    let (domain, instance) = current(d, key, false)?;
    let Some(instance) = instance else {
        return Err(not_running(&domain.name));
    };
    let mut stats = call(instance, |i| i.memory_stats()).await?;
    if !stats.iter().any(|(k, _)| k == "actual") {
        // No balloon: the guest has what it started with.
        let actual = domain.current_memory_kib.unwrap_or(domain.memory_kib);
        stats.insert(0, ("actual".to_string(), actual));
    }
    Ok(MemoryStats {
        stats: stats
            .into_iter()
            .map(|(name, value)| MemoryStat { name, value })
            .collect(),
    })
}

fn has_balloon(domain: &Domain) -> bool {
    domain.devices.memballoon.as_ref().is_some_and(|b| b.virtio)
}

fn check_target(domain: &Domain, kib: u64) -> Result<(), Failure> {
    if kib < MIN_MEMORY_KIB || kib > domain.memory_kib {
        return Err(Failure::unprocessable(format!(
            "domain '{}': {kib} KiB is outside {MIN_MEMORY_KIB} KiB to its maximum memory ({} KiB)",
            domain.name, domain.memory_kib
        )));
    }
    Ok(())
}

/// `PUT /domains/{dom}/memory` (virsh `setmem`).
pub(crate) async fn set_memory(
    d: &Arc<Daemon>,
    key: &str,
    req: &SetMemoryRequest,
) -> Result<(), Failure> {
    let (s, do_live, do_config) = subject(d, key, req.live, req.config).await?;
    let live = match (&s.live, do_live) {
        (Some(l), true) => {
            check_target(&l.domain, req.kib)?;
            if !has_balloon(&l.domain) {
                return Err(Failure::unprocessable(format!(
                    "domain '{}' has no memory balloon: its memory cannot change while it runs",
                    s.held.name
                )));
            }
            let mut new = (*l.domain).clone();
            new.current_memory_kib = Some(req.kib);
            Some(new)
        }
        _ => None,
    };
    let config = match (&s.config, do_config) {
        (Some(c), true) => {
            check_target(c, req.kib)?;
            let mut new = (**c).clone();
            new.current_memory_kib = Some(req.kib);
            Some(checked(d, new).await?)
        }
        _ => None,
    };
    if let (Some(new), Some(l)) = (live, &s.live) {
        let kib = req.kib;
        call(l.instance.clone(), move |i| i.set_balloon(kib)).await?;
        commit_live(d, &s, new, l.record.clone()).await?;
    }
    if let Some(new) = config {
        commit_config(d, &s, new).await?;
    }
    Ok(())
}

/// The host CPUs a definition lets vCPU `v` use: its `vcpupin`, else the
/// `vcpu cpuset`, else every online CPU.
fn defined_affinity(domain: &Domain, v: u32) -> String {
    domain
        .cputune
        .as_ref()
        .and_then(|t| t.vcpu_pin(v))
        .or(domain.vcpu.cpuset.as_ref())
        .map(ToString::to_string)
        .unwrap_or_else(all_host_cpus)
}

fn all_host_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|_| "0".into())
}

/// `GET /domains/{dom}/vcpus` (virsh `vcpuinfo`, and `vcpupin` without a
/// set).
pub(crate) async fn vcpus(
    d: &Arc<Daemon>,
    key: &str,
    config: bool,
) -> Result<Vec<VcpuRow>, Failure> {
    let (domain, instance) = current(d, key, config)?;
    let Some(instance) = instance else {
        return Ok((0..domain.vcpu.count)
            .map(|v| VcpuRow {
                vcpu: v,
                cpu: None,
                state: "offline".into(),
                cpu_time_ns: None,
                affinity: defined_affinity(&domain, v),
            })
            .collect());
    };
    let threads = call(instance, |i| i.vcpus()).await?;
    Ok(threads
        .into_iter()
        .map(|t| VcpuRow {
            vcpu: t.vcpu,
            cpu: Some(t.cpu),
            state: "running".into(),
            cpu_time_ns: Some(t.cpu_time_ns),
            affinity: t.affinity.to_string(),
        })
        .collect())
}

fn with_vcpu_pin(domain: &Domain, vcpu: u32, set: &CpuSet) -> Result<Domain, Failure> {
    if vcpu >= domain.vcpu.count {
        return Err(Failure::unprocessable(format!(
            "domain '{}' has {} vCPUs: there is no vCPU {vcpu}",
            domain.name, domain.vcpu.count
        )));
    }
    let mut new = domain.clone();
    let tune = new.cputune.get_or_insert_with(CpuTune::default);
    tune.vcpupins.retain(|(v, _)| *v != vcpu);
    tune.vcpupins.push((vcpu, set.clone()));
    tune.vcpupins.sort_by_key(|(v, _)| *v);
    Ok(new)
}

/// `PUT /domains/{dom}/vcpus/{vcpu}/affinity` (virsh `vcpupin` with a
/// set).
pub(crate) async fn pin_vcpu(
    d: &Arc<Daemon>,
    key: &str,
    vcpu: u32,
    req: &PinRequest,
) -> Result<(), Failure> {
    let set = cpuset(&req.cpuset)?;
    host_cpus_exist(&set)?;
    let (s, do_live, do_config) = subject(d, key, req.live, req.config).await?;
    pin(
        d,
        &s,
        do_live,
        do_config,
        |dom| with_vcpu_pin(dom, vcpu, &set),
        {
            let set = set.clone();
            move |i: &dyn Instance| i.pin_vcpu(vcpu, &set)
        },
    )
    .await
}

/// Applies a pin to the running domain (through `apply`) and to its
/// definition, both changed by `change` and checked before either is.
async fn pin(
    d: &Arc<Daemon>,
    s: &Subject,
    do_live: bool,
    do_config: bool,
    change: impl Fn(&Domain) -> Result<Domain, Failure>,
    apply: impl FnOnce(&dyn Instance) -> Result<(), DriverError> + Send + 'static,
) -> Result<(), Failure> {
    let live = match (&s.live, do_live) {
        (Some(l), true) => Some(change(&l.domain)?),
        _ => None,
    };
    let config = match (&s.config, do_config) {
        (Some(c), true) => Some(checked(d, change(c)?).await?),
        _ => None,
    };
    if let (Some(new), Some(l)) = (live, &s.live) {
        call(l.instance.clone(), apply).await?;
        commit_live(d, s, new, l.record.clone()).await?;
    }
    if let Some(new) = config {
        commit_config(d, s, new).await?;
    }
    Ok(())
}

/// `GET /domains/{dom}/emulator/affinity` (virsh `emulatorpin`).
pub(crate) async fn emulator(
    d: &Arc<Daemon>,
    key: &str,
    config: bool,
) -> Result<Affinity, Failure> {
    let (domain, instance) = current(d, key, config)?;
    let cpuset = match instance {
        Some(i) => call(i, |i| i.emulator_affinity()).await?.to_string(),
        None => domain
            .cputune
            .as_ref()
            .and_then(|t| t.emulatorpin.as_ref())
            .or(domain.vcpu.cpuset.as_ref())
            .map(ToString::to_string)
            .unwrap_or_else(all_host_cpus),
    };
    Ok(Affinity { cpuset })
}

/// `PUT /domains/{dom}/emulator/affinity` (virsh `emulatorpin` with a
/// set).
pub(crate) async fn pin_emulator(
    d: &Arc<Daemon>,
    key: &str,
    req: &PinRequest,
) -> Result<(), Failure> {
    let set = cpuset(&req.cpuset)?;
    host_cpus_exist(&set)?;
    let (s, do_live, do_config) = subject(d, key, req.live, req.config).await?;
    let change = |dom: &Domain| {
        let mut new = dom.clone();
        new.cputune.get_or_insert_with(CpuTune::default).emulatorpin = Some(set.clone());
        Ok(new)
    };
    let apply = {
        let set = set.clone();
        move |i: &dyn Instance| i.pin_emulator(&set)
    };
    pin(d, &s, do_live, do_config, change, apply).await
}

/// `GET /domains/{dom}/numatune` (virsh `numatune` without changes).
pub(crate) fn numatune(d: &Daemon, key: &str, config: bool) -> Result<NumaTuneInfo, Failure> {
    let (domain, _) = current(d, key, config)?;
    Ok(
        match domain.numatune.as_ref().and_then(|t| t.memory.as_ref()) {
            Some(b) => NumaTuneInfo {
                mode: b.mode.as_str().into(),
                nodeset: b.nodeset.to_string(),
            },
            None => NumaTuneInfo {
                mode: "strict".into(),
                nodeset: String::new(),
            },
        },
    )
}

/// Refuses host nodes this host does not have.
fn host_nodes_exist(set: &CpuSet) -> Result<(), Failure> {
    let online = std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|t| CpuSet::parse(t.trim()).ok())
        .unwrap_or_else(|| CpuSet::of([0]));
    match set.iter().find(|n| !online.contains(*n)) {
        Some(n) => Err(Failure::unprocessable(format!(
            "host NUMA node {n} does not exist (this host has {online})"
        ))),
        None => Ok(()),
    }
}

/// `PUT /domains/{dom}/numatune` (virsh `numatune --mode --nodeset`):
/// the definition only; a running guest's memory stays where it was
/// placed at start.
pub(crate) async fn set_numatune(
    d: &Arc<Daemon>,
    key: &str,
    req: &NumaTuneRequest,
) -> Result<(), Failure> {
    if req.mode.is_none() && req.nodeset.is_none() {
        return Err(Failure::bad_request("give a mode or a nodeset to change"));
    }
    let mode = match &req.mode {
        Some(m) => Some(NumaMode::parse(m).ok_or_else(|| {
            Failure::bad_request(format!(
                "mode '{m}' must be strict, preferred, interleave or restrictive"
            ))
        })?),
        None => None,
    };
    let nodeset = match &req.nodeset {
        Some(n) => {
            let set = CpuSet::parse(n).map_err(|e| Failure::bad_request(format!("nodeset {e}")))?;
            host_nodes_exist(&set)?;
            Some(set)
        }
        None => None,
    };
    let (s, do_live, do_config) = subject(d, key, req.live, req.config).await?;
    if do_live {
        return Err(Failure::unprocessable(format!(
            "domain '{}' runs: its memory was placed when it started and stays there; change the definition with --config",
            s.held.name
        )));
    }
    let Some(c) = s.config.clone().filter(|_| do_config) else {
        return Ok(());
    };
    let mut new = (*c).clone();
    let old = new.numatune.as_ref().and_then(|t| t.memory.clone());
    let binding = NodeBinding {
        mode: mode
            .or(old.as_ref().map(|b| b.mode))
            .unwrap_or(NumaMode::Strict),
        nodeset: match nodeset.or(old.map(|b| b.nodeset)) {
            Some(n) => n,
            None => {
                return Err(Failure::bad_request(
                    "the domain's memory is not bound yet: give a nodeset",
                ))
            }
        },
    };
    if binding.mode == NumaMode::Preferred && binding.nodeset.len() != 1 {
        return Err(Failure::unprocessable(format!(
            "mode preferred takes one host node, not '{}'",
            binding.nodeset
        )));
    }
    new.numatune.get_or_insert_with(NumaTune::default).memory = Some(binding);
    let new = checked(d, new).await?;
    commit_config(d, &s, new).await
}

/// The limits a definition states.
fn limits_of(domain: &Domain) -> ResourceLimits {
    let mut l = ResourceLimits::default();
    if let Some(c) = &domain.cputune {
        l.cpu_shares = c.shares;
        l.global_period = c.global_period;
        l.global_quota = c.global_quota;
    }
    if let Some(m) = &domain.memtune {
        l.hard_limit_kib = m.hard_limit_kib;
        l.soft_limit_kib = m.soft_limit_kib;
        l.swap_hard_limit_kib = m.swap_hard_limit_kib;
    }
    if let Some(b) = &domain.blkiotune {
        l.blkio_weight = b.weight;
        l.devices = b
            .devices
            .iter()
            .map(|d| DeviceLimits {
                path: d.path.clone(),
                weight: d.weight,
                read_bytes_sec: d.read_bytes_sec,
                write_bytes_sec: d.write_bytes_sec,
                read_iops_sec: d.read_iops_sec,
                write_iops_sec: d.write_iops_sec,
            })
            .collect();
    }
    l
}

/// `GET /domains/{dom}/limits` (`schedinfo`, `memtune`, `blkiotune`):
/// a running domain's cgroup as it is, else the definition.
pub(crate) fn limits(d: &Daemon, key: &str, config: bool) -> Result<ResourceLimits, Failure> {
    let (domain, instance) = current(d, key, config)?;
    let mut l = limits_of(&domain);
    if instance.is_some() {
        if let Some(cg) = super::cgroups::existing(&domain.name, domain.uuid) {
            let now = cg.read();
            l.cpu_shares = now.cpu_shares.or(l.cpu_shares);
            l.global_period = now.cpu_period.or(l.global_period);
            l.global_quota = now.cpu_quota.or(l.global_quota);
            l.hard_limit_kib = now.memory_hard_kib;
            l.soft_limit_kib = now.memory_soft_kib;
            l.swap_hard_limit_kib = now.swap_hard_kib;
        }
    }
    Ok(l)
}

/// `domain` with the request's limits, checked by virtxml's own rules
/// (the definition is written and read back).
fn with_limits(domain: &Domain, req: &ResourceLimits) -> Result<Domain, Failure> {
    let mut new = domain.clone();
    if req.cpu_shares.is_some() || req.global_period.is_some() || req.global_quota.is_some() {
        let c = new.cputune.get_or_insert_with(CpuTune::default);
        c.shares = req.cpu_shares.or(c.shares);
        c.global_period = req.global_period.or(c.global_period);
        c.global_quota = req.global_quota.or(c.global_quota);
    }
    if req.hard_limit_kib.is_some()
        || req.soft_limit_kib.is_some()
        || req.swap_hard_limit_kib.is_some()
    {
        let m = new.memtune.get_or_insert_with(MemTune::default);
        m.hard_limit_kib = req.hard_limit_kib.or(m.hard_limit_kib);
        m.soft_limit_kib = req.soft_limit_kib.or(m.soft_limit_kib);
        m.swap_hard_limit_kib = req.swap_hard_limit_kib.or(m.swap_hard_limit_kib);
    }
    if req.blkio_weight.is_some() || !req.devices.is_empty() {
        let b = new.blkiotune.get_or_insert_with(BlkioTune::default);
        b.weight = req.blkio_weight.or(b.weight);
        for dev in &req.devices {
            b.devices.retain(|o| o.path != dev.path);
            b.devices.push(BlkioDevice {
                path: dev.path.clone(),
                weight: dev.weight,
                read_bytes_sec: dev.read_bytes_sec,
                write_bytes_sec: dev.write_bytes_sec,
                read_iops_sec: dev.read_iops_sec,
                write_iops_sec: dev.write_iops_sec,
            });
        }
    }
    let parsed = Domain::parse(&new.to_xml()).map_err(|e| Failure::unprocessable(e.to_string()))?;
    Ok(parsed.domain)
}

/// `PUT /domains/{dom}/limits`.
pub(crate) async fn set_limits(
    d: &Arc<Daemon>,
    key: &str,
    req: &LimitsRequest,
) -> Result<(), Failure> {
    if req.limits == ResourceLimits::default() {
        return Err(Failure::bad_request("give a limit to change"));
    }
    let (s, do_live, do_config) = subject(d, key, req.live, req.config).await?;
    let live = match (&s.live, do_live) {
        (Some(l), true) => {
            let new = with_limits(&l.domain, &req.limits)?;
            let tuning = super::cgroups::tuning_of(&new)?;
            Some((new, tuning))
        }
        _ => None,
    };
    let config = match (&s.config, do_config) {
        (Some(c), true) => Some(checked(d, with_limits(c, &req.limits)?).await?),
        _ => None,
    };
    if let (Some((new, tuning)), Some(l)) = (live, &s.live) {
        let cg = super::cgroups::existing(&s.held.name, s.held.uuid).ok_or_else(|| {
            Failure::unprocessable(format!(
                "domain '{}' runs without a cgroup: its limits can only change in the definition",
                s.held.name
            ))
        })?;
        tokio::task::spawn_blocking(move || cg.apply(&tuning))
            .await?
            .map_err(|e| Failure::unprocessable(format!("a limit cannot be set: {e}")))?;
        commit_live(d, &s, new, l.record.clone()).await?;
    }
    if let Some(new) = config {
        commit_config(d, &s, new).await?;
    }
    Ok(())
}
