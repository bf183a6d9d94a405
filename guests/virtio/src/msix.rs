//! `msix`: proves that a virtio device's MSI-X interrupt reaches the local
//! APIC, with interrupts still off. The guest programs a table entry of the
//! first virtio-rng function (address 0xfee00000: APIC ID 0, physical; data:
//! a fixed, edge-triggered vector), points the request queue at it, makes the
//! device complete a request and then watches the vector appear in the local
//! APIC's IRR. With IF=0 an accepted interrupt is never serviced, so it stays
//! in the IRR where CPL 3 code can read it through the xAPIC MMIO page
//! (identity-mapped, user-accessible, handled by KVM's in-kernel LAPIC).
//!
//! Then masking: with the entry masked (and then with the function masked) a
//! completed request must leave the vector out of the IRR and set the
//! entry's pending bit; unmasking must deliver it and clear the bit. Each
//! phase uses its own vector, since the earlier one stays pending forever.
//! The driver runs without EVENT_IDX, which would make interrupts racy for a
//! polling driver (see vectored.rs).

use crate::hal::GuestHal;
use crate::pci::{self, Function, Root};
use crate::say;
use crate::time::wait_until;
use crate::vectored::{self, Vectored};
use crate::watch::Watched;
use core::ptr::{read_volatile, write_volatile};
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::pci::bus::DeviceFunction;

const LAPIC: u64 = 0xfee0_0000;
const LAPIC_ID: u64 = 0x20;
const LAPIC_VERSION: u64 = 0x30;
const LAPIC_SVR: u64 = 0xf0;
const LAPIC_ISR: u64 = 0x100;
const LAPIC_IRR: u64 = 0x200;
const SVR_ENABLE: u32 = 1 << 8;
const SPURIOUS_VECTOR: u32 = 0xff;

const MSIX_CAP_ID: u8 = 0x11;
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const ENTRY_MASKED: u32 = 1;

/// The table entry the request queue is pointed at: not 0, so a device
/// that ignores the queue's vector number and always uses entry 0 fails.
const ENTRY: u16 = 1;
/// One vector per phase: delivery, entry mask, function mask.
const VECTOR_DELIVER: u8 = 0x51;
const VECTOR_ENTRY_MASK: u8 = 0x52;
const VECTOR_FUNCTION_MASK: u8 = 0x53;
/// How long a delivered vector may take to show up in the IRR.
const DELIVERY_MS: u64 = 1000;
/// How long a masked vector is watched to make sure it does not arrive.
const HOLD_MS: u64 = 100;
const NO_VECTOR: u16 = 0xffff;
const CAP_COMMON: u16 = 1;
const CAP_ISR: u16 = 3;

type Rng = VirtIORng<GuestHal, Vectored<Watched>>;

fn read32(addr: u64) -> u32 {
    // SAFETY: addresses below 4 GiB are identity-mapped by longmode.S; the
    // callers pass LAPIC, ECAM or BAR registers.
    unsafe { read_volatile(addr as *const u32) }
}

fn write32(addr: u64, value: u32) {
    // SAFETY: as for read32.
    unsafe { write_volatile(addr as *mut u32, value) }
}

fn read16(addr: u64) -> u16 {
    // SAFETY: as for read32.
    unsafe { read_volatile(addr as *const u16) }
}

fn write16(addr: u64, value: u16) {
    // SAFETY: as for read32.
    unsafe { write_volatile(addr as *mut u16, value) }
}

/// Whether `vector`'s bit is set in the LAPIC register array at `base`
/// (IRR or ISR: eight 32-bit registers 16 bytes apart).
fn apic_bit(base: u64, vector: u8) -> bool {
    let reg = LAPIC + base + 0x10 * u64::from(vector / 32);
    read32(reg) & (1 << (vector % 32)) != 0
}

/// The 256-bit IRR or ISR as hex, highest register first, for failures.
struct ApicBits(u64);

impl core::fmt::Display for ApicBits {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        for i in (0..8).rev() {
            write!(f, "{:08x}", read32(LAPIC + self.0 + 0x10 * i))?;
        }
        Ok(())
    }
}

/// Where the function's MSI-X structures are.
struct MsixLayout {
    /// Configuration-space address of the capability (ECAM).
    cap: u64,
    table: u64,
    pba: u64,
    size: u16,
}

impl MsixLayout {
    fn control(&self) -> u16 {
        read16(self.cap + 2)
    }

    fn set_control(&self, value: u16) {
        write16(self.cap + 2, value)
    }

    fn entry(&self, n: u16) -> u64 {
        self.table + 16 * u64::from(n)
    }

    fn program(&self, n: u16, vector: u8, masked: bool) {
        let e = self.entry(n);
        write32(e + 12, ENTRY_MASKED);
        write32(e, LAPIC as u32);
        write32(e + 4, 0);
        write32(e + 8, u32::from(vector));
        if !masked {
            write32(e + 12, 0);
        }
    }

    fn set_masked(&self, n: u16, masked: bool) {
        write32(self.entry(n) + 12, u32::from(masked));
    }

    fn pending(&self, n: u16) -> bool {
        let word = self.pba + 8 * u64::from(n / 64);
        let bits = u64::from(read32(word)) | u64::from(read32(word + 4)) << 32;
        bits & (1 << (n % 64)) != 0
    }

    fn describe_entry(&self, n: u16) -> EntryText {
        let e = self.entry(n);
        EntryText([read32(e), read32(e + 4), read32(e + 8), read32(e + 12)])
    }
}

struct EntryText([u32; 4]);

impl core::fmt::Display for EntryText {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        let [lo, hi, data, control] = self.0;
        write!(
            f,
            "addr={:#x}:{:08x} data={:#x} ctrl={:#x}",
            hi, lo, data, control
        )
    }
}

fn config_base(ecam: u64, df: DeviceFunction) -> u64 {
    ecam + (u64::from(df.bus) << 20) + (u64::from(df.device) << 15) + (u64::from(df.function) << 12)
}

fn find_msix(root: &mut Root, ecam: u64, df: DeviceFunction) -> Result<MsixLayout, &'static str> {
    let cap = root
        .capabilities(df)
        .find(|c| c.id == MSIX_CAP_ID)
        .ok_or("no MSI-X capability")?;
    let cap = config_base(ecam, df) + u64::from(cap.offset);
    let table = read32(cap + 4);
    let pba = read32(cap + 8);
    let mut bar_address = |bir: u32| -> Option<u64> {
        let info = root.bar_info(df, (bir & 7) as u8).ok().flatten()?;
        let (address, _) = info.memory_address_size()?;
        (address != 0).then_some(address)
    };
    let table_bar = bar_address(table).ok_or("MSI-X table BAR not assigned")?;
    let pba_bar = bar_address(pba).ok_or("MSI-X PBA BAR not assigned")?;
    Ok(MsixLayout {
        cap,
        table: table_bar + u64::from(table & !7),
        pba: pba_bar + u64::from(pba & !7),
        size: (read16(cap + 2) & 0x7ff) + 1,
    })
}

/// Makes the device complete one request (16 bytes of entropy).
fn complete_request(rng: &mut Rng) -> Result<(), virtio_drivers::Error> {
    let mut buf = [0u8; 16];
    rng.request_entropy(&mut buf).map(|_| ())
}

pub fn run(root: &mut Root, ecam: u64, function: &Function) {
    // 1. The local APIC: KVM's in-kernel xAPIC, software-enabled here.
    let version = read32(LAPIC + LAPIC_VERSION);
    let id = read32(LAPIC + LAPIC_ID);
    let svr = read32(LAPIC + LAPIC_SVR);
    say!(
        "virtio-msix: lapic id={:#x} version={:#x} svr={:#x}",
        id,
        version,
        svr
    );
    if version == 0 || version == 0xffff_ffff {
        return say!(
            "virtio-msix: FAIL no local APIC at {:#x} (version register reads {:#x})",
            LAPIC,
            version
        );
    }
    if svr & SVR_ENABLE == 0 {
        write32(LAPIC + LAPIC_SVR, svr | SVR_ENABLE | SPURIOUS_VECTOR);
        let now = read32(LAPIC + LAPIC_SVR);
        if now & SVR_ENABLE == 0 {
            return say!(
                "virtio-msix: FAIL lapic svr stays {:#x} after enabling",
                now
            );
        }
    }
    for vector in [VECTOR_DELIVER, VECTOR_ENTRY_MASK, VECTOR_FUNCTION_MASK] {
        if apic_bit(LAPIC_IRR, vector) {
            return say!(
                "virtio-msix: FAIL vector {:#x} already in IRR before the test ({})",
                vector,
                ApicBits(LAPIC_IRR)
            );
        }
    }

    // 2. The function's MSI-X table, through the capability in ECAM.
    let msix = match find_msix(root, ecam, function.df) {
        Ok(m) => m,
        Err(e) => return say!("virtio-msix: FAIL {}: {}", function.df, e),
    };
    say!(
        "virtio-msix: {} table={:#x} pba={:#x} vectors={} control={:#x}",
        function.df,
        msix.table,
        msix.pba,
        msix.size,
        msix.control()
    );
    if msix.size <= ENTRY {
        return say!("virtio-msix: FAIL only {} vectors", msix.size);
    }

    let (Some(common), Some(isr)) = (
        virtio_region(root, ecam, function.df, CAP_COMMON),
        virtio_region(root, ecam, function.df, CAP_ISR),
    ) else {
        return say!("virtio-msix: FAIL no common configuration or ISR capability");
    };

    // The entry programmed and unmasked, then MSI-X enabled (function
    // unmasked), before the driver sets the device up, as Linux does.
    msix.program(ENTRY, VECTOR_DELIVER, false);
    msix.set_control((msix.control() | CONTROL_ENABLE) & !CONTROL_FUNCTION_MASK);
    let control = msix.control();
    if control & CONTROL_ENABLE == 0 {
        return say!(
            "virtio-msix: FAIL MSI-X enable does not stick (control {:#x})",
            control
        );
    }

    // 3. A fresh driver (its init resets the device, so the earlier rng
    // run leaves nothing behind); the wrapper points the request queue at
    // the entry while the queue is set up.
    let transport = match pci::transport(
        root,
        ecam,
        function,
        "virtio-msix",
        Some(crate::rng::REQUEST_QUEUE),
    ) {
        Ok(t) => Vectored::new(t, common, crate::rng::REQUEST_QUEUE, ENTRY),
        Err(e) => return say!("virtio-msix: FAIL transport {}: {}", function.df, e),
    };
    let mut rng = match VirtIORng::<GuestHal, _>::new(transport) {
        Ok(rng) => rng,
        Err(e) => return say!("virtio-msix: FAIL init: {}", e),
    };
    match vectored::read_back() {
        Some(ENTRY) => {
            // A failing phase has said why; the phases after it are skipped.
            let _ = phases(&msix, isr, &mut rng);
        }
        Some(got) => say!(
            "virtio-msix: FAIL queue_msix_vector reads {:#x} after writing {} ({})",
            got,
            ENTRY,
            if got == NO_VECTOR {
                "device refused"
            } else {
                "unexpected"
            }
        ),
        None => say!("virtio-msix: FAIL the driver never set up the request queue"),
    }
    // Dropping would reset the device through the crate's unbounded wait.
    core::mem::forget(rng);
}

/// The address of the function's region of virtio `cfg_type` (the first
/// vendor capability of that type): 1 common configuration, 3 ISR.
fn virtio_region(root: &mut Root, ecam: u64, df: DeviceFunction, cfg_type: u16) -> Option<u64> {
    const VENDOR_CAP: u8 = 0x09;
    let base = config_base(ecam, df);
    let offset = root
        .capabilities(df)
        .find(|c| c.id == VENDOR_CAP && c.private_header >> 8 == cfg_type)?
        .offset;
    let cap = base + u64::from(offset);
    let bar = (read32(cap + 4) & 0xff) as u8;
    let region = u64::from(read32(cap + 8));
    let (address, _) = root
        .bar_info(df, bar)
        .ok()
        .flatten()?
        .memory_address_size()?;
    Some(address + region)
}

fn phases(msix: &MsixLayout, isr: u64, rng: &mut Rng) -> Result<(), ()> {
    // 4. Delivery.
    request(rng)?;
    if !wait_until(DELIVERY_MS, || apic_bit(LAPIC_IRR, VECTOR_DELIVER)) {
        return fail_missing(msix, VECTOR_DELIVER, "after a completed request");
    }
    say!("virtio-msix: ok vector {:#x} in IRR", VECTOR_DELIVER);

    // 5. Entry mask: held in the PBA, delivered on unmask.
    msix.program(ENTRY, VECTOR_ENTRY_MASK, true);
    held(msix, isr, rng, VECTOR_ENTRY_MASK, "entry masked")?;
    msix.set_masked(ENTRY, false);
    released(msix, VECTOR_ENTRY_MASK, "unmasking the entry")?;
    say!("virtio-msix: ok masked vector held in PBA and delivered on unmask");

    // 6. Function mask: the same, through message control bit 14.
    msix.program(ENTRY, VECTOR_FUNCTION_MASK, false);
    msix.set_control(msix.control() | CONTROL_FUNCTION_MASK);
    held(msix, isr, rng, VECTOR_FUNCTION_MASK, "function masked")?;
    msix.set_control(msix.control() & !CONTROL_FUNCTION_MASK);
    released(msix, VECTOR_FUNCTION_MASK, "clearing the function mask")?;
    say!("virtio-msix: ok function mask held vector in PBA and delivered on unmask");
    Ok(())
}

/// Reads (and so clears) the ISR status.
fn read_isr(isr: u64) -> u8 {
    // SAFETY: the ISR register lies in the function's BAR, identity-mapped.
    unsafe { read_volatile(isr as *const u8) }
}

fn request(rng: &mut Rng) -> Result<(), ()> {
    complete_request(rng).map_err(|e| say!("virtio-msix: FAIL request: {}", e))
}

/// With `vector` masked (`how`), a completed request must set the pending
/// bit and leave the IRR alone. `isr` is the ISR status register, read
/// (and so cleared) before the request and shown after it on failure: bit 0
/// set says the device did raise a queue interrupt.
fn held(msix: &MsixLayout, isr: u64, rng: &mut Rng, vector: u8, how: &str) -> Result<(), ()> {
    if msix.pending(ENTRY) {
        say!(
            "virtio-msix: FAIL {}: pending bit set before the request",
            how
        );
        return Err(());
    }
    read_isr(isr);
    request(rng)?;
    // The device raises the interrupt after it marks the buffer used: give
    // it time to (wrongly) arrive, and for the pending bit to be set.
    let pending = wait_until(DELIVERY_MS, || msix.pending(ENTRY));
    let leaked = wait_until(HOLD_MS, || apic_bit(LAPIC_IRR, vector));
    if leaked {
        say!(
            "virtio-msix: FAIL {}: vector {:#x} reached the IRR anyway (pending bit {})",
            how,
            vector,
            u8::from(msix.pending(ENTRY))
        );
        return Err(());
    }
    if !pending {
        say!(
            "virtio-msix: FAIL {}: pending bit for entry {} not set after a completed request (pba={:#x} {} control={:#x} isr={:#x})",
            how,
            ENTRY,
            read32(msix.pba),
            msix.describe_entry(ENTRY),
            msix.control(),
            read_isr(isr)
        );
        return Err(());
    }
    Ok(())
}

/// After `how`, the held `vector` must reach the IRR and the pending bit
/// must clear.
fn released(msix: &MsixLayout, vector: u8, how: &str) -> Result<(), ()> {
    if !wait_until(DELIVERY_MS, || apic_bit(LAPIC_IRR, vector)) {
        return fail_missing(msix, vector, how);
    }
    if msix.pending(ENTRY) {
        say!(
            "virtio-msix: FAIL pending bit still set after {} (pba={:#x})",
            how,
            read32(msix.pba)
        );
        return Err(());
    }
    Ok(())
}

fn fail_missing(msix: &MsixLayout, vector: u8, when: &str) -> Result<(), ()> {
    say!(
        "virtio-msix: FAIL vector {:#x} not in IRR within {} ms {} (irr={} isr={} svr={:#x} {} control={:#x} pba={:#x})",
        vector,
        DELIVERY_MS,
        when,
        ApicBits(LAPIC_IRR),
        ApicBits(LAPIC_ISR),
        read32(LAPIC + LAPIC_SVR),
        msix.describe_entry(ENTRY),
        msix.control(),
        read32(msix.pba)
    );
    Err(())
}
