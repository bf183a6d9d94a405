//! A running QEMU, driven over QMP: lifecycle, hot-plug, stats, and how
//! it ended.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};
use virtxml::{CharBackend, Disk, Domain, Interface, LifecycleAction, MacAddress};

use super::cmdline::{self, Machine, RunPaths};
use super::qmp::{Qmp, QmpError};
use crate::driver::process::{self, PidFd};
use crate::driver::{
    DriverError, ExitReason, Instance, Plugged, RunRecord, RuntimeState, Unplug, UNPLUG_WAIT,
};

/// How long `destroy(graceful)` lets QEMU end on SIGTERM.
const GRACE: Duration = Duration::from_secs(10);
/// How long a SIGKILLed QEMU may take to go.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// A QEMU this driver started or adopted.
pub struct QemuInstance {
    pub(super) pidfd: PidFd,
    /// Set when this process started QEMU: its exit status says how an
    /// isa-debug-exit power-off ended it.
    pub(super) child: Mutex<Option<Child>>,
    pub(super) status: Mutex<Option<ExitStatus>>,
    pub(super) qmp: Qmp,
    pub(super) machine: Machine,
    pub(super) paths: RunPaths,
    /// The definition as it runs (hot-plugs included).
    pub(super) live: Mutex<Domain>,
    /// Devices asked to go whose `DEVICE_DELETED` has not come yet.
    pub(super) unplugging: Mutex<Vec<Plugged>>,
    /// Macvtaps made for direct interfaces: deleted when their card goes
    /// and when QEMU ends.
    pub(super) direct_links: Mutex<Vec<String>>,
    pub(super) start_time: u64,
    pub(super) id: u32,
    pub(super) debug_exit: bool,
    pub(super) destroyed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn failed(e: QmpError) -> DriverError {
    DriverError::Failed(e.to_string())
}

impl QemuInstance {
    /// The `extra` of the run record: what adopt needs besides the pid.
    fn extra(&self) -> Value {
        json!({
            "machine": self.machine.record_name(),
            "qmp": self.paths.qmp,
            "console": self.paths.console,
            "pidfile": self.paths.pidfile,
            "debug_exit": self.debug_exit,
            "direct_links": *lock(&self.direct_links),
        })
    }

    /// Deletes the macvtap `name` if this driver made it (a direct card's
    /// link does not go with its descriptors).
    fn remove_direct(&self, name: Option<&str>) {
        let Some(name) = name else { return };
        let mut links = lock(&self.direct_links);
        if !links.iter().any(|l| l == name) {
            return;
        }
        match netvirt::macvtap::remove_direct_port(name) {
            Ok(()) => links.retain(|l| l != name),
            Err(e) => tracing::warn!("cannot remove macvtap {name}: {e}"),
        }
    }

    /// Reaps the child, if it is ours and has ended, keeping its status.
    fn reap(&self) {
        let mut child = lock(&self.child);
        if let Some(c) = child.as_mut() {
            if let Ok(Some(st)) = process::reap(c) {
                *lock(&self.status) = Some(st);
                *child = None;
            }
        }
    }

    fn query_status(&self) -> Result<String, DriverError> {
        let r = self.qmp.execute("query-status", None).map_err(failed)?;
        Ok(r.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }

    /// Sends `device_del` and waits (bounded) for QEMU to say the device
    /// is gone, which needs the guest's consent on ACPI and PCIe slots.
    /// `device_del`, then waits [`UNPLUG_WAIT`] at most for QEMU's
    /// `DEVICE_DELETED`; when it comes, finishes the unplug.
    fn unplug(&self, device: &Plugged) -> Result<Unplug, DriverError> {
        let id = qemu_id(device);
        // Asked before (a pending unplug): wait for the same request again.
        let asked = lock(&self.unplugging).contains(device);
        if !asked {
            self.qmp.with_events(|st| st.deleted.retain(|d| *d != id));
            self.qmp
                .execute("device_del", Some(json!({ "id": id })))
                .map_err(failed)?;
            lock(&self.unplugging).push(device.clone());
        }
        if self
            .qmp
            .wait_event(UNPLUG_WAIT, |st| st.deleted.contains(&id))
        {
            self.finish_unplug(device)?;
            return Ok(Unplug::Done);
        }
        Ok(Unplug::Pending)
    }

    /// After `DEVICE_DELETED`: frees the device's backend and drops it
    /// from the live definition.
    fn finish_unplug(&self, device: &Plugged) -> Result<(), DriverError> {
        lock(&self.unplugging).retain(|d| d != device);
        match device {
            Plugged::Disk(target) => {
                for node in [format!("disk-{target}"), format!("file-{target}")] {
                    self.qmp
                        .execute("blockdev-del", Some(json!({ "node-name": node })))
                        .map_err(failed)?;
                }
                lock(&self.live)
                    .devices
                    .disks
                    .retain(|d| d.target != *target);
            }
            Plugged::Interface(mac) => {
                let id = cmdline::nic_id(mac);
                // A TAP the driver opened goes with the netdev; a macvtap
                // is a link of its own and is deleted.
                self.qmp
                    .execute(
                        "netdev_del",
                        Some(json!({ "id": format!("nd-{}", &id[4..]) })),
                    )
                    .map_err(failed)?;
                let target = {
                    let mut live = lock(&self.live);
                    let target = live
                        .devices
                        .interfaces
                        .iter()
                        .find(|i| i.mac == *mac)
                        .and_then(|i| i.target.clone());
                    live.devices.interfaces.retain(|i| i.mac != *mac);
                    target
                };
                self.remove_direct(target.as_deref());
            }
        }
        Ok(())
    }

    /// Refuses a hot-plug before anything is added when the machine has
    /// nowhere to put the device.
    fn can_plug(&self) -> Result<(), DriverError> {
        if self.machine.hotplug_buses().is_empty() {
            return Err(DriverError::Unsupported(
                "this machine has no hot-plug slot (a microvm without <acpi/> has no PCI bus)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// `device_add` on the first hot-plug bus that takes it.
    fn plug(&self, mut device: Value) -> Result<(), DriverError> {
        let mut last = None;
        for bus in self.machine.hotplug_buses() {
            device["bus"] = json!(bus);
            match self.qmp.execute("device_add", Some(device.clone())) {
                Ok(_) => return Ok(()),
                Err(e @ QmpError::Command { .. }) => last = Some(e),
                Err(e) => return Err(failed(e)),
            }
        }
        Err(match last {
            Some(e) => DriverError::Failed(format!("{e} (on every hot-plug slot)")),
            None => DriverError::Failed("this machine has no hot-plug slot".into()),
        })
    }

    fn block_stats(&self, out: &mut BTreeMap<String, Value>) -> Result<(), DriverError> {
        let live = lock(&self.live).clone();
        let stats = self
            .qmp
            .execute("query-blockstats", Some(json!({ "query-nodes": false })))
            .map_err(failed)?;
        let entries = stats.as_array().cloned().unwrap_or_default();
        out.insert("block.count".into(), json!(live.devices.disks.len()));
        for (i, disk) in live.devices.disks.iter().enumerate() {
            let node = format!("disk-{}", disk.target);
            let qdev = format!("/machine/peripheral/{}/", disk.target);
            let k = |s: &str| format!("block.{i}.{s}");
            out.insert(k("name"), json!(disk.target));
            let path = disk.source.describe();
            out.insert(k("path"), json!(path));
            let Some(e) = entries.iter().find(|e| {
                e.get("node-name").and_then(Value::as_str) == Some(&node)
                    || e.get("qdev")
                        .and_then(Value::as_str)
                        .is_some_and(|q| q.starts_with(&qdev))
            }) else {
                continue;
            };
            let s = |f: &str| {
                e.pointer(&format!("/stats/{f}"))
                    .cloned()
                    .unwrap_or(json!(0))
            };
            for (key, field) in [
                ("rd.reqs", "rd_operations"),
                ("rd.bytes", "rd_bytes"),
                ("rd.times", "rd_total_time_ns"),
                ("wr.reqs", "wr_operations"),
                ("wr.bytes", "wr_bytes"),
                ("wr.times", "wr_total_time_ns"),
                ("fl.reqs", "flush_operations"),
                ("fl.times", "flush_total_time_ns"),
            ] {
                out.insert(k(key), s(field));
            }
        }
        Ok(())
    }

    fn net_stats(&self, out: &mut BTreeMap<String, Value>) {
        let live = lock(&self.live).clone();
        out.insert("net.count".into(), json!(live.devices.interfaces.len()));
        for (i, iface) in live.devices.interfaces.iter().enumerate() {
            let k = |s: &str| format!("net.{i}.{s}");
            let Some(tap) = &iface.target else { continue };
            out.insert(k("name"), json!(tap));
            // virsh counts from the guest's side: what the TAP sends, the
            // guest receives.
            let read = |f: &str| -> Option<u64> {
                std::fs::read_to_string(format!("/sys/class/net/{tap}/statistics/{f}"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            for (key, field) in [
                ("rx.bytes", "tx_bytes"),
                ("rx.pkts", "tx_packets"),
                ("rx.errs", "tx_errors"),
                ("rx.drop", "tx_dropped"),
                ("tx.bytes", "rx_bytes"),
                ("tx.pkts", "rx_packets"),
                ("tx.errs", "rx_errors"),
                ("tx.drop", "rx_dropped"),
            ] {
                if let Some(v) = read(field) {
                    out.insert(k(key), json!(v));
                }
            }
        }
    }
}

impl Instance for QemuInstance {
    fn record(&self) -> RunRecord {
        RunRecord {
            driver: "qemu".into(),
            pid: self.pidfd.pid(),
            start_time: self.start_time,
            id: self.id,
            xml: lock(&self.live).to_xml(),
            extra: self.extra(),
        }
    }

    fn state(&self) -> Result<RuntimeState, DriverError> {
        match self.query_status()?.as_str() {
            "running" => Ok(RuntimeState::Running),
            s @ ("internal-error" | "guest-panicked" | "shutdown" | "io-error") => Err(
                DriverError::Failed(format!("QEMU reports the guest as {s}")),
            ),
            _ => Ok(RuntimeState::Paused),
        }
    }

    fn pause(&self) -> Result<(), DriverError> {
        self.qmp.execute("stop", None).map_err(failed).map(drop)
    }

    fn resume(&self) -> Result<(), DriverError> {
        self.qmp.execute("cont", None).map_err(failed).map(drop)
    }

    fn shutdown(&self) -> Result<(), DriverError> {
        self.qmp
            .execute("system_powerdown", None)
            .map_err(failed)
            .map(drop)
    }

    fn reset(&self) -> Result<(), DriverError> {
        // Under -no-reboot QEMU turns every reset request into a shutdown,
        // this one too: it is let through as a reset for the one command.
        // QEMU decides when the request is made, so the action can be put
        // back at once.
        let no_reboot = lock(&self.live).on_reboot != LifecycleAction::Restart;
        if no_reboot {
            self.qmp
                .execute("set-action", Some(json!({ "reboot": "reset" })))
                .map_err(failed)?;
        }
        let done = self.qmp.execute("system_reset", None).map_err(failed);
        if no_reboot {
            self.qmp
                .execute("set-action", Some(json!({ "reboot": "shutdown" })))
                .map_err(failed)?;
        }
        done.map(drop)
    }

    fn destroy(&self, graceful: bool) -> Result<(), DriverError> {
        self.destroyed.store(true, Ordering::SeqCst);
        let grace = graceful.then_some(GRACE);
        self.pidfd
            .terminate(grace, KILL_WAIT)
            .map_err(|e| DriverError::Failed(format!("cannot stop QEMU: {e}")))?;
        self.reap();
        Ok(())
    }

    fn wait_exit(&self) -> ExitReason {
        // QEMU does not exit when KVM fails to emulate an instruction or
        // the guest panics: it stops the vCPUs and stays. Each stop is
        // checked, and such a QEMU is ended as crashed.
        let mut stops_seen = 0;
        let mut crashed = None;
        loop {
            match self.pidfd.wait(Some(Duration::from_millis(250))) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return ExitReason::Failed(format!("cannot wait for QEMU: {e}")),
            }
            let stops = self.qmp.with_events(|st| st.stops);
            if stops == stops_seen || crashed.is_some() {
                continue;
            }
            stops_seen = stops;
            let status = self
                .qmp
                .execute_timeout("query-status", None, Duration::from_secs(2));
            let status = status
                .ok()
                .and_then(|r| r.get("status").and_then(Value::as_str).map(str::to_string));
            if let Some(s @ ("internal-error" | "guest-panicked")) = status.as_deref() {
                crashed = Some(match s {
                    "internal-error" => {
                        "KVM could not run the guest (QEMU: internal-error, see the log)"
                    }
                    _ => "the guest panicked",
                });
                if let Err(e) = self.pidfd.terminate(None, KILL_WAIT) {
                    tracing::warn!("cannot end a crashed QEMU: {e}");
                }
            }
        }
        self.reap();
        // Every event QEMU wrote before it exited is in the socket.
        self.qmp.drain(Duration::from_secs(2));
        for name in std::mem::take(&mut *lock(&self.direct_links)) {
            if let Err(e) = netvirt::macvtap::remove_direct_port(&name) {
                tracing::warn!("cannot remove macvtap {name}: {e}");
            }
        }
        if let (Some(why), false) = (crashed, self.destroyed.load(Ordering::SeqCst)) {
            return ExitReason::Crashed(why.to_string());
        }
        let shutdown = self.qmp.with_events(|st| st.shutdown.clone());
        let status = *lock(&self.status);
        decide(
            self.destroyed.load(Ordering::SeqCst),
            shutdown.as_ref().map(|s| s.reason.as_str()),
            status,
            self.debug_exit,
        )
    }

    fn attach_disk(
        &self,
        disk: &Disk,
        _chap: Option<&crate::storage::Credentials>,
    ) -> Result<(), DriverError> {
        self.can_plug()?;
        cmdline::check_disk(disk, "/disk")?;
        if lock(&self.live)
            .devices
            .disks
            .iter()
            .any(|d| d.target == disk.target)
        {
            return Err(DriverError::Conflict(format!(
                "the domain already has a disk {}",
                disk.target
            )));
        }
        let (file, format) = cmdline::blockdev_nodes(disk);
        self.qmp
            .execute("blockdev-add", Some(file))
            .map_err(failed)?;
        let added = self
            .qmp
            .execute("blockdev-add", Some(format))
            .map_err(failed)
            .and_then(|_| self.plug(cmdline::disk_device(disk, "")));
        if let Err(e) = added {
            for node in [
                format!("disk-{}", disk.target),
                format!("file-{}", disk.target),
            ] {
                let _ = self
                    .qmp
                    .execute("blockdev-del", Some(json!({ "node-name": node })));
            }
            return Err(e);
        }
        lock(&self.live).devices.disks.push(disk.clone());
        Ok(())
    }

    fn detach_disk(&self, target: &str) -> Result<Unplug, DriverError> {
        if !lock(&self.live)
            .devices
            .disks
            .iter()
            .any(|d| d.target == target)
        {
            return Err(DriverError::Conflict(format!(
                "the domain has no disk {target}"
            )));
        }
        self.unplug(&Plugged::Disk(target.to_string()))
    }

    fn attach_interface(&self, iface: &Interface) -> Result<(), DriverError> {
        self.can_plug()?;
        cmdline::check_interface(iface, "/interface")?;
        if lock(&self.live)
            .devices
            .interfaces
            .iter()
            .any(|i| i.mac == iface.mac)
        {
            return Err(DriverError::Conflict(format!(
                "the domain already has a NIC with MAC {}",
                iface.mac
            )));
        }
        let mut iface = iface.clone();
        let mut nd = cmdline::netdev(&iface);
        let nd_id = nd["id"].clone();
        // A bridge port is opened here, not persistent, and its descriptor
        // given to QEMU (`getfd`, then the netdev names it), as at start:
        // QEMU needs no privilege for it and it goes with the netdev.
        let host_side = match (&iface.kind, iface.host_bridge().map(str::to_string)) {
            (virtxml::InterfaceKind::Direct { dev, mode }, _) => {
                let name = cmdline::direct_link_name(self.id, &iface);
                let tap = netvirt::macvtap::open_direct_port(
                    &name,
                    dev,
                    crate::driver::macvlan_mode(*mode),
                    iface.mac.0,
                )
                .map_err(|e| DriverError::Failed(format!("direct interface on '{dev}': {e}")))?;
                lock(&self.direct_links).push(name.clone());
                Some((name, tap))
            }
            (_, Some(bridge)) => {
                let name = cmdline::bridge_tap_name(self.id, &iface, None);
                let tap = netvirt::bridge::open_bridge_port(&name, &bridge)
                    .map_err(|e| DriverError::Failed(format!("bridge '{bridge}': {e}")))?;
                if let Some(vid) = iface.vlan {
                    let may_filter = matches!(iface.kind, virtxml::InterfaceKind::Network { .. });
                    netvirt::bridge::tag_bridge_port(&name, &bridge, vid, may_filter).map_err(
                        |e| DriverError::Failed(format!("bridge '{bridge}', VLAN {vid}: {e}")),
                    )?;
                }
                Some((name, tap))
            }
            _ => None,
        };
        let opened = match host_side {
            Some((name, tap)) => {
                let queue = tap
                    .queue(0)
                    .ok_or_else(|| DriverError::Failed(format!("TAP {name} has no queue")))?;
                let fdname = format!("fd-{}", nd_id.as_str().unwrap_or_default());
                self.qmp
                    .execute_with_fd("getfd", json!({ "fdname": fdname }), queue)
                    .map_err(failed)?;
                // QEMU takes no name or scripts beside a descriptor.
                if let Some(o) = nd.as_object_mut() {
                    for key in ["ifname", "script", "downscript"] {
                        o.remove(key);
                    }
                }
                nd["fd"] = json!(fdname);
                iface.target = Some(name);
                Some((tap, fdname))
            }
            None => None,
        };
        if let Err(e) = self.qmp.execute("netdev_add", Some(nd)) {
            if let Some((_, fdname)) = &opened {
                let _ = self
                    .qmp
                    .execute("closefd", Some(json!({ "fdname": fdname })));
            }
            self.remove_direct(iface.target.as_deref());
            return Err(failed(e));
        }
        // QEMU holds the TAP now; ours closes with `opened`.
        drop(opened);
        if let Err(e) = self.plug(cmdline::nic_device(&iface, "")) {
            let _ = self.qmp.execute("netdev_del", Some(json!({ "id": nd_id })));
            return Err(e);
        }
        lock(&self.live).devices.interfaces.push(iface);
        Ok(())
    }

    fn detach_interface(&self, mac: &MacAddress) -> Result<Unplug, DriverError> {
        if !lock(&self.live)
            .devices
            .interfaces
            .iter()
            .any(|i| i.mac == *mac)
        {
            return Err(DriverError::Conflict(format!(
                "the domain has no NIC with MAC {mac}"
            )));
        }
        self.unplug(&Plugged::Interface(*mac))
    }

    fn unplug_finished(&self, device: &Plugged) -> Result<bool, DriverError> {
        // Finished already (a detach asked again and saw it through).
        if !lock(&self.unplugging).contains(device) {
            return Ok(true);
        }
        let id = qemu_id(device);
        if !self.qmp.with_events(|st| st.deleted.contains(&id)) {
            return Ok(false);
        }
        self.finish_unplug(device)?;
        Ok(true)
    }

    fn stats(&self) -> Result<BTreeMap<String, Value>, DriverError> {
        let mut out = BTreeMap::new();
        let status = self.query_status()?;
        // libvirt's numbers: 1 running, 3 paused, 5 shut off.
        let (state, reason) = match status.as_str() {
            "running" => (1, 1),
            "paused" => (3, 2),
            "prelaunch" => (3, 1),
            _ => (3, 0),
        };
        out.insert("state.state".into(), json!(state));
        out.insert("state.reason".into(), json!(reason));
        out.insert(
            "cpu.time".into(),
            json!(u64::try_from(self.cpu_time().as_nanos()).unwrap_or(u64::MAX)),
        );
        {
            let live = lock(&self.live);
            out.insert("balloon.current".into(), json!(live.memory_kib));
            out.insert("balloon.maximum".into(), json!(live.memory_kib));
            out.insert("vcpu.current".into(), json!(live.vcpu.count));
            out.insert("vcpu.maximum".into(), json!(live.vcpu.count));
        }
        self.block_stats(&mut out)?;
        self.net_stats(&mut out);
        Ok(out)
    }

    fn console(&self) -> Result<UnixStream, DriverError> {
        let live = lock(&self.live);
        let has_pty = live
            .devices
            .serials
            .iter()
            .chain(&live.devices.consoles)
            .any(|c| c.backend == CharBackend::Pty);
        drop(live);
        if !has_pty {
            return Err(DriverError::Conflict(
                "the domain has no pty serial or console to attach to".into(),
            ));
        }
        UnixStream::connect(&self.paths.console).map_err(|e| {
            DriverError::Failed(format!(
                "cannot connect to QEMU's console socket {}: {e}",
                self.paths.console.display()
            ))
        })
    }

    fn cpu_time(&self) -> Duration {
        process::cpu_time(self.pidfd.pid())
    }
}

/// How a QEMU ended: a destroy wins; then QEMU's last `SHUTDOWN` reason;
/// then, with no event, the exit status (isa-debug-exit makes QEMU exit
/// with `(value << 1) | 1`, so 1 is Vireo's test guests powering off).
pub fn decide(
    destroyed: bool,
    shutdown_reason: Option<&str>,
    status: Option<ExitStatus>,
    debug_exit: bool,
) -> ExitReason {
    if destroyed {
        return ExitReason::Destroyed;
    }
    match shutdown_reason {
        Some("guest-shutdown") => return ExitReason::Poweroff,
        Some("guest-reset") => return ExitReason::Reset,
        Some("guest-panic") => return ExitReason::Crashed("the guest panicked".into()),
        Some("host-signal") => {
            return ExitReason::Failed("QEMU was stopped by a signal from outside Vireo".into())
        }
        Some("host-qmp-quit") => {
            return ExitReason::Failed("QEMU was told to quit by another QMP client".into())
        }
        _ => {}
    }
    match status {
        Some(st) if st.signal().is_some() => ExitReason::Failed(format!(
            "QEMU was killed by signal {}",
            st.signal().unwrap_or_default()
        )),
        Some(st) if debug_exit && st.code() == Some(1) => ExitReason::Poweroff,
        Some(st) => ExitReason::Failed(format!(
            "QEMU exited with status {} and no shutdown event",
            st.code().unwrap_or_default()
        )),
        None => ExitReason::Failed(
            "QEMU ended without a shutdown event (it was not this daemon's child, so its exit status is unknown)"
                .into(),
        ),
    }
}

/// QEMU's device id for `device`.
fn qemu_id(device: &Plugged) -> String {
    match device {
        Plugged::Disk(target) => target.clone(),
        Plugged::Interface(mac) => cmdline::nic_id(mac),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons() {
        let code = |c: i32| Some(ExitStatus::from_raw(c << 8));
        let sig = |s: i32| Some(ExitStatus::from_raw(s));
        assert_eq!(decide(true, None, sig(9), true), ExitReason::Destroyed);
        assert_eq!(
            decide(false, Some("guest-shutdown"), code(0), true),
            ExitReason::Poweroff
        );
        assert_eq!(
            decide(false, Some("guest-reset"), code(0), true),
            ExitReason::Reset
        );
        assert_eq!(decide(false, None, code(1), true), ExitReason::Poweroff);
        assert!(matches!(
            decide(false, Some("guest-panic"), code(0), true),
            ExitReason::Crashed(_)
        ));
        assert!(matches!(
            decide(false, None, code(1), false),
            ExitReason::Failed(_)
        ));
        assert!(
            matches!(decide(false, None, sig(9), true), ExitReason::Failed(s) if s.contains("signal 9"))
        );
        assert!(matches!(
            decide(false, None, None, true),
            ExitReason::Failed(_)
        ));
        assert!(matches!(
            decide(false, Some("host-signal"), code(0), true),
            ExitReason::Failed(_)
        ));
    }
}
