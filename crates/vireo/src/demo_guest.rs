//! The demo guest that `vireo demo` boots: a small PVH ELF built from
//! `guests/demo` by `build.rs`. It prints the CPUs it finds in the MADT, the
//! memory map and the command line on the serial console, then `demo: ok`,
//! and powers off.

/// The demo guest's PVH ELF image.
pub static DEMO_KERNEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo.elf"));
