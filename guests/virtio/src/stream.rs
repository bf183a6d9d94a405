//! The byte stream the TCP actions send and the hash they report of what
//! went each way, both cheap enough to leave the network, not this guest,
//! as what a throughput figure measures.
//!
//! The pattern: byte i of a stream is i mod 251 (a prime, so it lines up
//! with no power-of-two buffer size). The hash: the stream taken as
//! little-endian 8-byte words (the last one zero-padded), word i hashed
//! with FNV-1a 64 into lane i mod 4 (lane k starting from the FNV offset
//! basis plus k); then the four lanes, in order, the partial last word if
//! any, and the stream's length, FNV-1a 64 into the offset basis. Four
//! lanes multiply in parallel where one waits for the last multiply:
//! about a quarter cycle a byte. The same value however the stream was
//! cut into pieces. The host's tests compute the same
//! (crates/vireo/tests/netlab and net_lab).

use alloc::vec::Vec;

const PERIOD: usize = 251;
const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;
const LANES: usize = 4;

fn fnv(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(PRIME)
}

fn le_word(bytes: &[u8]) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(bytes);
    u64::from_le_bytes(le)
}

/// The hash of a stream, fed piece by piece.
pub struct StreamHash {
    lanes: [u64; LANES],
    /// The lane the next whole word goes to.
    next: usize,
    /// Bytes of a word not yet complete, lowest first.
    word: u64,
    have: u32,
    len: u64,
}

impl StreamHash {
    pub fn new() -> Self {
        Self {
            lanes: core::array::from_fn(|k| OFFSET_BASIS.wrapping_add(k as u64)),
            next: 0,
            word: 0,
            have: 0,
            len: 0,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        while self.have > 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.push_byte(b);
            bytes = rest;
        }
        while self.next != 0 && bytes.len() >= 8 {
            let (w, rest) = bytes.split_at(8);
            self.push_word(le_word(w));
            bytes = rest;
        }
        let mut blocks = bytes.chunks_exact(8 * LANES);
        if self.next == 0 {
            let [mut a, mut b, mut c, mut d] = self.lanes;
            for block in &mut blocks {
                a = fnv(a, le_word(&block[0..8]));
                b = fnv(b, le_word(&block[8..16]));
                c = fnv(c, le_word(&block[16..24]));
                d = fnv(d, le_word(&block[24..32]));
            }
            self.lanes = [a, b, c, d];
            bytes = blocks.remainder();
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.push_word(le_word(w));
        }
        for &b in words.remainder() {
            self.push_byte(b);
        }
    }

    fn push_word(&mut self, w: u64) {
        self.lanes[self.next] = fnv(self.lanes[self.next], w);
        self.next = (self.next + 1) % LANES;
    }

    fn push_byte(&mut self, b: u8) {
        self.word |= u64::from(b) << (8 * self.have);
        self.have += 1;
        if self.have == 8 {
            self.push_word(self.word);
            self.word = 0;
            self.have = 0;
        }
    }

    pub fn finish(&self) -> u64 {
        let mut hash = self.lanes.iter().fold(OFFSET_BASIS, |h, &l| fnv(h, l));
        if self.have > 0 {
            hash = fnv(hash, self.word);
        }
        fnv(hash, self.len)
    }
}

/// The pattern, copied out of one precomputed run of it.
pub struct Pattern {
    /// Bytes 0.. of the pattern, a whole number of periods, at least
    /// 64 KiB past any starting phase.
    run: Vec<u8>,
}

impl Pattern {
    pub fn new() -> Self {
        let periods = (64 * 1024usize).div_ceil(PERIOD) + 1;
        Self {
            run: (0..periods * PERIOD).map(|i| (i % PERIOD) as u8).collect(),
        }
    }

    /// Fills `buf` with bytes `start..` of the stream.
    pub fn fill(&self, buf: &mut [u8], start: u64) {
        let mut phase = (start % PERIOD as u64) as usize;
        let span = self.run.len() - PERIOD;
        for piece in buf.chunks_mut(span) {
            piece.copy_from_slice(&self.run[phase..phase + piece.len()]);
            phase = (phase + piece.len()) % PERIOD;
        }
    }
}
