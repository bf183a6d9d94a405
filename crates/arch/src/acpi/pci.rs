//! The PCI host bridge as ACPI describes it: `\_SB.PCI0` in the DSDT (so
//! the guest knows the root bus and the windows it may place BARs in) and
//! the MCFG table (where ECAM is).

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Name, Path, ResourceTemplate, IO,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::Aml;

use super::PciHostBridge;

/// Configuration mechanism #1 ports, claimed by the bridge.
const CONFIG_IO_PORT: u16 = 0xcf8;
const CONFIG_IO_LEN: u8 = 8;

/// AML already serialized, to nest in a scope.
pub(super) struct RawAml(Vec<u8>);

impl RawAml {
    /// Serializes `aml` now, so it can be nested without borrowing.
    pub(super) fn of(aml: &dyn Aml) -> Self {
        Self::concat(&[aml])
    }

    /// Serializes `objects` back to back (a list of objects, for a scope
    /// that takes them as one child).
    pub(super) fn concat(objects: &[&dyn Aml]) -> Self {
        let mut bytes = Vec::new();
        for object in objects {
            object.to_aml_bytes(&mut bytes);
        }
        Self(bytes)
    }
}

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// `Device (PCI0)`: a PCIe root bridge (PNP0A08, compatible with PNP0A03)
/// on segment 0, bus 0, whose `_CRS` lists its bus range, the CF8/CFC
/// ports and both MMIO windows. With `hotplug` (the address of the PCI
/// hot-plug registers) it also gets `_OSC`, `PCNT` and the slot devices
/// (see `acpi/pci_hotplug.rs`).
pub(super) fn host_bridge_device(pci: &PciHostBridge, hotplug: Option<u64>) -> RawAml {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0A08"));
    let cid = Name::new(Path::new("_CID"), &EISAName::new("PNP0A03"));
    let adr = Name::new(Path::new("_ADR"), &0u8);
    let seg = Name::new(Path::new("_SEG"), &0u8);
    let uid = Name::new(Path::new("_UID"), &0u8);
    let bbn = Name::new(Path::new("_BBN"), &0u8);
    let buses = AddressSpace::new_bus_number(0u16, u16::from(pci.last_bus));
    let config_io = IO::new(CONFIG_IO_PORT, CONFIG_IO_PORT, 1, CONFIG_IO_LEN);
    let (base32, size32) = pci.mmio32;
    let mmio32 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        u32::try_from(base32).unwrap_or(0),
        u32::try_from(base32 + size32 - 1).unwrap_or(0),
        None,
    );
    let (base64, size64) = pci.mmio64;
    let mmio64 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        base64,
        base64 + size64 - 1,
        None,
    );
    let resources = ResourceTemplate::new(vec![&buses, &config_io, &mmio32, &mmio64]);
    let crs = Name::new(Path::new("_CRS"), &resources);
    let hotplug = hotplug.map(super::pci_hotplug::bridge_objects);
    let mut children: Vec<&dyn Aml> = vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs];
    if let Some(hotplug) = &hotplug {
        children.push(hotplug);
    }
    RawAml::of(&Device::new(Path::new("PCI0"), children))
}

/// The MCFG table for `pci`'s ECAM.
pub(super) fn mcfg(
    oem_id: [u8; 6],
    oem_table_id: [u8; 8],
    oem_revision: u32,
    pci: &PciHostBridge,
) -> Vec<u8> {
    let mut table = MCFG::new(oem_id, oem_table_id, oem_revision);
    table.add_ecam(pci.ecam_base, 0, 0, pci.last_bus);
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}
