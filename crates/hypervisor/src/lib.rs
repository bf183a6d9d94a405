//! The KVM boundary.
//!
//! Everything Vireo asks of `/dev/kvm` goes through this crate: opening it
//! and checking what it can do, creating a VM with its in-kernel interrupt
//! controllers (all of KVM's, or only the LAPICs of a split irqchip), registering guest memory, wiring irqfds, and running vCPUs.
//! It hides `kvm-ioctls` behind small types so the rest of the VMM speaks of
//! VM exits, not ioctls. It knows nothing about boot protocols or devices.

mod cpuid_cache;
mod error;
mod irq;
mod kick;
mod system;
mod vcpu;
mod vm;

pub use error::{Error, Result};
pub use irq::IOAPIC_PINS;
pub use kick::{install_kick_signal_handler, kick_signal};
pub use kvm_bindings;
pub use system::Hypervisor;
pub use vcpu::{InternalError, IoHandler, Vcpu, VmExit};
pub use vm::{IrqchipMode, PitMode, Vm};
