use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
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
        assert!(
            busy.to_string()
                .starts_with("cannot open TAP 'vt-busy': Device or resource busy"),
            "{busy}"
        );
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
