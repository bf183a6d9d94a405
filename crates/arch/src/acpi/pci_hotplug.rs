//! ACPI PCI hot-plug of bus 0: what goes inside `\_SB.PCI0` so an OS's
//! ACPI hot-plug driver (Linux: acpiphp) handles slots 1 to 31.
//!
//! ```text
//! OperationRegion (PCST, SystemMemory, mmio, 12)
//! Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32, B0EJ, 32 }
//! Method (_OSC, 4) { ... }            // the OS may have everything but native hot-plug
//! Method (PCNT, 0, Serialized) {      // the GED's _EVT calls this
//!     Local0 = PCIU                   // both read to clear: read once each
//!     Local1 = PCID
//!     If (Local0 & 0x2) { Notify (S01, 1) }   // device check: a device came
//!     If (Local1 & 0x2) { Notify (S01, 3) }   // eject request
//!     ...                                      // up to S1F
//! }
//! Device (S01) {                      // one per slot 1..=31
//!     Name (_ADR, 0x00010000)         // slot << 16, function 0
//!     Name (_SUN, 1)
//!     Method (_EJ0, 1) { B0EJ = 0x2 } // the OS let go of the slot
//! }
//! ```
//!
//! The slots have no `_STA`, so the OS looks at config space to see
//! whether a slot holds a device: the VMM puts a device on the bus before
//! announcing it and takes it off only after the guest's `_EJ0`.

use acpi_tables::aml::{
    And, Arg, CreateDWordField, Device, Else, Equal, Field, FieldAccessType, FieldEntry,
    FieldLockRule, FieldUpdateRule, If, Local, Method, Name, NotEqual, Notify, OpRegion,
    OpRegionSpace, Or, Path, Return, Store, Uuid, ZERO,
};
use acpi_tables::Aml;

use super::pci::RawAml;
use crate::layout::{PCI_HOTPLUG_B0EJ_OFFSET, PCI_HOTPLUG_PCID_OFFSET, PCI_HOTPLUG_PCIU_OFFSET};

/// The field below lays the registers out back to back from offset 0.
const _: () = assert!(
    PCI_HOTPLUG_PCIU_OFFSET == 0 && PCI_HOTPLUG_PCID_OFFSET == 4 && PCI_HOTPLUG_B0EJ_OFFSET == 8
);
/// Bytes of the three registers.
const REGISTERS_LEN: u8 = 12;
/// Slots that can be hot-plugged: all of bus 0 but the host bridge's.
const SLOTS: std::ops::Range<u32> = 1..32;
/// `Notify` values (ACPI 6.5, table 5.174).
const NOTIFY_DEVICE_CHECK: u8 = 1;
const NOTIFY_EJECT_REQUEST: u8 = 3;

/// `_OSC` UUID of PCI/PCIe host bridges.
const PCI_HOST_BRIDGE_OSC_UUID: &str = "33DB4D5B-1FF7-401C-9657-7441C03DD766";
/// `_OSC` control bits the platform keeps: native PCIe hot-plug (bit 0)
/// and SHPC hot-plug (bit 1). Granting either would make the OS look for
/// hot-plug hardware that does not exist instead of listening to ACPI.
const OSC_KEPT_CONTROLS: u32 = 0b11;
/// `_OSC` status bits (in the first capabilities dword).
const OSC_UNRECOGNIZED_UUID: u32 = 1 << 2;
const OSC_CAPABILITIES_MASKED: u32 = 1 << 4;

/// The hot-plug objects of `\_SB.PCI0`, serialized back to back, for the
/// registers at `mmio`.
pub(super) fn bridge_objects(mmio: u64) -> RawAml {
    let region = OpRegion::new(
        Path::new("PCST"),
        OpRegionSpace::SystemMemory,
        &mmio,
        &REGISTERS_LEN,
    );
    // DWordAcc: PCIU and PCID clear on read, so each must be read by one
    // access covering the whole register.
    let field = Field::new(
        Path::new("PCST"),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![
            FieldEntry::Named(*b"PCIU", 32),
            FieldEntry::Named(*b"PCID", 32),
            FieldEntry::Named(*b"B0EJ", 32),
        ],
    );
    let osc = osc();
    let pcnt = pcnt();
    let slots: Vec<RawAml> = SLOTS.map(slot_device).collect();

    let mut objects: Vec<&dyn Aml> = vec![&region, &field, &osc, &pcnt];
    objects.extend(slots.iter().map(|s| s as &dyn Aml));
    RawAml::concat(&objects)
}

/// The four-character name of `slot`'s device: `S01_` .. `S1F_` (ASL
/// shows them as `S01` .. `S1F`).
fn slot_name(slot: u32) -> String {
    format!("S{slot:02X}_")
}

/// `Device (Sxx)` for `slot`.
fn slot_device(slot: u32) -> RawAml {
    let adr = Name::new(Path::new("_ADR"), &(slot << 16));
    let sun = Name::new(Path::new("_SUN"), &slot);
    let bit = 1u32 << slot;
    let b0ej = Path::new("\\_SB_.PCI0.B0EJ");
    let eject = Store::new(&b0ej, &bit);
    let ej0 = Method::new(Path::new("_EJ0"), 1, false, vec![&eject]);
    RawAml::of(&Device::new(
        Path::new(&slot_name(slot)),
        vec![&adr, &sun, &ej0],
    ))
}

/// `Method (PCNT)`: read which slots changed and notify each.
fn pcnt() -> RawAml {
    let up = Local(0);
    let down = Local(1);
    let (pciu, pcid) = (Path::new("PCIU"), Path::new("PCID"));
    let read_up = Store::new(&up, &pciu);
    let read_down = Store::new(&down, &pcid);
    let per_slot: Vec<(RawAml, RawAml)> = SLOTS
        .map(|slot| {
            let bit = 1u32 << slot;
            let device = Path::new(&slot_name(slot));
            let notify = |bitmap: &Local, value: u8| {
                let set = And::new(&ZERO, bitmap, &bit);
                RawAml::of(&If::new(&set, vec![&Notify::new(&device, &value)]))
            };
            (
                notify(&up, NOTIFY_DEVICE_CHECK),
                notify(&down, NOTIFY_EJECT_REQUEST),
            )
        })
        .collect();
    let mut body: Vec<&dyn Aml> = vec![&read_up, &read_down];
    for (added, removed) in &per_slot {
        body.push(added);
        body.push(removed);
    }
    // Serialized: two runs at once would split one read's bits between them
    // and notify out of order.
    RawAml::of(&Method::new(Path::new("PCNT"), 0, true, body))
}

/// `Method (_OSC, 4)`: grants the OS every PCIe feature it asks for but
/// native and SHPC hot-plug, so hot-plug stays with ACPI (these slots are
/// root complex integrated: there is no hot-plug controller to drive).
///
/// ```text
/// CreateDWordField (Arg3, 0, CDW1)
/// If (Arg0 == ToUUID ("33db4d5b-1ff7-401c-9657-7441c03dd766")) {
///     CreateDWordField (Arg3, 8, CDW3)
///     Local0 = CDW3 & ~3
///     If (Local0 != CDW3) { CDW1 |= 0x10 }     // capabilities masked
///     CDW3 = Local0
/// } Else {
///     CDW1 |= 4                                // unrecognized UUID
/// }
/// Return (Arg3)
/// ```
fn osc() -> RawAml {
    let cdw1 = Path::new("CDW1");
    let cdw3 = Path::new("CDW3");
    let granted = Local(0);
    let create_cdw1 = CreateDWordField::new(&cdw1, &Arg(3), &0u8);
    let create_cdw3 = CreateDWordField::new(&cdw3, &Arg(3), &8u8);
    let mask = !OSC_KEPT_CONTROLS;
    let grant = And::new(&granted, &cdw3, &mask);
    let masked_flag = Or::new(&cdw1, &cdw1, &OSC_CAPABILITIES_MASKED);
    let reduced = NotEqual::new(&granted, &cdw3);
    let report_masked = If::new(&reduced, vec![&masked_flag]);
    let answer = Store::new(&cdw3, &granted);
    let uuid = Uuid::new(PCI_HOST_BRIDGE_OSC_UUID);
    let is_pci = Equal::new(&Arg(0), &uuid);
    let known = If::new(&is_pci, vec![&create_cdw3, &grant, &report_masked, &answer]);
    let unknown_flag = Or::new(&cdw1, &cdw1, &OSC_UNRECOGNIZED_UUID);
    let unknown = Else::new(vec![&unknown_flag]);
    let ret = Return::new(&Arg(3));
    RawAml::of(&Method::new(
        Path::new("_OSC"),
        4,
        false,
        vec![&create_cdw1, &known, &unknown, &ret],
    ))
}
