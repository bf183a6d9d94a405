//! Assembles the CPL 0 stub (guests/common plus asm/) with gcc and hands the
//! objects and the shared linker script to the final link, so this guest is
//! laid out like every other test guest (static ELF at 1 MiB, PVH note).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let common = manifest.join("../common");
    let cc = env::var("CC").unwrap_or_else(|_| "gcc".into());
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-changed={}", common.display());
    println!("cargo:rerun-if-changed={}", manifest.join("asm").display());

    let mut sources = assembly_in(&manifest.join("asm"));
    sources.extend(assembly_in(&common));
    for src in &sources {
        let obj = out.join(src.file_stem().unwrap()).with_extension("o");
        let status = Command::new(&cc)
            .args([
                "-c",
                "-ffreestanding",
                "-Wa,--fatal-warnings",
                "-Wa,--noexecstack",
            ])
            .arg("-I")
            .arg(&common)
            .arg("-o")
            .arg(&obj)
            .arg(src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
        assert!(status.success(), "{cc} failed on {}", src.display());
        println!("cargo:rustc-link-arg-bins={}", obj.display());
    }
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-Wl,--build-id=none",
        "-Wl,-z,noexecstack",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,-T,{}",
        common.join("guest.ld").display()
    );
}

/// The `.S` files directly in `dir`, sorted so the link order is stable.
fn assembly_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "S"))
        .collect();
    files.sort();
    files
}
