//! qcow2 images (QEMU copy-on-write, versions 2 and 3).

/// The first four bytes of every qcow2 image: "QFI\xfb".
pub const MAGIC: u32 = 0x5146_49fb;
