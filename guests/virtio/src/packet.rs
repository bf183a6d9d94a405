//! Ethernet II, ARP (IPv4 over Ethernet) and IPv4 ICMP echo: building the
//! frames this guest sends and parsing the ones it cares about. Checksums
//! are computed on send and verified on receive.

pub type Mac = [u8; 6];
pub type Ip = [u8; 4];

pub const BROADCAST: Mac = [0xff; 6];
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETH_HEADER: usize = 14;
/// Shorter frames are padded (Ethernet's minimum without the FCS).
const ETH_MIN: usize = 60;
const IPV4_HEADER: usize = 20;
const PROTO_ICMP: u8 = 1;
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ethernet(buf: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

fn padded(buf: &mut [u8], len: usize) -> usize {
    if len < ETH_MIN {
        buf[len..ETH_MIN].fill(0);
        ETH_MIN
    } else {
        len
    }
}

pub struct Arp {
    pub oper: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ip,
    pub target_mac: Mac,
    pub target_ip: Ip,
}

/// An ARP frame from `arp.sender_mac` to `eth_dst`; returns its length.
pub fn build_arp(buf: &mut [u8], eth_dst: Mac, arp: &Arp) -> usize {
    ethernet(buf, eth_dst, arp.sender_mac, ETHERTYPE_ARP);
    let p = &mut buf[ETH_HEADER..ETH_HEADER + 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&arp.oper.to_be_bytes());
    p[8..14].copy_from_slice(&arp.sender_mac);
    p[14..18].copy_from_slice(&arp.sender_ip);
    p[18..24].copy_from_slice(&arp.target_mac);
    p[24..28].copy_from_slice(&arp.target_ip);
    padded(buf, ETH_HEADER + 28)
}

pub struct Echo<'a> {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src_ip: Ip,
    pub dst_ip: Ip,
    pub kind: u8,
    pub id: u16,
    pub seq: u16,
    pub payload: &'a [u8],
}

/// An ICMP echo request or reply in IPv4 in Ethernet; returns its length.
pub fn build_echo(buf: &mut [u8], echo: &Echo) -> usize {
    ethernet(buf, echo.dst_mac, echo.src_mac, ETHERTYPE_IPV4);
    let icmp_len = 8 + echo.payload.len();
    let total = IPV4_HEADER + icmp_len;
    let ip = &mut buf[ETH_HEADER..ETH_HEADER + IPV4_HEADER];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&echo.seq.to_be_bytes()); // identification
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    ip[8] = 64;
    ip[9] = PROTO_ICMP;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&echo.src_ip);
    ip[16..20].copy_from_slice(&echo.dst_ip);
    let sum = checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let at = ETH_HEADER + IPV4_HEADER;
    let icmp = &mut buf[at..at + icmp_len];
    icmp[0] = echo.kind;
    icmp[1] = 0;
    icmp[2..4].fill(0);
    icmp[4..6].copy_from_slice(&echo.id.to_be_bytes());
    icmp[6..8].copy_from_slice(&echo.seq.to_be_bytes());
    icmp[8..].copy_from_slice(echo.payload);
    let sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    padded(buf, ETH_HEADER + total)
}

pub enum Frame<'a> {
    Arp(Arp),
    Echo(Echo<'a>),
    /// IPv4 with a bad header or ICMP checksum.
    Corrupt,
    Other,
}

pub fn parse(frame: &[u8]) -> Frame<'_> {
    if frame.len() < ETH_HEADER {
        return Frame::Other;
    }
    let mut dst_mac = [0; 6];
    let mut src_mac = [0; 6];
    dst_mac.copy_from_slice(&frame[0..6]);
    src_mac.copy_from_slice(&frame[6..12]);
    let body = &frame[ETH_HEADER..];
    match be16(frame, 12) {
        ETHERTYPE_ARP => parse_arp(body),
        ETHERTYPE_IPV4 => parse_ipv4(body, src_mac, dst_mac),
        _ => Frame::Other,
    }
}

fn parse_arp(p: &[u8]) -> Frame<'_> {
    if p.len() < 28 || be16(p, 0) != 1 || be16(p, 2) != ETHERTYPE_IPV4 || p[4] != 6 || p[5] != 4 {
        return Frame::Other;
    }
    let mut arp = Arp {
        oper: be16(p, 6),
        sender_mac: [0; 6],
        sender_ip: [0; 4],
        target_mac: [0; 6],
        target_ip: [0; 4],
    };
    arp.sender_mac.copy_from_slice(&p[8..14]);
    arp.sender_ip.copy_from_slice(&p[14..18]);
    arp.target_mac.copy_from_slice(&p[18..24]);
    arp.target_ip.copy_from_slice(&p[24..28]);
    Frame::Arp(arp)
}

fn parse_ipv4(p: &[u8], src_mac: Mac, dst_mac: Mac) -> Frame<'_> {
    if p.len() < IPV4_HEADER || p[0] >> 4 != 4 {
        return Frame::Other;
    }
    let header = usize::from(p[0] & 15) * 4;
    let total = usize::from(be16(p, 2));
    if header < IPV4_HEADER || total < header || total > p.len() {
        return Frame::Corrupt;
    }
    if checksum(&p[..header]) != 0 {
        return Frame::Corrupt;
    }
    // Fragments (more-fragments flag or an offset) are not reassembled.
    if p[9] != PROTO_ICMP || be16(p, 6) & 0x3fff != 0 {
        return Frame::Other;
    }
    let icmp = &p[header..total];
    if icmp.len() < 8 {
        return Frame::Corrupt;
    }
    if checksum(icmp) != 0 {
        return Frame::Corrupt;
    }
    let mut src_ip = [0; 4];
    let mut dst_ip = [0; 4];
    src_ip.copy_from_slice(&p[12..16]);
    dst_ip.copy_from_slice(&p[16..20]);
    if icmp[1] != 0 || (icmp[0] != ICMP_ECHO_REQUEST && icmp[0] != ICMP_ECHO_REPLY) {
        return Frame::Other;
    }
    Frame::Echo(Echo {
        src_mac,
        dst_mac,
        src_ip,
        dst_ip,
        kind: icmp[0],
        id: be16(icmp, 4),
        seq: be16(icmp, 6),
        payload: &icmp[8..],
    })
}
