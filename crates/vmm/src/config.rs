//! What a VM is made of, as the user asked for it.

use std::path::PathBuf;

pub use arch::cpuid::CpuTemplate;

pub use crate::device_config::{CacheMode, ConsoleConfig, DiskConfig, NetConfig};

/// Command line given to kernels when the user gives none: the serial
/// console, reboot through the i8042, and no hang on panic.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// Default guest memory.
pub const DEFAULT_MEMORY: u64 = 128 << 20;

/// Where the kernel comes from.
#[derive(Debug, Clone)]
pub enum KernelSource {
    /// A file on the host.
    Path(PathBuf),
    /// An image held in memory (the embedded demo guest).
    Embedded(&'static [u8]),
}

/// A VM's configuration.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The kernel (bzImage or ELF, PVH or not).
    pub kernel: KernelSource,
    /// An initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Number of vCPUs.
    pub cpus: u32,
    /// CPU feature template.
    pub cpu_template: CpuTemplate,
    /// Restart the VM when the guest resets, instead of exiting.
    pub reboot: bool,
    /// virtio-blk disks, in PCI slot order.
    pub disks: Vec<DiskConfig>,
    /// virtio-net cards.
    pub nets: Vec<NetConfig>,
    /// virtio-console devices (one port each).
    pub consoles: Vec<ConsoleConfig>,
    /// Whether the VM has a virtio-rng device.
    pub rng: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: KernelSource::Embedded(&[]),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            memory: DEFAULT_MEMORY,
            cpus: 1,
            cpu_template: CpuTemplate::Host,
            reboot: false,
            disks: Vec::new(),
            nets: Vec::new(),
            consoles: Vec::new(),
            rng: false,
        }
    }
}

/// Parse a memory size the way QEMU's `-m` does: a bare number is MiB;
/// `K`, `M`, `G`, `T` suffixes (optionally followed by `B` or `iB`) are
/// binary multiples.
pub fn parse_memory_size(s: &str) -> Result<u64, String> {
    parse_size(s, 20, "memory size", "512M, 4G")
}

/// Parse a size with an optional binary `K`, `M`, `G` or `T` suffix
/// (optionally followed by `B` or `iB`); a bare number is in units of
/// `1 << bare_shift` bytes. `what` and `examples` go into the error.
pub fn parse_size(s: &str, bare_shift: u32, what: &str, examples: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("invalid {what} '{s}' (examples: {examples})");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => bare_shift,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{what} '{s}' is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("128M"), Ok(128 << 20));
        assert_eq!(parse_memory_size("4G"), Ok(4 << 30));
        assert_eq!(parse_memory_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_memory_size("512"), Ok(512 << 20));
        assert_eq!(parse_memory_size("65536k"), Ok(64 << 20));
        assert!(parse_memory_size("0").is_err());
        assert!(parse_memory_size("12X").is_err());
        assert!(parse_memory_size("M").is_err());
        assert!(parse_memory_size("99999999999T").is_err());
    }
}
