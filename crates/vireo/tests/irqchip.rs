//! The interrupt controllers, end to end: the `irq` test guest programs
//! the I/O APIC's pin 4, turns on COM1's transmitter interrupt and waits
//! for it. With the default split irqchip the pin's route comes from
//! Vireo's own I/O APIC (its debug log says so); with `--irqchip=kernel`
//! (and `--pit`, which picks that irqchip) from KVM's. With the pin level
//! triggered, the guest's EOI comes back to vireo as a KVM exit.

mod common;

use std::time::Duration;

use common::{guest, run_vireo, RunResult};

const T: Duration = Duration::from_secs(60);

/// What vireo's I/O APIC logs (at debug level) when a pin gets a route.
const ROUTED: &str = "I/O APIC pin routed pin=4";

fn run_irq_guest(extra: &[&str]) -> RunResult {
    let path = guest("irq");
    let mut args = vec!["-vv", "run", "--kernel", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_vireo(&args, T)
}

/// What vireo's vCPU loop logs (at debug level) on KVM's EOI exit.
const EOI_EXIT: &str = "I/O APIC EOI vector=64";

fn assert_took_the_interrupt(r: &RunResult) {
    assert_took_it_on(r, "0x0000000000000040");
}

fn assert_took_it_on(r: &RunResult, entry: &str) {
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains("irq: ioapic version 0x00170011\n"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains(&format!("irq: pin 4 entry {entry}\n")),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("irq: vector 0x40 count=") && r.stdout.contains("irq: ok\n"),
        "{}",
        r.describe()
    );
}

#[test]
fn serial_interrupt_through_the_user_space_ioapic_by_default() {
    let r = run_irq_guest(&[]);
    assert_took_the_interrupt(&r);
    assert!(r.stderr.contains(ROUTED), "{}", r.describe());
}

#[test]
fn level_triggered_pin_ends_with_an_eoi_exit_to_vireos_ioapic() {
    let r = run_irq_guest(&["--cmdline", "level"]);
    assert_took_it_on(&r, "0x0000000000008040");
    assert!(r.stderr.contains(ROUTED), "{}", r.describe());
    // KVM told vireo of the EOI of the level-triggered vector 0x40.
    assert!(r.stderr.contains(EOI_EXIT), "{}", r.describe());
    // The in-kernel I/O APIC takes the same EOI inside KVM.
    let r = run_irq_guest(&["--cmdline", "level", "--irqchip=kernel"]);
    assert_took_it_on(&r, "0x0000000000008040");
    assert!(!r.stderr.contains(EOI_EXIT), "{}", r.describe());
}

#[test]
fn serial_interrupt_through_the_in_kernel_ioapic() {
    let r = run_irq_guest(&["--irqchip=kernel"]);
    assert_took_the_interrupt(&r);
    assert!(!r.stderr.contains(ROUTED), "{}", r.describe());
}

#[test]
fn pit_picks_the_in_kernel_irqchip_with_or_without_reinjection() {
    for pit in ["--pit", "--pit=reinject"] {
        let r = run_irq_guest(&[pit]);
        assert_took_the_interrupt(&r);
        assert!(!r.stderr.contains(ROUTED), "{pit}: {}", r.describe());
    }
}

#[test]
fn pit_with_the_split_irqchip_is_refused() {
    let r = run_irq_guest(&["--irqchip=split", "--pit"]);
    assert_ne!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stderr
            .contains("the in-kernel PIT needs the in-kernel irqchip"),
        "{}",
        r.describe()
    );
    assert!(!r.stdout.contains("irq:"), "{}", r.describe());
}

#[test]
fn unknown_irqchip_and_pit_values_are_usage_errors() {
    for bad in [["--irqchip=user"], ["--pit=maybe"]] {
        let r = run_irq_guest(&bad);
        assert_eq!(r.code, Some(2), "{bad:?}: {}", r.describe());
    }
}
