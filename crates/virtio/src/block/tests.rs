//! virtio-blk request parsing against hostile and well-formed chains, and
//! the device's worker serving a real raw image.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::request::{parse, Request, RequestError, RequestKind, MAX_TRANSFER};
use crate::device::GuestMemory;

/// Guest memory: two adjacent 64 KiB regions, so buffers can cross from
/// one into the other, ending at `MEM_END`.
const REGION: u64 = 0x1_0000;
const MEM_END: u64 = 2 * REGION;
/// Disk capacity used unless a test says otherwise: 1 MiB.
const CAPACITY: u64 = 1 << 20;
/// Where tests put headers, data and status bytes (past the rings).
const HDR: u64 = 0x1000;
const DATA: u64 = 0x2000;
const STATUS: u64 = 0x8000;
const QUEUE_SIZE: u16 = 16;

const R: u16 = 0;
// The flag values are small constants; u16 is their width in a descriptor.
#[allow(clippy::cast_possible_truncation)]
const W: u16 = VRING_DESC_F_WRITE as u16;
#[allow(clippy::cast_possible_truncation)]
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
#[allow(clippy::cast_possible_truncation)]
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

type Parsed = Result<Request, (RequestError, Option<GuestAddress>)>;

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[
        (GuestAddress(0), usize::try_from(REGION).unwrap()),
        (GuestAddress(REGION), usize::try_from(REGION).unwrap()),
    ])
    .unwrap()
}

fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

/// A descriptor with an explicit next index (for hand-made loops).
fn linked(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

fn header(mem: &GuestMemory, at: u64, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(at)).unwrap();
}

fn segment(mem: &GuestMemory, at: u64, sector: u64, sectors: u32, flags: u32) {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&s, GuestAddress(at)).unwrap();
}

/// Parse `descs` as one chain (the mock links them in order).
fn parse_with(mem: &GuestMemory, descs: &[RawDescriptor], capacity: u64, ro: bool) -> Parsed {
    let q = MockSplitQueue::new(mem, QUEUE_SIZE);
    let chain = q.build_desc_chain(descs).unwrap();
    parse(chain, capacity, ro)
}

fn parse_chain(mem: &GuestMemory, descs: &[RawDescriptor]) -> Parsed {
    parse_with(mem, descs, CAPACITY, false)
}

/// Parse descriptors stored exactly as given (their own next fields and
/// flags), with the chain starting at descriptor 0.
fn parse_raw(mem: &GuestMemory, descs: &[RawDescriptor]) -> Parsed {
    let q = MockSplitQueue::new(mem, QUEUE_SIZE);
    let chain = q.build_multiple_desc_chains(descs).unwrap();
    parse(chain, CAPACITY, false)
}

fn err(result: Parsed) -> (RequestError, Option<GuestAddress>) {
    match result {
        Ok(r) => panic!("expected an error, parsed {r:?}"),
        Err(e) => e,
    }
}

/// The error, asserting the status byte was found at `STATUS`.
fn err_at_status(result: Parsed) -> RequestError {
    let (e, status) = err(result);
    assert_eq!(status, Some(GuestAddress(STATUS)), "status for {e:?}");
    e
}

fn host(mem: &GuestMemory, addr: u64) -> usize {
    mem.get_host_address(GuestAddress(addr)).unwrap() as usize
}

fn status() -> RawDescriptor {
    desc(STATUS, 1, W)
}

// ---- well-formed requests -------------------------------------------------

#[test]
fn read_resolves_buffers_and_counts_status() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 3);
    let r = parse_chain(
        &mem,
        &[
            desc(HDR, 16, R),
            desc(DATA, 512, W),
            desc(DATA + 0x1000, 1024, W),
            status(),
        ],
    )
    .unwrap();
    assert_eq!(r.status_addr, GuestAddress(STATUS));
    assert_eq!(r.used_len, 512 + 1024 + 1);
    let RequestKind::Read { offset, bufs } = r.kind else {
        panic!("not a read: {:?}", r.kind);
    };
    assert_eq!(offset, 3 * 512);
    let got: Vec<(usize, usize)> = bufs
        .iter()
        .map(|b| (b.as_mut_ptr() as usize, b.len()))
        .collect();
    assert_eq!(
        got,
        vec![(host(&mem, DATA), 512), (host(&mem, DATA + 0x1000), 1024)]
    );
}

#[test]
fn write_resolves_buffers() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    let r = parse_chain(&mem, &[desc(HDR, 16, R), desc(DATA, 4096, R), status()]).unwrap();
    assert_eq!(r.used_len, 1);
    let RequestKind::Write { offset, bufs } = r.kind else {
        panic!("not a write: {:?}", r.kind);
    };
    assert_eq!(offset, 0);
    assert_eq!(bufs.len(), 1);
    assert_eq!(
        (bufs[0].as_ptr() as usize, bufs[0].len()),
        (host(&mem, DATA), 4096)
    );
}

#[test]
fn header_data_and_status_may_share_descriptors() {
    let mem = memory();
    // Header and data in one readable buffer; status at the end of the
    // last (writable) data buffer... for a write, the data is readable,
    // so share header+data, then a separate status.
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 1);
    let r = parse_chain(&mem, &[desc(HDR, 16 + 512, R), status()]).unwrap();
    let RequestKind::Write { offset, bufs } = r.kind else {
        panic!("not a write");
    };
    assert_eq!(offset, 512);
    assert_eq!(
        (bufs[0].as_ptr() as usize, bufs[0].len()),
        (host(&mem, HDR + 16), 512)
    );
    // For a read, data and status share the last writable buffer.
    header(&mem, HDR, VIRTIO_BLK_T_IN, 1);
    let r = parse_chain(&mem, &[desc(HDR, 16, R), desc(STATUS - 512, 513, W)]).unwrap();
    assert_eq!(r.status_addr, GuestAddress(STATUS));
    assert_eq!(r.used_len, 513);
    let RequestKind::Read { bufs, .. } = r.kind else {
        panic!("not a read");
    };
    assert_eq!(
        (bufs[0].as_mut_ptr() as usize, bufs[0].len()),
        (host(&mem, STATUS - 512), 512)
    );
}

#[test]
fn header_split_across_descriptors_is_reassembled() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 7);
    // Move the second half of the header elsewhere.
    let mut tail = [0u8; 8];
    mem.read_slice(&mut tail, GuestAddress(HDR + 8)).unwrap();
    mem.write_slice(&tail, GuestAddress(HDR + 0x100)).unwrap();
    mem.write_slice(&[0xee; 8], GuestAddress(HDR + 8)).unwrap();
    let r = parse_chain(
        &mem,
        &[
            desc(HDR, 8, R),
            desc(HDR + 0x100, 8, R),
            desc(DATA, 512, W),
            status(),
        ],
    )
    .unwrap();
    assert!(matches!(r.kind, RequestKind::Read { offset: 3584, .. }));
}

#[test]
fn data_spanning_two_memory_regions_is_split() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    let start = REGION - 0x100;
    let r = parse_chain(&mem, &[desc(HDR, 16, R), desc(start, 0x200, W), status()]).unwrap();
    let RequestKind::Read { bufs, .. } = r.kind else {
        panic!("not a read");
    };
    let got: Vec<(usize, usize)> = bufs
        .iter()
        .map(|b| (b.as_mut_ptr() as usize, b.len()))
        .collect();
    assert_eq!(
        got,
        vec![(host(&mem, start), 0x100), (host(&mem, REGION), 0x100)]
    );
}

#[test]
fn flush_get_id_discard_write_zeroes() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    let r = parse_chain(&mem, &[desc(HDR, 16, R), status()]).unwrap();
    assert!(matches!(r.kind, RequestKind::Flush));
    assert_eq!(r.used_len, 1);

    header(&mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    let r = parse_chain(&mem, &[desc(HDR, 16, R), desc(DATA, 64, W), status()]).unwrap();
    assert!(matches!(
        r.kind,
        RequestKind::GetId {
            addr: GuestAddress(DATA),
            len: 20
        }
    ));
    assert_eq!(r.used_len, 21);
    let r = parse_chain(&mem, &[desc(HDR, 16, R), desc(DATA, 8, W), status()]).unwrap();
    assert!(matches!(r.kind, RequestKind::GetId { len: 8, .. }));
    assert_eq!(r.used_len, 9);

    header(&mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    segment(&mem, DATA, 8, 16, 0);
    let r = parse_chain(&mem, &[desc(HDR, 16, R), desc(DATA, 16, R), status()]).unwrap();
    assert!(matches!(
        r.kind,
        RequestKind::Discard {
            offset: 4096,
            len: 8192
        }
    ));
    assert_eq!(r.used_len, 1);

    header(&mem, HDR, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    segment(&mem, DATA, 2, 1, 1);
    let r = parse_chain(&mem, &[desc(HDR, 16, R), desc(DATA, 16, R), status()]).unwrap();
    assert!(matches!(
        r.kind,
        RequestKind::WriteZeroes {
            offset: 1024,
            len: 512,
            unmap: true
        }
    ));
    // The segment may itself be split across descriptors.
    segment(&mem, DATA, 2, 1, 0);
    let r = parse_chain(
        &mem,
        &[
            desc(HDR, 16, R),
            desc(DATA, 10, R),
            desc(DATA + 10, 6, R),
            status(),
        ],
    )
    .unwrap();
    assert!(matches!(
        r.kind,
        RequestKind::WriteZeroes {
            offset: 1024,
            len: 512,
            unmap: false
        }
    ));
}

#[test]
fn reads_and_flushes_work_on_a_read_only_disk() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    let r = parse_with(
        &mem,
        &[desc(HDR, 16, R), desc(DATA, 512, W), status()],
        CAPACITY,
        true,
    );
    assert!(matches!(r.unwrap().kind, RequestKind::Read { .. }));
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    let r = parse_with(&mem, &[desc(HDR, 16, R), status()], CAPACITY, true);
    assert!(matches!(r.unwrap().kind, RequestKind::Flush));
}

#[test]
fn a_valid_indirect_table_is_followed() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 1);
    let table = 0x9000;
    let entries = [
        linked(HDR, 16, R | NEXT, 1),
        linked(DATA, 512, W | NEXT, 2),
        linked(STATUS, 1, W, 0),
    ];
    for (i, d) in entries.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
    let r = parse_raw(&mem, &[desc(table, 48, INDIRECT)]).unwrap();
    assert_eq!(r.status_addr, GuestAddress(STATUS));
    assert_eq!(r.used_len, 513);
    assert!(matches!(r.kind, RequestKind::Read { offset: 512, .. }));
}

// ---- the status byte ------------------------------------------------------

#[test]
fn status_missing_readable_empty_or_outside_memory() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    let cases = [
        vec![desc(HDR, 16, R)],
        vec![desc(HDR, 16, R), desc(STATUS, 1, R)],
        vec![desc(HDR, 16, R), desc(STATUS, 0, W)],
        vec![desc(HDR, 16, R), desc(MEM_END, 1, W)],
        vec![desc(HDR, 16, R), desc(u64::MAX, 1, W)],
        // The last byte would lie one past the end of memory.
        vec![desc(HDR, 16, R), desc(MEM_END - 1, 2, W)],
        // addr + len - 1 overflows.
        vec![desc(HDR, 16, R), desc(u64::MAX - 1, 4, W)],
    ];
    for descs in cases {
        assert_eq!(
            err(parse_chain(&mem, &descs)),
            (RequestError::NoStatus, None)
        );
    }
}

#[test]
fn status_at_the_last_byte_of_memory_is_accepted() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    let r = parse_chain(&mem, &[desc(HDR, 16, R), desc(MEM_END - 1, 1, W)]).unwrap();
    assert_eq!(r.status_addr, GuestAddress(MEM_END - 1));
}

// ---- the header -----------------------------------------------------------

#[test]
fn header_writable_short_or_outside_memory() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    let cases = [
        (
            vec![desc(HDR, 16, W), desc(DATA, 512, W), status()],
            RequestError::ShortHeader,
        ),
        (
            vec![desc(HDR, 8, R), desc(DATA, 512, W), status()],
            RequestError::ShortHeader,
        ),
        (vec![desc(HDR, 15, R), status()], RequestError::ShortHeader),
        // Only the status byte: no header at all.
        (vec![status()], RequestError::ShortHeader),
        // The header is in the status descriptor's leading bytes, which
        // are device-writable.
        (vec![desc(STATUS - 16, 17, W)], RequestError::ShortHeader),
        (
            vec![desc(MEM_END, 16, R), status()],
            RequestError::BadBuffer,
        ),
        (
            vec![desc(MEM_END - 8, 16, R), status()],
            RequestError::BadBuffer,
        ),
        (
            vec![desc(u64::MAX - 7, 16, R), status()],
            RequestError::BadBuffer,
        ),
    ];
    for (descs, want) in cases {
        assert_eq!(err_at_status(parse_chain(&mem, &descs)), want, "{descs:?}");
    }
}

#[test]
fn unknown_request_types_are_unsupported() {
    let mem = memory();
    for kind in [2, 3, 5, 10, 12, 0x1234, u32::MAX] {
        header(&mem, HDR, kind, 0);
        let e = err_at_status(parse_chain(&mem, &[desc(HDR, 16, R), status()]));
        assert_eq!(e, RequestError::Unsupported(kind));
    }
}

// ---- data buffers ---------------------------------------------------------

#[test]
fn data_outside_or_straddling_the_end_of_memory() {
    let mem = memory();
    for (kind, dir) in [(VIRTIO_BLK_T_IN, W), (VIRTIO_BLK_T_OUT, R)] {
        header(&mem, HDR, kind, 0);
        for addr in [MEM_END, MEM_END - 0x100, 0x4000_0000, u64::MAX - 511] {
            let descs = [desc(HDR, 16, R), desc(addr, 512, dir), status()];
            assert_eq!(
                err_at_status(parse_chain(&mem, &descs)),
                RequestError::BadBuffer,
                "type {kind} at {addr:#x}"
            );
        }
    }
}

#[test]
fn wrong_direction() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    let descs = [desc(HDR, 16, R), desc(DATA, 512, R), status()];
    assert_eq!(
        err_at_status(parse_chain(&mem, &descs)),
        RequestError::WrongDirection
    );
    // One good buffer, one bad.
    let descs = [
        desc(HDR, 16, R),
        desc(DATA, 512, W),
        desc(DATA, 512, R),
        status(),
    ];
    assert_eq!(
        err_at_status(parse_chain(&mem, &descs)),
        RequestError::WrongDirection
    );
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    let descs = [desc(HDR, 16, R), desc(DATA, 512, W), status()];
    assert_eq!(
        err_at_status(parse_chain(&mem, &descs)),
        RequestError::WrongDirection
    );
    header(&mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    let descs = [desc(HDR, 16, R), desc(DATA, 20, R), status()];
    assert_eq!(
        err_at_status(parse_chain(&mem, &descs)),
        RequestError::WrongDirection
    );
    let descs = [desc(HDR, 16, R), status()];
    assert_eq!(
        err_at_status(parse_chain(&mem, &descs)),
        RequestError::WrongDirection
    );
    header(&mem, HDR, VIRTIO_BLK_T_DISCARD, 0);
    segment(&mem, DATA, 0, 1, 0);
    let descs = [desc(HDR, 16, R), desc(DATA, 16, W), status()];
    assert_eq!(
        err_at_status(parse_chain(&mem, &descs)),
        RequestError::WrongDirection
    );
}

#[test]
fn sector_offsets_that_overflow_or_pass_the_end() {
    let mem = memory();
    let last = CAPACITY / 512 - 1;
    for (kind, dir) in [(VIRTIO_BLK_T_IN, W), (VIRTIO_BLK_T_OUT, R)] {
        // sector * 512 overflows u64; offset + len overflows u64; the range
        // ends past capacity; it starts past capacity.
        for sector in [u64::MAX, u64::MAX / 512 + 1, u64::MAX / 512, last, last + 1] {
            header(&mem, HDR, kind, sector);
            let descs = [desc(HDR, 16, R), desc(DATA, 1024, dir), status()];
            assert_eq!(
                err_at_status(parse_chain(&mem, &descs)),
                RequestError::OutOfRange,
                "type {kind} sector {sector:#x}"
            );
        }
        // The last sector alone fits.
        header(&mem, HDR, kind, last);
        let descs = [desc(HDR, 16, R), desc(DATA, 512, dir), status()];
        assert!(parse_chain(&mem, &descs).is_ok());
    }
}

#[test]
fn lengths_that_are_not_whole_sectors() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_IN, 0);
    for len in [1, 511, 513, 1000] {
        let descs = [desc(HDR, 16, R), desc(DATA, len, W), status()];
        assert_eq!(
            err_at_status(parse_chain(&mem, &descs)),
            RequestError::BadLength("not a whole number of sectors")
        );
    }
    // Two halves of a sector are fine: only the total counts.
    let descs = [
        desc(HDR, 16, R),
        desc(DATA, 256, W),
        desc(DATA + 0x400, 256, W),
        status(),
    ];
    assert!(parse_chain(&mem, &descs).is_ok());
}

#[test]
fn transfers_over_the_limit() {
    let mem = memory();
    let big = u32::try_from(MAX_TRANSFER / 2).unwrap();
    header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
    // Refused before any buffer is resolved: these point nowhere.
    let descs = [
        desc(HDR, 16, R),
        desc(0x1_0000_0000, big, R),
        desc(0x2_0000_0000, big, R),
        desc(0x3_0000_0000, 512, R),
        status(),
    ];
    assert_eq!(
        err_at_status(parse_with(&mem, &descs, 1 << 40, false)),
        RequestError::BadLength("transfer too large")
    );
    // Buffers summing to more than 4 GiB end the chain early (the
    // iterator refuses them), so the request is cut short, not accepted.
    let descs = [
        desc(HDR, 16, R),
        desc(0x1_0000_0000, u32::MAX, R),
        desc(0x2_0000_0000, u32::MAX, R),
        status(),
    ];
    assert_eq!(
        err(parse_with(&mem, &descs, 1 << 40, false)),
        (RequestError::BrokenChain, None)
    );
}

// ---- discard and write-zeroes --------------------------------------------

#[test]
fn discard_segments_of_the_wrong_size_or_out_of_range() {
    let mem = memory();
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        header(&mem, HDR, kind, 0);
        segment(&mem, DATA, 0, 1, 0);
        segment(&mem, DATA + 16, 0, 1, 0);
        for len in [0, 8, 15, 17, 32] {
            let descs: Vec<RawDescriptor> = if len == 0 {
                vec![desc(HDR, 16, R), status()]
            } else {
                vec![desc(HDR, 16, R), desc(DATA, len, R), status()]
            };
            assert_eq!(
                err_at_status(parse_chain(&mem, &descs)),
                RequestError::BadLength("expected exactly one 16-byte segment"),
                "type {kind} len {len}"
            );
        }
        let descs = [desc(HDR, 16, R), desc(DATA, 16, R), status()];
        for (sector, sectors) in [
            (CAPACITY / 512, 1),
            (CAPACITY / 512 - 1, 2),
            (0, u32::MAX),
            (u64::MAX, 1),
            (u64::MAX / 512, 0),
        ] {
            segment(&mem, DATA, sector, sectors, 0);
            assert_eq!(
                err_at_status(parse_chain(&mem, &descs)),
                RequestError::OutOfRange,
                "type {kind} sector {sector:#x} x {sectors}"
            );
        }
        // The segment itself outside memory.
        let descs = [desc(HDR, 16, R), desc(MEM_END - 8, 16, R), status()];
        assert_eq!(
            err_at_status(parse_chain(&mem, &descs)),
            RequestError::BadBuffer
        );
    }
}

#[test]
fn writes_and_discards_on_a_read_only_disk() {
    let mem = memory();
    segment(&mem, DATA, 0, 1, 0);
    for (kind, dir) in [
        (VIRTIO_BLK_T_OUT, R),
        (VIRTIO_BLK_T_DISCARD, R),
        (VIRTIO_BLK_T_WRITE_ZEROES, R),
    ] {
        header(&mem, HDR, kind, 0);
        let len = if kind == VIRTIO_BLK_T_OUT { 512 } else { 16 };
        let descs = [desc(HDR, 16, R), desc(DATA, len, dir), status()];
        assert_eq!(
            err_at_status(parse_with(&mem, &descs, CAPACITY, true)),
            RequestError::ReadOnly,
            "type {kind}"
        );
    }
}

// ---- broken chains --------------------------------------------------------

#[test]
fn a_chain_that_loops_is_refused() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    // 0 -> 1 -> 0 -> ...: cut at the queue size, and refused rather than
    // served as whatever the first 16 descriptors happen to look like.
    let descs = [linked(HDR, 16, R | NEXT, 1), linked(STATUS, 1, W | NEXT, 0)];
    assert_eq!(
        err(parse_raw(&mem, &descs)),
        (RequestError::BrokenChain, None)
    );
    // A descriptor pointing at itself.
    let descs = [linked(HDR, 16, R | NEXT, 1), linked(STATUS, 1, W | NEXT, 1)];
    assert_eq!(
        err(parse_raw(&mem, &descs)),
        (RequestError::BrokenChain, None)
    );
}

#[test]
fn a_chain_longer_than_the_queue_is_refused() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_GET_ID, 0);
    // Every descriptor of the table in one chain, the last linking back
    // to the first: longer than the queue.
    let mut descs = vec![linked(HDR, 16, R | NEXT, 1)];
    for i in 1..QUEUE_SIZE {
        descs.push(linked(DATA, 1, W | NEXT, (i + 1) % QUEUE_SIZE));
    }
    assert_eq!(
        err(parse_raw(&mem, &descs)),
        (RequestError::BrokenChain, None)
    );
    // Exactly the queue size, ending properly, is fine.
    let last = descs.len() - 1;
    descs[last] = linked(STATUS, 1, W, 0);
    let r = parse_raw(&mem, &descs).unwrap();
    assert!(matches!(r.kind, RequestKind::GetId { len: 1, .. }));
}

#[test]
fn a_next_index_beyond_the_queue_is_refused() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    let descs = [linked(HDR, 16, R | NEXT, 200), linked(STATUS, 1, W, 0)];
    assert_eq!(
        err(parse_raw(&mem, &descs)),
        (RequestError::BrokenChain, None)
    );
}

#[test]
fn invalid_indirect_tables() {
    let mem = memory();
    header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
    let table = 0x9000;
    let write_table = |entries: &[RawDescriptor]| {
        for (i, d) in entries.iter().enumerate() {
            mem.write_obj(*d, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
    };
    write_table(&[linked(HDR, 16, R | NEXT, 1), linked(STATUS, 1, W, 0)]);
    // The table's length is not a whole number of descriptors.
    assert_eq!(
        err(parse_raw(&mem, &[desc(table, 20, INDIRECT)])),
        (RequestError::NoStatus, None)
    );
    // Empty table.
    assert_eq!(
        err(parse_raw(&mem, &[desc(table, 0, INDIRECT)])),
        (RequestError::NoStatus, None)
    );
    // The table lies outside guest memory.
    let far = desc(MEM_END, 32, INDIRECT);
    assert_eq!(err(parse_raw(&mem, &[far])), (RequestError::NoStatus, None));
    // The table runs off the end of memory after its first entry.
    mem.write_obj(linked(HDR, 16, R | NEXT, 1), GuestAddress(MEM_END - 16))
        .unwrap();
    let off_end = desc(MEM_END - 16, 32, INDIRECT);
    assert_eq!(
        err(parse_raw(&mem, &[off_end])),
        (RequestError::BrokenChain, None)
    );
    // A table whose chain loops.
    write_table(&[linked(HDR, 16, R | NEXT, 1), linked(STATUS, 1, W | NEXT, 0)]);
    assert_eq!(
        err(parse_raw(&mem, &[desc(table, 32, INDIRECT)])),
        (RequestError::BrokenChain, None)
    );
    // A table whose next index leaves the table.
    write_table(&[linked(HDR, 16, R | NEXT, 5), linked(STATUS, 1, W, 0)]);
    assert_eq!(
        err(parse_raw(&mem, &[desc(table, 32, INDIRECT)])),
        (RequestError::BrokenChain, None)
    );
    // An indirect descriptor inside an indirect table.
    write_table(&[linked(HDR, 16, R | NEXT, 1), linked(table, 32, INDIRECT, 0)]);
    assert_eq!(
        err(parse_raw(&mem, &[desc(table, 32, INDIRECT)])),
        (RequestError::BrokenChain, None)
    );
}

// ---- the device's worker over a real image ---------------------------------

mod handler {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use virtio_bindings::virtio_blk::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP};
    use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
    use virtio_queue::Queue;
    use vmm_sys_util::eventfd::EventFd;

    use super::*;
    use crate::block::{Block, BlockConfig, ErrorAction, ErrorPolicy, StopNotifier};
    use crate::device::{ActivateContext, ActiveQueue, VirtioDevice, VirtioInterrupt};

    /// Records what the device asks of the transport.
    #[derive(Default)]
    struct RecordingInterrupt {
        queues: Mutex<Vec<u16>>,
        config: AtomicBool,
        needs_reset: AtomicBool,
    }

    impl VirtioInterrupt for RecordingInterrupt {
        fn notify_queue(&self, queue: u16) {
            self.queues.lock().unwrap().push(queue);
        }
        fn notify_config(&self) {
            self.config.store(true, Ordering::SeqCst);
        }
        fn set_needs_reset(&self) {
            self.needs_reset.store(true, Ordering::SeqCst);
        }
    }

    /// A raw image in the temporary directory, removed on drop.
    struct TempImage(std::path::PathBuf);

    impl TempImage {
        fn new(name: &str, size: u64) -> Self {
            let path = std::env::temp_dir().join(format!(
                "vireo-virtio-blk-{}-{name}.raw",
                std::process::id()
            ));
            let f = std::fs::File::create(&path).unwrap();
            f.set_len(size).unwrap();
            Self(path)
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A device activated on one queue laid out by `ring`.
    struct Running {
        device: Block,
        interrupt: Arc<RecordingInterrupt>,
        kick: EventFd,
        _image: TempImage,
    }

    impl Running {
        fn start(name: &str, mem: &GuestMemory, queue: Queue) -> Self {
            let image = TempImage::new(name, CAPACITY);
            let disk = block::open(&image.0, &block::OpenOptions::default()).unwrap();
            Self::start_on(image, disk, mem, queue, ErrorPolicy::default(), None)
        }

        fn start_on(
            image: TempImage,
            disk: Arc<dyn block::DiskImage>,
            mem: &GuestMemory,
            queue: Queue,
            error_policy: ErrorPolicy,
            on_stop: Option<StopNotifier>,
        ) -> Self {
            let mut device = Block::new(BlockConfig {
                disk,
                serial: "vireo-test".into(),
                queues: 1,
                io_workers: 1,
                error_policy,
                on_stop,
            });
            let interrupt = Arc::new(RecordingInterrupt::default());
            let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            let ctx = ActivateContext {
                mem: mem.clone(),
                interrupt: interrupt.clone(),
                queues: vec![ActiveQueue {
                    index: 0,
                    queue,
                    kick: kick.try_clone().unwrap(),
                }],
                features: 1 << VIRTIO_F_VERSION_1,
            };
            device.activate(ctx).unwrap();
            Self {
                device,
                interrupt,
                kick,
                _image: image,
            }
        }

        fn kick(&self) {
            self.kick.write(1).unwrap();
        }

        fn counter(&self, name: &str) -> u64 {
            let all = self.device.counters();
            all.iter().find(|(n, _)| *n == name).unwrap().1
        }

        fn needs_reset(&self) -> bool {
            self.interrupt.needs_reset.load(Ordering::SeqCst)
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.device.reset();
        }
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Descriptors `first..` linked in order as one chain.
    fn chain_at(first: u16, descs: &[(u64, u32, u16)]) -> Vec<RawDescriptor> {
        let n = descs.len();
        descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let next = first + u16::try_from(i + 1).unwrap();
                let flags = if i + 1 < n { flags | NEXT } else { flags };
                linked(addr, len, flags, next)
            })
            .collect()
    }

    fn status_byte(mem: &GuestMemory, addr: u64) -> u32 {
        u32::from(mem.read_obj::<u8>(GuestAddress(addr)).unwrap())
    }

    /// Used ring entries as (head, length), sorted by head.
    fn used(ring: &MockSplitQueue<'_, GuestMemory>) -> Vec<(u32, u32)> {
        let n = ring.used().idx().load();
        let mut v: Vec<(u32, u32)> = (0..usize::from(n))
            .map(|i| {
                let e = ring.used().ring().ref_at(i).unwrap().load();
                (e.id(), e.len())
            })
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn writes_land_in_the_file_and_bad_requests_get_a_status() {
        let mem = memory();
        let ring = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let pattern: Vec<u8> = (0..1024u32).map(|i| (i % 251) as u8).collect();
        mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
        header(&mem, HDR, VIRTIO_BLK_T_OUT, 4);
        header(&mem, HDR + 0x20, 0x99, 0);
        header(&mem, HDR + 0x40, VIRTIO_BLK_T_IN, CAPACITY / 512);
        mem.write_slice(&[0xff; 4], GuestAddress(STATUS)).unwrap();
        let mut descs = chain_at(0, &[(HDR, 16, R), (DATA, 1024, R), (STATUS, 1, W)]);
        descs.extend(chain_at(3, &[(HDR + 0x20, 16, R), (STATUS + 1, 1, W)]));
        descs.extend(chain_at(
            5,
            &[
                (HDR + 0x40, 16, R),
                (DATA + 0x1000, 512, W),
                (STATUS + 2, 1, W),
            ],
        ));
        ring.add_desc_chains(&descs, 0).unwrap();
        let dev = Running::start("write", &mem, ring.create_queue().unwrap());
        dev.kick();
        wait_for("three used entries", || ring.used().idx().load() == 3);
        assert_eq!(used(&ring), vec![(0, 1), (3, 1), (5, 1)]);
        assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK);
        assert_eq!(status_byte(&mem, STATUS + 1), VIRTIO_BLK_S_UNSUPP);
        assert_eq!(status_byte(&mem, STATUS + 2), VIRTIO_BLK_S_IOERR);
        let file = std::fs::read(&dev._image.0).unwrap();
        assert_eq!(&file[2048..3072], &pattern[..]);
        assert!(file[..2048].iter().chain(&file[3072..]).all(|&b| b == 0));
        assert_eq!(dev.counter("write_requests"), 1);
        assert_eq!(dev.counter("write_bytes"), 1024);
        assert_eq!(dev.counter("errors"), 2);

        // Read it back through the device: used length is data + status.
        header(&mem, HDR + 0x60, VIRTIO_BLK_T_IN, 4);
        let read = chain_at(
            8,
            &[
                (HDR + 0x60, 16, R),
                (DATA + 0x2000, 1024, W),
                (STATUS + 3, 1, W),
            ],
        );
        ring.add_desc_chains(&read, 8).unwrap();
        dev.kick();
        wait_for("the read", || ring.used().idx().load() == 4);
        assert_eq!(used(&ring)[3], (8, 1025));
        assert_eq!(status_byte(&mem, STATUS + 3), VIRTIO_BLK_S_OK);
        let mut back = vec![0u8; 1024];
        mem.read_slice(&mut back, GuestAddress(DATA + 0x2000))
            .unwrap();
        assert_eq!(back, pattern);
        assert!(!dev.needs_reset());
        assert!(dev.interrupt.queues.lock().unwrap().iter().all(|&q| q == 0));
        assert!(!dev.interrupt.queues.lock().unwrap().is_empty());
    }

    #[test]
    fn a_request_without_status_is_completed_with_nothing_written() {
        let mem = memory();
        let ring = MockSplitQueue::new(&mem, QUEUE_SIZE);
        header(&mem, HDR, VIRTIO_BLK_T_OUT, 0);
        // A loop: refused, and completed with length 0 so the driver gets
        // its descriptors back.
        let descs = [linked(HDR, 16, R | NEXT, 1), linked(DATA, 512, R | NEXT, 0)];
        ring.add_desc_chains(&descs, 0).unwrap();
        let dev = Running::start("nostatus", &mem, ring.create_queue().unwrap());
        dev.kick();
        wait_for("the used entry", || ring.used().idx().load() == 1);
        assert_eq!(used(&ring), vec![(0, 0)]);
        assert_eq!(dev.counter("errors"), 1);
        assert_eq!(dev.counter("write_requests"), 0);
        assert!(!dev.needs_reset());
    }

    #[test]
    fn an_available_index_more_than_a_ring_ahead_needs_reset() {
        let mem = memory();
        let ring = MockSplitQueue::new(&mem, QUEUE_SIZE);
        header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
        ring.add_desc_chains(&chain_at(0, &[(HDR, 16, R), (STATUS, 1, W)]), 0)
            .unwrap();
        ring.avail().idx().store(QUEUE_SIZE + 1);
        let dev = Running::start("ahead", &mem, ring.create_queue().unwrap());
        dev.kick();
        wait_for("DEVICE_NEEDS_RESET", || dev.needs_reset());
        assert_eq!(ring.used().idx().load(), 0);
        // Once broken, the device serves nothing more until reset, even
        // if the driver fixes its index.
        ring.avail().idx().store(1);
        dev.kick();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ring.used().idx().load(), 0);
        assert_eq!(dev.counter("flushes"), 0);
    }

    #[test]
    fn a_head_index_outside_the_ring_needs_reset() {
        let mem = memory();
        let ring = MockSplitQueue::new(&mem, QUEUE_SIZE);
        ring.avail().ring().ref_at(0).unwrap().store(200);
        ring.avail().idx().store(1);
        let dev = Running::start("head", &mem, ring.create_queue().unwrap());
        dev.kick();
        wait_for("DEVICE_NEEDS_RESET", || dev.needs_reset());
        assert_eq!(ring.used().idx().load(), 0);
        assert_eq!(dev.counter("errors"), 1);
    }

    #[test]
    fn a_used_ring_outside_memory_needs_reset() {
        let mem = memory();
        let ring = MockSplitQueue::new(&mem, QUEUE_SIZE);
        header(&mem, HDR, VIRTIO_BLK_T_FLUSH, 0);
        ring.add_desc_chains(&chain_at(0, &[(HDR, 16, R), (STATUS, 1, W)]), 0)
            .unwrap();
        let mut queue: Queue = ring.create_queue().unwrap();
        queue
            .try_set_used_ring_address(GuestAddress(MEM_END - 8))
            .unwrap();
        let dev = Running::start("used", &mem, queue);
        dev.kick();
        wait_for("DEVICE_NEEDS_RESET", || dev.needs_reset());
        // The flush itself ran; only its completion could not be published.
        wait_for("the flush", || dev.counter("flushes") == 1);
    }
    /// A disk whose writes fail with ENOSPC while `full` is set.
    struct FullDisk {
        inner: Arc<dyn block::DiskImage>,
        full: AtomicBool,
    }

    impl block::DiskImage for FullDisk {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_vectored(&self, offset: u64, bufs: &[block::IoBufMut]) -> block::Result<()> {
            self.inner.read_vectored(offset, bufs)
        }
        fn write_vectored(&self, offset: u64, bufs: &[block::IoBuf]) -> block::Result<()> {
            if self.full.load(Ordering::SeqCst) {
                return Err(block::Error::Io {
                    op: "write",
                    source: std::io::Error::from_raw_os_error(libc::ENOSPC),
                });
            }
            self.inner.write_vectored(offset, bufs)
        }
        fn flush(&self) -> block::Result<()> {
            self.inner.flush()
        }
        fn discard(&self, offset: u64, len: u64) -> block::Result<()> {
            self.inner.discard(offset, len)
        }
        fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> block::Result<()> {
            self.inner.write_zeroes(offset, len, unmap)
        }
        fn resize(&self, new_size: u64) -> block::Result<()> {
            self.inner.resize(new_size)
        }
    }

    fn full_disk(name: &str) -> (TempImage, Arc<FullDisk>) {
        let image = TempImage::new(name, CAPACITY);
        let inner = block::open(&image.0, &block::OpenOptions::default()).unwrap();
        let disk = Arc::new(FullDisk {
            inner,
            full: AtomicBool::new(true),
        });
        (image, disk)
    }

    fn one_write(mem: &GuestMemory, ring: &MockSplitQueue<'_, GuestMemory>) -> Vec<u8> {
        let pattern: Vec<u8> = (0..512u32).map(|i| (i % 241) as u8).collect();
        mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
        header(mem, HDR, VIRTIO_BLK_T_OUT, 2);
        mem.write_slice(&[0xff], GuestAddress(STATUS)).unwrap();
        ring.add_desc_chains(
            &chain_at(0, &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)]),
            0,
        )
        .unwrap();
        pattern
    }

    #[test]
    fn a_stop_policy_holds_a_failed_write_until_the_device_resumes() {
        let mem = memory();
        let ring = MockSplitQueue::new(&mem, QUEUE_SIZE);
        let pattern = one_write(&mem, &ring);
        let (image, disk) = full_disk("stop");
        let told = Arc::new(Mutex::new(Vec::<String>::new()));
        let notify: StopNotifier = {
            let told = told.clone();
            Arc::new(move |why| told.lock().unwrap().push(why))
        };
        let policy = ErrorPolicy {
            write: ErrorAction::Enospc,
            read: ErrorAction::Report,
        };
        let path = image.0.clone();
        let mut dev = Running::start_on(
            image,
            disk.clone(),
            &mem,
            ring.create_queue().unwrap(),
            policy,
            Some(notify),
        );
        dev.kick();
        wait_for("the stop notice", || !told.lock().unwrap().is_empty());
        assert!(
            told.lock().unwrap()[0].contains("No space left"),
            "{:?}",
            told.lock().unwrap()
        );
        // Held: the guest has no answer and no error.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ring.used().idx().load(), 0);
        assert_eq!(dev.counter("errors"), 0);
        assert_eq!(dev.counter("held_requests"), 1);
        // Space is freed; the VM is paused and resumed: the write goes again.
        disk.full.store(false, Ordering::SeqCst);
        assert!(dev.device.pause());
        dev.device.resume();
        wait_for("the write", || ring.used().idx().load() == 1);
        assert_eq!(status_byte(&mem, STATUS), VIRTIO_BLK_S_OK);
        assert_eq!(&std::fs::read(&path).unwrap()[1024..1536], &pattern[..]);
        assert_eq!(dev.counter("write_requests"), 1);
        assert!(!dev.needs_reset());
    }

    #[test]
    fn report_and_ignore_answer_at_once_and_stop_without_a_listener_reports() {
        for (action, listener, status) in [
            (ErrorAction::Report, true, VIRTIO_BLK_S_IOERR),
            (ErrorAction::Ignore, true, VIRTIO_BLK_S_OK),
            (ErrorAction::Stop, false, VIRTIO_BLK_S_IOERR),
        ] {
            let mem = memory();
            let ring = MockSplitQueue::new(&mem, QUEUE_SIZE);
            one_write(&mem, &ring);
            let (image, disk) = full_disk(action.as_str());
            let notify: Option<StopNotifier> =
                listener.then(|| Arc::new(|_| panic!("nothing may stop")) as StopNotifier);
            let policy = ErrorPolicy {
                write: action,
                read: ErrorAction::Report,
            };
            let dev = Running::start_on(
                image,
                disk,
                &mem,
                ring.create_queue().unwrap(),
                policy,
                notify,
            );
            dev.kick();
            wait_for("the answer", || ring.used().idx().load() == 1);
            assert_eq!(status_byte(&mem, STATUS), status, "{action:?}");
            assert_eq!(dev.counter("errors"), 1);
            assert_eq!(dev.counter("held_requests"), 0);
        }
    }
}

#[test]
fn discards_beyond_the_announced_maximum_are_refused() {
    let mem = memory();
    let big_disk = 1 << 30;
    let max_sectors = u32::try_from(MAX_TRANSFER / 512).unwrap();
    for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
        header(&mem, HDR, kind, 0);
        let descs = [desc(HDR, 16, R), desc(DATA, 16, R), status()];
        segment(&mem, DATA, 0, max_sectors, 0);
        assert!(
            parse_with(&mem, &descs, big_disk, false).is_ok(),
            "type {kind}"
        );
        segment(&mem, DATA, 0, max_sectors + 1, 0);
        assert!(
            matches!(
                err_at_status(parse_with(&mem, &descs, big_disk, false)),
                RequestError::BadLength(_)
            ),
            "type {kind}"
        );
    }
}
