//! smoltcp's view of a virtio-net card (crate::netdev) driven without
//! waiting. Every receive buffer is posted up front and posted again once
//! smoltcp has read the frame in place (no copy); transmits come from a
//! pool of buffers, as many as the queue holds, all of them in flight at
//! once and reclaimed as the device completes them. Nothing here waits on
//! the device, so the stack's poll loop never stalls on one frame.

use crate::netdev::{NetDev, HDR_LEN, SLOTS};
use crate::offload;
use alloc::vec;
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

const ETHERNET_MTU: usize = 1514;
/// With TSO: an IP packet of 64 KiB and its Ethernet header.
const OFFLOAD_MTU: usize = 14 + 65_535;
/// No slot (a token the device has not been given).
const NONE: u16 = u16::MAX;

pub type StackNet = NetDev;

/// `SLOTS` buffers of one length, back to back; those the device still
/// holds when the guest powers off are leaked with it.
struct Buffers {
    memory: &'static mut [u8],
    len: usize,
}

impl Buffers {
    fn new(len: usize) -> Self {
        Self {
            memory: vec![0u8; SLOTS * len].leak(),
            len,
        }
    }

    fn get(&self, slot: usize) -> Option<&[u8]> {
        self.memory.get(slot * self.len..(slot + 1) * self.len)
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut [u8]> {
        self.memory.get_mut(slot * self.len..(slot + 1) * self.len)
    }
}

/// Transmit buffers and which of them the device holds.
struct TxPool {
    bufs: Buffers,
    /// Frame length (header included) of each buffer in flight.
    lens: [usize; SLOTS],
    /// The buffer each token (a descriptor index, below SLOTS) carries.
    slot_of: [u16; SLOTS],
    free: [u16; SLOTS],
    free_count: usize,
    /// Where a frame goes that finds no free buffer: it is dropped.
    scratch: &'static mut [u8],
    /// The smallest MSS a peer announced (crate::offload), where long
    /// segments are cut.
    path_mss: u16,
    /// Frames handed to the device so far.
    sent: u64,
}

pub struct Card {
    dev: StackNet,
    rx: Buffers,
    /// The receive buffer each token carries.
    rx_slot_of: [u16; SLOTS],
    /// The buffer smoltcp was last lent; posted again at the next receive.
    lent: Option<usize>,
    tx: TxPool,
    /// The first device error, reported by the action loop.
    pub error: Option<&'static str>,
    /// Frames received so far.
    frames_in: u64,
}

impl Card {
    /// Takes the device and posts every receive buffer.
    pub fn new(dev: StackNet) -> Result<Self, &'static str> {
        let mut free = [0u16; SLOTS];
        for (i, f) in free.iter_mut().enumerate() {
            *f = i as u16;
        }
        let len = dev.buffer_len();
        let mut card = Self {
            dev,
            rx: Buffers::new(len),
            rx_slot_of: [NONE; SLOTS],
            lent: None,
            tx: TxPool {
                bufs: Buffers::new(len),
                lens: [0; SLOTS],
                slot_of: [NONE; SLOTS],
                free,
                free_count: SLOTS,
                scratch: vec![0u8; len].leak(),
                path_mss: offload::LINK_MSS,
                sent: 0,
            },
            error: None,
            frames_in: 0,
        };
        for slot in 0..SLOTS {
            card.post(slot)?;
        }
        Ok(card)
    }

    fn post(&mut self, slot: usize) -> Result<(), &'static str> {
        let buf = self.rx.get_mut(slot).ok_or("no such receive buffer")?;
        // SAFETY: the buffer is only read again after the device returns it.
        let token = unsafe { self.dev.receive_begin(buf) }?;
        *self
            .rx_slot_of
            .get_mut(usize::from(token))
            .ok_or("device gave an out-of-range receive token")? = slot as u16;
        Ok(())
    }

    /// Frames (received, sent) so far.
    pub fn frames(&self) -> (u64, u64) {
        (self.frames_in, self.tx.sent)
    }

    /// Takes back every transmit buffer the device is done with.
    pub fn reclaim(&mut self) {
        while let Some(token) = self.dev.poll_transmit() {
            if let Err(e) = self.complete_tx(token) {
                self.error.get_or_insert(e);
                return;
            }
        }
    }

    fn complete_tx(&mut self, token: u16) -> Result<(), &'static str> {
        let pool = &mut self.tx;
        let entry = pool
            .slot_of
            .get_mut(usize::from(token))
            .ok_or("device completed an unknown transmit")?;
        let slot = core::mem::replace(entry, NONE);
        let len = *pool
            .lens
            .get(usize::from(slot))
            .ok_or("device completed an unknown transmit")?;
        let buf = pool
            .bufs
            .get(usize::from(slot))
            .ok_or("device completed an unknown transmit")?;
        // SAFETY: the buffer (and length) transmit_begin was given with it.
        unsafe { self.dev.transmit_complete(token, &buf[..len]) }?;
        pool.free[pool.free_count] = slot;
        pool.free_count += 1;
        Ok(())
    }

    /// The next received frame: (buffer, frame length after the header).
    fn take(&mut self) -> Result<Option<(usize, usize)>, &'static str> {
        if let Some(slot) = self.lent.take() {
            self.post(slot)?;
        }
        let Some(token) = self.dev.poll_receive() else {
            return Ok(None);
        };
        let entry = self
            .rx_slot_of
            .get_mut(usize::from(token))
            .ok_or("device returned an unknown receive buffer")?;
        let slot = usize::from(core::mem::replace(entry, NONE));
        let buf = self
            .rx
            .get_mut(slot)
            .ok_or("device returned an unknown receive buffer")?;
        // SAFETY: the buffer and token that receive_begin was given.
        let len = unsafe { self.dev.receive_complete(token, buf) }?;
        let len = len.min(buf.len() - HDR_LEN);
        if self.dev.offloads {
            if let Some(mss) = offload::raise_syn_mss(&mut buf[HDR_LEN..HDR_LEN + len]) {
                self.tx.path_mss = self.tx.path_mss.min(mss);
            }
        }
        self.lent = Some(slot);
        self.frames_in += 1;
        Ok(Some((slot, len)))
    }
}

pub struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub struct Tx<'a> {
    dev: &'a mut StackNet,
    pool: &'a mut TxPool,
    error: &'a mut Option<&'static str>,
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let pool = self.pool;
        let room = pool.bufs.len - HDR_LEN;
        if pool.free_count == 0 {
            // Only a reply to a received frame gets here (transmit() waits
            // for a free buffer); TCP sends again what is lost.
            return f(&mut pool.scratch[..len.min(room)]);
        }
        pool.free_count -= 1;
        let slot = usize::from(pool.free[pool.free_count]);
        let offloads = self.dev.offloads;
        let mss = pool.path_mss;
        let Some(buf) = pool.bufs.get_mut(slot) else {
            pool.free_count += 1;
            self.error.get_or_insert("tx buffer");
            return f(&mut pool.scratch[..len.min(room)]);
        };
        let len = HDR_LEN + len.min(room);
        let (hdr, frame) = buf[..len].split_at_mut(HDR_LEN);
        let result = f(frame);
        if offloads {
            offload::prepare_tx(hdr, frame, mss);
        } else {
            hdr.fill(0);
        }
        // SAFETY: the buffer is not touched until its transmit_complete
        // (reclaim); if the guest gives up, it stays leaked with the device.
        match unsafe { self.dev.transmit_begin(&buf[..len]) } {
            Ok(token) if usize::from(token) < SLOTS => {
                pool.slot_of[usize::from(token)] = slot as u16;
                pool.lens[slot] = len;
                pool.sent += 1;
            }
            Ok(_) => {
                self.error
                    .get_or_insert("device gave an out-of-range tx token");
            }
            Err(e) => {
                pool.free_count += 1;
                self.error.get_or_insert(e);
            }
        }
        result
    }
}

impl phy::Device for Card {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        if self.error.is_some() {
            return None;
        }
        // Answering a frame may need a transmit buffer.
        if self.tx.free_count == 0 {
            self.reclaim();
        }
        let (slot, len) = match self.take() {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(e) => {
                self.error = Some(e);
                return None;
            }
        };
        let tx = Tx {
            dev: &mut self.dev,
            pool: &mut self.tx,
            error: &mut self.error,
        };
        let frame = self
            .rx
            .get(slot)
            .map_or(&[][..], |b| &b[HDR_LEN..HDR_LEN + len]);
        Some((Rx(frame), tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        if self.error.is_some() {
            return None;
        }
        if self.tx.free_count == 0 {
            self.reclaim();
            if self.tx.free_count == 0 {
                return None;
            }
        }
        Some(Tx {
            dev: &mut self.dev,
            pool: &mut self.tx,
            error: &mut self.error,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_burst_size = Some(SLOTS);
        if self.dev.offloads {
            // Long segments go out whole (crate::offload); the device may
            // hand over partial checksums, which are not verified.
            caps.max_transmission_unit = OFFLOAD_MTU;
            caps.checksum.tcp = Checksum::None;
            caps.checksum.udp = Checksum::Tx;
        } else {
            caps.max_transmission_unit = ETHERNET_MTU;
        }
        caps
    }
}
