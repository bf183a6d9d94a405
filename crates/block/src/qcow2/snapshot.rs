//! The internal snapshot table.

use crate::{Error, Result};

/// Most snapshots an image may have (QEMU's limit).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// Largest snapshot table we read (QEMU's limit).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;

/// One internal snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Host offset of the snapshot's L1 table.
    pub l1_table_offset: u64,
    /// Entries in that L1 table.
    pub l1_size: u32,
    /// Unique ID ("1", "2", ...).
    pub id: String,
    /// The name given by the user.
    pub name: String,
    /// Creation time: seconds since the epoch.
    pub date_sec: u32,
    /// Creation time: nanoseconds.
    pub date_nsec: u32,
    /// Guest clock at the snapshot, in nanoseconds.
    pub vm_clock_nsec: u64,
    /// Size of the saved VM state (0: disk only).
    pub vm_state_size: u64,
    /// Virtual disk size when the snapshot was taken (version 3 extra data).
    pub disk_size: Option<u64>,
    /// Extra data past the fields above, kept verbatim.
    pub extra_tail: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidImage(msg.into())
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Result<&'a [u8]> {
    let end = at
        .checked_add(n)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| invalid("the snapshot table is truncated"))?;
    let s = &b[*at..end];
    *at = end;
    Ok(s)
}

fn u16_at(b: &[u8], at: &mut usize) -> Result<u16> {
    let s = take(b, at, 2)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: &mut usize) -> Result<u32> {
    let s = take(b, at, 4)?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: &mut usize) -> Result<u64> {
    let s = take(b, at, 8)?;
    let mut x = [0u8; 8];
    x.copy_from_slice(s);
    Ok(u64::from_be_bytes(x))
}

/// Decode `count` snapshot entries from `table`.
pub fn parse(table: &[u8], count: u32) -> Result<Vec<Snapshot>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for _ in 0..count {
        let l1_table_offset = u64_at(table, &mut at)?;
        let l1_size = u32_at(table, &mut at)?;
        let id_len = u16_at(table, &mut at)? as usize;
        let name_len = u16_at(table, &mut at)? as usize;
        let date_sec = u32_at(table, &mut at)?;
        let date_nsec = u32_at(table, &mut at)?;
        let vm_clock_nsec = u64_at(table, &mut at)?;
        let vm_state_size32 = u32_at(table, &mut at)?;
        let extra_len = u32_at(table, &mut at)? as usize;
        let extra = take(table, &mut at, extra_len)?;
        let mut e = 0usize;
        let vm_state_size = if extra.len() >= 8 {
            u64_at(extra, &mut e)?
        } else {
            u64::from(vm_state_size32)
        };
        let disk_size = if extra.len() >= 16 {
            Some(u64_at(extra, &mut e)?)
        } else {
            None
        };
        let extra_tail = extra[e.min(extra.len())..].to_vec();
        let id = String::from_utf8_lossy(take(table, &mut at, id_len)?).into_owned();
        let name = String::from_utf8_lossy(take(table, &mut at, name_len)?).into_owned();
        at = at.div_ceil(8) * 8;
        out.push(Snapshot {
            l1_table_offset,
            l1_size,
            id,
            name,
            date_sec,
            date_nsec,
            vm_clock_nsec,
            vm_state_size,
            disk_size,
            extra_tail,
        });
    }
    Ok(out)
}

/// Encode a snapshot table.
pub fn encode(snapshots: &[Snapshot]) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    for s in snapshots {
        let id_len = u16::try_from(s.id.len()).map_err(|_| invalid("snapshot ID too long"))?;
        let name_len =
            u16::try_from(s.name.len()).map_err(|_| invalid("snapshot name too long"))?;
        let mut extra = Vec::new();
        extra.extend_from_slice(&s.vm_state_size.to_be_bytes());
        extra.extend_from_slice(&s.disk_size.unwrap_or(0).to_be_bytes());
        extra.extend_from_slice(&s.extra_tail);
        let extra_len = u32::try_from(extra.len()).map_err(|_| invalid("extra data too long"))?;
        b.extend_from_slice(&s.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&s.l1_size.to_be_bytes());
        b.extend_from_slice(&id_len.to_be_bytes());
        b.extend_from_slice(&name_len.to_be_bytes());
        b.extend_from_slice(&s.date_sec.to_be_bytes());
        b.extend_from_slice(&s.date_nsec.to_be_bytes());
        b.extend_from_slice(&s.vm_clock_nsec.to_be_bytes());
        b.extend_from_slice(&u32::try_from(s.vm_state_size).unwrap_or(0).to_be_bytes());
        b.extend_from_slice(&extra_len.to_be_bytes());
        b.extend_from_slice(&extra);
        b.extend_from_slice(s.id.as_bytes());
        b.extend_from_slice(s.name.as_bytes());
        b.resize(b.len().div_ceil(8) * 8, 0);
    }
    Ok(b)
}
