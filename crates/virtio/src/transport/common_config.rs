//! The virtio-pci common configuration structure: the registers through
//! which the driver negotiates features, sets the device status and sets
//! up queues (virtio 1.2, 4.1.4.3). This file only decodes register
//! offsets; what the values mean is up to the transport.

/// Size of the structure (without the 1.2 notify-data/reset fields, which
/// need features we do not offer).
pub const COMMON_CONFIG_SIZE: u64 = 0x38;

/// One register of the common configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommonReg {
    /// Which 32 bits of device features `DeviceFeature` shows.
    DeviceFeatureSelect,
    /// 32 bits of the offered features (read-only).
    DeviceFeature,
    /// Which 32 bits of driver features `DriverFeature` sets.
    DriverFeatureSelect,
    /// 32 bits of the features the driver accepts.
    DriverFeature,
    /// MSI-X vector for configuration changes.
    ConfigMsixVector,
    /// Number of queues (read-only).
    NumQueues,
    /// Device status.
    DeviceStatus,
    /// Configuration generation (read-only).
    ConfigGeneration,
    /// Which queue the queue registers address.
    QueueSelect,
    /// Selected queue's size.
    QueueSize,
    /// Selected queue's MSI-X vector.
    QueueMsixVector,
    /// Selected queue's enable flag.
    QueueEnable,
    /// Selected queue's notification offset (read-only).
    QueueNotifyOff,
    /// Descriptor table address, low or high half.
    QueueDesc(Half),
    /// Driver (available) ring address, low or high half.
    QueueDriver(Half),
    /// Device (used) ring address, low or high half.
    QueueDevice(Half),
}

/// Which part of a 64-bit register an access covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// Bits 0..32.
    Low,
    /// Bits 32..64.
    High,
    /// All 64 bits in one access (the spec asks drivers for two 32-bit
    /// accesses, but some, such as the virtio-drivers crate, use one).
    Full,
}

/// The register at `offset` accessed with width `len`, if that is a
/// natural access (the spec requires drivers to use them; others are
/// ignored). 64-bit addresses may be accessed whole or as two 32-bit halves.
pub fn decode(offset: u64, len: usize) -> Option<CommonReg> {
    use CommonReg::*;
    let reg = match (offset, len) {
        (0x00, 4) => DeviceFeatureSelect,
        (0x04, 4) => DeviceFeature,
        (0x08, 4) => DriverFeatureSelect,
        (0x0c, 4) => DriverFeature,
        (0x10, 2) => ConfigMsixVector,
        (0x12, 2) => NumQueues,
        (0x14, 1) => DeviceStatus,
        (0x15, 1) => ConfigGeneration,
        (0x16, 2) => QueueSelect,
        (0x18, 2) => QueueSize,
        (0x1a, 2) => QueueMsixVector,
        (0x1c, 2) => QueueEnable,
        (0x1e, 2) => QueueNotifyOff,
        (0x20, 8) => QueueDesc(Half::Full),
        (0x28, 8) => QueueDriver(Half::Full),
        (0x30, 8) => QueueDevice(Half::Full),
        (0x20, 4) => QueueDesc(Half::Low),
        (0x24, 4) => QueueDesc(Half::High),
        (0x28, 4) => QueueDriver(Half::Low),
        (0x2c, 4) => QueueDriver(Half::High),
        (0x30, 4) => QueueDevice(Half::Low),
        (0x34, 4) => QueueDevice(Half::High),
        _ => return None,
    };
    Some(reg)
}

/// Replace the part `half` of `value` with the low bits of `bits`.
pub fn set_half(value: u64, half: Half, bits: u64) -> u64 {
    match half {
        Half::Low => (value & !0xffff_ffff) | (bits & 0xffff_ffff),
        Half::High => (value & 0xffff_ffff) | bits << 32,
        Half::Full => bits,
    }
}

/// The part `half` of `value`.
pub fn get_half(value: u64, half: Half) -> u64 {
    match half {
        Half::Low => value & 0xffff_ffff,
        Half::High => value >> 32,
        Half::Full => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_natural_accesses_decode() {
        assert_eq!(decode(0x14, 1), Some(CommonReg::DeviceStatus));
        assert_eq!(decode(0x14, 4), None);
        assert_eq!(decode(0x20, 8), Some(CommonReg::QueueDesc(Half::Full)));
        assert_eq!(decode(0x24, 8), None);
        assert_eq!(decode(0x24, 4), Some(CommonReg::QueueDesc(Half::High)));
        assert_eq!(decode(0x38, 2), None);
    }

    #[test]
    fn halves_compose() {
        let v = set_half(set_half(0, Half::Low, 0xdead_beef), Half::High, 0x1234);
        assert_eq!(v, 0x1234_dead_beef);
        assert_eq!(get_half(v, Half::High), 0x1234);
        assert_eq!(get_half(v, Half::Low), 0xdead_beef);
    }
}
