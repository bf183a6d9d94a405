//! What a NIC with TCP segmentation offload does for the stack above it,
//! done in the device glue because smoltcp has none.
//!
//! smoltcp never sends a segment longer than the peer's MSS (1460 on an
//! Ethernet path), and every segment costs the host a TAP write and a trip
//! through its bridge. With TSO negotiated (crate::netdev), the glue makes
//! smoltcp believe every peer takes segments of [`STACK_MSS`] bytes by
//! raising the MSS option of each SYN it receives (remembering the real
//! one), and hands each long segment to the device as one GSO frame cut
//! at the real MSS, as Linux's TCP does with a TSO card. The host cuts it
//! only where it must (a TAP or veth that takes GSO gets it whole).
//!
//! Checksums: TCP segments go out with the pseudo-header sum and
//! VIRTIO_NET_HDR_F_NEEDS_CSUM (GSO requires it; the host completes them);
//! received TCP and UDP checksums are not verified (the device may hand
//! over partial ones, with NEEDS_CSUM, and this guest only talks to its
//! own host's TAP).

/// The MSS smoltcp is told each peer accepts: a 64 KiB segment less room
/// for the headers, so a segment and its frame fit one buffer.
pub const STACK_MSS: u16 = 63 * 1024;
/// The largest real MSS used to cut a segment: an Ethernet path's, since
/// the device reports no MTU.
pub const LINK_MSS: u16 = 1460;

const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const ETHERNET_HEADER: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const MSS_OPTION: u8 = 2;

/// The TCP segment of an IPv4 frame: (its offset in the frame, its length
/// with header, its header's length).
fn tcp_segment(frame: &[u8]) -> Option<(usize, usize, usize)> {
    if frame.len() < ETHERNET_HEADER + 20 || frame[12..14] != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = &frame[ETHERNET_HEADER..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != TCP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total > ip.len() || total < ihl + 20 {
        return None;
    }
    let start = ETHERNET_HEADER + ihl;
    let header = usize::from(frame[start + 12] >> 4) * 4;
    let len = total - ihl;
    (20..=len).contains(&header).then_some((start, len, header))
}

/// Fills the virtio-net header `hdr` for the frame smoltcp wrote: a TCP
/// segment gets the pseudo-header sum in its checksum field and
/// NEEDS_CSUM, and one longer than `mss` (the real MSS of the path) is
/// marked TCPv4 GSO, cut at `mss` less the options every piece repeats.
/// Anything else goes as it is (smoltcp computed its checksums).
pub fn prepare_tx(hdr: &mut [u8], frame: &mut [u8], mss: u16) {
    hdr.fill(0);
    let Some((start, len, header)) = tcp_segment(frame) else {
        return;
    };
    let ip = &frame[ETHERNET_HEADER..];
    let mut sum: u32 = u32::from(TCP) + len as u32;
    for word in ip[12..20].chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[start + 16..start + 18].copy_from_slice(&(sum as u16).to_be_bytes());
    hdr[0] = NEEDS_CSUM;
    hdr[6..8].copy_from_slice(&(start as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    let piece = usize::from(mss.min(LINK_MSS)).saturating_sub(header - 20);
    if piece > 0 && len - header > piece {
        hdr[1] = GSO_TCPV4;
        hdr[2..4].copy_from_slice(&((start + header) as u16).to_le_bytes());
        hdr[4..6].copy_from_slice(&(piece as u16).to_le_bytes());
    }
}

/// For a received SYN carrying an MSS option: rewrites the option to
/// [`STACK_MSS`] and returns the real value.
pub fn raise_syn_mss(frame: &mut [u8]) -> Option<u16> {
    let (start, _, header) = tcp_segment(frame)?;
    if frame[start + 13] & TCP_SYN == 0 {
        return None;
    }
    let options = &mut frame[start + 20..start + header];
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = usize::from(*options.get(at + 1)?);
                if len < 2 || at + len > options.len() {
                    return None;
                }
                if kind == MSS_OPTION && len == 4 {
                    let real = u16::from_be_bytes([options[at + 2], options[at + 3]]);
                    options[at + 2..at + 4].copy_from_slice(&STACK_MSS.to_be_bytes());
                    return Some(real);
                }
                at += len;
            }
        }
    }
    None
}
