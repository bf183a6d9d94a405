//! PCI over ECAM with virtio-drivers' root: find the functions on bus 0,
//! give any unassigned BAR an address in the 32-bit window, enable memory
//! decoding and bus mastering, and build transports.

use crate::hal::GuestHal;
use crate::say;
use crate::watch::Watched;
use alloc::vec::Vec;
use core::fmt;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Cam, Command, DeviceFunction, MemoryBarType, MmioCam, PciRoot,
};
use virtio_drivers::transport::pci::{virtio_device_type, PciTransport};
use virtio_drivers::transport::DeviceType;

pub type Root = PciRoot<MmioCam<'static>>;

/// The 32-bit PCI MMIO window (Vireo's platform contract).
const WINDOW_START: u64 = 0xc000_0000;
const WINDOW_END: u64 = 0xe000_0000;

#[derive(Clone, Copy)]
pub struct Function {
    pub df: DeviceFunction,
    pub kind: Option<DeviceType>,
}

/// A function as enumeration finds it.
pub struct Found {
    pub function: Function,
    pub vendor: u16,
    pub device: u16,
}

impl fmt::Display for Found {
    /// `<bb:dd.f> vendor <vvvv> device <dddd> <kind>`, as the found lines
    /// show it.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} vendor {:04x} device {:04x} {}",
            self.function.df,
            self.vendor,
            self.device,
            Kind(self.function.kind)
        )
    }
}

pub struct Kind(pub Option<DeviceType>);

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.0 {
            Some(DeviceType::Network) => f.write_str("net"),
            Some(DeviceType::Block) => f.write_str("blk"),
            Some(DeviceType::Console) => f.write_str("console"),
            Some(DeviceType::EntropySource) => f.write_str("rng"),
            Some(DeviceType::MemoryBalloon) => f.write_str("balloon"),
            Some(other) => write!(f, "virtio-{}", other as u8),
            None => f.write_str("other"),
        }
    }
}

/// # Safety
/// `base` must be the ECAM region (256 MiB, buses 0-255), mapped and used by
/// nothing else.
pub unsafe fn root(base: u64) -> Root {
    // SAFETY: as promised by the caller.
    PciRoot::new(unsafe { MmioCam::new(base as *mut u8, Cam::Ecam) })
}

/// Every function on bus 0, each printed as it is found.
pub fn scan(root: &Root) -> Vec<Function> {
    let mut functions = Vec::new();
    for found in rescan(root) {
        say!("virtio: found {}", found);
        functions.push(found.function);
    }
    functions
}

/// Every function on bus 0 now, silently (for hot-plug, which reports
/// only what changed).
pub fn rescan(root: &Root) -> Vec<Found> {
    root.enumerate_bus(0)
        .map(|(df, info)| Found {
            function: Function {
                df,
                kind: virtio_device_type(&info),
            },
            vendor: info.vendor_id,
            device: info.device_id,
        })
        .collect()
}

/// Keeps the BARs Vireo (or firmware) assigned; places unassigned memory
/// BARs of virtio functions above every assigned one, then turns on memory
/// decoding and bus mastering for them. With `reassign`, the virtio
/// functions' BARs are zeroed first, so all of them are placed here.
pub fn setup(root: &mut Root, functions: &[Function], reassign: bool) {
    let virtio: Vec<&Function> = functions.iter().filter(|f| f.kind.is_some()).collect();
    if reassign {
        for function in &virtio {
            clear_bars(root, function.df);
        }
    }
    let mut next = next_free(root, functions);
    for function in &virtio {
        enable(root, function.df, &mut next);
    }
}

/// Like `setup` for functions that appeared after it ran (hot-plug):
/// places their unassigned BARs above every BAR of `all` (the functions on
/// the bus now) and enables them; functions already running are untouched.
pub fn setup_added(root: &mut Root, all: &[Function], added: &[Function]) {
    let mut next = next_free(root, all);
    for function in added.iter().filter(|f| f.kind.is_some()) {
        enable(root, function.df, &mut next);
    }
}

/// The first address in the window above every assigned memory BAR.
fn next_free(root: &mut Root, functions: &[Function]) -> u64 {
    let mut next = WINDOW_START;
    for function in functions {
        let Ok(bars) = root.bars(function.df) else {
            continue;
        };
        for bar in bars.iter().flatten() {
            if let BarInfo::Memory { address, size, .. } = *bar {
                if (WINDOW_START..WINDOW_END).contains(&address) {
                    next = next.max(address + size);
                }
            }
        }
    }
    next
}

/// Places `df`'s unassigned memory BARs from `next` on, then turns on
/// memory decoding and bus mastering.
fn enable(root: &mut Root, df: DeviceFunction, next: &mut u64) {
    match root.bars(df) {
        Ok(bars) => {
            for (index, bar) in bars.iter().enumerate() {
                if let Some(bar) = bar {
                    assign(root, df, index as u8, bar, next);
                }
            }
        }
        Err(e) => say!("virtio: FAIL {} reading BARs: {}", df, e),
    }
    let (_, command) = root.get_status_command(df);
    root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
}

/// Zeroes every memory BAR of `df`, with memory decoding off so the
/// function never decodes at address 0; `setup` turns decoding back on.
fn clear_bars(root: &mut Root, df: DeviceFunction) {
    let (_, command) = root.get_status_command(df);
    root.set_command(df, command - Command::MEMORY_SPACE);
    let Ok(bars) = root.bars(df) else {
        return;
    };
    for (index, bar) in bars.iter().enumerate() {
        if let Some(BarInfo::Memory { address_type, .. }) = bar {
            match address_type {
                MemoryBarType::Width64 => root.set_bar_64(df, index as u8, 0),
                _ => root.set_bar_32(df, index as u8, 0),
            }
        }
    }
}

fn assign(root: &mut Root, df: DeviceFunction, index: u8, bar: &BarInfo, next: &mut u64) {
    let BarInfo::Memory {
        address_type,
        address: 0,
        size,
        ..
    } = *bar
    else {
        return;
    };
    if size == 0 || address_type == MemoryBarType::Below1MiB {
        return;
    }
    let base = next.next_multiple_of(size);
    if base + size > WINDOW_END {
        say!(
            "virtio: FAIL {} bar{} size {:#x} does not fit",
            df,
            index,
            size
        );
        return;
    }
    match address_type {
        MemoryBarType::Width64 => root.set_bar_64(df, index, base),
        _ => root.set_bar_32(df, index, base as u32),
    }
    *next = base + size;
    say!(
        "virtio: assigned {} bar{} {:#x} size {:#x}",
        df,
        index,
        base,
        size
    );
}

/// A transport for `function`, wrapped so requests on `watched_queue` are
/// bounded in time.
pub fn transport(
    root: &mut Root,
    ecam: u64,
    function: &Function,
    name: &'static str,
    watched_queue: Option<u16>,
) -> Result<Watched, virtio_drivers::transport::pci::VirtioPciError> {
    let inner = PciTransport::new::<GuestHal, _>(root, function.df)?;
    let layout = notify_layout(root, ecam, function.df);
    Ok(Watched::new(inner, name, watched_queue, layout))
}

/// Where a virtio function's common configuration and doorbells are, so a
/// doorbell can be rung with one write (as Linux does) rather than
/// virtio-drivers' select, read, write: three exits to the VMM per request
/// would make the benchmarks measure the driver, not the device.
#[derive(Clone, Copy)]
pub struct NotifyLayout {
    pub common: u64,
    pub notify: u64,
    pub multiplier: u32,
}

const VENDOR_CAP: u8 = 0x09;
const CAP_COMMON: u16 = 1;
const CAP_NOTIFY: u16 = 2;

fn notify_layout(root: &mut Root, ecam: u64, df: DeviceFunction) -> Option<NotifyLayout> {
    let config = ecam
        + (u64::from(df.bus) << 20)
        + (u64::from(df.device) << 15)
        + (u64::from(df.function) << 12);
    // SAFETY: ECAM is mapped (the caller's root uses it) and configuration
    // reads have no side effects.
    let read = |offset: u8| unsafe {
        core::ptr::read_volatile((config + u64::from(offset)) as *const u32)
    };
    let caps: Vec<(u8, u16)> = root
        .capabilities(df)
        .filter(|c| c.id == VENDOR_CAP)
        .map(|c| (c.offset, c.private_header >> 8))
        .collect();
    let mut common = None;
    let mut notify = None;
    for (offset, cfg_type) in caps {
        let bar = (read(offset + 4) & 0xff) as u8;
        let region = u64::from(read(offset + 8));
        // Only the common and notify structures matter; another (QEMU's
        // PCI configuration access capability names BAR 0, which a
        // modern-only function leaves unimplemented) is skipped.
        if cfg_type != CAP_COMMON && cfg_type != CAP_NOTIFY {
            continue;
        }
        let Some((address, _)) = root
            .bar_info(df, bar)
            .ok()
            .flatten()
            .and_then(|b| b.memory_address_size())
        else {
            continue;
        };
        match cfg_type {
            CAP_COMMON if common.is_none() => common = Some(address + region),
            CAP_NOTIFY if notify.is_none() => {
                notify = Some((address + region, read(offset + 16)));
            }
            _ => {}
        }
    }
    let (notify, multiplier) = notify?;
    Some(NotifyLayout {
        common: common?,
        notify,
        multiplier,
    })
}
