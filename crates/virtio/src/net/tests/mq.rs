//! Multiqueue: which TAP queues are attached as the driver enables queue
//! pairs, with a recording stand-in backend and with a real multi-queue
//! TAP whose frames the kernel spreads by flow hash.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::*;

const PAIRS: usize = 4;
/// Control-command buffers, clear of the receive buffers below.
const CTRL_BUF: u64 = 0x80_0000;
/// Bytes of each receive buffer (a 1500-byte MTU frame and its header).
const RX_BUF_LEN: u32 = 2048;
/// Marks the frames [`send_flows`] sends.
const MARK: &[u8] = b"vireo-mq";

fn mq_features() -> u64 {
    bit(VIRTIO_NET_F_CTRL_VQ) | bit(VIRTIO_NET_F_MQ)
}

/// Every queue of a `PAIRS`-pair device: the pairs, then control.
fn all_queues() -> Vec<u16> {
    (0..=u16::try_from(2 * PAIRS).unwrap()).collect()
}

/// Send VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET `n` on control queue `ctrl`;
/// returns the status the device wrote.
fn set_pairs(rig: &mut Rig<'_>, ctrl: usize, n: u16) -> u8 {
    let mem = rig.mem;
    let q = rig.q(ctrl);
    let at = CTRL_BUF + u64::from(q.used_count() % Q_SIZE) * 0x200;
    let mq = u8::try_from(VIRTIO_NET_CTRL_MQ).unwrap();
    let [lo, hi] = n.to_le_bytes();
    mem.write_slice(&[mq, 0, lo, hi], GuestAddress(at)).unwrap();
    mem.write_obj(0xaau8, GuestAddress(at + 0x100)).unwrap();
    let before = q.used_count();
    q.push(&[D(at, 4, false), D(at + 0x100, 1, true)]);
    q.wait_used(before + 1);
    mem.read_obj(GuestAddress(at + 0x100)).unwrap()
}

#[test]
fn queue_pairs_set_decides_which_tap_queues_are_attached() {
    let mem = memory();
    let mut rig = Rig::new(&mem, PAIRS, None);
    assert_eq!(rig.net.attached_queues(), [true; PAIRS], "as opened");
    rig.activate(mq_features(), &all_queues()).unwrap();
    // MQ negotiated, but one pair until the driver says otherwise.
    assert_eq!(rig.net.attached_queues(), [true, false, false, false]);
    assert_eq!(set_pairs(&mut rig, 8, 3), 0);
    assert_eq!(rig.net.attached_queues(), [true, true, true, false]);
    // Refused requests change nothing.
    assert_eq!(set_pairs(&mut rig, 8, 5), 1);
    assert_eq!(set_pairs(&mut rig, 8, 0), 1);
    assert_eq!(rig.net.attached_queues(), [true, true, true, false]);
    assert_eq!(set_pairs(&mut rig, 8, 1), 0);
    assert_eq!(rig.net.attached_queues(), [true, false, false, false]);
    assert_eq!(set_pairs(&mut rig, 8, 4), 0);
    assert_eq!(rig.net.attached_queues(), [true; PAIRS]);
    assert_eq!(set_pairs(&mut rig, 8, 2), 0);
    assert_eq!(rig.net.attached_queues(), [true, true, false, false]);
    // Reset: all attached again, as the TAP was opened.
    rig.net.reset();
    assert_eq!(rig.net.attached_queues(), [true; PAIRS]);
    // Without MQ the driver has one pair and cannot ask for more.
    rig.activate(bit(VIRTIO_NET_F_CTRL_VQ), &[0, 1, 2]).unwrap();
    assert_eq!(rig.net.attached_queues(), [true, false, false, false]);
    assert_eq!(set_pairs(&mut rig, 2, 2), 1);
    assert_eq!(rig.net.attached_queues(), [true, false, false, false]);
}

/// Send `count` IPv4/UDP frames out of interface `name` through a packet
/// socket, each its own flow (source port `base + i`), ending in [`MARK`].
fn send_flows(name: &str, base: u16, count: u16) {
    let proto = u16::try_from(libc::ETH_P_IP).unwrap().to_be();
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    assert!(raw >= 0, "packet socket: {}", io::Error::last_os_error());
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: `cname` is NUL-terminated and live for the call.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {name}");
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
    addr.sll_protocol = proto;
    addr.sll_ifindex = i32::try_from(ifindex).unwrap();
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&MAC);
    for i in 0..count {
        let mut f = Vec::new();
        f.extend_from_slice(&MAC);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 8, 0]);
        // IPv4: 20-byte header, UDP, 10.9.0.1 -> 10.9.0.2 (checksum left 0).
        f.extend_from_slice(&[0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 9, 0, 1, 10, 9, 0, 2]);
        f.extend_from_slice(&(base + i).to_be_bytes());
        f.extend_from_slice(&[0, 9, 0, 16, 0, 0]);
        f.extend_from_slice(MARK);
        // SAFETY: sends `f` to `addr`, both live for the call.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
            )
        };
        assert_eq!(usize::try_from(n).ok(), Some(f.len()), "sendto");
    }
}

/// The guest side of receiving on pairs `0..PAIRS`: every receive queue
/// stocked with `Q_SIZE` buffers, refilled as they come back, and the
/// marked frames counted per pair.
struct Receiver {
    /// Used entries looked at, per pair.
    seen: [u16; PAIRS],
    /// Marked frames received, per pair.
    marked: [usize; PAIRS],
}

fn rx_buf(pair: usize, head: u32) -> u64 {
    BUF_BASE + u64::try_from(pair).unwrap() * 0x10_0000 + u64::from(head) * 0x1000
}

impl Receiver {
    fn stock(rig: &mut Rig<'_>) -> Self {
        for pair in 0..PAIRS {
            for h in 0..u32::from(Q_SIZE) {
                rig.q(2 * pair)
                    .push(&[D(rx_buf(pair, h), RX_BUF_LEN, true)]);
            }
        }
        Self {
            seen: [0; PAIRS],
            marked: [0; PAIRS],
        }
    }

    /// Take in used buffers until `total` marked frames have arrived in
    /// all; panics after 5 s.
    fn until(&mut self, rig: &mut Rig<'_>, total: usize) {
        let mem = rig.mem;
        wait_for(&format!("{total} marked frames"), || {
            for pair in 0..PAIRS {
                let q = rig.q(2 * pair);
                while q.used_count() != self.seen[pair] {
                    let (head, len) = q.used(self.seen[pair] % Q_SIZE);
                    self.seen[pair] = self.seen[pair].wrapping_add(1);
                    let frame = read_mem(mem, rx_buf(pair, head), len as usize);
                    if frame.ends_with(MARK) {
                        self.marked[pair] += 1;
                    }
                    q.push(&[D(rx_buf(pair, head), RX_BUF_LEN, true)]);
                }
            }
            self.marked.iter().sum::<usize>() >= total
        });
    }
}

/// The bug this guards against: a driver using one pair of a multi-queue
/// TAP lost the frames the kernel spread to the other queues.
#[test]
fn a_real_multiqueue_tap_delivers_only_to_the_pairs_in_use() {
    netvirt::netns::run_isolated(|| {
        let tap = netvirt::Tap::open(Some("vt-mq"), PAIRS).unwrap();
        let name = tap.name().to_string();
        let mem = memory();
        let net = Net::new(NetConfig {
            tap,
            mac: MAC,
            queue_pairs: u16::try_from(PAIRS).unwrap(),
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
        // Mergeable buffers, no GSO: every frame fits one 2 KiB buffer.
        let gso = [
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_UFO,
            VIRTIO_NET_F_GUEST_ECN,
        ];
        let features = gso.iter().fold(rig.net.features(), |f, b| f & !bit(*b));
        assert_ne!(features & mq_features(), 0);

        // Without MQ: only pair 0 exists for the driver, and every flow
        // reaches it.
        rig.activate(features & !bit(VIRTIO_NET_F_MQ), &[0, 1, 2])
            .unwrap();
        assert_eq!(rig.net.attached_queues(), [true, false, false, false]);
        for h in 0..u32::from(Q_SIZE) {
            rig.q(0).push(&[D(rx_buf(0, h), RX_BUF_LEN, true)]);
        }
        send_flows(&name, 1000, 64);
        let mut seen = 0u16;
        let mut marked = 0;
        wait_for("64 flows on pair 0", || {
            while rig.q(0).used_count() != seen {
                let (head, len) = rig.q(0).used(seen % Q_SIZE);
                seen = seen.wrapping_add(1);
                if read_mem(&mem, rx_buf(0, head), len as usize).ends_with(MARK) {
                    marked += 1;
                }
                rig.q(0).push(&[D(rx_buf(0, head), RX_BUF_LEN, true)]);
            }
            marked >= 64
        });
        rig.net.reset();
        assert_eq!(rig.net.attached_queues(), [true; PAIRS]);

        // With MQ: still pair 0 alone until VQ_PAIRS_SET...
        rig.activate(features, &all_queues()).unwrap();
        let mut rx = Receiver::stock(&mut rig);
        send_flows(&name, 2000, 32);
        rx.until(&mut rig, 32);
        assert_eq!(rx.marked, [32, 0, 0, 0]);
        // ...then the flows spread over all four (64 flows: each pair
        // gets some but with odds of about 1 in 10^8).
        assert_eq!(set_pairs(&mut rig, 8, 4), 0);
        assert_eq!(rig.net.attached_queues(), [true; PAIRS]);
        send_flows(&name, 3000, 64);
        rx.until(&mut rig, 96);
        assert_eq!(rx.marked.iter().sum::<usize>(), 96);
        assert!(rx.marked.iter().all(|m| *m > 0), "{:?}", rx.marked);
        // Back to one pair: everything on pair 0 again.
        assert_eq!(set_pairs(&mut rig, 8, 1), 0);
        let before = rx.marked;
        send_flows(&name, 4000, 32);
        rx.until(&mut rig, 128);
        assert_eq!(rx.marked[0], before[0] + 32, "{:?}", rx.marked);
        assert_eq!(rx.marked[1..], before[1..]);
    })
    .expect("network namespace (tests need root)");
}
