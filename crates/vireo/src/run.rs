//! `vireo run` and `vireo demo`: start one VM and map how it ended to an
//! exit code.
//!
//! Exit codes: 0 when the guest powered off or reset (or the user stopped
//! the VM), 1 when the guest crashed or the VMM failed while it ran, 2 when
//! the VM could not be built from what the user gave.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use devices::serial_input::{spawn_input_thread, SerialInput};
use devices::RawTerminal;
use vmm::api::ApiServer;
use vmm::exit_status::ExitStatus;
use vmm::{Console, Controller, Hypervisor, KernelSource, Outcome, VmConfig};
use vmm_sys_util::eventfd::EventFd;

use crate::cli::{DemoArgs, MachineArgs, RunArgs};

/// Exit code for input errors (as clap uses for usage errors).
const EXIT_USAGE: u8 = 2;
/// Exit code for a guest crash or a runtime failure.
const EXIT_FAILURE: u8 = 1;

/// `early_keeper` is the keeper `main` forked before parsing, for a
/// `--jail` it saw among the arguments.
pub fn run_command(mut args: RunArgs, early_keeper: Option<jail::Keeper>) -> ExitCode {
    // First, before this process opens descriptors of its own.
    if let Err(e) = vmm::check_inherited_taps(&args.net) {
        report(&e);
        return ExitCode::from(EXIT_USAGE);
    }
    // A descriptor is one card's TAP or one secret, not both.
    for secret in &args.secret {
        if let vmm::config::SecretSource::Fd(fd) = secret.source {
            if args.net.iter().any(|n| n.fd == Some(fd)) {
                eprintln!(
                    "vireo: --secret id={}: fd={fd} is also a --net card's TAP",
                    secret.id
                );
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    // Every secret is read (and an inherited one's descriptor closed)
    // now, long before the VMM confines itself.
    if let Err(e) = vmm::config::resolve_secrets(&mut args.disk, &args.secret) {
        eprintln!("vireo: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Err(e) = check_socket_paths_differ(&args) {
        eprintln!("vireo: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.paused && args.api_socket.is_none() {
        eprintln!("vireo: --paused needs --api-socket (nothing else could resume the VM)");
        return ExitCode::from(EXIT_USAGE);
    }
    if args.api_socket.is_none() && args.disk.iter().any(|d| d.may_stop()) {
        eprintln!(
            "vireo: werror=stop, werror=enospc and rerror=stop need --api-socket (they pause the VM, and nothing else could resume it)"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(path) = &args.exit_status {
        // Checked now: a path that can never take the status is the
        // user's mistake, said before the VM runs rather than after.
        if let Err(e) = vmm::exit_status::check_path(path) {
            eprintln!("vireo: --exit-status {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let mut ending = Ending {
        paused: args.paused,
        exit_status: args.exit_status.clone(),
        seccomp: args.seccomp,
        jail: None,
        disk_drivers: match (&args.disk_drivers, &args.api_socket) {
            (Some(listed), _) => DriverPreload::Required(listed.0.clone()),
            // The API may add a disk of any kind later.
            (None, Some(_)) => DriverPreload::IfInstalled(block::NETWORK_DRIVERS.to_vec()),
            (None, None) => DriverPreload::IfInstalled(Vec::new()),
        },
    };
    if args.jail.is_none() && early_keeper.is_some() {
        // main saw `--jail` where the parser found none: never seen, but
        // a VMM in a PID namespace without a jail is not what was asked.
        eprintln!("vireo: --jail was seen among the arguments but not parsed as the flag");
        return ExitCode::from(EXIT_USAGE);
    }
    if let Some(dir) = &args.jail {
        let mut jail = jail::Jail {
            dir: dir.clone(),
            uid: args.uid,
            gid: args.gid,
        };
        if let Err(e) = check_jail(&mut jail, &args) {
            eprintln!("vireo: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        // From here this process is the VMM, PID 1 of its own PID
        // namespace; its parent, the keeper, waits for it.
        let plan = jail::KeeperPlan {
            exit_status: args.exit_status.clone(),
            remove_on_exit: socket_paths(&args)
                .into_iter()
                .map(|(_, p)| p.to_path_buf())
                .collect(),
        };
        let keeper = match early_keeper {
            Some(keeper) => keeper.send_plan(&jail, &plan).map(|()| keeper),
            None => jail::fork_keeper(&jail, plan),
        };
        match keeper {
            Ok(keeper) => {
                ending.jail = Some(Jailed {
                    jail,
                    keeper: Arc::new(keeper),
                })
            }
            Err(e) => {
                eprintln!("vireo: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let Some(kernel) = args.kernel else {
        if let Some(socket) = &args.api_socket {
            // Configured over the API. The machine's flags (--memory,
            // --cpus, --cpu-template, --cmdline, --reboot, --console) are
            // the defaults for what PUT /vm/config leaves out; the devices
            // a configuration lists are refused here rather than dropped.
            if !args.disk.is_empty() || !args.net.is_empty() || args.rng || args.initrd.is_some() {
                eprintln!("vireo: without --kernel, the VM is configured with PUT /vm/config; drop the device flags");
                return ExitCode::from(EXIT_USAGE);
            }
            let defaults = VmConfig {
                cmdline: args.cmdline,
                reboot: args.reboot,
                consoles: args.console,
                balloon: args.balloon,
                ..machine_config(&args.machine)
            };
            return launch(None, defaults, &args.machine, Some(socket), &ending);
        }
        eprintln!(
            "vireo: --kernel is required (or --api-socket, to configure the VM over the API)"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    warn_if_stock_kernel_is_emulated(&kernel);
    let config = VmConfig {
        kernel: KernelSource::Path(kernel),
        initrd: args.initrd,
        cmdline: args.cmdline,
        reboot: args.reboot,
        disks: args.disk,
        nets: args.net,
        consoles: args.console,
        rng: args.rng,
        balloon: args.balloon,
        ..machine_config(&args.machine)
    };
    launch(
        Some(&config),
        config.clone(),
        &args.machine,
        args.api_socket.as_deref(),
        &ending,
    )
}

/// How a run starts and how it reports its end: `--paused`,
/// `--exit-status`, `--seccomp` and `--jail`.
#[derive(Default)]
struct Ending {
    paused: bool,
    exit_status: Option<std::path::PathBuf>,
    seccomp: confine::Mode,
    jail: Option<Jailed>,
    /// The network disk drivers to load before confinement.
    disk_drivers: DriverPreload,
}

/// Network disk drivers loaded at start (`--disk-drivers`), besides those
/// the configured disks load as they are opened. After confinement no
/// library can be loaded any more (dynload::seal).
enum DriverPreload {
    /// Named by the user: one that cannot be loaded stops the start.
    Required(Vec<&'static str>),
    /// By default: those whose library is installed.
    IfInstalled(Vec<&'static str>),
}

impl Default for DriverPreload {
    fn default() -> Self {
        DriverPreload::IfInstalled(Vec::new())
    }
}

impl DriverPreload {
    /// Loads them; an error for a required one that cannot be.
    fn load(&self) -> Result<(), block::Error> {
        match self {
            DriverPreload::Required(names) => {
                names.iter().try_for_each(|n| block::load_network_driver(n))
            }
            DriverPreload::IfInstalled(names) => {
                for n in names {
                    if let Err(e) = block::load_network_driver(n) {
                        tracing::debug!("disk driver {n} not loaded: {e}");
                    }
                }
                Ok(())
            }
        }
    }
}

/// A VMM that enters a jail before its guest runs.
struct Jailed {
    jail: jail::Jail,
    /// The link to the parent that waits for this process.
    keeper: Arc<jail::Keeper>,
}

impl Ending {
    /// Records why the VM ended, if asked to; a failure to write is said
    /// on stderr (the exit code still tells part of the story).
    fn record(&self, status: &ExitStatus) {
        record_status(
            self.exit_status.as_deref(),
            self.jail.as_ref().map(|j| &*j.keeper),
            status,
        );
    }
}

/// Write `status` to `path`, or, jailed, hand it to the keeper, which
/// writes it there once this process has exited (the path is outside the
/// jail).
fn record_status(path: Option<&Path>, keeper: Option<&jail::Keeper>, status: &ExitStatus) {
    let Some(path) = path else { return };
    let written = match keeper {
        Some(keeper) => keeper.record_exit(status.to_text().as_bytes()),
        None => status.write(path),
    };
    if let Err(e) = written {
        eprintln!(
            "vireo: cannot write the exit status to {}: {e}",
            path.display()
        );
    }
}

/// What `--jail` cannot take, said before anything is opened: the jail's
/// own checks (directory, ids, root), then the options that would need a
/// host path after the drop.
fn check_jail(jail: &mut jail::Jail, args: &RunArgs) -> Result<(), String> {
    jail.check().map_err(|e| e.to_string())?;
    if args.kernel.is_none() {
        return Err(
            "--jail needs --kernel: a jailed VMM cannot open the files a PUT /vm/config would name"
                .into(),
        );
    }
    Ok(())
}

/// The exit status for a stop by signal (or the console escape).
fn stopped_status() -> ExitStatus {
    match vmm::signals::received_signal() {
        Some(sig) => ExitStatus::new("signal", format!("terminating on signal {sig}")),
        None => ExitStatus::new("signal", "stopped from the console"),
    }
}

/// One path cannot be two listening sockets: the second would replace
/// the first (a console taking over the API socket).
fn check_socket_paths_differ(args: &RunArgs) -> Result<(), String> {
    let sockets = socket_paths(args);
    // The same file by another spelling counts too: compare the
    // directories as the kernel resolves them.
    let key = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        dir.join(p.file_name().unwrap_or_default())
    };
    for (i, (a, pa)) in sockets.iter().enumerate() {
        if let Some((b, _)) = sockets[..i].iter().find(|(_, pb)| key(pb) == key(pa)) {
            return Err(format!("{b} and {a} name the same socket"));
        }
    }
    Ok(())
}

/// The sockets `args` make, each with the option that names it.
fn socket_paths(args: &RunArgs) -> Vec<(String, &Path)> {
    let mut sockets: Vec<(String, &Path)> = Vec::new();
    if let Some(p) = &args.api_socket {
        sockets.push((format!("--api-socket {}", p.display()), p));
    }
    if let devices::SerialBackend::Unix(p) = &args.machine.serial {
        sockets.push((format!("--serial unix:{}", p.display()), p));
    }
    for console in &args.console {
        if let vmm::config::ConsoleConfig::Unix(p) = console {
            sockets.push((format!("--console unix:{}", p.display()), p));
        }
    }
    sockets
}

/// kvm-pvm, a KVM without hardware virtualization, runs guest user code
/// natively but emulates every guest kernel instruction in software: a
/// distribution's kernel then takes minutes to print anything, which
/// otherwise looks like a hang. Say so once, before the VM starts.
fn warn_if_stock_kernel_is_emulated(kernel: &Path) {
    let emulated = Path::new("/sys/module/kvm_pvm").exists();
    if emulated && vmm::is_linux_kernel(kernel) {
        eprintln!(
            "vireo: warning: this host's KVM (kvm-pvm) emulates guest kernel code in software; \
             {} is a Linux kernel and will be very slow (minutes before its first console line)",
            kernel.display()
        );
    }
}

pub fn demo_command(args: DemoArgs) -> ExitCode {
    let config = VmConfig {
        kernel: KernelSource::Embedded(crate::demo_guest::DEMO_KERNEL),
        cmdline: args.cmdline,
        ..machine_config(&args.machine)
    };
    launch(
        Some(&config),
        VmConfig::default(),
        &args.machine,
        None,
        &Ending::default(),
    )
}

/// The irqchip without `--irqchip`.
const DEFAULT_IRQCHIP: hypervisor::IrqchipMode = hypervisor::IrqchipMode::Split;

fn machine_config(m: &MachineArgs) -> VmConfig {
    VmConfig {
        memory: m.memory,
        memory_backend: m.memory_backend.clone(),
        cpus: m.cpus,
        cpu_template: m.cpu_template,
        cpu_topology: m.cpu_topology,
        numa: m.numa.clone(),
        numa_distances: m.numa_distance.clone(),
        vcpu_pins: m.vcpu_pin.clone(),
        emulator_pin: m.emulator_pin.clone().map(|l| l.0),
        iothreads: m.iothread.clone(),
        // A PIT exists only beside KVM's own irqchip, so asking for one
        // picks that irqchip unless the user chose the other (which
        // start-up then refuses with the reason).
        irqchip: m.irqchip.unwrap_or(if m.pit.is_some() {
            hypervisor::IrqchipMode::Kernel
        } else {
            DEFAULT_IRQCHIP
        }),
        pit: m.pit,
        ..VmConfig::default()
    }
}

/// Print an error and its causes on one line.
fn report(err: &dyn std::error::Error) {
    eprintln!("vireo: {}", vmm::error_chain(err));
}

/// Run the VM `config` describes, or, with no config, wait for one over
/// the API; `api_defaults` fills in what such a configuration leaves out.
fn launch(
    config: Option<&VmConfig>,
    api_defaults: VmConfig,
    machine: &MachineArgs,
    api_socket: Option<&Path>,
    ending: &Ending,
) -> ExitCode {
    let mut hv = match Hypervisor::open() {
        Ok(hv) => hv,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Before the jail and the filters, where the cache file is in reach. A
    // VMM that waits to be configured only reads it: its API answers first.
    if let Err(e) = hv.preload_supported_cpuid(config.is_some()) {
        report(&e);
        return ExitCode::from(EXIT_FAILURE);
    }
    // Jailed, the TAPs, console backends and guest memory's file are
    // opened now too: after the jail nothing can be. First the keeper must be ready (it set itself
    // up while /dev/kvm was opened): if it cannot do its part, it has said
    // why, and this process ends before it makes anything.
    if let Some(jailed) = &ending.jail {
        jailed.keeper.wait_ready();
    }
    let held_taps;
    let config = match (config, &ending.jail) {
        (Some(c), Some(_)) => {
            let mut c = c.clone();
            if let Err(e) = vmm::hold_taps(&mut c.nets)
                .and_then(|()| vmm::hold_consoles(&c.consoles))
                .and_then(|()| vmm::hold_backing_file(&c.memory_backend))
            {
                report(&e);
                return ExitCode::from(EXIT_USAGE);
            }
            held_taps = c;
            Some(&held_taps)
        }
        (config, _) => config,
    };
    // The kernel, initrd and disks are opened (and the disks locked) here,
    // once, and stay open while the VM may use them: no other process can
    // take them between this check and the boot, nor across reboots. With
    // the API, the controller holds them (so a disk a client removes is
    // let go).
    let mut prepared = match config.map(|c| vmm::validate(c, &hv)).transpose() {
        Ok(prepared) => prepared,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let boot_now = prepared.is_some();
    let stop = match EventFd::new(libc::EFD_NONBLOCK) {
        Ok(e) => e,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Err(e) = vmm::signals::install_stop_handlers(&stop)
        .and_then(|()| hypervisor::install_kick_signal_handler().map_err(std::io::Error::other))
    {
        report(&e);
        return ExitCode::from(EXIT_FAILURE);
    }
    // The sockets are bound before the jail, where their paths are.
    let api_listener = match api_socket.map(|path| (path, ApiServer::bind(path))) {
        None => None,
        Some((_, Ok(listener))) => Some(listener),
        Some((path, Err(e))) => {
            eprintln!("vireo: cannot serve the API on {}: {e}", path.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut serial = match machine.serial.open(&stop) {
        Ok(s) => s,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The last libraries are mapped now, while the files are in sight
    // and mapping code is allowed.
    if let Err(e) = ending.disk_drivers.load() {
        eprintln!("vireo: --disk-drivers: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    dynload::seal();
    if let Some(jailed) = &ending.jail {
        if let Err(e) = enter_jail(jailed, config) {
            eprintln!("vireo: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    // Confined from here: what ran before (opening /dev/kvm, the kernel,
    // the disks and their iSCSI logins, binding the sockets; with --jail,
    // entering the jail) is the only unconfined work. Every thread made
    // from now on has a filter of its own (crates/confine).
    let exit_status = ending.exit_status.clone();
    let keeper = ending.jail.as_ref().map(|j| j.keeper.clone());
    let on_violation = Box::new(move |v: &confine::Violation| {
        // The process ends without unwinding: give the terminal back.
        if let Some(terminal) = RAW_TERMINAL.get() {
            let _ = terminal.restore();
        }
        record_status(
            exit_status.as_deref(),
            keeper.as_deref(),
            &ExitStatus::new("seccomp", v.to_string()),
        );
    });
    if let Err(e) = confine::init(ending.seccomp, on_violation) {
        report(&e);
        return ExitCode::from(EXIT_FAILURE);
    }
    // The API comes up before anything else the VM needs, so a client can
    // connect as soon as the socket exists.
    let api = match (api_listener, api_socket) {
        (Some(listener), Some(path)) => {
            let controller =
                Controller::with_defaults(prepared.take(), api_defaults, vmm::max_cpus(&hv));
            match ApiServer::serve(listener, controller.clone(), Default::default()) {
                Ok(server) => Some((controller, server)),
                Err(e) => {
                    eprintln!("vireo: cannot serve the API on {}: {e}", path.display());
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        _ => None,
    };
    let controller = api.as_ref().map(|(c, _)| c.clone());
    let terminal = serial.terminal.take().map(Arc::new);
    if let Some(terminal) = &terminal {
        restore_terminal_on_panic(terminal.clone());
        let _ = RAW_TERMINAL.set(terminal.clone());
    }
    if let Some(path) = &serial.pty_path {
        eprintln!("vireo: serial console on {}", path.display());
    }
    let console = Console::new(serial.output.clone());
    let input = match start_input(serial.input, &console) {
        Ok(input) => input,
        Err(e) => {
            report(&e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };

    if let (Some(c), true) = (&controller, ending.paused) {
        c.start_paused();
    }
    if let (Some(c), true) = (&controller, boot_now) {
        c.request_boot();
    }
    let mut booted_once = false;
    let (code, status) = loop {
        // With the API, each boot's configuration comes from the
        // controller (the command line's, or one a client sent).
        let prepared = match (&controller, &prepared) {
            (Some(c), _) => match c.wait_for_boot(|| stop.read().is_ok()) {
                Some(config) => config,
                None if vmm::signals::received_signal().is_some() => {
                    break (ExitCode::SUCCESS, stopped_status())
                }
                None => break (ExitCode::SUCCESS, ExitStatus::new("poweroff", "")),
            },
            (None, Some(prepared)) => prepared.clone(),
            (None, None) => break (ExitCode::from(EXIT_USAGE), ExitStatus::new("failed", "")),
        };
        let observer = controller.as_deref().map(|c| c as &dyn vmm::VmObserver);
        let reboot = prepared.config().reboot;
        match vmm::run_once(prepared, &hv, &console, &stop, observer) {
            Ok(Outcome::Reset)
                if reboot || controller.as_ref().is_some_and(|c| c.take_reset_request()) =>
            {
                booted_once = true;
                tracing::info!("guest reset; booting again");
                if let Some(c) = &controller {
                    c.request_boot();
                }
                continue;
            }
            Ok(Outcome::PowerOff) => break (ExitCode::SUCCESS, ExitStatus::new("poweroff", "")),
            Ok(Outcome::Reset) => {
                break (
                    ExitCode::SUCCESS,
                    ExitStatus::new("reset", "the guest reset the machine"),
                )
            }
            Ok(Outcome::Stopped) => {
                if let Some(sig) = vmm::signals::received_signal() {
                    eprintln!("vireo: terminating on signal {sig}");
                }
                break (ExitCode::SUCCESS, stopped_status());
            }
            Ok(Outcome::Crashed(why)) => {
                eprintln!("vireo: guest stopped: {why}");
                break (
                    ExitCode::from(EXIT_FAILURE),
                    // One line: the registers that follow are in the log.
                    ExitStatus::new(
                        "crashed",
                        format!("guest stopped: {}", why.lines().next().unwrap_or_default()),
                    ),
                );
            }
            Err(e) if controller.is_some() && !booted_once => {
                // A client's configuration that cannot be built is its
                // error, not the process's: report it and wait for another.
                report(&e);
                if let Some(c) = &controller {
                    c.boot_failed(e.to_string());
                }
            }
            Err(e) => {
                report(&e);
                // A failure while building the first boot is the user's
                // input; after a reboot it is a runtime failure.
                break (
                    ExitCode::from(if booted_once {
                        EXIT_FAILURE
                    } else {
                        EXIT_USAGE
                    }),
                    ExitStatus::new("failed", vmm::error_chain(&e)),
                );
            }
        }
    };
    if let Some(c) = &controller {
        c.finished();
    }
    drop(api);
    vmm::close_console_sockets();
    if let Some((stop_input, thread)) = input {
        let _ = stop_input.write(1);
        let _ = thread.join();
    }
    if let Some(terminal) = &terminal {
        if let Err(e) = terminal.restore() {
            eprintln!("vireo: cannot restore the terminal: {e}");
        }
    }
    // Last, once the sockets are gone: a reader that finds the file finds
    // a VM that has let go of everything.
    ending.record(&status);
    code
}

/// Enter the jail (crate `jail`): a network namespace of its own unless a
/// disk is on the network (an iSCSI LUN, an NFS file), whose reconnects
/// need the host's network (open TAPs keep working in any namespace).
/// Then the parent-death signal, which the credential change cleared, is
/// armed again, and the VMM learns it is jailed.
fn enter_jail(jailed: &Jailed, config: Option<&VmConfig>) -> Result<(), jail::Error> {
    let network_disk = config.is_some_and(|c| c.disks.iter().any(|d| block::is_network(&d.path)));
    let options = jail::EnterOptions {
        new_network: !network_disk,
    };
    jail::enter(&jailed.jail, &options)?;
    jailed.keeper.arm_death_signal()?;
    let keeper = jailed.keeper.clone();
    vmm::confinement::set_jailed(
        jailed.jail.dir.clone(),
        Box::new(move |tids| keeper.host_tids(tids)),
    );
    Ok(())
}

/// The terminal in raw mode, for the seccomp report to restore: it ends
/// the process from the launcher thread, with no unwinding.
static RAW_TERMINAL: std::sync::OnceLock<Arc<RawTerminal>> = std::sync::OnceLock::new();

/// A panic aborts the process (release builds), so drops never run: put the
/// terminal back from the panic hook, before the message is printed.
fn restore_terminal_on_panic(terminal: Arc<RawTerminal>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = terminal.restore();
        default(info);
    }));
}

/// Forward host input to whichever UART the current boot has. Returns the
/// thread and the event fd that stops it.
fn start_input(
    input: Option<SerialInput>,
    console: &Console,
) -> std::io::Result<Option<(EventFd, std::thread::JoinHandle<()>)>> {
    let Some(input) = input else {
        return Ok(None);
    };
    let stop = EventFd::new(libc::EFD_NONBLOCK)?;
    let slot = console.serial.clone();
    let thread = spawn_input_thread(input, stop.try_clone()?, move |bytes| {
        let current = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match current {
            Some(serial) => serial
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .enqueue_input(bytes),
            // Between reboots: hold the bytes until the next UART exists.
            None => 0,
        }
    })?;
    Ok(Some((stop, thread)))
}
