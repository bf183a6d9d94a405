//! The byte stream the TCP actions send and the hash they report of what
//! went each way, both cheap enough to leave the network, not this guest,
//! as what a throughput figure measures.
//!
//! The pattern: byte i of a stream is i mod 251 (a prime, so it lines up
//! with no power-of-two buffer size). The hash: FNV-1a 64 over the stream
//! taken as little-endian 8-byte words (the last one zero-padded), then the
//! stream's length: eight bytes per multiply instead of one, and the same
//! value however the stream was cut into pieces. The host's tests compute
//! the same (crates/vireo/tests/netlab and net_lab).

use alloc::vec::Vec;

const PERIOD: usize = 251;
const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hash of a stream, fed piece by piece.
pub struct StreamHash {
    hash: u64,
    /// Bytes of a word not yet complete, lowest first.
    word: u64,
    have: u32,
    len: u64,
}

impl StreamHash {
    pub fn new() -> Self {
        Self {
            hash: OFFSET_BASIS,
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
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut le = [0u8; 8];
            le.copy_from_slice(w);
            self.hash = (self.hash ^ u64::from_le_bytes(le)).wrapping_mul(PRIME);
        }
        for &b in words.remainder() {
            self.push_byte(b);
        }
    }

    fn push_byte(&mut self, b: u8) {
        self.word |= u64::from(b) << (8 * self.have);
        self.have += 1;
        if self.have == 8 {
            self.hash = (self.hash ^ self.word).wrapping_mul(PRIME);
            self.word = 0;
            self.have = 0;
        }
    }

    pub fn finish(&self) -> u64 {
        let mut hash = self.hash;
        if self.have > 0 {
            hash = (hash ^ self.word).wrapping_mul(PRIME);
        }
        (hash ^ self.len).wrapping_mul(PRIME)
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
