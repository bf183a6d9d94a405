//! Throughput benchmarks (`bench/virtio.py` drives them): the guest's side
//! of "same pattern, virtualized vs. bare host". Timings are TSC cycles;
//! the host converts them with its own measurement of the TSC rate, since
//! the guest's CPUID may not tell it.
//!
//! blk: `bench-seq-mib=N` reads, then writes (and flushes), N MiB in 1 MiB
//! requests from offset 0, keeping `bench-qd` of them (default 1, at most
//! 8) in flight, each in its own 1 MiB buffer (the buffers 2 MiB-aligned
//! in guest memory, so a host that backs it with huge pages sees each in
//! one page); `bench-rand-ops=N` does N random 4 KiB reads, then N writes
//! (and a flush), at 4 KiB-aligned offsets from the LCG that
//! bench/blk_host.c uses, one at a time. bench/blk_host.c runs the same
//! patterns at the same depth on the host.
//!
//! net: `bench-net-frames=N` sends N UDP datagrams of `bench-net-size`
//! bytes (Ethernet frame length, default 1514) to the peer's port 9,
//! keeping the transmit queue full.

use crate::say;
use core::arch::x86_64::_rdtsc;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::Error;

use crate::hal::GuestHal;
use crate::time::wait_until;
use crate::watch::{Doorbells, Watched, REQUEST_TIMEOUT_MS};

const MIB: usize = 1 << 20;
const BLOCK: usize = 4096;
const SECTORS_PER_BLOCK: usize = BLOCK / 512;

/// Most sequential requests in flight (`bench-qd`).
const MAX_QD: usize = 8;

/// One 1 MiB buffer per request in flight.
#[repr(C, align(2097152))]
struct Buffers([[u8; MIB]; MAX_QD]);

static mut BUFFERS: Buffers = Buffers([[0; MIB]; MAX_QD]);

type Blk = VirtIOBlk<GuestHal, Watched>;

fn cycles() -> u64 {
    // SAFETY: rdtsc has no side effects and is allowed at CPL 3.
    unsafe { _rdtsc() }
}

/// The LCG of bench/blk_host.c: the k-th random 4 KiB block.
pub struct Lcg(u64);

impl Lcg {
    pub fn new() -> Self {
        Self(1)
    }

    pub fn next_block(&mut self, blocks: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % blocks
    }
}

/// `mib` sequential 1 MiB reads (or writes) from offset 0 with up to `qd`
/// in flight; a request is sent again as soon as one completes.
fn sequential(
    dev: &mut Blk,
    doorbells: &Doorbells,
    bufs: &mut [[u8; MIB]; MAX_QD],
    write: bool,
    mib: u64,
    qd: usize,
) -> Result<(), &'static str> {
    let qd = qd.clamp(1, MAX_QD);
    let mut reqs: [BlkReq; MAX_QD] = core::array::from_fn(|_| BlkReq::default());
    let mut resps: [BlkResp; MAX_QD] = core::array::from_fn(|_| BlkResp::default());
    let mut tokens: [Option<u16>; MAX_QD] = [None; MAX_QD];
    let failed = if write {
        "sequential write failed"
    } else {
        "sequential read failed"
    };
    let (mut next, mut done) = (0u64, 0u64);
    while done < mib {
        // Fill every free slot (a full ring waits for a completion).
        while next < mib {
            let Some(slot) = tokens[..qd].iter().position(Option::is_none) else {
                break;
            };
            let block = next as usize * (MIB / 512);
            // SAFETY: the slot's request, buffer and response are not
            // touched again until its completion is popped below.
            let sent = unsafe {
                if write {
                    dev.write_blocks_nb(block, &mut reqs[slot], &bufs[slot], &mut resps[slot])
                } else {
                    dev.read_blocks_nb(block, &mut reqs[slot], &mut bufs[slot], &mut resps[slot])
                }
            };
            match sent {
                Ok(token) => tokens[slot] = Some(token),
                Err(Error::QueueFull) if done < next => break,
                Err(_) => return Err(failed),
            }
            next += 1;
        }
        // One doorbell for the round, if the device asked for one.
        doorbells.flush();
        if !wait_until(REQUEST_TIMEOUT_MS, || dev.peek_used().is_some()) {
            return Err("no completion within the request timeout");
        }
        let token = dev.peek_used().ok_or(failed)?;
        let slot = tokens
            .iter()
            .position(|t| *t == Some(token))
            .ok_or("the device completed an unknown request")?;
        tokens[slot] = None;
        // SAFETY: the same request, buffer and response the token was
        // returned for.
        let result = unsafe {
            if write {
                dev.complete_write_blocks(token, &reqs[slot], &bufs[slot], &mut resps[slot])
            } else {
                dev.complete_read_blocks(token, &reqs[slot], &mut bufs[slot], &mut resps[slot])
            }
        };
        result.map_err(|_| failed)?;
        done += 1;
    }
    Ok(())
}

/// Run the disk benchmarks the command line asks for.
pub fn blk(
    dev: &mut Blk,
    doorbells: &Doorbells,
    capacity: u64,
    seq_mib: u64,
    qd: u64,
    rand_ops: u64,
) -> Result<(), &'static str> {
    // SAFETY: the only reference to the buffers; the guest is single-threaded.
    let bufs = unsafe { &mut (*core::ptr::addr_of_mut!(BUFFERS)).0 };
    let qd = usize::try_from(qd).unwrap_or(1).clamp(1, MAX_QD);
    for buf in bufs[..qd].iter_mut() {
        buf.fill(0x5a);
    }
    let bytes = capacity * 512;
    if seq_mib > 0 {
        if seq_mib * MIB as u64 > bytes {
            return Err("bench-seq-mib is larger than the disk");
        }
        // Requests queued in one round share a doorbell (virtio-drivers
        // would ring one per request, each a VM exit).
        doorbells.hold(true);
        let start = cycles();
        let read = sequential(dev, doorbells, bufs, false, seq_mib, qd);
        let read_cycles = cycles() - start;
        let start = cycles();
        let write = read.and_then(|()| sequential(dev, doorbells, bufs, true, seq_mib, qd));
        doorbells.hold(false);
        write?;
        dev.flush().map_err(|_| "flush failed")?;
        let write_cycles = cycles() - start;
        say!(
            "bench: blk seq-read mib={} qd={} cycles={}",
            seq_mib,
            qd,
            read_cycles
        );
        say!(
            "bench: blk seq-write mib={} qd={} cycles={}",
            seq_mib,
            qd,
            write_cycles
        );
    }
    if rand_ops > 0 {
        let blocks = bytes / BLOCK as u64;
        let block = &mut bufs[0][..BLOCK];
        let mut lcg = Lcg::new();
        let start = cycles();
        for _ in 0..rand_ops {
            let b = lcg.next_block(blocks) as usize;
            dev.read_blocks(b * SECTORS_PER_BLOCK, block)
                .map_err(|_| "random read failed")?;
        }
        say!(
            "bench: blk rand-read ops={} cycles={}",
            rand_ops,
            cycles() - start
        );
        let mut lcg = Lcg::new();
        let start = cycles();
        for _ in 0..rand_ops {
            let b = lcg.next_block(blocks) as usize;
            dev.write_blocks(b * SECTORS_PER_BLOCK, block)
                .map_err(|_| "random write failed")?;
        }
        dev.flush().map_err(|_| "flush failed")?;
        say!(
            "bench: blk rand-write ops={} cycles={}",
            rand_ops,
            cycles() - start
        );
    }
    Ok(())
}

/// Print a net result line.
pub fn net_result(frames: u64, bytes: u64, cycles_taken: u64) {
    say!(
        "bench: net tx frames={} bytes={} cycles={}",
        frames,
        bytes,
        cycles_taken
    );
}

/// The TSC now, for the net benchmark's timing.
pub fn now() -> u64 {
    cycles()
}

/// Build an Ethernet + IPv4 + UDP frame of `frame_len` bytes (at least
/// 42 + 1) to port 9 (discard), UDP checksum 0 (none, allowed for IPv4).
pub fn build_udp(
    buf: &mut [u8],
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    frame_len: usize,
) -> usize {
    let len = frame_len.clamp(43, buf.len());
    buf[0..6].copy_from_slice(&dst_mac);
    buf[6..12].copy_from_slice(&src_mac);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let ip = &mut buf[14..34];
    ip.fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src_ip);
    ip[16..20].copy_from_slice(&dst_ip);
    let sum = crate::packet::checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut buf[34..42];
    udp[0..2].copy_from_slice(&9u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    udp[6..8].fill(0);
    for (i, b) in buf[42..len].iter_mut().enumerate() {
        *b = i as u8;
    }
    len
}

/// `bench-mmio=N`: N reads of an MMIO register no device claims (inside the
/// platform page, past the debug console): each is one exit to the VMM and
/// back, so this times the VMM's MMIO round trip.
pub fn mmio(count: u64) {
    const UNCLAIMED: usize = 0xfeb0_2000;
    let start = cycles();
    for _ in 0..count {
        // SAFETY: longmode.S maps the platform page for CPL 3; reads of
        // unclaimed MMIO return all ones and have no side effects.
        unsafe { core::ptr::read_volatile(UNCLAIMED as *const u32) };
    }
    say!("bench: mmio reads={} cycles={}", count, cycles() - start);
}
