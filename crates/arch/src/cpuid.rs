//! The CPUID leaves each vCPU sees: the host's supported set, with topology
//! and APIC IDs filled per vCPU, the hypervisor leaves, and an optional
//! template that hides features.

use std::str::FromStr;

use hypervisor::kvm_bindings::{kvm_cpuid_entry2, CpuId};
use hypervisor::Vcpu;

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

/// Bits needed to number `n` items (ceil(log2(n))).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// CPUID for vCPU `index` of `count`, from the host-supported set.
///
/// The topology is one socket of `count` cores, one thread each, APIC ID =
/// vCPU index, which is what the MADT says too.
pub fn vcpu_cpuid(
    supported: &CpuId,
    index: u32,
    count: u32,
    template: CpuTemplate,
) -> Result<CpuId, Error> {
    let core_bits = bits_for(count);
    let mut entries: Vec<kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .copied()
        .filter(|e| !(template == CpuTemplate::Minimal && e.function == 0xd))
        .collect();
    for e in entries.iter_mut() {
        match (e.function, e.index) {
            (0x1, _) => {
                // APIC ID, logical processors per package, CLFLUSH line size (8 x 8 bytes).
                e.ebx = (index << 24) | (count.min(255) << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= ECX_HYPERVISOR;
                e.ecx &= !ECX_OSXSAVE;
                if count > 1 {
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
                // in EAX[31:26]; caches shared by one thread.
                e.eax &= 0x3fff;
                if e.eax & 0x1f != 0 {
                    e.eax |= (count.saturating_sub(1).min(63)) << 26;
                }
            }
            (0x7, 0) if template == CpuTemplate::Minimal => {
                e.ebx &= !L7_EBX_AVX;
                e.ecx &= !L7_ECX_AVX;
                e.edx &= !L7_EDX_AVX;
            }
            (0x7, 1) if template == CpuTemplate::Minimal => e.eax &= !L71_EAX_AVX,
            (0xb, sub) | (0x1f, sub) => {
                e.edx = index;
                match sub {
                    // SMT level: one thread per core.
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    // Core level: `count` cores in the package.
                    1 => {
                        e.eax = core_bits;
                        e.ebx = count;
                        e.ecx = (2 << 8) | 1;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = sub;
                    }
                }
            }
            (0x8000_0008, _) => {
                // AMD: NC = cores - 1, ApicIdCoreIdSize.
                e.ecx = (core_bits << 12) | count.saturating_sub(1).min(255);
            }
            _ => {}
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
        let c = vcpu_cpuid(&supported, 5, 8, CpuTemplate::Minimal).unwrap();
        let s = c.as_slice();
        assert_eq!(s.len(), 3, "leaf 0xd is hidden by the minimal template");
        assert_eq!(s[0].ebx >> 24, 5);
        assert_eq!((s[0].ebx >> 16) & 0xff, 8);
        assert_eq!(s[0].ecx & (ECX_XSAVE | ECX_AVX | ECX_CMPXCHG16B), 0);
        assert_ne!(s[0].ecx & ECX_HYPERVISOR, 0);
        assert_eq!(s[1].edx, 5);
        assert_eq!(s[2].eax, 3);
        assert_eq!(s[2].ebx, 8);

        let h = vcpu_cpuid(&supported, 0, 1, CpuTemplate::Host).unwrap();
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

        let host = vcpu_cpuid(&supported, 0, 1, CpuTemplate::Host).unwrap();
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
        let min = vcpu_cpuid(&supported, 0, 1, CpuTemplate::Minimal).unwrap();
        assert_eq!(initial_xcr0(&min), None);
    }

    #[test]
    fn template_parses() {
        assert_eq!("minimal".parse::<CpuTemplate>(), Ok(CpuTemplate::Minimal));
        assert!("fast".parse::<CpuTemplate>().is_err());
    }
}
