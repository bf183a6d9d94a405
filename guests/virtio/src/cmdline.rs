//! The guest's command line (PVH start_info): which devices to exercise and
//! how. Words are separated by spaces; see guests/README.md for the list.

use crate::say;

pub struct Config {
    /// smoltcp actions (`net.*` words); see crate::netstack.
    pub stack: Stack,
    pub ecam: u64,
    /// Device kinds named on the command line; none named means all found.
    pub blk: bool,
    pub net: bool,
    pub console: bool,
    pub rng: bool,
    pub balloon: bool,
    /// MiB the balloon takes and gives back (`balloon-mib`).
    pub balloon_mib: u64,
    pub blk_first: u64,
    pub blk_count: u64,
    pub blk_stride: u64,
    pub blk_read: u64,
    /// Try to write a qcow2 header into sector 0 first (`blk-header`).
    pub blk_header: bool,
    pub ip: [u8; 4],
    pub peer: [u8; 4],
    pub mac: Option<[u8; 6]>,
    pub pings: u32,
    pub timeout_ms: u64,
    pub serve_ms: u64,
    pub serve_icmp: u64,
    pub mirror: bool,
    pub reassign: bool,
    pub reinit: bool,
    /// After the devices, test MSI-X delivery on the first rng (`msix`).
    pub msix: bool,
    pub bench_seq_mib: u64,
    /// Sequential requests kept in flight (`bench-qd`, 1 to 8).
    pub bench_qd: u64,
    pub bench_rand_ops: u64,
    pub bench_net_frames: u64,
    pub bench_net_size: u64,
    pub bench_mmio: u64,
    /// Wait this long for the power button at the end (0: not at all).
    pub wait_power_button: u64,
    /// Wait this long for each PCI hot-plug event (0: not at all).
    pub wait_hotplug: u64,
    /// How many hot-plug events to handle.
    pub hotplug_events: u64,
    /// How long one device request may take before the device is
    /// declared stuck (`request-timeout-ms`).
    pub request_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stack: Stack::default(),
            ecam: 0xe000_0000,
            blk: false,
            net: false,
            console: false,
            rng: false,
            balloon: false,
            balloon_mib: 16,
            blk_first: 1,
            blk_count: 8,
            blk_stride: 1,
            blk_read: 0,
            blk_header: false,
            ip: [169, 254, 10, 15],
            peer: [169, 254, 10, 2],
            mac: None,
            pings: 3,
            timeout_ms: 1000,
            request_timeout_ms: crate::watch::REQUEST_TIMEOUT_MS,
            serve_ms: 0,
            serve_icmp: 0,
            mirror: false,
            reassign: false,
            reinit: false,
            msix: false,
            bench_seq_mib: 0,
            bench_qd: 1,
            bench_rand_ops: 0,
            bench_net_frames: 0,
            bench_net_size: 1514,
            bench_mmio: 0,
            wait_power_button: 0,
            wait_hotplug: 0,
            hotplug_events: 1,
        }
    }
}

impl Config {
    pub fn any_selected(&self) -> bool {
        self.blk || self.net || self.console || self.rng || self.balloon
    }
}

/// The NUL-terminated command line at `ptr` (never longer than 4 KiB).
///
/// # Safety
/// `ptr` must be null or point to readable memory up to a NUL or 4 KiB.
pub unsafe fn from_raw(ptr: *const u8) -> &'static [u8] {
    if ptr.is_null() {
        return &[];
    }
    let mut len = 0;
    // SAFETY: the caller promised readable memory up to the NUL or 4 KiB.
    while len < 4096 && unsafe { *ptr.add(len) } != 0 {
        len += 1;
    }
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

pub fn parse(text: &'static [u8]) -> Config {
    let mut config = Config::default();
    for word in text.split(|&b| b == b' ' || b == b'\t' || b == b'\n') {
        if word.is_empty() {
            continue;
        }
        if !apply(&mut config, word) {
            say!("virtio: bad option {}", Text(word));
        }
    }
    config
}

fn apply(c: &mut Config, word: &'static [u8]) -> bool {
    let (key, value) = match word.iter().position(|&b| b == b'=') {
        Some(i) => (&word[..i], Some(&word[i + 1..])),
        None => (word, None),
    };
    match (key, value) {
        (b"virtio", None) => {}
        (b"blk", None) => c.blk = true,
        (b"net", None) => c.net = true,
        (b"console", None) => c.console = true,
        (b"rng", None) => c.rng = true,
        (b"balloon", None) => c.balloon = true,
        (b"balloon-mib", Some(v)) => {
            c.balloon = true;
            return set(
                &mut c.balloon_mib,
                number(v).filter(|&n| n > 0 && n <= 1 << 16),
            );
        }
        (b"reassign", None) => c.reassign = true,
        (b"reinit", None) => c.reinit = true,
        (b"msix", None) => c.msix = true,
        (b"mirror", None) => c.mirror = true,
        (b"blk-header", None) => c.blk_header = true,
        (b"net.dhcp", None) => {
            c.net = true;
            c.stack.dhcp = true;
        }
        (b"net.ip", Some(v)) => return set(&mut c.stack.fixed, fixed(v).map(Some)) && net(c),
        (b"net.mac", Some(v)) => return set(&mut c.mac, mac(v).map(Some)) && net(c),
        (b"net.timeout-ms", Some(v)) => return set(&mut c.stack.timeout_ms, number(v)) && net(c),
        (b"net.offloads", Some(b"off")) => c.stack.no_offloads = true,
        (b"net.resolve", Some(v)) => {
            return set(&mut c.stack.resolve, hostname(v).map(Some)) && net(c);
        }
        (b"net.tcp", Some(v)) => return set(&mut c.stack.tcp, tcp(v).map(Some)) && net(c),
        (b"net.serve", Some(v)) => {
            let port = number(v)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|&p| p != 0);
            return set(&mut c.stack.serve, port.map(Some)) && net(c);
        }
        (b"net.spoof-mac", Some(v)) => {
            return set(&mut c.stack.spoof_mac, mac(v).map(Some)) && net(c);
        }
        (b"net.spoof-ip", Some(v)) => {
            return set(&mut c.stack.spoof_ip, ipv4(v).map(Some)) && net(c);
        }
        (b"ecam", Some(v)) => return set(&mut c.ecam, number(v)),
        (b"blk-first", Some(v)) => return set(&mut c.blk_first, number(v)),
        (b"blk-count", Some(v)) => return set(&mut c.blk_count, number(v).filter(|&n| n <= 256)),
        (b"blk-stride", Some(v)) => return set(&mut c.blk_stride, number(v).filter(|&n| n > 0)),
        (b"blk-read", Some(v)) => return set(&mut c.blk_read, number(v)),
        (b"ip", Some(v)) => return set(&mut c.ip, ipv4(v)),
        (b"peer", Some(v)) => return set(&mut c.peer, ipv4(v)),
        (b"mac", Some(v)) => return set(&mut c.mac, mac(v).map(Some)),
        (b"pings", Some(v)) => {
            return set(&mut c.pings, number(v).and_then(|n| u32::try_from(n).ok()));
        }
        (b"timeout-ms", Some(v)) => return set(&mut c.timeout_ms, number(v)),
        (b"request-timeout-ms", Some(v)) => {
            return set(&mut c.request_timeout_ms, number(v).filter(|&n| n > 0));
        }
        (b"serve-ms", Some(v)) => return set(&mut c.serve_ms, number(v)),
        (b"serve-icmp", Some(v)) => return set(&mut c.serve_icmp, number(v)),
        (b"bench-seq-mib", Some(v)) => return set(&mut c.bench_seq_mib, number(v)),
        (b"bench-qd", Some(v)) => {
            return set(&mut c.bench_qd, number(v).filter(|n| (1..=8).contains(n)));
        }
        (b"bench-rand-ops", Some(v)) => return set(&mut c.bench_rand_ops, number(v)),
        (b"bench-mmio", Some(v)) => return set(&mut c.bench_mmio, number(v)),
        (b"wait-power-button", Some(v)) => return set(&mut c.wait_power_button, number(v)),
        (b"wait-hotplug", Some(v)) => return set(&mut c.wait_hotplug, number(v)),
        (b"hotplug-events", Some(v)) => {
            return set(
                &mut c.hotplug_events,
                number(v).filter(|n| (1..=64).contains(n)),
            );
        }
        (b"bench-net-frames", Some(v)) => return set(&mut c.bench_net_frames, number(v)),
        (b"bench-net-size", Some(v)) => {
            return set(
                &mut c.bench_net_size,
                number(v).filter(|n| (60..=1514).contains(n)),
            );
        }
        _ => return false,
    }
    true
}

/// A `net.*` word also selects the net kind.
fn net(c: &mut Config) -> bool {
    c.net = true;
    true
}

/// What the smoltcp part of the guest does (guests/README.md, "Network
/// stack"). Any action set replaces the ARP/ping exercise.
pub struct Stack {
    /// `net.dhcp`: obtain a lease first.
    pub dhcp: bool,
    /// `net.ip=A.B.C.D/P[,gw=G][,dns=D]`: a static address instead.
    pub fixed: Option<Fixed>,
    /// `net.resolve=NAME`: an A query to the DNS server.
    pub resolve: Option<&'static [u8]>,
    /// `net.tcp=HOST:PORT[,bytes=N]`.
    pub tcp: Option<Tcp>,
    /// `net.spoof-mac=`, `net.spoof-ip=`: after the rest, repeat the TCP
    /// exchange with this source MAC and/or IPv4 address.
    pub spoof_mac: Option<[u8; 6]>,
    pub spoof_ip: Option<[u8; 4]>,
    /// `net.serve=PORT`: last, accept one TCP connection and echo it.
    pub serve: Option<u16>,
    /// `net.timeout-ms=N`: the bound of each action (10000).
    pub timeout_ms: u64,
    /// `net.offloads=off`: take no checksum or segmentation offload even
    /// when the device offers them (every frame at most 1514 bytes).
    pub no_offloads: bool,
}

impl Default for Stack {
    fn default() -> Self {
        Self {
            dhcp: false,
            fixed: None,
            resolve: None,
            tcp: None,
            spoof_mac: None,
            spoof_ip: None,
            serve: None,
            timeout_ms: 10_000,
            no_offloads: false,
        }
    }
}

impl Stack {
    /// Whether the command line asked for any stack action.
    pub fn active(&self) -> bool {
        self.dhcp
            || self.fixed.is_some()
            || self.resolve.is_some()
            || self.tcp.is_some()
            || self.serve.is_some()
    }
}

/// A static IPv4 configuration.
#[derive(Clone, Copy)]
pub struct Fixed {
    pub ip: [u8; 4],
    pub prefix: u8,
    pub gw: Option<[u8; 4]>,
    pub dns: Option<[u8; 4]>,
}

/// Where to connect: an address, or a name resolved through DNS first.
#[derive(Clone, Copy)]
pub enum Host {
    Ip([u8; 4]),
    Name(&'static [u8]),
}

#[derive(Clone, Copy)]
pub struct Tcp {
    pub host: Host,
    pub port: u16,
    pub bytes: u64,
}

/// At most this many bytes per TCP exchange (`bytes=`).
pub const TCP_MAX_BYTES: u64 = 1 << 30;

fn fixed(text: &[u8]) -> Option<Fixed> {
    let mut parts = text.split(|&b| b == b',');
    let cidr = parts.next()?;
    let slash = cidr.iter().position(|&b| b == b'/')?;
    let prefix = u8::try_from(number(&cidr[slash + 1..])?).ok()?;
    if prefix == 0 || prefix > 32 {
        return None;
    }
    let mut out = Fixed {
        ip: ipv4(&cidr[..slash])?,
        prefix,
        gw: None,
        dns: None,
    };
    for part in parts {
        match part.split_at(part.iter().position(|&b| b == b'=')? + 1) {
            (b"gw=", v) => out.gw = Some(ipv4(v)?),
            (b"dns=", v) => out.dns = Some(ipv4(v)?),
            _ => return None,
        }
    }
    Some(out)
}

/// A DNS name: letters, digits, '-' and '.', 1 to 253 bytes.
fn hostname(text: &'static [u8]) -> Option<&'static [u8]> {
    let ok = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.';
    (!text.is_empty() && text.len() <= 253 && text.iter().all(ok)).then_some(text)
}

fn tcp(text: &'static [u8]) -> Option<Tcp> {
    let mut parts = text.split(|&b| b == b',');
    let target = parts.next()?;
    let colon = target.iter().rposition(|&b| b == b':')?;
    let port = u16::try_from(number(&target[colon + 1..])?)
        .ok()
        .filter(|&p| p != 0)?;
    let name = &target[..colon];
    let host = match ipv4(name) {
        Some(ip) => Host::Ip(ip),
        None => Host::Name(hostname(name)?),
    };
    let mut out = Tcp {
        host,
        port,
        bytes: 4096,
    };
    for part in parts {
        match part.split_at(part.iter().position(|&b| b == b'=')? + 1) {
            (b"bytes=", v) => out.bytes = number(v).filter(|&n| n <= TCP_MAX_BYTES)?,
            _ => return None,
        }
    }
    Some(out)
}

fn set<T>(slot: &mut T, value: Option<T>) -> bool {
    match value {
        Some(v) => {
            *slot = v;
            true
        }
        None => false,
    }
}

/// Decimal, or hexadecimal with a 0x prefix.
pub fn number(text: &[u8]) -> Option<u64> {
    let (digits, radix) = match text {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (text, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        let d = (b as char).to_digit(radix)?;
        n = n.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(n)
}

fn ipv4(text: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for slot in &mut out {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || part.starts_with(b"0x") {
            return None;
        }
        *slot = u8::try_from(number(part)?).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn mac(text: &[u8]) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(|&b| b == b':');
    for slot in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        let hi = (part[0] as char).to_digit(16)?;
        let lo = (part[1] as char).to_digit(16)?;
        *slot = (hi * 16 + lo) as u8;
    }
    parts.next().is_none().then_some(out)
}

/// Displays bytes as text, replacing anything unprintable with '?'.
pub struct Text<'a>(pub &'a [u8]);

impl core::fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        for &b in self.0 {
            let c = if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            };
            core::fmt::Write::write_char(f, c)?;
        }
        Ok(())
    }
}
