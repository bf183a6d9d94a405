//! The boot vCPU's initial register state: GDT, identity page tables,
//! segment and control registers for each boot protocol, FPU, MSRs and the
//! local APIC's LINT pins.

use hypervisor::kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use hypervisor::Vcpu;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::boot::{BootProtocol, KernelEntry};
use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
    PVH_INFO_START, ZERO_PAGE_START,
};
use crate::Error;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// GDT selectors used at entry.
const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// Build a GDT descriptor from its flags, base and limit.
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (u64::from(base & 0xff00_0000) << 32)
        | (u64::from(flags & 0xf0ff) << 40)
        | (u64::from(limit & 0x000f_0000) << 32)
        | (u64::from(base & 0x00ff_ffff) << 16)
        | u64::from(limit & 0x0000_ffff)
}

/// The `kvm_segment` a descriptor describes, as the CPU would cache it.
fn segment(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    // The masks keep 20 bits, so the page-granular form still fits 32 bits.
    let limit = u32::try_from((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)).unwrap_or(0);
    let g = ((entry >> 55) & 1) as u8;
    kvm_segment {
        base,
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

fn write<M: GuestMemoryBackend, T: vm_memory::ByteValued>(
    mem: &M,
    addr: u64,
    val: T,
) -> Result<(), Error> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|_| Error::BootStructure(addr))
}

/// Identity-map the first 4 GiB with 2 MiB pages (PML4 → PDPT → 4 PDs).
fn write_page_tables<M: GuestMemoryBackend>(mem: &M) -> Result<(), Error> {
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    write(mem, PML4_START, PDPTE_START | PRESENT_RW)?;
    for gib in 0..4u64 {
        let pd = PDE_START + gib * 0x1000;
        write(mem, PDPTE_START + gib * 8, pd | PRESENT_RW)?;
        for i in 0..512u64 {
            let addr = (gib << 30) | (i << 21);
            write(mem, pd + i * 8, addr | PRESENT_RW | HUGE)?;
        }
    }
    Ok(())
}

/// Set the boot vCPU's registers for `entry`, writing the GDT (and for
/// long mode the page tables) into `mem`.
pub fn setup_boot_vcpu<M: GuestMemoryBackend>(
    vcpu: &Vcpu,
    mem: &M,
    entry: &KernelEntry,
) -> Result<(), Error> {
    let (code_flags, data_flags) = match entry.protocol {
        // 64-bit code (L=1), data.
        BootProtocol::Linux64 => (0xa09b, 0xc093),
        // 32-bit flat code (D=1, G=1), data.
        BootProtocol::Pvh => (0xc09b, 0xc093),
    };
    let gdt = [
        gdt_entry(0, 0, 0),
        gdt_entry(code_flags, 0, 0xfffff),
        gdt_entry(data_flags, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ];
    for (i, e) in gdt.iter().enumerate() {
        write(mem, BOOT_GDT_START + 8 * i as u64, *e)?;
    }
    write(mem, BOOT_IDT_START, 0u64)?;

    let mut sregs: kvm_sregs = vcpu.sregs()?;
    let code = segment(gdt[1], CODE_SELECTOR);
    let data = segment(gdt[2], DATA_SELECTOR);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(gdt[3], TSS_SELECTOR);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = u16::try_from(std::mem::size_of_val(&gdt) - 1).unwrap_or(u16::MAX);
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;

    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.entry.0,
        ..Default::default()
    };
    match entry.protocol {
        BootProtocol::Linux64 => {
            write_page_tables(mem)?;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        BootProtocol::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rbx = PVH_INFO_START;
        }
    }
    vcpu.set_sregs(&sregs)?;
    vcpu.set_regs(&regs)?;
    Ok(())
}

/// FPU state after reset: x87 control word 0x37f, SSE exceptions masked.
pub fn setup_fpu(vcpu: &Vcpu) -> Result<(), Error> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    Ok(vcpu.set_fpu(&fpu)?)
}

/// MSRs every vCPU starts with.
pub fn setup_msrs(vcpu: &Vcpu) -> Result<(), Error> {
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    // MTRRs enabled, default type write-back.
    const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;
    Ok(vcpu.set_msrs(&[
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ])?)
}

/// Wire LINT0 as ExtINT (the legacy PIC) and LINT1 as NMI, as firmware does.
pub fn setup_lint(vcpu: &Vcpu) -> Result<(), Error> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_NMI: u32 = 0x4;
    const APIC_MODE_EXTINT: u32 = 0x7;
    let mut lapic = vcpu.lapic()?;
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[reg + i].cast_unsigned());
        let value = u32::from_le_bytes(bytes);
        // Delivery mode is bits 8..=10.
        let value = (value & !0x700) | (mode << 8);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = b.cast_signed();
        }
    }
    Ok(vcpu.set_lapic(&lapic)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_back() {
        let code64 = gdt_entry(0xa09b, 0, 0xfffff);
        let seg = segment(code64, CODE_SELECTOR);
        assert_eq!(seg.l, 1);
        assert_eq!(seg.db, 0);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.type_, 0xb);
        assert_eq!(seg.present, 1);
        let code32 = segment(gdt_entry(0xc09b, 0, 0xfffff), CODE_SELECTOR);
        assert_eq!((code32.l, code32.db, code32.g), (0, 1, 1));
        let tss = segment(gdt_entry(0x808b, 0, 0xfffff), TSS_SELECTOR);
        assert_eq!((tss.s, tss.type_), (0, 0xb));
    }
}
