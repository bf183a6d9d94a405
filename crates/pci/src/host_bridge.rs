//! The host bridge at 00:00.0: the root complex's own function, which
//! guests expect to find first and which does nothing else.

use crate::config::{BarRange, PciConfiguration, PciHeader};
use crate::device::PciDevice;

/// Red Hat's vendor ID, with the device ID QEMU uses for its generic
/// PCIe host bridge: guests carry no special handling for it.
const VENDOR_REDHAT: u16 = 0x1b36;
const DEVICE_PCIE_HOST: u16 = 0x0008;
const CLASS_BRIDGE: u8 = 0x06;
const SUBCLASS_HOST_BRIDGE: u8 = 0x00;

/// The host bridge function.
pub struct HostBridge {
    config: PciConfiguration,
}

impl HostBridge {
    /// A host bridge with no BARs and no capabilities.
    pub fn new() -> Self {
        Self {
            config: PciConfiguration::new(&PciHeader {
                vendor_id: VENDOR_REDHAT,
                device_id: DEVICE_PCIE_HOST,
                class: CLASS_BRIDGE,
                subclass: SUBCLASS_HOST_BRIDGE,
                ..Default::default()
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read_reg(reg)
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }
    fn decoded_bars(&self) -> Vec<BarRange> {
        Vec::new()
    }
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}
