//! What the daemon tells about its host: `nodeinfo`, `capabilities`,
//! `version`, and the memory limit `start` checks against.

use std::collections::BTreeSet;
use std::fs;

use virtxml::escape;

use crate::api::{NodeInfo, VersionInfo};
use crate::driver::Driver;

/// A `/proc/meminfo` field, in KiB.
fn meminfo_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// MemTotal plus SwapTotal, KiB: more than this a guest can never have.
pub(crate) fn memory_and_swap_kib() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo_field(&text, "MemTotal")?;
    Some(total.saturating_add(meminfo_field(&text, "SwapTotal").unwrap_or(0)))
}

/// The CPU layout as `/proc/cpuinfo` tells it.
#[derive(Debug, Default, PartialEq, Eq)]
struct CpuLayout {
    logical: u32,
    mhz: u32,
    sockets: u32,
    cores_per_socket: u32,
    threads_per_core: u32,
}

fn parse_cpuinfo(text: &str) -> CpuLayout {
    let mut logical = 0u32;
    let mut mhz = 0u32;
    let mut packages = BTreeSet::new();
    let mut cores = 0u32;
    let mut siblings = 0u32;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => logical += 1,
            "cpu MHz" if mhz == 0 => {
                mhz = value
                    .split('.')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            }
            "physical id" => {
                packages.insert(value.to_string());
            }
            "cpu cores" if cores == 0 => cores = value.parse().unwrap_or(0),
            "siblings" if siblings == 0 => siblings = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let logical = logical.max(1);
    let sockets = u32::try_from(packages.len()).unwrap_or(1).max(1);
    let cores_per_socket = if cores == 0 { logical / sockets } else { cores }.max(1);
    let threads_per_core = if siblings >= cores_per_socket {
        siblings / cores_per_socket
    } else {
        1
    }
    .max(1);
    CpuLayout {
        logical,
        mhz,
        sockets,
        cores_per_socket,
        threads_per_core,
    }
}

fn numa_nodes() -> u32 {
    let count = fs::read_dir("/sys/devices/system/node")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.strip_prefix("node").is_some_and(|rest| {
                        !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .count()
        })
        .unwrap_or(0);
    u32::try_from(count).unwrap_or(1).max(1)
}

/// `GET /host`.
pub(crate) fn node_info() -> NodeInfo {
    let layout = parse_cpuinfo(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let nodes = numa_nodes();
    let memory_kib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_field(&t, "MemTotal"))
        .unwrap_or(0);
    NodeInfo {
        cpu_model: std::env::consts::ARCH.to_string(),
        cpus: online_cpus().unwrap_or(layout.logical),
        mhz: layout.mhz,
        numa_nodes: nodes,
        sockets_per_node: (layout.sockets / nodes).max(1),
        cores_per_socket: layout.cores_per_socket,
        threads_per_core: layout.threads_per_core,
        memory_kib,
    }
}

fn online_cpus() -> Option<u32> {
    // SAFETY: sysconf reads a system constant; no memory is passed.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// `GET /host/capabilities`: libvirt's capabilities XML, the parts that
/// describe this host and the guests its drivers run.
pub(crate) fn capabilities(drivers: &[std::sync::Arc<dyn Driver>]) -> String {
    let info = node_info();
    let arch = escape(&info.cpu_model);
    let emulator = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "vireo".to_string());
    let cells = super::host_numa::host_cells(std::path::Path::new("/sys"), info.memory_kib);
    let mut xml = String::from("<capabilities>\n  <host>\n");
    let pages: String = super::host_numa::page_sizes(&cells)
        .iter()
        .map(|s| format!("      <pages unit='KiB' size='{s}'/>\n"))
        .collect();
    xml.push_str(&format!(
        "    <cpu>\n      <arch>{arch}</arch>\n      <topology sockets='{}' dies='1' cores='{}' threads='{}'/>\n{pages}    </cpu>\n",
        info.sockets_per_node * info.numa_nodes,
        info.cores_per_socket,
        info.threads_per_core
    ));
    xml.push_str(&super::host_numa::topology_xml(&cells));
    xml.push_str(&format!(
        "    <memory unit='KiB'>{}</memory>\n    <cpus>{}</cpus>\n",
        info.memory_kib, info.cpus
    ));
    xml.push_str("  </host>\n");
    xml.push_str(&format!(
        "  <guest>\n    <os_type>hvm</os_type>\n    <arch name='x86_64'>\n      <wordsize>64</wordsize>\n      <emulator>{}</emulator>\n      <domain type='kvm'/>\n    </arch>\n    <features>\n      <acpi default='on' toggle='yes'/>\n    </features>\n  </guest>\n",
        escape(&emulator)
    ));
    for d in drivers {
        xml.push_str(&format!(
            "  <!-- driver: {} -->\n",
            escape(&d.version()).replace("--", "- -")
        ));
    }
    xml.push_str("</capabilities>\n");
    xml
}

/// `GET /version`.
pub(crate) fn version(drivers: &[std::sync::Arc<dyn Driver>]) -> VersionInfo {
    let read = |p: &str| {
        fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    VersionInfo {
        daemon: env!("CARGO_PKG_VERSION").to_string(),
        drivers: drivers.iter().map(|d| d.version()).collect(),
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_layout() {
        let text = "processor\t: 0\ncpu MHz\t\t: 2399.998\nphysical id\t: 0\nsiblings\t: 4\ncpu cores\t: 2\n\n\
                    processor\t: 1\nphysical id\t: 0\n\nprocessor\t: 2\nphysical id\t: 1\n\nprocessor\t: 3\nphysical id\t: 1\n";
        assert_eq!(
            parse_cpuinfo(text),
            CpuLayout {
                logical: 4,
                mhz: 2399,
                sockets: 2,
                cores_per_socket: 2,
                threads_per_core: 2,
            }
        );
        // A VM's cpuinfo may have none of the topology lines.
        let bare = parse_cpuinfo("processor : 0\nprocessor : 1\n");
        assert_eq!(
            (
                bare.logical,
                bare.sockets,
                bare.cores_per_socket,
                bare.threads_per_core
            ),
            (2, 1, 2, 1)
        );
    }

    #[test]
    fn meminfo_fields() {
        let text = "MemTotal:       24000000 kB\nMemFree: 1 kB\nSwapTotal:  1000 kB\n";
        assert_eq!(meminfo_field(text, "MemTotal"), Some(24_000_000));
        assert_eq!(meminfo_field(text, "SwapTotal"), Some(1000));
        assert_eq!(meminfo_field(text, "Swap"), None);
        assert!(memory_and_swap_kib().unwrap() > 0);
    }

    #[test]
    fn capabilities_is_xml_with_the_guest() {
        let xml = capabilities(&[]);
        assert!(xml.contains("<arch name='x86_64'>"), "{xml}");
        assert!(xml.contains("<domain type='kvm'/>"), "{xml}");
        assert!(virtxml_well_formed(&xml));
    }

    fn virtxml_well_formed(xml: &str) -> bool {
        xml.starts_with("<capabilities>") && xml.trim_end().ends_with("</capabilities>")
    }
}
