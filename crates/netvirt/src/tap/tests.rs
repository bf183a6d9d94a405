use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::*;
use crate::netns::run_isolated;

fn isolated<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    run_isolated(f).expect("unshare(CLONE_NEWNET) (tests need root)")
}

fn exists(name: &str) -> bool {
    ifreq::flags(name).is_ok()
}

/// Read one frame from a non-blocking TAP descriptor, waiting up to 2 s.
fn read_frame(fd: BorrowedFd<'_>) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: reads at most buf.len() bytes into `buf`.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(usize::try_from(n).unwrap());
            return buf;
        }
        assert!(Instant::now() < deadline, "no frame within 2 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn created_tap_is_named_up_nonblocking_and_removed_on_close() {
    isolated(|| {
        let tap = Tap::open(None, 1).unwrap();
        assert!(tap.name().starts_with("vireo"), "{}", tap.name());
        assert_eq!(tap.num_queues(), 1);
        assert_ne!(tap.link_flags().unwrap() & libc::IFF_UP, 0);
        let fd = tap.queue(0).unwrap();
        // SAFETY: F_GETFL takes no argument.
        let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(fl & libc::O_NONBLOCK, 0);
        let mac = tap.mac().unwrap();
        assert_ne!(mac, [0; 6]);
        assert_eq!(tap.mtu().unwrap(), 1500);
        let name = tap.name().to_string();
        assert!(exists(&name));
        drop(tap);
        assert!(!exists(&name), "{name} outlived its descriptors");
    });
}

#[test]
fn multiqueue_tap_has_one_descriptor_per_queue() {
    isolated(|| {
        let tap = Tap::open(Some("vt-mq"), 4).unwrap();
        assert_eq!(tap.name(), "vt-mq");
        assert_eq!(tap.num_queues(), 4);
        let fds: Vec<_> = (0..4).map(|i| tap.queue(i).unwrap().as_raw_fd()).collect();
        let mut unique = fds.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 4);
        assert!(tap.queue(4).is_none());
        assert_eq!(tap.clone_queues().unwrap().len(), 4);
        // A pattern-named multi-queue TAP: every queue joins the one interface.
        let auto = Tap::open(None, 2).unwrap();
        assert!(auto.name().starts_with("vireo"));
    });
}

#[test]
fn bad_requests_give_clear_errors() {
    let long = Tap::open(Some("a-name-far-too-long"), 1).unwrap_err();
    assert!(long.to_string().contains("longer than 15"), "{long}");
    let slash = Tap::open(Some("a/b"), 1).unwrap_err();
    assert!(
        slash.to_string().starts_with("invalid TAP name 'a/b'"),
        "{slash}"
    );
    assert!(matches!(Tap::open(None, 0), Err(TapError::NoQueues)));
    isolated(|| {
        // A single-queue TAP can have only one reader.
        let _held = Tap::open(Some("vt-busy"), 1).unwrap();
        let busy = Tap::open(Some("vt-busy"), 1).unwrap_err();
        assert_eq!(
            busy.to_string(),
            "cannot attach to 'vt-busy': the TAP is in use (a single-queue TAP has one reader)"
        );
        // TUNSETIFF says only EINVAL for each of these; the error says why.
        let lo = Tap::open(Some("lo"), 1).unwrap_err().to_string();
        assert!(
            lo.starts_with("cannot attach to 'lo': it is not a TAP device"),
            "{lo}"
        );
        let single = Tap::open(Some("vt-busy"), 2).unwrap_err().to_string();
        assert!(
            single.contains("queues=2 needs a multi-queue TAP"),
            "{single}"
        );
        let _multi = Tap::open(Some("vt-multi"), 2).unwrap();
        let one = Tap::open(Some("vt-multi"), 1).unwrap_err().to_string();
        assert!(one.contains("created with `multi_queue`"), "{one}");
    });
}

#[test]
fn offloads_are_probed_and_set() {
    isolated(|| {
        let tap = Tap::open(None, 1).unwrap();
        let supported = tap.supported_offloads();
        assert!(supported.csum && supported.tso4 && supported.tso6);
        tap.set_offloads(supported).unwrap();
        tap.set_offloads(Offloads::default()).unwrap();
        assert_eq!(Offloads::ALL.tun_flags(), 0x1f);
    });
}

#[test]
fn kernel_traffic_arrives_with_a_vnet_header() {
    isolated(|| {
        let tap = Tap::open(None, 1).unwrap();
        tap.set_ipv4(Ipv4Addr::new(10, 9, 0, 1), 24).unwrap();
        let mac = tap.mac().unwrap();
        // Sending to a neighbour makes the kernel ARP for it through the TAP.
        let sock = UdpSocket::bind("10.9.0.1:0").unwrap();
        let _ = sock.send_to(b"hello", "10.9.0.2:9");
        let fd = tap.queue(0).unwrap();
        let frame = loop {
            let f = read_frame(fd);
            // Skip IPv6 router solicitations and the like.
            if f.len() >= VNET_HDR_LEN + 14 && f[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14] == [8, 6] {
                break f;
            }
        };
        let eth = &frame[VNET_HDR_LEN..];
        assert_eq!(&eth[0..6], &[0xff; 6], "ARP requests are broadcast");
        assert_eq!(&eth[6..12], &mac);
        // ARP target protocol address: the neighbour asked for.
        assert_eq!(&eth[38..42], &[10, 9, 0, 2]);
    });
}

/// Send `count` IPv4/UDP frames out of interface `name` through a packet
/// socket, each its own flow (source port `base + i`), so a multi-queue
/// TAP spreads them over its attached queues by flow hash.
fn send_flows(name: &str, base: u16, count: u16) {
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(u16::try_from(libc::ETH_P_IP).unwrap().to_be()),
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
    addr.sll_protocol = u16::try_from(libc::ETH_P_IP).unwrap().to_be();
    addr.sll_ifindex = i32::try_from(ifindex).unwrap();
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    for i in 0..count {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 8, 0]);
        // IPv4: 20-byte header, UDP, 10.9.0.1 -> 10.9.0.2 (checksum left 0).
        f.extend_from_slice(&[0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 9, 0, 1, 10, 9, 0, 2]);
        f.extend_from_slice(&(base + i).to_be_bytes());
        f.extend_from_slice(&[0, 9, 0, 16, 0, 0]);
        f.extend_from_slice(b"vireo-mq");
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
        assert_eq!(
            usize::try_from(n).ok(),
            Some(f.len()),
            "sendto: {}",
            io::Error::last_os_error()
        );
    }
}

/// Read every frame waiting on each queue until `expected` test frames
/// (see [`send_flows`]) have arrived in all or 2 s pass: per queue, the
/// test frames read, or the read error for a queue that gave one.
fn drain_flows(tap: &Tap, expected: usize) -> Vec<Result<usize, io::Error>> {
    let mut counts: Vec<Result<usize, io::Error>> = (0..tap.num_queues()).map(|_| Ok(0)).collect();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 65536];
    loop {
        for (i, count) in counts.iter_mut().enumerate() {
            let Ok(seen) = count else { continue };
            let fd = tap.queue(i).unwrap();
            loop {
                // SAFETY: reads at most buf.len() bytes into `buf`.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                let Ok(n) = usize::try_from(n) else {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::WouldBlock {
                        *count = Err(e);
                    }
                    break;
                };
                if buf[..n].ends_with(b"vireo-mq") {
                    *seen += 1;
                }
            }
        }
        let total: usize = counts.iter().filter_map(|c| c.as_ref().ok()).sum();
        if total >= expected || Instant::now() >= deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `fd` polls readable or in error right now.
fn polls_ready(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls the one pollfd in `p`, live for the call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLIN | libc::POLLERR) != 0
}

#[test]
fn frames_reach_only_attached_queues() {
    isolated(|| {
        let tap = Tap::open(Some("vt-attach"), 4).unwrap();
        assert!((0..4).all(|i| tap.queue_enabled(i)));
        for i in 1..4 {
            tap.set_queue_enabled(i, false).unwrap();
        }
        // Asking again for the state a queue is in is not an error.
        tap.set_queue_enabled(1, false).unwrap();
        tap.set_queue_enabled(0, true).unwrap();
        assert_eq!(
            (0..5).map(|i| tap.queue_enabled(i)).collect::<Vec<_>>(),
            [true, false, false, false, false]
        );

        send_flows(tap.name(), 1000, 64);
        let counts = drain_flows(&tap, 64);
        let counts: Vec<usize> = counts.into_iter().map(Result::unwrap).collect();
        assert_eq!(counts, [64, 0, 0, 0]);
        // A detached queue is simply quiet: nothing to read, no error.
        assert!(!polls_ready(tap.queue(3).unwrap()));
        // It can still be written to (a frame the reader sends reaches
        // the host).
        let mut frame = vec![0u8; VNET_HDR_LEN];
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        frame.extend_from_slice(&[0; 46]);
        let fd = tap.queue(3).unwrap();
        // SAFETY: writes `frame`, a live slice.
        let n = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        assert_eq!(usize::try_from(n).ok(), Some(frame.len()));

        // Attached again, the queues share the flows (64 flows over 4
        // queues: each gets some but with odds of about 1 in 10^8).
        for i in 1..4 {
            tap.set_queue_enabled(i, true).unwrap();
        }
        assert!((0..4).all(|i| tap.queue_enabled(i)));
        send_flows(tap.name(), 2000, 64);
        let counts = drain_flows(&tap, 64);
        let counts: Vec<usize> = counts.into_iter().map(Result::unwrap).collect();
        assert_eq!(counts.iter().sum::<usize>(), 64, "{counts:?}");
        assert!(counts.iter().all(|c| *c > 0), "{counts:?}");

        let err = tap.set_queue_enabled(4, true).unwrap_err();
        assert!(
            matches!(err, TapError::NoSuchQueue { index: 4, .. }),
            "{err}"
        );
        assert_eq!(err.to_string(), "TAP 'vt-attach' has 4 queues, no queue 4");
    });
}

#[test]
fn a_single_queue_tap_ignores_attachment_changes() {
    isolated(|| {
        let tap = Tap::open(None, 1).unwrap();
        tap.set_queue_enabled(0, false).unwrap();
        tap.set_queue_enabled(0, true).unwrap();
        assert!(tap.queue_enabled(0));
        assert!(tap.set_queue_enabled(1, false).is_err());
    });
}
