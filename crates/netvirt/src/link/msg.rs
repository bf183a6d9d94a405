//! Building and walking rtnetlink messages: the 16-byte message header,
//! the fixed family header after it, and 4-byte aligned attributes,
//! possibly nested. Every length read from the kernel is checked against
//! the bytes actually received before it is used.

/// Length of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Length of `struct nlattr`'s header.
const NLA_HDRLEN: usize = 4;
/// Marks an attribute whose data is more attributes.
const NLA_F_NESTED: u16 = 0x8000;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request being built; [`Msg::finish`] stamps length and sequence.
pub struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    /// Start a message of type `ty` with `flags` (NLM_F_*).
    pub fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Msg { buf }
    }

    /// Append a fixed family header (ifinfomsg, ifaddrmsg, ...).
    pub fn header(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len());
        self.buf.resize(n, 0);
    }

    /// Append attribute `ty` carrying `data`.
    pub fn attr(&mut self, ty: u16, data: &[u8]) {
        let len = u16::try_from(NLA_HDRLEN + data.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    pub fn attr_u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_ne_bytes());
    }

    pub fn attr_u16(&mut self, ty: u16, v: u16) {
        self.attr(ty, &v.to_ne_bytes());
    }

    pub fn attr_u8(&mut self, ty: u16, v: u8) {
        self.attr(ty, &[v]);
    }

    /// A NUL-terminated string attribute, as the kernel expects for names.
    pub fn attr_str(&mut self, ty: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v);
    }

    /// Open a nested attribute; close it with [`Msg::end_nest`].
    pub fn begin_nest(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    pub fn end_nest(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The finished bytes, with total length and sequence number filled in.
    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One message received from the kernel.
pub struct Reply<'a> {
    pub ty: u16,
    pub seq: u32,
    /// Everything after the netlink header.
    pub payload: &'a [u8],
}

/// Split a datagram into messages; `None` when a header's length does
/// not fit what was received (a truncated or corrupt datagram).
pub fn split(mut buf: &[u8]) -> Option<Vec<Reply<'_>>> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        out.push(Reply {
            ty: u16::from_ne_bytes(buf[4..6].try_into().ok()?),
            seq: u32::from_ne_bytes(buf[8..12].try_into().ok()?),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Some(out)
}

/// Iterate over the attributes in `buf`, yielding (type without flag
/// bits, data). Stops at the first malformed attribute.
pub fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < NLA_HDRLEN || len > buf.len() {
            buf = &[];
            return None;
        }
        let data = &buf[NLA_HDRLEN..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((ty, data))
    })
}

/// A native-endian u32 attribute value, if it is exactly four bytes.
pub fn get_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.try_into().ok()?))
}

/// A NUL-terminated string attribute value. Interface names are bytes
/// to the kernel; a non-UTF-8 one is shown lossily rather than making a
/// whole link listing fail.
pub fn get_str(data: &[u8]) -> Option<String> {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    Some(String::from_utf8_lossy(&data[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_walk() {
        let mut m = Msg::new(16, 5);
        m.header(&[1, 2, 3]);
        let n = m.begin_nest(18);
        m.attr_str(1, "bridge");
        m.end_nest(n);
        m.attr_u32(4, 1500);
        let bytes = m.finish(7);
        let msgs = split(&bytes).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!((msgs[0].ty, msgs[0].seq), (16, 7));
        let a: Vec<_> = attrs(&msgs[0].payload[4..]).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].0, 18);
        let inner: Vec<_> = attrs(a[0].1).collect();
        assert_eq!(get_str(inner[0].1).as_deref(), Some("bridge"));
        assert_eq!(get_u32(a[1].1), Some(1500));
        assert_eq!(get_str(b"a\xffb\0").as_deref(), Some("a\u{fffd}b"));
    }

    #[test]
    fn corrupt_lengths_are_refused() {
        // A header claiming more bytes than were received.
        let mut bytes = Msg::new(3, 0).finish(1);
        bytes[0] = 200;
        assert!(split(&bytes).is_none());
        // An attribute claiming more than its buffer stops the walk.
        assert_eq!(attrs(&[50, 0, 1, 0, 9, 9]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    }
}
