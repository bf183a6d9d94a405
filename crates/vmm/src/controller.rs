//! The VMM's side of the control API: a state machine over one VM that
//! carries out [`Action`]s and tells the process's main thread when to
//! boot.
//!
//! The main thread owns the VM's life (`run_once`); API threads only ask.
//! They meet here: the controller holds the configuration until a client
//! boots it, and a handle on the running VM between `booted` and
//! `stopping`, both under one lock, so no action can touch a VM that is
//! being torn down.
//!
//! The lock is never held across anything that can block on the outside
//! world: kernels, initrds and disk images are opened (and checked) with
//! the lock released, and the result committed under it afterwards. The
//! main thread takes the same lock to report a boot or a stop, so a
//! request stuck on a slow open can hold neither the other requests nor
//! the main thread (and with it SIGTERM).
//!
//! Between a stop and the next boot (a reset, a reboot, a client's boot
//! still being built) the VM is "settling": requests that need a running
//! VM wait for it to settle instead of failing, so a request sent right
//! after a reset acts on the VM that came back.

mod spec;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{Action, ActionResult, ApiError, VmConfigSpec, VmController, VmInfo, VmState};
use crate::config::{KernelSource, VmConfig};
use crate::error::error_chain;
use crate::machine::PreparedVm;
use crate::running::{IdClaim, PendingDevice, RunningVm, VmObserver};

/// How long `PUT /vm/boot` and `PUT /vm/reset` wait for the VM to come up,
/// and other requests for a boot in progress to end, before answering.
const BOOT_WAIT: Duration = Duration::from_secs(30);

/// The largest disk size `resize-disk` takes: the largest multiple of 512
/// in a signed 64-bit offset (what files and the document's int64 hold).
const MAX_DISK_BYTES: u64 = (i64::MAX as u64) & !511;

struct Inner {
    state: VmState,
    /// The configuration to boot, its disks open and locked from the
    /// moment it was checked until it is replaced or the process ends.
    config: Option<PreparedVm>,
    /// The main thread is to pick up `config` and boot it.
    boot_requested: bool,
    /// A boot was asked for, or the VM stopped, and the main thread has not
    /// yet said how it ended (booted, failed, or the process is ending).
    settling: bool,
    /// Why the last boot a client asked for failed.
    boot_error: Option<String>,
    /// How many times a VM has booted: tells a waiter that *its* boot came.
    boots: u64,
    running: Option<Arc<RunningVm>>,
    reset_requested: bool,
    /// A client powered the VM off: whatever stopped it (the guest may
    /// have reset at the same moment), it does not boot again.
    power_off_requested: bool,
    /// The next boot holds its vCPUs before the first instruction.
    start_paused: bool,
    /// Paused by a disk's error policy: the error, until resumed.
    io_error: Option<String>,
}

/// The control API's view of this process's VM.
pub struct Controller {
    inner: Mutex<Inner>,
    changed: Condvar,
    max_cpus: u32,
    /// What `PUT /vm/config` fills in for fields a client leaves out: the
    /// machine flags `vireo run` was given.
    defaults: VmConfig,
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(409, message)
}

/// The request breaks the API's document (a value out of its range, a
/// malformed field).
fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, message)
}

/// The request is well formed but cannot be carried out here: a file that
/// is missing or of the wrong kind, an image that does not open, a host
/// limit. Kept apart from 400 so a client (and the contract test) can tell
/// "fix the request" from "fix the world".
fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(422, message)
}

impl Controller {
    /// A controller for a VM configured on the command line (`Some`) or
    /// waiting for `PUT /vm/config` (`None`). `max_cpus` is the host's limit.
    pub fn new(config: Option<PreparedVm>, max_cpus: u32) -> Arc<Self> {
        Self::with_defaults(config, VmConfig::default(), max_cpus)
    }

    /// [`Controller::new`], with `defaults` for what a later `PUT
    /// /vm/config` leaves out: its memory, vCPUs, CPU template, command
    /// line, reboot policy and consoles (its kernel, initrd and devices
    /// are ignored: a configuration names its own).
    pub fn with_defaults(
        config: Option<PreparedVm>,
        defaults: VmConfig,
        max_cpus: u32,
    ) -> Arc<Self> {
        let state = if config.is_some() {
            VmState::Configured
        } else {
            VmState::NotConfigured
        };
        Arc::new(Self {
            inner: Mutex::new(Inner {
                state,
                config,
                boot_requested: false,
                settling: false,
                boot_error: None,
                boots: 0,
                running: None,
                reset_requested: false,
                power_off_requested: false,
                start_paused: false,
                io_error: None,
            }),
            changed: Condvar::new(),
            max_cpus,
            defaults,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, inner: MutexGuard<'a, Inner>, timeout: Duration) -> MutexGuard<'a, Inner> {
        self.changed
            .wait_timeout(inner, timeout)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Ask for a boot now (the command line gave a kernel, or the VM is
    /// rebooting).
    pub fn request_boot(&self) {
        let mut inner = self.lock();
        inner.boot_requested = true;
        inner.settling = true;
        self.changed.notify_all();
    }

    /// Block until a client has configured and booted the VM, or
    /// `give_up` returns true (checked every 100 ms). Returns the
    /// configuration to boot.
    pub fn wait_for_boot(&self, mut give_up: impl FnMut() -> bool) -> Option<PreparedVm> {
        let mut inner = self.lock();
        loop {
            if inner.power_off_requested {
                return None;
            }
            if inner.boot_requested {
                inner.boot_requested = false;
                return inner.config.clone();
            }
            if give_up() {
                return None;
            }
            inner = self.wait(inner, Duration::from_millis(100));
        }
    }

    /// The next boot starts paused: its vCPUs are held before the guest's
    /// first instruction until `PUT /vm/resume` (`vireo run --paused`).
    pub fn start_paused(&self) {
        self.lock().start_paused = true;
    }

    /// Building the VM failed: tell the client waiting in `PUT /vm/boot`.
    pub fn boot_failed(&self, why: String) {
        let mut inner = self.lock();
        inner.boot_error = Some(why);
        inner.state = VmState::Configured;
        inner.settling = false;
        self.changed.notify_all();
    }

    /// Whether a client asked for the reset that just ended the boot (the
    /// VM then boots again); clears the request.
    pub fn take_reset_request(&self) -> bool {
        std::mem::take(&mut self.lock().reset_requested)
    }

    /// The VM is gone for good.
    pub fn finished(&self) {
        let mut inner = self.lock();
        inner.state = VmState::Shutdown;
        inner.settling = false;
        inner.boot_requested = false;
        self.changed.notify_all();
    }

    /// The lock, once no boot or stop is in progress (or `BOOT_WAIT` has
    /// passed): a request that needs the VM acts on the one that came up.
    fn settled(&self) -> MutexGuard<'_, Inner> {
        let deadline = Instant::now() + BOOT_WAIT;
        let mut inner = self.lock();
        while inner.settling {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            inner = self.wait(inner, left);
        }
        inner
    }

    fn running(inner: &Inner) -> Result<Arc<RunningVm>, ApiError> {
        inner.running.clone().ok_or_else(|| {
            conflict(format!(
                "the VM is not running (it is {})",
                state_name(inner.state)
            ))
        })
    }

    fn info(inner: &Inner) -> VmInfo {
        let config = inner
            .running
            .as_ref()
            .map(|r| r.config())
            .or(inner.config.as_ref().map(PreparedVm::config));
        VmInfo {
            state: inner.state,
            cpus: config.map_or(0, |c| c.cpus),
            memory_bytes: config.map_or(0, |c| c.memory),
            kernel: config.map(|c| match &c.kernel {
                KernelSource::Path(p) => p.display().to_string(),
                KernelSource::Embedded(_) => "(embedded)".into(),
            }),
            cmdline: config.map(|c| c.cmdline.clone()),
            devices: inner
                .running
                .as_ref()
                .map(|r| r.devices())
                .unwrap_or_default(),
            io_error: inner
                .io_error
                .clone()
                .filter(|_| inner.state == VmState::Paused),
        }
    }

    /// Why the VM cannot take a new configuration now, if it cannot.
    fn cannot_configure(inner: &Inner) -> Option<ApiError> {
        if inner.settling {
            return Some(conflict(
                "the VM is being booted; its configuration cannot change now",
            ));
        }
        (!matches!(inner.state, VmState::NotConfigured | VmState::Configured)).then(|| {
            conflict(format!(
                "the VM cannot be configured: it is {}",
                state_name(inner.state)
            ))
        })
    }

    fn configure(&self, spec: VmConfigSpec) -> ActionResult {
        if let Some(why) = crate::confinement::refuse_path(
            &format!("config: kernel {}", spec.kernel.display()),
            "a jailed VM is configured on vireo run's command line",
        ) {
            return Err(unprocessable(why));
        }
        // The configuration this one replaces: the disks both name stay
        // open (and locked) from one to the other.
        let held = {
            let inner = self.lock();
            if let Some(refusal) = Self::cannot_configure(&inner) {
                return Err(refusal);
            }
            inner.config.clone()
        };
        // Checking opens files: without the lock.
        let config = spec::config_from_spec(spec, &self.defaults, self.max_cpus, held.as_ref())?;
        let mut inner = self.lock();
        // A boot that started meanwhile boots the old configuration; this
        // one must not be acknowledged and then ignored.
        if let Some(refusal) = Self::cannot_configure(&inner) {
            return Err(refusal);
        }
        let replaced = inner.config.replace(config);
        inner.state = VmState::Configured;
        drop(inner);
        // Closing an image is file I/O (a qcow2 writes back its caches):
        // not under the lock.
        drop((replaced, held));
        Ok(Value::Null)
    }

    fn boot(&self) -> ActionResult {
        let mut inner = self.lock();
        if inner.settling {
            return Err(conflict("the VM is already being booted"));
        }
        if inner.state != VmState::Configured {
            return Err(conflict(match inner.state {
                VmState::NotConfigured => "the VM has no configuration yet (PUT /vm/config)".into(),
                s => format!("the VM is already {}", state_name(s)),
            }));
        }
        inner.boot_requested = true;
        inner.settling = true;
        inner.boot_error = None;
        self.changed.notify_all();
        let boots = inner.boots;
        self.until_booted(inner, boots, "the VM did not start in time")
            .map(|_| Value::Null)
    }

    /// Wait until a VM boots after boot number `boots`; the lock back, or
    /// why it did not come.
    fn until_booted<'a>(
        &'a self,
        mut inner: MutexGuard<'a, Inner>,
        boots: u64,
        too_slow: &str,
    ) -> Result<MutexGuard<'a, Inner>, ApiError> {
        let deadline = Instant::now() + BOOT_WAIT;
        loop {
            if inner.boots > boots {
                return Ok(inner);
            }
            if let Some(why) = inner.boot_error.take() {
                // The configuration could not be built on this host.
                return Err(unprocessable(format!("boot failed: {why}")));
            }
            if inner.state == VmState::Shutdown {
                return Err(conflict("the VM shut down instead of booting"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::new(503, too_slow));
            }
            inner = self.wait(inner, left);
        }
    }

    fn reset(&self) -> ActionResult {
        let mut inner = self.settled();
        let running = Self::running(&inner)?;
        inner.reset_requested = true;
        let boots = inner.boots;
        running.reset();
        drop(running);
        // Answer once the VM is back, so the client's next request finds
        // it running (not in the gap between the stop and the new boot).
        self.until_booted(inner, boots, "the VM did not boot again in time")
            .map(|_| Value::Null)
    }

    fn pause(&self) -> ActionResult {
        self.pause_because(None)
    }

    /// Pause, recording `io_error` as the reason under the same lock as
    /// the state: a client never sees the VM paused by a failed request
    /// without the failure.
    fn pause_because(&self, io_error: Option<String>) -> ActionResult {
        let deadline = Instant::now() + BOOT_WAIT;
        loop {
            // Under the lock: pausing signals the vCPU threads, which must
            // not be joined meanwhile. It is bounded (2 s).
            let mut inner = self.settled();
            if inner.state == VmState::Paused {
                return Err(conflict("the VM is already paused"));
            }
            let running = Self::running(&inner)?;
            running
                .pause()
                .map_err(|e| ApiError::new(500, error_chain(&e)))?;
            // With its vCPUs held, the guest can ask for nothing more; but
            // it may have asked for a reset just before. That VM is about
            // to go: pausing it would be acknowledged and then lost with
            // it. Let it go, and pause the one that boots next.
            if !running.stop_pending() {
                inner.state = VmState::Paused;
                inner.io_error = io_error;
                return Ok(Value::Null);
            }
            running.resume();
            while inner
                .running
                .as_ref()
                .is_some_and(|r| Arc::ptr_eq(r, &running))
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ApiError::new(503, "the VM did not stop in time"));
                }
                inner = self.wait(inner, left);
            }
        }
    }

    /// Hot-plug: claim the device's id, build the device with no lock and
    /// no hold on the VM (it opens an image or a TAP), then put it on the
    /// bus if the same VM still runs.
    fn hot_plug(
        &self,
        id: Option<String>,
        prefix: &str,
        build: impl FnOnce(IdClaim) -> crate::error::Result<PendingDevice>,
    ) -> ActionResult {
        let claim = {
            let running = Self::running(&self.settled())?;
            running.claim_id(id.clone(), prefix).ok_or_else(|| {
                conflict(format!(
                    "a device called {} exists already",
                    id.unwrap_or_default()
                ))
            })?
        };
        let device = build(claim).map_err(|e| unprocessable(error_chain(&e)))?;
        let inner = self.lock();
        let Some(running) = inner.running.clone().filter(|r| device.is_for(r)) else {
            return Err(conflict(
                "the VM stopped or rebooted while the device was being set up; nothing was added",
            ));
        };
        let (id, slot) = running
            .plug(device)
            .map_err(|e| unprocessable(error_chain(&e)))?;
        drop(inner);
        Ok(json!({"id": id, "pci": format!("00:{slot:02x}.0")}))
    }
}

impl Controller {
    fn balloon(running: &RunningVm) -> Result<virtio::balloon::BalloonControl, ApiError> {
        running.balloon().ok_or_else(|| {
            ApiError::new(
                404,
                "the VM has no balloon device (start it with vireo run --balloon)",
            )
        })
    }
}

/// Highest host CPU number a pin may name (the OpenAPI document's limit,
/// glibc's `cpu_set_t`).
const MAX_HOST_CPU: usize = 1023;

/// A CPU list must name CPUs this process may use: 400 when empty, 422
/// when it names one outside the process's set.
fn check_pin(cpus: &[usize]) -> Result<(), ApiError> {
    if cpus.is_empty() {
        return Err(bad_request("cpus must name at least one host CPU"));
    }
    if let Some(c) = cpus.iter().find(|&&c| c > MAX_HOST_CPU) {
        return Err(bad_request(format!(
            "cpus: {c} is above {MAX_HOST_CPU}, the highest CPU number the API takes"
        )));
    }
    crate::pinning::check_cpus(cpus, "cpus").map_err(unprocessable)
}

fn state_name(state: VmState) -> &'static str {
    match state {
        VmState::NotConfigured => "not configured",
        VmState::Configured => "configured, not booted",
        VmState::Running => "running",
        VmState::Paused => "paused",
        VmState::Shutdown => "shut down",
    }
}

impl VmController for Controller {
    fn handle(&self, action: Action) -> ActionResult {
        match action {
            Action::GetVm => serde_json::to_value(Self::info(&self.lock()))
                .map_err(|e| ApiError::new(500, e.to_string())),
            Action::GetCounters => {
                let running = Self::running(&self.lock())?;
                serde_json::to_value(running.counters())
                    .map_err(|e| ApiError::new(500, e.to_string()))
            }
            Action::Configure(spec) => self.configure(*spec),
            Action::Boot => self.boot(),
            Action::Reset => self.reset(),
            Action::Pause => self.pause(),
            Action::Resume => {
                let mut inner = self.settled();
                if inner.state != VmState::Paused {
                    return Err(conflict(format!(
                        "the VM is not paused (it is {})",
                        state_name(inner.state)
                    )));
                }
                Self::running(&inner)?.resume();
                inner.state = VmState::Running;
                inner.io_error = None;
                Ok(Value::Null)
            }
            Action::Shutdown => {
                let inner = self.settled();
                if inner.state == VmState::Paused {
                    return Err(conflict(
                        "the VM is paused: resume it so the guest can see the power button",
                    ));
                }
                Self::running(&inner)?
                    .press_power_button()
                    .map_err(|e| ApiError::new(500, error_chain(&e)))?;
                Ok(Value::Null)
            }
            Action::PowerOff => {
                let mut inner = self.settled();
                let running = Self::running(&inner)?;
                inner.power_off_requested = true;
                running.power_off();
                Ok(Value::Null)
            }
            Action::AddDisk(spec) => {
                let id = spec.id.clone();
                let disk = spec::disk_config(spec, "")?;
                // A network disk (iscsi://, nfs://) is no host path: the VMM
                // reaches it itself, in a jail too (one that kept the host's
                // network, because a network disk was there at start).
                if disk.passed.is_none() && !block::is_network(&disk.path) {
                    if let Some(why) = crate::confinement::refuse_path(
                        &format!("add-disk: path {}", disk.path.display()),
                        "send the image's descriptor with image_fd",
                    ) {
                        return Err(unprocessable(why));
                    }
                    spec::disk_file("path", &disk.path)?;
                }
                self.hot_plug(id, "disk", |claim| PendingDevice::disk(claim, &disk))
            }
            Action::AddNet(spec) => {
                let id = spec.id.clone();
                let net = spec::net_config(spec, "")?;
                if net.passed.is_none() {
                    let subject = match &net.tap {
                        Some(tap) => format!("add-net: tap {tap}"),
                        None => "add-net: a new TAP".to_string(),
                    };
                    if let Some(why) = crate::confinement::refuse_path(
                        &subject,
                        "send the TAP's descriptor with tap_fd",
                    ) {
                        return Err(unprocessable(why));
                    }
                }
                self.hot_plug(id, "net", |claim| PendingDevice::net(claim, &net))
            }
            Action::RemoveDevice(spec) => {
                let inner = self.settled();
                let running = Self::running(&inner)?;
                if running.slot_of(&spec.id).is_none() {
                    return Err(ApiError::new(404, format!("no device called {}", spec.id)));
                }
                if running.is_being_removed(&spec.id) {
                    return Err(conflict(format!("{} is already being removed", spec.id)));
                }
                running
                    .request_removal(&spec.id)
                    .map_err(|e| ApiError::new(500, error_chain(&e)))?;
                Ok(Value::Null)
            }
            Action::GetBalloon => {
                let running = Self::running(&self.lock())?;
                let info = crate::balloon::info(&Self::balloon(&running)?, running.config().memory);
                serde_json::to_value(info).map_err(|e| ApiError::new(500, e.to_string()))
            }
            Action::SetBalloon(spec) => {
                let running = Self::running(&self.settled())?;
                let memory = running.config().memory;
                crate::balloon::apply(&Self::balloon(&running)?, memory, &spec)?;
                Ok(Value::Null)
            }
            Action::GetVcpus => {
                let running = Self::running(&self.lock())?;
                let vcpus = running
                    .vcpus()
                    .map_err(|e| ApiError::new(500, error_chain(&e)))?;
                serde_json::to_value(vcpus).map_err(|e| ApiError::new(500, e.to_string()))
            }
            Action::PinVcpu(spec) => {
                let running = Self::running(&self.settled())?;
                if spec.vcpu >= running.config().cpus {
                    return Err(ApiError::new(
                        404,
                        format!(
                            "vCPU {} does not exist (the VM has {})",
                            spec.vcpu,
                            running.config().cpus
                        ),
                    ));
                }
                check_pin(&spec.cpus)?;
                running
                    .pin_vcpu(spec.vcpu, &spec.cpus)
                    .map_err(|e| ApiError::new(500, error_chain(&e)))?;
                Ok(Value::Null)
            }
            Action::PinEmulator(spec) => {
                let running = Self::running(&self.settled())?;
                check_pin(&spec.cpus)?;
                running
                    .pin_emulator(&spec.cpus)
                    .map_err(|e| ApiError::new(500, error_chain(&e)))?;
                Ok(Value::Null)
            }
            Action::GetNuma => {
                let running = Self::running(&self.lock())?;
                serde_json::to_value(running.numa()).map_err(|e| ApiError::new(500, e.to_string()))
            }
            Action::ResizeDisk(spec) => {
                if spec.size_bytes == 0
                    || spec.size_bytes % 512 != 0
                    || spec.size_bytes > MAX_DISK_BYTES
                {
                    return Err(bad_request(format!(
                        "size_bytes must be a positive multiple of 512, at most {MAX_DISK_BYTES}"
                    )));
                }
                // Resizing is file I/O: done without the controller lock.
                let running = Self::running(&self.settled())?;
                if running.slot_of(&spec.id).is_none() {
                    return Err(ApiError::new(404, format!("no device called {}", spec.id)));
                }
                running
                    .resize_disk(&spec.id, spec.size_bytes, spec.shrink)
                    .map_err(|e| unprocessable(error_chain(&e)))?;
                Ok(Value::Null)
            }
        }
    }
}

impl VmObserver for Controller {
    fn take_start_paused(&self) -> bool {
        std::mem::take(&mut self.lock().start_paused)
    }

    fn io_stopped(&self, why: String) {
        tracing::warn!("{why}: pausing the VM until it is resumed");
        match self.pause_because(Some(why.clone())) {
            Ok(_) => {}
            // Paused already (by a client, or by an earlier error): the
            // held request waits for that resume as well.
            Err(e) if e.status == 409 => {
                let mut inner = self.lock();
                if inner.state == VmState::Paused && inner.io_error.is_none() {
                    inner.io_error = Some(why);
                }
            }
            Err(e) => tracing::error!("{why}: the VM could not be paused: {}", e.message),
        }
    }

    fn booted(&self, vm: Arc<RunningVm>) {
        let mut inner = self.lock();
        // The VM's devices hold its images now; kept here too, a disk
        // removed while it runs would stay locked. `stopping` puts the
        // configuration back, images and all, before the devices go.
        inner.config = None;
        inner.state = if vm.is_paused() {
            VmState::Paused
        } else {
            VmState::Running
        };
        inner.running = Some(vm);
        inner.settling = false;
        inner.boots += 1;
        self.changed.notify_all();
    }

    fn stopping(&self) {
        let mut inner = self.lock();
        // A reboot (reset) boots the machine as it is now, hot-plugged
        // devices included.
        if let Some(running) = inner.running.take() {
            inner.config = Some(running.current_config());
        }
        // Until the main thread decides (reboot or exit), the VM is
        // configured but not running, and requests wait for the decision.
        inner.state = VmState::Configured;
        inner.settling = true;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VmConfigSpec;

    fn spec(kernel: &std::path::Path) -> Box<VmConfigSpec> {
        Box::new(serde_json::from_value(json!({ "kernel": kernel, "cpus": 2 })).unwrap())
    }

    /// The smallest kernel the loader takes: an ELF64 whose one loadable
    /// segment is a `hlt` at 1 MiB. A configuration is checked by loading
    /// its kernel, so these tests need one that loads.
    fn kernel_file(name: &str) -> std::path::PathBuf {
        const LOAD_AT: u64 = 0x10_0000;
        const PHDR_AT: u64 = 64;
        const CODE_AT: u64 = PHDR_AT + 56;
        let mut elf = Vec::new();
        elf.extend_from_slice(b"\x7fELF");
        elf.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
        elf.extend_from_slice(&[0; 8]);
        elf.extend_from_slice(&2u16.to_le_bytes()); // executable
        elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&LOAD_AT.to_le_bytes()); // entry
        elf.extend_from_slice(&PHDR_AT.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
        elf.extend_from_slice(&0u32.to_le_bytes());
        for half in [64u16, 56, 1, 64, 0, 0] {
            elf.extend_from_slice(&half.to_le_bytes());
        }
        elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        elf.extend_from_slice(&5u32.to_le_bytes()); // r-x
        for word in [CODE_AT, LOAD_AT, LOAD_AT, 1, 1, 0x1000] {
            elf.extend_from_slice(&word.to_le_bytes());
        }
        elf.push(0xf4); // hlt
        let path = spec::scratch_path(name);
        std::fs::write(&path, elf).unwrap();
        path
    }

    #[test]
    fn one_boot_at_a_time_and_no_config_change_during_it() {
        let kernel = kernel_file("boot-race");
        let c = Controller::new(None, 8);
        assert_eq!(c.handle(Action::Configure(spec(&kernel))), Ok(Value::Null));
        let first = {
            let c = c.clone();
            std::thread::spawn(move || c.handle(Action::Boot))
        };
        // The main thread picks the boot up.
        let config = c.wait_for_boot(|| false).unwrap();
        assert_eq!(config.config().cpus, 2);
        // While it builds the VM, a second boot and a new configuration
        // are refused, not acknowledged and ignored.
        let e = c.handle(Action::Boot).unwrap_err();
        assert_eq!(e.status, 409, "{e:?}");
        assert!(e.message.contains("already being booted"), "{e:?}");
        let e = c.handle(Action::Configure(spec(&kernel))).unwrap_err();
        assert_eq!(e.status, 409, "{e:?}");
        c.boot_failed("no such luck".into());
        let e = first.join().unwrap().unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.contains("no such luck"), "{e:?}");
        // After the failure the VM takes a configuration again.
        assert_eq!(c.handle(Action::Configure(spec(&kernel))), Ok(Value::Null));
        let _ = std::fs::remove_file(&kernel);
    }

    #[test]
    fn requests_wait_for_a_boot_in_progress() {
        let kernel = kernel_file("settle");
        let c = Controller::new(None, 8);
        c.handle(Action::Configure(spec(&kernel))).unwrap();
        c.request_boot();
        let pause = {
            let c = c.clone();
            std::thread::spawn(move || c.handle(Action::Pause))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!pause.is_finished(), "pause did not wait for the boot");
        // Reads never wait.
        let info = c.handle(Action::GetVm).unwrap();
        assert_eq!(info["state"], "configured");
        c.finished();
        let e = pause.join().unwrap().unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.message.contains("shut down"), "{e:?}");
        let _ = std::fs::remove_file(&kernel);
    }

    #[test]
    fn command_line_defaults_fill_what_the_config_leaves_out() {
        let kernel = kernel_file("defaults");
        let defaults = VmConfig {
            memory: 256 << 20,
            cpus: 3,
            reboot: true,
            ..VmConfig::default()
        };
        let c = Controller::with_defaults(None, defaults, 8);
        let bare = serde_json::from_value(json!({ "kernel": kernel })).unwrap();
        c.handle(Action::Configure(Box::new(bare))).unwrap();
        c.request_boot();
        let config = c.wait_for_boot(|| false).unwrap();
        assert_eq!(
            (
                config.config().memory,
                config.config().cpus,
                config.config().reboot
            ),
            (256 << 20, 3, true)
        );
        c.boot_failed("done".into());
        // What the client gives wins.
        c.handle(Action::Configure(spec(&kernel))).unwrap();
        c.request_boot();
        let config = c.wait_for_boot(|| false).unwrap();
        assert_eq!(
            (config.config().memory, config.config().cpus),
            (256 << 20, 2)
        );
        let _ = std::fs::remove_file(&kernel);
    }

    #[test]
    fn a_fifo_kernel_is_refused_at_once() {
        let fifo = spec::scratch_path("fifo-kernel");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let ctl = Controller::new(None, 8);
        let t = Instant::now();
        let e = ctl.handle(Action::Configure(spec(&fifo))).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(e.status, 422);
        assert!(e.message.starts_with("kernel "), "{e:?}");
        assert!(e.message.contains("FIFO"), "{e:?}");
        let kernel = kernel_file("fifo-initrd-kernel");
        let initrd = serde_json::from_value(json!({ "kernel": kernel, "initrd": fifo }));
        let e = ctl
            .handle(Action::Configure(Box::new(initrd.unwrap())))
            .unwrap_err();
        assert!(e.message.starts_with("initrd "), "{e:?}");
        assert!(e.message.contains("FIFO"), "{e:?}");
        assert_eq!(
            ctl.handle(Action::GetVm).unwrap()["state"],
            "not_configured"
        );
        let _ = std::fs::remove_file(&fifo);
        let _ = std::fs::remove_file(&kernel);
    }
}
