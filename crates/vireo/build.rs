//! Builds the demo guest (`guests/demo`) that `vireo demo` embeds, into
//! `$OUT_DIR/demo.elf`, through `guests/build.sh` so it is linked exactly as
//! the test guests are. Needs `sh` and gcc with GNU as and ld (`CC` picks
//! another driver). For a release build, also hands the linker the order
//! of the start-up path's functions (`startup-order.txt`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let guests = manifest_dir.join("../../guests");

    for input in ["build.sh", "common", "demo"] {
        println!("cargo:rerun-if-changed={}", guests.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CC");

    // The release binary's functions that a start runs are laid out side
    // by side (scripts/startup-order.sh lists them; lld places them), so
    // a start maps few pages of its code: 4.0 instead of 6.1 MiB of peak
    // RSS. Names the list has and the binary does not are ignored.
    let order = manifest_dir.join("startup-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    // Not for a static build (the nested harness's): it starts no VM the
    // figures are about, and packed relocations in a static PIE rely on
    // the C library's start-up code supporting them.
    let static_build = env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|features| features.split(',').any(|f| f == "crt-static"));
    if env::var("PROFILE").as_deref() == Ok("release") && !static_build && links_with_lld() {
        println!(
            "cargo:rustc-link-arg-bin=vireo=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=vireo=-Wl,--no-warn-symbol-ordering");
        // Relative relocations packed (DT_RELR): the dynamic loader reads
        // a few KiB at start instead of 248 KiB (0.25 MiB of peak RSS).
        println!("cargo:rustc-link-arg-bin=vireo=-Wl,-z,pack-relative-relocs");
    }

    let status = Command::new("sh")
        .arg(guests.join("build.sh"))
        .arg(&out_dir)
        .arg("demo")
        .status()
        .unwrap_or_else(|e| panic!("cannot run sh to build the demo guest: {e}"));
    assert!(
        status.success(),
        "building the demo guest with guests/build.sh failed ({status}); it needs gcc \
         with GNU as and ld (Debian: apt-get install gcc), see the messages above"
    );
}

/// Whether rustc links this target with LLD (the ordering option is
/// LLD's): its default on x86_64 Linux (glibc) since Rust 1.90, unless
/// the flags pick another linker.
fn links_with_lld() -> bool {
    let target = ["ARCH", "OS", "ENV"].map(|k| env::var(format!("CARGO_CFG_TARGET_{k}")).ok());
    if target
        != [
            Some("x86_64".into()),
            Some("linux".into()),
            Some("gnu".into()),
        ]
    {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") {
        return false;
    }
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    // "rustc 1.95.0 (...)"
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}
