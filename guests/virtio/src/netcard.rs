//! smoltcp's view of a virtio-net card: `VirtIONetRaw` driven without
//! waiting. Every receive buffer is posted up front and posted again once
//! smoltcp has read the frame in place (no copy); transmits come from a
//! pool of buffers, as many as the queue holds, all of them in flight at
//! once and reclaimed as the device completes them. Nothing here waits on
//! the device, so the stack's poll loop never stalls on one frame.

use crate::hal::GuestHal;
use crate::net::BUF_SIZE;
use crate::watch::Watched;
use alloc::boxed::Box;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;

/// Descriptors per queue, and so receive buffers posted and transmits in
/// flight: room for a 128 KiB window of full segments each way.
pub const SLOTS: usize = 128;
const ETHERNET_MTU: usize = 1514;
/// No slot (a token the device has not been given).
const NONE: u16 = u16::MAX;

pub type StackNet = VirtIONetRaw<GuestHal, Watched, SLOTS>;

type Buffers = [[u8; BUF_SIZE]; SLOTS];

/// Buffers the device may still hold when the guest powers off: leaked.
fn buffers() -> &'static mut Buffers {
    // SAFETY: all-zero bytes are a valid array of byte arrays.
    Box::leak(unsafe { Box::<Buffers>::new_zeroed().assume_init() })
}

/// Transmit buffers and which of them the device holds.
struct TxPool {
    bufs: &'static mut Buffers,
    /// Frame length (header included) of each buffer in flight.
    lens: [usize; SLOTS],
    /// The buffer each token (a descriptor index, below SLOTS) carries.
    slot_of: [u16; SLOTS],
    free: [u16; SLOTS],
    free_count: usize,
    /// Where a frame goes that finds no free buffer: it is dropped.
    scratch: [u8; BUF_SIZE],
}

pub struct Card {
    dev: StackNet,
    rx: &'static mut Buffers,
    /// The receive buffer each token carries.
    rx_slot_of: [u16; SLOTS],
    /// The buffer smoltcp was last lent; posted again at the next receive.
    lent: Option<usize>,
    tx: TxPool,
    /// The first device error, reported by the action loop.
    pub error: Option<&'static str>,
}

impl Card {
    /// Takes the device and posts every receive buffer.
    pub fn new(dev: StackNet) -> Result<Self, &'static str> {
        let mut free = [0u16; SLOTS];
        for (i, f) in free.iter_mut().enumerate() {
            *f = i as u16;
        }
        let mut card = Self {
            dev,
            rx: buffers(),
            rx_slot_of: [NONE; SLOTS],
            lent: None,
            tx: TxPool {
                bufs: buffers(),
                lens: [0; SLOTS],
                slot_of: [NONE; SLOTS],
                free,
                free_count: SLOTS,
                scratch: [0; BUF_SIZE],
            },
            error: None,
        };
        for slot in 0..SLOTS {
            card.post(slot)?;
        }
        Ok(card)
    }

    fn post(&mut self, slot: usize) -> Result<(), &'static str> {
        // SAFETY: the buffer is only read again after the device returns it.
        let token = unsafe { self.dev.receive_begin(&mut self.rx[slot]) }
            .map_err(|_| "cannot post a receive buffer")?;
        *self
            .rx_slot_of
            .get_mut(usize::from(token))
            .ok_or("device gave an out-of-range receive token")? = slot as u16;
        Ok(())
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
        let buf = pool
            .bufs
            .get(usize::from(slot))
            .ok_or("device completed an unknown transmit")?;
        // SAFETY: the buffer (and length) transmit_begin was given with it.
        unsafe {
            self.dev
                .transmit_complete(token, &buf[..pool.lens[usize::from(slot)]])
        }
        .map_err(|_| "tx completion")?;
        pool.free[pool.free_count] = slot;
        pool.free_count += 1;
        Ok(())
    }

    /// The next received frame: (buffer, header length, frame length).
    fn take(&mut self) -> Result<Option<(usize, usize, usize)>, &'static str> {
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
        let (header, len) =
            unsafe { self.dev.receive_complete(token, buf) }.map_err(|_| "rx completion")?;
        self.lent = Some(slot);
        Ok(Some((slot, header, len.min(BUF_SIZE - header))))
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
        if pool.free_count == 0 {
            // Only a reply to a received frame gets here (transmit() waits
            // for a free buffer); TCP sends again what is lost.
            return f(&mut pool.scratch[..len.min(BUF_SIZE)]);
        }
        pool.free_count -= 1;
        let slot = usize::from(pool.free[pool.free_count]);
        let buf = &mut pool.bufs[slot];
        let Ok(header) = self.dev.fill_buffer_header(buf) else {
            // smoltcp needs its closure run; the frame is just not sent.
            pool.free_count += 1;
            self.error.get_or_insert("tx header");
            return f(&mut buf[..len.min(BUF_SIZE)]);
        };
        let len = header + len.min(BUF_SIZE - header);
        let result = f(&mut buf[header..len]);
        // SAFETY: the buffer is not touched until its transmit_complete
        // (reclaim); if the guest gives up, it stays leaked with the device.
        match unsafe { self.dev.transmit_begin(&buf[..len]) } {
            Ok(token) if usize::from(token) < SLOTS => {
                pool.slot_of[usize::from(token)] = slot as u16;
                pool.lens[slot] = len;
            }
            Ok(_) => {
                self.error
                    .get_or_insert("device gave an out-of-range tx token");
            }
            Err(_) => {
                pool.free_count += 1;
                self.error.get_or_insert("tx queue full");
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
        let (slot, header, len) = match self.take() {
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
        Some((Rx(&self.rx[slot][header..header + len]), tx))
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
        caps.max_transmission_unit = ETHERNET_MTU;
        caps.max_burst_size = Some(SLOTS);
        caps
    }
}
