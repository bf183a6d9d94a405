//! Guest NUMA (`--numa`, `--numa-distance`): the cells the guest sees and
//! the host nodes each cell's memory is bound to with `mbind(2)`.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::config::parse_size;

/// Distance from a node to itself (ACPI SLIT).
pub const LOCAL_DISTANCE: u8 = 10;
/// Distance between two different nodes when none is given.
pub const REMOTE_DISTANCE: u8 = 20;
/// Granule of a cell's memory without huge pages.
const CELL_ALIGN: u64 = 2 << 20;

/// How a cell's memory is bound to its host nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemPolicy {
    /// Only the given nodes (MPOL_BIND).
    Strict,
    /// The given node first, others when it is full (MPOL_PREFERRED).
    Preferred,
    /// Round-robin over the given nodes (MPOL_INTERLEAVE).
    Interleave,
    /// libvirt's cgroup-only mode; `vireo run` has no cgroup of its own, so
    /// it binds as `strict` does.
    Restrictive,
}

impl MemPolicy {
    /// The name `--numa policy=` and the API use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Preferred => "preferred",
            Self::Interleave => "interleave",
            Self::Restrictive => "restrictive",
        }
    }

    /// The `mbind` mode.
    fn mode(self) -> libc::c_int {
        match self {
            Self::Strict | Self::Restrictive => libc::MPOL_BIND,
            Self::Preferred => libc::MPOL_PREFERRED,
            Self::Interleave => libc::MPOL_INTERLEAVE,
        }
    }
}

impl FromStr for MemPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Self::Strict),
            "preferred" => Ok(Self::Preferred),
            "interleave" => Ok(Self::Interleave),
            "restrictive" => Ok(Self::Restrictive),
            _ => Err(format!(
                "policy='{s}' is not strict, preferred, interleave or restrictive"
            )),
        }
    }
}

/// One guest NUMA cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaCell {
    /// Its node number in the guest (0..n-1).
    pub id: u32,
    /// Its memory in bytes.
    pub memory: u64,
    /// Its vCPUs, by index; none for a node with memory only (as QEMU's
    /// `-numa node` without `cpus=`).
    pub cpus: Vec<u32>,
    /// Host nodes its memory is bound to (empty: not bound).
    pub host_nodes: Vec<u32>,
    /// How, when `host_nodes` is given (default strict).
    pub policy: Option<MemPolicy>,
}

/// Parse a list like `0-3` or `5` (no commas: the flags that take lists
/// are themselves comma-separated, so a second range is a second `key=`).
pub fn parse_id_list(s: &str, what: &str) -> Result<Vec<u32>, String> {
    let bad = || format!("{what} '{s}' is not a list like 0-3 or 5");
    if s.is_empty() {
        return Err(bad());
    }
    let mut out = Vec::new();
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u32 = a.parse().map_err(|_| bad())?;
    let b: u32 = b.parse().map_err(|_| bad())?;
    if a > b || b - a > 4096 {
        return Err(bad());
    }
    out.extend(a..=b);
    Ok(out)
}

impl FromStr for NumaCell {
    type Err = String;

    /// `cell=ID,memory=SIZE,cpus=LIST[,cpus=LIST...][,host-nodes=LIST...]
    /// [,policy=strict|preferred|interleave|restrictive]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let err = |m: String| format!("--numa {s}: {m}");
        let mut id = None;
        let mut memory = None;
        let mut cpus = Vec::new();
        let mut host_nodes = Vec::new();
        let mut policy = None;
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("'{part}' is not key=value")))?;
            match key {
                "cell" | "nodeid" => {
                    id = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|n| *n < 128)
                            .ok_or_else(|| err(format!("cell='{v}' is not a number below 128")))?,
                    )
                }
                "memory" | "mem" => {
                    memory = Some(parse_size(v, 20, "cell memory", "512M, 1G").map_err(err)?)
                }
                "cpus" => cpus.extend(parse_id_list(v, "cpus").map_err(err)?),
                "host-nodes" => host_nodes.extend(parse_id_list(v, "host-nodes").map_err(err)?),
                "policy" => policy = Some(v.parse::<MemPolicy>().map_err(err)?),
                _ => {
                    return Err(err(format!(
                        "unknown key '{key}' (cell, memory, cpus, host-nodes, policy)"
                    )))
                }
            }
        }
        let id = id.ok_or_else(|| err("cell= is required".into()))?;
        let memory = memory.ok_or_else(|| err("memory= is required".into()))?;
        if policy.is_some() && host_nodes.is_empty() {
            return Err(err("policy= needs host-nodes=".into()));
        }
        if policy == Some(MemPolicy::Preferred) && host_nodes.len() != 1 {
            return Err(err("policy=preferred takes exactly one host node".into()));
        }
        host_nodes.sort_unstable();
        host_nodes.dedup();
        Ok(Self {
            id,
            memory,
            cpus,
            host_nodes,
            policy,
        })
    }
}

/// One `--numa-distance src=A,dst=B,value=V`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumaDistance {
    /// From this cell.
    pub src: u32,
    /// To this cell.
    pub dst: u32,
    /// Relative distance (10 local).
    pub value: u8,
}

impl FromStr for NumaDistance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = |m: String| format!("--numa-distance {s}: {m}");
        let (mut src, mut dst, mut value) = (None, None, None);
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("'{part}' is not key=value")))?;
            let n: u32 = v
                .parse()
                .map_err(|_| err(format!("{key}='{v}' is not a number")))?;
            match key {
                "src" => src = Some(n),
                "dst" => dst = Some(n),
                "value" | "val" => value = Some(n),
                _ => return Err(err(format!("unknown key '{key}' (src, dst, value)"))),
            }
        }
        let (Some(src), Some(dst), Some(value)) = (src, dst, value) else {
            return Err(err("src=, dst= and value= are all required".into()));
        };
        let value = u8::try_from(value).unwrap_or(255);
        if src == dst && value != LOCAL_DISTANCE {
            return Err(err(format!(
                "the distance from a cell to itself is {LOCAL_DISTANCE}"
            )));
        }
        if src != dst && !(11..=254).contains(&value) {
            return Err(err(
                "the distance between two cells is from 11 to 254".into()
            ));
        }
        Ok(Self { src, dst, value })
    }
}

/// The guest's cells, checked against the machine: ordered by id, every
/// vCPU in exactly one, memory adding up, and the full distance matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaLayout {
    /// Cells, index = id.
    pub cells: Vec<NumaCell>,
    /// `distances[from][to]`.
    pub distances: Vec<Vec<u8>>,
}

/// Check `cells` and `distances` against `cpus` vCPUs and `memory` bytes
/// (in `granule`-sized units) and build the layout.
pub fn layout(
    cells: &[NumaCell],
    distances: &[NumaDistance],
    cpus: u32,
    memory: u64,
    huge_page: Option<u64>,
) -> Result<Option<NumaLayout>, String> {
    if cells.is_empty() {
        if !distances.is_empty() {
            return Err("--numa-distance needs --numa cells".into());
        }
        return Ok(None);
    }
    let mut sorted: Vec<NumaCell> = cells.to_vec();
    sorted.sort_by_key(|c| c.id);
    if let Some(w) = sorted.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(format!("--numa cell {} is given twice", w[0].id));
    }
    if let Some((i, _)) = (0u32..).zip(&sorted).find(|(i, c)| c.id != *i) {
        return Err(format!(
            "--numa cells must be numbered 0 to {} (cell {i} is missing)",
            sorted.len() - 1
        ));
    }
    let granule = huge_page.unwrap_or(CELL_ALIGN).max(CELL_ALIGN);
    let mut owner: BTreeMap<u32, u32> = BTreeMap::new();
    for c in &sorted {
        if c.memory == 0 || !c.memory.is_multiple_of(granule) {
            return Err(format!(
                "--numa cell {}: memory {} MiB is not a positive multiple of {} MiB",
                c.id,
                c.memory >> 20,
                granule >> 20
            ));
        }
        for &cpu in &c.cpus {
            if cpu >= cpus {
                return Err(format!(
                    "--numa cell {}: vCPU {cpu} does not exist (--cpus {cpus})",
                    c.id
                ));
            }
            if let Some(other) = owner.insert(cpu, c.id) {
                return Err(format!(
                    "--numa: vCPU {cpu} is in cell {other} and cell {}",
                    c.id
                ));
            }
        }
    }
    if let Some(missing) = (0..cpus).find(|c| !owner.contains_key(c)) {
        return Err(format!("--numa: vCPU {missing} is in no cell"));
    }
    let total = sorted
        .iter()
        .try_fold(0u64, |a, c| a.checked_add(c.memory))
        .unwrap_or(u64::MAX);
    if total != memory {
        return Err(format!(
            "--numa cells have {} MiB of memory in all, but --memory is {} MiB",
            total >> 20,
            memory >> 20
        ));
    }
    let n = sorted.len();
    let mut matrix = vec![vec![0u8; n]; n];
    let mut given = vec![vec![false; n]; n];
    for d in distances {
        let (s, t) = (d.src as usize, d.dst as usize);
        if s >= n || t >= n {
            return Err(format!(
                "--numa-distance src={},dst={}: there are only cells 0 to {}",
                d.src,
                d.dst,
                n - 1
            ));
        }
        if given[s][t] && matrix[s][t] != d.value {
            return Err(format!(
                "--numa-distance src={},dst={} is given twice with different values",
                d.src, d.dst
            ));
        }
        given[s][t] = true;
        matrix[s][t] = d.value;
    }
    for s in 0..n {
        for t in 0..n {
            if !given[s][t] {
                matrix[s][t] = if s == t {
                    LOCAL_DISTANCE
                } else if given[t][s] {
                    matrix[t][s]
                } else {
                    REMOTE_DISTANCE
                };
            }
        }
    }
    Ok(Some(NumaLayout {
        cells: sorted,
        distances: matrix,
    }))
}

impl NumaLayout {
    /// Guest RAM ranges in address order, each with its cell:
    /// (cell, base, length).
    pub fn ram_ranges(&self) -> Result<Vec<(usize, u64, u64)>, arch::Error> {
        let sizes: Vec<u64> = self.cells.iter().map(|c| c.memory).collect();
        Ok(arch::memory::cell_regions(&sizes)?
            .into_iter()
            .map(|(cell, base, len)| (cell, base.0, len))
            .collect())
    }

    /// How cell `cell`'s memory is bound on the host, if it is.
    pub fn binding(&self, cell: usize) -> Option<(&[u32], MemPolicy)> {
        let c = self.cells.get(cell)?;
        (!c.host_nodes.is_empty()).then(|| {
            (
                c.host_nodes.as_slice(),
                c.policy.unwrap_or(MemPolicy::Strict),
            )
        })
    }
}

/// What the SRAT and SLIT say for `layout` on `cpus` vCPUs.
pub fn acpi_tables(layout: &NumaLayout, cpus: u32) -> arch::acpi::NumaTables {
    let mut cpu_nodes = vec![0u32; cpus as usize];
    for c in &layout.cells {
        for &cpu in &c.cpus {
            if let Some(slot) = cpu_nodes.get_mut(cpu as usize) {
                *slot = c.id;
            }
        }
    }
    let memory = layout
        .ram_ranges()
        .unwrap_or_default()
        .into_iter()
        .map(|(cell, base, len)| (u32::try_from(cell).unwrap_or(u32::MAX), base, len))
        .collect();
    arch::acpi::NumaTables {
        cpu_nodes,
        memory,
        distances: layout.distances.clone(),
    }
}

/// Parse a kernel node or CPU list file (`0-3,5`).
pub fn parse_sys_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            out.extend(a..=b);
        }
    }
    out
}

/// Refuse host nodes this host does not have, or that have no memory.
pub fn check_host_nodes(layout: &NumaLayout) -> Result<(), String> {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/devices/system/node/{f}"));
    let online = read("online")
        .map(|t| parse_sys_list(&t))
        .unwrap_or_default();
    // A kernel without NUMA has no node directory: node 0 is all there is.
    let online = if online.is_empty() { vec![0] } else { online };
    let with_memory = read("has_memory")
        .map(|t| parse_sys_list(&t))
        .unwrap_or_else(|_| online.clone());
    for c in &layout.cells {
        for &n in &c.host_nodes {
            if !online.contains(&n) {
                return Err(format!(
                    "--numa cell {}: host node {n} does not exist (this host's nodes: {})",
                    c.id,
                    list_string(&online)
                ));
            }
            if !with_memory.contains(&n) {
                return Err(format!("--numa cell {}: host node {n} has no memory", c.id));
            }
        }
    }
    Ok(())
}

/// With huge pages, the pages a bound cell needs must be free on its host
/// nodes: the kernel reserves huge pages for a mapping from the whole
/// pool, but a page bound to one node can only come from that node's, and
/// a fault that finds none there kills the guest (SIGBUS) long after it
/// started. `free_on(node)` is the node's free huge pages of `page_bytes`.
/// Cells that share nodes are counted together.
pub fn huge_page_node_shortfall(
    layout: &NumaLayout,
    page_bytes: u64,
    free_on: impl Fn(u32) -> Option<u64>,
) -> Result<(), String> {
    let mut demand: BTreeMap<Vec<u32>, (Vec<u32>, u64)> = BTreeMap::new();
    for (i, c) in layout.cells.iter().enumerate() {
        // Only a strict binding fails instead of spilling to other nodes.
        if let Some((nodes, MemPolicy::Strict | MemPolicy::Restrictive)) = layout.binding(i) {
            let entry = demand.entry(nodes.to_vec()).or_default();
            entry.0.push(c.id);
            entry.1 += c.memory.div_ceil(page_bytes);
        }
    }
    for (nodes, (cells, needed)) in demand {
        let free: u64 = nodes.iter().map(|&n| free_on(n).unwrap_or(0)).sum();
        if free < needed {
            let knob = format!(
                "/sys/devices/system/node/node{}/hugepages/hugepages-{}kB/nr_hugepages",
                nodes[0],
                page_bytes >> 10
            );
            return Err(format!(
                "--numa cell {} bound to host node {} needs {needed} huge pages of {} MiB \
                 there; it has {free} free ({knob})",
                list_string(&cells),
                list_string(&nodes),
                page_bytes >> 20
            ));
        }
    }
    Ok(())
}

/// Free huge pages of `page_bytes` on host node `node`, from sysfs.
pub fn free_huge_pages_on(node: u32, page_bytes: u64) -> Option<u64> {
    std::fs::read_to_string(format!(
        "/sys/devices/system/node/node{node}/hugepages/hugepages-{}kB/free_hugepages",
        page_bytes >> 10
    ))
    .ok()?
    .trim()
    .parse()
    .ok()
}

/// `0-3,5` for a sorted list.
pub fn list_string(ids: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// Nodes `mbind` accepts in its mask here (1024, as glibc's default).
const MAX_NODES: usize = 1024;

/// Bind `[addr, addr+len)` to `nodes` with `policy`. Called on a fresh
/// mapping, before any page of it is touched, so every page is placed by
/// the policy (mbind without MPOL_MF_MOVE does not move pages already in).
pub fn bind_memory(
    addr: usize,
    len: usize,
    nodes: &[u32],
    policy: MemPolicy,
) -> std::io::Result<()> {
    let mut mask = [0u64; MAX_NODES / 64];
    for &n in nodes {
        let n = n as usize;
        if n >= MAX_NODES {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        mask[n / 64] |= 1 << (n % 64);
    }
    // SAFETY: mbind only changes the policy of a range this process mapped
    // (the caller's); the mask is read for `MAX_NODES` bits, which it holds
    // (the kernel reads maxnode - 1 bits).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            policy.mode(),
            mask.as_ptr(),
            MAX_NODES + 1,
            0u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(s: &str) -> NumaCell {
        s.parse().unwrap()
    }

    #[test]
    fn cells_parse() {
        let c = cell("cell=1,memory=512M,cpus=0-1,cpus=4,host-nodes=1,policy=preferred");
        assert_eq!(c.id, 1);
        assert_eq!(c.memory, 512 << 20);
        assert_eq!(c.cpus, vec![0, 1, 4]);
        assert_eq!(c.host_nodes, vec![1]);
        assert_eq!(c.policy, Some(MemPolicy::Preferred));
        let c = cell("cell=0,memory=1024,cpus=0");
        assert_eq!(c.memory, 1 << 30, "a bare number is MiB, as QEMU's mem=");
        assert_eq!((c.policy, c.host_nodes.len()), (None, 0));
        for (s, why) in [
            ("memory=1G,cpus=0", "cell= is required"),
            ("cell=0,cpus=0", "memory= is required"),
            ("cell=0,memory=1G,cpus=", "not a list"),
            ("cell=0,memory=1G,cpus=3-1", "not a list"),
            (
                "cell=0,memory=1G,cpus=0,policy=bind",
                "not strict, preferred",
            ),
            ("cell=0,memory=1G,cpus=0,policy=strict", "needs host-nodes"),
            (
                "cell=0,memory=1G,cpus=0,host-nodes=0-1,policy=preferred",
                "exactly one host node",
            ),
            ("cell=0,memory=1G,cpus=0,colour=red", "unknown key 'colour'"),
            ("cell=x,memory=1G,cpus=0", "not a number"),
            ("cell=0,memory=1Q,cpus=0", "invalid cell memory"),
            ("cell=0,memory=1G,cpus", "not key=value"),
        ] {
            let err = s.parse::<NumaCell>().unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
            assert!(err.starts_with("--numa "), "{err}");
        }
    }

    #[test]
    fn distances_parse() {
        let d: NumaDistance = "src=0,dst=1,value=15".parse().unwrap();
        assert_eq!((d.src, d.dst, d.value), (0, 1, 15));
        for (s, why) in [
            ("src=0,dst=0,value=20", "to itself is 10"),
            ("src=0,dst=1,value=10", "from 11 to 254"),
            ("src=0,dst=1,value=255", "from 11 to 254"),
            ("src=0,dst=1,value=9999", "from 11 to 254"),
            ("src=0,dst=1", "all required"),
            ("src=0,dst=1,value=x", "not a number"),
            ("src=0,dst=1,value=20,hop=1", "unknown key"),
        ] {
            let err = s.parse::<NumaDistance>().unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }

    #[test]
    fn layouts_add_up_or_are_refused() {
        let cells = [
            cell("cell=1,memory=256M,cpus=2-3"),
            cell("cell=0,memory=256M,cpus=0-1"),
        ];
        let d = |s: &str| s.parse::<NumaDistance>().unwrap();
        let l = layout(&cells, &[], 4, 512 << 20, None).unwrap().unwrap();
        assert_eq!(l.cells[0].id, 0, "sorted by id");
        assert_eq!(l.distances, vec![vec![10, 20], vec![20, 10]]);
        // One direction implies the other; both given stay asymmetric.
        let l = layout(&cells, &[d("src=0,dst=1,value=15")], 4, 512 << 20, None)
            .unwrap()
            .unwrap();
        assert_eq!(l.distances, vec![vec![10, 15], vec![15, 10]]);
        let both = [d("src=0,dst=1,value=15"), d("src=1,dst=0,value=25")];
        let l = layout(&cells, &both, 4, 512 << 20, None).unwrap().unwrap();
        assert_eq!(l.distances, vec![vec![10, 15], vec![25, 10]]);
        assert!(layout(&[], &[], 4, 1 << 30, None).unwrap().is_none());

        for (cells, dist, cpus, mem, huge, why) in [
            (
                &cells[..],
                &[][..],
                4,
                1 << 30,
                None,
                "512 MiB of memory in all",
            ),
            (&cells[..], &[], 5, 512 << 20, None, "vCPU 4 is in no cell"),
            (&cells[..], &[], 3, 512 << 20, None, "vCPU 3 does not exist"),
            (&cells[..1], &[], 4, 256 << 20, None, "cell 0 is missing"),
            (
                &[],
                &[d("src=0,dst=1,value=15")][..],
                1,
                1 << 30,
                None,
                "needs --numa",
            ),
            (
                &cells[..],
                &[d("src=0,dst=2,value=15")][..],
                4,
                512 << 20,
                None,
                "only cells 0 to 1",
            ),
            (
                &cells[..],
                &[d("src=0,dst=1,value=15"), d("src=0,dst=1,value=16")][..],
                4,
                512 << 20,
                None,
                "given twice",
            ),
            (
                &cells[..],
                &[],
                4,
                512 << 20,
                Some(1 << 30),
                "multiple of 1024 MiB",
            ),
        ] {
            let err = layout(cells, dist, cpus, mem, huge).unwrap_err();
            assert!(err.contains(why), "{why}: {err}");
        }
        let odd = [cell("cell=0,memory=3M,cpus=0")];
        let err = layout(&odd, &[], 1, 3 << 20, None).unwrap_err();
        assert!(err.contains("multiple of 2 MiB"), "{err}");
        let twice = [
            cell("cell=0,memory=2M,cpus=0"),
            cell("cell=0,memory=2M,cpus=1"),
        ];
        let err = layout(&twice, &[], 2, 4 << 20, None).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
        let shared = [
            cell("cell=0,memory=2M,cpus=0"),
            cell("cell=1,memory=2M,cpus=0"),
        ];
        let err = layout(&shared, &[], 1, 4 << 20, None).unwrap_err();
        assert!(err.contains("vCPU 0 is in cell 0 and cell 1"), "{err}");
    }

    #[test]
    fn a_cell_may_have_memory_only() {
        let cells = [
            cell("cell=0,memory=64M,cpus=0-1"),
            cell("cell=1,memory=64M"),
        ];
        let l = layout(&cells, &[], 2, 128 << 20, None).unwrap().unwrap();
        assert!(l.cells[1].cpus.is_empty());
        let t = acpi_tables(&l, 2);
        assert_eq!(t.cpu_nodes, vec![0, 0]);
        assert_eq!(t.memory, vec![(0, 0, 64 << 20), (1, 64 << 20, 64 << 20)]);
    }

    #[test]
    fn host_nodes_that_do_not_exist_are_refused_by_name() {
        let cells = [cell("cell=0,memory=2M,cpus=0,host-nodes=7")];
        let l = layout(&cells, &[], 1, 2 << 20, None).unwrap().unwrap();
        let err = check_host_nodes(&l).unwrap_err();
        assert!(err.contains("host node 7 does not exist"), "{err}");
        let cells = [cell("cell=0,memory=2M,cpus=0,host-nodes=0")];
        let l = layout(&cells, &[], 1, 2 << 20, None).unwrap().unwrap();
        check_host_nodes(&l).unwrap();
    }

    #[test]
    fn bound_cells_need_their_huge_pages_on_their_nodes() {
        let cells = [
            cell("cell=0,memory=64M,cpus=0,host-nodes=0"),
            cell("cell=1,memory=64M,cpus=1,host-nodes=0,policy=restrictive"),
            cell("cell=2,memory=64M,cpus=2,host-nodes=1,policy=preferred"),
            cell("cell=3,memory=64M,cpus=3"),
        ];
        let l = layout(&cells, &[], 4, 256 << 20, Some(2 << 20))
            .unwrap()
            .unwrap();
        let page = 2 << 20;
        // Cells 0 and 1 both need node 0: 64 pages; preferred and unbound
        // cells may take pages anywhere.
        huge_page_node_shortfall(&l, page, |n| Some(if n == 0 { 64 } else { 0 })).unwrap();
        let err = huge_page_node_shortfall(&l, page, |n| Some(if n == 0 { 63 } else { 500 }))
            .unwrap_err();
        assert_eq!(
            err,
            "--numa cell 0-1 bound to host node 0 needs 64 huge pages of 2 MiB there; it has \
             63 free (/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages)"
        );
        let err = huge_page_node_shortfall(&l, page, |_| None).unwrap_err();
        assert!(err.contains("it has 0 free"), "{err}");
    }

    #[test]
    fn lists() {
        assert_eq!(parse_sys_list("0-2,5\n"), vec![0, 1, 2, 5]);
        assert_eq!(list_string(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(parse_id_list("0-2", "cpus").unwrap(), vec![0, 1, 2]);
        assert!(parse_id_list("0-1,3", "cpus").is_err());
    }
}
