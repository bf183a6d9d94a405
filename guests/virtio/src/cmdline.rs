//! The guest's command line (PVH start_info): which devices to exercise and
//! how. Words are separated by spaces; see guests/README.md for the list.

use crate::say;

pub struct Config {
    pub ecam: u64,
    /// Device kinds named on the command line; none named means all found.
    pub blk: bool,
    pub net: bool,
    pub console: bool,
    pub rng: bool,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ecam: 0xe000_0000,
            blk: false,
            net: false,
            console: false,
            rng: false,
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
            serve_ms: 0,
            serve_icmp: 0,
            mirror: false,
            reassign: false,
            reinit: false,
            msix: false,
            bench_seq_mib: 0,
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
        self.blk || self.net || self.console || self.rng
    }
}

/// The NUL-terminated command line at `ptr` (never longer than 4 KiB).
///
/// # Safety
/// `ptr` must be null or point to readable memory up to a NUL or 4 KiB.
pub unsafe fn from_raw<'a>(ptr: *const u8) -> &'a [u8] {
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

pub fn parse(text: &[u8]) -> Config {
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

fn apply(c: &mut Config, word: &[u8]) -> bool {
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
        (b"reassign", None) => c.reassign = true,
        (b"reinit", None) => c.reinit = true,
        (b"msix", None) => c.msix = true,
        (b"mirror", None) => c.mirror = true,
        (b"blk-header", None) => c.blk_header = true,
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
        (b"serve-ms", Some(v)) => return set(&mut c.serve_ms, number(v)),
        (b"serve-icmp", Some(v)) => return set(&mut c.serve_icmp, number(v)),
        (b"bench-seq-mib", Some(v)) => return set(&mut c.bench_seq_mib, number(v)),
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
