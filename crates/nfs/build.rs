//! Links libnfs (Debian: libnfs-dev), found through pkg-config when it is
//! there so a library outside the default path is found too.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let found = Command::new("pkg-config")
        .args(["--libs-only-L", "libnfs"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    if let Some(out) = found {
        for dir in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Some(d) = dir.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={d}");
            }
        }
    }
    println!("cargo:rustc-link-lib=nfs");
}
