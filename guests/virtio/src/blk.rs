//! virtio-blk through virtio-drivers' `VirtIOBlk`: report the disk, show a
//! sector the host prepared, write a known pattern, flush, read it back.

use crate::cmdline::{Config, Text};
use crate::hal::GuestHal;
use crate::say;
use crate::watch::Watched;
use alloc::vec;
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};

type Blk = VirtIOBlk<GuestHal, Watched>;

/// The content this guest writes to sector `n` (the host test checks it in
/// the image): bytes 0..8 hold `n` little-endian, byte i (8..512) is
/// (n + i) mod 256.
pub fn pattern(n: u64, sector: &mut [u8]) {
    sector[..8].copy_from_slice(&n.to_le_bytes());
    for (i, byte) in sector.iter_mut().enumerate().skip(8) {
        *byte = n.wrapping_add(i as u64) as u8;
    }
}

fn fnv1a32(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

pub fn run(mut transport: Watched, config: &Config) {
    // Rung at once (and waited for) except while the benchmark keeps
    // several requests in flight.
    let doorbells = transport.defer_doorbells();
    doorbells.hold(false);
    let mut blk = match Blk::new(transport) {
        Ok(blk) => blk,
        Err(e) => return say!("virtio-blk: FAIL init: {}", e),
    };
    let capacity = blk.capacity();
    let readonly = blk.readonly();
    let mut id = [0u8; 20];
    let serial = match blk.device_id(&mut id) {
        Ok(len) if len > 0 => &id[..len],
        _ => b"-".as_slice(),
    };
    say!(
        "virtio-blk: capacity={} ro={} serial={}",
        capacity,
        if readonly { "yes" } else { "no" },
        Text(serial)
    );
    match exercise(&mut blk, config, capacity, readonly) {
        Ok(wrote) if readonly => say!(
            "virtio-blk: ok capacity={} wrote={} readonly",
            capacity,
            wrote
        ),
        Ok(wrote) => say!("virtio-blk: ok capacity={} wrote={}", capacity, wrote),
        Err(reason) => say!("virtio-blk: FAIL {}", reason),
    }
    if !readonly && (config.bench_seq_mib > 0 || config.bench_rand_ops > 0) {
        if let Err(reason) = crate::bench::blk(
            &mut blk,
            &doorbells,
            capacity,
            config.bench_seq_mib,
            config.bench_qd,
            config.bench_rand_ops,
        ) {
            say!("virtio-blk: FAIL bench: {}", reason);
        }
    }
    // Dropping would reset the device through the crate's unbounded wait
    // for the status to clear; the guest powers off soon anyway.
    core::mem::forget(blk);
}

/// The failure reason, printed after `virtio-blk: FAIL `.
struct Reason(alloc::string::String);

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! fail {
    ($($arg:tt)*) => {
        return Err(Reason(alloc::format!($($arg)*)))
    };
}

/// Write what a hostile guest would: sector 0 as the start of a qcow2 v3
/// header (magic, version, 64 KiB clusters). A host that probed this raw
/// disk's format must refuse it (QEMU does); the line says what happened,
/// and the sector read back says whether the write landed anyway.
fn header_write(blk: &mut Blk, sector: &mut [u8; SECTOR_SIZE]) -> Result<(), Reason> {
    sector.fill(0);
    sector[..4].copy_from_slice(b"QFI\xfb");
    sector[4..8].copy_from_slice(&3u32.to_be_bytes());
    sector[20..24].copy_from_slice(&16u32.to_be_bytes());
    let refused = blk.write_blocks(0, &sector[..]).is_err();
    let mut back = [0u8; SECTOR_SIZE];
    if let Err(e) = blk.read_blocks(0, &mut back) {
        fail!("read back sector 0: {}", e);
    }
    let landed = back[..4] == *b"QFI\xfb";
    say!(
        "virtio-blk: header write {} sector0={}",
        if refused { "refused" } else { "accepted" },
        if landed { "header" } else { "other" }
    );
    Ok(())
}

fn exercise(blk: &mut Blk, config: &Config, capacity: u64, readonly: bool) -> Result<u64, Reason> {
    let mut sector = [0u8; SECTOR_SIZE];
    if config.blk_read < capacity {
        if let Err(e) = blk.read_blocks(config.blk_read as usize, &mut sector) {
            fail!("read sector {}: {}", config.blk_read, e);
        }
        let mut head = [0u8; 32];
        for (i, b) in sector[..16].iter().enumerate() {
            head[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
            head[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
        }
        say!(
            "virtio-blk: sector {} head={} fnv1a32={:08x}",
            config.blk_read,
            Text(&head),
            fnv1a32(&sector)
        );
    }

    if config.blk_header && !readonly {
        header_write(blk, &mut sector)?;
    }

    let count = config.blk_count;
    let sectors = (0..count).map(|k| config.blk_first + k * config.blk_stride);
    if count == 0 {
        return Ok(0);
    }
    let last = config.blk_first + (count - 1) * config.blk_stride;
    if last >= capacity {
        fail!(
            "sectors {}..={} beyond capacity {}",
            config.blk_first,
            last,
            capacity
        );
    }

    if readonly {
        pattern(config.blk_first, &mut sector);
        if blk.write_blocks(config.blk_first as usize, &sector).is_ok() {
            fail!(
                "read-only device accepted a write to sector {}",
                config.blk_first
            );
        }
        return Ok(0);
    }

    for n in sectors.clone() {
        pattern(n, &mut sector);
        if let Err(e) = blk.write_blocks(n as usize, &sector) {
            fail!("write sector {}: {}", n, e);
        }
    }
    if let Err(e) = blk.flush() {
        fail!("flush: {}", e);
    }
    let mut expected = [0u8; SECTOR_SIZE];
    for n in sectors {
        sector.fill(0);
        if let Err(e) = blk.read_blocks(n as usize, &mut sector) {
            fail!("read back sector {}: {}", n, e);
        }
        pattern(n, &mut expected);
        if let Some(i) = (0..SECTOR_SIZE).find(|&i| sector[i] != expected[i]) {
            fail!(
                "sector {} byte {} is {:#04x}, wrote {:#04x}",
                n,
                i,
                sector[i],
                expected[i]
            );
        }
    }
    // One multi-sector request as well, when the sectors are contiguous.
    if config.blk_stride == 1 && count > 1 {
        let mut all = vec![0u8; count as usize * SECTOR_SIZE];
        if let Err(e) = blk.read_blocks(config.blk_first as usize, &mut all) {
            fail!("read {} sectors from {}: {}", count, config.blk_first, e);
        }
        for (k, got) in all.chunks(SECTOR_SIZE).enumerate() {
            let n = config.blk_first + k as u64;
            pattern(n, &mut expected);
            if got != expected {
                fail!("multi-sector read: sector {} differs", n);
            }
        }
    }
    Ok(count)
}
