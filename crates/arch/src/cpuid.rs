//! The CPUID leaves each vCPU sees: the host's supported set, with topology
//! and APIC IDs filled per vCPU, the hypervisor leaves, and an optional
//! template that hides features.

use std::str::FromStr;

use hypervisor::kvm_bindings::{kvm_cpuid_entry2, CpuId};
use hypervisor::Vcpu;

use crate::topology::CpuTopology;
use crate::Error;

/// Which CPU features a guest is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuTemplate {
    /// Everything KVM supports on this host.
    #[default]
    Host,
    /// Hides what a software-emulated KVM cannot run at CPL 0: the XSAVE
    /// family, CMPXCHG16B, and AVX and everything after it.
    Minimal,
}

impl FromStr for CpuTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(Self::Host),
            "minimal" => Ok(Self::Minimal),
            _ => Err(format!(
                "unknown CPU template '{s}' (expected host or minimal)"
            )),
        }
    }
}

// Leaf 1 ECX.
const ECX_CMPXCHG16B: u32 = 1 << 13;
const ECX_FMA: u32 = 1 << 12;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;
const ECX_F16C: u32 = 1 << 29;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 1 EDX.
const EDX_HTT: u32 = 1 << 28;
// Leaf 7.0 EBX: AVX2, and the AVX-512 family.
const L7_EBX_AVX: u32 = (1 << 5)
    | (1 << 16)
    | (1 << 17)
    | (1 << 21)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);
// Leaf 7.0 ECX: AVX-512 VBMI, VBMI2, GFNI-AVX forms, VAES, VPCLMULQDQ,
// VNNI, BITALG, VPOPCNTDQ.
const L7_ECX_AVX: u32 =
    (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14);
// Leaf 7.0 EDX: AVX-512 4VNNIW/4FMAPS, VP2INTERSECT, FP16, AMX.
const L7_EDX_AVX: u32 = (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23) | (1 << 24);
// Leaf 7.1 EAX: AVX-VNNI, AVX512-BF16.
const L71_EAX_AVX: u32 = (1 << 4) | (1 << 5);

/// Leaf 0xB / 0x1F level types (ECX[15:8]).
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;
const LEVEL_DIE: u32 = 5;
/// Leaf 0x8000_0001 ECX: topology extensions (leaf 0x8000_001E is valid).
const AMD_ECX_TOPOEXT: u32 = 1 << 22;

/// CPUID for vCPU `index` of a machine shaped as `topology`, from the
/// host-supported set.
///
/// Every leaf that describes topology says the same thing as the APIC IDs
/// ([`CpuTopology::apic_id`]) the MADT lists: leaf 0x1 (initial APIC ID,
/// logical processors per package), leaf 0x4 (cores per package, threads
/// sharing each cache), leaf 0xB (and 0x1F when there are several dies)
/// with the x2APIC ID, and on AMD hosts leaves 0x8000_0008 and 0x8000_001E.
pub fn vcpu_cpuid(
    supported: &CpuId,
    index: u32,
    topology: &CpuTopology,
    template: CpuTemplate,
) -> Result<CpuId, Error> {
    let apic_id = topology.apic_id(index);
    let (_, die, core, _) = topology.position(index);
    let per_socket = topology.per_socket();
    let tb = topology.thread_bits();
    let cb = topology.core_bits();
    let socket_shift = topology.socket_shift();
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .copied()
        .filter(|e| !(template == CpuTemplate::Minimal && e.function == 0xd))
        // Leaf 0x1F is rebuilt below when the machine has dies; without
        // them leaf 0xB says everything and a guest that reads 0x1F first
        // would find the host's dies.
        .filter(|e| e.function != 0x1f)
        .collect();
    if topology.dies > 1 {
        for sub in 0..4 {
            entries.push(kvm_cpuid_entry2 {
                function: 0x1f,
                index: sub,
                flags: hypervisor::kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                ..Default::default()
            });
        }
        if let Some(leaf0) = entries.iter_mut().find(|e| e.function == 0) {
            leaf0.eax = leaf0.eax.max(0x1f);
        }
    }
    for e in entries.iter_mut() {
        match (e.function, e.index) {
            (0x1, _) => {
                // Initial APIC ID, logical processors per package, CLFLUSH
                // line size (8 x 8 bytes). The initial APIC ID is 8 bits;
                // leaf 0xB has the full x2APIC ID.
                e.ebx = ((apic_id & 0xff) << 24)
                    | (per_socket.min(255) << 16)
                    | (8 << 8)
                    | (e.ebx & 0xff);
                e.ecx |= ECX_HYPERVISOR;
                e.ecx &= !ECX_OSXSAVE;
                if per_socket > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
                if template == CpuTemplate::Minimal {
                    e.ecx &= !(ECX_CMPXCHG16B | ECX_XSAVE | ECX_AVX | ECX_FMA | ECX_F16C);
                    // No TSC deadline without a way to emulate it cheaply.
                    e.ecx &= !ECX_TSC_DEADLINE;
                }
            }
            (0x4, _) => {
                // Intel deterministic cache parameters: cores per package - 1
                // in EAX[31:26]; threads sharing the cache - 1 in EAX[25:14]
                // (L1 and L2 per core, L3 per package).
                e.eax &= 0x3fff;
                if e.eax & 0x1f != 0 {
                    let cores = topology.dies * topology.cores;
                    e.eax |= (cores.saturating_sub(1).min(63)) << 26;
                    let level = (e.eax >> 5) & 0x7;
                    let sharing = if level >= 3 {
                        per_socket
                    } else {
                        topology.threads
                    };
                    e.eax |= (sharing.saturating_sub(1).min(0xfff)) << 14;
                }
            }
            (0x7, 0) if template == CpuTemplate::Minimal => {
                e.ebx &= !L7_EBX_AVX;
                e.ecx &= !L7_ECX_AVX;
                e.edx &= !L7_EDX_AVX;
            }
            (0x7, 1) if template == CpuTemplate::Minimal => e.eax &= !L71_EAX_AVX,
            (0xb, sub) => {
                // Leaf 0xB knows no dies: its core level spans the package.
                e.edx = apic_id;
                (e.eax, e.ebx, e.ecx) = match sub {
                    0 => (tb, topology.threads, LEVEL_SMT << 8),
                    1 => (socket_shift, per_socket, (LEVEL_CORE << 8) | 1),
                    _ => (0, 0, sub),
                };
            }
            (0x1f, sub) => {
                e.edx = apic_id;
                (e.eax, e.ebx, e.ecx) = match sub {
                    0 => (tb, topology.threads, LEVEL_SMT << 8),
                    1 => (
                        tb + cb,
                        topology.cores * topology.threads,
                        (LEVEL_CORE << 8) | 1,
                    ),
                    2 => (socket_shift, per_socket, (LEVEL_DIE << 8) | 2),
                    _ => (0, 0, sub),
                };
            }
            (0x8000_0008, _) => {
                // AMD: NC = logical processors per package - 1, and
                // ApicIdCoreIdSize, the bits of the APIC ID below the socket.
                e.ecx = (socket_shift << 12) | per_socket.saturating_sub(1).min(255);
            }
            (0x8000_001e, _) => {
                // AMD: extended APIC ID; compute unit (core) ID and threads
                // per compute unit - 1; node (die) ID and nodes per
                // package - 1.
                e.eax = apic_id;
                e.ebx = (core & 0xff) | (topology.threads.saturating_sub(1).min(0xff) << 8);
                e.ecx = (die & 0xff) | (topology.dies.saturating_sub(1).min(7) << 8);
                e.edx = 0;
            }
            _ => {}
        }
    }
    // Leaf 0x8000_001E means nothing unless topology extensions are shown.
    let topoext = entries.iter().any(|e| e.function == 0x8000_001e);
    if let Some(ext1) = entries.iter_mut().find(|e| e.function == 0x8000_0001) {
        if topoext {
            ext1.ecx |= AMD_ECX_TOPOEXT;
        } else {
            ext1.ecx &= !AMD_ECX_TOPOEXT;
        }
    }
    CpuId::from_entries(&entries).map_err(|_| Error::Cpuid)
}

/// XCR0 a vCPU starts with: every state component leaf 0xD.0 offers
/// (EDX:EAX), or `None` when the guest is not shown XSAVE.
///
/// KVM recomputes leaf 0xD.0 EBX (the XSAVE area size for the enabled
/// components) from its own copy of XCR0, which it learns from the guest's
/// XSETBV exits. Under a hypervisor that does not intercept XSETBV for
/// nested guests (QEMU's emulator: its SVM has no XSETBV intercept in 7.2)
/// that copy stays at the reset value 1, so the guest reads EBX = 576 after
/// enabling AVX and PKRU, and Linux disables XSAVE with "XSAVE consistency
/// problem". Starting from the value every OS writes keeps EBX equal to the
/// layout leaf 0xD's subleaves describe, whether or not XSETBV exits.
pub fn initial_xcr0(cpuid: &CpuId) -> Option<u64> {
    let entries = cpuid.as_slice();
    let leaf1 = entries.iter().find(|e| e.function == 0x1)?;
    if leaf1.ecx & ECX_XSAVE == 0 {
        return None;
    }
    let d0 = entries.iter().find(|e| e.function == 0xd && e.index == 0)?;
    // x87 state can never be disabled; KVM refuses an XCR0 without it.
    Some((u64::from(d0.edx) << 32 | u64::from(d0.eax)) | 1)
}

/// Give `vcpu` its CPUID, then the XCR0 that matches it ([`initial_xcr0`]).
pub fn set_vcpu_cpuid(vcpu: &Vcpu, cpuid: &CpuId) -> Result<(), Error> {
    vcpu.set_cpuid(cpuid)?;
    if let Some(xcr0) = initial_xcr0(cpuid) {
        vcpu.set_xcr0(xcr0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ecx: ECX_XSAVE | ECX_AVX | ECX_CMPXCHG16B,
            ..Default::default()
        }
    }

    #[test]
    fn topology_and_template() {
        let supported =
            CpuId::from_entries(&[leaf(1, 0), leaf(0xb, 0), leaf(0xb, 1), leaf(0xd, 0)]).unwrap();
        let c = vcpu_cpuid(&supported, 5, &CpuTopology::flat(8), CpuTemplate::Minimal).unwrap();
        let s = c.as_slice();
        assert_eq!(s.len(), 3, "leaf 0xd is hidden by the minimal template");
        assert_eq!(s[0].ebx >> 24, 5);
        assert_eq!((s[0].ebx >> 16) & 0xff, 8);
        assert_eq!(s[0].ecx & (ECX_XSAVE | ECX_AVX | ECX_CMPXCHG16B), 0);
        assert_ne!(s[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(s[1].edx, 5);
        assert_eq!(s[2].eax, 3);
        assert_eq!(s[2].ebx, 8);

        let h = vcpu_cpuid(&supported, 0, &CpuTopology::flat(1), CpuTemplate::Host).unwrap();
        assert_ne!(h.as_slice()[0].ecx & ECX_XSAVE, 0);
        assert_eq!(h.as_slice().len(), 4);
    }

    #[test]
    fn initial_xcr0_covers_every_component_leaf_0xd_describes() {
        // The leaf 0xD the nested L2 guest was shown: x87, SSE, AVX, PKRU;
        // ECX (size for all of them) = 0xa88 = PKRU's offset + size.
        let mut d0 = leaf(0xd, 0);
        d0.eax = 0x207;
        d0.ebx = 0x240;
        d0.ecx = 0xa88;
        let mut d2 = leaf(0xd, 2);
        (d2.eax, d2.ebx) = (0x100, 0x240);
        let mut d9 = leaf(0xd, 9);
        (d9.eax, d9.ebx) = (8, 0xa80);
        let supported = CpuId::from_entries(&[leaf(1, 0), d0, d2, d9]).unwrap();

        let host = vcpu_cpuid(&supported, 0, &CpuTopology::flat(1), CpuTemplate::Host).unwrap();
        let xcr0 = initial_xcr0(&host).expect("XSAVE is shown, so XCR0 is set");
        // Linux compares the size the subleaves' offsets and sizes give for
        // the XCR0 it enables with leaf 0xD.0 EBX, which KVM computes from
        // its copy of XCR0: starting there, that is the full size in ECX.
        let leaves = host.as_slice();
        let end = leaves
            .iter()
            .filter(|e| e.function == 0xd && e.index >= 2 && xcr0 & (1 << e.index) != 0)
            .map(|e| e.ebx + e.eax)
            .max()
            .unwrap_or(576);
        let full = leaves
            .iter()
            .find(|e| e.function == 0xd && e.index == 0)
            .unwrap()
            .ecx;
        assert_eq!(xcr0, 0x207);
        assert_eq!(
            end, full,
            "XCR0 {xcr0:#x} covers every component leaf 0xD sizes"
        );

        // Without XSAVE (the minimal template) XCR0 is left at its reset value.
        let min = vcpu_cpuid(&supported, 0, &CpuTopology::flat(1), CpuTemplate::Minimal).unwrap();
        assert_eq!(initial_xcr0(&min), None);
    }

    fn find(c: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *c.as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("no leaf {function:#x}.{index}"))
    }

    #[test]
    fn topology_leaves_match_the_apic_ids() {
        let mut l4 = leaf(4, 0);
        l4.eax = 1 | (1 << 5); // data cache, level 1
        let mut l4_3 = leaf(4, 3);
        l4_3.eax = 3 | (3 << 5); // unified cache, level 3
        let supported = CpuId::from_entries(&[
            leaf(0, 0),
            leaf(1, 0),
            l4,
            l4_3,
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x8000_0001, 0),
            leaf(0x8000_0008, 0),
            leaf(0x8000_001e, 0),
        ])
        .unwrap();
        // 2 sockets x 2 dies x 3 cores x 2 threads: thread 1 bit, core 2
        // bits, die 1 bit, so the socket starts at bit 4.
        let t: CpuTopology = "sockets=2,dies=2,cores=3,threads=2".parse().unwrap();
        // vCPU 23: socket 1, die 1, core 2, thread 1.
        let c = vcpu_cpuid(&supported, 23, &t, CpuTemplate::Host).unwrap();
        let apic = (1 << 4) | (1 << 3) | (2 << 1) | 1;
        assert_eq!(t.apic_id(23), apic);
        assert_eq!(find(&c, 1, 0).ebx >> 24, apic);
        assert_eq!((find(&c, 1, 0).ebx >> 16) & 0xff, 12, "logical per package");
        assert_ne!(find(&c, 1, 0).edx & EDX_HTT, 0);
        assert_eq!(find(&c, 4, 0).eax >> 26, 5, "6 cores per package");
        assert_eq!((find(&c, 4, 0).eax >> 14) & 0xfff, 1, "L1 per core");
        assert_eq!((find(&c, 4, 3).eax >> 14) & 0xfff, 11, "L3 per package");
        let b0 = find(&c, 0xb, 0);
        assert_eq!((b0.eax, b0.ebx, b0.ecx, b0.edx), (1, 2, 1 << 8, apic));
        let b1 = find(&c, 0xb, 1);
        assert_eq!((b1.eax, b1.ebx, b1.ecx, b1.edx), (4, 12, 2 << 8 | 1, apic));
        assert_eq!(
            find(&c, 0xb, 2).ecx & 0xff00,
            0,
            "invalid level ends the list"
        );
        // Dies need leaf 0x1F, which the host set lacked.
        assert!(find(&c, 0, 0).eax >= 0x1f);
        let f1 = find(&c, 0x1f, 1);
        assert_eq!((f1.eax, f1.ebx, f1.ecx >> 8), (3, 6, 2));
        let f2 = find(&c, 0x1f, 2);
        assert_eq!((f2.eax, f2.ebx, f2.ecx >> 8, f2.edx), (4, 12, 5, apic));
        assert_eq!(find(&c, 0x1f, 3).ecx & 0xff00, 0);
        // AMD.
        assert_eq!(find(&c, 0x8000_0008, 0).ecx, (4 << 12) | 11);
        let e = find(&c, 0x8000_001e, 0);
        assert_eq!((e.eax, e.ebx, e.ecx), (apic, 2 | (1 << 8), 1 | (1 << 8)));
        assert_ne!(find(&c, 0x8000_0001, 0).ecx & AMD_ECX_TOPOEXT, 0);

        // Without dies there is no leaf 0x1F, whatever the host has.
        let mut with_1f: Vec<_> = supported.as_slice().to_vec();
        with_1f.push(leaf(0x1f, 0));
        let supported = CpuId::from_entries(&with_1f).unwrap();
        let t: CpuTopology = "sockets=1,cores=3,threads=1".parse().unwrap();
        let c = vcpu_cpuid(&supported, 2, &t, CpuTemplate::Host).unwrap();
        assert!(c.as_slice().iter().all(|e| e.function != 0x1f));
        assert_eq!(find(&c, 0xb, 1).eax, 2);
        assert_eq!(find(&c, 1, 0).ebx >> 24, 2);
    }

    #[test]
    fn template_parses() {
        assert_eq!("minimal".parse::<CpuTemplate>(), Ok(CpuTemplate::Minimal));
        assert!("fast".parse::<CpuTemplate>().is_err());
    }
}
