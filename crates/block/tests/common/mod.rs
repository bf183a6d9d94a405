//! Helpers shared by the block tests: qemu-img as the oracle, a small
//! deterministic random generator.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use block::DiskImage;

/// Run qemu-img with `args`; panic with its output on failure.
pub fn qemu(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img (install qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run qemu-io commands on a qcow2 image.
pub fn qemu_io(img: &Path, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.arg("-f").arg("qcow2");
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = c.arg(img).output().expect("run qemu-io");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("error") && !stdout.contains("failed"),
        "qemu-io {cmds:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image's contents (or a snapshot's) as qemu-img reads them.
pub fn qemu_raw(img: &Path, snapshot: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    let mut args = vec!["convert".to_string(), "-O".into(), "raw".into()];
    if let Some(s) = snapshot {
        args.push("-l".into());
        args.push(format!("snapshot.name={s}"));
    }
    args.push(img.to_str().unwrap().into());
    args.push(out.to_str().unwrap().into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    qemu(&refs);
    std::fs::read(&out).unwrap()
}

/// `qemu-img check` must find no errors and no leaks.
pub fn check_clean(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", img.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("No errors were found"),
        "qemu-img check {}:\n{text}",
        img.display()
    );
}

/// Read a whole disk.
pub fn read_all(disk: &dyn DiskImage) -> Vec<u8> {
    let mut buf = vec![0u8; usize::try_from(disk.size()).unwrap()];
    for (i, chunk) in buf.chunks_mut(1 << 20).enumerate() {
        disk.read_at((i as u64) << 20, chunk).unwrap();
    }
    buf
}

/// xorshift64*: deterministic, good enough to scatter test I/O.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}
