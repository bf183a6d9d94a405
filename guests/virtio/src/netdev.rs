//! The virtio-net driver under the smoltcp path: a receive and a transmit
//! queue on virtio-drivers' `VirtQueue`, with the features negotiated here
//! rather than by virtio-drivers' `VirtIONetRaw`, whose fixed set has no
//! offloads. When the device offers checksum offload and TSOv4 both ways
//! (a TAP with vnet headers does), this driver takes them: a frame may then
//! carry a 64 KiB TCP segment each way, one descriptor and one TAP write
//! instead of some forty-five (see crate::offload for what the guest's
//! side of that takes).

use crate::hal::GuestHal;
use crate::watch::Watched;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::{DeviceStatus, Transport};

/// Descriptors per queue: receive buffers posted, transmits in flight.
pub const SLOTS: usize = 32;
/// `struct virtio_net_hdr` with VIRTIO_F_VERSION_1 (num_buffers included).
pub const HDR_LEN: usize = 12;
/// A buffer without offloads: the header and a 1514-byte frame.
const SMALL_BUFFER: usize = 2048;
/// A buffer with TSO: the header and the longest frame the device may
/// hand over (64 KiB and an Ethernet header), rounded up.
const BIG_BUFFER: usize = 66 * 1024;

const RECEIVE_QUEUE: u16 = 0;
const TRANSMIT_QUEUE: u16 = 1;

const CSUM: u64 = 1 << 0;
const GUEST_CSUM: u64 = 1 << 1;
const MAC: u64 = 1 << 5;
const GUEST_TSO4: u64 = 1 << 7;
const HOST_TSO4: u64 = 1 << 11;
const STATUS: u64 = 1 << 16;
const EVENT_IDX: u64 = 1 << 29;
const VERSION_1: u64 = 1 << 32;
/// Taken all together or not at all: TSO each way needs the partial
/// checksums that come with it.
const OFFLOADS: u64 = CSUM | GUEST_CSUM | HOST_TSO4 | GUEST_TSO4;

pub struct NetDev {
    transport: Watched,
    rx: VirtQueue<GuestHal, SLOTS>,
    tx: VirtQueue<GuestHal, SLOTS>,
    mac: [u8; 6],
    /// Checksum offload and TSOv4 were negotiated both ways.
    pub offloads: bool,
}

impl NetDev {
    /// Negotiates VERSION_1 (required), the MAC, status and EVENT_IDX when
    /// offered, and the offloads when all of them are offered and `offloads`
    /// allows.
    pub fn new(mut transport: Watched, offloads: bool) -> Result<Self, &'static str> {
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = transport.read_device_features();
        if offered & VERSION_1 == 0 {
            return Err("the device does not offer VIRTIO_F_VERSION_1");
        }
        let offloads = offloads && offered & OFFLOADS == OFFLOADS;
        let mut features = VERSION_1 | (offered & (MAC | STATUS | EVENT_IDX));
        if offloads {
            features |= OFFLOADS;
        }
        transport.write_driver_features(features);
        let ready = DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
        transport.set_status(ready);
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            return Err("the device refused the features it offered");
        }
        let event_idx = features & EVENT_IDX != 0;
        let rx = VirtQueue::new(&mut transport, RECEIVE_QUEUE, false, event_idx)
            .map_err(|_| "cannot set up the receive queue")?;
        let tx = VirtQueue::new(&mut transport, TRANSMIT_QUEUE, false, event_idx)
            .map_err(|_| "cannot set up the transmit queue")?;
        let mut mac = [0u8; 6];
        if features & MAC != 0 {
            for (i, byte) in mac.iter_mut().enumerate() {
                *byte = transport
                    .read_config_space(i)
                    .map_err(|_| "cannot read the MAC")?;
            }
        }
        transport.finish_init();
        Ok(Self {
            transport,
            rx,
            tx,
            mac,
            offloads,
        })
    }

    pub fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    /// How long each receive and transmit buffer must be.
    pub fn buffer_len(&self) -> usize {
        if self.offloads {
            BIG_BUFFER
        } else {
            SMALL_BUFFER
        }
    }

    /// Posts `buf` for a received frame; the token names it.
    ///
    /// # Safety
    /// `buf` is not touched until [`Self::receive_complete`] returns it.
    pub unsafe fn receive_begin(&mut self, buf: &mut [u8]) -> Result<u16, &'static str> {
        // SAFETY: the caller keeps the buffer alone until it is returned.
        let token = unsafe { self.rx.add(&[], &mut [buf]) }.map_err(|_| "receive queue full")?;
        if self.rx.should_notify() {
            self.transport.notify(RECEIVE_QUEUE);
        }
        Ok(token)
    }

    pub fn poll_receive(&self) -> Option<u16> {
        self.rx.peek_used()
    }

    /// The frame's length (after the header) in the buffer `token` carried.
    ///
    /// # Safety
    /// `buf` is the buffer given to [`Self::receive_begin`] with `token`.
    pub unsafe fn receive_complete(
        &mut self,
        token: u16,
        buf: &mut [u8],
    ) -> Result<usize, &'static str> {
        // SAFETY: the caller passes the buffer that went with the token.
        let len = unsafe { self.rx.pop_used(token, &[], &mut [buf]) }
            .map_err(|_| "receive completion")?;
        usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(HDR_LEN))
            .ok_or("the device returned a frame shorter than its header")
    }

    /// Makes `buf` (header and frame) available to send.
    ///
    /// # Safety
    /// `buf` is not touched until [`Self::transmit_complete`] returns it.
    pub unsafe fn transmit_begin(&mut self, buf: &[u8]) -> Result<u16, &'static str> {
        // SAFETY: the caller keeps the buffer alone until it is returned.
        let token = unsafe { self.tx.add(&[buf], &mut []) }.map_err(|_| "transmit queue full")?;
        if self.tx.should_notify() {
            self.transport.notify(TRANSMIT_QUEUE);
        }
        Ok(token)
    }

    pub fn poll_transmit(&self) -> Option<u16> {
        self.tx.peek_used()
    }

    /// # Safety
    /// `buf` is the buffer given to [`Self::transmit_begin`] with `token`.
    pub unsafe fn transmit_complete(&mut self, token: u16, buf: &[u8]) -> Result<(), &'static str> {
        // SAFETY: the caller passes the buffer that went with the token.
        unsafe { self.tx.pop_used(token, &[buf], &mut []) }
            .map(|_| ())
            .map_err(|_| "transmit completion")
    }
}
