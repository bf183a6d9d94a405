//! What a VM is made of, as the user asked for it.

use std::path::PathBuf;

pub use arch::cpuid::CpuTemplate;
pub use arch::topology::CpuTopology;

pub use crate::device_config::{CacheMode, ConsoleConfig, DiskConfig, NetConfig};
pub use crate::secret::{resolve_secrets, SecretConfig, SecretSource, SecretText};

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
    /// What backs guest RAM (anonymous memory unless `--memory-backend`).
    pub memory_backend: crate::memory_backend::MemoryBackend,
    /// Number of vCPUs.
    pub cpus: u32,
    /// CPU feature template.
    pub cpu_template: CpuTemplate,
    /// Sockets, dies, cores and threads (`--cpu-topology`); `None` is one
    /// socket of `cpus` cores with APIC ID = vCPU index.
    pub cpu_topology: Option<CpuTopology>,
    /// Guest NUMA cells (`--numa`); empty: one node.
    pub numa: Vec<crate::numa::NumaCell>,
    /// Distances between cells (`--numa-distance`); the rest default.
    pub numa_distances: Vec<crate::numa::NumaDistance>,
    /// Host CPUs of each pinned vCPU (`--vcpu-pin`).
    pub vcpu_pins: Vec<crate::pinning::VcpuPin>,
    /// Host CPUs of every thread that is not a vCPU (`--emulator-pin`),
    /// except those of disks on a pinned I/O thread.
    pub emulator_pin: Option<Vec<usize>>,
    /// I/O threads disks may name (`--iothread`).
    pub iothreads: Vec<crate::pinning::IoThread>,
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
    /// A virtio-balloon device, and how it starts.
    pub balloon: Option<crate::balloon::BalloonConfig>,
    /// Where the interrupt controllers live (`--irqchip`).
    pub irqchip: hypervisor::IrqchipMode,
    /// The in-kernel PIT, if asked for (`--pit`); needs
    /// [`hypervisor::IrqchipMode::Kernel`].
    pub pit: Option<hypervisor::PitMode>,
    /// The kernel and initrd files, once [`crate::validate`] has opened
    /// them: every boot reads these, never the paths again (a jailed VMM
    /// could not reach them, and the paths could name other files by
    /// then). Empty in a configuration not yet validated.
    pub boot_files: BootFiles,
}

/// The open kernel and initrd of a validated configuration, shared by its
/// copies.
#[derive(Clone, Default)]
pub struct BootFiles {
    pub(crate) kernel: Option<std::sync::Arc<std::fs::File>>,
    pub(crate) initrd: Option<std::sync::Arc<std::fs::File>>,
}

impl std::fmt::Debug for BootFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootFiles")
            .field("kernel", &self.kernel.is_some())
            .field("initrd", &self.initrd.is_some())
            .finish()
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: KernelSource::Embedded(&[]),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_string(),
            memory: DEFAULT_MEMORY,
            memory_backend: Default::default(),
            cpus: 1,
            cpu_template: CpuTemplate::Host,
            cpu_topology: None,
            numa: Vec::new(),
            numa_distances: Vec::new(),
            vcpu_pins: Vec::new(),
            emulator_pin: None,
            iothreads: Vec::new(),
            reboot: false,
            disks: Vec::new(),
            nets: Vec::new(),
            consoles: Vec::new(),
            rng: false,
            balloon: None,
            irqchip: hypervisor::IrqchipMode::Split,
            pit: None,
            boot_files: BootFiles::default(),
        }
    }
}

impl VmConfig {
    /// The CPU topology the guest sees: `--cpu-topology`, or one socket of
    /// `cpus` single-threaded cores.
    pub fn topology(&self) -> CpuTopology {
        self.cpu_topology
            .unwrap_or_else(|| CpuTopology::flat(self.cpus))
    }

    /// The checked NUMA layout, `None` without `--numa`.
    pub fn numa_layout(&self) -> Result<Option<crate::numa::NumaLayout>, String> {
        crate::numa::layout(
            &self.numa,
            &self.numa_distances,
            self.cpus,
            self.memory,
            self.memory_backend.hugepages.map(|p| p.bytes()),
        )
    }

    /// The host CPUs of the I/O thread `disk` names, if it names a pinned one.
    pub fn io_cpus(&self, disk: &DiskConfig) -> Option<std::sync::Arc<[usize]>> {
        let id = disk.iothread?;
        self.iothreads
            .iter()
            .find(|t| t.id == id)
            .and_then(|t| t.cpus.as_deref())
            .map(std::sync::Arc::from)
    }

    /// The host CPUs `--vcpu-pin` gives vCPU `index`, if any (the last
    /// pin of a vCPU given twice wins).
    pub fn vcpu_pin(&self, index: u32) -> Option<&[usize]> {
        self.vcpu_pins
            .iter()
            .rev()
            .find(|p| p.vcpu == index)
            .map(|p| p.cpus.as_slice())
    }
}

/// The MAC of a card given without `mac=`: QEMU's and libvirt's prefix
/// `52:54:00` (locally administered, unicast) and three bytes from a
/// random number drawn once per process, mixed with the card's `id`. So
/// two VMs started alike still get different MACs (as libvirt draws a
/// random one per domain), while one VM keeps each card's MAC across
/// guest reboots.
pub fn default_mac(id: &str) -> [u8; 6] {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(random_u64);
    // FNV-1a over the seed and the id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x52, 0x54, 0x00, b[5], b[6], b[7]]
}

/// Eight bytes from the kernel's random source; the clock and the process
/// id if it cannot give them (a MAC needs to differ, not to be secret).
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(n).is_ok_and(|n| n == buf.len()) {
        return u64::from_le_bytes(buf);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Truncation is fine: any bits that differ between processes do.
    #[allow(clippy::cast_possible_truncation)]
    let nanos = nanos as u64;
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Parse a memory size the way QEMU's `-m` does: [`parse_size`] with a
/// bare number in MiB; zero is refused.
pub fn parse_memory_size(s: &str) -> Result<u64, String> {
    match parse_size(s, 20, "memory size", "512M, 1.5G, 4G")? {
        0 => Err(format!("memory size '{s}' is zero")),
        n => Ok(n),
    }
}

/// The one size grammar of every Vireo flag and `vireo img`: a decimal
/// number, with an optional fraction, then an optional unit `B`, `K`, `M`,
/// `G`, `T`, `P` or `E` (any case; binary multiples, so `K` is 1024),
/// which may be followed by `B` or `iB` (`4GiB`, `4GB`, `4G` are the same).
/// A bare number is in units of `1 << bare_shift` bytes (bytes for
/// `vireo img`, MiB for `--memory`, as qemu-img and QEMU's `-m` read
/// them). A fraction needs a unit, and the result is truncated to whole
/// bytes (`1.5G` is 1610612736). `what` and `examples` go into the error.
pub fn parse_size(s: &str, bare_shift: u32, what: &str, examples: &str) -> Result<u64, String> {
    let bad = || format!("invalid {what} '{s}' (examples: {examples})");
    let too_big = || format!("{what} '{s}' is out of range");
    let t = s.trim();
    let number_end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(number_end);
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    let all_digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return Err(bad());
    }
    let unit = unit.to_ascii_uppercase();
    let letter = unit
        .strip_suffix("IB")
        .filter(|l| !l.is_empty() && *l != "B")
        .or_else(|| unit.strip_suffix('B').filter(|l| !l.is_empty()))
        .unwrap_or(&unit);
    let shift: u32 = match letter {
        "" => {
            if fraction.is_some() {
                return Err(format!(
                    "invalid {what} '{s}': a fraction needs a unit (examples: {examples})"
                ));
            }
            bare_shift
        }
        "B" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return Err(bad()),
    };
    let whole: u128 = whole.parse().map_err(|_| too_big())?;
    let mut bytes = whole.checked_shl(shift).ok_or_else(too_big)?;
    if let Some(fraction) = fraction.filter(|f| !f.is_empty()) {
        // Exact: digits past the 18th cannot change a result below 2^64.
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| bad())?;
        let exp = u32::try_from(digits.len()).map_err(|_| bad())?;
        bytes += (numerator << shift) / 10u128.pow(exp);
    }
    u64::try_from(bytes).map_err(|_| too_big())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_macs_are_qemu_style_and_stable_per_card_in_one_process() {
        let a = default_mac("net0");
        assert_eq!(a[..3], [0x52, 0x54, 0x00]);
        assert_eq!(a, default_mac("net0"));
        assert_ne!(a, default_mac("net1"));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("128M"), Ok(128 << 20));
        assert_eq!(parse_memory_size("4G"), Ok(4 << 30));
        assert_eq!(parse_memory_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_memory_size("4gb"), Ok(4 << 30));
        assert_eq!(parse_memory_size("512"), Ok(512 << 20));
        assert_eq!(parse_memory_size("65536k"), Ok(64 << 20));
        assert_eq!(parse_memory_size("1.5G"), Ok(3 << 29));
        assert!(parse_memory_size("0").is_err());
        assert!(parse_memory_size("12X").is_err());
        assert!(parse_memory_size("M").is_err());
        assert!(parse_memory_size("1.5")
            .unwrap_err()
            .contains("needs a unit"));
        assert!(parse_memory_size("99999999999T").is_err());
    }

    #[test]
    fn one_size_grammar() {
        let bytes = |s: &str| parse_size(s, 0, "size", "1G");
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(bytes("512"), Ok(512));
        assert_eq!(bytes("512B"), Ok(512));
        assert_eq!(bytes("64k"), Ok(64 << 10));
        assert_eq!(bytes("64KiB"), Ok(64 << 10));
        assert_eq!(bytes("1.5M"), Ok(3 << 19));
        assert_eq!(bytes("0.5k"), Ok(512));
        assert_eq!(bytes("1.0001k"), Ok(1024));
        assert_eq!(bytes(" 2T "), Ok(2 << 40));
        assert_eq!(bytes("1P"), Ok(1 << 50));
        assert_eq!(bytes("8E"), Ok(8 << 60));
        assert_eq!(bytes("15.99999999999999999999E"), Ok(u64::MAX - 1));
        for bad in [
            "",
            "-1",
            "1..5G",
            ".5G",
            "1.G5",
            "1e3",
            "0x10",
            "G",
            "1Q",
            "1KB5",
            "1iB",
            "16E",
            "99999999999999999999999999999999999999999",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?} accepted");
        }
    }
}
