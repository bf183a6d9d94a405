//! virtio-net through virtio-drivers' `VirtIONetRaw`, polled: resolve the
//! peer with ARP, ping it, and meanwhile answer ARP and ping for our own
//! address so the host can reach the guest too.

use crate::cmdline::Config;
use crate::hal::GuestHal;
use crate::packet::{self, Arp, Echo, Frame, Ip, Mac};
use crate::say;
use crate::time::{wait_until, Deadline};
use crate::watch::{request_timeout_ms, Watched};
use alloc::boxed::Box;
use core::fmt;
use virtio_drivers::device::net::VirtIONetRaw;

pub(crate) const QUEUE_SIZE: usize = 16;
pub(crate) const RX_SLOTS: usize = 8;
/// Room for the virtio-net header and a full Ethernet frame.
pub(crate) const BUF_SIZE: usize = 2048;
const PING_ID: u16 = 0x5649;
const PING_PAYLOAD: usize = 56;
/// The virtio-net header virtio-drivers puts before each frame.
const NET_HDR: usize = 12;

pub(crate) type Net = VirtIONetRaw<GuestHal, Watched, QUEUE_SIZE>;

struct Buffers {
    rx: [[u8; BUF_SIZE]; RX_SLOTS],
    tx: [u8; BUF_SIZE],
}

pub struct MacFmt(pub Mac);

impl fmt::Display for MacFmt {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

pub struct IpFmt(pub Ip);

impl fmt::Display for IpFmt {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let a = self.0;
        write!(f, "{}.{}.{}.{}", a[0], a[1], a[2], a[3])
    }
}

struct Station {
    dev: Net,
    buffers: &'static mut Buffers,
    /// The receive token of each rx buffer while the device holds it.
    tokens: [Option<u16>; RX_SLOTS],
    mac: Mac,
    ip: Ip,
    served_arp: u64,
    served_icmp: u64,
    corrupt: u64,
}

impl Station {
    fn post(&mut self, slot: usize) -> Result<(), &'static str> {
        // SAFETY: the buffer is only touched again after the device returns
        // it (receive_complete with the same token).
        let token = unsafe { self.dev.receive_begin(&mut self.buffers.rx[slot]) }
            .map_err(|_| "cannot post a receive buffer")?;
        self.tokens[slot] = Some(token);
        Ok(())
    }

    /// Sends the frame `build` writes (it returns the frame's length) and
    /// waits until the device has taken it.
    fn send(&mut self, build: impl FnOnce(&mut [u8]) -> usize) -> Result<(), &'static str> {
        let tx = &mut self.buffers.tx;
        let header = self.dev.fill_buffer_header(tx).map_err(|_| "tx header")?;
        let len = header + build(&mut tx[header..]);
        // SAFETY: tx is not touched until transmit_complete below; on a
        // timeout the station is abandoned with it still in flight.
        let token = unsafe { self.dev.transmit_begin(&tx[..len]) }.map_err(|_| "tx queue full")?;
        let dev = &mut self.dev;
        if !wait_until(request_timeout_ms(), || dev.poll_transmit() == Some(token)) {
            return Err("transmit not completed within 5 s");
        }
        // SAFETY: the same buffer that transmit_begin was given.
        unsafe { self.dev.transmit_complete(token, &self.buffers.tx[..len]) }
            .map_err(|_| "tx completion")?;
        Ok(())
    }

    /// Handles received frames for up to `ms` milliseconds, answering those
    /// addressed to us, until `want` accepts one; true if it did.
    fn wait_for(
        &mut self,
        ms: u64,
        mut want: impl FnMut(&Frame) -> bool,
    ) -> Result<bool, &'static str> {
        let deadline = Deadline::after_ms(ms);
        let mut frame = [0u8; BUF_SIZE];
        loop {
            if let Some(len) = self.receive(&mut frame)? {
                let parsed = packet::parse(&frame[..len]);
                self.answer(&parsed)?;
                if want(&parsed) {
                    return Ok(true);
                }
                continue;
            }
            if deadline.expired() {
                return Ok(false);
            }
            core::hint::spin_loop();
        }
    }

    /// Copies the next received frame into `frame` and gives its buffer
    /// back to the device.
    fn receive(&mut self, frame: &mut [u8]) -> Result<Option<usize>, &'static str> {
        let Some(token) = self.dev.poll_receive() else {
            return Ok(None);
        };
        let slot = self
            .tokens
            .iter()
            .position(|&t| t == Some(token))
            .ok_or("device returned an unknown receive buffer")?;
        self.tokens[slot] = None;
        // SAFETY: the buffer and token that receive_begin was given.
        let (header, len) = unsafe { self.dev.receive_complete(token, &mut self.buffers.rx[slot]) }
            .map_err(|_| "rx completion")?;
        let len = len.min(frame.len());
        frame[..len].copy_from_slice(&self.buffers.rx[slot][header..header + len]);
        self.post(slot)?;
        Ok(Some(len))
    }

    fn answer(&mut self, frame: &Frame) -> Result<(), &'static str> {
        match frame {
            Frame::Arp(arp) if arp.oper == packet::ARP_REQUEST && arp.target_ip == self.ip => {
                let reply = Arp {
                    oper: packet::ARP_REPLY,
                    sender_mac: self.mac,
                    sender_ip: self.ip,
                    target_mac: arp.sender_mac,
                    target_ip: arp.sender_ip,
                };
                self.send(|buf| packet::build_arp(buf, arp.sender_mac, &reply))?;
                self.served_arp += 1;
            }
            Frame::Echo(echo)
                if echo.kind == packet::ICMP_ECHO_REQUEST && echo.dst_ip == self.ip =>
            {
                let reply = Echo {
                    src_mac: self.mac,
                    dst_mac: echo.src_mac,
                    src_ip: self.ip,
                    dst_ip: echo.src_ip,
                    kind: packet::ICMP_ECHO_REPLY,
                    id: echo.id,
                    seq: echo.seq,
                    payload: echo.payload,
                };
                self.send(|buf| packet::build_echo(buf, &reply))?;
                self.served_icmp += 1;
            }
            Frame::Corrupt => self.corrupt += 1,
            _ => {}
        }
        Ok(())
    }
}

pub fn run(transport: Watched, config: &Config) {
    let dev = match Net::new(transport) {
        Ok(dev) => dev,
        Err(e) => return say!("virtio-net: FAIL init: {}", e),
    };
    let mac = config.mac.unwrap_or(dev.mac_address());
    say!(
        "virtio-net: mac={} device-mac={} ip={} peer={}",
        MacFmt(mac),
        MacFmt(dev.mac_address()),
        IpFmt(config.ip),
        IpFmt(config.peer)
    );
    let mut station = Station {
        dev,
        // Leaked with the device at the end, since it may still hold them.
        // SAFETY: all-zero bytes are a valid `Buffers`.
        buffers: Box::leak(unsafe { Box::<Buffers>::new_zeroed().assume_init() }),
        tokens: [None; RX_SLOTS],
        mac,
        ip: config.ip,
        served_arp: 0,
        served_icmp: 0,
        corrupt: 0,
    };
    if let Err(reason) = exercise(&mut station, config) {
        say!("virtio-net: FAIL {}", reason);
    }
    // Dropping would reset the device through the crate's unbounded wait.
    core::mem::forget(station);
}

fn exercise(station: &mut Station, config: &Config) -> Result<(), &'static str> {
    for slot in 0..RX_SLOTS {
        station.post(slot)?;
    }
    match ping_peer(station, config)? {
        Some((peer_mac, got)) if got == config.pings => {
            say!(
                "virtio-net: ok arp {} icmp {}/{}",
                MacFmt(peer_mac),
                got,
                config.pings
            );
            if config.bench_net_frames > 0 {
                bench_tx(station, peer_mac, config)?;
            }
        }
        Some((peer_mac, got)) => {
            say!(
                "virtio-net: FAIL icmp {}/{} arp {}",
                got,
                config.pings,
                MacFmt(peer_mac)
            )
        }
        None => say!("virtio-net: FAIL arp no reply from {}", IpFmt(config.peer)),
    }
    if config.serve_ms > 0 {
        serve(station, config)?;
    }
    Ok(())
}

/// The peer's MAC and how many of our pings it answered; None if it never
/// answered ARP.
fn ping_peer(station: &mut Station, config: &Config) -> Result<Option<(Mac, u32)>, &'static str> {
    let request = Arp {
        oper: packet::ARP_REQUEST,
        sender_mac: station.mac,
        sender_ip: station.ip,
        target_mac: [0; 6],
        target_ip: config.peer,
    };
    let mut peer_mac = None;
    for _ in 0..3 {
        station.send(|buf| packet::build_arp(buf, packet::BROADCAST, &request))?;
        let found = station.wait_for(config.timeout_ms, |frame| match frame {
            Frame::Arp(arp) if arp.oper == packet::ARP_REPLY && arp.sender_ip == config.peer => {
                peer_mac = Some(arp.sender_mac);
                true
            }
            _ => false,
        })?;
        if found {
            break;
        }
    }
    let Some(peer_mac) = peer_mac else {
        return Ok(None);
    };

    let mut payload = [0u8; PING_PAYLOAD];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut got = 0;
    for seq in 1..=config.pings {
        let seq = seq as u16;
        let request = Echo {
            src_mac: station.mac,
            dst_mac: peer_mac,
            src_ip: station.ip,
            dst_ip: config.peer,
            kind: packet::ICMP_ECHO_REQUEST,
            id: PING_ID,
            seq,
            payload: &payload,
        };
        station.send(|buf| packet::build_echo(buf, &request))?;
        let answered = station.wait_for(config.timeout_ms, |frame| {
            matches!(frame, Frame::Echo(echo)
                if echo.kind == packet::ICMP_ECHO_REPLY
                    && echo.src_ip == config.peer
                    && echo.dst_ip == config.ip
                    && echo.id == PING_ID
                    && echo.seq == seq
                    && echo.payload == payload)
        })?;
        if answered {
            got += 1;
        }
    }
    Ok(Some((peer_mac, got)))
}

/// Sends `bench-net-frames` UDP frames to the peer as fast as the device
/// takes them, with every transmit slot in flight.
fn bench_tx(station: &mut Station, peer_mac: Mac, config: &Config) -> Result<(), &'static str> {
    const SLOTS: usize = QUEUE_SIZE;
    // Leaked: the device may hold them when the guest powers off.
    // SAFETY: all-zero bytes are a valid array of byte arrays.
    let bufs: &'static mut [[u8; BUF_SIZE]; SLOTS] =
        Box::leak(unsafe { Box::<[[u8; BUF_SIZE]; SLOTS]>::new_zeroed().assume_init() });
    let mut lens = [0usize; SLOTS];
    for (buf, len) in bufs.iter_mut().zip(lens.iter_mut()) {
        let header = station
            .dev
            .fill_buffer_header(buf)
            .map_err(|_| "tx header")?;
        *len = header
            + crate::bench::build_udp(
                &mut buf[header..],
                station.mac,
                peer_mac,
                station.ip,
                config.peer,
                config.bench_net_size as usize,
            );
    }
    let mut slot_token: [Option<u16>; SLOTS] = [None; SLOTS];
    let (mut sent, mut done, mut bytes) = (0u64, 0u64, 0u64);
    let total = config.bench_net_frames;
    let deadline = Deadline::after_ms(60_000);
    let start = crate::bench::now();
    while done < total {
        if let Some(token) = station.dev.poll_transmit() {
            let slot = slot_token
                .iter()
                .position(|&t| t == Some(token))
                .ok_or("device completed an unknown transmit")?;
            slot_token[slot] = None;
            // SAFETY: the buffer transmit_begin was given with this token.
            unsafe {
                station
                    .dev
                    .transmit_complete(token, &bufs[slot][..lens[slot]])
            }
            .map_err(|_| "tx completion")?;
            done += 1;
            bytes += (lens[slot] - NET_HDR) as u64;
            continue;
        }
        if sent < total {
            if let Some(slot) = slot_token.iter().position(Option::is_none) {
                // SAFETY: the buffer is not touched until its completion.
                if let Ok(token) = unsafe { station.dev.transmit_begin(&bufs[slot][..lens[slot]]) }
                {
                    slot_token[slot] = Some(token);
                    sent += 1;
                    continue;
                }
            }
        }
        if deadline.expired() {
            return Err("net benchmark did not finish within 60 s");
        }
        core::hint::spin_loop();
    }
    crate::bench::net_result(done, bytes, crate::bench::now() - start);
    Ok(())
}

/// Keeps answering for `serve-ms`, or until `serve-icmp` pings were answered.
fn serve(station: &mut Station, config: &Config) -> Result<(), &'static str> {
    say!("virtio-net: serving ms={}", config.serve_ms);
    let deadline = Deadline::after_ms(config.serve_ms);
    while !deadline.expired() {
        if config.serve_icmp > 0 && station.served_icmp >= config.serve_icmp {
            break;
        }
        station.wait_for(10, |_| false)?;
    }
    say!(
        "virtio-net: served arp={} icmp={} corrupt={}",
        station.served_arp,
        station.served_icmp,
        station.corrupt
    );
    Ok(())
}
