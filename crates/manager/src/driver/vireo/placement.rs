//! Memory and CPU placement of a definition as `vireo run` flags:
//! `memoryBacking`, `cpu/topology`, `cpu/numa`, `numatune`, `cputune`,
//! `vcpu cpuset`, `memballoon` and `currentMemory`.
//!
//! | definition | `vireo run` |
//! |---|---|
//! | `memoryBacking/source type` | `--memory-backend backend=anon\|memfd\|file`; a file lives in the run directory (or, with huge pages, on the hugetlbfs mount of that page size) |
//! | `memoryBacking/hugepages` (one size for every cell; `<hugepages/>` is the host's default size) | `hugepages=2M\|1G` |
//! | `memoryBacking/access`, `cell memAccess` (the same for every cell) | `shared=on\|off` |
//! | `memoryBacking/allocation mode='immediate' threads='N'` | `prealloc=on,prealloc-threads=N` |
//! | `memoryBacking/nosharepages` | nothing: the VMM never marks guest memory mergeable, so KSM never merges it |
//! | `memoryBacking/locked` | `lock=on` (`mlock`; refused with a virtio balloon, which could take nothing back) |
//! | `cpu/topology` | `--cpu-topology sockets=,dies=,cores=,threads=` |
//! | `cpu/numa/cell` | `--numa cell=ID,memory=NK,cpus=...` per cell, with `numatune` `memnode` (else `memory`) as `host-nodes=,policy=`; every distance as `--numa-distance` |
//! | `numatune/memory` without cells | one cell holding every vCPU and all memory, bound as asked |
//! | `cputune/vcpupin`, else `vcpu cpuset` | `--vcpu-pin VCPU:CPUS` |
//! | `cputune/emulatorpin`, else `vcpu cpuset` | `--emulator-pin CPUS` |
//! | `iothreads`, `iothreadids`, with `cputune/iothreadpin`, else `vcpu cpuset` | `--iothread id=N[,cpus=CPUS]` each; a disk's `driver iothread=N` is its `iothread=N` |
//! | `memballoon model='virtio'` | `--balloon target=CURRENTK[,stats-period=][,free-page-reporting=][,deflate-on-oom=]` (`autodeflate` is deflate-on-oom) |
//! | `currentMemory` below `memory` | the balloon's target; refused without a virtio balloon |

use std::path::Path;

use virtxml::{CpuSet, Domain, MemoryAccess, MemorySource, NodeBinding, NumaMode};

use super::config::{push, refuse};
use crate::driver::DriverError;

/// The flags for `domain`'s placement, appended to `args`.
pub(crate) fn push_placement(
    domain: &Domain,
    run_dir: &Path,
    args: &mut Vec<String>,
) -> Result<(), DriverError> {
    if let Some(backend) = memory_backend(domain, run_dir)? {
        push(args, "--memory-backend", backend);
    }
    push_cpus(domain, args)?;
    push_cells(domain, args)?;
    if let Some(balloon) = balloon(domain)? {
        push(args, "--balloon", balloon);
    }
    Ok(())
}

/// A size in KiB as the VMM's size syntax.
fn kib(v: u64) -> String {
    format!("{v}K")
}

/// A set as repeated `key=` items (`cpus=0-1,cpus=4`): each item of the
/// VMM's option lists is split at commas, so a list cannot be one value.
fn repeated(key: &str, set: &CpuSet) -> String {
    set.to_string()
        .split(',')
        .map(|range| format!("{key}={range}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn memory_backend(domain: &Domain, run_dir: &Path) -> Result<Option<String>, DriverError> {
    let cells = domain
        .cpu
        .as_ref()
        .map(|c| c.numa.as_slice())
        .unwrap_or(&[]);
    let access = cell_access(domain)?;
    let Some(m) = &domain.memory_backing else {
        return Ok(
            access.map(|a| format!("backend=memfd,shared={}", on(a == MemoryAccess::Shared)))
        );
    };
    if m.locked && domain.devices.memballoon.as_ref().is_some_and(|b| b.virtio) {
        return Err(refuse(
            domain,
            "/domain/memoryBacking/locked",
            "locked memory and a virtio memballoon: locked guest memory cannot be given back (use model='none')",
        ));
    }
    let page_kib = match &m.hugepages {
        None => None,
        Some(pages) if pages.is_empty() => Some(default_huge_page_kib()),
        Some(pages) => {
            let size = pages[0].size_kib;
            if pages.iter().any(|p| p.size_kib != size) {
                return Err(refuse(
                    domain,
                    "/domain/memoryBacking/hugepages",
                    "different huge page sizes per cell: Vireo's VMM backs all guest memory with one size",
                ));
            }
            let covered: usize = pages
                .iter()
                .map(|p| p.nodeset.as_ref().map_or(usize::MAX, CpuSet::len))
                .fold(0usize, usize::saturating_add);
            if covered < cells.len().max(1) {
                return Err(refuse(
                    domain,
                    "/domain/memoryBacking/hugepages",
                    "huge pages for some cells only: Vireo's VMM backs all guest memory alike",
                ));
            }
            Some(size)
        }
    };
    let source = m.source.unwrap_or(MemorySource::Anonymous);
    let access = m.access.or(access);
    let mut o = Vec::new();
    match source {
        MemorySource::Anonymous if access == Some(MemoryAccess::Shared) => {
            // libvirt, too, needs a shareable source for shared access;
            // memfd is the one that needs no directory.
            o.push("backend=memfd".to_string());
        }
        MemorySource::Anonymous => o.push("backend=anon".into()),
        MemorySource::Memfd => o.push("backend=memfd".into()),
        MemorySource::File => {
            let dir = match page_kib {
                Some(size) => hugetlbfs_mount(size).ok_or_else(|| {
                    refuse(
                        domain,
                        "/domain/memoryBacking/source",
                        format!(
                            "file-backed memory in {} huge pages needs a hugetlbfs mount of that page size, and the host has none (mount -t hugetlbfs -o pagesize={} none /dev/hugepages{})",
                            page_name(size),
                            page_name(size),
                            if size == 2048 { "" } else { "1G" }
                        ),
                    )
                })?,
                None => run_dir.display().to_string(),
            };
            o.push(format!("backend=file,path={}", dir.replace(',', ",,")));
        }
    }
    if let Some(size) = page_kib {
        // With path= the mount decides the page size.
        if source != MemorySource::File {
            o.push(format!("hugepages={}", page_name(size)));
        }
    }
    if let Some(a) = access {
        o.push(format!("shared={}", on(a == MemoryAccess::Shared)));
    }
    if let Some(p) = m.prealloc {
        o.push(format!("prealloc={}", on(p)));
    }
    if m.locked {
        o.push("lock=on".into());
    }
    if let Some(t) = m.prealloc_threads {
        if m.prealloc != Some(true) {
            return Err(refuse(
                domain,
                "/domain/memoryBacking/allocation",
                "threads= only applies with mode='immediate'",
            ));
        }
        o.push(format!("prealloc-threads={t}"));
    }
    Ok(Some(o.join(",")))
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn page_name(kib: u64) -> &'static str {
    if kib == 1_048_576 {
        "1G"
    } else {
        "2M"
    }
}

/// The cells' `memAccess`, which must agree: the VMM maps all guest
/// memory one way.
fn cell_access(domain: &Domain) -> Result<Option<MemoryAccess>, DriverError> {
    let cells = domain
        .cpu
        .as_ref()
        .map(|c| c.numa.as_slice())
        .unwrap_or(&[]);
    let mut access = None;
    for (i, cell) in cells.iter().enumerate() {
        match (access, cell.mem_access) {
            (_, None) => {}
            (None, Some(a)) if i == 0 => access = Some(a),
            (Some(a), Some(b)) if a == b => {}
            _ => {
                return Err(refuse(
                    domain,
                    &format!("/domain/cpu/numa/cell[{}]", i + 1),
                    "memAccess differs between cells: Vireo's VMM maps all guest memory one way",
                ))
            }
        }
        if access.is_some() && cell.mem_access.is_none() {
            return Err(refuse(
                domain,
                &format!("/domain/cpu/numa/cell[{}]", i + 1),
                "memAccess is given for some cells only: Vireo's VMM maps all guest memory one way",
            ));
        }
    }
    Ok(access)
}

/// The host's default huge page size, KiB (`Hugepagesize` in
/// /proc/meminfo; 2 MiB on x86_64 unless the kernel was told otherwise).
fn default_huge_page_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("Hugepagesize:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(2048)
}

/// A hugetlbfs mount whose page size is `kib`.
fn hugetlbfs_mount(kib: u64) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let default = default_huge_page_kib();
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || f[2] != "hugetlbfs" {
            return None;
        }
        let size = f[3]
            .split(',')
            .find_map(|o| o.strip_prefix("pagesize="))
            .map_or(Some(default), parse_page_size)?;
        // /proc/mounts escapes spaces as \040; such a path is not ours.
        (size == kib && !f[1].contains('\\')).then(|| f[1].to_string())
    })
}

/// `2M`, `1G`, `2048k` as KiB.
fn parse_page_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1),
        'm' | 'M' => (&s[..s.len() - 1], 1024),
        'g' | 'G' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn push_cpus(domain: &Domain, args: &mut Vec<String>) -> Result<(), DriverError> {
    if let Some(t) = domain.cpu.as_ref().and_then(|c| c.topology) {
        push(
            args,
            "--cpu-topology",
            format!(
                "sockets={},dies={},cores={},threads={}",
                t.sockets, t.dies, t.cores, t.threads
            ),
        );
    }
    let tune = domain.cputune.as_ref();
    for v in 0..domain.vcpu.count {
        // libvirt: a vcpupin wins; the <vcpu cpuset> is every other
        // vCPU's set.
        let set = tune
            .and_then(|t| t.vcpu_pin(v))
            .or(domain.vcpu.cpuset.as_ref());
        if let Some(set) = set {
            push(args, "--vcpu-pin", format!("{v}:{set}"));
        }
    }
    let emulator = tune
        .and_then(|t| t.emulatorpin.as_ref())
        .or(domain.vcpu.cpuset.as_ref());
    if let Some(set) = emulator {
        push(args, "--emulator-pin", set.to_string());
    }
    for &id in &domain.iothreads {
        let pin = tune
            .and_then(|t| t.iothread_pin(id))
            .or(domain.vcpu.cpuset.as_ref());
        let opts = match pin {
            Some(set) => format!("id={id},cpus={set}"),
            None => format!("id={id}"),
        };
        push(args, "--iothread", opts);
    }
    Ok(())
}

fn binding_opts(b: &NodeBinding) -> String {
    let policy = match b.mode {
        NumaMode::Strict => "strict",
        NumaMode::Preferred => "preferred",
        NumaMode::Interleave => "interleave",
        NumaMode::Restrictive => "restrictive",
    };
    format!(",{},policy={policy}", repeated("host-nodes", &b.nodeset))
}

fn push_cells(domain: &Domain, args: &mut Vec<String>) -> Result<(), DriverError> {
    let cpu = domain.cpu.as_ref();
    let cells = cpu.map(|c| c.numa.as_slice()).unwrap_or(&[]);
    let tune = domain.numatune.as_ref();
    if cells.is_empty() {
        // numatune alone binds all guest memory: one cell of everything.
        if let Some(b) = tune.and_then(|t| t.memory.as_ref()) {
            let all = CpuSet::of(0..domain.vcpu.count);
            push(
                args,
                "--numa",
                format!(
                    "cell=0,memory={},{}{}",
                    kib(domain.memory_kib),
                    repeated("cpus", &all),
                    binding_opts(b)
                ),
            );
        }
        return Ok(());
    }
    for cell in cells {
        let binding = tune
            .and_then(|t| t.for_cell(cell.id))
            .map(binding_opts)
            .unwrap_or_default();
        push(
            args,
            "--numa",
            format!(
                "cell={},memory={},{}{binding}",
                cell.id,
                kib(cell.memory_kib),
                repeated("cpus", &cell.cpus)
            ),
        );
    }
    if let Some(cpu) = cpu {
        let n = u32::try_from(cells.len()).unwrap_or(u32::MAX);
        // Every pair, so that the VMM's defaults never decide.
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    push(
                        args,
                        "--numa-distance",
                        format!("src={a},dst={b},value={}", cpu.distance(a, b)),
                    );
                }
            }
        }
    }
    Ok(())
}

/// The smallest balloon target the VMM accepts, KiB; a lower
/// `currentMemory` is refused here with the same words.
const MIN_TARGET_KIB: u64 = 4096;

fn balloon(domain: &Domain) -> Result<Option<String>, DriverError> {
    let virtio = domain.devices.memballoon.as_ref().filter(|b| b.virtio);
    let current = domain.current_memory_kib.unwrap_or(domain.memory_kib);
    let Some(b) = virtio else {
        if current != domain.memory_kib {
            return Err(refuse(
                domain,
                "/domain/currentMemory",
                format!(
                    "{current} KiB below memory ({} KiB) needs a memory balloon: add <memballoon model='virtio'/>",
                    domain.memory_kib
                ),
            ));
        }
        return Ok(None);
    };
    if current < MIN_TARGET_KIB {
        return Err(refuse(
            domain,
            "/domain/currentMemory",
            format!("{current} KiB is below the balloon's floor of {MIN_TARGET_KIB} KiB"),
        ));
    }
    let mut o = format!("target={}", kib(current));
    if let Some(p) = b.stats_period {
        o.push_str(&format!(",stats-period={p}"));
    }
    if let Some(f) = b.free_page_reporting {
        o.push_str(&format!(",free-page-reporting={}", on(f)));
    }
    if let Some(d) = b.autodeflate {
        o.push_str(&format!(",deflate-on-oom={}", on(d)));
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(top: &str, devices: &str) -> Domain {
        let xml = format!(
            "<domain type='kvm'><name>p</name><memory unit='MiB'>256</memory>{top}<os><type>hvm</type><kernel>/k</kernel></os><devices>{devices}</devices></domain>"
        );
        Domain::parse(&xml).unwrap().domain
    }

    fn flags(d: &Domain) -> Result<Vec<String>, DriverError> {
        let mut args = Vec::new();
        push_placement(d, Path::new("/run/vireo/p"), &mut args)?;
        Ok(args)
    }

    #[test]
    fn cells_bindings_and_distances() {
        let d = domain(
            "<vcpu>4</vcpu><numatune><memory mode='interleave' nodeset='0-1,3'/><memnode cellid='1' mode='preferred' nodeset='1'/></numatune>\
             <cpu><topology sockets='2' cores='2' threads='1'/><numa><cell id='0' cpus='0,2' memory='128' unit='MiB'><distances><sibling id='1' value='31'/></distances></cell><cell id='1' cpus='1,3' memory='128' unit='MiB'/></numa></cpu>",
            "",
        );
        assert_eq!(
            flags(&d).unwrap(),
            [
                "--cpu-topology",
                "sockets=2,dies=1,cores=2,threads=1",
                "--numa",
                "cell=0,memory=131072K,cpus=0,cpus=2,host-nodes=0-1,host-nodes=3,policy=interleave",
                "--numa",
                "cell=1,memory=131072K,cpus=1,cpus=3,host-nodes=1,policy=preferred",
                "--numa-distance",
                "src=0,dst=1,value=31",
                "--numa-distance",
                "src=1,dst=0,value=31",
            ]
        );
    }

    #[test]
    fn numatune_without_cells_is_one_cell() {
        let d = domain(
            "<vcpu>2</vcpu><numatune><memory nodeset='0'/></numatune>",
            "",
        );
        assert_eq!(
            flags(&d).unwrap(),
            [
                "--numa",
                "cell=0,memory=262144K,cpus=0-1,host-nodes=0,policy=strict"
            ]
        );
    }

    #[test]
    fn iothreads_take_their_pin_else_the_vcpu_cpuset() {
        let d = domain(
            "<vcpu cpuset='0'>1</vcpu><iothreads>2</iothreads><cputune><iothreadpin iothread='2' cpuset='1'/></cputune>",
            "",
        );
        assert_eq!(
            flags(&d).unwrap(),
            [
                "--vcpu-pin",
                "0:0",
                "--emulator-pin",
                "0",
                "--iothread",
                "id=1,cpus=0",
                "--iothread",
                "id=2,cpus=1"
            ]
        );
        let d = domain("<iothreads>1</iothreads>", "");
        assert_eq!(flags(&d).unwrap(), ["--iothread", "id=1"]);
    }

    #[test]
    fn pins_follow_libvirt_precedence() {
        let d = domain(
            "<vcpu cpuset='0-1'>3</vcpu><cputune><vcpupin vcpu='1' cpuset='1'/></cputune>",
            "",
        );
        assert_eq!(
            flags(&d).unwrap(),
            [
                "--vcpu-pin",
                "0:0-1",
                "--vcpu-pin",
                "1:1",
                "--vcpu-pin",
                "2:0-1",
                "--emulator-pin",
                "0-1"
            ]
        );
    }

    #[test]
    fn backing_and_balloon() {
        let d = domain(
            "<currentMemory unit='MiB'>128</currentMemory><memoryBacking><hugepages/><source type='memfd'/><allocation mode='immediate' threads='2'/><nosharepages/></memoryBacking>",
            "<memballoon model='virtio' autodeflate='on'><stats period='5'/></memballoon>",
        );
        let f = flags(&d).unwrap();
        assert_eq!(f[0], "--memory-backend");
        assert!(
            f[1].starts_with("backend=memfd,hugepages=")
                && f[1].ends_with(",prealloc=on,prealloc-threads=2"),
            "{}",
            f[1]
        );
        assert_eq!(
            &f[2..],
            [
                "--balloon",
                "target=131072K,stats-period=5,deflate-on-oom=on"
            ]
        );
        let file = domain(
            "<memoryBacking><source type='file'/><access mode='shared'/></memoryBacking>",
            "",
        );
        assert_eq!(
            flags(&file).unwrap(),
            [
                "--memory-backend",
                "backend=file,path=/run/vireo/p,shared=on"
            ]
        );
    }

    #[test]
    fn refusals_name_the_element() {
        for (top, devices, why) in [
            ("<currentMemory unit='MiB'>128</currentMemory>", "", "needs a memory balloon"),
            ("<currentMemory unit='MiB'>2</currentMemory>", "<memballoon model='virtio'/>", "floor"),
            ("<memoryBacking><locked/></memoryBacking>", "<memballoon model='virtio'/>", "cannot be given back"),
            ("<memoryBacking><allocation threads='2'/></memoryBacking>", "", "mode='immediate'"),
            (
                "<vcpu>2</vcpu><memoryBacking><hugepages><page size='2048' nodeset='0'/><page size='1048576' nodeset='1'/></hugepages></memoryBacking><cpu><numa><cell cpus='0' memory='128' unit='MiB'/><cell cpus='1' memory='128' unit='MiB'/></numa></cpu>",
                "",
                "one size",
            ),
            (
                "<vcpu>2</vcpu><cpu><numa><cell cpus='0' memory='128' unit='MiB' memAccess='shared'/><cell cpus='1' memory='128' unit='MiB' memAccess='private'/></numa></cpu>",
                "",
                "differs between cells",
            ),
        ] {
            let e = flags(&domain(top, devices)).unwrap_err().to_string();
            assert!(e.contains(why), "{top}: {e}");
        }
    }

    #[test]
    fn page_sizes() {
        assert_eq!(parse_page_size("2M"), Some(2048));
        assert_eq!(parse_page_size("1G"), Some(1_048_576));
        assert_eq!(parse_page_size("2048k"), Some(2048));
        assert_eq!(parse_page_size("x"), None);
    }
}
