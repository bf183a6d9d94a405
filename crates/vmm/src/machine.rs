//! Assembling one VM from its configuration, running it, and tearing it
//! down when the guest powers off, resets, crashes, or the user stops it.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arch::boot::{load_kernel, BootSource};
use arch::layout;
use devices::acpi_pm::AcpiPm;
use devices::cmos::{Cmos, CmosMemory};
use devices::debugcon::DebugConsole;
use devices::i8042::I8042;
use devices::serial::{Serial, SharedOutput};
use devices::{Bus, Ged, PciHotplug};
use hypervisor::Hypervisor;
use vmm_sys_util::eventfd::EventFd;

use crate::config::{KernelSource, VmConfig};
use crate::error::{Error, Result};
use crate::memory::{create_guest_memory, GuestMemory};
use crate::pci_devices::PciDevices;
use crate::running::{ControlEvents, RunningVm, VmObserver};
use crate::vcpu::{PauseGate, PlatformIo, VcpuCounters, VcpuShared, VcpuStop, VcpuThread};

/// Most vCPUs a guest may have: APIC IDs must fit the MADT's xAPIC entries
/// (255 is the broadcast ID).
pub const MAX_CPUS: u32 = 254;

/// How a VM's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered off.
    PowerOff,
    /// The guest reset the machine.
    Reset,
    /// A host signal (SIGINT, SIGTERM) or the console escape stopped it.
    Stopped,
    /// The guest could not continue; the text says why.
    Crashed(String),
}

/// The host side of the serial console, shared by every boot of a VM.
pub struct Console {
    /// Where guest output goes.
    pub output: SharedOutput,
    /// Where the current boot's UART is, so host input can reach it.
    pub serial: Arc<Mutex<Option<Arc<Mutex<Serial>>>>>,
}

impl Console {
    /// A console writing to `output`.
    pub fn new(output: SharedOutput) -> Self {
        Self {
            output,
            serial: Arc::new(Mutex::new(None)),
        }
    }
}

/// Events that end a boot, waited on by the managing thread.
struct StopEvents {
    power_off: EventFd,
    reset: EventFd,
    vcpu: Arc<VcpuShared>,
}

fn eventfd() -> Result<EventFd> {
    EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Host("eventfd", e))
}

/// A configuration that passed [`validate`], with its disk images open
/// and locked: what a VM boots from.
///
/// The images are opened once, by the check, and never again: every boot
/// of the VM (the first, and each after a reset) uses these, and they stay
/// open, so locked against other writers (`vireo img create`, another VM),
/// for as long as this value, a clone of it or a VM built from it lives.
/// Closing them after the check and reopening them for the boot would
/// leave a moment in which another process could take or replace them.
#[derive(Clone)]
pub struct PreparedVm {
    config: VmConfig,
    /// One per `config.disks`, in the same order.
    disks: Vec<Arc<dyn block::DiskImage>>,
}

impl PreparedVm {
    /// Pair `config` with its disks' open images (one per disk, in order).
    pub(crate) fn new(config: VmConfig, disks: Vec<Arc<dyn block::DiskImage>>) -> Self {
        debug_assert_eq!(config.disks.len(), disks.len());
        Self { config, disks }
    }

    /// The configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// Each disk's configuration with its open image.
    pub(crate) fn disks(
        &self,
    ) -> impl Iterator<Item = (&crate::config::DiskConfig, &Arc<dyn block::DiskImage>)> {
        self.config.disks.iter().zip(&self.disks)
    }

    /// The image this configuration holds open for `disk`'s file, if any:
    /// a new configuration naming the same disk takes it over (opening it
    /// again would conflict with this very lock). An error when it is held
    /// with other options, which only a new open could give.
    fn image_for(
        &self,
        disk: &crate::config::DiskConfig,
    ) -> Result<Option<Arc<dyn block::DiskImage>>> {
        let Some(id) = block::FileId::of(&disk.path) else {
            return Ok(None);
        };
        let Some((held, image)) = self
            .disks()
            .find(|(held, _)| block::FileId::of(&held.path) == Some(id))
        else {
            return Ok(None);
        };
        if (held.readonly, held.cache, held.format) != (disk.readonly, disk.cache, disk.format) {
            return Err(Error::InvalidConfig(format!(
                "disk {} is open in the current configuration with other options \
                 (readonly, cache or format): configure the VM without it first",
                disk.path.display()
            )));
        }
        Ok(Some(image.clone()))
    }
}

impl std::fmt::Debug for PreparedVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedVm")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Check what can be checked before anything is created, and open (and
/// lock) the disks the VM will use; see [`PreparedVm`].
pub fn validate(config: &VmConfig, hv: &Hypervisor) -> Result<PreparedVm> {
    validate_with(config, max_cpus(hv), None)
}

/// Most vCPUs a VM may have on this host.
pub fn max_cpus(hv: &Hypervisor) -> u32 {
    u32::try_from(hv.max_vcpus())
        .unwrap_or(u32::MAX)
        .min(MAX_CPUS)
}

/// [`validate`], given the host's vCPU limit. Disks that `held` (the
/// configuration this one replaces) already has open with the same
/// options are taken over rather than opened again.
pub fn validate_with(config: &VmConfig, max: u32, held: Option<&PreparedVm>) -> Result<PreparedVm> {
    if config.cpus == 0 || config.cpus > max {
        return Err(Error::InvalidConfig(format!(
            "--cpus {} is out of range (1 to {max} on this host)",
            config.cpus
        )));
    }
    if let Some(t) = &config.cpu_topology {
        check_topology(t, config.cpus)?;
    }
    crate::memory::check_size(config.memory)?;
    if let Some(balloon) = &config.balloon {
        crate::balloon::device_config(balloon, config.memory)
            .map_err(|e| Error::InvalidConfig(format!("--balloon: {e}")))?;
        if config.memory_backend.lock {
            // Locked pages cannot be given back: the balloon would take
            // nothing from the host.
            return Err(Error::InvalidConfig(
                "--balloon with --memory-backend lock=on: locked guest memory cannot be given back"
                    .into(),
            ));
        }
    }
    check_placement(config)?;
    // The huge page pool, while it can be seen (a jailed VMM's later boots
    // cannot look). A size the pages cannot make is said at boot, first.
    if let Some(page) = config
        .memory_backend
        .hugepages
        .filter(|p| config.memory.is_multiple_of(p.bytes()))
    {
        let existing_file = matches!(
            &config.memory_backend.kind,
            crate::memory_backend::BackendKind::File(p) if p.is_file()
        );
        if !existing_file {
            crate::memory_backend::check_huge_page_pool(config.memory, page)
                .map_err(Error::InvalidConfig)?;
        }
    }
    // Open the files now so a typo is reported before any host resource
    // (a console socket, a truncated log file) is created. An embedded
    // kernel needs no check, and copying it to a memfd here would be wasted.
    let boot_files = crate::config::BootFiles {
        kernel: match config.kernel {
            KernelSource::Path(_) => Some(Arc::new(open_kernel(&config.kernel)?)),
            KernelSource::Embedded(_) => None,
        },
        initrd: open_initrd(config.initrd.as_deref())?.map(Arc::new),
    };
    // Opening each disk checks its format and takes its lock, so a bad or
    // busy image is reported before the VM exists; it stays open for it.
    let mut seen = std::collections::BTreeSet::new();
    let mut disks = Vec::with_capacity(config.disks.len());
    for disk in &config.disks {
        let key = std::fs::canonicalize(&disk.path).unwrap_or_else(|_| disk.path.clone());
        if !seen.insert(key) {
            return Err(Error::InvalidConfig(format!(
                "--disk {} is given twice (one image cannot back two disks)",
                disk.path.display()
            )));
        }
        let reused = match held {
            Some(held) => held.image_for(disk)?,
            None => None,
        };
        let image = match reused {
            Some(image) => image,
            None => crate::virtio_devices::open_disk(disk)?,
        };
        disks.push(image);
    }
    let config = VmConfig {
        boot_files,
        ..config.clone()
    };
    Ok(PreparedVm::new(config, disks))
}

/// NUMA cells, host nodes and pins, each refused with one line.
fn check_placement(config: &VmConfig) -> Result<()> {
    let invalid = Error::InvalidConfig;
    if let Some(layout) = config.numa_layout().map_err(invalid)? {
        crate::numa::check_host_nodes(&layout).map_err(invalid)?;
        if let Some(page) = config.memory_backend.hugepages {
            crate::numa::huge_page_node_shortfall(&layout, page.bytes(), |n| {
                crate::numa::free_huge_pages_on(n, page.bytes())
            })
            .map_err(invalid)?;
        }
    }
    for pin in &config.vcpu_pins {
        if pin.vcpu >= config.cpus {
            return Err(invalid(format!(
                "--vcpu-pin {}: vCPU {} does not exist (--cpus {})",
                pin.vcpu, pin.vcpu, config.cpus
            )));
        }
        crate::pinning::check_cpus(&pin.cpus, &format!("--vcpu-pin {}", pin.vcpu))
            .map_err(invalid)?;
    }
    if let Some(cpus) = &config.emulator_pin {
        crate::pinning::check_cpus(cpus, "--emulator-pin").map_err(invalid)?;
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in &config.iothreads {
        if !ids.insert(t.id) {
            return Err(invalid(format!("--iothread id={} is given twice", t.id)));
        }
        if let Some(cpus) = &t.cpus {
            crate::pinning::check_cpus(cpus, &format!("--iothread id={}", t.id))
                .map_err(invalid)?;
        }
    }
    for disk in &config.disks {
        if let Some(id) = disk.iothread.filter(|id| !ids.contains(id)) {
            return Err(invalid(format!(
                "--disk {}: iothread={id} names no --iothread",
                disk.path.display()
            )));
        }
    }
    Ok(())
}

/// A topology must account for every vCPU, and its APIC IDs must fit the
/// MADT's xAPIC entries: above 254 a guest needs x2APIC and interrupt
/// remapping to reach them, which Vireo does not offer.
fn check_topology(t: &arch::topology::CpuTopology, cpus: u32) -> Result<()> {
    if t.count() != u64::from(cpus) {
        return Err(Error::InvalidConfig(format!(
            "--cpu-topology {t} makes {} vCPUs, but --cpus is {cpus}",
            t.count()
        )));
    }
    let top = t.apic_ids().into_iter().max().unwrap_or(0);
    if top > MAX_CPUS {
        return Err(Error::InvalidConfig(format!(
            "--cpu-topology {t} needs APIC IDs up to {top}, above the xAPIC limit {MAX_CPUS} \
             (counts that are powers of two waste no IDs)"
        )));
    }
    Ok(())
}

fn open_initrd(path: Option<&Path>) -> Result<Option<File>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let file = open_regular("initrd", path)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        return Err(Error::InvalidConfig(format!(
            "initrd {} is empty",
            path.display()
        )));
    }
    Ok(Some(file))
}

/// Open `path` for reading as the `what` ("kernel", "initrd") of a VM:
/// only a regular file is accepted. The type is checked before the open
/// (opening a FIFO blocks until a writer comes; opening some devices has
/// side effects), and again on the descriptor, which is opened
/// non-blocking in case the path changed in between.
pub fn open_regular(what: &'static str, path: &Path) -> Result<File> {
    let open_error = |source| Error::Open {
        what,
        path: path.to_path_buf(),
        source,
    };
    let not_regular = |t: std::fs::FileType| {
        Error::InvalidConfig(format!(
            "{what} {} is {}, not a regular file",
            path.display(),
            devices::serial_backend::file_kind(t)
        ))
    };
    let meta = std::fs::metadata(path).map_err(open_error)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(open_error)?;
    let meta = file.metadata().map_err(open_error)?;
    if !meta.is_file() {
        return Err(not_regular(meta.file_type()));
    }
    Ok(file)
}

/// Kernel loading errors name the file they are about, which the loader
/// does not know.
fn loader_error(kernel: Option<&Path>, initrd: Option<&Path>, e: arch::Error) -> Error {
    let name = |p: Option<&Path>| p.map_or_else(String::new, |p| format!(" {}", p.display()));
    match e {
        arch::Error::KernelLoad(inner) => Error::InvalidConfig(format!(
            "cannot load kernel{}: {}",
            name(kernel),
            crate::error::error_chain(&inner)
        )),
        arch::Error::NotAKernel | arch::Error::UnsupportedKernel(_) => {
            Error::InvalidConfig(format!("kernel{}: {e}", name(kernel)))
        }
        arch::Error::InitrdDoesNotFit { .. } | arch::Error::InitrdRead(_) => Error::InvalidConfig(
            format!("initrd{}: {}", name(initrd), crate::error::error_chain(&e)),
        ),
        other => Error::Arch(other),
    }
}

/// Whether `path` holds a Linux kernel (a bzImage, or an ELF vmlinux,
/// which carries an ELF note owned by "Linux") rather than a small guest
/// such as the project's own. Anything unreadable counts as not Linux.
pub fn is_linux_kernel(path: &Path) -> bool {
    let Ok(mut file) = open_regular("kernel", path) else {
        return false;
    };
    match arch::boot::kernel_format(&mut file) {
        Ok(arch::boot::KernelFormat::BzImage) => true,
        Ok(arch::boot::KernelFormat::Elf) => has_linux_note(&file).unwrap_or(false),
        Err(_) => false,
    }
}

/// Look through an ELF64 file's PT_NOTE segments for a note named "Linux".
fn has_linux_note(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    const PT_NOTE: u32 = 4;
    /// Notes read per segment at most: Linux's are a few hundred bytes.
    const MAX_NOTES: u64 = 64 << 10;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)?;
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |b: &[u8], o: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[o..o + 8]);
        u64::from_le_bytes(v)
    };
    // ELFCLASS64, little-endian: what linux-loader boots.
    if header[4] != 2 || header[5] != 1 {
        return Ok(false);
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        u16_at(&header, 0x36),
        u16_at(&header, 0x38),
    );
    if phentsize < 56 {
        return Ok(false);
    }
    for i in 0..u64::from(phnum.min(64)) {
        let mut ph = [0u8; 56];
        file.read_exact_at(&mut ph, phoff.saturating_add(i * u64::from(phentsize)))?;
        if u32_at(&ph, 0) != PT_NOTE {
            continue;
        }
        let len = usize::try_from(u64_at(&ph, 0x20).min(MAX_NOTES)).unwrap_or(0);
        let mut notes = vec![0u8; len];
        file.read_exact_at(&mut notes, u64_at(&ph, 8))?;
        let mut at = 0usize;
        while at + 12 <= notes.len() {
            let namesz = u32_at(&notes, at) as usize;
            let descsz = u32_at(&notes, at + 4) as usize;
            let name = notes.get(at + 12..at + 12 + namesz).unwrap_or_default();
            if name == b"Linux\0" {
                return Ok(true);
            }
            let pad = |n: usize| n.div_ceil(4) * 4;
            at = at + 12 + pad(namesz) + pad(descsz);
        }
    }
    Ok(false)
}

/// A boot's handle on a file `validate` opened, read from its start.
fn rewound(file: &File) -> Result<File> {
    let mut file = file
        .try_clone()
        .map_err(|e| Error::Host("duplicating the kernel or initrd descriptor", e))?;
    file.rewind()
        .map_err(|e| Error::Host("rewinding the kernel or initrd", e))?;
    Ok(file)
}

fn open_kernel(source: &KernelSource) -> Result<File> {
    match source {
        KernelSource::Path(path) => {
            let mut file = open_regular("kernel", path)?;
            arch::boot::kernel_format(&mut file).map_err(|e| loader_error(Some(path), None, e))?;
            Ok(file)
        }
        KernelSource::Embedded(bytes) => {
            // linux-loader reads from a file; an anonymous memfd avoids a
            // temporary file on disk.
            // SAFETY: the name is a valid NUL-terminated string.
            let fd = unsafe { libc::memfd_create(c"vireo-kernel".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(Error::Host("memfd_create", std::io::Error::last_os_error()));
            }
            // SAFETY: `fd` is a freshly created descriptor we own.
            let mut file = unsafe { File::from_raw_fd(fd) };
            file.write_all(bytes)
                .and_then(|()| file.rewind())
                .map_err(|e| Error::Host("memfd write", e))?;
            Ok(file)
        }
    }
}

/// Build the VM `prepared` describes, on its open disks, and run it until
/// it stops. The caller keeps a clone of `prepared` (or, with the API,
/// [`RunningVm::current_config`]) for the next boot, so the disks stay
/// locked across a reset.
///
/// `stop` is written by signal handlers or the console escape to ask for an
/// orderly stop.
pub fn run_once(
    prepared: PreparedVm,
    hv: &Hypervisor,
    console: &Console,
    stop: &EventFd,
    observer: Option<&dyn VmObserver>,
) -> Result<Outcome> {
    // Checked, and the kernel, initrd and disks opened, by `validate`.
    let config = prepared.config.clone();
    let config = &config;
    // First, so every thread this boot spawns (device workers, I/O
    // workers) inherits it; the API's and the console's threads, which
    // exist already, are pinned with the main thread.
    if let Some(cpus) = &config.emulator_pin {
        crate::pinning::pin_emulator(cpus, &[])
            .map_err(|e| Error::Host("pinning the emulator threads", e))?;
    }
    let mut kernel = match &config.boot_files.kernel {
        Some(file) => rewound(file)?,
        None => open_kernel(&config.kernel)?,
    };
    let mut initrd = match &config.boot_files.initrd {
        Some(file) => Some(rewound(file)?),
        None => open_initrd(config.initrd.as_deref())?,
    };
    let numa = config.numa_layout().map_err(Error::InvalidConfig)?;
    let mem = create_guest_memory(config.memory, &config.memory_backend, numa.as_ref())?;

    let vm = Arc::new(hv.create_vm()?);
    vm.register_memory(&mem)?;
    let mut mmio = Bus::new();
    let ioapic = crate::irqchip::create(&vm, config, &mut mmio)?;

    // Platform devices.
    let events = StopEvents {
        power_off: eventfd()?,
        reset: eventfd()?,
        vcpu: Arc::new(VcpuShared {
            stopping: false.into(),
            stop: Mutex::new(None),
            stop_evt: eventfd()?,
            pause: PauseGate::default(),
            ending: Arc::default(),
        }),
    };
    let clone = |e: &EventFd| e.try_clone().map_err(|e| Error::Host("eventfd clone", e));
    let serial_irq = eventfd()?;
    vm.register_irqfd(&serial_irq, layout::COM1_IRQ)?;
    let serial = Arc::new(Mutex::new(Serial::new(serial_irq, console.output.clone())));
    let mut pio = Bus::new();
    pio.insert(
        serial.clone(),
        u64::from(layout::COM1_PORT),
        devices::serial::SERIAL_PORT_RANGE_LEN,
    )?;
    pio.insert(
        Arc::new(Mutex::new(
            I8042::new(clone(&events.reset)?).with_ending_latch(events.vcpu.ending.clone()),
        )),
        u64::from(layout::I8042_DATA_PORT),
        devices::i8042::I8042_RANGE_LEN,
    )?;
    let low_mem = arch::memory::low_ram_end(config.memory);
    let high_mem = config.memory - low_mem;
    pio.insert(
        Arc::new(Mutex::new(Cmos::new(CmosMemory {
            below_4g: low_mem,
            above_4g: high_mem,
        }))),
        u64::from(layout::CMOS_PORT),
        devices::cmos::CMOS_RANGE_LEN,
    )?;
    mmio.insert(
        Arc::new(Mutex::new(
            AcpiPm::new(
                clone(&events.power_off)?,
                clone(&events.reset)?,
                layout::ACPI_S5_SLEEP_TYPE,
                layout::ACPI_RESET_VALUE,
            )
            .with_ending_latch(events.vcpu.ending.clone()),
        )),
        layout::ACPI_PM_MMIO_START,
        layout::ACPI_PM_MMIO_SIZE,
    )?;
    mmio.insert(
        Arc::new(Mutex::new(DebugConsole::new(console.output.clone()))),
        layout::DEBUGCON_MMIO_START,
        layout::DEBUGCON_MMIO_SIZE,
    )?;
    // ACPI events: the power button and PCI hot-plug, through the GED.
    let ged_irq = eventfd()?;
    vm.register_irqfd(&ged_irq, layout::GED_IRQ)?;
    let ged = Ged::new(ged_irq);
    mmio.insert(
        Arc::new(Mutex::new(ged.clone())),
        layout::GED_MMIO_START,
        layout::GED_MMIO_SIZE,
    )?;
    let hotplug = PciHotplug::new().map_err(|e| Error::Host("hot-plug eventfd", e))?;
    mmio.insert(
        Arc::new(Mutex::new(hotplug.clone())),
        layout::PCI_HOTPLUG_MMIO_START,
        layout::PCI_HOTPLUG_MMIO_SIZE,
    )?;
    let mut pci = PciDevices::new(vm.clone(), mem.clone(), config.memory)?;
    // A disk may stop the VM only when a client can resume it.
    let io_stops = crate::io_stops::IoStops::new()?;
    crate::virtio_devices::add_virtio_devices(&prepared, &mut pci, observer.map(|_| &io_stops))?;
    // From here the devices hold the images: one the API removes while
    // the VM runs is let go at once.
    drop(prepared);
    pci.attach(&mut pio, &mut mmio)?;
    let io = Arc::new(PlatformIo { pio, mmio, ioapic });

    // Firmware tables and the kernel.
    let topology = config.topology();
    let rsdp = arch::acpi::create_acpi_tables(
        &mem,
        &arch::acpi::AcpiConfig {
            num_cpus: config.cpus,
            apic_ids: topology.apic_ids(),
            numa: numa
                .as_ref()
                .map(|n| crate::numa::acpi_tables(n, config.cpus)),
            pci: Some(pci.acpi()),
            ged: Some(arch::acpi::GedConfig::standard(true)),
            legacy_pic: config.irqchip == hypervisor::IrqchipMode::Kernel,
            ..Default::default()
        },
    )
    .map_err(arch::Error::from)?;
    let entry = load_kernel(
        &mem,
        config.memory,
        BootSource {
            kernel: &mut kernel,
            initrd: initrd.as_mut(),
            cmdline: &config.cmdline,
        },
        rsdp,
    )
    .map_err(|e| {
        let kernel = match &config.kernel {
            KernelSource::Path(p) => Some(p.as_path()),
            KernelSource::Embedded(_) => None,
        };
        loader_error(kernel, config.initrd.as_deref(), e)
    })?;

    // vCPUs: all get CPUID, MSRs, FPU and LINT wiring; only the BSP gets
    // boot registers. APs wait for INIT-SIPI from the guest.
    let supported = hv.supported_cpuid()?;
    let mut vcpus = Vec::with_capacity(config.cpus as usize);
    for id in 0..config.cpus {
        let vcpu = vm.create_vcpu(topology.apic_id(id))?;
        let cpuid = arch::cpuid::vcpu_cpuid(&supported, id, &topology, config.cpu_template)?;
        arch::cpuid::set_vcpu_cpuid(&vcpu, &cpuid)?;
        arch::regs::setup_msrs(&vcpu)?;
        arch::regs::setup_fpu(&vcpu)?;
        arch::regs::setup_lint(&vcpu)?;
        if id == 0 {
            arch::regs::setup_boot_vcpu(&vcpu, &mem, &entry)?;
        }
        vcpus.push(vcpu);
    }

    *lock(&console.serial) = Some(serial);
    let boot = Boot {
        config,
        pci,
        acpi_events: (ged, hotplug),
        io: &io,
        mem: &mem,
        events: &events,
        stop,
        observer,
        io_stops,
    };
    let result = run_vcpus(vcpus, boot);
    *lock(&console.serial) = None;
    result
}

/// What `run_vcpus` needs besides the vCPUs.
struct Boot<'a> {
    config: &'a VmConfig,
    pci: PciDevices,
    acpi_events: (Ged, PciHotplug),
    io: &'a Arc<PlatformIo>,
    mem: &'a GuestMemory,
    events: &'a StopEvents,
    stop: &'a EventFd,
    observer: Option<&'a dyn VmObserver>,
    io_stops: Arc<crate::io_stops::IoStops>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_vcpus(vcpus: Vec<hypervisor::Vcpu>, boot: Boot<'_>) -> Result<Outcome> {
    let events = boot.events;
    // Held from before the threads exist, so a VM started paused runs not
    // one guest instruction until it is resumed.
    let hold = boot.observer.is_some_and(|o| o.take_start_paused());
    if hold {
        events.vcpu.pause.request();
    }
    let mut threads = Vec::with_capacity(vcpus.len());
    let mut counters = Vec::with_capacity(vcpus.len());
    let mut spawn_error = None;
    for (index, vcpu) in (0u32..).zip(vcpus) {
        let c = Arc::new(VcpuCounters::default());
        let shared = events.vcpu.clone();
        let pin = boot.config.vcpu_pin(index);
        match VcpuThread::spawn(
            vcpu,
            index,
            pin,
            boot.io.clone(),
            boot.mem.clone(),
            shared,
            c.clone(),
        ) {
            Ok(t) => {
                threads.push(t);
                counters.push(c);
            }
            Err(e) => {
                spawn_error = Some(Error::SpawnVcpu(e));
                break;
            }
        }
    }
    // The control API's view of the VM; it holds the PCI devices, which
    // live until the last handle goes.
    let running = match spawn_error {
        None => Some(Arc::new(RunningVm::new(
            boot.config.clone(),
            events.vcpu.clone(),
            threads.iter().map(|t| (t.pthread(), t.tid())).collect(),
            counters,
            boot.pci,
            ControlEvents {
                ged: boot.acpi_events.0,
                hotplug: boot.acpi_events.1,
                power_off: clone_eventfd(&events.power_off)?,
                reset: clone_eventfd(&events.reset)?,
                io_stops: boot.io_stops.clone(),
            },
        ))),
        Some(_) => None,
    };
    if let (true, Some(running)) = (hold, &running) {
        // Parks every vCPU (at once: none has entered the guest) and
        // quiesces the devices, as a pause from the API does. Should that
        // fail, pause() lets them go and the VM is reported running.
        if let Err(e) = running.pause() {
            tracing::warn!("the VM could not be held paused at boot: {e}");
        }
    }
    if let (Some(observer), Some(running)) = (boot.observer, &running) {
        observer.booted(running.clone());
    }
    let outcome = match spawn_error {
        None => wait_for_stop(
            events,
            boot.stop,
            running.as_deref(),
            &boot.io_stops,
            boot.observer,
        ),
        Some(_) => Outcome::Stopped,
    };
    if let Some(observer) = boot.observer {
        observer.stopping();
    }
    events.vcpu.stopping.store(true, Ordering::Release);
    events.vcpu.pause.wake_all();
    for t in &threads {
        t.kick();
    }
    for t in threads {
        t.join();
    }
    // Devices stop after the vCPUs: nothing can reach them any more.
    drop(running);
    match spawn_error {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

fn clone_eventfd(e: &EventFd) -> Result<EventFd> {
    e.try_clone().map_err(|e| Error::Host("eventfd clone", e))
}

/// Block until something ends this boot; meanwhile pause the VM when a
/// disk's error policy asks for it.
fn wait_for_stop(
    events: &StopEvents,
    stop: &EventFd,
    running: Option<&RunningVm>,
    io_stops: &crate::io_stops::IoStops,
    observer: Option<&dyn VmObserver>,
) -> Outcome {
    let mut fds = vec![
        &events.power_off,
        &events.reset,
        &events.vcpu.stop_evt,
        stop,
        io_stops.event(),
    ];
    // The guest's hot-plug ejections complete device removals here.
    if let Some(running) = running {
        fds.push(running.eject_event());
    }
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|e| libc::pollfd {
            fd: e.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `pollfds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Outcome::Crashed(format!("waiting for VM events failed: {err}"));
        }
        let ready = |i: usize| pollfds[i].revents & libc::POLLIN != 0;
        // A vCPU's report comes first: if the guest crashed while also
        // poking the power-off register, the crash is what matters.
        if ready(2) {
            let stop = lock(&events.vcpu.stop).clone();
            return match stop {
                Some(VcpuStop::PowerOff) => Outcome::PowerOff,
                Some(VcpuStop::Reset) => Outcome::Reset,
                Some(VcpuStop::Crash(why)) => Outcome::Crashed(why),
                None => continue,
            };
        }
        if ready(0) {
            return Outcome::PowerOff;
        }
        if ready(1) {
            return Outcome::Reset;
        }
        if ready(3) {
            return Outcome::Stopped;
        }
        if ready(4) {
            if let (Some(why), Some(observer)) = (io_stops.take(), observer) {
                observer.io_stopped(why);
            }
        }
        if pollfds.len() > 5 && ready(5) {
            if let Some(running) = running {
                running.complete_ejections();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 header, one PT_NOTE program header and one note owned by
    /// `owner`.
    fn elf_with_note(owner: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 120];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little-endian
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let namesz = owner.len() + 1;
        let note_len = 12 + namesz.div_ceil(4) * 4 + 4;
        f[64..68].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        f[72..80].copy_from_slice(&120u64.to_le_bytes()); // p_offset
        f[96..104].copy_from_slice(&(note_len as u64).to_le_bytes()); // p_filesz
        f.extend_from_slice(&u32::try_from(namesz).unwrap().to_le_bytes());
        f.extend_from_slice(&4u32.to_le_bytes());
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(owner);
        f.push(0);
        f.resize(f.len().div_ceil(4) * 4, 0);
        f.extend_from_slice(&[1, 2, 3, 4]);
        f
    }

    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("vireo-machine-{name}-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn linux_kernels_are_told_from_small_guests() {
        let linux = temp_file("linux.elf", &elf_with_note(b"Linux"));
        let xen = temp_file("xen.elf", &elf_with_note(b"Xen"));
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let bz = temp_file("bzImage", &bz);
        let junk = temp_file("junk", b"not a kernel at all");
        assert!(is_linux_kernel(&linux));
        assert!(is_linux_kernel(&bz));
        assert!(!is_linux_kernel(&xen), "a PVH guest that is not Linux");
        assert!(!is_linux_kernel(&junk));
        assert!(!is_linux_kernel(Path::new("/nonexistent/k")));
        for p in [linux, xen, bz, junk] {
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = std::env::temp_dir();
        let err = open_regular("kernel", &dir).unwrap_err().to_string();
        assert!(err.ends_with("is a directory, not a regular file"), "{err}");
        let err = open_regular("initrd", Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "initrd /dev/null is a character device, not a regular file"
        );
        let empty = temp_file("empty", b"");
        let err = open_initrd(Some(&empty)).unwrap_err().to_string();
        assert!(err.ends_with("is empty"), "{err}");
        std::fs::remove_file(empty).unwrap();
    }
}
