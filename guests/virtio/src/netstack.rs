//! The `net.*` actions: smoltcp over virtio-drivers' `VirtIONetRaw`, polled
//! and bounded by the TSC. DHCP (or a static address), a DNS query, a TCP
//! exchange, and the same exchange again from a spoofed MAC/IP, for the
//! host's network tests. Lines and syntax are in guests/README.md.

use crate::cmdline::{Config, Host, Tcp};
use crate::net::{IpFmt, MacFmt};
use crate::netcard::{Card, StackNet};
use crate::netdev::SLOTS;
use crate::say;
use crate::stream::{Pattern, StreamHash};
use crate::time::{tsc_hz, Deadline};
use crate::watch::{Doorbells, Watched};
use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
    SocketStorage,
};
use smoltcp::socket::{dhcpv4, dns, tcp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    DnsQueryType, EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr,
};

/// Frames handled per poll round, so a flood cannot keep the guest from
/// checking its deadline.
const INGRESS_PER_ROUND: usize = 64;
/// Each socket's receive and send buffer: above 64 KiB, so smoltcp offers
/// window scaling and a whole window can be in flight.
const TCP_BUFFER: usize = 1024 * 1024;
/// What the application loops move per call.
const CHUNK: usize = 64 * 1024;

fn now() -> Instant {
    // SAFETY: rdtsc has no side effects and is allowed at CPL 3.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let micros = u128::from(tsc) * 1_000_000 / u128::from(tsc_hz());
    Instant::from_micros(micros as i64)
}

struct Stack {
    card: Card,
    /// Rung once per poll round (see crate::watch::Doorbells).
    doorbells: Rc<Doorbells>,
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
            self.card.reclaim();
            for _ in 0..INGRESS_PER_ROUND {
                if self
                    .iface
                    .poll_ingress_single(t, &mut self.card, &mut self.sockets)
                    == PollIngressSingleResult::None
                {
                    break;
                }
            }
            // One call sends at most one segment per socket: go on while
            // the sockets have more and the card has room.
            for _ in 0..SLOTS {
                if self.iface.poll_egress(t, &mut self.card, &mut self.sockets) == PollResult::None
                {
                    break;
                }
            }
            self.doorbells.flush();
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

pub fn run(mut transport: Watched, config: &Config) {
    let doorbells = transport.defer_doorbells();
    let dev = match StackNet::new(transport, !config.stack.no_offloads) {
        Ok(dev) => dev,
        Err(e) => return say!("virtio-net: FAIL init: {}", e),
    };
    let mac = config.mac.unwrap_or(dev.mac_address());
    say!(
        "virtio-net: mac={} device-mac={} stack=smoltcp offloads={}",
        MacFmt(mac),
        MacFmt(dev.mac_address()),
        if dev.offloads { "csum,tso4" } else { "none" }
    );
    let mut card = match Card::new(dev) {
        Ok(card) => card,
        Err(e) => return say!("virtio-net: FAIL {}", e),
    };
    let mut iface_config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    // SAFETY: rdtsc has no side effects and is allowed at CPL 3.
    iface_config.random_seed = unsafe { core::arch::x86_64::_rdtsc() };
    let iface = Interface::new(iface_config, &mut card, now());
    let storage: &'static mut [SocketStorage<'static>] =
        Box::leak(Box::new([SocketStorage::EMPTY; 4]));
    let mut stack = Stack {
        card,
        doorbells,
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
    let mut socket = new_socket();
    if let Err(e) = socket.listen(port) {
        say!("virtio: serve FAIL listen {}: {:?}", port, e);
        return Ok(());
    }
    let handle = stack.sockets.add(socket);
    say!("virtio: serve listening port={}", port);
    let peer = stack.until(ms, |st| {
        let socket = st.sockets.get_mut::<tcp::Socket>(handle);
        // A fast peer may have sent everything and its FIN within one
        // round: the connection is then already past Established.
        let accepted = !matches!(
            socket.state(),
            tcp::State::Listen | tcp::State::SynReceived | tcp::State::Closed
        );
        accepted.then(|| socket.remote_endpoint()).flatten()
    })?;
    let Some(peer) = peer else {
        say!("virtio: serve FAIL no connection within {} ms", ms);
        return Ok(());
    };
    let (mut received, mut hash) = (0u64, StreamHash::new());
    let begun = now();
    let mut chunk = vec![0u8; CHUNK];
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
                    hash.update(&chunk[..n]);
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
            "virtio: serve port={} from={}:{} received={} hash={:016x} us={}",
            port,
            peer.addr,
            peer.port,
            received,
            hash.finish(),
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

/// A TCP socket with room for a scaled window each way. Nagle is off: with
/// a window in flight it would hold the last, short segment of an exchange
/// until the peer's (delayed) ACK.
fn new_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    socket.set_nagle_enabled(false);
    socket.set_ack_delay(None);
    socket
}

/// Connects, sends `bytes` of the pattern, closes its side and reads until
/// the peer closes.
fn exchange(stack: &mut Stack, job: &Tcp, peer: [u8; 4], ms: u64) -> Result<(), &'static str> {
    let handle = stack.sockets.add(new_socket());
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
    let frames_before = stack.card.frames();
    let (mut sent_hash, mut received_hash) = (StreamHash::new(), StreamHash::new());
    let pattern = Pattern::new();
    let mut established = false;
    let finished = stack.until(ms, |st| {
        let socket = st.sockets.get_mut::<tcp::Socket>(handle);
        if socket.may_send() {
            established = true;
            // The pattern is written straight into the socket's buffer.
            while sent < job.bytes && socket.can_send() {
                let left = job.bytes - sent;
                let wrote = socket.send(|buf| {
                    let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    pattern.fill(&mut buf[..n], sent);
                    sent_hash.update(&buf[..n]);
                    (n, n)
                });
                match wrote {
                    Ok(n) if n > 0 => sent += n as u64,
                    _ => break,
                }
            }
            if sent == job.bytes {
                socket.close();
            }
        }
        while socket.can_recv() {
            let read = socket.recv(|buf| {
                received_hash.update(buf);
                (buf.len(), buf.len())
            });
            match read {
                Ok(n) if n > 0 => {
                    established = true;
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
    let (frames_in, frames_out) = stack.card.frames();
    let state = stack.sockets.get_mut::<tcp::Socket>(handle).state();
    match finished {
        Some(true) => say!(
            "virtio: tcp {}:{} sent={} received={} sent-hash={:016x} received-hash={:016x} us={} frames-in={} frames-out={}",
            IpFmt(peer),
            job.port,
            sent,
            received,
            sent_hash.finish(),
            received_hash.finish(),
            us,
            frames_in - frames_before.0,
            frames_out - frames_before.1
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
