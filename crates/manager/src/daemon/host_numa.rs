//! The host's NUMA cells as `virsh capabilities` shows them: each node's
//! memory, page pools, distances and CPUs, read from sysfs.

use std::fs;
use std::path::Path;

/// One logical CPU of a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostCpu {
    pub(crate) id: u32,
    pub(crate) socket: u32,
    pub(crate) die: u32,
    pub(crate) core: u32,
    /// `thread_siblings_list`, as the kernel writes it.
    pub(crate) siblings: String,
}

/// One host NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostCell {
    pub(crate) id: u32,
    pub(crate) memory_kib: u64,
    /// (page size KiB, pages in the pool); 4 KiB first.
    pub(crate) pages: Vec<(u64, u64)>,
    /// (node, distance).
    pub(crate) distances: Vec<(u32, u32)>,
    pub(crate) cpus: Vec<HostCpu>,
}

/// The most nodes and CPUs read: a sysfs with more is not believed.
const MAX_NODES: usize = 1024;
const MAX_CPUS: usize = 16384;

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_num<T: std::str::FromStr>(path: &Path) -> Option<T> {
    read(path)?.parse().ok()
}

/// The numbered entries `prefix<N>` of a directory, ascending.
fn numbered(dir: &Path, prefix: &str, max: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    let rest = name.to_str()?.strip_prefix(prefix)?;
                    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    rest.parse().ok()
                })
                .take(max)
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Expands a kernel CPU list (`0-3,8`), bounded.
fn cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.parse().ok(), b.parse().ok()),
            None => (item.parse().ok(), item.parse().ok()),
        };
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        for c in lo..=hi {
            if out.len() >= MAX_CPUS {
                return out;
            }
            out.push(c);
        }
    }
    out
}

fn host_cpu(sys: &Path, id: u32) -> HostCpu {
    let topo = sys.join(format!("devices/system/cpu/cpu{id}/topology"));
    HostCpu {
        id,
        socket: read_num(&topo.join("physical_package_id")).unwrap_or(0),
        die: read_num(&topo.join("die_id")).unwrap_or(0),
        core: read_num(&topo.join("core_id")).unwrap_or(id),
        siblings: read(&topo.join("thread_siblings_list")).unwrap_or_else(|| id.to_string()),
    }
}

/// The huge page pools under `dir` (`hugepages-2048kB/nr_hugepages`).
fn huge_pools(dir: &Path) -> Vec<(u64, u64)> {
    let mut pools: Vec<(u64, u64)> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name();
                    let size = name
                        .to_str()?
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()?;
                    Some((size, read_num(&e.path().join("nr_hugepages")).unwrap_or(0)))
                })
                .take(16)
                .collect()
        })
        .unwrap_or_default();
    pools.sort_unstable();
    pools
}

/// A node's `MemTotal` from its `meminfo` (`Node 0 MemTotal:  123 kB`).
fn node_mem_total(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (_, rest) = l.split_once("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The host's cells, read under `sys` (`/sys` on a real host). A kernel
/// without NUMA has no `devices/system/node`: then one cell holds every
/// CPU and `memory_kib`, with the machine-wide page pools.
pub(crate) fn host_cells(sys: &Path, memory_kib: u64) -> Vec<HostCell> {
    let nodes_dir = sys.join("devices/system/node");
    let ids = numbered(&nodes_dir, "node", MAX_NODES);
    if ids.is_empty() {
        let cpus = numbered(&sys.join("devices/system/cpu"), "cpu", MAX_CPUS);
        let pools = huge_pools(&sys.join("kernel/mm/hugepages"));
        return vec![cell(0, memory_kib, pools, vec![(0, 10)], &cpus, sys)];
    }
    ids.iter()
        .map(|&id| {
            let dir = nodes_dir.join(format!("node{id}"));
            let mem = read(&dir.join("meminfo"))
                .and_then(|t| node_mem_total(&t))
                .unwrap_or(0);
            let distances = read(&dir.join("distance"))
                .map(|t| {
                    ids.iter()
                        .copied()
                        .zip(t.split_whitespace().filter_map(|v| v.parse().ok()))
                        .collect()
                })
                .unwrap_or_default();
            let cpus = read(&dir.join("cpulist"))
                .map(|t| cpu_list(&t))
                .unwrap_or_default();
            cell(
                id,
                mem,
                huge_pools(&dir.join("hugepages")),
                distances,
                &cpus,
                sys,
            )
        })
        .collect()
}

fn cell(
    id: u32,
    memory_kib: u64,
    huge: Vec<(u64, u64)>,
    distances: Vec<(u32, u32)>,
    cpus: &[u32],
    sys: &Path,
) -> HostCell {
    // What huge pages hold is not in the 4 KiB pool.
    let huge_kib: u64 = huge
        .iter()
        .map(|(size, n)| size.saturating_mul(*n))
        .fold(0, u64::saturating_add);
    let mut pages = vec![(4, memory_kib.saturating_sub(huge_kib) / 4)];
    pages.extend(huge);
    HostCell {
        id,
        memory_kib,
        pages,
        distances,
        cpus: cpus.iter().map(|&c| host_cpu(sys, c)).collect(),
    }
}

/// The `<topology>` element of the capabilities' `<host>`.
pub(crate) fn topology_xml(cells: &[HostCell]) -> String {
    let mut x = format!("    <topology>\n      <cells num='{}'>\n", cells.len());
    for c in cells {
        x.push_str(&format!(
            "        <cell id='{}'>\n          <memory unit='KiB'>{}</memory>\n",
            c.id, c.memory_kib
        ));
        for (size, n) in &c.pages {
            x.push_str(&format!(
                "          <pages unit='KiB' size='{size}'>{n}</pages>\n"
            ));
        }
        x.push_str("          <distances>\n");
        for (node, d) in &c.distances {
            x.push_str(&format!("            <sibling id='{node}' value='{d}'/>\n"));
        }
        x.push_str("          </distances>\n");
        x.push_str(&format!("          <cpus num='{}'>\n", c.cpus.len()));
        for cpu in &c.cpus {
            x.push_str(&format!(
                "            <cpu id='{}' socket_id='{}' die_id='{}' core_id='{}' siblings='{}'/>\n",
                cpu.id,
                cpu.socket,
                cpu.die,
                cpu.core,
                virtxml::escape(&cpu.siblings)
            ));
        }
        x.push_str("          </cpus>\n        </cell>\n");
    }
    x.push_str("      </cells>\n    </topology>\n");
    x
}

/// The page sizes the host offers, KiB, for the `<cpu>` element.
pub(crate) fn page_sizes(cells: &[HostCell]) -> Vec<u64> {
    let mut sizes: Vec<u64> = cells
        .iter()
        .flat_map(|c| c.pages.iter().map(|(s, _)| *s))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn two_nodes_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        for (n, cpus, mem) in [(0, "0-1", 1_048_576u64), (1, "2-3", 524_288)] {
            let d = format!("devices/system/node/node{n}");
            write(sys, &format!("{d}/cpulist"), cpus);
            write(
                sys,
                &format!("{d}/meminfo"),
                &format!("Node {n} MemTotal:       {mem} kB\nNode {n} MemFree: 1 kB\n"),
            );
            write(
                sys,
                &format!("{d}/distance"),
                if n == 0 { "10 21" } else { "21 10" },
            );
            write(
                sys,
                &format!("{d}/hugepages/hugepages-2048kB/nr_hugepages"),
                "16",
            );
            write(
                sys,
                &format!("{d}/hugepages/hugepages-1048576kB/nr_hugepages"),
                "0",
            );
        }
        write(sys, "devices/system/node/possible", "0-1");
        for c in 0..4 {
            let t = format!("devices/system/cpu/cpu{c}/topology");
            write(
                sys,
                &format!("{t}/physical_package_id"),
                &(c / 2).to_string(),
            );
            write(sys, &format!("{t}/core_id"), &(c % 2).to_string());
            write(sys, &format!("{t}/thread_siblings_list"), &c.to_string());
        }
        let cells = host_cells(sys, 0);
        assert_eq!(cells.len(), 2);
        assert_eq!(cells[1].memory_kib, 524_288);
        assert_eq!(cells[1].distances, vec![(0, 21), (1, 10)]);
        assert_eq!(
            cells[0].pages,
            vec![(4, (1_048_576 - 16 * 2048) / 4), (2048, 16), (1_048_576, 0)]
        );
        assert_eq!(cells[1].cpus[1].id, 3);
        assert_eq!((cells[1].cpus[1].socket, cells[1].cpus[1].core), (1, 1));
        let xml = topology_xml(&cells);
        assert!(xml.contains("<cells num='2'>"), "{xml}");
        assert!(
            xml.contains("<pages unit='KiB' size='2048'>16</pages>"),
            "{xml}"
        );
        assert!(xml.contains("<sibling id='0' value='21'/>"), "{xml}");
        assert!(
            xml.contains("<cpu id='3' socket_id='1' die_id='0' core_id='1' siblings='3'/>"),
            "{xml}"
        );
        assert_eq!(page_sizes(&cells), vec![4, 2048, 1_048_576]);
    }

    #[test]
    fn a_kernel_without_numa_is_one_cell() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        write(sys, "devices/system/cpu/cpu0/topology/core_id", "0");
        write(sys, "devices/system/cpu/cpu1/topology/core_id", "1");
        write(
            sys,
            "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "2",
        );
        let cells = host_cells(sys, 8192);
        assert_eq!(cells.len(), 1);
        assert_eq!(cells[0].cpus.len(), 2);
        assert_eq!(cells[0].pages, vec![(4, 1024), (2048, 2)]);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("0-2,5"), vec![0, 1, 2, 5]);
        assert_eq!(cpu_list(""), Vec::<u32>::new());
        assert_eq!(cpu_list("0-4294967295").len(), MAX_CPUS);
    }
}
