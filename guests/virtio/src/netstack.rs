//! The `net.*` actions: smoltcp over virtio-drivers' `VirtIONetRaw`, polled
//! and bounded by the TSC. DHCP (or a static address), a DNS query, a TCP
//! exchange, and the same exchange again from a spoofed MAC/IP, for the
//! host's network tests. Lines and syntax are in guests/README.md.

use crate::cmdline::{Config, Host, Tcp};
use crate::net::{IpFmt, MacFmt, Net, BUF_SIZE, RX_SLOTS};
use crate::say;
use crate::time::{tsc_hz, wait_until, Deadline};
use crate::watch::{Watched, REQUEST_TIMEOUT_MS};
use alloc::boxed::Box;
use alloc::vec;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, dns, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    DnsQueryType, EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr,
};

/// Frames handled per poll round, so a flood cannot keep the guest from
/// checking its deadline.
const INGRESS_PER_ROUND: usize = 64;
const TCP_BUFFER: usize = 64 * 1024;
const ETHERNET_MTU: usize = 1514;

/// smoltcp's view of the card: one frame copied out at a time, one
/// transmit in flight, each awaited for at most 5 s.
struct Card {
    dev: Net,
    rx: &'static mut [[u8; BUF_SIZE]; RX_SLOTS],
    tokens: [Option<u16>; RX_SLOTS],
    frame: [u8; BUF_SIZE],
    tx: [u8; BUF_SIZE],
    /// The first device error, reported by the action loop.
    error: Option<&'static str>,
}

impl Card {
    fn post(&mut self, slot: usize) -> Result<(), &'static str> {
        // SAFETY: the buffer is only read again after the device returns it.
        let token = unsafe { self.dev.receive_begin(&mut self.rx[slot]) }
            .map_err(|_| "cannot post a receive buffer")?;
        self.tokens[slot] = Some(token);
        Ok(())
    }

    /// The next frame's length, copied into `frame`.
    fn take(&mut self) -> Result<Option<usize>, &'static str> {
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
        let (header, len) = unsafe { self.dev.receive_complete(token, &mut self.rx[slot]) }
            .map_err(|_| "rx completion")?;
        let len = len.min(BUF_SIZE - header);
        self.frame[..len].copy_from_slice(&self.rx[slot][header..header + len]);
        self.post(slot)?;
        Ok(Some(len))
    }
}

struct Rx<'a>(&'a [u8]);

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

struct Tx<'a> {
    dev: &'a mut Net,
    buf: &'a mut [u8; BUF_SIZE],
    error: &'a mut Option<&'static str>,
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let Ok(header) = self.dev.fill_buffer_header(self.buf) else {
            // smoltcp needs its closure run; the frame is just not sent.
            self.error.get_or_insert("tx header");
            return f(&mut self.buf[..len.min(BUF_SIZE)]);
        };
        let len = len.min(BUF_SIZE - header);
        let result = f(&mut self.buf[header..header + len]);
        if let Err(e) = send(self.dev, &self.buf[..header + len]) {
            self.error.get_or_insert(e);
        }
        result
    }
}

fn send(dev: &mut Net, frame: &[u8]) -> Result<(), &'static str> {
    // SAFETY: the buffer is not touched until transmit_complete; on a
    // timeout the guest gives up on the device with it still in flight.
    let token = unsafe { dev.transmit_begin(frame) }.map_err(|_| "tx queue full")?;
    if !wait_until(REQUEST_TIMEOUT_MS, || dev.poll_transmit() == Some(token)) {
        return Err("transmit not completed within 5 s");
    }
    // SAFETY: the same buffer transmit_begin was given.
    unsafe { dev.transmit_complete(token, frame) }.map_err(|_| "tx completion")?;
    Ok(())
}

impl phy::Device for Card {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        if self.error.is_some() {
            return None;
        }
        let len = match self.take() {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(e) => {
                self.error = Some(e);
                return None;
            }
        };
        let tx = Tx {
            dev: &mut self.dev,
            buf: &mut self.tx,
            error: &mut self.error,
        };
        Some((Rx(&self.frame[..len]), tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        if self.error.is_some() {
            return None;
        }
        Some(Tx {
            dev: &mut self.dev,
            buf: &mut self.tx,
            error: &mut self.error,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = ETHERNET_MTU;
        caps.max_burst_size = Some(1);
        caps
    }
}

fn now() -> Instant {
    // SAFETY: rdtsc has no side effects and is allowed at CPL 3.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let micros = u128::from(tsc) * 1_000_000 / u128::from(tsc_hz());
    Instant::from_micros(micros as i64)
}

struct Stack {
    card: Card,
    iface: Interface,
    sockets: SocketSet<'static>,
    dns_server: Option<Ipv4Address>,
}

impl Stack {
    /// Polls until `check` gives a value or `ms` pass (None).
    fn until<T>(
        &mut self,
        ms: u64,
        mut check: impl FnMut(&mut Self) -> Option<T>,
    ) -> Result<Option<T>, &'static str> {
        let deadline = Deadline::after_ms(ms);
        loop {
            let t = now();
            for _ in 0..INGRESS_PER_ROUND {
                if self
                    .iface
                    .poll_ingress_single(t, &mut self.card, &mut self.sockets)
                    == smoltcp::iface::PollIngressSingleResult::None
                {
                    break;
                }
            }
            self.iface.poll_egress(t, &mut self.card, &mut self.sockets);
            if let Some(e) = self.card.error {
                return Err(e);
            }
            if let Some(v) = check(self) {
                return Ok(Some(v));
            }
            if deadline.expired() {
                return Ok(None);
            }
            core::hint::spin_loop();
        }
    }

    fn configure(&mut self, address: Ipv4Cidr, router: Option<Ipv4Address>) {
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::Ipv4(address));
        });
        self.iface.routes_mut().remove_default_ipv4_route();
        if let Some(router) = router {
            let _ = self.iface.routes_mut().add_default_ipv4_route(router);
        }
    }
}

pub fn run(transport: Watched, config: &Config) {
    let dev = match Net::new(transport) {
        Ok(dev) => dev,
        Err(e) => return say!("virtio-net: FAIL init: {}", e),
    };
    let mac = config.mac.unwrap_or(dev.mac_address());
    say!(
        "virtio-net: mac={} device-mac={} stack=smoltcp",
        MacFmt(mac),
        MacFmt(dev.mac_address())
    );
    // Leaked with the device at the end, since it may still hold them.
    // SAFETY: all-zero bytes are a valid array of byte arrays.
    let rx = Box::leak(unsafe { Box::<[[u8; BUF_SIZE]; RX_SLOTS]>::new_zeroed().assume_init() });
    let mut card = Card {
        dev,
        rx,
        tokens: [None; RX_SLOTS],
        frame: [0; BUF_SIZE],
        tx: [0; BUF_SIZE],
        error: None,
    };
    for slot in 0..RX_SLOTS {
        if let Err(e) = card.post(slot) {
            return say!("virtio-net: FAIL {}", e);
        }
    }
    let mut iface_config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    // SAFETY: rdtsc has no side effects and is allowed at CPL 3.
    iface_config.random_seed = unsafe { core::arch::x86_64::_rdtsc() };
    let iface = Interface::new(iface_config, &mut card, now());
    let storage: &'static mut [SocketStorage<'static>] =
        Box::leak(Box::new([SocketStorage::EMPTY; 4]));
    let mut stack = Stack {
        card,
        iface,
        sockets: SocketSet::new(storage),
        dns_server: None,
    };
    if let Err(e) = actions(&mut stack, config) {
        say!("virtio-net: FAIL {}", e);
    }
    // Dropping would reset the device through the crate's unbounded wait.
    core::mem::forget(stack);
}

/// Runs the actions in order; a failed one prints its line and ends the
/// run (Ok), a device error ends it with Err.
fn actions(stack: &mut Stack, config: &Config) -> Result<(), &'static str> {
    let s = &config.stack;
    let ms = s.timeout_ms;
    if let Some(fixed) = s.fixed {
        let gw = fixed.gw.map(Ipv4Address::from);
        stack.configure(Ipv4Cidr::new(fixed.ip.into(), fixed.prefix), gw);
        stack.dns_server = fixed.dns.map(Ipv4Address::from);
        say!(
            "virtio: static ip={}/{} router={} dns={}",
            IpFmt(fixed.ip),
            fixed.prefix,
            OptIp(fixed.gw),
            OptIp(fixed.dns)
        );
    } else if s.dhcp && !dhcp(stack, ms)? {
        return Ok(());
    }
    if let Some(name) = s.resolve {
        if resolve(stack, name, ms)?.is_none() {
            return Ok(());
        }
    }
    if s.tcp.is_none() && (s.spoof_mac.is_some() || s.spoof_ip.is_some()) {
        say!("virtio: spoof FAIL needs net.tcp");
        return Ok(());
    }
    if let Some(tcp) = s.tcp {
        if !client(stack, config, &tcp)? {
            return Ok(());
        }
    }
    if let Some(port) = s.serve {
        serve(stack, port, ms)?;
    }
    Ok(())
}

/// The TCP exchange, then the spoofed one if asked for; false if a name
/// could not be resolved.
fn client(stack: &mut Stack, config: &Config, tcp: &Tcp) -> Result<bool, &'static str> {
    let s = &config.stack;
    let ms = s.timeout_ms;
    let peer = match tcp.host {
        Host::Ip(ip) => ip,
        Host::Name(name) => match resolve(stack, name, ms)? {
            Some(ip) => ip,
            None => return Ok(false),
        },
    };
    exchange(stack, tcp, peer, ms)?;
    if s.spoof_mac.is_some() || s.spoof_ip.is_some() {
        if let Some(m) = s.spoof_mac {
            stack
                .iface
                .set_hardware_addr(HardwareAddress::Ethernet(EthernetAddress(m)));
        }
        if let Some(ip) = s.spoof_ip {
            let prefix = stack
                .iface
                .ip_addrs()
                .first()
                .map_or(24, |c| c.prefix_len());
            stack.iface.update_ip_addrs(|addrs| {
                addrs.clear();
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(ip.into(), prefix)));
            });
        }
        let HardwareAddress::Ethernet(EthernetAddress(m)) = stack.iface.hardware_addr();
        say!(
            "virtio: spoof mac={} ip={}",
            MacFmt(m),
            OptIp(stack.iface.ipv4_addr().map(|a| a.octets()))
        );
        exchange(stack, tcp, peer, ms)?;
    }
    Ok(true)
}

/// Accepts one connection on `port` within `ms`, echoes everything it
/// receives until the peer closes (within another `ms`), then closes.
fn serve(stack: &mut Stack, port: u16, ms: u64) -> Result<(), &'static str> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    if let Err(e) = socket.listen(port) {
        say!("virtio: serve FAIL listen {}: {:?}", port, e);
        return Ok(());
    }
    let handle = stack.sockets.add(socket);
    say!("virtio: serve listening port={}", port);
    let peer = stack.until(ms, |st| {
        let socket = st.sockets.get_mut::<tcp::Socket>(handle);
        (socket.state() == tcp::State::Established)
            .then(|| socket.remote_endpoint())
            .flatten()
    })?;
    let Some(peer) = peer else {
        say!("virtio: serve FAIL no connection within {} ms", ms);
        return Ok(());
    };
    let (mut received, mut hash) = (0u64, FNV_START);
    let begun = now();
    let mut chunk = [0u8; 1024];
    // Bytes received but not yet taken back by the send buffer.
    let mut pending = 0usize;
    let done = stack.until(ms, |st| {
        let socket = st.sockets.get_mut::<tcp::Socket>(handle);
        loop {
            if pending > 0 {
                match socket.send_slice(&chunk[..pending]) {
                    Ok(n) if n == pending => pending = 0,
                    Ok(n) => {
                        chunk.copy_within(n..pending, 0);
                        pending -= n;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !socket.can_recv() {
                break;
            }
            match socket.recv_slice(&mut chunk) {
                Ok(n) if n > 0 => {
                    hash = fnv1a(hash, &chunk[..n]);
                    received += n as u64;
                    pending = n;
                }
                _ => break,
            }
        }
        if pending == 0 && !socket.may_recv() && socket.state() == tcp::State::CloseWait {
            socket.close();
        }
        matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait).then_some(())
    })?;
    let us = (now() - begun).total_micros();
    let state = stack.sockets.get_mut::<tcp::Socket>(handle).state();
    match done {
        Some(()) => say!(
            "virtio: serve port={} from={}:{} received={} fnv1a32={:08x} us={}",
            port,
            peer.addr,
            peer.port,
            received,
            hash,
            us
        ),
        None => say!(
            "virtio: serve FAIL port={} from={}:{} not closed within {} ms (state {}, received={})",
            port,
            peer.addr,
            peer.port,
            ms,
            state,
            received
        ),
    }
    stack.sockets.get_mut::<tcp::Socket>(handle).abort();
    stack.until(10, |_| None::<()>)?;
    stack.sockets.remove(handle);
    Ok(())
}

/// An address or `-`.
struct OptIp(Option<[u8; 4]>);

impl core::fmt::Display for OptIp {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            Some(ip) => IpFmt(ip).fmt(f),
            None => f.write_str("-"),
        }
    }
}

fn dhcp(stack: &mut Stack, ms: u64) -> Result<bool, &'static str> {
    let mut socket = dhcpv4::Socket::new();
    // smoltcp waits 10 s before repeating a DISCOVER (5 s for a REQUEST):
    // one lost frame would use up a whole default bound.
    let mut retry = dhcpv4::RetryConfig::default();
    retry.discover_timeout = smoltcp::time::Duration::from_secs(1);
    retry.initial_request_timeout = smoltcp::time::Duration::from_secs(1);
    socket.set_retry_config(retry);
    let handle = stack.sockets.add(socket);
    let lease = stack.until(ms, |st| {
        match st.sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
            Some(dhcpv4::Event::Configured(c)) => {
                Some((c.address, c.router, c.dns_servers.first().copied()))
            }
            _ => None,
        }
    })?;
    let Some((address, router, dns)) = lease else {
        say!("virtio: dhcp FAIL no lease within {} ms", ms);
        return Ok(false);
    };
    stack.configure(address, router);
    stack.dns_server = dns;
    say!(
        "virtio: dhcp ip={}/{} router={} dns={}",
        IpFmt(address.address().octets()),
        address.prefix_len(),
        OptIp(router.map(|r| r.octets())),
        OptIp(dns.map(|d| d.octets()))
    );
    Ok(true)
}

fn resolve(stack: &mut Stack, name: &[u8], ms: u64) -> Result<Option<[u8; 4]>, &'static str> {
    let shown = crate::cmdline::Text(name);
    let Some(server) = stack.dns_server else {
        say!("virtio: resolve FAIL {}: no DNS server", shown);
        return Ok(None);
    };
    // Checked by the command-line parser: ASCII letters, digits, '-', '.'.
    let text = core::str::from_utf8(name).map_err(|_| "name is not text")?;
    let handle: SocketHandle = stack
        .sockets
        .add(dns::Socket::new(&[IpAddress::Ipv4(server)], vec![None]));
    let query = {
        let socket = stack.sockets.get_mut::<dns::Socket>(handle);
        socket.start_query(stack.iface.context(), text, DnsQueryType::A)
    };
    let query = match query {
        Ok(q) => q,
        Err(e) => {
            say!("virtio: resolve FAIL {}: {:?}", shown, e);
            stack.sockets.remove(handle);
            return Ok(None);
        }
    };
    let result = stack.until(ms, |st| {
        match st
            .sockets
            .get_mut::<dns::Socket>(handle)
            .get_query_result(query)
        {
            Err(dns::GetQueryResultError::Pending) => None,
            Err(dns::GetQueryResultError::Failed) => Some(None),
            Ok(addrs) => Some(addrs.iter().find_map(|a| match a {
                IpAddress::Ipv4(v4) => Some(v4.octets()),
                #[allow(unreachable_patterns)]
                _ => None,
            })),
        }
    })?;
    let out = match result {
        Some(Some(ip)) => {
            say!("virtio: resolve {}={}", shown, IpFmt(ip));
            Some(ip)
        }
        Some(None) => {
            say!("virtio: resolve FAIL {}: no A record", shown);
            None
        }
        None => {
            stack
                .sockets
                .get_mut::<dns::Socket>(handle)
                .cancel_query(query);
            say!("virtio: resolve FAIL {}: no answer within {} ms", shown, ms);
            None
        }
    };
    stack.sockets.remove(handle);
    Ok(out)
}

/// Byte i of what the guest sends: i mod 251 (a prime, so the pattern does
/// not line up with any power-of-two buffer size).
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

/// FNV-1a 32-bit, as for the blk sectors.
fn fnv1a(mut hash: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    hash
}

const FNV_START: u32 = 0x811c_9dc5;

/// Connects, sends `bytes` of the pattern, closes its side and reads until
/// the peer closes.
fn exchange(stack: &mut Stack, job: &Tcp, peer: [u8; 4], ms: u64) -> Result<(), &'static str> {
    let socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    let handle = stack.sockets.add(socket);
    let begun = now();
    let local_port = 49152 + (now().total_micros() as u16 % 16000);
    let remote = (IpAddress::Ipv4(peer.into()), job.port);
    let connected = stack.sockets.get_mut::<tcp::Socket>(handle).connect(
        stack.iface.context(),
        remote,
        local_port,
    );
    if let Err(e) = connected {
        say!(
            "virtio: tcp FAIL connect {}:{}: {:?}",
            IpFmt(peer),
            job.port,
            e
        );
        stack.sockets.remove(handle);
        return Ok(());
    }
    let (mut sent, mut received) = (0u64, 0u64);
    let (mut sent_hash, mut received_hash) = (FNV_START, FNV_START);
    let mut established = false;
    let mut chunk = [0u8; 1024];
    let finished = stack.until(ms, |st| {
        let socket = st.sockets.get_mut::<tcp::Socket>(handle);
        if socket.may_send() {
            established = true;
            while sent < job.bytes && socket.can_send() {
                let n = ((job.bytes - sent) as usize).min(chunk.len());
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(sent + i as u64);
                }
                let Ok(taken) = socket.send_slice(&chunk[..n]) else {
                    break;
                };
                sent_hash = fnv1a(sent_hash, &chunk[..taken]);
                sent += taken as u64;
                if taken < n {
                    break;
                }
            }
            if sent == job.bytes {
                socket.close();
            }
        }
        while socket.can_recv() {
            match socket.recv_slice(&mut chunk) {
                Ok(n) if n > 0 => {
                    established = true;
                    received_hash = fnv1a(received_hash, &chunk[..n]);
                    received += n as u64;
                }
                _ => break,
            }
        }
        match socket.state() {
            tcp::State::Closed if !established => Some(false),
            tcp::State::Closed | tcp::State::TimeWait => Some(true),
            tcp::State::CloseWait if sent == job.bytes => {
                socket.close();
                None
            }
            _ => None,
        }
    })?;
    let us = (now() - begun).total_micros();
    let state = stack.sockets.get_mut::<tcp::Socket>(handle).state();
    match finished {
        Some(true) => say!(
            "virtio: tcp {}:{} sent={} received={} sent-fnv1a32={:08x} received-fnv1a32={:08x} us={}",
            IpFmt(peer),
            job.port,
            sent,
            received,
            sent_hash,
            received_hash,
            us
        ),
        Some(false) => say!(
            "virtio: tcp FAIL {}:{} refused or reset before connecting",
            IpFmt(peer),
            job.port
        ),
        None => say!(
            "virtio: tcp FAIL {}:{} not finished within {} ms (state {}, sent={} received={})",
            IpFmt(peer),
            job.port,
            ms,
            state,
            sent,
            received
        ),
    }
    stack.sockets.get_mut::<tcp::Socket>(handle).abort();
    // Let the reset (if any) go out before the socket is dropped.
    stack.until(10, |_| None::<()>)?;
    stack.sockets.remove(handle);
    Ok(())
}
