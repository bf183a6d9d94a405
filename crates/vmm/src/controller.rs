//! The VMM's side of the control API: a state machine over one VM that
//! carries out [`Action`]s, one at a time, and tells the process's main
//! thread when to boot.
//!
//! The main thread owns the VM's life (`run_once`); API threads only ask.
//! They meet here: the controller holds the configuration until a client
//! boots it, and a handle on the running VM between `booted` and
//! `stopping`, both under one lock, so no action can touch a VM that is
//! being torn down.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::{
    Action, ActionResult, ApiError, DiskSpec, NetSpec, VmConfigSpec, VmController, VmInfo, VmState,
};
use crate::config::{DiskConfig, KernelSource, NetConfig, VmConfig};
use crate::error::error_chain;
use crate::running::{RunningVm, VmObserver};

/// How long `PUT /vm/boot` waits for the VM to come up before answering.
const BOOT_WAIT: Duration = Duration::from_secs(30);

struct Inner {
    state: VmState,
    config: Option<VmConfig>,
    boot_requested: bool,
    boot_error: Option<String>,
    running: Option<Arc<RunningVm>>,
    reset_requested: bool,
}

/// The control API's view of this process's VM.
pub struct Controller {
    inner: Mutex<Inner>,
    changed: Condvar,
    max_cpus: u32,
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(409, message)
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, message)
}

impl Controller {
    /// A controller for a VM configured on the command line (`Some`) or
    /// waiting for `PUT /vm/config` (`None`). `max_cpus` is the host's limit.
    pub fn new(config: Option<VmConfig>, max_cpus: u32) -> Arc<Self> {
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
                boot_error: None,
                running: None,
                reset_requested: false,
            }),
            changed: Condvar::new(),
            max_cpus,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask for a boot now (the command line gave a kernel).
    pub fn request_boot(&self) {
        self.lock().boot_requested = true;
        self.changed.notify_all();
    }

    /// Block until a client has configured and booted the VM, or
    /// `give_up` returns true (checked every 100 ms). Returns the
    /// configuration to boot.
    pub fn wait_for_boot(&self, mut give_up: impl FnMut() -> bool) -> Option<VmConfig> {
        let mut inner = self.lock();
        loop {
            if inner.boot_requested {
                inner.boot_requested = false;
                return inner.config.clone();
            }
            if give_up() {
                return None;
            }
            inner = self
                .changed
                .wait_timeout(inner, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Building the VM failed: tell the client waiting in `PUT /vm/boot`.
    pub fn boot_failed(&self, why: String) {
        let mut inner = self.lock();
        inner.boot_error = Some(why);
        inner.state = VmState::Configured;
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
        self.changed.notify_all();
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
            .or(inner.config.as_ref());
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
        }
    }

    fn configure(&self, inner: &mut Inner, spec: VmConfigSpec) -> ActionResult {
        if !matches!(inner.state, VmState::NotConfigured | VmState::Configured) {
            return Err(conflict(format!(
                "the VM cannot be configured: it is {}",
                state_name(inner.state)
            )));
        }
        let config = config_from_spec(spec)?;
        crate::machine::validate_with(&config, self.max_cpus)
            .map_err(|e| bad_request(error_chain(&e)))?;
        inner.config = Some(config);
        inner.state = VmState::Configured;
        Ok(Value::Null)
    }

    fn boot(&self, mut inner: MutexGuard<'_, Inner>) -> ActionResult {
        if inner.state != VmState::Configured {
            return Err(conflict(match inner.state {
                VmState::NotConfigured => "the VM has no configuration yet (PUT /vm/config)".into(),
                s => format!("the VM is already {}", state_name(s)),
            }));
        }
        inner.boot_requested = true;
        inner.boot_error = None;
        self.changed.notify_all();
        let deadline = Instant::now() + BOOT_WAIT;
        while inner.state == VmState::Configured && inner.boot_error.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::new(500, "the VM did not start in time"));
            }
            inner = self
                .changed
                .wait_timeout(inner, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        match inner.boot_error.take() {
            Some(why) => Err(bad_request(format!("boot failed: {why}"))),
            None => Ok(Value::Null),
        }
    }
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

/// A `VmConfig` from the API's JSON, with `vireo run`'s defaults.
fn config_from_spec(spec: VmConfigSpec) -> Result<VmConfig, ApiError> {
    let defaults = VmConfig::default();
    let memory = match spec.memory_mib {
        Some(mib) => mib
            .checked_mul(1 << 20)
            .filter(|&b| b > 0)
            .ok_or_else(|| bad_request(format!("memory_mib {mib} is out of range")))?,
        None => defaults.memory,
    };
    let disks = spec
        .disks
        .into_iter()
        .map(disk_config)
        .collect::<Result<_, _>>()?;
    let nets = spec
        .nets
        .into_iter()
        .map(net_config)
        .collect::<Result<_, _>>()?;
    Ok(VmConfig {
        kernel: KernelSource::Path(spec.kernel),
        initrd: spec.initrd,
        cmdline: spec.cmdline.unwrap_or(defaults.cmdline.clone()),
        memory,
        cpus: spec.cpus.unwrap_or(defaults.cpus),
        disks,
        nets,
        rng: spec.rng,
        ..defaults
    })
}

/// A disk's options from JSON, checked as `--disk` checks them.
fn disk_config(spec: DiskSpec) -> Result<DiskConfig, ApiError> {
    const WHAT: &str = "disk";
    if spec.path.as_os_str().is_empty() {
        return Err(bad_request(format!("{WHAT}: path is empty")));
    }
    let mut disk = DiskConfig::new(spec.path);
    let queues = spec.queues.map(|q| q.to_string());
    let options = [
        ("id", spec.id.as_deref()),
        ("format", spec.format.as_deref()),
        ("cache", spec.cache.as_deref()),
        ("serial", spec.serial.as_deref()),
        ("queues", queues.as_deref()),
    ];
    for (key, value) in options {
        if let Some(v) = value {
            disk.set(WHAT, key, v).map_err(bad_request)?;
        }
    }
    disk.readonly = spec.readonly;
    Ok(disk)
}

/// A card's options from JSON, checked as `--net` checks them.
fn net_config(spec: NetSpec) -> Result<NetConfig, ApiError> {
    const WHAT: &str = "net";
    let mut net = NetConfig::new();
    let queues = spec.queues.map(|q| q.to_string());
    let options = [
        ("id", spec.id.as_deref()),
        ("tap", spec.tap.as_deref()),
        ("mac", spec.mac.as_deref()),
        ("queues", queues.as_deref()),
    ];
    for (key, value) in options {
        if let Some(v) = value {
            net.set(WHAT, key, v).map_err(bad_request)?;
        }
    }
    Ok(net)
}

impl VmController for Controller {
    fn handle(&self, action: Action) -> ActionResult {
        let mut inner = self.lock();
        match action {
            Action::GetVm => serde_json::to_value(Self::info(&inner))
                .map_err(|e| ApiError::new(500, e.to_string())),
            Action::GetCounters => {
                let running = Self::running(&inner)?;
                serde_json::to_value(running.counters())
                    .map_err(|e| ApiError::new(500, e.to_string()))
            }
            Action::Configure(spec) => self.configure(&mut inner, *spec),
            Action::Boot => self.boot(inner),
            Action::Pause => {
                if inner.state == VmState::Paused {
                    return Err(conflict("the VM is already paused"));
                }
                let running = Self::running(&inner)?;
                running
                    .pause()
                    .map_err(|e| ApiError::new(500, error_chain(&e)))?;
                inner.state = VmState::Paused;
                Ok(Value::Null)
            }
            Action::Resume => {
                if inner.state != VmState::Paused {
                    return Err(conflict(format!(
                        "the VM is not paused (it is {})",
                        state_name(inner.state)
                    )));
                }
                Self::running(&inner)?.resume();
                inner.state = VmState::Running;
                Ok(Value::Null)
            }
            Action::Shutdown => {
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
            Action::Reset => {
                let running = Self::running(&inner)?;
                inner.reset_requested = true;
                running.reset();
                Ok(Value::Null)
            }
            Action::PowerOff => {
                Self::running(&inner)?.power_off();
                Ok(Value::Null)
            }
            Action::AddDisk(spec) => {
                let running = Self::running(&inner)?;
                let id = spec.id.clone();
                let disk = disk_config(spec)?;
                let (id, slot) = running
                    .add_disk(id, &disk)
                    .map_err(|e| bad_request(error_chain(&e)))?;
                Ok(json!({"id": id, "pci": format!("00:{slot:02x}.0")}))
            }
            Action::AddNet(spec) => {
                let running = Self::running(&inner)?;
                let id = spec.id.clone();
                let net = net_config(spec)?;
                let (id, slot) = running
                    .add_net(id, &net)
                    .map_err(|e| bad_request(error_chain(&e)))?;
                Ok(json!({"id": id, "pci": format!("00:{slot:02x}.0")}))
            }
            Action::RemoveDevice(spec) => {
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
            Action::ResizeDisk(spec) => {
                let running = Self::running(&inner)?;
                if running.slot_of(&spec.id).is_none() {
                    return Err(ApiError::new(404, format!("no device called {}", spec.id)));
                }
                if spec.size_bytes == 0 || spec.size_bytes % 512 != 0 {
                    return Err(bad_request("size_bytes must be a positive multiple of 512"));
                }
                running
                    .resize_disk(&spec.id, spec.size_bytes)
                    .map_err(|e| bad_request(error_chain(&e)))?;
                Ok(Value::Null)
            }
        }
    }
}

impl VmObserver for Controller {
    fn booted(&self, vm: Arc<RunningVm>) {
        let mut inner = self.lock();
        inner.running = Some(vm);
        inner.state = VmState::Running;
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
        // configured but not running.
        inner.state = VmState::Configured;
        self.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(json: &str) -> Result<DiskConfig, ApiError> {
        disk_config(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn json_options_are_checked_one_by_one() {
        let d = disk(r#"{"path":"/a,b.img","id":"d","serial":"s1","queues":2,"cache":"none"}"#)
            .unwrap();
        assert_eq!(d.path, std::path::PathBuf::from("/a,b.img"));
        assert_eq!(d.id.as_deref(), Some("d"));
        assert_eq!(d.queues, 2);
        // A value holding a comma cannot smuggle in another option.
        let d = disk(r#"{"path":"x","serial":"s,readonly=on"}"#).unwrap();
        assert_eq!(d.serial.as_deref(), Some("s,readonly=on"));
        assert!(!d.readonly);
        assert!(disk(r#"{"path":"x","id":"d,readonly=on"}"#).is_err());
        assert!(disk(r#"{"path":"x","queues":17}"#)
            .unwrap_err()
            .message
            .contains("1 to 16"));
        assert!(disk(r#"{"path":""}"#).is_err());
        let net = |j: &str| net_config(serde_json::from_str(j).unwrap());
        let n = net(r#"{"tap":"t0,queues=16"}"#).unwrap();
        assert_eq!((n.tap.as_deref(), n.queues), (Some("t0,queues=16"), 1));
        assert_eq!(net(r#"{"queues":4}"#).unwrap().queues, 4);
    }
}
