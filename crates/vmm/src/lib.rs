//! The Vireo virtual machine monitor.
//!
//! Assembles a VM from a [`VmConfig`]: guest memory, the KVM VM and its
//! in-kernel interrupt controllers, the platform devices on their buses,
//! ACPI tables, the kernel, and one thread per vCPU; then waits for the
//! guest to power off, reset or crash, or for the user to stop it. It never
//! parses guest data itself: devices and `arch` do.

pub mod api;
pub mod balloon;
pub mod config;
pub mod confinement;
mod console_backend;
mod controller;
mod device_config;
mod error;
pub mod exit_status;
mod io_stops;
mod irqchip;
mod machine;
pub mod memory;
pub mod memory_backend;
mod memory_map;
pub mod numa;
pub mod passed_fd;
mod pci_devices;
pub mod pinning;
mod running;
mod secret;
pub mod signals;
mod vcpu;
mod virtio_devices;

pub use config::{CpuTemplate, KernelSource, VmConfig};
pub use console_backend::{close_console_sockets, hold_consoles};
pub use controller::Controller;
pub use error::{error_chain, Error, Result};
pub use hypervisor::Hypervisor;
pub use machine::{
    is_linux_kernel, max_cpus, run_once, validate, validate_with, Console, Outcome, PreparedVm,
    MAX_CPUS,
};
pub use memory_map::hold_backing_file;
pub use running::{RunningVm, VmObserver};
pub use virtio_devices::{check_inherited_taps, hold_taps};
