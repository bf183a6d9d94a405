//! The Generic Event Device and the power button in the DSDT.
//!
//! A HW-reduced platform has no SCI, so events reach the guest through a
//! GED (`ACPI0013`): an interrupt in its `_CRS` and an `_EVT` method the
//! OS runs when that interrupt fires. Vireo's `_EVT` reads the event
//! register (which clears it, see `devices::ged`) and dispatches:
//!
//! ```text
//! Device (\_SB.GED_) {
//!     Name (_HID, "ACPI0013")
//!     Name (_UID, 0)
//!     Name (_CRS, ResourceTemplate () { Interrupt (Consumer, Edge, ActiveHigh, Exclusive) { irq } })
//!     OperationRegion (EREG, SystemMemory, mmio, 4)
//!     Field (EREG, DWordAcc, NoLock, WriteAsZeros) { ESTA, 32 }
//!     Method (_EVT, 1, Serialized) {
//!         Local0 = ESTA
//!         If (Local0 & 1) { Notify (\_SB.PWRB, 0x80) }     // power button pressed
//!         If (Local0 & 2) { \_SB.PCI0.PCNT () }           // PCI slots changed
//!     }
//! }
//! Device (\_SB.PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, 0) }
//! ```
//!
//! The interrupt is edge triggered: the VMM pulses it through an irqfd,
//! and a read-to-clear register behind an edge loses no event.

use acpi_tables::aml::{
    And, Device, EISAName, Field, FieldAccessType, FieldEntry, FieldLockRule, FieldUpdateRule, If,
    Interrupt, Local, Method, MethodCall, Name, Notify, OpRegion, OpRegionSpace, Path,
    ResourceTemplate, Store, ZERO,
};
use acpi_tables::Aml;

use super::pci::RawAml;
use super::GedConfig;
use crate::layout::{GED_EVENT_PCI_HOTPLUG, GED_EVENT_POWER_BUTTON};

/// `Notify` value for a power button press ("S0 power button pressed").
const NOTIFY_BUTTON_PRESSED: u8 = 0x80;
/// Width of the event register in bytes.
const EVENT_REGISTER_LEN: u8 = 4;

/// `Device (GED_)`, to place under `\_SB`. `pci_hotplug` says whether
/// `\_SB.PCI0.PCNT` exists for the hot-plug event to call.
pub(super) fn ged_device(ged: &GedConfig, pci_hotplug: bool) -> RawAml {
    let hid = Name::new(Path::new("_HID"), &"ACPI0013");
    let uid = Name::new(Path::new("_UID"), &0u8);
    // Consumer, edge triggered, active high, exclusive.
    let irq = Interrupt::new(true, true, false, false, ged.irq);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&irq]));
    let region = OpRegion::new(
        Path::new("EREG"),
        OpRegionSpace::SystemMemory,
        &ged.mmio,
        &EVENT_REGISTER_LEN,
    );
    // DWordAcc: the register is read with one 32-bit access, and it is
    // read exactly once per _EVT because reading clears it.
    let field = Field::new(
        Path::new("EREG"),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"ESTA", 32)],
    );

    let events = Local(0);
    let status = Path::new("ESTA");
    let read = Store::new(&events, &status);
    let button_bit = And::new(&ZERO, &events, &GED_EVENT_POWER_BUTTON);
    let pwrb = Path::new("\\_SB_.PWRB");
    let press = Notify::new(&pwrb, &NOTIFY_BUTTON_PRESSED);
    let on_button = If::new(&button_bit, vec![&press]);
    let hotplug_bit = And::new(&ZERO, &events, &GED_EVENT_PCI_HOTPLUG);
    let scan = MethodCall::new(Path::new("\\_SB_.PCI0.PCNT"), vec![]);
    let on_hotplug = If::new(&hotplug_bit, vec![&scan]);
    let mut body: Vec<&dyn Aml> = vec![&read, &on_button];
    if pci_hotplug {
        body.push(&on_hotplug);
    }
    // Serialized: one event dispatch at a time, whatever the OS does.
    let evt = Method::new(Path::new("_EVT"), 1, true, body);

    let device = Device::new(
        Path::new("GED_"),
        vec![&hid, &uid, &crs, &region, &field, &evt],
    );
    RawAml::of(&device)
}

/// `Device (PWRB)`, the ACPI power button, to place under `\_SB`. On a
/// HW-reduced platform there is no fixed power button, so the OS finds it
/// here and turns `Notify (PWRB, 0x80)` into a power-key press.
pub(super) fn power_button_device() -> RawAml {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0C0C"));
    let uid = Name::new(Path::new("_UID"), &0u8);
    RawAml::of(&Device::new(Path::new("PWRB"), vec![&hid, &uid]))
}
