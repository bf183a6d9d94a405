//! CPU topology: how vCPUs group into threads, cores, dies and sockets, and
//! the APIC ID each one gets.
//!
//! APIC IDs are bit fields, as on real x86 parts: thread in the low bits,
//! then core, die and socket, each field as wide as its count needs. With
//! counts that are not powers of two the IDs therefore have gaps (two
//! sockets of three cores: 0, 1, 2, 4, 5, 6). CPUID's topology leaves, the
//! MADT and SRAT, and `KVM_CREATE_VCPU` all use these IDs.

use std::fmt;
use std::str::FromStr;

/// Sockets, dies per socket, cores per die, threads per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// Sockets (packages).
    pub sockets: u32,
    /// Dies per socket.
    pub dies: u32,
    /// Cores per die.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

/// Bits needed to number `n` items (ceil(log2(n))).
pub fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

impl CpuTopology {
    /// Vireo's layout without `--cpu-topology`: one socket of `count`
    /// single-threaded cores, so vCPU `i` has APIC ID `i`.
    pub fn flat(count: u32) -> Self {
        Self {
            sockets: 1,
            dies: 1,
            cores: count,
            threads: 1,
        }
    }

    /// vCPUs in the whole machine.
    pub fn count(&self) -> u64 {
        u64::from(self.sockets)
            * u64::from(self.dies)
            * u64::from(self.cores)
            * u64::from(self.threads)
    }

    /// Logical processors in one socket.
    pub fn per_socket(&self) -> u32 {
        self.dies
            .saturating_mul(self.cores)
            .saturating_mul(self.threads)
    }

    /// Width of the thread field of an APIC ID.
    pub fn thread_bits(&self) -> u32 {
        bits_for(self.threads)
    }

    /// Width of the core field.
    pub fn core_bits(&self) -> u32 {
        bits_for(self.cores)
    }

    /// Width of the die field.
    pub fn die_bits(&self) -> u32 {
        bits_for(self.dies)
    }

    /// Where the socket field starts: the bits one socket spans.
    pub fn socket_shift(&self) -> u32 {
        self.thread_bits() + self.core_bits() + self.die_bits()
    }

    /// (socket, die, core, thread) of vCPU `index`, numbered as QEMU does:
    /// threads of a core first, then cores of a die, and so on.
    pub fn position(&self, index: u32) -> (u32, u32, u32, u32) {
        let thread = index % self.threads;
        let core = (index / self.threads) % self.cores;
        let die = (index / (self.threads * self.cores)) % self.dies;
        let socket = index / (self.threads * self.cores * self.dies);
        (socket, die, core, thread)
    }

    /// The APIC ID of vCPU `index`.
    pub fn apic_id(&self, index: u32) -> u32 {
        let (socket, die, core, thread) = self.position(index);
        let tb = self.thread_bits();
        let cb = self.core_bits();
        let db = self.die_bits();
        thread | core << tb | die << (tb + cb) | socket << (tb + cb + db)
    }

    /// The APIC IDs of every vCPU, by index.
    pub fn apic_ids(&self) -> Vec<u32> {
        let n = u32::try_from(self.count()).unwrap_or(u32::MAX);
        (0..n).map(|i| self.apic_id(i)).collect()
    }
}

impl fmt::Display for CpuTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sockets={},dies={},cores={},threads={}",
            self.sockets, self.dies, self.cores, self.threads
        )
    }
}

impl FromStr for CpuTopology {
    type Err = String;

    /// `sockets=S,dies=D,cores=C,threads=T`; `dies` defaults to 1, the
    /// others are required.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut sockets = None;
        let mut dies = None;
        let mut cores = None;
        let mut threads = None;
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("cpu topology: '{part}' is not key=value"))?;
            let slot = match key {
                "sockets" => &mut sockets,
                "dies" => &mut dies,
                "cores" => &mut cores,
                "threads" => &mut threads,
                _ => {
                    return Err(format!(
                        "cpu topology: unknown key '{key}' (sockets, dies, cores, threads)"
                    ))
                }
            };
            if slot.is_some() {
                return Err(format!("cpu topology: {key}= is given twice"));
            }
            *slot = Some(match value.parse::<u32>() {
                Ok(n @ 1..=255) => n,
                _ => {
                    return Err(format!(
                        "cpu topology: {key}='{value}' is not a number from 1 to 255"
                    ))
                }
            });
        }
        let need = |v: Option<u32>, key: &str| {
            v.ok_or_else(|| format!("cpu topology: {key}= is required"))
        };
        Ok(Self {
            sockets: need(sockets, "sockets")?,
            dies: dies.unwrap_or(1),
            cores: need(cores, "cores")?,
            threads: need(threads, "threads")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_is_apic_id_equals_index() {
        let t = CpuTopology::flat(5);
        assert_eq!(t.apic_ids(), vec![0, 1, 2, 3, 4]);
        assert_eq!(CpuTopology::flat(1).apic_ids(), vec![0]);
    }

    #[test]
    fn bit_fields_leave_gaps_for_counts_that_are_not_powers_of_two() {
        let t: CpuTopology = "sockets=2,cores=3,threads=1".parse().unwrap();
        assert_eq!(t.apic_ids(), vec![0, 1, 2, 4, 5, 6]);
        let t: CpuTopology = "sockets=2,dies=2,cores=3,threads=2".parse().unwrap();
        assert_eq!(t.count(), 24);
        assert_eq!((t.thread_bits(), t.core_bits(), t.die_bits()), (1, 2, 1));
        // vCPU 7: thread 1 of core 0 of die 1 of socket 0.
        assert_eq!(t.position(7), (0, 1, 0, 1));
        assert_eq!(t.apic_id(7), (1 << 3) | 1, "die 1 at bit 3, thread 1");
        // vCPU 12: first of socket 1.
        assert_eq!(t.apic_id(12), 1 << 4);
        assert_eq!(t.apic_id(23), (1 << 4) | (1 << 3) | (2 << 1) | 1);
    }

    #[test]
    fn parsing_and_refusals() {
        let t: CpuTopology = "sockets=1,cores=2,threads=2".parse().unwrap();
        assert_eq!(t.dies, 1);
        assert_eq!(t.to_string(), "sockets=1,dies=1,cores=2,threads=2");
        for (s, why) in [
            ("sockets=1,cores=2", "threads= is required"),
            ("cores=2,threads=1", "sockets= is required"),
            ("sockets=0,cores=1,threads=1", "not a number from 1 to 255"),
            ("sockets=x,cores=1,threads=1", "not a number"),
            ("sockets=1,cores=1,threads=1,books=2", "unknown key 'books'"),
            ("sockets=1,sockets=2,cores=1,threads=1", "given twice"),
            ("sockets", "not key=value"),
        ] {
            let err = s.parse::<CpuTopology>().unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }
}
