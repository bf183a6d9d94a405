//! The memory balloon as the VMM sets it up and drives it: the
//! `--balloon` options, the target checked against guest RAM, and what
//! `GET` and `PUT /vm/balloon` read and change.
//!
//! The target is the guest memory size the balloon aims for (libvirt's
//! `currentMemory`): the balloon itself holds `memory - target`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use virtio::balloon::{BalloonControl, PAGE_SIZE};

use crate::api::{ApiError, BalloonInfo, BalloonSpec};
use crate::device_config::{on_off, pairs};

/// The smallest target: below it the guest would be asked for all but
/// the pages its own kernel image sits in, which no guest can give; a
/// typo (`target=4` meaning GiB, read as MiB) is caught rather than
/// squeezing the guest into its OOM killer.
pub const MIN_TARGET: u64 = 4 << 20;

/// The largest `target_kib` the API takes: 16 TiB, the most guest RAM
/// the API document allows.
pub const MAX_TARGET_KIB: u64 = 1 << 34;

/// The longest statistics period, in seconds (libvirt's is a C int).
pub const MAX_STATS_PERIOD: u32 = i32::MAX as u32;

/// One `--balloon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BalloonConfig {
    /// Guest memory the balloon aims for, in bytes; `None`: all of it
    /// (the balloon starts empty).
    pub target: Option<u64>,
    /// The guest may take pages back from the balloon when it runs out
    /// of memory.
    pub deflate_on_oom: bool,
    /// The guest reports free pages, which the host takes back.
    pub free_page_reporting: bool,
    /// Seconds between requests for fresh statistics; 0: never.
    pub stats_period: u32,
}

impl FromStr for BalloonConfig {
    type Err = String;

    /// `[target=SIZE][,deflate-on-oom=on|off][,free-page-reporting=on|off][,stats-period=SECS]`;
    /// a bare size is in MiB, as for `--memory`.
    fn from_str(s: &str) -> Result<Self, String> {
        const WHAT: &str = "--balloon";
        let known = [
            "target",
            "deflate-on-oom",
            "free-page-reporting",
            "stats-period",
        ];
        let mut b = BalloonConfig::default();
        for (k, v) in pairs(WHAT, s, &known)? {
            match k.as_str() {
                "target" => {
                    let size = crate::config::parse_size(&v, 20, "balloon target", "512M, 1G")
                        .map_err(|e| format!("{WHAT}: {e}"))?;
                    if size == 0 {
                        return Err(format!("{WHAT}: target={v} is zero"));
                    }
                    b.target = Some(size);
                }
                "deflate-on-oom" => b.deflate_on_oom = on_off(WHAT, &k, &v)?,
                "free-page-reporting" => b.free_page_reporting = on_off(WHAT, &k, &v)?,
                "stats-period" => {
                    b.stats_period = v
                        .parse::<u32>()
                        .ok()
                        .filter(|p| *p <= MAX_STATS_PERIOD)
                        .ok_or_else(|| {
                            format!(
                                "{WHAT}: stats-period={v} must be a number of seconds from 0 \
                                 (off) to {MAX_STATS_PERIOD}"
                            )
                        })?
                }
                _ => return Err(format!("{WHAT}: option '{k}' is not handled")),
            }
        }
        Ok(b)
    }
}

/// The balloon size in 4 KiB pages for a guest of `memory` bytes aiming
/// at `target` bytes (rounded down to whole pages), or why it cannot be.
pub fn balloon_pages(target: u64, memory: u64) -> Result<u32, String> {
    if target > memory {
        return Err(format!(
            "the balloon target {} is above the guest's memory ({})",
            shown(target),
            shown(memory)
        ));
    }
    if target < MIN_TARGET.min(memory) {
        return Err(format!(
            "the balloon target {} is below the floor of {}",
            shown(target),
            shown(MIN_TARGET.min(memory))
        ));
    }
    let target = target - target % PAGE_SIZE;
    u32::try_from((memory - target).div_ceil(PAGE_SIZE))
        .map_err(|_| "the balloon would hold more than 2^32 pages".to_string())
}

/// A size in MiB when it is whole MiB, else in KiB, else in bytes.
fn shown(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// The device configuration for a VM of `memory` bytes.
pub(crate) fn device_config(
    config: &BalloonConfig,
    memory: u64,
) -> Result<virtio::balloon::BalloonConfig, String> {
    Ok(virtio::balloon::BalloonConfig {
        num_pages: balloon_pages(config.target.unwrap_or(memory), memory)?,
        deflate_on_oom: config.deflate_on_oom,
        free_page_reporting: config.free_page_reporting,
        stats_period: config.stats_period,
    })
}

/// The balloon statistics the guest sends, under libvirt's dommemstat
/// names, and whether the value is a size (sent in bytes, shown in KiB).
const STATS: [(&str, bool); 10] = [
    ("swap_in", true),
    ("swap_out", true),
    ("major_fault", false),
    ("minor_fault", false),
    ("unused", true),
    ("available", true),
    ("usable", true),
    ("disk_caches", true),
    ("hugetlb_pgalloc", false),
    ("hugetlb_pgfail", false),
];

/// What `GET /vm/balloon` answers for a VM of `memory` bytes.
pub(crate) fn info(control: &BalloonControl, memory: u64) -> BalloonInfo {
    let kib = |pages: u32| memory.saturating_sub(u64::from(pages) * PAGE_SIZE) >> 10;
    let stats = control.stats();
    let values = stats
        .values
        .iter()
        .filter_map(|(tag, value)| {
            let (name, size) = STATS.get(usize::from(*tag))?;
            Some((name.to_string(), if *size { value >> 10 } else { *value }))
        })
        .collect::<BTreeMap<_, _>>();
    BalloonInfo {
        target_kib: kib(control.num_pages()),
        actual_kib: kib(control.actual_pages()),
        stats_period: control.stats_period(),
        last_update: stats
            .last_update
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        stats: values,
    }
}

/// Carry out `PUT /vm/balloon` for a VM of `memory` bytes.
pub(crate) fn apply(
    control: &BalloonControl,
    memory: u64,
    spec: &BalloonSpec,
) -> Result<(), ApiError> {
    if spec.target_kib.is_none() && spec.stats_period.is_none() {
        return Err(ApiError::new(400, "give target_kib, stats_period or both"));
    }
    if let Some(period) = spec.stats_period.filter(|p| *p > MAX_STATS_PERIOD) {
        return Err(ApiError::new(
            400,
            format!("stats_period {period} is above {MAX_STATS_PERIOD}"),
        ));
    }
    if let Some(kib) = spec.target_kib.filter(|k| *k == 0 || *k > MAX_TARGET_KIB) {
        return Err(ApiError::new(
            400,
            format!("target_kib {kib} is out of range (1 to {MAX_TARGET_KIB})"),
        ));
    }
    let pages = match spec.target_kib {
        Some(kib) => Some(balloon_pages(kib << 10, memory).map_err(|e| ApiError::new(422, e))?),
        None => None,
    };
    if let Some(pages) = pages {
        control.set_num_pages(pages);
    }
    if let Some(period) = spec.stats_period {
        control.set_stats_period(period);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balloon_options() {
        let b: BalloonConfig = "target=1G,deflate-on-oom=on,free-page-reporting=on,stats-period=5"
            .parse()
            .unwrap();
        assert_eq!(
            b,
            BalloonConfig {
                target: Some(1 << 30),
                deflate_on_oom: true,
                free_page_reporting: true,
                stats_period: 5,
            }
        );
        assert_eq!("".parse::<BalloonConfig>(), Ok(BalloonConfig::default()));
        assert_eq!(
            "target=512".parse::<BalloonConfig>().unwrap().target,
            Some(512 << 20)
        );
        let err = |s: &str| s.parse::<BalloonConfig>().unwrap_err();
        assert!(err("target=0").contains("zero"));
        assert!(err("target=lots").contains("invalid balloon target"));
        assert!(err("stats-period=-1").contains("from 0"));
        assert!(err("stats-period=2147483648").contains("from 0"));
        assert!(err("deflate-on-oom=maybe").contains("on or off"));
        assert!(err("size=1G").contains("unknown option 'size'"));
        assert!(err("target=1G,target=2G").contains("given twice"));
    }

    #[test]
    fn targets_are_checked_against_memory() {
        let mem = 1 << 30;
        assert_eq!(balloon_pages(mem, mem), Ok(0));
        assert_eq!(balloon_pages(mem / 2, mem), Ok(1 << 17));
        // Rounded down to whole pages: one more page in the balloon.
        assert_eq!(balloon_pages(mem - 1, mem), Ok(1));
        assert!(balloon_pages(mem + 4096, mem)
            .unwrap_err()
            .contains("above the guest's memory"));
        assert!(balloon_pages(1 << 20, mem)
            .unwrap_err()
            .contains("below the floor of 4 MiB"));
        assert!(balloon_pages(1024, mem)
            .unwrap_err()
            .contains("target 1 KiB is below"));
        assert_eq!(balloon_pages(MIN_TARGET, mem), Ok(255 << 10));
    }
}
