//! End-to-end boots of the project's test guests on the real `/dev/kvm`:
//! each runs the real `vireo` binary and checks what the guest printed and
//! how vireo exited.

mod common;

use std::time::Duration;

use common::{guest, is_kvm_pvm, run_vireo};

const T: Duration = Duration::from_secs(60);

fn run_guest(name: &str, extra: &[&str]) -> common::RunResult {
    let path = guest(name);
    let mut args = vec!["run", "--kernel", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_vireo(&args, T)
}

#[test]
fn pvh_guest_prints_and_powers_off() {
    let r = run_guest("hello", &["--cmdline", "quiet answer=42"]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains("hello: vireo guest booted\n"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("hello: cmdline=quiet answer=42\n"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.is_empty(), "{}", r.describe());
}

#[test]
fn pvh_initrd_is_module_zero_at_the_top_of_low_ram() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("pvh-initrd-{}", std::process::id()));
    let mut data = b"VIREOINITRD-TEST".to_vec();
    data.resize(100_016, 0);
    std::fs::write(&path, &data).unwrap();
    let r = run_guest(
        "hello",
        &["--initrd", path.to_str().unwrap(), "--memory", "128M"],
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(r.code, Some(0), "{}", r.describe());
    // Highest page-aligned place that ends below 128 MiB; "VIRE" little-endian.
    let addr = ((128u64 << 20) - 100_016) & !0xfff;
    let want = format!("hello: module addr={addr:08x} size=100016 first=45524956\n");
    assert!(r.stdout.contains(&want), "want {want:?}\n{}", r.describe());
}

#[test]
fn default_command_line_reaches_the_guest() {
    let r = run_guest("hello", &[]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout
            .contains("hello: cmdline=console=ttyS0 reboot=k panic=1\n"),
        "{}",
        r.describe()
    );
}

#[test]
fn demo_reports_and_ends_ok() {
    let r = run_vireo(&["demo", "--cpus", "2"], T);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert_eq!(
        r.stdout.lines().last(),
        Some("demo: ok"),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("demo: cpus=2\n"), "{}", r.describe());
    assert!(
        r.stdout.contains("demo: cmdline=vireo demo\n"),
        "{}",
        r.describe()
    );
    // 128 MiB by default: RAM from 1 MiB up to 128 MiB.
    assert!(
        r.stdout
            .contains("demo: mem 0x0000000000100000-0x0000000007ffffff ram"),
        "{}",
        r.describe()
    );
}

#[test]
fn four_gib_guest_has_ram_above_the_hole() {
    let r = run_vireo(&["demo", "--memory", "4G"], T);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    // RAM below the hole ends at 3 GiB; the last GiB is at 4 GiB.
    assert!(
        r.stdout
            .contains("demo: mem 0x0000000000100000-0x00000000bfffffff ram"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout
            .contains("demo: mem 0x0000000100000000-0x000000013fffffff ram"),
        "{}",
        r.describe()
    );
    // Nothing usable between 3 and 4 GiB.
    let ram = r.stdout.lines().filter(|l| l.ends_with(" ram"));
    assert_eq!(ram.clone().count(), 3, "{}", r.describe());
    for line in ram {
        let range = line.split_whitespace().nth(2).unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
        // The guest prints inclusive ends.
        let (a, b) = (hex(a), hex(b));
        assert!(
            b < 0xc000_0000 || a >= 0x1_0000_0000,
            "RAM in the hole: {line}"
        );
    }
}

fn check_smp(cpus: u32) {
    let n = cpus.to_string();
    let r = run_guest("smp", &["--cpus", &n]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(
        r.stdout.contains(&format!("smp: madt cpus={cpus}\n")),
        "{}",
        r.describe()
    );
    for i in 0..cpus {
        assert!(
            r.stdout
                .contains(&format!("smp: cpu {i} apic {i} cpuid-apic {i}\n")),
            "cpu {i} did not report\n{}",
            r.describe()
        );
    }
    assert!(
        r.stdout.contains(&format!("smp: ok {cpus} cpus\n")),
        "{}",
        r.describe()
    );
}

#[test]
fn smp_one_cpu() {
    check_smp(1);
}

#[test]
fn smp_two_cpus() {
    check_smp(2);
}

#[test]
fn smp_eight_cpus() {
    check_smp(8);
}

/// The cpl3 guest's computation (see guests/cpl3): an LCG stepped 200 M times.
fn cpl3_expected() -> u64 {
    let mut x: u64 = 1;
    for _ in 0..200_000_000u32 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
    }
    x
}

#[test]
fn user_mode_compute_reports_through_mmio() {
    let r = run_guest("cpl3", &[]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    let want = format!("cpl3: result={:#018x}\n", cpl3_expected());
    assert!(r.stdout.contains(&want), "want {want:?}\n{}", r.describe());
    assert!(r.stdout.contains("cpl3: ok\n"), "{}", r.describe());
}

#[test]
fn triple_fault_exits_nonzero_with_registers() {
    let r = run_guest("triple-fault", &[]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(
        r.stdout.contains("triple-fault: faulting now"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains("triple fault"), "{}", r.describe());
    assert!(r.stderr.contains("rip=0x"), "{}", r.describe());
    assert!(r.stderr.contains("cr0="), "{}", r.describe());
}

#[test]
fn unemulated_instruction_exits_nonzero_with_rip_and_bytes() {
    let r = run_guest("bad-insn", &[]);
    assert_eq!(r.code, Some(1), "{}", r.describe());
    assert!(
        r.stdout.contains("bad-insn: executing xrstor"),
        "{}",
        r.describe()
    );
    assert!(r.stderr.contains("rip=0x"), "{}", r.describe());
    if is_kvm_pvm() {
        // xrstor (0f ae /5) is what the emulator lacks.
        assert!(
            r.stderr.contains("instruction emulation failed"),
            "{}",
            r.describe()
        );
        assert!(r.stderr.contains("code at 0x"), "{}", r.describe());
        assert!(r.stderr.contains(": 0f ae"), "{}", r.describe());
    }
}

#[test]
fn exit_guest_powers_off_at_once() {
    let r = run_guest("exit", &["--serial", "off"]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());
}

#[test]
fn minimal_cpu_template_boots() {
    let r = run_guest("smp", &["--cpus", "2", "--cpu-template", "minimal"]);
    assert_eq!(r.code, Some(0), "{}", r.describe());
    assert!(r.stdout.contains("smp: ok 2 cpus"), "{}", r.describe());
}
