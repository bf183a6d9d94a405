//! Stock Linux guests, checked by what Linux itself reports: Debian's cloud
//! kernel booted by the real (static) vireo inside an L1 Linux that runs
//! under QEMU's emulator with AMD SVM (`scripts/nested/run.sh`; the method
//! and its cost are in docs/testing.md).
//!
//! All scenarios share one L1 boot, started by the first test that needs it.
//! Each test asserts that its scenario ran to the end and that every check
//! it expects was reported ok; a failure quotes the scenario's L2 console,
//! vireo's log and the failing checks' evidence. `VIREO_NESTED_SCENARIOS`
//! (comma-separated) runs only those scenarios; the others are skipped.
//! Where the host cannot run QEMU's emulator this way (not root, no apt)
//! every test is skipped through `testkit::skip`, never passed.

#[path = "nested/harness.rs"]
mod harness;

use std::sync::OnceLock;

use harness::{Run, Scenario};

/// Every scenario of l1-init.sh this file checks, in the order L1 runs them.
const SCENARIOS: &[&str] = &[
    "boot",
    "boot-1cpu",
    "boot-4cpu-5g",
    "poweroff",
    "reboot",
    "reboot-again",
    "virtio-blk",
    "virtio-blk-mq4",
    "virtio-blk-qcow2",
    "virtio-net",
    "console",
    "rng",
];

/// The scenarios to run: all, or those VIREO_NESTED_SCENARIOS names.
fn selected() -> Vec<&'static str> {
    match std::env::var("VIREO_NESTED_SCENARIOS") {
        Ok(list) if !list.trim().is_empty() => SCENARIOS
            .iter()
            .copied()
            .filter(|s| list.split(',').any(|w| w.trim() == *s))
            .collect(),
        _ => SCENARIOS.to_vec(),
    }
}

/// The one L1 boot of this binary, or why it cannot happen here.
fn nested() -> &'static Result<Run, String> {
    static RUN: OnceLock<Result<Run, String>> = OnceLock::new();
    RUN.get_or_init(|| harness::run("suite", &selected()))
}

/// The scenario `name`, or `None` after recording a skip.
fn scenario(name: &str) -> Option<Scenario<'static>> {
    if !selected().contains(&name) {
        testkit::skip(&format!("scenario {name} not in VIREO_NESTED_SCENARIOS"));
        return None;
    }
    match nested() {
        Ok(run) => Some(run.scenario(name)),
        Err(why) => {
            testkit::skip(why);
            None
        }
    }
}

/// bzImage with an initrd and a command line: `nproc` and the APIC IDs in
/// /proc/cpuinfo match `--cpus 2`, MemTotal fits `--memory 512M`, dmesg has
/// no ACPI error or warning, and `poweroff -f` ends vireo with 0.
#[test]
fn boot_bzimage_with_initrd() {
    let Some(s) = scenario("boot") else { return };
    s.assert_checks(&[
        "nproc",
        "apic-ids",
        "memtotal",
        "acpi-clean",
        "i8042-clean",
        "rtc-clean",
        "rtc-date",
        "vireo-exit",
    ]);
}

/// The boot checks with `--cpus 1 --memory 256M`.
#[test]
fn boot_one_cpu() {
    let Some(s) = scenario("boot-1cpu") else {
        return;
    };
    s.assert_checks(&[
        "nproc",
        "apic-ids",
        "memtotal",
        "acpi-clean",
        "i8042-clean",
        "rtc-clean",
        "rtc-date",
        "vireo-exit",
    ]);
}

/// The boot checks with `--cpus 4 --memory 5G`: RAM on both sides of the
/// 3-4 GiB hole, System RAM above 4 GiB in /proc/iomem.
#[test]
fn boot_four_cpus_memory_above_the_hole() {
    let Some(s) = scenario("boot-4cpu-5g") else {
        return;
    };
    s.assert_checks(&[
        "nproc",
        "apic-ids",
        "memtotal",
        "ram-above-4g",
        "acpi-clean",
        "i8042-clean",
        "rtc-clean",
        "rtc-date",
        "vireo-exit",
    ]);
}

/// The same boot's console has no kernel WARNING, BUG or Oops.
#[test]
fn boot_has_no_kernel_warnings() {
    let Some(s) = scenario("boot") else { return };
    s.assert_checks(&["vireo-exit"]);
    let console = s.l2_console();
    let bad: Vec<&str> = console
        .lines()
        .filter(|l| {
            l.contains("WARNING: CPU:")
                || l.contains("] BUG:")
                || l.contains("Oops")
                || l.contains("consistency problem")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "the L2 kernel warned:\n  {}\n{}",
        bad.join("\n  "),
        s.describe()
    );
}

/// `poweroff -f` (ACPI S5) ends vireo with exit code 0.
#[test]
fn power_poweroff_ends_vireo_with_0() {
    let Some(s) = scenario("poweroff") else {
        return;
    };
    s.assert_checks(&["reached", "vireo-exit"]);
}

/// `reboot -f` without `--reboot`: vireo exits 0 at the reset, one boot.
#[test]
fn power_reboot_without_reboot_flag_exits() {
    let Some(s) = scenario("reboot") else { return };
    s.assert_checks(&["reached", "vireo-exit", "one-boot"]);
}

/// `reboot -f` with `--reboot`: the guest boots again and finds the mark
/// it wrote to its disk before the reset, then powers off.
#[test]
fn power_reboot_with_reboot_flag_boots_again() {
    let Some(s) = scenario("reboot-again") else {
        return;
    };
    s.assert_checks(&["first-boot", "second-boot", "vireo-exit", "two-boots"]);
}

/// The checks of l1-init.sh's `virtio_blk_with`.
const VIRTIO_BLK_CHECKS: &[&str] = &[
    "vda-serial",
    "vda-mq",
    "write",
    "readback",
    "queue-irqs",
    "host-file",
    "vdb-ro",
    "vdb-write-refused",
    "ro-host-file",
    "vireo-exit",
];

/// A raw disk: 8 MiB written and synced in L2 read back in L2 and found in
/// the host file; `serial=` in /sys/block/vda/serial; `queues=2` with 2
/// vCPUs gives two hardware queues in /sys/block/vda/mq; a `readonly=on`
/// disk is read-only to Linux, refuses a write, and its host file stays
/// unchanged.
#[test]
fn virtio_blk_raw_write_serial_queues_readonly() {
    let Some(s) = scenario("virtio-blk") else {
        return;
    };
    s.assert_checks(VIRTIO_BLK_CHECKS);
}

/// The same with `queues=4` and 4 vCPUs (Linux caps a disk's queues at its
/// CPU count): four hardware queues in /sys/block/vda/mq.
#[test]
fn virtio_blk_four_queues_with_four_cpus() {
    let Some(s) = scenario("virtio-blk-mq4") else {
        return;
    };
    s.assert_checks(VIRTIO_BLK_CHECKS);
}

/// A qcow2 image made by `vireo img create` in L1: 8 MiB written and synced
/// in L2 are in the image (converted to raw in L1), whose metadata then
/// checks clean; a read-only qcow2 (`vireo img convert` of a raw file with a
/// marker) reads back the marker, is `ro` to Linux, refuses a write and
/// stays unchanged.
#[test]
fn virtio_blk_qcow2_write_and_readonly_marker() {
    let Some(s) = scenario("virtio-blk-qcow2") else {
        return;
    };
    s.assert_checks(&[
        "vda-serial",
        "vda-mq",
        "write",
        "readback",
        "queue-irqs",
        "host-file",
        "qcow2-check",
        "vdb-ro",
        "vdb-marker",
        "vdb-write-refused",
        "ro-host-file",
        "vireo-exit",
    ]);
}

/// A NIC on a TAP vireo creates in L1: the MAC from `mac=`, L2 pings L1 (3
/// of 3), L1 pings L2 (3 of 3) and then reaches it over TCP; `queues=2`
/// gives eth0 two rx and two tx queues; the traffic took interrupts on the
/// input and output vectors.
#[test]
fn virtio_net_tap_ping_both_ways_and_tcp() {
    let Some(s) = scenario("virtio-net") else {
        return;
    };
    s.assert_checks(&[
        "mac",
        "ping",
        "ping-from-l1",
        "tcp-from-l1",
        "net-queues",
        "net-irqs",
        "vireo-exit",
    ]);
}

/// A line L2 writes to /dev/hvc0 arrives in the `--console file:` file.
#[test]
fn console_guest_to_host() {
    let Some(s) = scenario("console") else { return };
    s.assert_checks(&["hvc0", "host-file", "vireo-exit"]);
}

/// Linux's virtio-rng binds and /dev/hwrng gives differing random bytes.
#[test]
fn rng_feeds_hwrng() {
    let Some(s) = scenario("rng") else { return };
    s.assert_checks(&["rng-available", "hwrng-read", "vireo-exit"]);
}
