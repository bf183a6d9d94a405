//! What the control API can do to a booted VM: pause and resume it, read
//! its counters, describe its devices, power it off or reset it, and
//! change its devices while it runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vmm_sys_util::eventfd::EventFd;

use crate::api::{Counters, DeviceInfo};
use crate::config::{DiskConfig, NetConfig, VmConfig};
use crate::error::{Error, Result};
use crate::pci_devices::PciDevices;
use crate::vcpu::{VcpuCounters, VcpuShared};
use crate::virtio_devices;

/// How long a pause waits for every vCPU to leave the guest.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Someone who wants to know when a VM boots and stops (the API's
/// controller).
pub trait VmObserver: Send + Sync {
    /// The VM is built and its vCPUs run.
    fn booted(&self, vm: Arc<RunningVm>);
    /// The VM is stopping: after this returns, the handle must not be used
    /// (its vCPU threads are about to be joined).
    fn stopping(&self);
}

/// A booted VM, as the control API sees it.
pub struct RunningVm {
    config: VmConfig,
    vcpus: Arc<VcpuShared>,
    threads: Vec<libc::pthread_t>,
    counters: Vec<Arc<VcpuCounters>>,
    pci: Mutex<PciDevices>,
    power_off: EventFd,
    reset: EventFd,
}

impl RunningVm {
    pub(crate) fn new(
        config: VmConfig,
        vcpus: Arc<VcpuShared>,
        threads: Vec<libc::pthread_t>,
        counters: Vec<Arc<VcpuCounters>>,
        pci: PciDevices,
        power_off: EventFd,
        reset: EventFd,
    ) -> Self {
        Self {
            config,
            vcpus,
            threads,
            counters,
            pci: Mutex::new(pci),
            power_off,
            reset,
        }
    }

    fn pci(&self) -> MutexGuard<'_, PciDevices> {
        self.pci.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration the VM booted with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Hold every vCPU out of the guest and quiesce every device.
    pub fn pause(&self) -> Result<()> {
        self.vcpus.pause.request();
        for &t in &self.threads {
            // SAFETY: the threads are alive: the VM's owner tells the
            // observer it is stopping (and the controller drops this
            // handle under its lock) before joining them. The kick signal
            // has a handler, so it only interrupts KVM_RUN.
            unsafe {
                libc::pthread_kill(t, hypervisor::kick_signal());
            }
        }
        if !self
            .vcpus
            .pause
            .wait_parked(self.threads.len(), PAUSE_TIMEOUT)
        {
            self.vcpus.pause.release();
            return Err(Error::Pause(
                "a vCPU did not leave the guest in time".into(),
            ));
        }
        if !self.pci().pause_all() {
            self.pci().resume_all();
            self.vcpus.pause.release();
            return Err(Error::Pause("a device did not quiesce in time".into()));
        }
        Ok(())
    }

    /// Let devices and vCPUs go on.
    pub fn resume(&self) {
        self.pci().resume_all();
        self.vcpus.pause.release();
    }

    /// Stop the VM now, as if the guest had powered off.
    pub fn power_off(&self) {
        let _ = self.power_off.write(1);
    }

    /// Reset the VM, as if the guest had reset it.
    pub fn reset(&self) {
        let _ = self.reset.write(1);
    }

    /// The devices on the PCI bus.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.pci()
            .functions()
            .iter()
            .map(|f| {
                let mut details = f.description.details.clone();
                if let Some(disk) = &f.description.disk {
                    details.insert("size_bytes".into(), disk.size().to_string());
                }
                DeviceInfo {
                    id: f.description.id.clone(),
                    kind: f.description.kind.to_string(),
                    pci: format!("00:{:02x}.0", f.slot),
                    details,
                }
            })
            .collect()
    }

    /// Device and vCPU counters.
    pub fn counters(&self) -> Counters {
        let mut devices = BTreeMap::new();
        for f in self.pci().functions() {
            let counters = f
                .device
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counters()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            devices.insert(f.description.id.clone(), counters);
        }
        let vcpus = (0u32..)
            .zip(&self.counters)
            .map(|(i, c)| (i, c.snapshot()))
            .collect();
        Counters { devices, vcpus }
    }

    /// Put a new disk on the bus; returns its id and PCI slot.
    pub fn add_disk(&self, id: Option<String>, disk: &DiskConfig) -> Result<(String, u8)> {
        let mut pci = self.pci();
        let id = id.unwrap_or_else(|| free_id(&pci, "disk"));
        let slot = pci.add_virtio(virtio_devices::disk_device(&id, disk)?)?;
        Ok((id, slot))
    }

    /// Put a new network card on the bus; returns its id and PCI slot.
    pub fn add_net(&self, id: Option<String>, net: &NetConfig) -> Result<(String, u8)> {
        let mut pci = self.pci();
        let id = id.unwrap_or_else(|| free_id(&pci, "net"));
        let slot = pci.add_virtio(virtio_devices::net_device(&self.config, &id, net)?)?;
        Ok((id, slot))
    }

    /// Take device `id` off the bus now.
    pub fn remove_device(&self, id: &str) -> Result<u8> {
        let function = self.pci().remove(id)?;
        Ok(function.slot)
    }

    /// The PCI slot of device `id`.
    pub fn slot_of(&self, id: &str) -> Option<u8> {
        self.pci().function(id).map(|f| f.slot)
    }

    /// Change disk `id`'s size and tell the guest (configuration change).
    pub fn resize_disk(&self, id: &str, size: u64) -> Result<()> {
        let pci = self.pci();
        let function = pci
            .function(id)
            .ok_or_else(|| Error::Pci(format!("no device called {id}")))?;
        let disk = function
            .description
            .disk
            .as_ref()
            .ok_or_else(|| Error::InvalidConfig(format!("{id} is not a disk")))?;
        disk.resize(size).map_err(|source| Error::Disk {
            path: id.into(),
            source,
        })?;
        let interrupt = function
            .device
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .interrupt();
        virtio::VirtioInterrupt::notify_config(&*interrupt);
        Ok(())
    }
}

/// The first `<prefix><n>` no device is called.
fn free_id(pci: &PciDevices, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|id| pci.function(id).is_none())
        .unwrap_or_else(|| prefix.to_string())
}
