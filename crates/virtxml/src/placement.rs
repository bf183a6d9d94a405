//! Where a guest's memory and vCPUs live on the host: `memoryBacking`,
//! `numatune` and `cputune`.

use crate::cpuset::CpuSet;
use crate::error::Error;
use crate::node::{parse_number, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};
use crate::scalars::unit_multiplier;

/// One `memoryBacking/hugepages/page`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugePage {
    /// The page size, KiB.
    pub size_kib: u64,
    /// The guest NUMA cells it backs; all of them when `None`.
    pub nodeset: Option<CpuSet>,
}

/// What kind of memory backs the guest (`source type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// Anonymous memory (the default).
    Anonymous,
    /// A file (in the daemon's memory directory, or hugetlbfs).
    File,
    /// A memfd.
    Memfd,
}

impl MemorySource {
    /// The name in libvirt's XML.
    pub fn as_str(self) -> &'static str {
        match self {
            MemorySource::Anonymous => "anonymous",
            MemorySource::File => "file",
            MemorySource::Memfd => "memfd",
        }
    }
}

/// Whether guest memory is mapped shared or private (`access mode`, also
/// `cpu/numa/cell memAccess`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAccess {
    /// `MAP_SHARED`.
    Shared,
    /// `MAP_PRIVATE`.
    Private,
}

impl MemoryAccess {
    /// The name in libvirt's XML.
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryAccess::Shared => "shared",
            MemoryAccess::Private => "private",
        }
    }

    pub(crate) fn parse(node: &Node<'_>, name: &str, value: &str) -> Result<Self, Error> {
        match value {
            "shared" => Ok(MemoryAccess::Shared),
            "private" => Ok(MemoryAccess::Private),
            v => Err(node.refuse(format!("{name}='{v}' must be shared or private"))),
        }
    }
}

/// `memoryBacking`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryBacking {
    /// `hugepages`: `Some(empty)` asks for the host's default huge page
    /// size for all memory.
    pub hugepages: Option<Vec<HugePage>>,
    /// `nosharepages`: keep guest memory out of KSM.
    pub nosharepages: bool,
    /// `locked`: keep guest memory in RAM (`mlock`).
    pub locked: bool,
    /// `source type`.
    pub source: Option<MemorySource>,
    /// `access mode`.
    pub access: Option<MemoryAccess>,
    /// `allocation mode='immediate'`: fault all memory in before the
    /// guest starts.
    pub prealloc: Option<bool>,
    /// `allocation threads`: how many threads fault it in.
    pub prealloc_threads: Option<u32>,
    /// `discard`: kept for writing back.
    pub discard: bool,
}

/// The most preallocation threads accepted (the VMM's own bound).
pub const MAX_PREALLOC_THREADS: u32 = 256;

pub(crate) fn parse_memory_backing(node: &Node<'_>, ctx: &mut Ctx) -> Result<MemoryBacking, Error> {
    node.check_attrs(ctx, &[]);
    let mut m = MemoryBacking::default();
    let mut seen = std::collections::HashSet::new();
    for child in node.children() {
        let c = child.node();
        if !seen.insert(c.name().to_string()) {
            return Err(c.refuse(format!("<{}> appears more than once", c.name())));
        }
        match c.name() {
            "hugepages" => {
                c.check_attrs(ctx, &[]);
                let mut pages = Vec::new();
                for p in c.children() {
                    let p = p.node();
                    if p.name() != "page" {
                        return Err(p.refuse(format!("<{}> inside <hugepages>", p.name())));
                    }
                    p.leaf(ctx, &["size", "unit", "nodeset"])?;
                    pages.push(parse_page(&p)?);
                }
                m.hugepages = Some(pages);
            }
            "nosharepages" => {
                c.leaf(ctx, &[])?;
                m.nosharepages = true;
            }
            "locked" => {
                c.leaf(ctx, &[])?;
                m.locked = true;
            }
            "discard" => {
                c.leaf(ctx, &[])?;
                c.warn(
                    ctx,
                    "<discard> is kept but not acted on: guest memory is given back by the balloon",
                );
                m.discard = true;
            }
            "source" => {
                c.leaf(ctx, &["type"])?;
                m.source = Some(match c.need("type")? {
                    "anonymous" => MemorySource::Anonymous,
                    "file" => MemorySource::File,
                    "memfd" => MemorySource::Memfd,
                    t => {
                        return Err(c.refuse(format!(
                        "memory source type '{t}' is not supported: use anonymous, file or memfd"
                    )))
                    }
                });
            }
            "access" => {
                c.leaf(ctx, &["mode"])?;
                m.access = Some(MemoryAccess::parse(&c, "mode", c.need("mode")?)?);
            }
            "allocation" => {
                c.leaf(ctx, &["mode", "threads"])?;
                m.prealloc = match c.attr("mode") {
                    None => None,
                    Some("immediate") => Some(true),
                    Some("ondemand") => Some(false),
                    Some(v) => {
                        return Err(c.refuse(format!(
                            "allocation mode='{v}' must be immediate or ondemand"
                        )))
                    }
                };
                if let Some(t) = c.attr("threads") {
                    let t: u32 = parse_number(&c, "threads", t)?;
                    if t == 0 || t > MAX_PREALLOC_THREADS {
                        return Err(
                            c.refuse(format!("threads='{t}' must be 1 to {MAX_PREALLOC_THREADS}"))
                        );
                    }
                    m.prealloc_threads = Some(t);
                }
            }
            n => return Err(c.refuse(format!("<{n}> inside <memoryBacking> is not supported"))),
        }
    }
    if m.source == Some(MemorySource::Anonymous) && m.access == Some(MemoryAccess::Shared) {
        return Err(node.refuse(
            "access mode='shared' needs source type='memfd' or 'file': anonymous memory is private",
        ));
    }
    Ok(m)
}

fn parse_page(p: &Node<'_>) -> Result<HugePage, Error> {
    let unit = p.attr("unit").unwrap_or("KiB");
    let mult = unit_multiplier(unit).ok_or_else(|| p.refuse(format!("unknown unit '{unit}'")))?;
    let size: u64 = parse_number(p, "size", p.need("size")?)?;
    let bytes = size
        .checked_mul(mult)
        .ok_or_else(|| p.refuse(format!("{size} {unit} is too large")))?;
    let size_kib = bytes / 1024;
    if bytes % 1024 != 0 || !matches!(size_kib, 2048 | 1_048_576) {
        return Err(p.refuse(format!(
            "a huge page of {size} {unit} is not offered on x86_64: use 2 MiB or 1 GiB"
        )));
    }
    let nodeset = match p.attr("nodeset") {
        Some(s) => Some(CpuSet::parse(s).map_err(|e| p.refuse(format!("nodeset {e}")))?),
        None => None,
    };
    Ok(HugePage { size_kib, nodeset })
}

impl MemoryBacking {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("memoryBacking", &[]);
        if let Some(pages) = &self.hugepages {
            if pages.is_empty() {
                w.empty("hugepages", &[]);
            } else {
                w.open("hugepages", &[]);
                for p in pages {
                    let size = p.size_kib.to_string();
                    let nodes = p.nodeset.as_ref().map(CpuSet::to_string);
                    let mut attrs = vec![("size", size.as_str()), ("unit", "KiB")];
                    if let Some(n) = &nodes {
                        attrs.push(("nodeset", n));
                    }
                    w.empty("page", &attrs);
                }
                w.close("hugepages");
            }
        }
        if self.nosharepages {
            w.empty("nosharepages", &[]);
        }
        if self.locked {
            w.empty("locked", &[]);
        }
        if let Some(s) = self.source {
            w.empty("source", &[("type", s.as_str())]);
        }
        if let Some(a) = self.access {
            w.empty("access", &[("mode", a.as_str())]);
        }
        if self.prealloc.is_some() || self.prealloc_threads.is_some() {
            let threads = self.prealloc_threads.map(|t| t.to_string());
            let mut attrs = Vec::new();
            match self.prealloc {
                Some(true) => attrs.push(("mode", "immediate")),
                Some(false) => attrs.push(("mode", "ondemand")),
                None => {}
            }
            if let Some(t) = &threads {
                attrs.push(("threads", t));
            }
            w.empty("allocation", &attrs);
        }
        if self.discard {
            w.empty("discard", &[]);
        }
        w.close("memoryBacking");
    }
}

/// How a host node set binds memory (`numatune` `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumaMode {
    /// Only from the node set (`MPOL_BIND`).
    Strict,
    /// From the node set's first node first (`MPOL_PREFERRED`).
    Preferred,
    /// Spread page by page over the node set (`MPOL_INTERLEAVE`).
    Interleave,
    /// libvirt's mode that restricts only through cgroups.
    Restrictive,
}

impl NumaMode {
    /// The name in libvirt's XML (and `virsh numatune`'s output).
    pub fn as_str(self) -> &'static str {
        match self {
            NumaMode::Strict => "strict",
            NumaMode::Preferred => "preferred",
            NumaMode::Interleave => "interleave",
            NumaMode::Restrictive => "restrictive",
        }
    }

    /// Parses a mode name.
    pub fn parse(value: &str) -> Option<NumaMode> {
        Some(match value {
            "strict" => NumaMode::Strict,
            "preferred" => NumaMode::Preferred,
            "interleave" => NumaMode::Interleave,
            "restrictive" => NumaMode::Restrictive,
            _ => return None,
        })
    }
}

/// A mode and the host nodes it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeBinding {
    /// The mode.
    pub mode: NumaMode,
    /// The host NUMA nodes.
    pub nodeset: CpuSet,
}

/// `numatune`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NumaTune {
    /// `memory`: all guest memory, or every cell without a `memnode`.
    pub memory: Option<NodeBinding>,
    /// `memnode`s by guest cell id.
    pub memnodes: Vec<(u32, NodeBinding)>,
}

pub(crate) fn parse_numatune(node: &Node<'_>, ctx: &mut Ctx) -> Result<NumaTune, Error> {
    node.check_attrs(ctx, &[]);
    let mut t = NumaTune::default();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "memory" => {
                c.once(&t.memory)?;
                c.leaf(ctx, &["mode", "nodeset", "placement"])?;
                match c.attr("placement") {
                    None | Some("static") => {}
                    Some("auto") => {
                        return Err(c.refuse(
                            "placement='auto' is not supported: it asks numad for a placement and Vireo does not run numad",
                        ))
                    }
                    Some(p) => return Err(c.refuse(format!("unknown placement '{p}'"))),
                }
                t.memory = Some(binding(&c)?);
            }
            "memnode" => {
                c.leaf(ctx, &["cellid", "mode", "nodeset"])?;
                let cell: u32 = parse_number(&c, "cellid", c.need("cellid")?)?;
                if t.memnodes.iter().any(|(id, _)| *id == cell) {
                    return Err(c.refuse(format!("cell {cell} has a second <memnode>")));
                }
                t.memnodes.push((cell, binding(&c)?));
            }
            n => return Err(c.refuse(format!("<{n}> inside <numatune> is not supported"))),
        }
    }
    Ok(t)
}

fn binding(c: &Node<'_>) -> Result<NodeBinding, Error> {
    let mode = c.attr("mode").unwrap_or("strict");
    let mode = NumaMode::parse(mode).ok_or_else(|| {
        c.refuse(format!(
            "mode='{mode}' must be strict, preferred, interleave or restrictive"
        ))
    })?;
    let nodeset =
        CpuSet::parse(c.need("nodeset")?).map_err(|e| c.refuse(format!("nodeset {e}")))?;
    if mode == NumaMode::Preferred && nodeset.len() != 1 {
        return Err(c.refuse(format!(
            "mode='preferred' takes one host node, not '{nodeset}'"
        )));
    }
    Ok(NodeBinding { mode, nodeset })
}

impl NumaTune {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("numatune", &[]);
        if let Some(m) = &self.memory {
            let set = m.nodeset.to_string();
            w.empty("memory", &[("mode", m.mode.as_str()), ("nodeset", &set)]);
        }
        for (cell, m) in &self.memnodes {
            let (id, set) = (cell.to_string(), m.nodeset.to_string());
            w.empty(
                "memnode",
                &[
                    ("cellid", &id),
                    ("mode", m.mode.as_str()),
                    ("nodeset", &set),
                ],
            );
        }
        w.close("numatune");
    }

    /// The binding of guest cell `cell`: its `memnode`, else `memory`.
    pub fn for_cell(&self, cell: u32) -> Option<&NodeBinding> {
        self.memnodes
            .iter()
            .find(|(id, _)| *id == cell)
            .map(|(_, b)| b)
            .or(self.memory.as_ref())
    }
}

/// `cputune`: the pinning Vireo applies, and the rest kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuTune {
    /// `vcpupin`s: vCPU and the host CPUs it may run on.
    pub vcpupins: Vec<(u32, CpuSet)>,
    /// `emulatorpin`: the host CPUs of every thread that is not a vCPU.
    pub emulatorpin: Option<CpuSet>,
    /// `iothreadpin`s: I/O thread id and the host CPUs its disks' threads
    /// run on.
    pub iothreadpins: Vec<(u32, CpuSet)>,
    /// `shares`: the domain's relative CPU weight (2 to 262144).
    pub shares: Option<u64>,
    /// `global_period`: the domain's CPU bandwidth period, µs.
    pub global_period: Option<u64>,
    /// `global_quota`: CPU time per period for the whole domain, µs
    /// (-1: unlimited).
    pub global_quota: Option<i64>,
    /// Scheduler and bandwidth settings kept for writing back.
    pub kept: Vec<RawElement>,
}

const CPUTUNE_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "period",
        Unmodelled::Keep(
            "per-vCPU CPU bandwidth is not applied yet (global_period and global_quota are)",
        ),
    ),
    (
        "quota",
        Unmodelled::Keep(
            "per-vCPU CPU bandwidth is not applied yet (global_period and global_quota are)",
        ),
    ),
    (
        "emulator_period",
        Unmodelled::Keep("CPU bandwidth is not applied yet"),
    ),
    (
        "emulator_quota",
        Unmodelled::Keep("CPU bandwidth is not applied yet"),
    ),
    (
        "iothread_period",
        Unmodelled::Keep("CPU bandwidth is not applied yet"),
    ),
    (
        "iothread_quota",
        Unmodelled::Keep("CPU bandwidth is not applied yet"),
    ),
    (
        "vcpusched",
        Unmodelled::Refuse("real-time vCPU scheduling is not supported"),
    ),
    (
        "iothreadsched",
        Unmodelled::Refuse("real-time I/O thread scheduling is not supported"),
    ),
    (
        "emulatorsched",
        Unmodelled::Refuse("real-time emulator scheduling is not supported"),
    ),
    (
        "cachetune",
        Unmodelled::Refuse("cache allocation is not supported"),
    ),
    (
        "memorytune",
        Unmodelled::Refuse("memory bandwidth allocation is not supported"),
    ),
];

pub(crate) fn parse_cputune(node: &Node<'_>, ctx: &mut Ctx) -> Result<CpuTune, Error> {
    node.check_attrs(ctx, &[]);
    let mut t = CpuTune::default();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "vcpupin" => {
                c.leaf(ctx, &["vcpu", "cpuset"])?;
                let vcpu: u32 = parse_number(&c, "vcpu", c.need("vcpu")?)?;
                if t.vcpupins.iter().any(|(v, _)| *v == vcpu) {
                    return Err(c.refuse(format!("vCPU {vcpu} is pinned twice")));
                }
                let set = CpuSet::parse(c.need("cpuset")?)
                    .map_err(|e| c.refuse(format!("cpuset {e}")))?;
                t.vcpupins.push((vcpu, set));
            }
            "shares" => {
                c.once(&t.shares)?;
                c.check_attrs(ctx, &[]);
                let v: u64 = parse_number(&c, "shares", &c.text()?)?;
                if !(2..=262_144).contains(&v) {
                    return Err(c.refuse(format!("shares {v} must be 2 to 262144")));
                }
                t.shares = Some(v);
            }
            "global_period" => {
                c.once(&t.global_period)?;
                c.check_attrs(ctx, &[]);
                let v: u64 = parse_number(&c, "global_period", &c.text()?)?;
                if !(1000..=1_000_000).contains(&v) {
                    return Err(c.refuse(format!("global_period {v} must be 1000 to 1000000 µs")));
                }
                t.global_period = Some(v);
            }
            "global_quota" => {
                c.once(&t.global_quota)?;
                c.check_attrs(ctx, &[]);
                let v: i64 = parse_number(&c, "global_quota", &c.text()?)?;
                if v != -1 && !(1000..=17_592_186_044_415).contains(&v) {
                    return Err(c.refuse(format!(
                        "global_quota {v} must be -1 (unlimited) or 1000 to 17592186044415 µs"
                    )));
                }
                t.global_quota = Some(v);
            }
            "iothreadpin" => {
                c.leaf(ctx, &["iothread", "cpuset"])?;
                let id: u32 = parse_number(&c, "iothread", c.need("iothread")?)?;
                if t.iothreadpins.iter().any(|(i, _)| *i == id) {
                    return Err(c.refuse(format!("I/O thread {id} is pinned twice")));
                }
                let set = CpuSet::parse(c.need("cpuset")?)
                    .map_err(|e| c.refuse(format!("cpuset {e}")))?;
                t.iothreadpins.push((id, set));
            }
            "emulatorpin" => {
                c.once(&t.emulatorpin)?;
                c.leaf(ctx, &["cpuset"])?;
                t.emulatorpin = Some(
                    CpuSet::parse(c.need("cpuset")?)
                        .map_err(|e| c.refuse(format!("cpuset {e}")))?,
                );
            }
            _ => t.kept.push(c.unmodelled(ctx, CPUTUNE_UNMODELLED)?),
        }
    }
    Ok(t)
}

impl CpuTune {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("cputune", &[]);
        for (v, set) in &self.vcpupins {
            let (v, set) = (v.to_string(), set.to_string());
            w.empty("vcpupin", &[("vcpu", &v), ("cpuset", &set)]);
        }
        if let Some(set) = &self.emulatorpin {
            w.empty("emulatorpin", &[("cpuset", &set.to_string())]);
        }
        for (id, set) in &self.iothreadpins {
            let (id, set) = (id.to_string(), set.to_string());
            w.empty("iothreadpin", &[("iothread", &id), ("cpuset", &set)]);
        }
        if let Some(v) = self.shares {
            w.text("shares", &[], &v.to_string());
        }
        if let Some(v) = self.global_period {
            w.text("global_period", &[], &v.to_string());
        }
        if let Some(v) = self.global_quota {
            w.text("global_quota", &[], &v.to_string());
        }
        w.raws(&self.kept);
        w.close("cputune");
    }

    /// The host CPUs I/O thread `id` is pinned to by an `iothreadpin`.
    pub fn iothread_pin(&self, id: u32) -> Option<&CpuSet> {
        self.iothreadpins
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s)
    }

    /// The host CPUs vCPU `vcpu` is pinned to by a `vcpupin`.
    pub fn vcpu_pin(&self, vcpu: u32) -> Option<&CpuSet> {
        self.vcpupins
            .iter()
            .find(|(v, _)| *v == vcpu)
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn parse<T>(
        xml: &str,
        f: fn(&Node<'_>, &mut Ctx) -> Result<T, Error>,
    ) -> Result<(T, usize), Error> {
        let el = read(xml).unwrap();
        let mut ctx = Ctx::default();
        let v = f(&Node::root(&el, "/domain/x"), &mut ctx)?;
        Ok((v, ctx.warnings.len()))
    }

    #[test]
    fn memory_backing_round_trips() {
        let (m, warnings) = parse(
            "<memoryBacking><hugepages><page size='2' unit='M' nodeset='0-1'/><page size='1048576'/></hugepages>\
             <nosharepages/><source type='memfd'/><access mode='shared'/><allocation mode='immediate' threads='4'/></memoryBacking>",
            parse_memory_backing,
        )
        .unwrap();
        assert_eq!(warnings, 0);
        let pages = m.hugepages.as_ref().unwrap();
        assert_eq!(pages[0].size_kib, 2048);
        assert_eq!(pages[0].nodeset, Some(CpuSet::of([0, 1])));
        assert_eq!(pages[1].size_kib, 1_048_576);
        assert_eq!((m.prealloc, m.prealloc_threads), (Some(true), Some(4)));
        let mut w = XmlWriter::default();
        m.write(&mut w);
        let xml = w.finish();
        let (again, _) = parse(&xml, parse_memory_backing).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn memory_backing_refusals() {
        for (bad, why) in [
            (
                "<memoryBacking><hugepages><page size='4'/></hugepages></memoryBacking>",
                "not offered",
            ),
            (
                "<memoryBacking><hugepages><page size='64' unit='K'/></hugepages></memoryBacking>",
                "not offered",
            ),
            (
                "<memoryBacking><source type='anonymous'/><access mode='shared'/></memoryBacking>",
                "private",
            ),
            (
                "<memoryBacking><allocation threads='0'/></memoryBacking>",
                "1 to",
            ),
            (
                "<memoryBacking><allocation mode='later'/></memoryBacking>",
                "immediate",
            ),
            (
                "<memoryBacking><locked/><locked/></memoryBacking>",
                "more than once",
            ),
            (
                "<memoryBacking><source type='hugetlbfs'/></memoryBacking>",
                "anonymous, file or memfd",
            ),
        ] {
            let e = parse(bad, parse_memory_backing).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn numatune_cells_fall_back_to_memory() {
        let (t, _) = parse(
            "<numatune><memory mode='interleave' nodeset='0-1'/><memnode cellid='1' mode='preferred' nodeset='1'/></numatune>",
            parse_numatune,
        )
        .unwrap();
        assert_eq!(t.for_cell(0).unwrap().mode, NumaMode::Interleave);
        assert_eq!(t.for_cell(1).unwrap().nodeset, CpuSet::of([1]));
        for bad in [
            "<numatune><memory mode='preferred' nodeset='0-1'/></numatune>",
            "<numatune><memory placement='auto'/></numatune>",
            "<numatune><memnode cellid='0' nodeset='0'/><memnode cellid='0' nodeset='1'/></numatune>",
            "<numatune><memory mode='bind' nodeset='0'/></numatune>",
            "<numatune><memory/></numatune>",
        ] {
            assert!(parse(bad, parse_numatune).is_err(), "{bad}");
        }
    }

    #[test]
    fn cputune_pins_and_keeps_the_rest() {
        let (t, warnings) = parse(
            "<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='0-1,^0'/><emulatorpin cpuset='0'/><shares>1024</shares></cputune>",
            parse_cputune,
        )
        .unwrap();
        assert_eq!(t.vcpu_pin(1), Some(&CpuSet::of([1])));
        assert_eq!(t.emulatorpin, Some(CpuSet::of([0])));
        assert_eq!(t.shares, Some(1024));
        assert_eq!((t.kept.len(), warnings), (0, 0));
        for bad in [
            "<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='0' cpuset='0'/></cputune>",
            "<cputune><vcpupin vcpu='0'/></cputune>",
            "<cputune><cachetune vcpus='0'/></cputune>",
        ] {
            assert!(parse(bad, parse_cputune).is_err(), "{bad}");
        }
    }
}
