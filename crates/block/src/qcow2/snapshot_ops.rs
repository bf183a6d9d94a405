//! Creating and deleting internal snapshots.
//!
//! A snapshot is a copy of the active L1 table; every L2 table and data
//! cluster it reaches gains a reference, so writes to the active image
//! copy those clusters first (COPIED flags clear) and the snapshot keeps
//! the old contents.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::image_file::ImageFile;
use crate::{Error, Result};

use super::l2::{self, Mapping, COPIED, OFFSET_MASK};
use super::meta::{Meta, Release};
use super::snapshot::{self, Snapshot};
use super::Qcow2Disk;

/// Header offset of nb_snapshots (followed by snapshots_offset).
const HEADER_SNAPSHOT_FIELDS: u64 = 60;

impl<F: ImageFile> Qcow2Disk<F> {
    /// The image's internal snapshots.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.lock_meta().snapshots.clone()
    }

    /// Take a disk-only snapshot of the active image, named `name`.
    pub fn create_snapshot(&self, name: &str) -> Result<Snapshot> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let _gate = self.exclusive()?;
        let mut m = self.lock_meta();
        if m.snapshots.iter().any(|s| s.name == name) {
            return Err(Error::Refused(format!(
                "a snapshot named '{name}' already exists"
            )));
        }
        if m.snapshots.len() >= snapshot::MAX_SNAPSHOTS as usize {
            return Err(Error::Unsupported("more snapshots"));
        }
        let cs = self.cluster_size();
        let active = m.l1.clone();
        // Count the snapshot's references first: a crash leaves leaks.
        self.adjust_tree(&mut m, &active, 1)?;
        let l1_clusters = (active.len() as u64 * 8).div_ceil(cs);
        let l1_off = if l1_clusters > 0 {
            let off = m.alloc_contiguous(&self.file, l1_clusters)?;
            let copy: Vec<u64> = active.iter().map(|e| e & !COPIED).collect();
            self.file.write_all_at(&l2::encode_table(&copy), off)?;
            off
        } else {
            0
        };
        self.update_copied_flags(&mut m)?;
        let id = m
            .snapshots
            .iter()
            .filter_map(|s| s.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let snap = Snapshot {
            l1_table_offset: l1_off,
            l1_size: u32::try_from(active.len()).unwrap_or(0),
            id: id.to_string(),
            name: name.to_string(),
            date_sec: u32::try_from(now.as_secs()).unwrap_or(u32::MAX),
            date_nsec: now.subsec_nanos(),
            vm_clock_nsec: 0,
            vm_state_size: 0,
            disk_size: Some(m.header.size),
            extra_tail: Vec::new(),
        };
        let mut list = m.snapshots.clone();
        list.push(snap.clone());
        self.write_snapshot_table(&mut m, list)?;
        Ok(snap)
    }

    /// Delete the snapshot named (or numbered) `which`.
    pub fn delete_snapshot(&self, which: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let _gate = self.exclusive()?;
        let mut m = self.lock_meta();
        let pos = m
            .snapshots
            .iter()
            .position(|s| s.id == which || s.name == which)
            .ok_or_else(|| no_snapshot(which))?;
        let mut list = m.snapshots.clone();
        let gone = list.remove(pos);
        // Unlink it first; only then drop the references it held.
        self.write_snapshot_table(&mut m, list)?;
        let l1 = super::load_l1(&self.file, gone.l1_table_offset, gone.l1_size)?;
        self.adjust_tree(&mut m, &l1, -1)?;
        let cs = self.cluster_size();
        let l1_clusters = (u64::from(gone.l1_size) * 8).div_ceil(cs);
        let rel: Vec<Release> = (0..l1_clusters)
            .map(|i| Release::Cluster(gone.l1_table_offset + i * cs))
            .collect();
        m.release(&self.file, &rel)?;
        self.update_copied_flags(&mut m)?;
        self.file.sync_data()
    }

    /// Revert the active image to the snapshot named (or numbered) `which`
    /// (qemu-img's `snapshot -a`); the snapshot stays.
    pub fn apply_snapshot(&self, which: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        let _gate = self.exclusive()?;
        let mut m = self.lock_meta();
        let snap = m
            .snapshots
            .iter()
            .find(|s| s.id == which || s.name == which)
            .cloned()
            .ok_or_else(|| no_snapshot(which))?;
        let cs = self.cluster_size();
        let size = snap.disk_size.unwrap_or(m.header.size);
        let snap_l1 = super::load_l1(&self.file, snap.l1_table_offset, snap.l1_size)?;
        // The new active tree gains references first: a crash leaks.
        self.adjust_tree(&mut m, &snap_l1, 1)?;
        let entries = snap_l1.len().max(1);
        let n = (entries as u64 * 8).div_ceil(cs);
        let new_off = m.alloc_contiguous(&self.file, n)?;
        let mut table: Vec<u64> = snap_l1.iter().map(|e| e & !COPIED).collect();
        table.resize(usize::try_from(n * cs / 8).unwrap_or(0), 0);
        self.file.write_all_at(&l2::encode_table(&table), new_off)?;
        self.file.sync_data()?;
        let mut fields = [0u8; 12];
        fields[..4].copy_from_slice(&snap.l1_size.to_be_bytes());
        fields[4..].copy_from_slice(&new_off.to_be_bytes());
        self.file.write_all_at(&fields, 36)?;
        self.file.write_all_at(&size.to_be_bytes(), 24)?;
        self.file.sync_data()?;
        let old_l1 = std::mem::replace(&mut m.l1, snap_l1);
        let old_off = m.l1_offset;
        m.l1_offset = new_off;
        m.invalidate_overlap();
        m.header.l1_size = snap.l1_size;
        m.header.l1_table_offset = new_off;
        m.header.size = size;
        self.size.store(size, std::sync::atomic::Ordering::Release);
        // Only now does the old tree lose its references.
        self.adjust_tree(&mut m, &old_l1, -1)?;
        let old_clusters = (old_l1.len() as u64 * 8).div_ceil(cs);
        if old_off != 0 {
            let rel: Vec<Release> = (0..old_clusters)
                .map(|i| Release::Cluster(old_off + i * cs))
                .collect();
            m.release(&self.file, &rel)?;
        }
        self.update_copied_flags(&mut m)
    }

    /// Write a new snapshot table, point the header at it, free the old.
    fn write_snapshot_table(&self, m: &mut Meta, list: Vec<Snapshot>) -> Result<()> {
        let cs = self.cluster_size();
        let raw = snapshot::encode(&list)?;
        let new_off = if raw.is_empty() {
            0
        } else {
            let n = (raw.len() as u64).div_ceil(cs);
            let off = m.alloc_contiguous(&self.file, n)?;
            self.file.write_all_at(&raw, off)?;
            off
        };
        self.file.sync_data()?;
        let count = u32::try_from(list.len()).unwrap_or(0);
        let mut fields = [0u8; 12];
        fields[..4].copy_from_slice(&count.to_be_bytes());
        fields[4..].copy_from_slice(&new_off.to_be_bytes());
        self.file.write_all_at(&fields, HEADER_SNAPSHOT_FIELDS)?;
        self.file.sync_data()?;
        let old_len = snapshot::encode(&m.snapshots)?.len() as u64;
        let old_off = m.header.snapshots_offset;
        m.header.nb_snapshots = count;
        m.header.snapshots_offset = new_off;
        m.snapshots = list;
        m.invalidate_overlap();
        if old_off != 0 && old_len > 0 {
            let rel: Vec<Release> = (0..old_len.div_ceil(cs))
                .map(|i| Release::Cluster(old_off + i * cs))
                .collect();
            m.release(&self.file, &rel)?;
        }
        Ok(())
    }

    /// Add `delta` to the refcount of every L2 table and data cluster the
    /// L1 table `l1` reaches.
    fn adjust_tree(&self, m: &mut Meta, l1: &[u64], delta: i64) -> Result<()> {
        let cs = self.cluster_size();
        let cb = self.cluster_bits;
        let mut freed = Vec::new();
        for &e1 in l1 {
            let off = e1 & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            let end = m.file_end;
            let table = m.l2.get(&self.file, off, end)?.clone();
            for e2 in table {
                let clusters = match l2::decode(e2, cb, self.version) {
                    Mapping::Unallocated | Mapping::Zero { host: 0 } => continue,
                    Mapping::Data { host, .. } | Mapping::Zero { host } => {
                        (host >> cb)..=(host >> cb)
                    }
                    Mapping::Compressed { host, len } => l2::compressed_clusters(host, len, cb),
                };
                for c in clusters {
                    if m.refs.adjust(&self.file, c, delta)? == 0 {
                        freed.push(c << cb);
                    }
                }
            }
            if m.refs.adjust(&self.file, off >> cb, delta)? == 0 {
                m.l2.remove(off);
                freed.push(off);
            }
        }
        for off in freed {
            self.file.punch_hole(off, cs)?;
        }
        Ok(())
    }

    /// Make the active tables' COPIED flags say whether each refcount is 1.
    fn update_copied_flags(&self, m: &mut Meta) -> Result<()> {
        let cb = self.cluster_bits;
        for i1 in 0..m.l1.len() {
            let e1 = m.l1[i1];
            let off = e1 & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            let end = m.file_end;
            let mut table = m.l2.get(&self.file, off, end)?.clone();
            let mut changed = false;
            for e2 in table.iter_mut() {
                let host = match l2::decode(*e2, cb, self.version) {
                    Mapping::Data { host, .. } => host,
                    Mapping::Zero { host } if host != 0 => host,
                    _ => continue,
                };
                let want = if m.refs.get(&self.file, host >> cb)? == 1 {
                    *e2 | COPIED
                } else {
                    *e2 & !COPIED
                };
                if want != *e2 {
                    *e2 = want;
                    changed = true;
                }
            }
            if changed {
                self.file.write_all_at(&l2::encode_table(&table), off)?;
                m.l2.insert(off, table);
            }
            let want = if m.refs.get(&self.file, off >> cb)? == 1 {
                e1 | COPIED
            } else {
                e1 & !COPIED
            };
            if want != e1 {
                m.set_l1(&self.file, i1, want)?;
            }
        }
        self.file.sync_data()
    }
}

/// The error for a snapshot name or ID the image does not have.
pub(crate) fn no_snapshot(which: &str) -> Error {
    Error::Refused(format!(
        "no snapshot '{which}' (vireo img snapshot -l lists them)"
    ))
}
