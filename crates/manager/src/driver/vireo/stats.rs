//! The VMM's counters (`GET /vm`, `GET /vm/counters`) as virsh `domstats`
//! keys.
//!
//! | key | from |
//! |---|---|
//! | `state.state`, `state.reason` | `GET /vm` `state`: 1 running, 3 paused (libvirt's numbers); reason 1 (booted / user) |
//! | `cpu.time` | the VMM process's CPU time, ns |
//! | `balloon.current`, `balloon.maximum` | the guest's memory, KiB (no balloon: both the same) |
//! | `vcpu.current`, `vcpu.maximum`, `vcpu.N.state` | the vCPU count; every vCPU is running (1) |
//! | `vcpu.N.exits.REASON` | the vCPU's exits by reason (Vireo's own, beyond virsh) |
//! | `block.count`, `block.N.name`, `.path`, `.capacity` | each virtio-blk disk: its id (the target dev), image path and size |
//! | `block.N.rd.reqs`, `.rd.bytes`, `.wr.reqs`, `.wr.bytes`, `.fl.reqs`, `.errors` | its counters |
//! | `net.count`, `net.N.name` | each virtio-net card: its TAP's name |
//! | `net.N.rx.bytes`, `.rx.pkts`, `.rx.errs`, `.rx.drop`, `.tx.bytes`, `.tx.pkts`, `.tx.errs`, `.tx.drop` | its counters (`rx.drop` is frames lost for want of guest buffers) |
//!
//! The key `N` follows the devices' bus order, as libvirt's do.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

/// The domstats map from `GET /vm` (`info`), `GET /vm/counters`
/// (`counters`) and the process's CPU time.
pub(crate) fn domstats(info: &Value, counters: &Value, cpu: Duration) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let state = match info.get("state").and_then(Value::as_str) {
        Some("running") => 1,
        Some("paused") => 3,
        Some("shutdown") => 5,
        _ => 0,
    };
    out.insert("state.state".into(), json!(state));
    out.insert("state.reason".into(), json!(1));
    out.insert(
        "cpu.time".into(),
        json!(u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX)),
    );
    let memory_kib = info
        .get("memory_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        / 1024;
    out.insert("balloon.current".into(), json!(memory_kib));
    out.insert("balloon.maximum".into(), json!(memory_kib));

    let cpus = info.get("cpus").and_then(Value::as_u64).unwrap_or(0);
    out.insert("vcpu.current".into(), json!(cpus));
    out.insert("vcpu.maximum".into(), json!(cpus));
    let vcpus = counters.get("vcpus").and_then(Value::as_object);
    for n in 0..cpus {
        out.insert(format!("vcpu.{n}.state"), json!(1));
        let exits = vcpus
            .and_then(|v| v.get(&n.to_string()))
            .and_then(Value::as_object);
        for (reason, count) in exits.into_iter().flatten() {
            out.insert(format!("vcpu.{n}.exits.{reason}"), count.clone());
        }
    }

    let devices = info
        .get("devices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let device_counters = counters.get("devices").and_then(Value::as_object);
    let count = |id: &str, name: &str| -> Value {
        device_counters
            .and_then(|d| d.get(id))
            .and_then(|c| c.get(name))
            .cloned()
            .unwrap_or(json!(0))
    };
    let (mut blocks, mut nets) = (0u32, 0u32);
    for dev in &devices {
        let id = dev.get("id").and_then(Value::as_str).unwrap_or_default();
        let details = dev.get("details");
        let detail = |k: &str| {
            details
                .and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match dev.get("kind").and_then(Value::as_str) {
            Some("virtio-blk") => {
                let p = format!("block.{blocks}");
                blocks += 1;
                out.insert(format!("{p}.name"), json!(id));
                out.insert(format!("{p}.path"), json!(detail("path")));
                if let Ok(size) = detail("size_bytes").parse::<u64>() {
                    out.insert(format!("{p}.capacity"), json!(size));
                }
                for (key, counter) in [
                    ("rd.reqs", "read_requests"),
                    ("rd.bytes", "read_bytes"),
                    ("wr.reqs", "write_requests"),
                    ("wr.bytes", "write_bytes"),
                    ("fl.reqs", "flushes"),
                    ("errors", "errors"),
                ] {
                    out.insert(format!("{p}.{key}"), count(id, counter));
                }
            }
            Some("virtio-net") => {
                let p = format!("net.{nets}");
                nets += 1;
                out.insert(format!("{p}.name"), json!(detail("tap")));
                for (key, counter) in [
                    ("rx.bytes", "rx_bytes"),
                    ("rx.pkts", "rx_frames"),
                    ("rx.errs", "rx_errors"),
                    ("rx.drop", "rx_no_buffers"),
                    ("tx.bytes", "tx_bytes"),
                    ("tx.pkts", "tx_frames"),
                    ("tx.errs", "tx_errors"),
                    ("tx.drop", "tx_dropped"),
                ] {
                    out.insert(format!("{p}.{key}"), count(id, counter));
                }
            }
            _ => {}
        }
    }
    out.insert("block.count".into(), json!(blocks));
    out.insert("net.count".into(), json!(nets));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_disks_nets_and_vcpus() {
        let info = json!({"state":"paused","cpus":2,"memory_bytes":134217728,"devices":[
            {"id":"vda","kind":"virtio-blk","pci":"00:01.0","details":{"path":"/d.img","size_bytes":"1048576"}},
            {"id":"net-x","kind":"virtio-net","pci":"00:02.0","details":{"tap":"tap0","mac":"52:54:00:00:00:01"}}]});
        let counters = json!({"devices":{
            "vda":{"read_requests":3,"read_bytes":1536,"write_requests":1,"write_bytes":512,"flushes":2,"errors":0},
            "net-x":{"rx_bytes":60,"rx_frames":1,"tx_bytes":0,"tx_frames":0}},
            "vcpus":{"0":{"hlt":5},"1":{"hlt":0}}});
        let s = domstats(&info, &counters, Duration::from_millis(3));
        assert_eq!(s["state.state"], 3);
        assert_eq!(s["balloon.current"], 131072);
        assert_eq!(s["cpu.time"], 3_000_000);
        assert_eq!(s["vcpu.current"], 2);
        assert_eq!(s["vcpu.0.exits.hlt"], 5);
        assert_eq!(s["vcpu.1.state"], 1);
        assert_eq!(s["block.count"], 1);
        assert_eq!(s["block.0.name"], "vda");
        assert_eq!(s["block.0.rd.reqs"], 3);
        assert_eq!(s["block.0.wr.bytes"], 512);
        assert_eq!(s["block.0.fl.reqs"], 2);
        assert_eq!(s["block.0.capacity"], 1048576);
        assert_eq!(s["net.count"], 1);
        assert_eq!(s["net.0.name"], "tap0");
        assert_eq!(s["net.0.rx.pkts"], 1);
        assert_eq!(s["net.0.tx.drop"], 0);
    }
}
