//! The HW-reduced ACPI fixed registers: sleep control, sleep status and the
//! reset register, one byte each in a small MMIO block.
//!
//! A HW-reduced guest powers off by writing `SLP_TYP << 2 | SLP_EN` to the
//! sleep control register (with the `SLP_TYP` its DSDT gives for `\_S5`) and
//! resets by writing the FADT's reset value to the reset register. This
//! device turns those two writes into `EventFd` signals for the VMM; it
//! never stops anything itself.
//!
//! Layout (offsets in the block): [`SLEEP_CONTROL_OFFSET`] = 0,
//! [`SLEEP_STATUS_OFFSET`] = 1, [`RESET_OFFSET`] = 2. A wider access covers
//! consecutive registers, lowest byte first. Reads return zeros.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Offset of the sleep control register.
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
/// Offset of the sleep status register.
pub const SLEEP_STATUS_OFFSET: u64 = 1;
/// Offset of the reset register.
pub const RESET_OFFSET: u64 = 2;
/// Length of the register block as mapped.
pub const ACPI_PM_RANGE_LEN: u64 = 0x10;

/// `SLP_EN`, bit 5 of the sleep control register.
const SLP_EN: u8 = 1 << 5;
/// `SLP_TYP`, bits 2..=4 of the sleep control register.
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

/// The ACPI power-management register block.
#[derive(Debug)]
pub struct AcpiPm {
    exit: EventFd,
    reset: EventFd,
    s5_sleep_type: u8,
    reset_value: u8,
    ending: Option<Arc<AtomicBool>>,
}

impl AcpiPm {
    /// A register block that signals `exit` when the guest enters S5
    /// (`SLP_TYP == s5_sleep_type` with `SLP_EN`) and `reset` when it writes
    /// `reset_value` to the reset register. Both values must match what the
    /// VMM's ACPI tables announce (DSDT `\_S5`, FADT `RESET_VALUE`).
    pub fn new(exit: EventFd, reset: EventFd, s5_sleep_type: u8, reset_value: u8) -> Self {
        Self {
            exit,
            reset,
            s5_sleep_type,
            reset_value,
            ending: None,
        }
    }

    /// Also set `ending` before either event is written. The write runs
    /// on the vCPU that made it, which checks the latch before entering
    /// the guest again: a machine that powers off or resets runs no
    /// further instruction (without it the vCPU ran on into the guest's
    /// next instructions, usually a HLT, until the VMM kicked it out).
    pub fn with_ending_latch(mut self, ending: Arc<AtomicBool>) -> Self {
        self.ending = Some(ending);
        self
    }

    fn end(&self, event: &EventFd, what: &str) {
        if let Some(ending) = &self.ending {
            ending.store(true, Ordering::Release);
        }
        signal(event, what);
    }

    fn write_register(&mut self, register: u64, value: u8) {
        match register {
            SLEEP_CONTROL_OFFSET => {
                let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if value & SLP_EN != 0 && sleep_type == self.s5_sleep_type {
                    tracing::info!("acpi: guest requested power off (S5)");
                    self.end(&self.exit, "exit");
                } else {
                    tracing::debug!("acpi: ignored sleep control write {value:#x}");
                }
            }
            RESET_OFFSET if value == self.reset_value => {
                tracing::info!("acpi: guest requested reset");
                self.end(&self.reset, "reset");
            }
            _ => tracing::debug!("acpi: ignored write {value:#x} at {register:#x}"),
        }
    }
}

fn signal(event: &EventFd, what: &str) {
    if let Err(e) = event.write(1) {
        tracing::error!("acpi: cannot signal {what}: {e}");
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (register, &value) in (offset..).zip(data) {
            self.write_register(register, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm() -> (AcpiPm, EventFd, EventFd) {
        let exit = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = AcpiPm::new(exit.try_clone().unwrap(), reset.try_clone().unwrap(), 5, 1);
        (dev, exit, reset)
    }

    #[test]
    fn the_ending_latch_is_set_by_power_off_and_reset_only() {
        for (register, value, ends) in [
            (SLEEP_CONTROL_OFFSET, 5 << 2 | SLP_EN, true),
            (RESET_OFFSET, 1, true),
            (SLEEP_CONTROL_OFFSET, 5 << 2, false),
            (RESET_OFFSET, 2, false),
        ] {
            let (dev, _exit, _reset) = pm();
            let ending = Arc::new(AtomicBool::new(false));
            let mut dev = dev.with_ending_latch(ending.clone());
            dev.write(register, &[value]);
            assert_eq!(
                ending.load(Ordering::Acquire),
                ends,
                "{register} {value:#x}"
            );
        }
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let (mut dev, exit, reset) = pm();
        dev.write(SLEEP_CONTROL_OFFSET, &[5 << 2 | SLP_EN]);
        assert_eq!(exit.read().unwrap(), 1);
        assert!(reset.read().is_err());
    }

    #[test]
    fn reset_value_resets() {
        let (mut dev, exit, reset) = pm();
        dev.write(RESET_OFFSET, &[1]);
        assert_eq!(reset.read().unwrap(), 1);
        assert!(exit.read().is_err());
    }

    #[test]
    fn other_values_are_ignored() {
        let (mut dev, exit, reset) = pm();
        dev.write(SLEEP_CONTROL_OFFSET, &[5 << 2]); // no SLP_EN
        dev.write(SLEEP_CONTROL_OFFSET, &[3 << 2 | SLP_EN]); // S3, not S5
        dev.write(SLEEP_STATUS_OFFSET, &[0xff]);
        dev.write(RESET_OFFSET, &[2]);
        dev.write(7, &[1]);
        assert!(exit.read().is_err());
        assert!(reset.read().is_err());
        let mut r = [0xffu8; 4];
        dev.read(0, &mut r);
        assert_eq!(r, [0; 4]);
    }

    #[test]
    fn wide_write_covers_consecutive_registers() {
        let (mut dev, exit, reset) = pm();
        dev.write(0, &[0, 0, 1, 0]);
        assert_eq!(reset.read().unwrap(), 1);
        assert!(exit.read().is_err());
    }
}
