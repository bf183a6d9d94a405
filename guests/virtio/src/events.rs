//! Platform events without interrupts: the guest polls Vireo's Generic
//! Event Device register (what the DSDT's `_EVT` would read when the GED's
//! interrupt fires) and the PCI hot-plug registers (what `\_SB.PCI0.PCNT`
//! and the slots' `_EJ0` use), then does what an OS does on the event:
//! power off on the button; rescan bus 0, report and exercise new
//! functions, and eject the ones the host asks back.
//!
//! Both the event register and PCIU/PCID clear when read, so each is read
//! by one 32-bit access and what it returned is kept until handled.

use crate::cmdline::Config;
use crate::out::Global;
use crate::pci::{self, Function, Root};
use crate::say;
use crate::time::{self, Deadline};
use alloc::vec::Vec;
use core::ptr::{read_volatile, write_volatile};

/// Vireo's GED event register and hot-plug registers (arch/src/layout.rs).
const GED_STATUS: *const u32 = 0xfeb0_3000 as *const u32;
const PCIU: *const u32 = 0xfeb0_4000 as *const u32;
const PCID: *const u32 = 0xfeb0_4004 as *const u32;
const B0EJ: *mut u32 = 0xfeb0_4008 as *mut u32;

/// GED event bits.
const POWER_BUTTON: u32 = 1 << 0;
const PCI_HOTPLUG: u32 = 1 << 1;
const KNOWN_EVENTS: u32 = POWER_BUTTON | PCI_HOTPLUG;

/// Pause between two reads of the event register: every read is a VM exit,
/// and a millisecond is nothing next to the host's reaction time.
const POLL_INTERVAL_MS: u64 = 1;

/// Events read from the register and not yet handled.
static SEEN: Global<u32> = Global::new(0);

enum Waited {
    Seen,
    TimedOut,
    /// The register reads as something no GED returns (all ones: nothing
    /// is mapped there).
    NoDevice(u32),
}

/// Polls the event register until `event` has been seen or `ms` pass.
fn wait(event: u32, ms: u64) -> Waited {
    let deadline = Deadline::after_ms(ms);
    loop {
        // SAFETY: the GED's register: a plain 32-bit MMIO read (clearing
        // what it returns, which SEEN keeps).
        let status = unsafe { read_volatile(GED_STATUS) };
        if status & !KNOWN_EVENTS != 0 {
            return Waited::NoDevice(status);
        }
        // SAFETY: single-threaded; no other reference to SEEN is live.
        let seen = unsafe { SEEN.get() };
        *seen |= status;
        if *seen & event != 0 {
            *seen &= !event;
            return Waited::Seen;
        }
        if deadline.expired() {
            return Waited::TimedOut;
        }
        time::wait_until(POLL_INTERVAL_MS, || false);
    }
}

/// `wait-power-button`: wait for the button, as an OS would before
/// shutting down; the caller then powers off.
pub fn wait_power_button(ms: u64) {
    match wait(POWER_BUTTON, ms) {
        Waited::Seen => say!("virtio: power button"),
        Waited::TimedOut => say!("virtio: power button timeout"),
        Waited::NoDevice(v) => say!("virtio: FAIL no event device (register reads {:#010x})", v),
    }
}

/// `wait-hotplug`: handle `hotplug-events` PCI hot-plug events, each
/// awaited for at most `wait-hotplug` ms. `functions` is what the guest
/// knows to be on bus 0, kept up to date.
pub fn hotplug(root: &mut Root, config: &Config, functions: &mut Vec<Function>, mirror: &mut bool) {
    for _ in 0..config.hotplug_events {
        match wait(PCI_HOTPLUG, config.wait_hotplug) {
            Waited::Seen => {}
            Waited::TimedOut => return say!("virtio: hotplug timeout"),
            Waited::NoDevice(v) => {
                return say!("virtio: FAIL no event device (register reads {:#010x})", v)
            }
        }
        // SAFETY: the hot-plug registers: plain 32-bit MMIO reads, each
        // read once (they clear on read).
        let (up, down) = unsafe { (read_volatile(PCIU), read_volatile(PCID)) };
        if up == 0 && down == 0 {
            say!("virtio: hotplug nothing changed");
        }
        if down != 0 {
            removed(root, config, functions, down);
        }
        if up != 0 {
            added(root, config, functions, mirror, up);
        }
    }
}

/// The slots in a bitmap, lowest first.
fn slots(bitmap: u32) -> impl Iterator<Item = u8> {
    (0..32u8).filter(move |s| bitmap & (1 << s) != 0)
}

/// The host asks for the devices in `down` back: report them, forget them
/// (the guest holds no request on them: every run ends with its queues
/// idle), eject them, and watch them leave the bus.
fn removed(root: &mut Root, config: &Config, functions: &mut Vec<Function>, down: u32) {
    for slot in slots(down) {
        let mut any = false;
        for function in functions.iter().filter(|f| f.df.device == slot) {
            say!("virtio: hotplug removed {}", function.df);
            any = true;
        }
        if !any {
            say!("virtio: hotplug removed 00:{:02x}.0", slot);
        }
    }
    functions.retain(|f| down & (1 << f.df.device) == 0);
    // SAFETY: B0EJ: a plain 32-bit MMIO write of the slots let go.
    unsafe { write_volatile(B0EJ, down) };
    // The VMM takes the device off the bus once it sees the eject.
    let gone = time::wait_until(config.wait_hotplug, || {
        pci::rescan(root)
            .iter()
            .all(|f| down & (1 << f.function.df.device) == 0)
    });
    let now = if gone { Vec::new() } else { pci::rescan(root) };
    for slot in slots(down) {
        if now.iter().any(|f| f.function.df.device == slot) {
            say!(
                "virtio: hotplug FAIL 00:{:02x} still present {} ms after eject",
                slot,
                config.wait_hotplug
            );
        } else {
            say!("virtio: hotplug gone 00:{:02x}", slot);
        }
    }
}

/// Slots in `up` gained devices: rescan bus 0, report each new function,
/// set it up and exercise it like the ones found at boot.
fn added(
    root: &mut Root,
    config: &Config,
    functions: &mut Vec<Function>,
    mirror: &mut bool,
    up: u32,
) {
    let now = pci::rescan(root);
    let new: Vec<&pci::Found> = now
        .iter()
        .filter(|f| !functions.iter().any(|k| k.df == f.function.df))
        .collect();
    for slot in slots(up) {
        if !new.iter().any(|f| f.function.df.device == slot) {
            say!("virtio: hotplug FAIL 00:{:02x} announced but empty", slot);
        }
    }
    for found in &new {
        say!("virtio: hotplug added {}", found);
    }
    let all: Vec<Function> = now.iter().map(|f| f.function).collect();
    let new: Vec<Function> = new.iter().map(|f| f.function).collect();
    pci::setup_added(root, &all, &new);
    for function in new.iter().filter(|f| crate::exercised(config, f.kind)) {
        crate::run_device(root, function, config, mirror);
    }
    functions.extend(new);
}
