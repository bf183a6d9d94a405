//! The per-VM API's balloon and vCPU answers (docs/api.md) as the
//! daemon's `dommemstat` lines and vCPU threads, and what `/proc` says
//! of the VMM process.

use serde_json::Value;
use virtxml::CpuSet;

use crate::driver::{DriverError, VcpuThread};

/// virsh `dommemstat`'s keys in its order, with the per-VM API's name of
/// each guest-reported one (`actual` and `rss` come from elsewhere).
const GUEST_STATS: &[&str] = &[
    "swap_in",
    "swap_out",
    "major_fault",
    "minor_fault",
    "unused",
    "available",
    "usable",
];
const CACHE_STATS: &[&str] = &["disk_caches", "hugetlb_pgalloc", "hugetlb_pgfail"];

/// `GET /vm/balloon`'s answer as `dommemstat` lines (without `rss`).
pub(crate) fn balloon_stats(v: &Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if let Some(a) = v["actual_kib"].as_u64() {
        out.push(("actual".to_string(), a));
    }
    let stats = &v["stats"];
    for key in GUEST_STATS {
        if let Some(n) = stats[*key].as_u64() {
            out.push(((*key).to_string(), n));
        }
    }
    if let Some(t) = v["last_update"].as_u64() {
        out.push(("last_update".to_string(), t));
    }
    for key in CACHE_STATS {
        if let Some(n) = stats[*key].as_u64() {
            out.push(((*key).to_string(), n));
        }
    }
    out
}

fn bad(what: &str) -> DriverError {
    DriverError::Failed(format!("the VMM's vCPU list is malformed: {what}"))
}

/// `GET /vm/vcpus`'s answer (a list, or an object holding `vcpus`).
pub(crate) fn vcpu_threads(v: &Value) -> Result<Vec<VcpuThread>, DriverError> {
    let list = v
        .as_array()
        .or_else(|| v["vcpus"].as_array())
        .ok_or_else(|| bad("not a list"))?;
    list.iter()
        .map(|t| {
            let num = |k: &str| t[k].as_u64().ok_or_else(|| bad(k));
            let affinity = t["affinity"]
                .as_array()
                .ok_or_else(|| bad("affinity"))?
                .iter()
                .map(|c| c.as_u64().and_then(|c| u32::try_from(c).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| bad("affinity"))?;
            Ok(VcpuThread {
                vcpu: u32::try_from(num("id")?).map_err(|_| bad("id"))?,
                cpu: u32::try_from(num("cpu")?).map_err(|_| bad("cpu"))?,
                cpu_time_ns: num("cpu_time_ns")?,
                affinity: CpuSet::of(affinity),
            })
        })
        .collect()
}

/// A `/proc/PID/status` field's first word.
fn status_field(pid: u32, tid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        Some(rest.split_whitespace().next()?.to_string())
    })
}

/// The VMM's resident memory, KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, pid, "VmRSS")?.parse().ok()
}

/// The main thread's allowed CPUs: the emulator's affinity.
pub(crate) fn main_thread_affinity(pid: u32) -> Result<CpuSet, DriverError> {
    let list = status_field(pid, pid, "Cpus_allowed_list").ok_or_else(|| {
        DriverError::Failed(format!("cannot read the affinity of VMM process {pid}"))
    })?;
    CpuSet::parse(&list)
        .map_err(|e| DriverError::Failed(format!("VMM process {pid}'s affinity: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn balloon_answer_in_virsh_order() {
        let v = json!({"target_kib": 1024, "actual_kib": 2048, "stats_period": 5, "last_update": 77,
            "stats": {"unused": 5, "swap_in": 1, "disk_caches": 9, "bogus": 3}});
        let names: Vec<String> = balloon_stats(&v).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            names,
            ["actual", "swap_in", "unused", "last_update", "disk_caches"]
        );
        assert!(balloon_stats(&json!({})).is_empty());
    }

    #[test]
    fn vcpu_list_either_shape() {
        let one = json!({"id": 0, "apic_id": 0, "tid": 12, "cpu": 1, "affinity": [0, 1], "cpu_time_ns": 5});
        let a = vcpu_threads(&json!([one.clone()])).unwrap();
        assert_eq!(a, vcpu_threads(&json!({"vcpus": [one]})).unwrap());
        assert_eq!(a[0].affinity.to_string(), "0-1");
        assert!(vcpu_threads(&json!([{"id": 0}])).is_err());
        assert!(vcpu_threads(&json!({"x": 1})).is_err());
    }

    #[test]
    fn own_process_status() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(!main_thread_affinity(me).unwrap().is_empty());
    }
}
