//! Host verbs: version, hostname, nodeinfo, capabilities (`uri` needs no
//! daemon and is answered in `mod.rs`).

use std::fmt::Write as _;

use clap::Args;
use manager::api::NodeInfo;
use manager::client::Client;

use super::{Failure, Output};

/// A host verb that reads.
#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Also the daemon's version.
    #[arg(long)]
    pub daemon: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `version`: virsh's four lines (library, API, hypervisor), Vireo's
/// words; one hypervisor line per driver.
pub fn version(c: &mut Client, a: &VersionArgs) -> Result<Output, Failure> {
    let r = c.version()?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let v = r.value;
    let ours = env!("CARGO_PKG_VERSION");
    let mut out = String::new();
    let _ = writeln!(out, "Compiled against library: vireo {ours}");
    let _ = writeln!(out, "Using library: vireo {ours}");
    let _ = writeln!(out, "Using API: vireo {}", v.daemon);
    for d in &v.drivers {
        let _ = writeln!(out, "Running hypervisor: {d}");
    }
    if a.daemon {
        let _ = writeln!(out, "Running against daemon: {}", v.daemon);
    }
    Ok(Output::text(out))
}

/// `hostname`.
pub fn hostname(c: &mut Client, a: &JsonArgs) -> Result<Output, Failure> {
    let r = c.version()?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::line(r.value.hostname))
}

/// nodeinfo's lines, as virsh lays them out.
pub fn format_nodeinfo(n: &NodeInfo) -> String {
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<20} {value}");
    };
    field("CPU model:", n.cpu_model.clone());
    field("CPU(s):", n.cpus.to_string());
    field("CPU frequency:", format!("{} MHz", n.mhz));
    field("CPU socket(s):", n.sockets_per_node.to_string());
    field("Core(s) per socket:", n.cores_per_socket.to_string());
    field("Thread(s) per core:", n.threads_per_core.to_string());
    field("NUMA cell(s):", n.numa_nodes.to_string());
    field("Memory size:", format!("{} KiB", n.memory_kib));
    out
}

/// `nodeinfo`.
pub fn nodeinfo(c: &mut Client, a: &JsonArgs) -> Result<Output, Failure> {
    let r = c.node_info()?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::text(format_nodeinfo(&r.value)))
}

/// `capabilities`.
pub fn capabilities(c: &mut Client, a: &JsonArgs) -> Result<Output, Failure> {
    let r = c.capabilities()?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let mut xml = r.value.xml;
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Ok(Output::text(xml))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of `virsh -c test:///default nodeinfo` (virsh 9.0.0),
    /// with its numbers.
    #[test]
    fn nodeinfo_layout() {
        let n = NodeInfo {
            cpu_model: "i686".into(),
            cpus: 16,
            mhz: 1400,
            numa_nodes: 2,
            sockets_per_node: 2,
            cores_per_socket: 2,
            threads_per_core: 2,
            memory_kib: 3_145_728,
        };
        assert_eq!(
            format_nodeinfo(&n),
            "CPU model:           i686\n\
             CPU(s):              16\n\
             CPU frequency:       1400 MHz\n\
             CPU socket(s):       2\n\
             Core(s) per socket:  2\n\
             Thread(s) per core:  2\n\
             NUMA cell(s):        2\n\
             Memory size:         3145728 KiB\n"
        );
    }
}
