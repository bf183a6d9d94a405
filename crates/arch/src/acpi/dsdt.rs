//! The DSDT: the AML namespace of a Vireo VM.
//!
//! It holds what the fixed tables cannot say: the `\_S5` sleep type that
//! the guest writes to the sleep control register to power off, and the
//! legacy devices (COM1, the CMOS RTC) under `\_SB`, so a guest that enumerates through ACPI
//! (Linux's 8250 PNP driver does) finds them without probing; with a GED,
//! also the power button and (with PCI) the hot-plug slots.

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Name, Package, Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use crate::layout::{ACPI_S5_SLEEP_TYPE, CMOS_PORT, COM1_IRQ, COM1_PORT};

/// DSDT revision 2: AML integers are 64 bits wide.
const DSDT_REVISION: u8 = 2;
/// Size of the table header; the AML follows it.
const HEADER_LEN: u32 = 36;
/// Number of I/O ports of a 16550 UART.
const UART_PORTS: u8 = 8;
/// Number of I/O ports of the CMOS RTC (index and data).
const CMOS_PORTS: u8 = 2;

/// Builds the DSDT.
pub(super) fn build(
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: u32,
    pci: Option<&super::PciHostBridge>,
    ged: Option<&super::GedConfig>,
) -> Vec<u8> {
    // \_S5 is Package { SLP_TYPa, SLP_TYPb }. A HW-reduced platform only
    // uses SLP_TYPa (there is no PM1b block), but two elements is what
    // every firmware emits and what every OS parser expects.
    let s5 = Name::new(
        Path::new("\\_S5_"),
        &Package::new(vec![&ACPI_S5_SLEEP_TYPE, &0u8]),
    );

    let com1_ports = IO::new(COM1_PORT, COM1_PORT, 0, UART_PORTS);
    // Consumer, edge triggered, active high, exclusive: an ISA IRQ.
    let com1_irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let com1_resources = ResourceTemplate::new(vec![&com1_ports, &com1_irq]);
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0501"));
    let uid = Name::new(Path::new("_UID"), &0u8);
    let crs = Name::new(Path::new("_CRS"), &com1_resources);
    let com1 = Device::new(Path::new("COM1"), vec![&hid, &uid, &crs]);
    // The CMOS clock (PNP0B00) at ports 0x70-0x71, with no interrupt,
    // because Vireo's CMOS raises none (no alarm or periodic timer).
    // Without this device Linux registers a platform RTC with the
    // hard-wired IRQ 8, which has no descriptor on a HW-reduced platform
    // (no legacy PIC), and rtc_cmos's probe fails with -EINVAL; through
    // PNP it binds without an IRQ and offers the clock, minus alarms.
    let rtc_ports = IO::new(CMOS_PORT, CMOS_PORT, 0, CMOS_PORTS);
    let rtc_resources = ResourceTemplate::new(vec![&rtc_ports]);
    let rtc_hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0B00"));
    let rtc_crs = Name::new(Path::new("_CRS"), &rtc_resources);
    let rtc = Device::new(Path::new("RTC_"), vec![&rtc_hid, &rtc_crs]);
    // PCI hot-plug needs both the bridge (for the slots) and the GED (for
    // the event); create_acpi_tables refuses one without the other.
    let hotplug = ged
        .and_then(|g| g.pci_hotplug_mmio)
        .filter(|_| pci.is_some());
    let pci0 = pci.map(|pci| super::pci::host_bridge_device(pci, hotplug));
    let ged_devices = ged.map(|ged| {
        (
            super::ged::ged_device(ged, hotplug.is_some()),
            super::ged::power_button_device(),
        )
    });
    let mut devices: Vec<&dyn Aml> = vec![&com1, &rtc];
    if let Some(pci0) = &pci0 {
        devices.push(pci0);
    }
    if let Some((ged, pwrb)) = &ged_devices {
        devices.push(ged);
        devices.push(pwrb);
    }
    let system_bus = Scope::new(Path::new("\\_SB_"), devices);

    let mut aml = Vec::new();
    s5.to_aml_bytes(&mut aml);
    system_bus.to_aml_bytes(&mut aml);

    let mut dsdt = Sdt::new(
        *b"DSDT",
        HEADER_LEN,
        DSDT_REVISION,
        oem_id,
        oem_table_id,
        oem_revision,
    );
    dsdt.append_slice(&aml);
    dsdt.as_slice().to_vec()
}
