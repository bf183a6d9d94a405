//! Vireo's virtio test guest: drives the virtio-pci devices it finds with
//! the third-party `virtio-drivers` crate, at CPL 3, reporting on the MMIO
//! debug console. The output contract is in guests/README.md.

#![no_std]
#![no_main]

extern crate alloc;

mod balloon;
mod bench;
mod blk;
mod cmdline;
mod console;
mod events;
mod hal;
mod msix;
mod net;
mod netcard;
mod netdev;
mod netstack;
mod offload;
mod out;
mod packet;
mod pci;
mod reinit;
mod rng;
mod stream;
mod time;
mod vectored;
mod watch;

use pci::{Function, Kind, Root};
use virtio_drivers::transport::DeviceType;

#[global_allocator]
static ALLOCATOR: hal::BumpAllocator = hal::BumpAllocator;

/// Entered at CPL 3 from asm/entry.S with the PVH command line.
///
/// # Safety
/// `cmdline` is null or a NUL-terminated string (start32.S hands over the
/// start info's command line, or "").
#[no_mangle]
pub unsafe extern "C" fn virtio_main(cmdline: *const u8) -> ! {
    // SAFETY: as promised by the caller.
    let text = unsafe { cmdline::from_raw(cmdline) };
    say!("virtio: cmdline={}", cmdline::Text(text));
    let config = cmdline::parse(text);
    watch::set_request_timeout_ms(config.request_timeout_ms);
    say!("virtio: tsc-hz={}", time::tsc_hz());
    if config.bench_mmio > 0 {
        bench::mmio(config.bench_mmio);
    }
    // SAFETY: the platform puts ECAM there (or the command line says where).
    let mut root = unsafe { pci::root(config.ecam) };
    let mut functions = pci::scan(&root);
    pci::setup(&mut root, &functions, config.reassign);

    // The console first, so with `mirror` the rest is seen there as it happens.
    let order = [
        // The mirror needs a console, so it is exercised as well.
        (DeviceType::Console, config.console || config.mirror),
        (DeviceType::EntropySource, config.rng),
        (DeviceType::Block, config.blk),
        (DeviceType::Network, config.net),
        (DeviceType::MemoryBalloon, config.balloon),
    ];
    let mut mirror = config.mirror;
    for (kind, named) in order {
        if config.any_selected() && !named {
            continue;
        }
        let mut seen = false;
        for function in functions.iter().filter(|f| f.kind == Some(kind)) {
            seen = true;
            run_device(&mut root, function, &config, &mut mirror);
        }
        if !seen && named {
            say!("virtio-{}: FAIL not found", Kind(Some(kind)));
        }
    }
    if config.msix {
        match functions
            .iter()
            .find(|f| f.kind == Some(DeviceType::EntropySource))
        {
            Some(function) => msix::run(&mut root, config.ecam, function),
            None => say!("virtio-msix: FAIL no rng device"),
        }
    }
    if config.wait_hotplug > 0 {
        events::hotplug(&mut root, &config, &mut functions, &mut mirror);
    }
    if config.wait_power_button > 0 {
        events::wait_power_button(config.wait_power_button);
    }
    say!("virtio: done");
    out::poweroff()
}

/// Whether a function of `kind` found later (hot-plugged) is exercised: the
/// four kinds the guest drives, unless the command line names others.
fn exercised(config: &cmdline::Config, kind: Option<DeviceType>) -> bool {
    let named = match kind {
        Some(DeviceType::Console) => config.console || config.mirror,
        Some(DeviceType::EntropySource) => config.rng,
        Some(DeviceType::Block) => config.blk,
        Some(DeviceType::Network) => config.net,
        _ => return false,
    };
    named || !config.any_selected()
}

fn run_device(root: &mut Root, function: &Function, config: &cmdline::Config, mirror: &mut bool) {
    let (name, watched) = match function.kind {
        Some(DeviceType::Console) => ("virtio-console", Some(console::TRANSMIT_QUEUE)),
        Some(DeviceType::EntropySource) => ("virtio-rng", Some(rng::REQUEST_QUEUE)),
        Some(DeviceType::Block) => ("virtio-blk", Some(0)),
        Some(DeviceType::MemoryBalloon) => ("virtio-balloon", Some(balloon::INFLATE_QUEUE)),
        _ => ("virtio-net", None),
    };
    if config.reinit {
        match pci::transport(root, config.ecam, function, name, watched) {
            Ok(t) => {
                if let Err(e) = reinit::warm_up(function.kind.unwrap(), t) {
                    say!("{}: FAIL before reset: {}", name, e);
                }
            }
            Err(e) => return say!("{}: FAIL transport {}: {}", name, function.df, e),
        }
    }
    let transport = match pci::transport(root, config.ecam, function, name, watched) {
        Ok(t) => t,
        Err(e) => return say!("{}: FAIL transport {}: {}", name, function.df, e),
    };
    match function.kind {
        Some(DeviceType::Console) => {
            console::run(transport, *mirror);
            *mirror = false;
        }
        Some(DeviceType::EntropySource) => rng::run(transport),
        Some(DeviceType::Block) => blk::run(transport, config),
        Some(DeviceType::MemoryBalloon) => balloon::run(transport, config.balloon_mib),
        _ if config.stack.active() => netstack::run(transport, config),
        _ => net::run(transport, config),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(at) => say!(
            "virtio: panic {} at {}:{}",
            info.message(),
            at.file(),
            at.line()
        ),
        None => say!("virtio: panic {}", info.message()),
    }
    out::poweroff()
}
