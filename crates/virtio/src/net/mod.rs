//! virtio-net (network device, type 1) over a TAP: receive and transmit
//! queue pairs (several with VIRTIO_NET_F_MQ, one worker thread each), a
//! control queue, mergeable receive buffers, checksum and segmentation
//! offloads passed through to the TAP, and link status.
//!
//! Guest chains are parsed in one place: [`TxFrame`], [`RxBuffer`] and
//! [`CtrlRequest`] turn a transmit, receive or control chain into ranges
//! checked to lie inside guest memory (or refuse it with a
//! [`RequestError`]), and only they and [`read_frame`] hand those ranges
//! to the TAP. They are public so the fuzz targets in `crates/virtio/fuzz`
//! can drive them over arbitrary guest memory; [`Net`] is their only user
//! in the VMM.

mod device;
mod event_handler;
mod metrics;
mod request;

pub use device::{Net, NetConfig, NetError, NetLink, CTRL_QUEUE_SIZE, MAX_QUEUE_PAIRS, QUEUE_SIZE};
pub use metrics::NetMetrics;
pub use request::{
    read_frame, CtrlCommand, CtrlRequest, RequestError, RxBuffer, TxFrame, MAX_FRAME_LEN,
    MAX_PACKET_LEN, MAX_SEGMENTS, NET_HDR_LEN,
};

/// A stable MAC address for a guest NIC, derived from `seed` (say, the
/// VM's name and the NIC's index): locally administered and unicast, so
/// it never collides with a vendor-assigned address.
pub fn generate_mac(seed: &[u8]) -> [u8; 6] {
    // FNV-1a: stable across builds and Rust releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // Bit 1 of the first octet: locally administered; bit 0: multicast.
    [(b[2] & 0xfc) | 0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
pub(crate) mod tests;
