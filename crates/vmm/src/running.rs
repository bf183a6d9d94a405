//! What the control API can do to a booted VM: pause and resume it, read
//! its counters, describe its devices, power it off or reset it, and
//! change its devices while it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use devices::{Ged, GedEvent, PciHotplug};
use vmm_sys_util::eventfd::EventFd;

use crate::api::{Counters, DeviceInfo, NumaCellInfo, NumaInfo, VcpuInfo};
use crate::config::{DiskConfig, NetConfig, VmConfig};
use crate::error::{Error, Result};
use crate::machine::PreparedVm;
use crate::pci_devices::{DeviceSource, PciDevices};
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
    /// Asked once per boot, before any vCPU runs: true holds the vCPUs
    /// before the guest's first instruction (`vireo run --paused`).
    fn take_start_paused(&self) -> bool {
        false
    }
    /// A disk's error policy held a request: pause the VM, recording why
    /// (`GET /vm` says it), until a client resumes it.
    fn io_stopped(&self, _why: String) {}
}

/// How the API reaches the guest and the VM's owner: the ACPI event
/// devices (power button, PCI hot-plug) and the owner's power-off and reset
/// event fds.
pub(crate) struct ControlEvents {
    pub ged: Ged,
    pub hotplug: PciHotplug,
    pub power_off: EventFd,
    pub reset: EventFd,
    /// Where disks whose error policy stops the VM report.
    pub io_stops: Arc<crate::io_stops::IoStops>,
}

/// Host CPUs of each vCPU (by index) and of the emulator threads, as
/// set at boot or since through the API.
struct LivePins {
    vcpus: Vec<Option<Vec<usize>>>,
    emulator: Option<Vec<usize>>,
}

/// Tells the device workers where the vCPUs may run
/// (virtio::queue::poll_budget): the union of their pins, or anywhere if
/// one is not pinned.
fn publish_vcpu_cpus(vcpus: &[Option<Vec<usize>>]) {
    let pinned: Option<Vec<usize>> = vcpus
        .iter()
        .cloned()
        .collect::<Option<Vec<_>>>()
        .map(|each| each.concat());
    virtio::queue::set_vcpu_cpus(pinned.as_deref());
}

/// A booted VM, as the control API sees it.
pub struct RunningVm {
    events: ControlEvents,
    /// Devices the guest was asked to give up, by slot.
    removing: Mutex<BTreeMap<u8, String>>,
    /// Ids of devices being built for the bus.
    claimed: Mutex<BTreeSet<String>>,
    /// Held across a disk resize (check and change).
    resizing: Mutex<()>,
    config: VmConfig,
    vcpus: Arc<VcpuShared>,
    threads: Vec<libc::pthread_t>,
    /// Each vCPU thread's id, by vCPU index.
    tids: Vec<libc::pid_t>,
    /// The same as the host sees them (they differ in a jail's PID
    /// namespace): what the API reports. Asked of the jail's keeper when
    /// first reported, not at boot, where the round trip (the keeper
    /// reads every thread's status) would delay the guest.
    host_tids: OnceLock<Vec<libc::pid_t>>,
    /// Pins as they are now, which a reboot keeps.
    pins: Mutex<LivePins>,
    counters: Vec<Arc<VcpuCounters>>,
    pci: Mutex<PciDevices>,
}

impl RunningVm {
    pub(crate) fn new(
        config: VmConfig,
        vcpus: Arc<VcpuShared>,
        threads: Vec<(libc::pthread_t, libc::pid_t)>,
        counters: Vec<Arc<VcpuCounters>>,
        pci: PciDevices,
        events: ControlEvents,
    ) -> Self {
        let pins: Vec<Option<Vec<usize>>> = (0..config.cpus)
            .map(|i| config.vcpu_pin(i).map(<[usize]>::to_vec))
            .collect();
        let emulator_pin = config.emulator_pin.clone();
        publish_vcpu_cpus(&pins);
        let (threads, tids): (_, Vec<libc::pid_t>) = threads.into_iter().unzip();
        Self {
            host_tids: OnceLock::new(),
            tids,
            pins: Mutex::new(LivePins {
                vcpus: pins,
                emulator: emulator_pin,
            }),
            events,
            removing: Mutex::new(BTreeMap::new()),
            claimed: Mutex::new(BTreeSet::new()),
            resizing: Mutex::new(()),
            config,
            vcpus,
            threads,
            counters,
            pci: Mutex::new(pci),
        }
    }

    fn pci(&self) -> MutexGuard<'_, PciDevices> {
        self.pci.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration to boot again with on a reset: the one the VM
    /// booted with, with its disks and cards as they are now (devices
    /// added or removed while it ran stay added or removed, as on a real
    /// machine), in bus order. It holds the disks' images, open as they
    /// are: taken before this VM's devices go, it keeps every image locked
    /// across the reboot.
    pub fn current_config(&self) -> PreparedVm {
        let mut config = self.config.clone();
        {
            let pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
            config.vcpu_pins = (0u32..)
                .zip(&pins.vcpus)
                .filter_map(|(vcpu, p)| {
                    p.clone().map(|cpus| crate::pinning::VcpuPin { vcpu, cpus })
                })
                .collect();
            config.emulator_pin = pins.emulator.clone();
        }
        let mut images = Vec::new();
        config.disks.clear();
        config.nets.clear();
        let removing = self
            .removing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for f in self.pci().functions() {
            if removing.contains_key(&f.slot) {
                continue;
            }
            match (&f.description.source, &f.description.disk) {
                (Some(DeviceSource::Disk(d)), Some(image)) => {
                    config.disks.push(d.clone());
                    images.push(image.clone());
                }
                (Some(DeviceSource::Net(n)), _) => config.nets.push(n.clone()),
                _ => {}
            }
        }
        // A reboot keeps the balloon where the API last set it, or
        // without it if the guest ejected it (remove-device).
        match self.balloon() {
            Some(control) => {
                if let Some(b) = config.balloon.as_mut() {
                    let pages = u64::from(control.num_pages());
                    b.target = Some(config.memory - pages * virtio::balloon::PAGE_SIZE);
                    b.stats_period = control.stats_period();
                }
            }
            None => config.balloon = None,
        }
        PreparedVm::new(config, images)
    }

    /// The balloon's control handle, if the VM has one.
    pub(crate) fn balloon(&self) -> Option<virtio::balloon::BalloonControl> {
        self.pci()
            .functions()
            .iter()
            .find_map(|f| f.description.balloon.clone())
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

    /// Whether the vCPUs are held out of the guest.
    pub fn is_paused(&self) -> bool {
        self.vcpus.pause.is_requested()
    }

    /// Let devices and vCPUs go on.
    pub fn resume(&self) {
        self.pci().resume_all();
        self.vcpus.pause.release();
    }

    /// Stop the VM now, as if the guest had powered off.
    pub fn power_off(&self) {
        let _ = self.events.power_off.write(1);
    }

    /// Press the ACPI power button: the guest decides what to do.
    pub fn press_power_button(&self) -> Result<()> {
        self.events
            .ged
            .notify(GedEvent::PowerButton)
            .map_err(|e| Error::Host("GED interrupt", e))
    }

    /// Whether this VM is already on its way out: a reset or power-off was
    /// asked for (by the guest or a client) or a vCPU stopped, and its
    /// owner has not torn it down yet. The event fds are only polled,
    /// never read: the owner reads nothing either, it only polls them.
    pub fn stop_pending(&self) -> bool {
        let mut fds = [
            &self.events.power_off,
            &self.events.reset,
            &self.vcpus.stop_evt,
        ]
        .map(|e| libc::pollfd {
            fd: e.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `fds` is a valid array of pollfd of the given length; a
        // zero timeout never blocks.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        n > 0
    }

    /// Reset the VM, as if the guest had reset it.
    pub fn reset(&self) {
        let _ = self.events.reset.write(1);
    }

    /// The devices on the PCI bus.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.pci()
            .functions()
            .iter()
            .map(|f| {
                let mut details = f.description.details.clone();
                if self.is_being_removed(&f.description.id) {
                    details.insert("removal".into(), "requested".into());
                }
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

    /// Each vCPU: APIC ID, thread, where it runs and has run.
    pub fn vcpus(&self) -> Result<Vec<VcpuInfo>> {
        let topology = self.config.topology();
        (0u32..)
            .zip(
                self.tids.iter().zip(
                    self.host_tids
                        .get_or_init(|| crate::confinement::host_tids(&self.tids)),
                ),
            )
            .map(|(id, (&tid, &host_tid))| {
                let stat = crate::pinning::thread_stat(tid)
                    .map_err(|e| Error::Host("reading a vCPU thread's stat", e))?;
                let affinity = crate::pinning::thread_affinity(tid)
                    .map_err(|e| Error::Host("sched_getaffinity", e))?;
                Ok(VcpuInfo {
                    id,
                    apic_id: topology.apic_id(id),
                    tid: host_tid,
                    cpu: stat.cpu,
                    affinity,
                    cpu_time_ns: stat.cpu_time_ns,
                })
            })
            .collect()
    }

    /// Move vCPU `index` onto `cpus` (checked by the caller). The pin
    /// holds across a guest reset.
    pub fn pin_vcpu(&self, index: u32, cpus: &[usize]) -> Result<()> {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(&tid), Some(slot)) = (
            self.tids.get(index as usize),
            pins.vcpus.get_mut(index as usize),
        ) else {
            return Err(Error::InvalidConfig(format!("vCPU {index} does not exist")));
        };
        crate::pinning::set_thread_affinity(tid, cpus)
            .map_err(|e| Error::Host("sched_setaffinity", e))?;
        *slot = Some(cpus.to_vec());
        publish_vcpu_cpus(&pins.vcpus);
        Ok(())
    }

    /// Move every thread but the vCPUs' and those on a pinned I/O thread
    /// onto `cpus` (checked by the caller); threads spawned later inherit
    /// it.
    pub fn pin_emulator(&self, cpus: &[usize]) -> Result<()> {
        let mut pins = self.pins.lock().unwrap_or_else(|e| e.into_inner());
        let mut keep = self.tids.clone();
        keep.extend(confine::pinned_threads());
        crate::pinning::pin_emulator(cpus, &keep)
            .map_err(|e| Error::Host("pinning the emulator threads", e))?;
        pins.emulator = Some(cpus.to_vec());
        Ok(())
    }

    /// The guest's NUMA cells and distances.
    pub fn numa(&self) -> NumaInfo {
        let Ok(Some(layout)) = self.config.numa_layout() else {
            return NumaInfo {
                cells: Vec::new(),
                distances: Vec::new(),
            };
        };
        let cells = layout
            .cells
            .iter()
            .enumerate()
            .map(|(i, c)| NumaCellInfo {
                id: c.id,
                memory_bytes: c.memory,
                cpus: {
                    let mut cpus = c.cpus.clone();
                    cpus.sort_unstable();
                    cpus
                },
                host_nodes: c.host_nodes.clone(),
                policy: layout.binding(i).map(|(_, p)| p.name().to_string()),
            })
            .collect();
        NumaInfo {
            cells,
            distances: layout.distances,
        }
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

    /// Reserve `id` (or, for `None`, the first free `<prefix><N>`) for a
    /// device about to be built, so two requests building at once cannot
    /// both take it. `None`: a device is already called `id`.
    pub fn claim_id(self: &Arc<Self>, id: Option<String>, prefix: &str) -> Option<IdClaim> {
        let pci = self.pci();
        let mut claimed = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
        let taken = |id: &str| pci.function(id).is_some() || claimed.contains(id);
        let id = match id {
            Some(id) if taken(&id) => return None,
            Some(id) => id,
            None => (0..)
                .map(|n| format!("{prefix}{n}"))
                .find(|id| !taken(id))
                .unwrap_or_else(|| prefix.to_string()),
        };
        claimed.insert(id.clone());
        Some(IdClaim {
            vm: Arc::downgrade(self),
            id,
        })
    }

    /// Put a prepared device on the bus and tell the guest; returns its id
    /// and PCI slot. The device must have been built for this VM.
    pub fn plug(&self, pending: PendingDevice) -> Result<(String, u8)> {
        if !pending.is_for(self) {
            return Err(Error::Pci(format!(
                "{} was built for another boot of the VM",
                pending.claim.id
            )));
        }
        let PendingDevice { device, claim } = pending;
        let slot = self.pci().add_virtio(device)?;
        self.announce_added(slot)?;
        Ok((claim.id.clone(), slot))
    }

    /// Tell the guest (ACPI hot-plug) that `slot` gained a device.
    fn announce_added(&self, slot: u8) -> Result<()> {
        self.events
            .hotplug
            .slot_added(slot)
            .map_err(|e| Error::Pci(e.to_string()))?;
        self.events
            .ged
            .notify(GedEvent::PciHotplug)
            .map_err(|e| Error::Host("GED interrupt", e))
    }

    /// Ask the guest to give up device `id` (ACPI eject request). It leaves
    /// the bus when the guest ejects it.
    pub fn request_removal(&self, id: &str) -> Result<u8> {
        let slot = self
            .slot_of(id)
            .ok_or_else(|| Error::Pci(format!("no device called {id}")))?;
        self.events
            .hotplug
            .slot_removal_requested(slot)
            .map_err(|e| Error::Pci(e.to_string()))?;
        self.removing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot, id.to_string());
        self.events
            .ged
            .notify(GedEvent::PciHotplug)
            .map_err(|e| Error::Host("GED interrupt", e))?;
        Ok(slot)
    }

    /// Whether device `id` was asked to leave and the guest has not let go.
    pub fn is_being_removed(&self, id: &str) -> bool {
        self.removing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|r| r == id)
    }

    /// Signalled when the guest ejects slots.
    pub(crate) fn eject_event(&self) -> &EventFd {
        self.events.hotplug.eject_event()
    }

    /// The guest ejected slots: take those devices off the bus. Slots the
    /// VMM did not ask for are taken off too (the guest powered them off;
    /// a real slot would lose the card's power).
    pub(crate) fn complete_ejections(&self) {
        let _ = self.events.hotplug.eject_event().read();
        let ejected = self.events.hotplug.take_ejected();
        for slot in (0u8..32).filter(|s| ejected & (1 << s) != 0) {
            let requested = self
                .removing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&slot);
            let id = requested.or_else(|| {
                self.pci()
                    .functions()
                    .iter()
                    .find(|f| f.slot == slot)
                    .map(|f| f.description.id.clone())
            });
            if let Some(id) = id {
                match self.pci().remove(&id) {
                    Ok(_) => tracing::info!("{id}: ejected by the guest, removed from slot {slot}"),
                    Err(e) => tracing::warn!("{id}: removal after eject failed: {e}"),
                }
            }
        }
    }

    /// The PCI slot of device `id`.
    pub fn slot_of(&self, id: &str) -> Option<u8> {
        self.pci().function(id).map(|f| f.slot)
    }

    /// Change disk `id`'s size and tell the guest (configuration change).
    /// A smaller size loses the data past the new end, so it is refused
    /// unless `shrink` says the caller means it (as `qemu-img resize
    /// --shrink`).
    pub fn resize_disk(&self, id: &str, size: u64, shrink: bool) -> Result<()> {
        // The bus lock is let go before the image is touched (a resize is
        // file I/O, which a slow file system can stretch): `GET /vm` and
        // the guest's own device accesses need that lock.
        let (disk, interrupt) = {
            let pci = self.pci();
            let function = pci
                .function(id)
                .ok_or_else(|| Error::Pci(format!("no device called {id}")))?;
            let disk = function
                .description
                .disk
                .clone()
                .ok_or_else(|| Error::InvalidConfig(format!("{id} is not a disk")))?;
            let interrupt = function
                .device
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .interrupt();
            (disk, interrupt)
        };
        // One resize at a time, so the size checked is the size changed.
        let _one = self.resizing.lock().unwrap_or_else(|e| e.into_inner());
        let current = disk.size();
        if size < current && !shrink {
            return Err(Error::InvalidConfig(format!(
                "size_bytes {size} is smaller than {id}'s {current} bytes: the data past the new \
                 end would be lost; send \"shrink\": true to shrink it anyway"
            )));
        }
        disk.resize(size).map_err(|source| Error::Disk {
            path: id.into(),
            source,
        })?;
        virtio::VirtioInterrupt::notify_config(&*interrupt);
        Ok(())
    }
}

/// A device built for a running VM but not yet on its bus.
pub struct PendingDevice {
    device: virtio_devices::NewDevice,
    claim: IdClaim,
}

impl PendingDevice {
    /// Build a disk under the id `claim` holds, opening its image. Opening
    /// can take long (a slow file system, a long backing chain), so it
    /// needs no lock and no hold on the VM (a VM stopping meanwhile is
    /// torn down as usual); [`RunningVm::plug`] puts it on the bus.
    pub fn disk(claim: IdClaim, disk: &DiskConfig) -> Result<Self> {
        let image = virtio_devices::open_disk(disk)?;
        let vm = claim.vm.upgrade();
        let stops = vm.as_ref().map(|vm| vm.events.io_stops.clone());
        let io_cpus = vm.as_ref().and_then(|vm| vm.config.io_cpus(disk));
        let device = virtio_devices::disk_device(&claim.id, disk, image, stops.as_ref(), io_cpus);
        Ok(Self { device, claim })
    }

    /// Whether it was built for `vm` (not for an earlier boot).
    pub fn is_for(&self, vm: &RunningVm) -> bool {
        std::ptr::eq(self.claim.vm.as_ptr(), vm)
    }

    /// Build a network card, as [`PendingDevice::disk`].
    pub fn net(claim: IdClaim, net: &NetConfig) -> Result<Self> {
        let device = virtio_devices::net_device(&claim.id, net)?;
        Ok(Self { device, claim })
    }
}

/// A device id reserved while its device is built; freed when dropped (by
/// then the device is on the bus, or was never put there). It holds the VM
/// weakly: a build stuck on a slow open must not keep a stopped VM's
/// devices (and their image locks) alive.
pub struct IdClaim {
    vm: Weak<RunningVm>,
    id: String,
}

impl Drop for IdClaim {
    fn drop(&mut self) {
        if let Some(vm) = self.vm.upgrade() {
            vm.claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.id);
        }
    }
}
