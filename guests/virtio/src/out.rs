//! Output on Vireo's MMIO debug console, power-off, and the optional mirror
//! of everything printed onto a virtio console (QEMU has no debug console,
//! so that is how the guest is watched there).

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::ptr::write_volatile;

const DEBUGCON: *mut u8 = 0xfeb0_1000 as *mut u8;
const ACPI_SLEEP_CONTROL: *mut u8 = 0xfeb0_0000 as *mut u8;
const ACPI_SLEEP_S5: u8 = 0x34;

/// `say!("...")`: one line on the debug console (a newline is appended).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

/// A cell for the guest's globals: there is one CPU and no interrupts, so
/// nothing ever runs concurrently with its user.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: single CPU, interrupts off; see above.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// # Safety
    /// The caller must not let two of the returned references overlap.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        unsafe { &mut *self.0.get() }
    }
}

/// Where mirrored lines go: something that takes a whole line at a time.
pub trait Sink {
    fn write_line(&mut self, line: &[u8]);
}

const TRANSCRIPT_SIZE: usize = 32 * 1024;

struct State {
    /// Everything printed so far, to replay once a mirror appears.
    transcript: [u8; TRANSCRIPT_SIZE],
    len: usize,
    mirror: Option<&'static mut dyn Sink>,
    /// Set while a line goes to the mirror, so a panic inside it does not
    /// recurse into the same device.
    mirroring: bool,
}

static STATE: Global<State> = Global::new(State {
    transcript: [0; TRANSCRIPT_SIZE],
    len: 0,
    mirror: None,
    mirroring: false,
});

struct Line<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Line<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            // SAFETY: the debug console register takes any byte.
            unsafe { write_volatile(DEBUGCON, b) };
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

pub fn line(args: fmt::Arguments) {
    let mut buf = [0u8; 512];
    let mut line = Line {
        buf: &mut buf,
        len: 0,
    };
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    let len = line.len;
    // SAFETY: single-threaded; no other reference to STATE is live.
    let state = unsafe { STATE.get() };
    let room = TRANSCRIPT_SIZE - state.len;
    let kept = len.min(room);
    state.transcript[state.len..state.len + kept].copy_from_slice(&buf[..kept]);
    state.len += kept;
    if !state.mirroring {
        if let Some(sink) = state.mirror.as_mut() {
            state.mirroring = true;
            sink.write_line(&buf[..len]);
            state.mirroring = false;
        }
    }
}

/// From now on send every line to `sink` as well, starting with a replay of
/// all lines printed so far.
pub fn set_mirror(sink: &'static mut dyn Sink) {
    // SAFETY: single-threaded; no other reference to STATE is live.
    let state = unsafe { STATE.get() };
    state.mirroring = true;
    let mut start = 0;
    for i in 0..state.len {
        if state.transcript[i] == b'\n' {
            sink.write_line(&state.transcript[start..=i]);
            start = i + 1;
        }
    }
    state.mirror = Some(sink);
    state.mirroring = false;
}

pub fn poweroff() -> ! {
    // SAFETY: Vireo's ACPI sleep control register; S5 powers the VM off.
    unsafe { write_volatile(ACPI_SLEEP_CONTROL, ACPI_SLEEP_S5) };
    // Under QEMU nothing is there: the harness stops the VM after `virtio: done`.
    loop {
        core::hint::spin_loop();
    }
}
