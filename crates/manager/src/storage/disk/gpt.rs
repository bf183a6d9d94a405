//! A GPT label as a `disk` pool reads and writes it (UEFI specification,
//! chapter 5): protective MBR, primary header and entry array at the
//! start, their backup at the end.
//!
//! Written here rather than with a crate: the crates at hand pack the
//! used entries together when they write, which renumbers every partition
//! after a deleted one; a pool must keep `vda3` as `vda3`. Everything read
//! is bounded and checked (signature, sizes, both checksums) before use.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Entries in a label we write, as every partitioning tool makes.
const ENTRIES: u32 = 128;
/// Bytes per entry in a label we write.
const ENTRY_SIZE: u32 = 128;
/// The largest entry array read (the usual one is 16 KiB).
const MAX_ARRAY: u64 = 1 << 20;
/// Partitions start on 1 MiB boundaries, as parted and sgdisk place them.
const ALIGN_BYTES: u64 = 1 << 20;
/// The header's length in the revision 1.0 layout.
const HEADER_SIZE: u32 = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// "Linux filesystem data" (0FC63DAF-8483-4772-8E79-3D69D8477DE4), in
/// the on-disk byte order (first three fields little-endian).
const LINUX_DATA: [u8; 16] = [
    0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4,
];

/// One slot of the entry array.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    raw: Vec<u8>,
}

impl Entry {
    fn empty(size: usize) -> Entry {
        Entry { raw: vec![0; size] }
    }

    fn used(&self) -> bool {
        self.raw[..16].iter().any(|b| *b != 0)
    }

    fn first(&self) -> u64 {
        le64(&self.raw[32..40])
    }

    fn last(&self) -> u64 {
        le64(&self.raw[40..48])
    }
}

/// A partition of the label: its number (entry index + 1, the kernel's
/// `N` in `vdaN`) and its sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// The partition's number.
    pub number: u32,
    /// First sector.
    pub first: u64,
    /// Last sector (inclusive).
    pub last: u64,
}

impl Partition {
    /// Its length in sectors.
    pub fn sectors(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// A device's GPT label.
#[derive(Debug, Clone)]
pub struct Label {
    sector: u64,
    last_lba: u64,
    disk_guid: [u8; 16],
    first_usable: u64,
    last_usable: u64,
    entry_size: u32,
    entries: Vec<Entry>,
}

impl Label {
    /// A new, empty label for a device of `size` bytes with `sector`-byte
    /// sectors.
    pub fn new(size: u64, sector: u32) -> Result<Label, String> {
        let sector = u64::from(sector);
        let array_sectors = (u64::from(ENTRIES) * u64::from(ENTRY_SIZE)).div_ceil(sector);
        let total = size / sector;
        // MBR, two headers, two arrays, and one aligned megabyte of data.
        if total < 3 + 2 * array_sectors + ALIGN_BYTES / sector + 1 {
            return Err(format!(
                "the device is too small for a GPT label ({size} bytes)"
            ));
        }
        let last_lba = total - 1;
        Ok(Label {
            sector,
            last_lba,
            disk_guid: random_guid()?,
            first_usable: 2 + array_sectors,
            last_usable: last_lba - array_sectors - 1,
            entry_size: ENTRY_SIZE,
            entries: vec![Entry::empty(ENTRY_SIZE as usize); ENTRIES as usize],
        })
    }

    /// The label on `dev` (`size` bytes, `sector`-byte sectors): `None`
    /// when the primary header's signature is absent, an error when it is
    /// there but the label is damaged.
    pub fn read(dev: &File, size: u64, sector: u32) -> Result<Option<Label>, String> {
        let sector = u64::from(sector);
        let total = size / sector;
        if total < 4 {
            return Ok(None);
        }
        let mut h = vec![0u8; usize::try_from(sector).map_err(|e| e.to_string())?];
        dev.read_exact_at(&mut h, sector)
            .map_err(|e| format!("reading the GPT header: {e}"))?;
        if &h[..8] != SIGNATURE {
            return Ok(None);
        }
        let header_size = le32(&h[12..16]);
        if !(HEADER_SIZE..=u32::try_from(sector).unwrap_or(u32::MAX)).contains(&header_size) {
            return Err(format!("the GPT header says it is {header_size} bytes"));
        }
        let mut copy = h[..header_size as usize].to_vec();
        copy[16..20].fill(0);
        if crc32fast::hash(&copy) != le32(&h[16..20]) {
            return Err("the primary GPT header's checksum is wrong (a damaged label)".into());
        }
        let (my_lba, alternate) = (le64(&h[24..32]), le64(&h[32..40]));
        let (first_usable, last_usable) = (le64(&h[40..48]), le64(&h[48..56]));
        let mut disk_guid = [0u8; 16];
        disk_guid.copy_from_slice(&h[56..72]);
        let array_lba = le64(&h[72..80]);
        let (count, entry_size) = (le32(&h[80..84]), le32(&h[84..88]));
        let last_lba = total - 1;
        if my_lba != 1 || alternate != last_lba {
            return Err(format!(
                "the GPT header places its backup at sector {alternate}, but the device ends at {last_lba} (was the device resized?)"
            ));
        }
        if entry_size < 128 || !entry_size.is_power_of_two() {
            return Err(format!("the GPT entries are {entry_size} bytes each"));
        }
        let array_bytes = u64::from(count) * u64::from(entry_size);
        let array_sectors = array_bytes.div_ceil(sector);
        if count == 0 || array_bytes > MAX_ARRAY {
            return Err(format!("the GPT label has {count} entries"));
        }
        // Every sum is checked: the fields are the device's to choose.
        let array_end = array_lba.checked_add(array_sectors);
        let backup_start = last_usable.checked_add(array_sectors);
        if array_lba < 2
            || array_end.is_none_or(|end| first_usable < end)
            || last_usable < first_usable
            || backup_start.is_none_or(|start| start >= last_lba)
        {
            return Err("the GPT header's layout does not fit the device".into());
        }
        let mut array = vec![0u8; usize::try_from(array_bytes).map_err(|e| e.to_string())?];
        dev.read_exact_at(&mut array, array_lba * sector)
            .map_err(|e| format!("reading the GPT entries: {e}"))?;
        if crc32fast::hash(&array) != le32(&h[88..92]) {
            return Err("the GPT entry array's checksum is wrong (a damaged label)".into());
        }
        let entries: Vec<Entry> = array
            .chunks_exact(entry_size as usize)
            .map(|c| Entry { raw: c.to_vec() })
            .collect();
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.used()) {
            if e.first() < first_usable || e.last() > last_usable || e.last() < e.first() {
                return Err(format!(
                    "GPT partition {} lies outside the usable sectors",
                    i + 1
                ));
            }
        }
        Ok(Some(Label {
            sector,
            last_lba,
            disk_guid,
            first_usable,
            last_usable,
            entry_size,
            entries,
        }))
    }

    /// Writes the whole label: protective MBR, primary header and array,
    /// backup array and header. The array goes before the header that
    /// covers it, so a torn write leaves a header whose checksum fails
    /// rather than one that points at half an array.
    pub fn write(&self, dev: &File) -> std::io::Result<()> {
        let array: Vec<u8> = self.entries.iter().flat_map(|e| e.raw.clone()).collect();
        let array_sectors = (array.len() as u64).div_ceil(self.sector);
        let backup_array = self.last_lba - array_sectors;
        let mut padded = array.clone();
        padded.resize(to_usize(array_sectors * self.sector)?, 0);
        let array_crc = crc32fast::hash(&array);
        dev.write_all_at(&self.mbr()?, 0)?;
        dev.write_all_at(&padded, 2 * self.sector)?;
        dev.write_all_at(&self.header(1, self.last_lba, 2, array_crc)?, self.sector)?;
        dev.write_all_at(&padded, backup_array * self.sector)?;
        let backup = self.header(self.last_lba, 1, backup_array, array_crc)?;
        dev.write_all_at(&backup, self.last_lba * self.sector)?;
        dev.sync_all()
    }

    fn mbr(&self) -> std::io::Result<Vec<u8>> {
        let mut m = vec![0u8; to_usize(self.sector)?];
        let e = &mut m[446..462];
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.last_lba).unwrap_or(u32::MAX);
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        Ok(m)
    }

    fn header(&self, me: u64, other: u64, array: u64, array_crc: u32) -> std::io::Result<Vec<u8>> {
        let mut h = vec![0u8; to_usize(self.sector)?];
        h[..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&me.to_le_bytes());
        h[32..40].copy_from_slice(&other.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid);
        h[72..80].copy_from_slice(&array.to_le_bytes());
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        h[80..84].copy_from_slice(&count.to_le_bytes());
        h[84..88].copy_from_slice(&self.entry_size.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        Ok(h)
    }

    /// Bytes per sector.
    pub fn sector(&self) -> u64 {
        self.sector
    }

    /// The used partitions, by number.
    pub fn partitions(&self) -> Vec<Partition> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.used())
            .map(|(i, e)| Partition {
                number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                first: e.first(),
                last: e.last(),
            })
            .collect()
    }

    /// The partition numbered `number`, if used.
    pub fn partition(&self, number: u32) -> Option<Partition> {
        self.partitions().into_iter().find(|p| p.number == number)
    }

    /// The number the next partition gets: the lowest free entry's.
    pub fn next_number(&self) -> Option<u32> {
        let i = self.entries.iter().position(|e| !e.used())?;
        u32::try_from(i + 1).ok()
    }

    /// The free extents between partitions: (first sector, sectors).
    pub fn free_extents(&self) -> Vec<(u64, u64)> {
        let mut used = self.partitions();
        used.sort_by_key(|p| p.first);
        let mut out = Vec::new();
        let mut next = self.first_usable;
        for p in used {
            if p.first > next {
                out.push((next, p.first - next));
            }
            next = next.max(p.last + 1);
        }
        if next <= self.last_usable {
            out.push((next, self.last_usable - next + 1));
        }
        out
    }

    /// Sectors partitions may use in all.
    #[cfg(test)]
    pub fn usable_sectors(&self) -> u64 {
        self.last_usable - self.first_usable + 1
    }

    /// Adds a partition of at least `bytes` (whole sectors), 1 MiB
    /// aligned, in the first free extent that holds it; `name` is written
    /// as its GPT name.
    pub fn add(&mut self, bytes: u64, name: &str) -> Result<Partition, String> {
        let number = self
            .next_number()
            .ok_or("every entry of the GPT label is in use")?;
        let sectors = bytes.div_ceil(self.sector).max(1);
        let align = (ALIGN_BYTES / self.sector).max(1);
        let place = self.free_extents().into_iter().find_map(|(first, len)| {
            let start = first.div_ceil(align).checked_mul(align)?;
            let end = first.checked_add(len)?;
            (start.checked_add(sectors)? <= end).then_some(start)
        });
        let Some(first) = place else {
            let largest = self.free_extents().iter().map(|e| e.1).max().unwrap_or(0);
            return Err(format!(
                "no free extent holds {bytes} bytes (the largest is {} bytes)",
                largest * self.sector
            ));
        };
        let last = first + sectors - 1;
        let entry = &mut self.entries[number as usize - 1];
        entry.raw.fill(0);
        entry.raw[..16].copy_from_slice(&LINUX_DATA);
        entry.raw[16..32].copy_from_slice(&random_guid()?);
        entry.raw[32..40].copy_from_slice(&first.to_le_bytes());
        entry.raw[40..48].copy_from_slice(&last.to_le_bytes());
        for (i, unit) in name.encode_utf16().take(36).enumerate() {
            entry.raw[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        Ok(Partition {
            number,
            first,
            last,
        })
    }

    /// Empties the entry of partition `number`; the others keep theirs.
    pub fn remove(&mut self, number: u32) -> bool {
        let Some(e) = (number as usize)
            .checked_sub(1)
            .and_then(|i| self.entries.get_mut(i))
        else {
            return false;
        };
        let was = e.used();
        e.raw.fill(0);
        was
    }
}

/// A random (version 4) GUID.
fn random_guid() -> Result<[u8; 16], String> {
    let mut g = [0u8; 16];
    getrandom::fill(&mut g).map_err(|e| format!("no randomness for a GUID: {e}"))?;
    // The version sits in the high nibble of the third field, stored
    // little-endian: byte 7.
    g[7] = (g[7] & 0x0F) | 0x40;
    g[8] = (g[8] & 0x3F) | 0x80;
    Ok(g)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn to_usize(v: u64) -> std::io::Result<usize> {
    usize::try_from(v).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn image(size: u64) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        f
    }

    #[test]
    fn a_written_label_reads_back_with_its_partitions_numbered() {
        let f = image(64 * MIB);
        let mut l = Label::new(64 * MIB, 512).unwrap();
        let a = l.add(8 * MIB, "a").unwrap();
        let b = l.add(8 * MIB, "b").unwrap();
        let c = l.add(8 * MIB, "c").unwrap();
        assert_eq!((a.number, b.number, c.number), (1, 2, 3));
        assert_eq!(a.first, 2048);
        assert_eq!(a.sectors(), 16384);
        assert!(l.remove(2));
        assert!(!l.remove(2));
        assert!(!l.remove(0));
        assert!(!l.remove(9999));
        l.write(f.as_file()).unwrap();
        let back = Label::read(f.as_file(), 64 * MIB, 512).unwrap().unwrap();
        let nums: Vec<u32> = back.partitions().iter().map(|p| p.number).collect();
        assert_eq!(nums, vec![1, 3]);
        assert_eq!(back.partition(3), Some(c));
        // The hole takes the next partition, which gets number 2 again.
        let mut back = back;
        let again = back.add(4 * MIB, "d").unwrap();
        assert_eq!(again.number, 2);
        assert_eq!(again.first, b.first);
    }

    #[test]
    fn too_large_a_partition_says_what_is_free() {
        let mut l = Label::new(16 * MIB, 512).unwrap();
        let e = l.add(64 * MIB, "x").unwrap_err();
        assert!(e.contains("largest"), "{e}");
        assert!(Label::new(MIB, 512).is_err());
    }

    #[test]
    fn a_device_without_a_label_reads_as_none_and_damage_is_refused() {
        let f = image(16 * MIB);
        assert!(Label::read(f.as_file(), 16 * MIB, 512).unwrap().is_none());
        let l = Label::new(16 * MIB, 512).unwrap();
        l.write(f.as_file()).unwrap();
        // A flipped byte in the entry array.
        f.as_file().write_all_at(&[0xFF], 2 * 512 + 5).unwrap();
        let e = Label::read(f.as_file(), 16 * MIB, 512).unwrap_err();
        assert!(e.contains("checksum"), "{e}");
        // A label of a larger device (its backup past the end).
        let l = Label::new(32 * MIB, 512).unwrap();
        l.write(f.as_file()).unwrap();
        let e = Label::read(f.as_file(), 16 * MIB, 512).unwrap_err();
        assert!(e.contains("resized"), "{e}");
    }

    /// Writes `value` at `offset` of the primary header and fixes its
    /// checksum, so only the field's own check can catch it.
    fn patch_header(f: &File, offset: usize, value: &[u8]) {
        let mut h = vec![0u8; 512];
        f.read_exact_at(&mut h, 512).unwrap();
        h[offset..offset + value.len()].copy_from_slice(value);
        let size = (le32(&h[12..16]) as usize).clamp(92, 512);
        h[16..20].fill(0);
        let crc = crc32fast::hash(&h[..size]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, 512).unwrap();
    }

    #[test]
    fn hostile_headers_with_good_checksums_are_refused_not_trusted() {
        let cases: [(usize, Vec<u8>, &str); 8] = [
            (12, 4096u32.to_le_bytes().to_vec(), "bytes"),
            (12, 8u32.to_le_bytes().to_vec(), "bytes"),
            (80, u32::MAX.to_le_bytes().to_vec(), "entries"),
            (80, 0u32.to_le_bytes().to_vec(), "entries"),
            (84, 100u32.to_le_bytes().to_vec(), "bytes each"),
            (72, u64::MAX.to_le_bytes().to_vec(), "layout"),
            (48, 1u64.to_le_bytes().to_vec(), "layout"),
            (24, 7u64.to_le_bytes().to_vec(), "backup"),
        ];
        for (offset, value, says) in cases {
            let f = image(16 * MIB);
            Label::new(16 * MIB, 512)
                .unwrap()
                .write(f.as_file())
                .unwrap();
            patch_header(f.as_file(), offset, &value);
            let e = Label::read(f.as_file(), 16 * MIB, 512).unwrap_err();
            assert!(e.contains(says), "offset {offset}: {e}");
        }
    }

    #[test]
    fn an_entry_outside_the_usable_sectors_is_refused() {
        let f = image(16 * MIB);
        let mut l = Label::new(16 * MIB, 512).unwrap();
        l.add(MIB, "a").unwrap();
        l.entries[0].raw[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        l.write(f.as_file()).unwrap();
        let e = Label::read(f.as_file(), 16 * MIB, 512).unwrap_err();
        assert!(e.contains("outside"), "{e}");
    }

    #[test]
    fn random_damage_never_panics() {
        let f = image(4 * MIB);
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            Label::new(4 * MIB, 512)
                .unwrap()
                .write(f.as_file())
                .unwrap();
            for _ in 0..1 + next() % 8 {
                let at = 512 + next() % (33 * 512);
                f.as_file()
                    .write_all_at(&next().to_le_bytes()[..1], at)
                    .unwrap();
            }
            let _ = Label::read(f.as_file(), 4 * MIB, 512);
        }
    }

    #[test]
    fn free_extents_cover_what_partitions_do_not() {
        let mut l = Label::new(64 * MIB, 4096).unwrap();
        let total = l.usable_sectors();
        let a = l.add(MIB, "a").unwrap();
        let free: u64 = l.free_extents().iter().map(|e| e.1).sum();
        assert_eq!(free + a.sectors(), total);
        assert_eq!(a.first * 4096 % MIB, 0);
    }
}
