//! The 16550A UART on COM1, built on `vm_superio::Serial`.
//!
//! vm-superio models the registers; this module adds what a VMM needs around
//! it: an interrupt [`Trigger`] backed by an irqfd [`EventFd`], an output sink
//! shared with the debug console ([`SharedOutput`]), and a pending-input
//! buffer so host input that does not fit in the 64-byte receive FIFO waits
//! for the guest to drain it instead of being lost.
//!
//! Wiring: map [`Serial`] on the port-I/O bus at `0x3f8` with length
//! [`SERIAL_PORT_RANGE_LEN`]; the device offset is the register index. The
//! interrupt `EventFd` is registered by the VMM as an irqfd on GSI 4.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vm_superio::serial::{Error as UartError, SerialEvents};
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Length of the UART's port range: eight byte-wide registers.
pub const SERIAL_PORT_RANGE_LEN: u64 = 8;

/// Host input held back (beyond the 64-byte FIFO) until the guest reads.
pub const SERIAL_PENDING_INPUT_CAPACITY: usize = 4096;

/// An output sink that several devices share, so their bytes interleave in
/// the order the guest wrote them (the serial port and the debug console
/// both print to the console).
///
/// Every write takes the lock for the whole call, then flushes, so output
/// appears promptly even on line-buffered sinks such as stdout.
#[derive(Clone)]
pub struct SharedOutput(Arc<Mutex<Box<dyn Write + Send>>>);

impl SharedOutput {
    /// Share `sink`.
    pub fn new<W: Write + Send + 'static>(sink: W) -> Self {
        Self(Arc::new(Mutex::new(Box::new(sink))))
    }

    /// An output that discards everything (`--serial off`).
    pub fn discard() -> Self {
        Self::new(io::sink())
    }

    fn lock(&self) -> MutexGuard<'_, Box<dyn Write + Send>> {
        // A writer that panicked mid-write leaves at worst a partial line.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for SharedOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedOutput")
    }
}

impl Write for SharedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.lock();
        sink.write_all(buf)?;
        sink.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

/// A vm-superio [`Trigger`] that signals an [`EventFd`] (an irqfd, or the
/// VMM's reset/exit event).
#[derive(Debug)]
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// The serial port's counters.
#[derive(Debug, Default)]
pub struct SerialMetrics {
    /// Bytes the guest transmitted that reached the output sink.
    pub tx_bytes: AtomicU64,
    /// Bytes the guest transmitted that the output sink refused.
    pub tx_lost_bytes: AtomicU64,
    /// Receive-buffer reads by the guest.
    pub rx_reads: AtomicU64,
    /// Host input bytes accepted by [`Serial::enqueue_input`].
    pub input_bytes: AtomicU64,
}

/// Adapter so vm-superio reports its events into [`SerialMetrics`].
#[derive(Debug, Clone, Default)]
struct MetricsEvents(Arc<SerialMetrics>);

impl SerialEvents for MetricsEvents {
    fn buffer_read(&self) {
        self.0.rx_reads.fetch_add(1, Ordering::Relaxed);
    }
    fn out_byte(&self) {
        self.0.tx_bytes.fetch_add(1, Ordering::Relaxed);
    }
    fn tx_lost_byte(&self) {
        self.0.tx_lost_bytes.fetch_add(1, Ordering::Relaxed);
    }
    fn in_buffer_empty(&self) {}
}

type Uart = vm_superio::Serial<EventFdTrigger, MetricsEvents, SharedOutput>;

/// A 16550A UART (COM1).
pub struct Serial {
    uart: Uart,
    /// Host input that did not fit in the FIFO, oldest first.
    pending: VecDeque<u8>,
    metrics: Arc<SerialMetrics>,
}

impl Serial {
    /// A UART that raises its interrupt by writing `interrupt` and prints
    /// what the guest transmits to `output`.
    pub fn new(interrupt: EventFd, output: SharedOutput) -> Self {
        let metrics = Arc::new(SerialMetrics::default());
        let uart = Uart::with_events(
            EventFdTrigger(interrupt),
            MetricsEvents(metrics.clone()),
            output,
        );
        Self {
            uart,
            pending: VecDeque::new(),
            metrics,
        }
    }

    /// The device's counters.
    pub fn metrics(&self) -> Arc<SerialMetrics> {
        self.metrics.clone()
    }

    /// Bytes of host input waiting for FIFO space.
    pub fn pending_input(&self) -> usize {
        self.pending.len()
    }

    /// Queue host input for the guest. Returns how many bytes of `input`
    /// were taken (into the FIFO or the pending buffer); the caller keeps the
    /// rest and offers it again later. Nothing taken is ever dropped: pending
    /// bytes move into the FIFO as the guest reads it.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        self.feed_fifo();
        let room = (SERIAL_PENDING_INPUT_CAPACITY + self.uart.fifo_capacity())
            .saturating_sub(self.pending.len());
        let taken = input.len().min(room);
        self.pending.extend(&input[..taken]);
        self.feed_fifo();
        self.metrics
            .input_bytes
            .fetch_add(taken as u64, Ordering::Relaxed);
        taken
    }

    /// Move pending input into the FIFO while it has room.
    fn feed_fifo(&mut self) {
        while !self.pending.is_empty() && self.uart.fifo_capacity() > 0 {
            let before = self.uart.fifo_capacity();
            let (front, _) = self.pending.as_slices();
            let result = self.uart.enqueue_raw_bytes(front);
            // Count what entered the FIFO from its free space: on a trigger
            // error the bytes are queued even though an error is returned.
            let taken = before.saturating_sub(self.uart.fifo_capacity());
            self.pending.drain(..taken.min(self.pending.len()));
            if let Err(UartError::Trigger(e)) = &result {
                tracing::warn!("serial: cannot raise interrupt: {e}");
            }
            // Loopback mode accepts no host input; keep it pending.
            if taken == 0 || result.is_err() {
                break;
            }
        }
    }
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The register index of a byte-wide access in the UART's range, or `None`
/// for any other access (the 16550 has only byte-wide registers).
fn register(offset: u64, len: usize) -> Option<u8> {
    if len != 1 || offset >= SERIAL_PORT_RANGE_LEN {
        return None;
    }
    u8::try_from(offset).ok()
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some(reg) = register(offset, data.len()) else {
            tracing::debug!("serial: ignored {}-byte read at {offset:#x}", data.len());
            return;
        };
        data[0] = self.uart.read(reg);
        // A receive-buffer read may have made room in the FIFO.
        self.feed_fifo();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(reg) = register(offset, data.len()) else {
            tracing::debug!("serial: ignored {}-byte write at {offset:#x}", data.len());
            return;
        };
        match self.uart.write(reg, data[0]) {
            Ok(()) => {}
            // Counted as a lost byte in the metrics; logging each would
            // flood the log when, say, a file system is full.
            Err(UartError::IOError(_)) => {}
            Err(e) => tracing::warn!("serial: {e}"),
        }
        // Leaving loopback mode lets pending host input through.
        self.feed_fifo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink tests can inspect.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const THR: u64 = 0;
    const RBR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const LSR_DATA_READY: u8 = 0x01;
    const LSR_THR_EMPTY: u8 = 0x20;
    const IER_RDA: u8 = 0x01;
    const IER_THR: u8 = 0x02;
    const IIR_NONE: u8 = 0x01;
    const IIR_THR: u8 = 0x02;
    const IIR_RDA: u8 = 0x04;

    fn serial() -> (Serial, EventFd, Captured) {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let out = Captured::default();
        let s = Serial::new(irq.try_clone().unwrap(), SharedOutput::new(out.clone()));
        (s, irq, out)
    }

    fn rd(s: &mut Serial, offset: u64) -> u8 {
        let mut b = [0xffu8];
        s.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn transmitted_bytes_reach_output() {
        let (mut s, _irq, out) = serial();
        for &b in b"hi\n" {
            s.write(THR, &[b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert_ne!(rd(&mut s, LSR) & LSR_THR_EMPTY, 0);
        assert_eq!(s.metrics().tx_bytes.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn thr_empty_interrupt_is_raised() {
        let (mut s, irq, _out) = serial();
        assert!(irq.read().is_err(), "no interrupt before IER is set");
        s.write(IER, &[IER_THR]);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(rd(&mut s, IIR) & 0x0f, IIR_THR);
        // Reading IIR acknowledges; the next byte raises it again.
        assert_eq!(rd(&mut s, IIR) & 0x0f, IIR_NONE);
        s.write(THR, b"x");
        assert_eq!(irq.read().unwrap(), 1);
    }

    #[test]
    fn input_sets_data_ready_and_reads_back() {
        let (mut s, irq, _out) = serial();
        s.write(IER, &[IER_RDA]);
        assert_eq!(rd(&mut s, LSR) & LSR_DATA_READY, 0);
        assert_eq!(s.enqueue_input(b"ok"), 2);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(rd(&mut s, IIR) & 0x0f, IIR_RDA);
        assert_ne!(rd(&mut s, LSR) & LSR_DATA_READY, 0);
        assert_eq!(rd(&mut s, RBR), b'o');
        assert_eq!(rd(&mut s, RBR), b'k');
        assert_eq!(rd(&mut s, LSR) & LSR_DATA_READY, 0);
    }

    #[test]
    fn input_beyond_fifo_waits_and_is_not_lost() {
        let (mut s, _irq, _out) = serial();
        let input: Vec<u8> = (0..200u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(s.enqueue_input(&input), input.len());
        assert_eq!(s.pending_input(), 200 - 64);
        let mut got = Vec::new();
        while rd(&mut s, LSR) & LSR_DATA_READY != 0 {
            got.push(rd(&mut s, RBR));
        }
        assert_eq!(got, input);
        assert_eq!(s.pending_input(), 0);
    }

    #[test]
    fn enqueue_reports_what_did_not_fit() {
        let (mut s, _irq, _out) = serial();
        let big = vec![b'a'; SERIAL_PENDING_INPUT_CAPACITY + 100];
        assert_eq!(s.enqueue_input(&big), SERIAL_PENDING_INPUT_CAPACITY + 64);
        assert_eq!(s.enqueue_input(b"more"), 0);
        rd(&mut s, RBR);
        assert_eq!(s.enqueue_input(b"more"), 1);
    }

    #[test]
    fn loopback_holds_host_input_until_cleared() {
        let (mut s, _irq, _out) = serial();
        s.write(MCR, &[0x10 | 0x08]); // LOOP | OUT2
        assert_eq!(s.enqueue_input(b"z"), 1);
        assert_eq!(s.pending_input(), 1);
        s.write(MCR, &[0x08]);
        assert_eq!(s.pending_input(), 0);
        assert_eq!(rd(&mut s, RBR), b'z');
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_ignored() {
        let (mut s, _irq, out) = serial();
        s.write(THR, b"ab");
        s.write(9, b"a");
        let mut w = [0xffu8; 2];
        s.read(0, &mut w);
        assert_eq!(w, [0xff, 0xff]);
        assert!(out.0.lock().unwrap().is_empty());
    }
}
