//! Parsing the data-in of the SCSI commands this crate sends. Everything
//! here comes from the target, so every length is checked.

use crate::{Error, Result};

/// What READ CAPACITY (16) says about a LUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Number of logical blocks.
    pub blocks: u64,
    /// Bytes per logical block.
    pub block_size: u32,
    /// Logical block provisioning management enabled (LBPME): the LUN is
    /// thin and takes UNMAP.
    pub thin: bool,
}

impl Capacity {
    /// Size in bytes (saturating: a target claiming more than 2^64 bytes
    /// is believed up to that).
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// A LUN's peripheral qualifier and device type (INQUIRY byte 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceType(pub u8);

impl DeviceType {
    /// A direct-access block device (a disk) that is there: the only
    /// kind Vireo uses.
    pub fn is_disk(self) -> bool {
        self.0 == 0
    }

    /// Whether the target has a device at this LUN (peripheral qualifier
    /// 3 says it has none).
    pub fn exists(self) -> bool {
        self.0 >> 5 != 3
    }

    /// The device type alone (0 a disk, 5 a CD-ROM, 0xc a controller).
    pub fn kind(self) -> u8 {
        self.0 & 0x1f
    }
}

fn short(what: &str, got: usize, need: usize) -> Error {
    Error::Malformed(format!("{what}: {got} bytes of data, need {need}"))
}

/// READ CAPACITY (16) parameter data.
pub(crate) fn parse_capacity16(d: &[u8]) -> Result<Capacity> {
    if d.len() < 15 {
        return Err(short("READ CAPACITY(16)", d.len(), 15));
    }
    let last = u64::from_be_bytes(
        d[0..8]
            .try_into()
            .map_err(|_| short("READ CAPACITY(16)", d.len(), 15))?,
    );
    let block_size = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    if block_size == 0 || !block_size.is_multiple_of(512) || block_size > 64 * 1024 {
        return Err(Error::Malformed(format!(
            "READ CAPACITY(16): block size {block_size} is not a multiple of 512 up to 64 KiB"
        )));
    }
    Ok(Capacity {
        blocks: last.saturating_add(1),
        block_size,
        thin: d[14] & 0x80 != 0,
    })
}

/// REPORT LUNS parameter data: the LUN numbers of single-level LUNs in
/// peripheral or flat addressing (what targets use for up to 16384 LUNs).
pub(crate) fn parse_report_luns(d: &[u8]) -> Result<Vec<u16>> {
    if d.len() < 8 {
        return Err(short("REPORT LUNS", d.len(), 8));
    }
    let listed = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    // A list longer than our buffer was cut short by the target; take
    // what arrived.
    let body = &d[8..];
    let n = listed.min(body.len()) / 8;
    let mut luns = Vec::with_capacity(n);
    for entry in body.chunks_exact(8).take(n) {
        let method = entry[0] >> 6;
        if method > 1 || entry[2..].iter().any(|&b| b != 0) {
            // Multi-level or extended addressing: not a LUN we can name.
            continue;
        }
        luns.push((u16::from(entry[0] & 0x3f) << 8) | u16::from(entry[1]));
    }
    Ok(luns)
}

/// Standard INQUIRY data: the peripheral device type.
pub(crate) fn parse_inquiry(d: &[u8]) -> Result<DeviceType> {
    let b = d.first().ok_or_else(|| short("INQUIRY", 0, 1))?;
    Ok(DeviceType(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity16_fields() {
        let mut d = [0u8; 32];
        d[7] = 0xff; // last LBA 255
        d[10] = 0x02; // 512-byte blocks
        d[14] = 0x80;
        let c = parse_capacity16(&d).unwrap();
        assert_eq!(
            (c.blocks, c.block_size, c.thin, c.bytes()),
            (256, 512, true, 131_072)
        );
        assert!(parse_capacity16(&d[..10]).is_err());
        d[10] = 0;
        d[11] = 100;
        assert!(parse_capacity16(&d).is_err(), "block size 100 accepted");
    }

    #[test]
    fn report_luns_addressing() {
        let mut d = vec![0, 0, 0, 32, 0, 0, 0, 0];
        d.extend([0, 0, 0, 0, 0, 0, 0, 0]); // LUN 0, peripheral
        d.extend([0, 7, 0, 0, 0, 0, 0, 0]); // LUN 7
        d.extend([0x41, 0x02, 0, 0, 0, 0, 0, 0]); // flat 258
        d.extend([0x80, 0x01, 0, 0, 0, 0, 0, 0]); // logical unit addressing: skipped
        assert_eq!(parse_report_luns(&d).unwrap(), vec![0, 7, 258]);
        // A list length past the data is cut to the data.
        d[3] = 200;
        assert_eq!(parse_report_luns(&d).unwrap().len(), 3);
        assert!(parse_report_luns(&[0, 0]).is_err());
    }

    #[test]
    fn inquiry_type() {
        assert!(parse_inquiry(&[0x00, 0]).unwrap().is_disk());
        assert!(!parse_inquiry(&[0x0c]).unwrap().is_disk());
        assert!(!parse_inquiry(&[0x7f]).unwrap().exists());
        assert_eq!(parse_inquiry(&[0x25]).unwrap().kind(), 5);
        assert!(parse_inquiry(&[]).is_err());
    }
}
