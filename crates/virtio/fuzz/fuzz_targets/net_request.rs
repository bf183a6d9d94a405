//! virtio-net chain parsing over arbitrary guest memory: every chain the
//! ring offers goes through `TxFrame::parse`, `RxBuffer::parse` and
//! `CtrlRequest::parse`, and whatever they accept is used as the device
//! uses it, with a datagram socket pair standing in for the TAP:
//!
//! - a transmit frame is written to the socket and must arrive as exactly
//!   the bytes of its descriptors, read independently through vm-memory;
//! - the receive buffers accepted (all of them with mergeable buffers,
//!   else the first) are filled by `read_frame` with one frame of the
//!   fuzzer's length, then get `num_buffers` as the device sets it; guest
//!   memory must then differ from before exactly where a model of that
//!   fill says, and nowhere else;
//! - a control request must carry the command its readable bytes spell,
//!   and its status byte must land where its chain says and nowhere else.
//!
//! Every range an accepted chain names must lie inside guest memory, by
//! arithmetic on the region table (not vm-memory's own check). Guest
//! memory the fuzzer's image does not cover holds a pattern that depends
//! on the address, so bytes read from, or written to, the wrong place
//! (inside or outside guest memory) show as a mismatch; parsing and
//! sending must leave guest memory as it was.
//!
//! Header: byte 0 the queue size, byte 1 bit 0 mergeable receive buffers
//! and bit 1 EVENT_IDX,
//! bytes 2..10 the received frame: bits 0..17 its length (modulo
//! MAX_PACKET_LEN + 1), bits 24..32 a seed for its bytes.

#![no_main]

use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;

use libfuzzer_sys::fuzz_target;
use virtio::net::{
    read_frame, CtrlCommand, CtrlRequest, RxBuffer, TxFrame, MAX_PACKET_LEN, MAX_SEGMENTS,
    NET_HDR_LEN,
};
use virtio_bindings::virtio_net::{VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET};
use vm_memory::{Bytes, GuestAddress};

mod common;

/// Readable bytes of a control command the parser keeps.
const MAX_CTRL_LEN: usize = 64;
/// Offset of `num_buffers` in the virtio-net header.
const NUM_BUFFERS_OFFSET: usize = 10;

/// One descriptor as the chain walk yields it.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: usize,
    write: bool,
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = common::Input::parse(data) else {
        return;
    };
    let mem = common::memory(input.image);
    fill_pattern(&mem, input.image.len());
    let (tap, peer) = UnixDatagram::pair().expect("socket pair");
    tap.set_nonblocking(true).expect("nonblocking");
    peer.set_nonblocking(true).expect("nonblocking");
    let mut queue = common::queue(input.queue_size, input.event_idx);
    let mut rx = Vec::new();
    let mut popped = 0u32;
    let mut recv_buf = vec![0u8; MAX_PACKET_LEN + 1];
    // Guest memory as it must be: only control statuses, the receive fill
    // and num_buffers change it.
    let mut model = snapshot(&mem);
    while let Ok(Some(chain)) = virtio::queue::pop(&mut queue, &mem) {
        popped += 1;
        assert!(
            popped <= u32::from(input.queue_size),
            "popped {popped} chains"
        );
        let head = chain.head_index();
        let descs: Vec<Desc> = chain
            .clone()
            .map(|d| Desc {
                addr: d.addr().0,
                len: d.len() as usize,
                write: d.is_write_only(),
            })
            .collect();
        // A walk that ends on a descriptor still linking onwards was cut short.
        let cut_short = chain.clone().last().is_some_and(|d| d.has_next());

        if let Ok(frame) = TxFrame::parse(chain.clone()) {
            assert!(!cut_short, "a cut-short transmit chain was accepted");
            assert!(
                descs.iter().all(|d| !d.write),
                "writable descriptor in a frame"
            );
            let expect = gather(&mem, &descs);
            assert_eq!(frame.packet_len(), expect.len());
            assert!((NET_HDR_LEN + 14..=MAX_PACKET_LEN).contains(&expect.len()));
            let n = frame.write_to(&mem, tap.as_fd()).expect("writing a frame");
            assert_eq!(n, expect.len());
            let got = peer.recv(&mut recv_buf).expect("the frame arrives");
            assert_eq!(
                &recv_buf[..got],
                &expect[..],
                "the frame sent is not the chain's bytes"
            );
        }

        if let Ok(buf) = RxBuffer::parse(chain.clone()) {
            assert!(!cut_short, "a cut-short receive chain was accepted");
            assert_eq!(buf.head, head);
            assert!(
                descs.iter().all(|d| d.write),
                "readable descriptor in a receive buffer"
            );
            let used: Vec<Desc> = descs.iter().copied().filter(|d| d.len > 0).collect();
            for d in &used {
                assert_in_guest(d.addr, d.len);
            }
            let capacity: usize = used.iter().map(|d| d.len).sum();
            assert_eq!(buf.capacity(), capacity);
            assert!(capacity >= NET_HDR_LEN);
            assert_eq!(buf.segment_count(), used.len());
            rx.push((buf, used));
        }

        if let Ok(req) = CtrlRequest::parse(chain.clone()) {
            assert!(!cut_short, "a cut-short control chain was accepted");
            check_ctrl(&mem, &mut model, &descs, &req);
        }
    }
    if rx.is_empty() {
        assert!(
            snapshot(&mem) == model,
            "parsing or sending wrote guest memory"
        );
    } else {
        receive(
            &mem,
            model,
            &tap,
            &peer,
            &rx,
            input.read_only,
            input.capacity,
        );
    }
});

/// Fill guest memory past the image's end with an address-dependent pattern.
fn fill_pattern(mem: &common::Memory, image_len: usize) {
    let mut skip = image_len;
    for &(base, len) in &common::REGIONS {
        let from = skip.min(len);
        skip -= from;
        let bytes: Vec<u8> = (from..len).map(|i| pattern(base + i as u64)).collect();
        mem.write_slice(&bytes, GuestAddress(base + from as u64))
            .expect("pattern");
    }
}

fn pattern(addr: u64) -> u8 {
    (addr.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// Panics unless guest range `[addr, addr + len)` lies inside guest
/// memory (a range may cross from one region into an adjacent one).
fn assert_in_guest(addr: u64, len: usize) {
    let end = addr.checked_add(len as u64).expect("range end overflows");
    // Adjacent regions merged: what a range may span.
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for &(base, l) in &common::REGIONS {
        match spans.last_mut() {
            Some(last) if last.1 == base => last.1 += l as u64,
            _ => spans.push((base, base + l as u64)),
        }
    }
    assert!(
        spans.iter().any(|&(s, e)| addr >= s && end <= e),
        "range {addr:#x}+{len:#x} lies outside guest memory"
    );
}

/// The bytes of `descs`, in order, checked to lie inside guest memory.
fn gather(mem: &common::Memory, descs: &[Desc]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in descs.iter().filter(|d| d.len > 0) {
        assert_in_guest(d.addr, d.len);
        let mut buf = vec![0u8; d.len];
        mem.read_slice(&mut buf, GuestAddress(d.addr))
            .expect("read");
        out.extend_from_slice(&buf);
    }
    out
}

/// All of guest memory, regions one after the other.
fn snapshot(mem: &common::Memory) -> Vec<u8> {
    let mut out = Vec::new();
    for &(base, len) in &common::REGIONS {
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(base))
            .expect("snapshot");
        out.extend_from_slice(&buf);
    }
    out
}

/// Index of guest address `addr` in a [`snapshot`].
fn index(addr: u64) -> usize {
    let mut at = 0;
    for &(base, len) in &common::REGIONS {
        if addr >= base && addr < base + len as u64 {
            return at + (addr - base) as usize;
        }
        at += len;
    }
    panic!("address {addr:#x} outside guest memory");
}

/// Host slices a guest range becomes (split where regions meet), as
/// (guest address, length).
fn slices(addr: u64, len: usize) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let (mut addr, mut left) = (addr, len);
    for &(base, l) in &common::REGIONS {
        let end = base + l as u64;
        if left > 0 && addr >= base && addr < end {
            let n = left.min((end - addr) as usize);
            out.push((addr, n));
            addr += n as u64;
            left -= n;
        }
    }
    assert_eq!(left, 0);
    out
}

/// Write `bytes` from byte `offset` on into the ranges `descs`, in order,
/// in the snapshot `model`; returns the bytes that found room.
fn model_write(model: &mut [u8], descs: &[Desc], mut offset: usize, bytes: &[u8]) -> usize {
    let mut done = 0;
    for d in descs {
        if done == bytes.len() {
            break;
        }
        if offset >= d.len {
            offset -= d.len;
            continue;
        }
        for i in offset..d.len {
            if done == bytes.len() {
                break;
            }
            model[index(d.addr + i as u64)] = bytes[done];
            done += 1;
        }
        offset = 0;
    }
    done
}

/// Receive one frame into the buffers as the device does, and check
/// guest memory against a model of the fill (`model`: guest memory as it
/// is before).
fn receive(
    mem: &common::Memory,
    mut model: Vec<u8>,
    tap: &UnixDatagram,
    peer: &UnixDatagram,
    rx: &[(RxBuffer, Vec<Desc>)],
    mergeable: bool,
    spec: u64,
) {
    let len = (spec & 0x1_ffff) as usize % (MAX_PACKET_LEN + 1);
    let seed = (spec >> 24) as u8;
    let frame: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ ((i / 251) as u8) ^ seed)
        .collect();
    peer.send(&frame).expect("sending a frame");
    let offered = if mergeable { rx.len() } else { 1 };
    let buffers = &rx[..offered];

    // What read_frame should do: one readv over the buffers' host slices,
    // at most MAX_SEGMENTS of them.
    let mut room = Vec::new();
    'outer: for (_, descs) in buffers {
        for d in descs {
            for (addr, n) in slices(d.addr, d.len) {
                if room.len() == MAX_SEGMENTS {
                    break 'outer;
                }
                room.push(Desc {
                    addr,
                    len: n,
                    write: true,
                });
            }
        }
    }
    let expect_n = model_write(&mut model, &room, 0, &frame);

    let n = read_frame(mem, tap.as_fd(), buffers.iter().map(|(b, _)| b)).expect("reading");
    assert_eq!(n, expect_n, "frame of {len} bytes");
    assert!(snapshot(mem) == model, "the fill wrote outside its buffers");

    if n < NET_HDR_LEN {
        return;
    }
    // num_buffers as the device's deliver() counts it.
    let count = if mergeable {
        let mut left = n;
        let mut count = 0u16;
        for (b, _) in buffers {
            if left == 0 {
                break;
            }
            left -= b.capacity().min(left);
            count += 1;
        }
        count
    } else {
        1
    };
    let (first, descs) = &buffers[0];
    assert!(first.set_num_buffers(mem, count));
    assert_eq!(
        model_write(&mut model, descs, NUM_BUFFERS_OFFSET, &count.to_le_bytes()),
        2
    );
    assert!(
        snapshot(mem) == model,
        "num_buffers landed in the wrong place"
    );
}

fn check_ctrl(mem: &common::Memory, model: &mut [u8], descs: &[Desc], req: &CtrlRequest) {
    let first_write = descs
        .iter()
        .position(|d| d.write)
        .expect("a control request without a writable descriptor");
    assert!(
        descs[first_write..].iter().all(|d| d.write),
        "readable descriptor after the status"
    );
    let status = descs[first_write..]
        .iter()
        .find(|d| d.len > 0)
        .expect("a control request without a status byte");
    assert_in_guest(status.addr, 1);
    let mut data = Vec::new();
    for d in &descs[..first_write] {
        let want = (MAX_CTRL_LEN - data.len()).min(d.len);
        if want > 0 {
            assert_in_guest(d.addr, want);
            let mut buf = vec![0u8; want];
            mem.read_slice(&mut buf, GuestAddress(d.addr))
                .expect("read");
            data.extend_from_slice(&buf);
        }
    }
    assert!(data.len() >= 2);
    let set_pairs = u32::from(data[0]) == VIRTIO_NET_CTRL_MQ
        && u32::from(data[1]) == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET
        && data.len() >= 4;
    match req.command {
        CtrlCommand::SetQueuePairs(n) => {
            assert!(set_pairs);
            assert_eq!(n, u16::from_le_bytes([data[2], data[3]]));
        }
        CtrlCommand::Unsupported { class, command } => {
            assert!(!set_pairs);
            assert_eq!((class, command), (data[0], data[1]));
        }
    }
    let value = model[index(status.addr)] ^ 0xff;
    model[index(status.addr)] = value;
    assert!(req.complete(mem, value));
    assert!(
        snapshot(mem) == model,
        "the status byte landed in the wrong place"
    );
}
