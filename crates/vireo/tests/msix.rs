//! MSI-X end to end on the real /dev/kvm: the `virtio` test guest (word
//! `msix`, guests/README.md) programs an MSI-X table entry of the rng
//! device, points the request queue at it and makes the device complete
//! requests; the interrupt must travel Vireo's table entry → KVM GSI route
//! → irqfd → the guest's local APIC, where the guest (interrupts off, at
//! CPL 3) sees the vector in the IRR. Masking an entry, and the whole
//! function, must hold the interrupt in the pending-bit array until unmasked.

mod common;

use std::time::Duration;

use common::{guest, run_vireo, RunResult};

const TIMEOUT: Duration = Duration::from_secs(60);

fn run_msix() -> RunResult {
    let kernel = guest("virtio");
    let r = run_vireo(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--rng",
            "--cmdline",
            "rng msix",
        ],
        TIMEOUT,
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.contains("virtio: done"), "{}", r.describe());
    r
}

fn assert_line(r: &RunResult, line: &str) {
    assert!(
        r.stdout.lines().any(|l| l == line),
        "missing line {line:?}\n{}",
        r.describe()
    );
}

#[test]
fn virtio_msix_vector_reaches_the_local_apic_and_masking_holds_it() {
    let r = run_msix();
    assert!(!r.stdout.contains("FAIL"), "{}", r.describe());
    assert!(!r.stdout.contains("virtio: panic"), "{}", r.describe());
    // The rng's ordinary run comes first and is unaffected.
    assert_line(&r, "virtio-rng: ok");
    // KVM's in-kernel LAPIC answers the guest's MMIO: APIC ID 0 (the
    // destination the guest's MSI address names), xAPIC version 0x14.
    let lapic = r
        .stdout
        .lines()
        .find(|l| l.starts_with("virtio-msix: lapic "))
        .unwrap_or_else(|| panic!("no lapic line\n{}", r.describe()));
    assert!(lapic.contains(" id=0x0 "), "{lapic}");
    let version = lapic
        .split(' ')
        .find_map(|w| w.strip_prefix("version=0x"))
        .and_then(|v| u32::from_str_radix(v, 16).ok())
        .unwrap_or_else(|| panic!("no version in {lapic:?}"));
    assert_eq!(version & 0xff, 0x14, "{lapic}");
    // The rng has one queue: two vectors (queue and configuration).
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("virtio-msix: 00:01.0 ") && l.contains(" vectors=2 ")),
        "{}",
        r.describe()
    );
    assert_line(&r, "virtio-msix: ok vector 0x51 in IRR");
    assert_line(
        &r,
        "virtio-msix: ok masked vector held in PBA and delivered on unmask",
    );
    assert_line(
        &r,
        "virtio-msix: ok function mask held vector in PBA and delivered on unmask",
    );
}

#[test]
fn msix_without_an_rng_says_so() {
    let kernel = guest("virtio");
    let r = run_vireo(
        &[
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--cmdline",
            "msix",
        ],
        TIMEOUT,
    );
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_line(&r, "virtio-msix: FAIL no rng device");
    assert_line(&r, "virtio: done");
}
