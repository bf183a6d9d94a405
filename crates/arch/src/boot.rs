//! Loading a kernel, its initrd and command line, and writing the boot
//! structures its protocol expects (Linux `boot_params` or PVH
//! `hvm_start_info`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{load_cmdline, BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, PVH_INFO_START, PVH_MEMMAP_MAX_ENTRIES,
    PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use crate::memory::{low_ram_end, memory_map, MemoryMapEntry};
use crate::Error;

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// Linux 64-bit boot protocol: long mode, paging on, RSI = boot_params.
    Linux64,
    /// PVH: 32-bit protected mode, paging off, EBX = hvm_start_info.
    Pvh,
}

/// A loaded kernel: where and how to enter it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelEntry {
    /// Guest-physical entry point.
    pub entry: GuestAddress,
    /// The protocol the entry point expects.
    pub protocol: BootProtocol,
}

/// What to boot.
pub struct BootSource<'a> {
    /// The kernel image (bzImage or ELF).
    pub kernel: &'a mut File,
    /// An initial ramdisk, if any.
    pub initrd: Option<&'a mut File>,
    /// The kernel command line.
    pub cmdline: &'a str,
}

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const HDRS_MAGIC: u32 = 0x5372_6448;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `type_of_loader`: "undefined" boot loader.
const LOADER_TYPE_OTHER: u8 = 0xff;
/// `xloadflags` bit: the kernel has the 64-bit entry point at +0x200.
const XLF_KERNEL_64: u16 = 1;
/// `loadflags` bit: the kernel runs at 1 MiB (bzImage, not zImage).
const LOADED_HIGH: u8 = 1;
/// Offset of the 64-bit entry point from the protected-mode kernel's start.
const LINUX64_ENTRY_OFFSET: u64 = 0x200;
/// First boot protocol with `xloadflags`.
const MIN_BOOT_PROTOCOL: u16 = 0x020c;
const PVH_START_INFO_MAGIC: u32 = 0x336e_c578;
const PAGE_SIZE: u64 = 4096;

/// Load `source` into `mem` (sized `mem_size` bytes of RAM) and write the
/// boot structures. `rsdp` is where the ACPI tables start.
pub fn load_kernel<M: GuestMemoryBackend>(
    mem: &M,
    mem_size: u64,
    source: BootSource<'_>,
    rsdp: GuestAddress,
) -> Result<KernelEntry, Error> {
    let format = kernel_format(source.kernel)?;
    let map = memory_map(mem_size)?;
    match format {
        KernelFormat::Elf => load_elf(mem, mem_size, source, rsdp, &map),
        KernelFormat::BzImage => load_bzimage(mem, mem_size, source, rsdp, &map),
    }
}

/// The kinds of kernel image [`load_kernel`] boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF executable (a vmlinux, PVH or not, or a small guest).
    Elf,
    /// A Linux bzImage (a distribution's kernel).
    BzImage,
}

/// Which kind of kernel `file` holds, from its magic numbers alone, so a
/// file that is neither is named as such rather than failing deep inside
/// a loader.
pub fn kernel_format(file: &mut File) -> Result<KernelFormat, Error> {
    let mut magic = [0u8; 4];
    if read_at(file, 0, &mut magic).is_ok() && magic == ELF_MAGIC {
        return Ok(KernelFormat::Elf);
    }
    // The setup header's "HdrS" at 0x202 marks every bzImage since 2.00.
    if read_at(file, 0x202, &mut magic).is_ok() && u32::from_le_bytes(magic) == HDRS_MAGIC {
        return Ok(KernelFormat::BzImage);
    }
    Err(Error::NotAKernel)
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

fn load_elf<M: GuestMemoryBackend>(
    mem: &M,
    mem_size: u64,
    source: BootSource<'_>,
    rsdp: GuestAddress,
    map: &[MemoryMapEntry],
) -> Result<KernelEntry, Error> {
    let loaded = Elf::load(mem, None, source.kernel, Some(GuestAddress(HIMEM_START)))
        .map_err(Error::KernelLoad)?;
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => {
            write_cmdline(mem, source.cmdline, CMDLINE_MAX_SIZE)?;
            let initrd = match source.initrd {
                Some(f) => Some(load_initrd(
                    mem,
                    f,
                    loaded.kernel_end,
                    low_ram_end(mem_size),
                )?),
                None => None,
            };
            write_start_info(mem, map, initrd, rsdp)?;
            Ok(KernelEntry {
                entry,
                protocol: BootProtocol::Pvh,
            })
        }
        // An ELF vmlinux without the PVH note is entered like Firecracker
        // does: at its ELF entry, in long mode, with boot_params.
        _ => {
            let mut params = boot_params::default();
            params.hdr.boot_flag = BOOT_FLAG_MAGIC;
            params.hdr.header = HDRS_MAGIC;
            params.hdr.kernel_alignment = 0x0100_0000;
            finish_linux(mem, mem_size, source, loaded.kernel_end, params, rsdp, map)?;
            Ok(KernelEntry {
                entry: loaded.kernel_load,
                protocol: BootProtocol::Linux64,
            })
        }
    }
}

fn load_bzimage<M: GuestMemoryBackend>(
    mem: &M,
    mem_size: u64,
    source: BootSource<'_>,
    rsdp: GuestAddress,
    map: &[MemoryMapEntry],
) -> Result<KernelEntry, Error> {
    let loaded = BzImage::load(mem, None, source.kernel, Some(GuestAddress(HIMEM_START)))
        .map_err(Error::KernelLoad)?;
    let hdr = loaded.setup_header.ok_or(Error::NotAKernel)?;
    if hdr.version < MIN_BOOT_PROTOCOL || hdr.loadflags & LOADED_HIGH == 0 {
        let version = hdr.version;
        return Err(Error::UnsupportedKernel(format!(
            "boot protocol {}.{:02} is too old (need 2.12)",
            version >> 8,
            version & 0xff
        )));
    }
    if hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(Error::UnsupportedKernel(
            "bzImage has no 64-bit entry point".into(),
        ));
    }
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_OTHER;
    // The kernel decompresses in place and needs init_size bytes from its
    // load address; an initrd must not sit inside that span.
    let kernel_end = loaded
        .kernel_load
        .0
        .saturating_add(u64::from(hdr.init_size))
        .max(loaded.kernel_end);
    finish_linux(mem, mem_size, source, kernel_end, params, rsdp, map)?;
    Ok(KernelEntry {
        entry: GuestAddress(loaded.kernel_load.0 + LINUX64_ENTRY_OFFSET),
        protocol: BootProtocol::Linux64,
    })
}

/// Command line, initrd and zero page for the Linux boot protocol.
fn finish_linux<M: GuestMemoryBackend>(
    mem: &M,
    mem_size: u64,
    source: BootSource<'_>,
    kernel_end: u64,
    mut params: boot_params,
    rsdp: GuestAddress,
    map: &[MemoryMapEntry],
) -> Result<(), Error> {
    // Protocol 2.06+ states the limit; older kernels take 255 bytes.
    let limit = match params.hdr.cmdline_size {
        0 => 256,
        n => (n as usize).saturating_add(1).min(CMDLINE_MAX_SIZE),
    };
    write_cmdline(mem, source.cmdline, limit)?;
    params.hdr.cmd_line_ptr = low32(CMDLINE_START)?;
    params.hdr.cmdline_size = u32::try_from(source.cmdline.len()).unwrap_or(u32::MAX);

    if let Some(initrd) = source.initrd {
        // initrd_addr_max is the last byte the kernel can reach; 0 means
        // the historical default.
        let max = match params.hdr.initrd_addr_max {
            0 => 0x37ff_ffff,
            n => u64::from(n),
        };
        let limit = low_ram_end(mem_size).min(max.saturating_add(1));
        let (addr, size) = load_initrd(mem, initrd, kernel_end, limit)?;
        // Both are below `limit`, itself below 4 GiB.
        params.hdr.ramdisk_image = low32(addr)?;
        params.hdr.ramdisk_size = low32(size)?;
    }

    let entries = u8::try_from(map.len())
        .ok()
        .filter(|&n| usize::from(n) <= params.e820_table.len())
        .ok_or(Error::TooManyMemoryMapEntries(map.len()))?;
    for (slot, e) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = entries;
    params.acpi_rsdp_addr = rsdp.0;

    LinuxBootConfigurator::write_bootparams::<M>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(Error::BootParams)
}

/// A guest-physical address or size that the 32-bit boot_params fields hold.
fn low32(value: u64) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::BootStructure(value))
}

fn write_cmdline<M: GuestMemoryBackend>(mem: &M, cmdline: &str, limit: usize) -> Result<(), Error> {
    // `limit` counts the terminating NUL.
    if cmdline.len() >= limit {
        return Err(Error::CmdlineTooLong {
            len: cmdline.len(),
            max: limit.saturating_sub(1),
        });
    }
    let parsed = Cmdline::try_from(cmdline, limit).map_err(Error::Cmdline)?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &parsed).map_err(Error::KernelLoad)
}

/// Place the initrd at the highest page-aligned address that ends at or
/// below `limit` and starts at or above `floor`. Returns (address, size).
fn load_initrd<M: GuestMemoryBackend>(
    mem: &M,
    file: &mut File,
    floor: u64,
    limit: u64,
) -> Result<(u64, u64), Error> {
    let size = file.seek(SeekFrom::End(0)).map_err(Error::InitrdRead)?;
    file.rewind().map_err(Error::InitrdRead)?;
    let start = limit
        .checked_sub(size)
        .map(|a| a & !(PAGE_SIZE - 1))
        .filter(|&a| a >= floor && size > 0);
    let Some(start) = start else {
        return Err(Error::InitrdDoesNotFit { size, floor, limit });
    };
    let len = usize::try_from(size).map_err(|_| Error::InitrdDoesNotFit { size, floor, limit })?;
    mem.read_exact_volatile_from(GuestAddress(start), file, len)
        .map_err(|_| Error::InitrdRead(std::io::Error::other("short read into guest memory")))?;
    Ok((start, size))
}

fn write_start_info<M: GuestMemoryBackend>(
    mem: &M,
    map: &[MemoryMapEntry],
    initrd: Option<(u64, u64)>,
    rsdp: GuestAddress,
) -> Result<(), Error> {
    let memmap_entries = u32::try_from(map.len())
        .ok()
        .filter(|&n| u64::from(n) <= PVH_MEMMAP_MAX_ENTRIES)
        .ok_or(Error::TooManyMemoryMapEntries(map.len()))?;
    let memmap: Vec<hvm_memmap_table_entry> = map
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let modules: Vec<hvm_modlist_entry> = initrd
        .iter()
        .map(|&(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .collect();
    let info = hvm_start_info {
        magic: PVH_START_INFO_MAGIC,
        version: 1,
        nr_modules: u32::from(!modules.is_empty()),
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_START
        },
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: rsdp.0,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries,
        ..Default::default()
    };
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    if !modules.is_empty() {
        params.set_modules(&modules, GuestAddress(PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams::<M>(&params, mem).map_err(Error::BootParams)
}
