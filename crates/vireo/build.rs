//! Builds the demo guest (`guests/demo`) that `vireo demo` embeds, into
//! `$OUT_DIR/demo.elf`, through `guests/build.sh` so it is linked exactly as
//! the test guests are. Needs `sh` and gcc with GNU as and ld (`CC` picks
//! another driver).

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
