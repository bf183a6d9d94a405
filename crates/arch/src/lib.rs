//! x86_64 platform setup for Vireo guests.
//!
//! Loads kernels (bzImage and PVH ELF), writes the boot structures a kernel
//! expects (boot_params or hvm_start_info, e820, page tables, GDT), sets up
//! CPUID and MSRs, and builds the ACPI tables. It knows nothing of how the
//! VM runs afterwards.

pub mod acpi;
pub mod boot;
pub mod cpuid;
mod error;
pub mod layout;
pub mod memory;
pub mod regs;
pub mod topology;

pub use error::Error;
