//! A minimal i8042 keyboard controller: enough for a Linux guest to probe it
//! without timeouts and to reboot through it (`reboot=k`).
//!
//! Mapping: one port range at `0x60` of length [`I8042_RANGE_LEN`] (5), so
//! the data port `0x60` is offset [`DATA_OFFSET`] (0) and the command/status
//! port `0x64` is offset [`COMMAND_OFFSET`] (4). Ports `0x61..=0x63` fall in
//! the range but are not the controller's: they read as zero and ignore
//! writes (port `0x61`, the PC speaker/PIT gate, is served by KVM's in-kernel
//! PIT before an exit ever reaches the VMM).
//!
//! The controller answers its own polled commands (read/write the command
//! byte, self-tests, output port) so a guest's probe completes at once, and
//! turns command `0xFE` (pulse the reset line) or an output-port write with
//! the reset bit low into a signal on the reset `EventFd`. No keyboard or
//! mouse is attached and no interrupt is ever raised, so Vireo's FADT does
//! not announce an 8042 and Linux leaves it alone; a guest that probes it
//! anyway (`acpi=off`) finds a passing controller, an open keylock and no
//! aux port, without waiting out any timeout.
//! (vm-superio's `I8042Device` handles only the reset command, so it is not
//! used here.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Offset of the data port (`0x60`) in the range.
pub const DATA_OFFSET: u64 = 0;
/// Offset of the command/status port (`0x64`) in the range.
pub const COMMAND_OFFSET: u64 = 4;
/// Length of the port range starting at `0x60`.
pub const I8042_RANGE_LEN: u64 = 5;

/// Status: output buffer full (a byte waits at the data port).
const STATUS_OUTPUT_FULL: u8 = 0x01;
/// Status: system flag, set once the controller passed its self-test.
const STATUS_SYSTEM: u8 = 0x04;
/// Status: the last write was to the command port.
const STATUS_COMMAND: u8 = 0x08;
/// Status: keyboard not inhibited (the keylock switch is open). Clear, it
/// tells the guest a key switch locks the keyboard: Linux warns
/// "Keylock active" on every probe.
const STATUS_KEYLOCK_OPEN: u8 = 0x10;

/// Command byte: system flag.
const CTR_SYSTEM: u8 = 0x04;
/// Command byte: keyboard interface disabled.
const CTR_KBD_DISABLED: u8 = 0x10;
/// Command byte: aux (mouse) interface disabled.
const CTR_AUX_DISABLED: u8 = 0x20;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_PULSE_RESET: u8 = 0xfe;

const SELF_TEST_PASSED: u8 = 0x55;
const INTERFACE_OK: u8 = 0x00;
/// Interface test result "clock line stuck low": no device on the aux port.
const INTERFACE_CLOCK_LOW: u8 = 0x01;

/// Output port bit 0: the CPU reset line (active low).
const OUTPUT_PORT_RESET_HIGH: u8 = 0x01;
/// Output port as after power-on: reset line high, A20 enabled.
const OUTPUT_PORT_DEFAULT: u8 = 0x03;

/// Bytes the controller can hold for the guest to read; more is dropped.
const OUTPUT_QUEUE_MAX: usize = 16;

/// The i8042 controller.
#[derive(Debug)]
pub struct I8042 {
    reset: EventFd,
    command_byte: u8,
    output_port: u8,
    /// A command waiting for its data byte at the data port.
    awaiting_data: Option<u8>,
    last_write_was_command: bool,
    output: VecDeque<u8>,
    ending: Option<Arc<AtomicBool>>,
}

impl I8042 {
    /// A controller that writes `reset` when the guest pulses the reset line.
    pub fn new(reset: EventFd) -> Self {
        Self {
            reset,
            command_byte: CTR_SYSTEM | CTR_AUX_DISABLED,
            output_port: OUTPUT_PORT_DEFAULT,
            awaiting_data: None,
            last_write_was_command: false,
            output: VecDeque::new(),
            ending: None,
        }
    }

    /// Also set `ending` before `reset` is written: the vCPU that pulsed
    /// the line checks it before entering the guest again (see
    /// [`crate::acpi_pm::AcpiPm::with_ending_latch`]).
    pub fn with_ending_latch(mut self, ending: Arc<AtomicBool>) -> Self {
        self.ending = Some(ending);
        self
    }

    fn status(&self) -> u8 {
        let mut status = STATUS_SYSTEM | STATUS_KEYLOCK_OPEN;
        if !self.output.is_empty() {
            status |= STATUS_OUTPUT_FULL;
        }
        if self.last_write_was_command {
            status |= STATUS_COMMAND;
        }
        status
    }

    fn respond(&mut self, byte: u8) {
        if self.output.len() < OUTPUT_QUEUE_MAX {
            self.output.push_back(byte);
        }
    }

    fn request_reset(&self) {
        tracing::info!("i8042: guest pulsed the reset line");
        if let Some(ending) = &self.ending {
            ending.store(true, Ordering::Release);
        }
        if let Err(e) = self.reset.write(1) {
            tracing::error!("i8042: cannot signal reset: {e}");
        }
    }

    fn command(&mut self, command: u8) {
        self.awaiting_data = None;
        match command {
            CMD_READ_CTR => self.respond(self.command_byte),
            CMD_WRITE_CTR
            | CMD_WRITE_OUTPUT_PORT
            | CMD_WRITE_KBD_OUTPUT
            | CMD_WRITE_AUX_OUTPUT
            | CMD_WRITE_AUX => self.awaiting_data = Some(command),
            CMD_AUX_DISABLE => self.command_byte |= CTR_AUX_DISABLED,
            CMD_AUX_ENABLE => self.command_byte &= !CTR_AUX_DISABLED,
            CMD_AUX_TEST => self.respond(INTERFACE_CLOCK_LOW),
            CMD_SELF_TEST => {
                self.output.clear();
                self.respond(SELF_TEST_PASSED);
            }
            CMD_KBD_TEST => self.respond(INTERFACE_OK),
            CMD_KBD_DISABLE => self.command_byte |= CTR_KBD_DISABLED,
            CMD_KBD_ENABLE => self.command_byte &= !CTR_KBD_DISABLED,
            CMD_READ_OUTPUT_PORT => self.respond(self.output_port),
            CMD_PULSE_RESET => self.request_reset(),
            _ => tracing::debug!("i8042: ignored command {command:#x}"),
        }
    }

    fn data(&mut self, value: u8) {
        match self.awaiting_data.take() {
            Some(CMD_WRITE_CTR) => self.command_byte = value,
            Some(CMD_WRITE_OUTPUT_PORT) => {
                self.output_port = value;
                if value & OUTPUT_PORT_RESET_HIGH == 0 {
                    self.request_reset();
                }
            }
            // Bytes "from the keyboard": loop them back as a real one does.
            Some(CMD_WRITE_KBD_OUTPUT) => self.respond(value),
            // There is no aux channel, so the byte comes back at once as
            // keyboard data (the aux-data status bit never set): a guest's
            // loopback test (Linux's check_aux) fails on the spot instead
            // of waiting out its timeout for a byte that never came.
            Some(CMD_WRITE_AUX_OUTPUT) => self.respond(value),
            // A byte for the aux device: none is attached.
            Some(_) => {}
            // A byte for the keyboard: none is attached.
            None => tracing::debug!("i8042: no keyboard for byte {value:#x}"),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA_OFFSET => self.output.pop_front().unwrap_or(0),
            COMMAND_OFFSET => self.status(),
            _ => 0,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            DATA_OFFSET => {
                self.last_write_was_command = false;
                self.data(value);
            }
            COMMAND_OFFSET => {
                self.last_write_was_command = true;
                self.command(value);
            }
            _ => tracing::debug!("i8042: ignored write at port offset {offset:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> (I8042, EventFd) {
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        (I8042::new(reset.try_clone().unwrap()), reset)
    }

    fn rd(d: &mut I8042, offset: u64) -> u8 {
        let mut b = [0xffu8];
        d.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn pulse_reset_command_signals_reset() {
        let (mut d, reset) = dev();
        // Linux's kb_wait: the input buffer must read as empty.
        assert_eq!(rd(&mut d, COMMAND_OFFSET) & 0x02, 0);
        d.write(COMMAND_OFFSET, &[0xfe]);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn output_port_reset_bit_low_signals_reset() {
        let (mut d, reset) = dev();
        d.write(COMMAND_OFFSET, &[CMD_WRITE_OUTPUT_PORT]);
        d.write(DATA_OFFSET, &[0x02]);
        assert_eq!(reset.read().unwrap(), 1);
    }

    #[test]
    fn idle_controller_reads_zero_data_and_no_output() {
        let (mut d, reset) = dev();
        assert_eq!(rd(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(rd(&mut d, DATA_OFFSET), 0);
        assert_eq!(rd(&mut d, 1), 0);
        d.write(DATA_OFFSET, &[0xff]); // keyboard reset: nobody there
        d.write(COMMAND_OFFSET, &[0x12]); // unknown command
        assert_eq!(rd(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert!(reset.read().is_err());
    }

    #[test]
    fn probe_commands_are_answered() {
        let (mut d, _reset) = dev();
        d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_ne!(rd(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(rd(&mut d, DATA_OFFSET), SELF_TEST_PASSED);
        assert_eq!(rd(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);

        d.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        d.write(DATA_OFFSET, &[0x45]);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, DATA_OFFSET), 0x45);
        d.write(COMMAND_OFFSET, &[CMD_KBD_DISABLE]);
        d.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, DATA_OFFSET), 0x45 | CTR_KBD_DISABLED);

        d.write(COMMAND_OFFSET, &[CMD_AUX_TEST]);
        assert_eq!(rd(&mut d, DATA_OFFSET), INTERFACE_CLOCK_LOW);
    }

    #[test]
    fn keylock_is_open() {
        // Linux's i8042_controller_init warns "Keylock active" when 0x10 is
        // clear; it was on every boot (issue 10).
        let (mut d, _reset) = dev();
        assert_ne!(rd(&mut d, COMMAND_OFFSET) & 0x10, 0);
        d.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_ne!(rd(&mut d, COMMAND_OFFSET) & 0x10, 0);
    }

    #[test]
    fn aux_loopback_answers_at_once_without_aux_data() {
        // Linux's check_aux writes 0xd3 0x5a and polls for 0.5 s when no
        // byte comes; an answer without the aux-data bit (0x20) tells it
        // "no aux port" immediately.
        let (mut d, _reset) = dev();
        d.write(COMMAND_OFFSET, &[CMD_WRITE_AUX_OUTPUT]);
        d.write(DATA_OFFSET, &[0x5a]);
        let status = rd(&mut d, COMMAND_OFFSET);
        assert_ne!(status & STATUS_OUTPUT_FULL, 0);
        assert_eq!(status & 0x20, 0, "no aux data");
        assert_eq!(rd(&mut d, DATA_OFFSET), 0x5a);
        assert_eq!(rd(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        // A byte for the aux device itself still goes nowhere.
        d.write(COMMAND_OFFSET, &[CMD_WRITE_AUX]);
        d.write(DATA_OFFSET, &[0xff]);
        assert_eq!(rd(&mut d, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
    }
}
