//! A write-only, memory-mapped debug console.
//!
//! Guest code at CPL 3 cannot use port I/O, so it cannot reach the UART; this
//! device gives it a way to print (like QEMU's `isa-debugcon`, but on MMIO).
//!
//! The rule: every write at offset 0 sends all of its bytes, in address order
//! (lowest first), to the console output. A 1-byte write prints one byte; a
//! 4-byte write prints four. Writes at any other offset are ignored, and all
//! reads return zeros. Map it with [`DEBUGCON_RANGE_LEN`] at the platform's
//! debug console address.

use std::io::Write;

use crate::bus::BusDevice;
use crate::serial::SharedOutput;

/// Length of the debug console's register block.
pub const DEBUGCON_RANGE_LEN: u64 = 0x10;

/// The debug console device.
#[derive(Debug)]
pub struct DebugConsole {
    output: SharedOutput,
}

impl DebugConsole {
    /// A console printing to `output` (normally the serial port's output).
    pub fn new(output: SharedOutput) -> Self {
        Self { output }
    }
}

impl BusDevice for DebugConsole {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 {
            tracing::debug!("debugcon: ignored write at {offset:#x}");
            return;
        }
        // Output must never stall or fail the guest; a lost byte is fine.
        if let Err(e) = self.output.write_all(data) {
            tracing::trace!("debugcon: output: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_at_offset_zero_print_in_order() {
        let out = Captured::default();
        let mut dev = DebugConsole::new(SharedOutput::new(out.clone()));
        dev.write(0, b"h");
        dev.write(0, &u32::from_le_bytes(*b"ello").to_le_bytes());
        dev.write(1, b"X");
        dev.write(8, b"Y");
        assert_eq!(&*out.0.lock().unwrap(), b"hello");
        let mut r = [0xffu8; 4];
        dev.read(0, &mut r);
        assert_eq!(r, [0; 4]);
    }

    #[test]
    fn interleaves_with_other_users_of_the_output() {
        let out = Captured::default();
        let shared = SharedOutput::new(out.clone());
        let mut dev = DebugConsole::new(shared.clone());
        let mut other = shared;
        dev.write(0, b"a");
        other.write_all(b"b").unwrap();
        dev.write(0, b"c");
        assert_eq!(&*out.0.lock().unwrap(), b"abc");
    }
}
