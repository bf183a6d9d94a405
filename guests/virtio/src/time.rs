//! Deadlines on the TSC (rdtsc works at CPL 3; there is no timer interrupt).

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

/// Assumed when CPUID does not tell: on a slower TSC every wait only gets
/// longer, never shorter than it would on a 3 GHz one.
const FALLBACK_HZ: u64 = 3_000_000_000;

static HZ: AtomicU64 = AtomicU64::new(0);

/// The TSC frequency from CPUID leaf 0x15 (crystal ratio) or 0x16 (base
/// MHz).
pub fn tsc_hz() -> u64 {
    let cached = HZ.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let max = __cpuid(0).eax;
    let mut hz = 0;
    if max >= 0x15 {
        let leaf = __cpuid(0x15);
        if leaf.eax != 0 && leaf.ebx != 0 && leaf.ecx != 0 {
            hz = u64::from(leaf.ecx) * u64::from(leaf.ebx) / u64::from(leaf.eax);
        }
    }
    if hz == 0 && max >= 0x16 {
        hz = u64::from(__cpuid(0x16).eax & 0xffff) * 1_000_000;
    }
    if hz == 0 {
        hz = FALLBACK_HZ;
    }
    HZ.store(hz, Ordering::Relaxed);
    hz
}

fn now() -> u64 {
    // SAFETY: rdtsc has no side effects and is allowed at CPL 3.
    unsafe { _rdtsc() }
}

#[derive(Clone, Copy)]
pub struct Deadline(u64);

impl Deadline {
    pub fn after_ms(ms: u64) -> Self {
        Self(now().saturating_add(ms.saturating_mul(tsc_hz() / 1000)))
    }

    pub fn expired(self) -> bool {
        now() >= self.0
    }
}

/// Poll `done` until it returns true or `ms` milliseconds pass; true if done.
pub fn wait_until(ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Deadline::after_ms(ms);
    loop {
        if done() {
            return true;
        }
        if deadline.expired() {
            return false;
        }
        core::hint::spin_loop();
    }
}
