//! Consistency check and repair: count every reference to every cluster
//! and compare with the refcounts, as `qemu-img check` does.

use crate::image_file::ImageFile;
use crate::{Error, Result};

use super::l2::{self, Mapping, COPIED, OFFSET_MASK};
use super::meta::Meta;
use super::Qcow2Disk;

/// What to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Only report.
    None,
    /// Lower refcounts that are too high (leaked clusters).
    Leaks,
    /// Also raise refcounts that are too low, and fix COPIED flags.
    All,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Errors that can lose data (refcount below references, bad offsets).
    pub corruptions: u64,
    /// Clusters counted but unused: wasted space, no harm.
    pub leaks: u64,
    /// Corruptions repaired.
    pub corruptions_fixed: u64,
    /// Leaks repaired.
    pub leaks_fixed: u64,
    /// One line per problem found, in qemu-img's words.
    pub messages: Vec<String>,
    /// Guest clusters with data in the active image.
    pub allocated_clusters: u64,
    /// Guest clusters in the virtual disk.
    pub total_clusters: u64,
    /// Allocated clusters not following the previous one on the host.
    pub fragmented_clusters: u64,
    /// Compressed clusters.
    pub compressed_clusters: u64,
    /// End of the last cluster in use.
    pub image_end_offset: u64,
}

/// Problems listed one per line; past this many (a hostile image can have
/// millions of bad entries) the rest are only counted.
const MAX_MESSAGES: usize = 1000;

impl CheckReport {
    /// List one problem (up to [`MAX_MESSAGES`]).
    fn note(&mut self, message: String) {
        match self.messages.len() {
            n if n < MAX_MESSAGES => self.messages.push(message),
            n if n == MAX_MESSAGES => self
                .messages
                .push("(more problems were found; they are counted, not listed)".into()),
            _ => {}
        }
    }
}

struct Walk<'a> {
    /// References counted per cluster, grown to the highest one seen (a
    /// sparse file of a terabyte with a few megabytes in use costs a few
    /// megabytes to check).
    refs: Vec<u64>,
    /// Clusters in the file; a reference past them is an error.
    file_clusters: u64,
    /// References each `inc` adds: the number of snapshots sharing the
    /// L1 table being walked (each is walked once, however many share it).
    weight: u64,
    cluster_bits: u32,
    report: &'a mut CheckReport,
}

impl Walk<'_> {
    fn inc(&mut self, what: &str, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = off >> self.cluster_bits;
        let last = (off + len - 1) >> self.cluster_bits;
        for c in first..=last {
            let Some(i) = usize::try_from(c).ok().filter(|_| c < self.file_clusters) else {
                self.report.corruptions += 1;
                self.report
                    .note(format!("ERROR {what} at {off:#x} is outside the image"));
                return;
            };
            if i >= self.refs.len() {
                self.refs.resize(i + 1, 0);
            }
            self.refs[i] += self.weight;
        }
    }
}

impl<F: ImageFile> Qcow2Disk<F> {
    /// Check the image (holding off all I/O meanwhile) and repair what
    /// `mode` allows.
    pub fn check(&self, mode: RepairMode) -> Result<CheckReport> {
        if mode != RepairMode::None && self.read_only {
            return Err(Error::ReadOnly);
        }
        let _gate = self.exclusive()?;
        let mut m = self.lock_meta();
        m.refs.load_table(&self.file)?;
        m.load_l1(&self.file)?;
        let cs = self.cluster_size();
        let cb = self.cluster_bits;
        let file_len = self.file.len()?;
        let mut report = CheckReport {
            total_clusters: m.header.size.div_ceil(cs),
            ..CheckReport::default()
        };
        let mut w = Walk {
            refs: Vec::new(),
            // Pool clusters may lie past the file's end, not yet written.
            file_clusters: file_len.div_ceil(cs).max(m.file_end >> cb),
            weight: 1,
            cluster_bits: cb,
            report: &mut report,
        };
        w.inc("header", 0, cs);
        w.inc("L1 table", m.l1_offset, m.l1.len() as u64 * 8);
        // Pool clusters are counted on purpose; they are references too.
        for &p in &m.pool {
            w.inc("reserved cluster", p, cs);
        }
        self.walk_l1(&mut w, &m.l1, true)?;
        if !m.snapshots.is_empty() {
            let table = super::snapshot::encode(&m.snapshots)?;
            w.inc(
                "snapshot table",
                m.header.snapshots_offset,
                table.len() as u64,
            );
            // Snapshots naming the same L1 table reference it (and its
            // tree) once each; read and walk it once, with that weight, so
            // 65536 snapshots sharing one 32 MiB table cost one read.
            let mut tables: std::collections::BTreeMap<(u64, u32), u64> = Default::default();
            for s in &m.snapshots {
                *tables.entry((s.l1_table_offset, s.l1_size)).or_insert(0) += 1;
            }
            for ((offset, size), count) in tables {
                w.weight = count;
                w.inc("snapshot L1 table", offset, u64::from(size) * 8);
                let l1 = super::load_l1(&self.file, offset, size)?;
                self.walk_l1(&mut w, &l1, false)?;
            }
            w.weight = 1;
        }
        let (rt_off, rt_clusters) = m.refs.table_location();
        w.inc("refcount table", rt_off, u64::from(rt_clusters) * cs);
        for &b in m.refs.table().to_vec().iter().filter(|&&b| b != 0) {
            w.inc("refcount block", b, cs);
        }
        let refs = std::mem::take(&mut w.refs);
        let mut end = 0u64;
        let mut fixes: Vec<(u64, u64)> = Vec::new();
        let last = (refs.len() as u64).max(m.refs.last_counted(&self.file)?);
        let epb = m.refs.entries_per_block();
        let mut next = 0u64;
        while next < last {
            let c = next;
            next += 1;
            let bi = c / epb;
            if !m.refs.has_block(bi) {
                // No refcount block: every count is 0; only references
                // in its range can disagree.
                let stop = ((bi + 1) * epb).min(last);
                let at = |x: u64| usize::try_from(x).unwrap_or(usize::MAX).min(refs.len());
                let counted = refs[at(c)..at(stop)].iter().any(|&r| r != 0);
                if !counted {
                    next = stop;
                    continue;
                }
            }
            let on_disk = m.refs.get(&self.file, c)?;
            let counted = usize::try_from(c)
                .ok()
                .and_then(|i| refs.get(i))
                .copied()
                .unwrap_or(0);
            if on_disk > 0 || counted > 0 {
                end = c + 1;
            }
            if on_disk == counted {
                continue;
            }
            let leak = on_disk > counted;
            let fix = match mode {
                RepairMode::None => false,
                RepairMode::Leaks => leak,
                RepairMode::All => true,
            };
            report.note(format!(
                "{} cluster {c} refcount={on_disk} reference={counted}",
                if fix {
                    "Repairing"
                } else if leak {
                    "Leaked"
                } else {
                    "ERROR"
                }
            ));
            match (leak, fix) {
                (true, true) => report.leaks_fixed += 1,
                (true, false) => report.leaks += 1,
                (false, true) => report.corruptions_fixed += 1,
                (false, false) => report.corruptions += 1,
            }
            if fix {
                fixes.push((c, counted));
            }
        }
        for (c, v) in fixes {
            m.refs.set(&self.file, c, v)?;
        }
        // COPIED flags are judged against the refcounts as repaired, so
        // one repair run leaves none wrong (QEMU checks them after its
        // refcount pass too).
        let copied_fixes = self.check_copied(&mut m, &mut report)?;
        if mode == RepairMode::All && !copied_fixes.is_empty() {
            for (at, value) in copied_fixes {
                self.file.write_all_at(&value.to_be_bytes(), at)?;
                report.corruptions_fixed += 1;
                report.corruptions = report.corruptions.saturating_sub(1);
            }
            m.l2 = l2::L2Cache::new(cb);
            let l1 = super::load_l1(
                &self.file,
                m.l1_offset,
                u32::try_from(m.l1.len()).unwrap_or(0),
            )?;
            m.l1 = l1;
            m.invalidate_overlap();
        }
        if mode != RepairMode::None {
            self.file.sync_data()?;
        }
        let marked = m.header.incompatible_features & super::header::incompat::CORRUPT != 0;
        if mode == RepairMode::All && report.corruptions == 0 && marked {
            let v = m.header.incompatible_features & !super::header::incompat::CORRUPT;
            self.file.write_all_at(&v.to_be_bytes(), 72)?;
            self.file.sync_data()?;
            m.header.incompatible_features = v;
        }
        report.image_end_offset = end * cs;
        Ok(report)
    }

    /// Count the references of one L1 tree (for the active one, also the
    /// allocation statistics), reporting entries that cannot be right.
    fn walk_l1(&self, w: &mut Walk, l1: &[u64], active: bool) -> Result<()> {
        let cs = self.cluster_size();
        let cb = self.cluster_bits;
        // Every entry references its L2 table; each distinct table is read
        // once, its references weighted by the entries naming it (a
        // hostile L1 naming one table millions of times costs one read).
        // First pass: per-entry checks and the references to the tables.
        for &e1 in l1 {
            if e1 & l2::L1_RESERVED != 0 {
                w.report.corruptions += 1;
                w.report.note(format!(
                    "ERROR found L1 entry with reserved bits set: {e1:x}"
                ));
                // Still count what it points at, as QEMU does: a repair
                // must not free a table because its entry is damaged.
            }
            let off = e1 & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if off & (cs - 1) != 0 {
                w.report.corruptions += 1;
                w.report.note(format!(
                    "ERROR L2 table offset {off:#x} is not cluster aligned"
                ));
                continue;
            }
            w.inc("L2 table", off, cs);
            if off >> cb >= w.file_clusters {
                continue;
            }
        }
        // The tables worth reading: aligned, inside the file, each once.
        let file_clusters = w.file_clusters;
        let readable = move |e1: u64| {
            let off = e1 & OFFSET_MASK;
            (off != 0 && off & (cs - 1) == 0 && off >> cb < file_clusters).then_some(off)
        };
        let mut distinct: Vec<u64> = l1.iter().filter_map(|&e| readable(e)).collect();
        distinct.sort_unstable();
        distinct.dedup();
        distinct.shrink_to_fit();
        let mut counts = vec![0u64; distinct.len()];
        for off in l1.iter().filter_map(|&e| readable(e)) {
            if let Ok(i) = distinct.binary_search(&off) {
                counts[i] += 1;
            }
        }
        // Second pass, in L1 order (for the fragmentation figure): each
        // table at its first entry, weighted by the entries naming it.
        let base = w.weight;
        let mut prev_host: Option<u64> = None;
        for off in l1.iter().filter_map(|&e| readable(e)) {
            let Ok(i) = distinct.binary_search(&off) else {
                continue;
            };
            let weight = std::mem::take(&mut counts[i]);
            if weight == 0 {
                continue;
            }
            w.weight = base.saturating_mul(weight);
            let mut raw = vec![0u8; usize::try_from(cs).unwrap_or(0)];
            self.file.read_exact_at(&mut raw, off)?;
            for e2 in l2::decode_table(&raw) {
                if e2 & l2::COMPRESSED == 0 && e2 & l2::L2_STD_RESERVED != 0 {
                    w.report.corruptions += weight;
                    w.report.note(format!(
                        "ERROR found L2 entry with reserved bits set: {e2:x}"
                    ));
                }
                match l2::decode(e2, cb, self.version) {
                    Mapping::Unallocated | Mapping::Zero { host: 0 } => {}
                    Mapping::Compressed { host, len } => {
                        w.inc("compressed cluster", host, len);
                        if active {
                            w.report.allocated_clusters += weight;
                            w.report.compressed_clusters += weight;
                        }
                    }
                    Mapping::Data { host, .. } | Mapping::Zero { host } => {
                        if host & (cs - 1) != 0 {
                            w.report.corruptions += weight;
                            w.report.note(format!(
                                "ERROR data cluster offset {host:#x} is not cluster aligned"
                            ));
                            continue;
                        }
                        w.inc("data cluster", host, cs);
                        if !active {
                            continue;
                        }
                        w.report.allocated_clusters += weight;
                        if prev_host.is_some_and(|p| p + cs != host) {
                            w.report.fragmented_clusters += 1;
                        }
                        prev_host = Some(host);
                    }
                }
            }
        }
        w.weight = base;
        Ok(())
    }

    /// Check the COPIED flag of every active L1 and L2 entry against the
    /// refcounts; returns the fixes (file offset, corrected entry).
    fn check_copied(&self, m: &mut Meta, report: &mut CheckReport) -> Result<Vec<(u64, u64)>> {
        let cs = self.cluster_size();
        let cb = self.cluster_bits;
        let end_cluster = self.file.len()?.div_ceil(cs);
        let mut fixes = Vec::new();
        // A table named by several entries is looked at once.
        let mut distinct: Vec<u64> = m.l1.iter().map(|e| e & OFFSET_MASK).collect();
        distinct.sort_unstable();
        distinct.dedup();
        distinct.shrink_to_fit();
        let mut seen = vec![false; distinct.len()];
        for (i1, e1) in m.l1.clone().into_iter().enumerate() {
            let off = e1 & OFFSET_MASK;
            if e1 & l2::L1_RESERVED != 0
                || off == 0
                || off & (cs - 1) != 0
                || off >> cb >= end_cluster
            {
                continue;
            }
            let rc = m.refs.get(&self.file, off >> cb)?;
            if (rc == 1) != (e1 & COPIED != 0) {
                report.corruptions += 1;
                report.note(format!(
                    "ERROR OFLAG_COPIED L2 cluster: l1_index={i1} l1_entry={e1:x} refcount={rc}"
                ));
                let fixed = if rc == 1 { e1 | COPIED } else { e1 & !COPIED };
                fixes.push((m.l1_offset + 8 * i1 as u64, fixed));
            }
            match distinct.binary_search(&off) {
                Ok(i) if !seen[i] => seen[i] = true,
                _ => continue,
            }
            let mut raw = vec![0u8; usize::try_from(cs).unwrap_or(0)];
            self.file.read_exact_at(&mut raw, off)?;
            for (i2, e2) in l2::decode_table(&raw).into_iter().enumerate() {
                if e2 & l2::COMPRESSED == 0 && e2 & l2::L2_STD_RESERVED != 0 {
                    continue;
                }
                let host = match l2::decode(e2, cb, self.version) {
                    Mapping::Data { host, .. } | Mapping::Zero { host } if host != 0 => host,
                    _ => continue,
                };
                if host & (cs - 1) != 0 || host >> cb >= end_cluster {
                    continue;
                }
                let rc = m.refs.get(&self.file, host >> cb)?;
                if (rc == 1) != (e2 & COPIED != 0) {
                    report.corruptions += 1;
                    report.note(format!(
                        "ERROR OFLAG_COPIED data cluster: l2_entry={e2:x} refcount={rc}"
                    ));
                    let fixed = if rc == 1 { e2 | COPIED } else { e2 & !COPIED };
                    fixes.push((off + 8 * i2 as u64, fixed));
                }
            }
        }
        Ok(fixes)
    }
}
