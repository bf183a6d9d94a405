//! The virtio-pci transport driven the way a (sometimes hostile) driver
//! drives it: through configuration space and BAR 0 only, with the layout
//! found by walking the capability list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pci::{IoEventRegistry, MsiRoutes, MsixVector, PciBus, PciDevice, SharedPciDevice};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::{VirtioPciDevice, NO_VECTOR};
use crate::device::{ActivateContext, ActivateError, GuestMemory, VirtioDevice, VirtioInterrupt};

const ACKNOWLEDGE: u8 = 1;
const DRIVER: u8 = 2;
const DRIVER_OK: u8 = 4;
const FEATURES_OK: u8 = 8;
const NEEDS_RESET: u8 = 64;
const VERSION_1: u64 = 1 << 32;
/// Offered by the test device on top of the transport's features.
const DEVICE_FEATURE: u64 = 1 << 5;

// Common configuration registers (virtio 1.2, 4.1.4.3).
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE_REG: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE_REG: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;

const MEM_SIZE: u64 = 0x10_0000;
const QUEUE_MAX: u16 = 64;
/// Where the tests place BAR 0 (inside the bus window below).
const BAR_BASE: u64 = 0xe000_0000;
const WINDOW: (u64, u64) = (0xe000_0000, 0x1000_0000);

/// A GSI and the MSI message it was routed to (None: route cleared).
type Route = (u32, Option<(u64, u32)>);

/// Host routes the MSI-X table asked for.
#[derive(Default)]
struct Routes(Mutex<Vec<Route>>);

impl MsiRoutes for Routes {
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> std::io::Result<()> {
        self.0.lock().unwrap().push((gsi, Some((address, data))));
        Ok(())
    }
    fn clear_route(&self, gsi: u32) -> std::io::Result<()> {
        self.0.lock().unwrap().push((gsi, None));
        Ok(())
    }
}

/// Doorbells registered and removed, as (registered?, address).
#[derive(Default)]
struct IoEvents(Mutex<Vec<(bool, u64)>>);

impl IoEventRegistry for IoEvents {
    fn register(&self, addr: u64, _fd: &EventFd) -> std::io::Result<()> {
        self.0.lock().unwrap().push((true, addr));
        Ok(())
    }
    fn unregister(&self, addr: u64, _fd: &EventFd) -> std::io::Result<()> {
        self.0.lock().unwrap().push((false, addr));
        Ok(())
    }
}

/// What the test device saw of its activations.
#[derive(Default)]
struct Seen {
    activations: AtomicUsize,
    resets: AtomicUsize,
    /// The last activation's context.
    ctx: Mutex<Option<ActivateContext>>,
}

/// A device with two queues and an 8-byte read-only configuration.
struct TestDevice {
    seen: Arc<Seen>,
    sizes: Vec<u16>,
    config: [u8; 8],
}

impl VirtioDevice for TestDevice {
    fn device_type(&self) -> u32 {
        4
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }
    fn features(&self) -> u64 {
        DEVICE_FEATURE
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *b = at.and_then(|o| self.config.get(o)).copied().unwrap_or(0);
        }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        self.seen.activations.fetch_add(1, Ordering::SeqCst);
        *self.seen.ctx.lock().unwrap() = Some(ctx);
        Ok(())
    }
    fn reset(&mut self) {
        self.seen.resets.fetch_add(1, Ordering::SeqCst);
        *self.seen.ctx.lock().unwrap() = None;
    }
}

/// Where the capabilities put things in BAR 0.
#[derive(Debug, Default)]
struct Layout {
    common: u64,
    isr: u64,
    device: u64,
    notify: u64,
    notify_multiplier: u64,
    pci_cfg_cap: usize,
    msix_cap: usize,
    msix_table: u64,
}

struct Harness {
    dev: VirtioPciDevice,
    seen: Arc<Seen>,
    ioevents: Arc<IoEvents>,
    routes: Arc<Routes>,
    irqfds: Vec<EventFd>,
    layout: Layout,
}

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), usize::try_from(MEM_SIZE).unwrap())]).unwrap()
}

fn vectors(n: usize) -> (Vec<MsixVector>, Vec<EventFd>) {
    let mut v = Vec::new();
    let mut fds = Vec::new();
    for i in 0..n {
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        fds.push(fd.try_clone().unwrap());
        v.push(MsixVector {
            gsi: 40 + u32::try_from(i).unwrap(),
            irqfd: fd,
        });
    }
    (v, fds)
}

fn wrap(device: Box<dyn VirtioDevice>, seen: Arc<Seen>) -> Harness {
    let n = device.queue_max_sizes().len();
    let (v, irqfds) = vectors(VirtioPciDevice::msix_vectors_for(n));
    let ioevents = Arc::new(IoEvents::default());
    let routes = Arc::new(Routes::default());
    let mut dev =
        VirtioPciDevice::new(device, memory(), v, routes.clone(), ioevents.clone()).unwrap();
    let layout = walk_capabilities(&mut dev);
    Harness {
        dev,
        seen,
        ioevents,
        routes,
        irqfds,
        layout,
    }
}

fn harness() -> Harness {
    let seen = Arc::new(Seen::default());
    let device = TestDevice {
        seen: seen.clone(),
        sizes: vec![QUEUE_MAX, QUEUE_MAX / 2],
        config: *b"\x11\x22\x33\x44\x55\x66\x77\x88",
    };
    wrap(Box::new(device), seen)
}

fn cfg_byte(dev: &mut VirtioPciDevice, offset: usize) -> u8 {
    dev.config_read(offset / 4).to_le_bytes()[offset % 4]
}

fn cfg_dword(dev: &mut VirtioPciDevice, offset: usize) -> u32 {
    assert_eq!(offset % 4, 0);
    dev.config_read(offset / 4)
}

/// Find every region through the capability list, as a driver does.
fn walk_capabilities(dev: &mut VirtioPciDevice) -> Layout {
    let mut l = Layout::default();
    let mut at = usize::from(cfg_byte(dev, 0x34));
    let mut hops = 0;
    while at != 0 {
        hops += 1;
        assert!(hops < 48, "capability list loops");
        let id = cfg_byte(dev, at);
        if id == 0x11 {
            l.msix_cap = at;
            l.msix_table = u64::from(cfg_dword(dev, at + 4) & !7);
        } else if id == 0x09 {
            let cfg_type = cfg_byte(dev, at + 3);
            let bar = cfg_byte(dev, at + 4);
            let offset = u64::from(cfg_dword(dev, at + 8));
            match cfg_type {
                1 => l.common = offset,
                2 => {
                    l.notify = offset;
                    l.notify_multiplier = u64::from(cfg_dword(dev, at + 16));
                }
                3 => l.isr = offset,
                4 => l.device = offset,
                5 => l.pci_cfg_cap = at,
                t => panic!("unknown virtio capability type {t}"),
            }
            if cfg_type != 5 {
                assert_eq!(bar, 0, "virtio capability {cfg_type} not in BAR 0");
            }
        }
        at = usize::from(cfg_byte(dev, at + 1));
    }
    assert!(
        l.pci_cfg_cap != 0 && l.msix_cap != 0 && l.notify_multiplier != 0,
        "{l:?}"
    );
    l
}

impl Harness {
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.dev.bar_write(0, self.layout.common + offset, data);
    }
    fn read(&mut self, offset: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev
            .bar_read(0, self.layout.common + offset, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    fn w8(&mut self, offset: u64, v: u8) {
        self.write(offset, &[v]);
    }
    fn w16(&mut self, offset: u64, v: u16) {
        self.write(offset, &v.to_le_bytes());
    }
    fn w32(&mut self, offset: u64, v: u32) {
        self.write(offset, &v.to_le_bytes());
    }
    fn w64(&mut self, offset: u64, v: u64) {
        self.write(offset, &v.to_le_bytes());
    }
    fn r8(&mut self, offset: u64) -> u64 {
        self.read(offset, 1)
    }
    fn r16(&mut self, offset: u64) -> u64 {
        self.read(offset, 2)
    }
    fn r32(&mut self, offset: u64) -> u64 {
        self.read(offset, 4)
    }
    fn status(&mut self) -> u8 {
        u8::try_from(self.r8(DEVICE_STATUS)).unwrap()
    }

    fn device_features(&mut self) -> u64 {
        self.w32(DEVICE_FEATURE_SELECT, 0);
        let low = self.r32(DEVICE_FEATURE_REG);
        self.w32(DEVICE_FEATURE_SELECT, 1);
        let high = self.r32(DEVICE_FEATURE_REG);
        high << 32 | low
    }

    fn set_driver_features(&mut self, f: u64) {
        self.w32(DRIVER_FEATURE_SELECT, 0);
        self.w32(DRIVER_FEATURE_REG, u32::try_from(f & 0xffff_ffff).unwrap());
        self.w32(DRIVER_FEATURE_SELECT, 1);
        self.w32(DRIVER_FEATURE_REG, u32::try_from(f >> 32).unwrap());
    }

    fn driver_features(&mut self) -> u64 {
        self.w32(DRIVER_FEATURE_SELECT, 0);
        let low = self.r32(DRIVER_FEATURE_REG);
        self.w32(DRIVER_FEATURE_SELECT, 1);
        let high = self.r32(DRIVER_FEATURE_REG);
        high << 32 | low
    }

    /// Reset, acknowledge, offer `features`; returns the status read back
    /// after asking for FEATURES_OK.
    fn negotiate(&mut self, features: u64) -> u8 {
        self.w8(DEVICE_STATUS, 0);
        self.w8(DEVICE_STATUS, ACKNOWLEDGE);
        self.w8(DEVICE_STATUS, ACKNOWLEDGE | DRIVER);
        self.set_driver_features(features);
        self.w8(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.status()
    }

    /// Queue `q` with rings at `base` (descriptors), `base + 0x1000`
    /// (available) and `base + 0x2000` (used), enabled.
    fn set_up_queue(&mut self, q: u16, size: u16, base: u64) {
        self.w16(QUEUE_SELECT, q);
        self.w16(QUEUE_SIZE, size);
        self.w64(QUEUE_DESC, base);
        self.w64(QUEUE_DRIVER, base + 0x1000);
        self.w64(QUEUE_DEVICE, base + 0x2000);
        self.w16(QUEUE_ENABLE, 1);
    }

    fn driver_ok(&mut self) -> u8 {
        let s = self.status();
        self.w8(DEVICE_STATUS, s | DRIVER_OK);
        self.status()
    }

    /// Negotiate VERSION_1, set up both queues and start the device.
    fn start(&mut self) {
        assert_ne!(self.negotiate(VERSION_1 | DEVICE_FEATURE) & FEATURES_OK, 0);
        self.set_up_queue(0, QUEUE_MAX, 0x1_0000);
        self.set_up_queue(1, 8, 0x2_0000);
        let before = self.seen.activations.load(Ordering::SeqCst);
        assert_eq!(self.driver_ok() & DRIVER_OK, DRIVER_OK);
        assert_eq!(self.seen.activations.load(Ordering::SeqCst), before + 1);
    }

    fn isr(&mut self) -> u8 {
        let mut b = [0u8];
        self.dev.bar_read(0, self.layout.isr, &mut b);
        b[0]
    }

    /// Program MSI-X vector `v` unmasked and enable MSI-X.
    fn enable_msix_vector(&mut self, v: u64) {
        let entry = self.layout.msix_table + 16 * v;
        self.dev.bar_write(0, entry, &0xfee0_0000u32.to_le_bytes());
        self.dev.bar_write(0, entry + 4, &0u32.to_le_bytes());
        self.dev.bar_write(0, entry + 8, &0x30u32.to_le_bytes());
        self.dev.bar_write(0, entry + 12, &0u32.to_le_bytes());
        let control = self.layout.msix_cap + 2;
        self.dev.config_write(control, &0x8000u16.to_le_bytes());
    }

    fn activated_queues(&self) -> Vec<(u16, u16)> {
        use virtio_queue::QueueT;
        let ctx = self.seen.ctx.lock().unwrap();
        let ctx = ctx.as_ref().expect("the device is active");
        ctx.queues
            .iter()
            .map(|q| (q.index, q.queue.size()))
            .collect()
    }
}

#[test]
fn capabilities_describe_bar0() {
    let mut h = harness();
    assert_eq!(cfg_dword(&mut h.dev, 0), 0x1044_1af4);
    let l = &h.layout;
    assert_eq!(
        (l.common, l.isr, l.device, l.notify),
        (0, 0x1000, 0x2000, 0x3000)
    );
    assert_eq!(l.notify_multiplier, 4);
    assert_eq!(h.r16(NUM_QUEUES), 2);
}

#[test]
fn feature_negotiation() {
    let mut h = harness();
    let offered = h.device_features();
    assert_eq!(
        offered & (VERSION_1 | DEVICE_FEATURE),
        VERSION_1 | DEVICE_FEATURE
    );
    // Selecting a page past the second reads zeroes.
    h.w32(DEVICE_FEATURE_SELECT, 7);
    assert_eq!(h.r32(DEVICE_FEATURE_REG), 0);
    // Without VERSION_1: refused.
    assert_eq!(h.negotiate(DEVICE_FEATURE) & FEATURES_OK, 0);
    // With a bit the device never offered: refused.
    let unoffered = 1u64 << 50;
    assert_eq!(offered & unoffered, 0);
    assert_eq!(h.negotiate(VERSION_1 | unoffered) & FEATURES_OK, 0);
    // A write to a feature page past the second changes nothing.
    h.w32(DRIVER_FEATURE_SELECT, 2);
    h.w32(DRIVER_FEATURE_REG, u32::MAX);
    assert_eq!(h.driver_features(), VERSION_1 | unoffered);
    // A proper offer is accepted, then frozen.
    assert_eq!(
        h.negotiate(VERSION_1 | DEVICE_FEATURE),
        ACKNOWLEDGE | DRIVER | FEATURES_OK
    );
    h.set_driver_features(offered);
    assert_eq!(h.driver_features(), VERSION_1 | DEVICE_FEATURE);
    h.set_up_queue(0, QUEUE_MAX, 0x1_0000);
    assert_eq!(
        h.driver_ok(),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    );
    let ctx = h.seen.ctx.lock().unwrap();
    assert_eq!(ctx.as_ref().unwrap().features, VERSION_1 | DEVICE_FEATURE);
}

#[test]
fn driver_ok_without_features_ok_is_ignored() {
    let mut h = harness();
    h.w8(DEVICE_STATUS, ACKNOWLEDGE | DRIVER);
    h.set_up_queue(0, QUEUE_MAX, 0x1_0000);
    h.w8(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER);
    // Refused features and DRIVER_OK together: neither sticks.
    h.set_driver_features(DEVICE_FEATURE);
    h.w8(
        DEVICE_STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(h.status(), ACKNOWLEDGE | DRIVER);
    assert_eq!(h.seen.activations.load(Ordering::SeqCst), 0);
}

#[test]
fn writing_zero_resets_everything() {
    let mut h = harness();
    h.start();
    h.w16(CONFIG_MSIX_VECTOR, 0);
    h.w16(QUEUE_SELECT, 0);
    h.w16(QUEUE_MSIX_VECTOR, 1);
    h.dev.interrupt().notify_queue(0);
    h.w16(QUEUE_SELECT, 1);
    h.w8(DEVICE_STATUS, 0);
    assert_eq!(h.seen.resets.load(Ordering::SeqCst), 1);
    assert_eq!(h.status(), 0);
    assert_eq!(h.isr(), 0);
    assert_eq!(h.driver_features(), 0);
    assert_eq!(h.r16(CONFIG_MSIX_VECTOR), u64::from(NO_VECTOR));
    assert_eq!(h.r16(QUEUE_SELECT), 0);
    for (q, max) in [(0, QUEUE_MAX), (1, QUEUE_MAX / 2)] {
        h.w16(QUEUE_SELECT, q);
        assert_eq!(h.r16(QUEUE_SIZE), u64::from(max));
        assert_eq!(h.r16(QUEUE_ENABLE), 0);
        assert_eq!(h.r16(QUEUE_MSIX_VECTOR), u64::from(NO_VECTOR));
        for reg in [QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE] {
            assert_eq!(h.read(reg, 8), 0);
        }
    }
    // And the device can be started again.
    h.start();
    assert_eq!(h.seen.activations.load(Ordering::SeqCst), 2);
    // Reset of a device that never started does not reset the device.
    let mut fresh = harness();
    fresh.w8(DEVICE_STATUS, 0);
    assert_eq!(fresh.seen.resets.load(Ordering::SeqCst), 0);
}

#[test]
fn queue_registers_refuse_bad_values() {
    let mut h = harness();
    h.negotiate(VERSION_1);
    // An out-of-range queue reads as absent and ignores writes.
    for q in [2, 255, u16::MAX] {
        h.w16(QUEUE_SELECT, q);
        assert_eq!(h.r16(QUEUE_SELECT), u64::from(q));
        h.w16(QUEUE_SIZE, 16);
        h.w16(QUEUE_ENABLE, 1);
        h.w64(QUEUE_DESC, 0x1000);
        h.w16(QUEUE_MSIX_VECTOR, 0);
        assert_eq!(h.r16(QUEUE_SIZE), 0);
        assert_eq!(h.r16(QUEUE_ENABLE), 0);
        assert_eq!(h.read(QUEUE_DESC, 8), 0);
        assert_eq!(h.r16(QUEUE_MSIX_VECTOR), u64::from(NO_VECTOR));
    }
    h.w16(QUEUE_SELECT, 0);
    assert_eq!(h.r16(QUEUE_NOTIFY_OFF), 0);
    for bad in [0, 3, 48, QUEUE_MAX * 2, u16::MAX] {
        h.w16(QUEUE_SIZE, bad);
        assert_eq!(h.r16(QUEUE_SIZE), u64::from(QUEUE_MAX), "size {bad}");
    }
    h.w16(QUEUE_SIZE, 16);
    assert_eq!(h.r16(QUEUE_SIZE), 16);
    // Only 1 enables; other values change nothing.
    h.w16(QUEUE_ENABLE, 2);
    assert_eq!(h.r16(QUEUE_ENABLE), 0);
    h.w16(QUEUE_SELECT, 1);
    assert_eq!(h.r16(QUEUE_SIZE), u64::from(QUEUE_MAX / 2));
    assert_eq!(h.r16(QUEUE_NOTIFY_OFF), 1);
}

#[test]
fn queue_layout_is_frozen_after_driver_ok() {
    let mut h = harness();
    h.start();
    h.w16(QUEUE_SELECT, 0);
    h.w16(QUEUE_SIZE, 16);
    h.w64(QUEUE_DESC, 0x5_0000);
    h.w32(QUEUE_DRIVER, 0x5_1000);
    h.w32(QUEUE_DEVICE + 4, 1);
    h.w16(QUEUE_SELECT, 1);
    assert_eq!(h.r16(QUEUE_ENABLE), 1);
    h.w16(QUEUE_SELECT, 0);
    assert_eq!(h.r16(QUEUE_SIZE), u64::from(QUEUE_MAX));
    assert_eq!(h.read(QUEUE_DESC, 8), 0x1_0000);
    assert_eq!(h.read(QUEUE_DRIVER, 8), 0x1_1000);
    assert_eq!(h.read(QUEUE_DEVICE, 8), 0x1_2000);
    assert_eq!(h.activated_queues(), vec![(0, QUEUE_MAX), (1, 8)]);
}

#[test]
fn queue_addresses_in_halves_or_whole() {
    let mut h = harness();
    h.w16(QUEUE_SELECT, 0);
    h.w32(QUEUE_DESC, 0xdead_b000);
    h.w32(QUEUE_DESC + 4, 0x12);
    assert_eq!(h.read(QUEUE_DESC, 8), 0x12_dead_b000);
    assert_eq!(h.r32(QUEUE_DESC), 0xdead_b000);
    assert_eq!(h.r32(QUEUE_DESC + 4), 0x12);
    h.w64(QUEUE_DRIVER, 0x3_0000_1000);
    assert_eq!(h.r32(QUEUE_DRIVER), 0x1000);
    assert_eq!(h.r32(QUEUE_DRIVER + 4), 3);
    // Replacing one half keeps the other.
    h.w32(QUEUE_DRIVER, 0x2000);
    assert_eq!(h.read(QUEUE_DRIVER, 8), 0x3_0000_2000);
    h.w32(QUEUE_DEVICE + 4, 0xffff_ffff);
    h.w32(QUEUE_DEVICE, 4);
    assert_eq!(h.read(QUEUE_DEVICE, 8), 0xffff_ffff_0000_0004);
    // A 64-bit access at a high half, or 2 bytes of an address, is not a
    // register: ignored, and reads as zero.
    h.w64(QUEUE_DESC + 4, u64::MAX);
    h.write(QUEUE_DESC, &[1, 2]);
    assert_eq!(h.read(QUEUE_DESC, 8), 0x12_dead_b000);
    assert_eq!(h.read(QUEUE_DESC + 4, 8), 0);
    assert_eq!(h.read(QUEUE_DESC, 2), 0);
}

#[test]
fn rings_outside_memory_set_needs_reset_and_raise_a_config_interrupt() {
    let cases = [
        // Descriptor table running past the end of memory.
        (MEM_SIZE - 0x80, 0x1000, 0x2000),
        // Available ring far away.
        (0x1000, 1 << 40, 0x2000),
        // Used ring straddling the end.
        (0x1000, 0x2000, MEM_SIZE - 0x10),
        // Misaligned descriptor table.
        (0x1001, 0x2000, 0x3000),
    ];
    for (desc, driver, device) in cases {
        let mut h = harness();
        h.enable_msix_vector(2);
        let routes = h.routes.0.lock().unwrap().clone();
        assert!(
            routes.contains(&(42, Some((0xfee0_0000, 0x30)))),
            "{routes:x?}"
        );
        h.negotiate(VERSION_1);
        h.w16(CONFIG_MSIX_VECTOR, 2);
        h.w16(QUEUE_SELECT, 0);
        h.w16(QUEUE_SIZE, 16);
        h.w64(QUEUE_DESC, desc);
        h.w64(QUEUE_DRIVER, driver);
        h.w64(QUEUE_DEVICE, device);
        h.w16(QUEUE_ENABLE, 1);
        let generation = h.r8(CONFIG_GENERATION);
        let status = h.driver_ok();
        assert_eq!(
            status & NEEDS_RESET,
            NEEDS_RESET,
            "{desc:#x} {driver:#x} {device:#x}"
        );
        assert_eq!(h.seen.activations.load(Ordering::SeqCst), 0);
        assert_eq!(h.r8(CONFIG_GENERATION), generation + 1);
        assert_eq!(h.irqfds[2].read().unwrap(), 1);
        assert_eq!(h.isr(), 2);
        // NEEDS_RESET sticks through later status writes, until reset.
        h.w8(DEVICE_STATUS, status & !NEEDS_RESET);
        assert_eq!(h.status() & NEEDS_RESET, NEEDS_RESET);
        h.w8(DEVICE_STATUS, 0);
        assert_eq!(h.status(), 0);
    }
}

#[test]
fn msix_vectors_beyond_the_table_read_back_no_vector() {
    let mut h = harness();
    // Two queues: vectors 0..3 exist.
    for (v, want) in [
        (0, 0),
        (2, 2),
        (3, NO_VECTOR),
        (0x7ff, NO_VECTOR),
        (NO_VECTOR, NO_VECTOR),
    ] {
        h.w16(CONFIG_MSIX_VECTOR, v);
        assert_eq!(
            h.r16(CONFIG_MSIX_VECTOR),
            u64::from(want),
            "config vector {v}"
        );
        h.w16(QUEUE_SELECT, 1);
        h.w16(QUEUE_MSIX_VECTOR, v);
        assert_eq!(
            h.r16(QUEUE_MSIX_VECTOR),
            u64::from(want),
            "queue vector {v}"
        );
    }
}

#[test]
fn notifications_on_queues_not_set_up_are_harmless() {
    let mut h = harness();
    let notify = h.layout.notify;
    let m = h.layout.notify_multiplier;
    // Before DRIVER_OK, on a queue that exists and on ones that do not.
    for q in [0, 1, 2, 100, 0x3ff] {
        h.dev.bar_write(0, notify + q * m, &0u16.to_le_bytes());
    }
    h.dev.bar_write(0, notify + 3, &[1]);
    h.dev.bar_write(0, notify + 0xfff, &[1]);
    assert_eq!(h.status(), 0);
    assert_eq!(h.seen.activations.load(Ordering::SeqCst), 0);
    // Activation starts with no stale kick from before.
    h.start();
    {
        let ctx = h.seen.ctx.lock().unwrap();
        for q in &ctx.as_ref().unwrap().queues {
            assert!(q.kick.read().is_err(), "queue {} has a stale kick", q.index);
        }
    }
    // Once live, a doorbell write reaches the queue's eventfd.
    h.dev.bar_write(0, notify + m, &1u16.to_le_bytes());
    let ctx = h.seen.ctx.lock().unwrap();
    let queues = &ctx.as_ref().unwrap().queues;
    assert_eq!(queues[1].kick.read().unwrap(), 1);
    assert!(queues[0].kick.read().is_err());
}

#[test]
fn reading_the_isr_clears_it() {
    let mut h = harness();
    h.start();
    let ctx_interrupt = h
        .seen
        .ctx
        .lock()
        .unwrap()
        .as_ref()
        .unwrap()
        .interrupt
        .clone();
    ctx_interrupt.notify_queue(0);
    assert_eq!(h.isr(), 1);
    assert_eq!(h.isr(), 0);
    ctx_interrupt.notify_queue(1);
    ctx_interrupt.notify_config();
    assert_eq!(h.isr(), 3);
    assert_eq!(h.isr(), 0);
    // An empty read reads nothing and clears nothing.
    ctx_interrupt.notify_queue(0);
    h.dev.bar_read(0, h.layout.isr, &mut []);
    assert_eq!(h.isr(), 1);
    // Writes to the ISR do nothing.
    ctx_interrupt.notify_queue(0);
    h.dev.bar_write(0, h.layout.isr, &[0]);
    assert_eq!(h.isr(), 1);
    // A queue index the device does not have sets the ISR, raises nothing.
    ctx_interrupt.notify_queue(u16::MAX);
    assert_eq!(h.isr(), 1);
}

#[test]
fn device_configuration_is_read_only() {
    let mut h = harness();
    let base = h.layout.device;
    let read = |h: &mut Harness, off: u64, len: usize| {
        let mut b = [0u8; 8];
        h.dev.bar_read(0, base + off, &mut b[..len]);
        u64::from_le_bytes(b)
    };
    assert_eq!(read(&mut h, 0, 8), 0x8877_6655_4433_2211);
    for (off, len) in [(0, 1), (0, 4), (0, 8), (3, 2), (6, 4), (0xffc, 4)] {
        h.dev.bar_write(0, base + off, &[0xaa; 8][..len]);
    }
    assert_eq!(read(&mut h, 0, 8), 0x8877_6655_4433_2211);
    assert_eq!(read(&mut h, 4, 4), 0x8877_6655);
    // Past the device's configuration: zeroes.
    assert_eq!(read(&mut h, 6, 4), 0x8877);
    assert_eq!(read(&mut h, 0xff8, 8), 0);
}

#[test]
fn block_configuration_is_read_only() {
    use crate::block::{Block, BlockConfig};
    let path = std::env::temp_dir().join(format!("vireo-transport-{}.raw", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let disk = block::open(&path, &block::OpenOptions::default()).unwrap();
    let _ = std::fs::remove_file(&path);
    let block = Block::new(BlockConfig {
        disk,
        serial: String::new(),
        queues: 1,
        io_workers: 1,
        error_policy: crate::block::ErrorPolicy::default(),
        on_stop: None,
    });
    let mut h = wrap(Box::new(block), Arc::new(Seen::default()));
    let base = h.layout.device;
    let mut before = [0u8; 60];
    h.dev.bar_read(0, base, &mut before);
    assert_eq!(u64::from_le_bytes(before[..8].try_into().unwrap()), 2048);
    for off in (0..60).step_by(4) {
        h.dev.bar_write(0, base + off, &[0x5a; 4]);
    }
    h.dev.bar_write(0, base, &[0x5a; 8]);
    let mut after = [0u8; 60];
    h.dev.bar_read(0, base, &mut after);
    assert_eq!(before, after);
}

#[test]
fn bar_moves_move_the_doorbells() {
    let h = harness();
    let ioevents = h.ioevents.clone();
    let (notify, m) = (h.layout.notify, h.layout.notify_multiplier);
    let bus = PciBus::new(&[WINDOW]);
    let shared: Arc<Mutex<VirtioPciDevice>> = Arc::new(Mutex::new(h.dev));
    let as_pci: SharedPciDevice = shared.clone();
    let slot = bus.add_device(None, as_pci).unwrap();
    // Program BAR 0 (64-bit) and turn memory decoding on, as firmware does.
    let place = |addr: u64| {
        let lo = u32::try_from(addr & 0xffff_ffff).unwrap();
        let hi = u32::try_from(addr >> 32).unwrap();
        bus.config_write(0, slot, 0, 0x10, &lo.to_le_bytes());
        bus.config_write(0, slot, 0, 0x14, &hi.to_le_bytes());
    };
    place(BAR_BASE);
    bus.config_write(0, slot, 0, 0x04, &6u16.to_le_bytes());
    let doorbells = |base: u64| vec![base + notify, base + notify + m];
    // The doorbells registered and not since removed.
    let live = || {
        let mut live: Vec<u64> = Vec::new();
        for &(register, addr) in ioevents.0.lock().unwrap().iter() {
            if register {
                live.push(addr);
            } else {
                let at = live.iter().position(|&a| a == addr).expect("removed twice");
                live.remove(at);
            }
        }
        live.sort_unstable();
        live
    };
    assert_eq!(live(), doorbells(BAR_BASE));
    // Move it: the old doorbells go, the new ones come.
    let moved = BAR_BASE + 0x10_0000;
    place(moved);
    assert_eq!(live(), doorbells(moved));
    assert!(ioevents
        .0
        .lock()
        .unwrap()
        .contains(&(false, BAR_BASE + notify)));
    // Accesses follow the BAR: the common configuration answers at the new place.
    let mut n = [0u8; 2];
    bus.mmio_read(moved + NUM_QUEUES, &mut n);
    assert_eq!(u16::from_le_bytes(n), 2);
    bus.mmio_read(BAR_BASE + NUM_QUEUES, &mut n);
    assert_eq!(n, [0xff, 0xff]);
    // Memory decoding off: every doorbell goes.
    bus.config_write(0, slot, 0, 0x04, &0u16.to_le_bytes());
    assert_eq!(live(), Vec::<u64>::new());
    // A BAR placed outside the bus's windows registers nothing.
    place(0x1000);
    bus.config_write(0, slot, 0, 0x04, &6u16.to_le_bytes());
    assert_eq!(live(), Vec::<u64>::new());
    drop(shared);
}

#[test]
fn odd_sizes_and_offsets_everywhere_are_survived() {
    let mut h = harness();
    h.start();
    let lens = [0usize, 1, 2, 3, 4, 5, 6, 7, 8];
    let offsets = (0..0x60u64)
        .chain([
            0xfff, 0x1000, 0x1001, 0x1003, 0x1fff, 0x2ffe, 0x2fff, 0x3000,
        ])
        .chain([
            0x3001, 0x3ffe, 0x3fff, 0x4000, 0x4001, 0x402e, 0x5ffc, 0x5fff,
        ])
        .chain([0x6000, 0x6001, 0x6007, 0x7ff8, 0x7fff, 0x8000, 0x1_0000])
        .chain([u64::MAX - 8, u64::MAX]);
    for off in offsets {
        for &len in &lens {
            let mut buf = [0u8; 8];
            h.dev.bar_read(0, off, &mut buf[..len]);
            h.dev.bar_read(1, off, &mut buf[..len]);
            assert_eq!(buf, [0; 8], "BAR 1 read at {off:#x}");
            // Common configuration writes with garbage could reset or
            // re-negotiate; keep them to reads there and write elsewhere.
            if off >= 0x100 {
                h.dev.bar_write(0, off, &[0xa5; 8][..len]);
            }
            h.dev.bar_write(5, off, &[0xa5; 8][..len]);
        }
    }
    // Common configuration: writes of sizes that are not the register's.
    for off in 0..0x40u64 {
        for len in [0usize, 3, 5, 6, 7] {
            h.dev.bar_write(0, off, &[0xff; 8][..len]);
        }
    }
    assert_eq!(h.status() & DRIVER_OK, DRIVER_OK);
    // Configuration space: every offset and size, through the end.
    for off in 0..4100usize {
        for len in [1usize, 2, 3, 4, 8] {
            if (0x10..0x28).contains(&off) || (4..6).contains(&off) {
                continue; // moving BARs is the previous test's business
            }
            h.dev.config_write(off, &[0x5a; 8][..len]);
        }
    }
    for reg in 0..1100 {
        h.dev.config_read(reg);
    }
    assert_eq!(h.r16(NUM_QUEUES), 2);
    h.w8(DEVICE_STATUS, 0);
    assert_eq!(h.status(), 0);
}

#[test]
fn pci_configuration_access_reaches_bar0() {
    let mut h = harness();
    let cap = h.layout.pci_cfg_cap;
    let data = cap + 16;
    let select = |h: &mut Harness, bar: u8, offset: u32, len: u32| {
        h.dev.config_write(cap + 4, &[bar]);
        h.dev.config_write(cap + 8, &offset.to_le_bytes());
        h.dev.config_write(cap + 12, &len.to_le_bytes());
    };
    // Read num_queues (2 bytes at 0x12).
    select(&mut h, 0, u32::try_from(NUM_QUEUES).unwrap(), 2);
    assert_eq!(cfg_dword(&mut h.dev, data) & 0xffff, 2);
    // Write queue_select through the window, read it back through the BAR.
    select(&mut h, 0, u32::try_from(QUEUE_SELECT).unwrap(), 2);
    h.dev.config_write(data, &1u32.to_le_bytes());
    assert_eq!(h.r16(QUEUE_SELECT), 1);
    assert_eq!(cfg_dword(&mut h.dev, data) & 0xffff, 1);
    // The device status, one byte.
    select(&mut h, 0, u32::try_from(DEVICE_STATUS).unwrap(), 1);
    h.dev.config_write(data, &[ACKNOWLEDGE]);
    assert_eq!(h.status(), ACKNOWLEDGE);
    // Device configuration through the window.
    let device = u32::try_from(h.layout.device).unwrap();
    select(&mut h, 0, device + 4, 4);
    assert_eq!(cfg_dword(&mut h.dev, data), 0x8877_6655);
    // Invalid selections reach no register: another BAR, a length of 3
    // or 8, a misaligned offset, an offset far past the BAR.
    for (bar, offset, len) in [
        (1, QUEUE_SELECT, 2),
        (0, QUEUE_SELECT, 3),
        (0, QUEUE_SELECT, 8),
        (0, QUEUE_SELECT + 1, 2),
        (0, 0xffff_fffc, 4),
        (0xff, QUEUE_SELECT, 2),
    ] {
        select(&mut h, bar, u32::try_from(offset).unwrap(), len);
        h.dev.config_write(data, &7u32.to_le_bytes());
        cfg_dword(&mut h.dev, data);
        assert_eq!(
            h.r16(QUEUE_SELECT),
            1,
            "bar {bar} offset {offset:#x} len {len}"
        );
    }
}
