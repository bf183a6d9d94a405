use std::sync::Mutex;

use super::*;

/// Records what the I/O APIC asked of KVM.
#[derive(Default)]
struct Recorder {
    routes: Mutex<Vec<(u32, Option<MsiMessage>)>>,
    sent: Mutex<Vec<MsiMessage>>,
}

impl IoapicSink for Recorder {
    fn set_route(&self, pin: u32, msi: Option<MsiMessage>) -> std::io::Result<()> {
        self.routes.lock().unwrap().push((pin, msi));
        Ok(())
    }
    fn send_msi(&self, msi: MsiMessage) -> std::io::Result<()> {
        self.sent.lock().unwrap().push(msi);
        Ok(())
    }
}

fn chip() -> (Ioapic, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    (Ioapic::new(rec.clone()), rec)
}

fn select(io: &mut Ioapic, reg: u8) {
    io.write(IOREGSEL, &u32::from(reg).to_le_bytes());
}

fn write_reg(io: &mut Ioapic, reg: u8, value: u32) {
    select(io, reg);
    io.write(IOWIN, &value.to_le_bytes());
}

fn read_reg(io: &mut Ioapic, reg: u8) -> u32 {
    select(io, reg);
    let mut d = [0u8; 4];
    io.read(IOWIN, &mut d);
    u32::from_le_bytes(d)
}

/// Program pin `pin` the way Linux does: high half first, then low.
fn program(io: &mut Ioapic, pin: u8, lo: u32, hi: u32) {
    write_reg(io, 0x10 + 2 * pin + 1, hi);
    write_reg(io, 0x10 + 2 * pin, lo);
}

const LEVEL: u32 = 1 << 15;
const MASKED: u32 = 1 << 16;
const REMOTE_IRR: u32 = 1 << 14;

#[test]
fn identification_registers() {
    let (mut io, _) = chip();
    assert_eq!(
        read_reg(&mut io, 1),
        0x0017_0011,
        "24 entries, version 0x11"
    );
    write_reg(&mut io, 0, 0xffff_ffff);
    assert_eq!(
        read_reg(&mut io, 0),
        0x0f00_0000,
        "only ID bits 24..28 stick"
    );
    assert_eq!(
        read_reg(&mut io, 2),
        0x0f00_0000,
        "arbitration ID follows it"
    );
    write_reg(&mut io, 1, 0);
    write_reg(&mut io, 2, 0);
    assert_eq!(read_reg(&mut io, 1), 0x0017_0011, "version is read-only");
    assert_eq!(
        read_reg(&mut io, 2),
        0x0f00_0000,
        "arbitration is read-only"
    );
    // The index register reads back, as a dword or a byte.
    select(&mut io, 0x13);
    let mut d = [0u8; 4];
    io.read(IOREGSEL, &mut d);
    assert_eq!(u32::from_le_bytes(d), 0x13);
    let mut b = [0u8; 1];
    io.read(IOREGSEL, &mut b);
    assert_eq!(b[0], 0x13);
}

#[test]
fn entries_start_masked_and_keep_read_only_bits() {
    let (mut io, rec) = chip();
    for pin in 0..24u8 {
        assert_eq!(read_reg(&mut io, 0x10 + 2 * pin), MASKED);
        assert_eq!(read_reg(&mut io, 0x11 + 2 * pin), 0);
    }
    // Every bit set: delivery status, remote IRR and reserved bits stay 0.
    write_reg(&mut io, 0x10, 0xffff_ffff);
    write_reg(&mut io, 0x11, 0xffff_ffff);
    assert_eq!(read_reg(&mut io, 0x10), 0x0001_afff);
    assert_eq!(read_reg(&mut io, 0x11), 0xff00_0000);
    assert_eq!(io.entry(0), Some(0xff00_0000_0001_afff));
    // Still masked: no route was installed.
    assert!(rec.routes.lock().unwrap().is_empty());
}

#[test]
fn unmasking_installs_the_route_and_masking_removes_it() {
    let (mut io, rec) = chip();
    // Pin 4 (COM1): vector 0x24, fixed, physical, edge, to APIC 1.
    program(&mut io, 4, 0x24, 1 << 24);
    let want = MsiMessage {
        address: 0xfee0_1000,
        data: 0x24,
    };
    assert_eq!(*rec.routes.lock().unwrap(), vec![(4, Some(want))]);
    // Rewriting the same entry does not touch KVM's table again.
    program(&mut io, 4, 0x24, 1 << 24);
    assert_eq!(rec.routes.lock().unwrap().len(), 1);
    write_reg(&mut io, 0x18, 0x24 | MASKED);
    assert_eq!(rec.routes.lock().unwrap().last(), Some(&(4, None)));
}

#[test]
fn message_format() {
    // Logical destination 0x3, lowest priority, level: address carries the
    // destination and mode; data the vector, mode, trigger and assert.
    let entry = 0x03u64 << 56 | 1 << 15 | 1 << 11 | 1 << 8 | 0x41;
    let m = message(entry).unwrap();
    assert_eq!(m.address, 0xfee0_3004);
    assert_eq!(m.data, 0x41 | 1 << 8 | 1 << 14 | 1 << 15);
    // Polarity does not travel in the message.
    assert_eq!(message(entry | 1 << 13), Some(m));
    // NMI delivery mode is kept.
    assert_eq!(message(4 << 8).unwrap().data, 4 << 8);
    // Reserved delivery modes send nothing.
    assert_eq!(message(3 << 8), None);
    assert_eq!(message(6 << 8), None);
}

#[test]
fn edge_pin_delivers_on_rising_edges_only() {
    let (mut io, rec) = chip();
    io.set_irq(3, true);
    assert!(rec.sent.lock().unwrap().is_empty(), "masked pin is silent");
    io.set_irq(3, false);
    program(&mut io, 3, 0x30, 0);
    assert!(
        rec.sent.lock().unwrap().is_empty(),
        "an edge is not latched"
    );
    io.set_irq(3, true);
    io.set_irq(3, true);
    assert_eq!(rec.sent.lock().unwrap().len(), 1, "no edge while high");
    io.set_irq(3, false);
    io.set_irq(3, true);
    assert_eq!(rec.sent.lock().unwrap().len(), 2);
    assert_eq!(
        read_reg(&mut io, 0x16) & REMOTE_IRR,
        0,
        "no remote IRR on edge"
    );
    // An EOI of an edge vector changes nothing.
    io.end_of_interrupt(0x30);
    assert_eq!(rec.sent.lock().unwrap().len(), 2);
}

#[test]
fn level_pin_waits_for_eoi_and_redelivers_while_asserted() {
    let (mut io, rec) = chip();
    program(&mut io, 9, 0x39 | LEVEL, 0);
    io.set_irq(9, true);
    assert_eq!(rec.sent.lock().unwrap().len(), 1);
    assert_ne!(read_reg(&mut io, 0x22) & REMOTE_IRR, 0, "remote IRR set");
    // Still high, but the guest has not ended it: nothing more.
    io.set_irq(9, true);
    assert_eq!(rec.sent.lock().unwrap().len(), 1);
    // A foreign vector's EOI does not clear it.
    io.end_of_interrupt(0x40);
    assert_ne!(read_reg(&mut io, 0x22) & REMOTE_IRR, 0);
    // EOI while still asserted: delivered again.
    io.end_of_interrupt(0x39);
    assert_eq!(rec.sent.lock().unwrap().len(), 2);
    assert_ne!(read_reg(&mut io, 0x22) & REMOTE_IRR, 0);
    // Line drops, then EOI: remote IRR clear, nothing sent.
    io.set_irq(9, false);
    io.end_of_interrupt(0x39);
    assert_eq!(rec.sent.lock().unwrap().len(), 2);
    assert_eq!(read_reg(&mut io, 0x22) & REMOTE_IRR, 0);
    let sent = rec.sent.lock().unwrap();
    assert_eq!(sent[0].data, 0x39 | 1 << 14 | 1 << 15);
}

#[test]
fn guest_cannot_write_remote_irr() {
    let (mut io, rec) = chip();
    program(&mut io, 2, 0x22 | LEVEL | REMOTE_IRR, 0);
    assert_eq!(read_reg(&mut io, 0x14) & REMOTE_IRR, 0);
    io.set_irq(2, true);
    assert_eq!(rec.sent.lock().unwrap().len(), 1);
    // Rewriting the entry (e.g. to move it to another CPU) keeps the chip's
    // remote IRR, so the line is not delivered twice.
    program(&mut io, 2, 0x22 | LEVEL, 1 << 24);
    assert_ne!(read_reg(&mut io, 0x14) & REMOTE_IRR, 0);
    assert_eq!(rec.sent.lock().unwrap().len(), 1);
}

#[test]
fn unmasking_an_asserted_level_line_delivers_it() {
    let (mut io, rec) = chip();
    write_reg(&mut io, 0x10 + 2 * 7, 0x47 | LEVEL | MASKED);
    io.set_irq(7, true);
    assert!(rec.sent.lock().unwrap().is_empty());
    write_reg(&mut io, 0x10 + 2 * 7, 0x47 | LEVEL);
    assert_eq!(rec.sent.lock().unwrap().len(), 1);
    // Still high at its EOI: delivered again.
    io.end_of_interrupt(0x47);
    assert_eq!(rec.sent.lock().unwrap().len(), 2);
}

#[test]
fn hostile_accesses_never_panic_and_change_nothing() {
    let (mut io, rec) = chip();
    program(&mut io, 0, 0x20, 0);
    let before: Vec<u64> = (0..24).map(|p| io.entry(p).unwrap()).collect();
    // Out-of-range registers: reads are 0, writes are ignored.
    for reg in [0x03u8, 0x0f, 0x40, 0x41, 0x80, 0xff] {
        assert_eq!(read_reg(&mut io, reg), 0, "register {reg:#x}");
        write_reg(&mut io, reg, 0xffff_ffff);
    }
    // Wrong widths and unaligned or unknown offsets, through the window too.
    select(&mut io, 0x10);
    for offset in [
        0u64, 1, 2, 3, 4, 8, 0xc, 0x10, 0x11, 0x12, 0x14, 0x20, 0x40, 0xffc, 0xfff,
    ] {
        for len in [1usize, 2, 3, 8] {
            let mut d = vec![0xaa; len];
            io.read(offset, &mut d);
            io.write(offset, &vec![0xff; len]);
        }
    }
    // A byte write to IOREGSEL is accepted (some guests do it); undo it.
    select(&mut io, 0x10);
    let after: Vec<u64> = (0..24).map(|p| io.entry(p).unwrap()).collect();
    assert_eq!(before, after);
    assert_eq!(read_reg(&mut io, 0x10), 0x20);
    // Odd reads leave the bus's fill in place.
    let mut d = [0xaa; 2];
    io.read(IOWIN, &mut d);
    assert_eq!(d, [0xaa; 2]);
    // Lines past the last pin and EOIs of any vector are ignored.
    io.set_irq(24, true);
    io.set_irq(usize::MAX, true);
    for v in 0..=255u8 {
        io.end_of_interrupt(v);
    }
    assert!(rec.sent.lock().unwrap().is_empty());
    assert_eq!(io.entry(24), None);
}
