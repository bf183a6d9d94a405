//! libvirt's set syntax for host CPUs, host NUMA nodes and guest vCPUs:
//! `0-3,^2,8` is 0, 1, 3 and 8.

use std::collections::BTreeSet;
use std::fmt;

/// The highest member a set may name. libvirt's own CPU masks are 16384
/// bits wide; nothing on an x86_64 host or guest comes near it, and the
/// bound keeps `0-4294967295` from allocating.
pub const MAX_MEMBER: u32 = 16383;

/// A set of CPU or node numbers, written back in libvirt's normal form
/// (ascending ranges, `0-1,3`), as `virsh dumpxml` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuSet(BTreeSet<u32>);

impl CpuSet {
    /// Parses `0-3,^2,8`: comma-separated numbers and ranges, each `^n`
    /// removing `n` from what came before it. The result must not be
    /// empty.
    pub fn parse(text: &str) -> Result<CpuSet, String> {
        let mut set = BTreeSet::new();
        for item in text.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("'{text}' has an empty item"));
            }
            if let Some(n) = item.strip_prefix('^') {
                set.remove(&member(text, n)?);
                continue;
            }
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (member(text, lo)?, member(text, hi)?),
                None => {
                    let n = member(text, item)?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(format!("'{text}': the range {lo}-{hi} runs backwards"));
            }
            set.extend(lo..=hi);
        }
        if set.is_empty() {
            return Err(format!("'{text}' is an empty set"));
        }
        Ok(CpuSet(set))
    }

    /// A set of the given members.
    pub fn of(members: impl IntoIterator<Item = u32>) -> CpuSet {
        CpuSet(members.into_iter().collect())
    }

    /// The members, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// Whether `n` is a member.
    pub fn contains(&self, n: u32) -> bool {
        self.0.contains(&n)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set has no members (only a set built with
    /// [`CpuSet::of`] can be empty).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The highest member.
    pub fn max(&self) -> Option<u32> {
        self.0.last().copied()
    }

    /// Whether the two sets share a member.
    pub fn intersects(&self, other: &CpuSet) -> bool {
        self.0.iter().any(|n| other.0.contains(n))
    }
}

fn member(text: &str, n: &str) -> Result<u32, String> {
    let v: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("'{text}': '{n}' is not a number"))?;
    if v > MAX_MEMBER {
        return Err(format!("'{text}': {v} is above {MAX_MEMBER}"));
    }
    Ok(v)
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(lo) = iter.next() {
            let mut hi = lo;
            while iter.peek() == Some(&(hi + 1)) {
                hi += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_exclusions_and_normal_form() {
        let s = CpuSet::parse("0-3,^2,8").unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 1, 3, 8]);
        assert_eq!(s.to_string(), "0-1,3,8");
        assert_eq!(CpuSet::parse(" 5 , 4,6").unwrap().to_string(), "4-6");
        assert_eq!(CpuSet::parse("7").unwrap().max(), Some(7));
    }

    #[test]
    fn bad_sets_say_why() {
        for (bad, why) in [
            ("", "empty item"),
            ("1,,2", "empty item"),
            ("3-1", "backwards"),
            ("a", "not a number"),
            ("0-99999", "above"),
            ("2,^2", "empty set"),
            ("-1", "not a number"),
        ] {
            let e = CpuSet::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
