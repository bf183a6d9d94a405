//! virtio-net against well-formed and hostile rings, with a socket pair
//! standing in for the TAP (and a real TAP in a throwaway namespace).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::device::{ActivateContext, ActiveQueue, GuestMemory, VirtioDevice, VirtioInterrupt};

pub(crate) const MEM_SIZE: usize = 0x100_0000;
pub(crate) const Q_SIZE: u16 = 16;
const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// Where each queue's rings live, by queue index.
pub(crate) const RING_BASE: u64 = 0x1_0000;
/// Where buffers start.
pub(crate) const BUF_BASE: u64 = 0x10_0000;

/// Records what the device asked of the transport.
#[derive(Default)]
pub(crate) struct TestInterrupt {
    pub queue_notifies: Mutex<Vec<u16>>,
    pub config_notifies: AtomicUsize,
    pub needs_reset: AtomicBool,
}

impl VirtioInterrupt for TestInterrupt {
    fn notify_queue(&self, queue: u16) {
        self.queue_notifies.lock().unwrap().push(queue);
    }
    fn notify_config(&self) {
        self.config_notifies.fetch_add(1, Ordering::SeqCst);
    }
    fn set_needs_reset(&self) {
        self.needs_reset.store(true, Ordering::SeqCst);
    }
}

fn bit(b: u32) -> u64 {
    1 << b
}

pub(crate) fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into `fds`.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0);
    // SAFETY: both descriptors were just created and are owned by no one.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn send(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: sends `data`, a live slice.
    let n = unsafe { libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
    assert_eq!(usize::try_from(n).unwrap(), data.len());
}

fn recv(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    // SAFETY: receives into `buf`, a live mutable slice.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    Some(buf)
}

pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A descriptor: address, length, device-writable.
#[derive(Clone, Copy)]
pub(crate) struct D(pub u64, pub u32, pub bool);

/// One queue as the driver sees it.
pub(crate) struct DriverQueue<'a> {
    pub mock: MockSplitQueue<'a, GuestMemory>,
    pub mem: &'a GuestMemory,
    /// The used ring, placed apart from the mock's (see [`make_queue`]).
    pub used_addr: GuestAddress,
    pub kick: EventFd,
    pub next_desc: u16,
}

impl DriverQueue<'_> {
    /// Make a chain available (descriptors linked in order) and kick.
    /// The avail ring wraps (unlike the mock's own `add_desc_chains`,
    /// which writes entry `idx` past the ring's end once `idx` reaches
    /// the queue size), so chains can be pushed and recycled for ever.
    pub fn push(&mut self, descs: &[D]) -> u16 {
        let start = self.next_desc;
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut flags = if d.2 { VRING_DESC_F_WRITE } else { 0 };
                let last = i + 1 == descs.len();
                if !last {
                    flags |= VRING_DESC_F_NEXT;
                }
                let next = start + u16::try_from(i).unwrap() + 1;
                RawDescriptor::from(SplitDescriptor::new(
                    d.0,
                    d.1,
                    u16::try_from(flags).unwrap(),
                    if last { 0 } else { next },
                ))
            })
            .collect();
        for (i, d) in raw.into_iter().enumerate() {
            let at = (start + u16::try_from(i).unwrap()) % Q_SIZE;
            self.mock.desc_table().store(at, d).unwrap();
        }
        let avail = self.mock.avail_addr();
        let idx: u16 = self.mem.read_obj(avail.unchecked_add(2)).unwrap();
        let slot = avail.unchecked_add(4 + 2 * u64::from(idx % Q_SIZE));
        self.mem.write_obj(start, slot).unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), avail.unchecked_add(2))
            .unwrap();
        self.next_desc = (start + u16::try_from(descs.len()).unwrap()) % Q_SIZE;
        self.kick.write(1).unwrap();
        start
    }

    pub fn used_count(&self) -> u16 {
        self.mem.read_obj(self.used_addr.unchecked_add(2)).unwrap()
    }

    /// (head, len) of used entry `i` (taken modulo the ring size).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = self.used_addr.unchecked_add(4 + 8 * u64::from(i % Q_SIZE));
        let id = self.mem.read_obj(at).unwrap();
        let len = self.mem.read_obj(at.unchecked_add(4)).unwrap();
        (id, len)
    }

    pub fn wait_used(&self, n: u16) {
        wait_for(&format!("{n} used entries"), || self.used_count() >= n);
    }
}

pub(crate) fn memory() -> GuestMemory {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// Queue `index`, with its rings at their own place in `mem`: the
/// device's half and the driver's.
///
/// The used ring is put half a ring area past the descriptor table: the
/// mock places it right after the avail ring's first `Q_SIZE` bytes (it
/// takes the entry count for a byte count), where it overlaps avail
/// entries 8 and up once the avail index gets that far.
pub(crate) fn make_queue(mem: &GuestMemory, index: u16) -> (ActiveQueue, DriverQueue<'_>) {
    let base = RING_BASE * (u64::from(index) + 1);
    let mock = MockSplitQueue::create(mem, GuestAddress(base), Q_SIZE);
    let mut queue: Queue = mock.create_queue().unwrap();
    let used_addr = GuestAddress(base + RING_BASE / 2);
    let (lo, hi) = (used_addr.0 & 0xffff_ffff, used_addr.0 >> 32);
    queue.set_used_ring_address(
        Some(u32::try_from(lo).unwrap()),
        Some(u32::try_from(hi).unwrap()),
    );
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let active = ActiveQueue {
        index,
        queue,
        kick: kick.try_clone().unwrap(),
    };
    let driver = DriverQueue {
        mock,
        mem,
        used_addr,
        kick,
        next_desc: 0,
    };
    (active, driver)
}

/// A device with `pairs` queue pairs over socket pairs, activated with
/// `features` and the queues in `enabled`.
struct Rig<'a> {
    net: Net,
    mem: &'a GuestMemory,
    peers: Vec<OwnedFd>,
    queues: Vec<Option<DriverQueue<'a>>>,
    interrupt: Arc<TestInterrupt>,
}

impl<'a> Rig<'a> {
    fn new(mem: &'a GuestMemory, pairs: usize, mtu: Option<u16>) -> Self {
        let (dev, peers): (Vec<_>, Vec<_>) = (0..pairs).map(|_| seqpacket_pair()).unzip();
        let net = Net::with_fds(dev, MAC, mtu);
        Self {
            net,
            mem,
            peers,
            queues: Vec::new(),
            interrupt: Arc::new(TestInterrupt::default()),
        }
    }

    fn activate(&mut self, features: u64, enabled: &[u16]) -> Result<(), crate::ActivateError> {
        let mut active = Vec::new();
        let count = self.net.queue_max_sizes().len();
        self.queues = (0..count).map(|_| None).collect();
        for &i in enabled {
            let (queue, driver) = make_queue(self.mem, i);
            active.push(queue);
            if let Some(slot) = self.queues.get_mut(usize::from(i)) {
                *slot = Some(driver);
            }
        }
        self.net.activate(ActivateContext {
            mem: self.mem.clone(),
            interrupt: self.interrupt.clone(),
            queues: active,
            features,
        })
    }

    fn q(&mut self, i: usize) -> &mut DriverQueue<'a> {
        self.queues[i].as_mut().unwrap()
    }

    fn counter(&self, name: &str) -> u64 {
        self.net
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }
}

/// A vnet header and an Ethernet frame of `len` bytes with a pattern.
fn packet(len: usize, seed: u8) -> Vec<u8> {
    let mut p = vec![0u8; NET_HDR_LEN];
    p.extend((0..len).map(|i| (i.to_le_bytes()[0]).wrapping_mul(7).wrapping_add(seed)));
    p
}

pub(crate) fn read_mem(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

#[test]
fn transmitted_frames_reach_the_tap_whole() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    rig.activate(bit(VIRTIO_NET_F_MAC), &[0, 1]).unwrap();
    let pkt = packet(200, 1);
    mem.write_slice(&pkt[..NET_HDR_LEN], GuestAddress(BUF_BASE))
        .unwrap();
    mem.write_slice(&pkt[NET_HDR_LEN..], GuestAddress(BUF_BASE + 0x1000))
        .unwrap();
    rig.q(1)
        .push(&[D(BUF_BASE, 12, false), D(BUF_BASE + 0x1000, 200, false)]);
    rig.q(1).wait_used(1);
    assert_eq!(rig.q(1).used(0), (0, 0));
    assert_eq!(recv(&rig.peers[0]).unwrap(), pkt);
    assert_eq!(rig.counter("tx_frames"), 1);
    assert_eq!(rig.counter("tx_bytes"), 200);
    assert!(rig.interrupt.queue_notifies.lock().unwrap().contains(&1));
}

#[test]
fn received_frame_fills_one_buffer_with_num_buffers_one() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    rig.activate(bit(VIRTIO_NET_F_MAC), &[0, 1]).unwrap();
    // Garbage where num_buffers goes: the device must overwrite it.
    mem.write_slice(&[0xee; 16], GuestAddress(BUF_BASE))
        .unwrap();
    rig.q(0).push(&[D(BUF_BASE, 2048, true)]);
    let pkt = packet(100, 3);
    send(&rig.peers[0], &pkt);
    rig.q(0).wait_used(1);
    assert_eq!(rig.q(0).used(0), (0, 112));
    let got = read_mem(&mem, BUF_BASE, 112);
    assert_eq!(&got[..10], &pkt[..10]);
    assert_eq!(&got[10..12], &1u16.to_le_bytes());
    assert_eq!(&got[12..], &pkt[12..]);
    assert_eq!(rig.counter("rx_frames"), 1);
}

#[test]
fn mergeable_buffers_carry_a_frame_across_chains() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    rig.activate(bit(VIRTIO_NET_F_MRG_RXBUF), &[0, 1]).unwrap();
    // Two-descriptor chains of 512 bytes each, until a 1500-MTU frame
    // surely fits (three of them).
    for i in 0..4u64 {
        let a = BUF_BASE + i * 0x1000;
        rig.q(0).push(&[D(a, 200, true), D(a + 0x800, 312, true)]);
    }
    let pkt = packet(1400, 9);
    send(&rig.peers[0], &pkt);
    rig.q(0).wait_used(3);
    let used: Vec<_> = (0..3).map(|i| rig.q(0).used(i)).collect();
    assert_eq!(used, vec![(0, 512), (2, 512), (4, 388)]);
    let mut got = Vec::new();
    for (i, (_, len)) in used.iter().enumerate() {
        let a = BUF_BASE + i as u64 * 0x1000;
        let len = *len as usize;
        got.extend(read_mem(&mem, a, len.min(200)));
        if len > 200 {
            got.extend(read_mem(&mem, a + 0x800, len - 200));
        }
    }
    assert_eq!(&got[10..12], &3u16.to_le_bytes());
    assert_eq!(&got[12..], &pkt[12..]);
    // The fourth chain stays with the device for the next frame.
    let small = packet(50, 1);
    send(&rig.peers[0], &small);
    rig.q(0).push(&[D(BUF_BASE + 0x8000, 2048, true)]);
    rig.q(0).wait_used(4);
    assert_eq!(rig.q(0).used(3), (6, 62));
}

#[test]
fn frames_wait_in_the_tap_until_the_guest_offers_buffers() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    rig.activate(bit(VIRTIO_NET_F_MAC), &[0, 1]).unwrap();
    let (a, b) = (packet(60, 1), packet(70, 2));
    send(&rig.peers[0], &a);
    send(&rig.peers[0], &b);
    wait_for("the device to run dry", || {
        rig.counter("rx_no_buffers") >= 1
    });
    rig.q(0).push(&[D(BUF_BASE, 1600, true)]);
    rig.q(0).wait_used(1);
    rig.q(0).push(&[D(BUF_BASE + 0x1000, 1600, true)]);
    rig.q(0).wait_used(2);
    assert_eq!(rig.q(0).used(0).1, 72);
    assert_eq!(rig.q(0).used(1).1, 82);
    assert_eq!(read_mem(&mem, BUF_BASE + 0x1000 + 12, 70), b[12..]);
    assert_eq!(rig.counter("rx_frames"), 2);
}

#[test]
fn hostile_transmit_chains_fail_without_harm() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    rig.activate(bit(VIRTIO_NET_F_MAC), &[0, 1]).unwrap();
    let end = MEM_SIZE as u64;
    let cases: Vec<Vec<D>> = vec![
        // A device-writable descriptor in a transmit chain.
        vec![D(BUF_BASE, 12, false), D(BUF_BASE + 0x100, 60, true)],
        // A buffer past the end of guest memory.
        vec![D(BUF_BASE, 12, false), D(end - 10, 60, false)],
        // An address whose end overflows.
        vec![D(u64::MAX - 4, 100, false)],
        // Longer than 64 KiB + header.
        vec![D(BUF_BASE, 12, false), D(BUF_BASE + 0x100, 70_000, false)],
        // Empty and header-only chains.
        vec![D(BUF_BASE, 0, false)],
        vec![D(BUF_BASE, 12, false)],
    ];
    let n = u16::try_from(cases.len()).unwrap();
    for c in &cases {
        rig.q(1).push(c);
    }
    rig.q(1).wait_used(n);
    for i in 0..n {
        assert_eq!(rig.q(1).used(i).1, 0);
    }
    assert_eq!(rig.counter("tx_errors"), u64::from(n));
    assert_eq!(rig.counter("tx_frames"), 0);
    assert!(
        recv(&rig.peers[0]).is_none(),
        "a refused frame reached the TAP"
    );
    assert!(!rig.interrupt.needs_reset.load(Ordering::SeqCst));
    // The queue still works afterwards.
    rig.q(1).push(&[D(BUF_BASE, 80, false)]);
    rig.q(1).wait_used(n + 1);
    assert_eq!(recv(&rig.peers[0]).unwrap().len(), 80);
}

#[test]
fn hostile_receive_chains_are_returned_empty() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    rig.activate(bit(VIRTIO_NET_F_MAC), &[0, 1]).unwrap();
    let end = MEM_SIZE as u64;
    rig.q(0).push(&[D(BUF_BASE, 1600, false)]); // readable
    rig.q(0).push(&[D(end - 100, 1600, true)]); // outside memory
    rig.q(0).push(&[D(BUF_BASE, 4, true)]); // cannot hold a header
    rig.q(0).push(&[D(BUF_BASE, 0, true)]); // zero length
    rig.q(0).push(&[D(BUF_BASE + 0x2000, 1600, true)]); // good
    send(&rig.peers[0], &packet(64, 5));
    rig.q(0).wait_used(5);
    for i in 0..4 {
        assert_eq!(rig.q(0).used(i).1, 0, "entry {i}");
    }
    assert_eq!(rig.q(0).used(4), (4, 76));
    assert_eq!(rig.counter("rx_errors"), 4);
    assert!(!rig.interrupt.needs_reset.load(Ordering::SeqCst));
}

#[test]
fn looping_chains_are_bounded() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    rig.activate(bit(VIRTIO_NET_F_MAC), &[0, 1]).unwrap();
    // Descriptor 0 names itself as next: the walk stops at the queue size.
    let raw = RawDescriptor::from(SplitDescriptor::new(
        BUF_BASE,
        100,
        u16::try_from(VRING_DESC_F_NEXT).unwrap(),
        0,
    ));
    let q = rig.q(1);
    q.mock.add_desc_chains(&[raw], 0).unwrap();
    q.kick.write(1).unwrap();
    q.wait_used(1);
    // The walk stops at the queue size; the chain is refused whole.
    assert_eq!(q.used(0), (0, 0));
    // A receive chain that loops is returned empty too.
    let raw = RawDescriptor::from(SplitDescriptor::new(
        BUF_BASE,
        2048,
        u16::try_from(VRING_DESC_F_NEXT | VRING_DESC_F_WRITE).unwrap(),
        0,
    ));
    let rx = rig.q(0);
    rx.mock.add_desc_chains(&[raw], 0).unwrap();
    rx.kick.write(1).unwrap();
    rx.wait_used(1);
    assert_eq!(rx.used(0), (0, 0));
    assert_eq!(rig.counter("tx_errors"), 1);
    assert_eq!(rig.counter("rx_errors"), 1);
    assert!(recv(&rig.peers[0]).is_none());
    assert!(!rig.interrupt.needs_reset.load(Ordering::SeqCst));
}

#[test]
fn a_runaway_available_index_needs_a_reset() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    rig.activate(bit(VIRTIO_NET_F_MAC), &[0, 1]).unwrap();
    let q = rig.q(1);
    // The driver claims 100 new entries in a 16-entry ring.
    mem.write_obj(100u16, q.mock.avail_addr().unchecked_add(2))
        .unwrap();
    q.kick.write(1).unwrap();
    wait_for("DEVICE_NEEDS_RESET", || {
        rig.interrupt.needs_reset.load(Ordering::SeqCst)
    });
    // The same for the receive ring, woken by a frame.
    let mem2 = memory();
    let mut rig2 = Rig::new(&mem2, 1, None);
    rig2.activate(0, &[0, 1]).unwrap();
    mem2.write_obj(1000u16, rig2.q(0).mock.avail_addr().unchecked_add(2))
        .unwrap();
    send(&rig2.peers[0], &packet(60, 0));
    wait_for("DEVICE_NEEDS_RESET on rx", || {
        rig2.interrupt.needs_reset.load(Ordering::SeqCst)
    });
}

#[test]
fn control_queue_sets_queue_pairs_and_refuses_the_rest() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 2, None);
    let features = bit(VIRTIO_NET_F_CTRL_VQ) | bit(VIRTIO_NET_F_MQ);
    rig.activate(features, &[0, 1, 2, 3, 4]).unwrap();
    let cmd = |c: &mut DriverQueue<'_>, at: u64, bytes: &[u8]| {
        mem.write_slice(bytes, GuestAddress(at)).unwrap();
        mem.write_obj(0xaau8, GuestAddress(at + 0x100)).unwrap();
        c.push(&[
            D(at, u32::try_from(bytes.len()).unwrap(), false),
            D(at + 0x100, 1, true),
        ]);
    };
    let mq = u8::try_from(VIRTIO_NET_CTRL_MQ).unwrap();
    cmd(rig.q(4), BUF_BASE, &[mq, 0, 2, 0]); // 2 pairs: fine
    cmd(rig.q(4), BUF_BASE + 0x1000, &[mq, 0, 3, 0]); // 3 > max
    cmd(rig.q(4), BUF_BASE + 0x2000, &[mq, 0, 0, 0]); // 0 < min
    cmd(rig.q(4), BUF_BASE + 0x3000, &[0, 0, 1]); // RX class
    rig.q(4).wait_used(4);
    let status = |i: u64| mem.read_obj::<u8>(GuestAddress(BUF_BASE + i * 0x1000 + 0x100));
    assert_eq!(status(0).unwrap(), 0);
    for i in 1..4 {
        assert_eq!(status(i).unwrap(), 1, "command {i}");
        assert_eq!(rig.q(4).used(u16::try_from(i).unwrap()).1, 1);
    }
    // No status byte, and the status before the command: refused, used 0.
    rig.q(4).push(&[D(BUF_BASE, 4, false)]);
    rig.q(4)
        .push(&[D(BUF_BASE + 0x100, 1, true), D(BUF_BASE, 4, false)]);
    rig.q(4).wait_used(6);
    assert_eq!(rig.q(4).used(4).1, 0);
    assert_eq!(rig.q(4).used(5).1, 0);
    assert_eq!(rig.counter("ctrl_errors"), 5);
    // Both pairs carry traffic.
    rig.q(3).push(&[D(BUF_BASE + 0x5000, 80, false)]);
    rig.q(3).wait_used(1);
    assert_eq!(recv(&rig.peers[1]).unwrap().len(), 80);
}

#[test]
fn without_mq_the_control_queue_is_queue_two() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 2, None);
    rig.activate(bit(VIRTIO_NET_F_CTRL_VQ), &[0, 1, 2]).unwrap();
    let mq = u8::try_from(VIRTIO_NET_CTRL_MQ).unwrap();
    mem.write_slice(&[mq, 0, 1, 0], GuestAddress(BUF_BASE))
        .unwrap();
    rig.q(2)
        .push(&[D(BUF_BASE, 4, false), D(BUF_BASE + 0x100, 1, true)]);
    rig.q(2).wait_used(1);
    // MQ was not negotiated, so even one pair is refused.
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(BUF_BASE + 0x100)).unwrap(),
        1
    );
}

#[test]
fn config_space_is_read_only_and_tracks_the_link() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 2, Some(9000));
    let read = |net: &Net| {
        let mut c = [0u8; 16];
        net.read_config(0, &mut c);
        c
    };
    let c = read(&rig.net);
    assert_eq!(&c[0..6], &MAC);
    assert_eq!(u16::from_le_bytes([c[6], c[7]]), 1, "link up");
    assert_eq!(u16::from_le_bytes([c[8], c[9]]), 2, "max pairs");
    assert_eq!(u16::from_le_bytes([c[10], c[11]]), 9000, "mtu");
    assert_eq!(&c[12..], &[0; 4], "past the end reads zero");
    let mut one = [0u8; 2];
    rig.net.read_config(8, &mut one);
    assert_eq!(one, [2, 0]);
    rig.net.read_config(u64::MAX, &mut one);
    assert_eq!(one, [0, 0]);

    rig.net.write_config(0, &[0xff; 6]);
    rig.net.write_config(6, &[0; 2]);
    assert_eq!(read(&rig.net), c);
    assert_eq!(rig.counter("config_writes_ignored"), 2);

    // Before activation a link change has nobody to tell.
    let link = rig.net.link();
    link.set_up(false);
    assert_eq!(read(&rig.net)[6], 0);
    assert_eq!(rig.interrupt.config_notifies.load(Ordering::SeqCst), 0);
    rig.activate(0, &[0, 1]).unwrap();
    rig.net.set_link(true);
    assert_eq!(read(&rig.net)[6], 1);
    assert_eq!(rig.interrupt.config_notifies.load(Ordering::SeqCst), 1);
    rig.net.set_link(true);
    assert_eq!(rig.interrupt.config_notifies.load(Ordering::SeqCst), 1);
    rig.net.reset();
    link.set_up(false);
    assert_eq!(rig.interrupt.config_notifies.load(Ordering::SeqCst), 1);
}

#[test]
fn features_follow_the_configuration() {
    let one = Net::with_fds(vec![seqpacket_pair().0], MAC, None);
    let f = one.features();
    for b in [
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
    ] {
        assert_ne!(f & bit(b), 0, "feature {b}");
    }
    assert_eq!(f & bit(VIRTIO_NET_F_MQ), 0);
    assert_eq!(f & bit(VIRTIO_NET_F_MTU), 0);
    assert_eq!(
        one.queue_max_sizes(),
        &[QUEUE_SIZE, QUEUE_SIZE, CTRL_QUEUE_SIZE]
    );
    let two = Net::with_fds(
        vec![seqpacket_pair().0, seqpacket_pair().0],
        MAC,
        Some(1500),
    );
    assert_ne!(two.features() & bit(VIRTIO_NET_F_MQ), 0);
    assert_ne!(two.features() & bit(VIRTIO_NET_F_MTU), 0);
    assert_eq!(two.queue_max_sizes().len(), 5);
}

#[test]
fn activation_refuses_useless_queue_sets_and_ignores_strays() {
    let mem = memory();
    let mut rig = Rig::new(&mem, 1, None);
    assert!(rig.activate(0, &[]).is_err());
    // Queue 5 does not exist for this device; queue 2 is not the control
    // queue without CTRL_VQ. Neither is served, neither breaks anything.
    rig.activate(0, &[0, 1, 2, 5]).unwrap();
    rig.q(2).push(&[D(BUF_BASE, 4, false)]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(rig.q(2).used_count(), 0);
    rig.q(1).push(&[D(BUF_BASE, 80, false)]);
    rig.q(1).wait_used(1);
    // Reset stops the workers; a second activation works.
    rig.net.reset();
    rig.activate(0, &[0, 1]).unwrap();
    rig.q(1).push(&[D(BUF_BASE, 80, false)]);
    rig.q(1).wait_used(1);
}

#[test]
fn generated_macs_are_stable_local_unicast() {
    let a = generate_mac(b"vm1/net0");
    assert_eq!(a, generate_mac(b"vm1/net0"));
    assert_ne!(a, generate_mac(b"vm1/net1"));
    for seed in [&b""[..], b"x", b"vm2/net0", &[0xff; 40]] {
        let m = generate_mac(seed);
        assert_eq!(m[0] & 0x03, 0x02, "{}", format_mac(&m));
    }
    assert_eq!(format_mac(&[2, 0xab, 0, 1, 2, 3]), "02:ab:00:01:02:03");
}

#[test]
fn bad_configurations_are_refused() {
    let ns = netvirt::netns::run_isolated(|| {
        let tap = || netvirt::Tap::open(None, 1).unwrap();
        let cfg = |tap, mac, queue_pairs, mtu| NetConfig {
            tap,
            mac,
            queue_pairs,
            mtu,
        };
        assert!(matches!(
            Net::new(cfg(tap(), MAC, 2, None)),
            Err(NetError::QueuePairs { .. })
        ));
        assert!(matches!(
            Net::new(cfg(tap(), MAC, 0, None)),
            Err(NetError::QueuePairs { .. })
        ));
        assert!(matches!(
            Net::new(cfg(tap(), MAC, 1, Some(10))),
            Err(NetError::Mtu(10))
        ));
        let multicast = [1, 0, 0, 0, 0, 1];
        assert!(matches!(
            Net::new(cfg(tap(), multicast, 1, None)),
            Err(NetError::Mac(_))
        ));
        assert!(Net::new(cfg(tap(), MAC, 1, None)).is_ok());
    });
    ns.expect("network namespace (tests need root)");
}

/// A real TAP in a throwaway namespace: the guest ARPs for the host's
/// address and the kernel's reply arrives in a receive buffer.
#[test]
fn arp_round_trip_through_a_real_tap() {
    netvirt::netns::run_isolated(|| {
        let tap = netvirt::Tap::open(None, 1).unwrap();
        tap.set_ipv4(std::net::Ipv4Addr::new(169, 254, 10, 2), 16)
            .unwrap();
        let host_mac = tap.mac().unwrap();
        let mem = memory();
        let net = Net::new(NetConfig {
            tap,
            mac: MAC,
            queue_pairs: 1,
            mtu: None,
        })
        .unwrap();
        let mut rig = Rig {
            net,
            mem: &mem,
            peers: Vec::new(),
            queues: Vec::new(),
            interrupt: Arc::new(TestInterrupt::default()),
        };
        // Checksum offload and mergeable buffers, but no GSO: 1500-byte
        // frames, so four 2 KiB buffers are enough.
        let gso = [
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_UFO,
            VIRTIO_NET_F_GUEST_ECN,
        ];
        let features = gso.iter().fold(rig.net.features(), |f, b| f & !bit(*b));
        assert_ne!(features & bit(VIRTIO_NET_F_GUEST_CSUM), 0);
        rig.activate(features, &[0, 1]).unwrap();
        for i in 0..4 {
            rig.q(0).push(&[D(BUF_BASE + i * 0x1000, 2048, true)]);
        }
        // who-has 169.254.10.2 tell 169.254.10.15
        let mut arp = vec![0u8; NET_HDR_LEN];
        arp.extend_from_slice(&[0xff; 6]);
        arp.extend_from_slice(&MAC);
        arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        arp.extend_from_slice(&MAC);
        arp.extend_from_slice(&[169, 254, 10, 15]);
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[169, 254, 10, 2]);
        mem.write_slice(&arp, GuestAddress(BUF_BASE + 0x10_0000))
            .unwrap();
        let len = u32::try_from(arp.len()).unwrap();
        rig.q(1).push(&[D(BUF_BASE + 0x10_0000, len, false)]);
        rig.q(1).wait_used(1);
        // The kernel answers (possibly after IPv6 chatter of its own).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "no ARP reply: {:?}",
                rig.net.counters()
            );
            if rig.q(0).used_count() > seen {
                let (head, len) = rig.q(0).used(seen);
                seen += 1;
                let f = read_mem(&mem, BUF_BASE + u64::from(head) * 0x1000, len as usize);
                let eth = &f[NET_HDR_LEN..];
                if eth[12..14] == [8, 6] {
                    assert_eq!(&eth[0..6], &MAC, "reply to the guest");
                    assert_eq!(&eth[6..12], &host_mac);
                    assert_eq!(&eth[20..22], &[0, 2], "ARP reply");
                    assert_eq!(&eth[28..32], &[169, 254, 10, 2]);
                    break;
                }
                rig.q(0)
                    .push(&[D(BUF_BASE + u64::from(head) * 0x1000, 2048, true)]);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(rig.counter("tx_frames"), 1);
    })
    .expect("network namespace (tests need root)");
}

mod mq;
