//! Memory and CPU placement verbs: `setmem`, `dommemstat`, `vcpuinfo`,
//! `vcpupin`, `emulatorpin`, `numatune`.

use clap::Args;
use manager::api::{NumaTuneRequest, PinRequest, SetMemoryRequest, VcpuRow};
use manager::client::Client;

use super::{Failure, Output};

/// virsh's `--config`, `--live`, `--current`.
#[derive(Debug, Args)]
pub struct Scope {
    /// Change or read the persistent definition.
    #[arg(long)]
    pub config: bool,
    /// Change or read the running domain.
    #[arg(long)]
    pub live: bool,
    /// The running domain if it runs, else the definition (the default).
    #[arg(long)]
    pub current: bool,
}

impl Scope {
    pub(super) fn check(&self) -> Result<(), Failure> {
        if self.current && (self.live || self.config) {
            return Err(Failure(
                "--current cannot be combined with --live or --config".into(),
            ));
        }
        Ok(())
    }

    /// A read takes one side: `--live` and `--config` together say
    /// nothing about which.
    pub(super) fn read_config(&self) -> Result<bool, Failure> {
        if self.live && self.config {
            return Err(Failure(
                "--live and --config together need something to change".into(),
            ));
        }
        Ok(self.config)
    }
}

/// `setmem`.
#[derive(Debug, Args)]
pub struct SetmemArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// The memory the guest keeps: a scaled integer, KiB by default
    /// (`524288`, `512M`, `1GiB`).
    pub size: String,
    #[command(flatten)]
    pub scope: Scope,
}

/// A virsh scaled integer: a number and a libvirt unit, KiB by default.
pub fn parse_kib(text: &str) -> Result<u64, Failure> {
    let bad = || {
        Failure(format!(
            "invalid memory size '{}': give a number with an optional unit (KiB by default)",
            text.escape_debug()
        ))
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = if unit.is_empty() {
        1024
    } else {
        virtxml::scalars::unit_multiplier(unit).ok_or_else(bad)?
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    Ok(bytes.div_ceil(1024))
}

/// `setmem`.
pub fn setmem(c: &mut Client, a: &SetmemArgs) -> Result<Output, Failure> {
    a.scope.check()?;
    let kib = parse_kib(&a.size)?;
    c.set_memory(
        &a.domain,
        &SetMemoryRequest {
            kib,
            live: a.scope.live,
            config: a.scope.config,
        },
    )?;
    Ok(Output::text(String::new()))
}

/// A domain and `--json`.
#[derive(Debug, Args)]
pub struct DomReadArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dommemstat`.
pub fn dommemstat(c: &mut Client, a: &DomReadArgs) -> Result<Output, Failure> {
    let r = c.memory_stats(&a.domain)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::text(
        r.value
            .stats
            .iter()
            .map(|s| format!("{} {}\n", s.name, s.value))
            .collect::<String>(),
    ))
}

/// Expands a set in libvirt's syntax into virsh's `yy-y` map over
/// `host_cpus` CPUs.
fn affinity_map(set: &str, host_cpus: u32) -> String {
    let set = virtxml::CpuSet::parse(set).unwrap_or_default();
    (0..host_cpus)
        .map(|c| if set.contains(c) { 'y' } else { '-' })
        .collect()
}

/// vcpuinfo's blocks, as virsh lays them out.
pub fn format_vcpuinfo(rows: &[VcpuRow], host_cpus: u32) -> String {
    let mut out = String::new();
    for r in rows {
        let na = || "N/A".to_string();
        let field = |k: &str, v: String| format!("{k:<16}{v}\n");
        out.push_str(&field("VCPU:", r.vcpu.to_string()));
        out.push_str(&field("CPU:", r.cpu.map_or_else(na, |c| c.to_string())));
        let state = if r.state == "running" {
            r.state.clone()
        } else {
            na()
        };
        out.push_str(&field("State:", state));
        let time = r.cpu_time_ns.map_or_else(na, |ns| {
            let tenths = ns / 100_000_000;
            format!("{}.{}s", tenths / 10, tenths % 10)
        });
        out.push_str(&field("CPU time:", time));
        out.push_str(&field(
            "CPU Affinity:",
            affinity_map(&r.affinity, host_cpus),
        ));
        out.push('\n');
    }
    // virsh's own closing blank line follows the last block.
    out.pop();
    out
}

/// `vcpuinfo`.
pub fn vcpuinfo(c: &mut Client, a: &DomReadArgs) -> Result<Output, Failure> {
    let r = c.vcpus(&a.domain, false)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let host_cpus = c.node_info()?.value.cpus;
    Ok(Output::text(format_vcpuinfo(&r.value, host_cpus)))
}

/// `vcpupin`.
#[derive(Debug, Args)]
pub struct VcpupinArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// The vCPU; all of them when absent.
    pub vcpu: Option<u32>,
    /// Host CPUs in libvirt's syntax (`0-3,^2`), or `r` for all of them;
    /// without it, the current pinning is shown.
    pub cpulist: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// Print the daemon's JSON (when reading).
    #[arg(long)]
    pub json: bool,
}

fn all_cpus(c: &mut Client) -> Result<String, Failure> {
    let n = c.node_info()?.value.cpus.max(1);
    Ok(format!("0-{}", n - 1))
}

/// `vcpupin`.
pub fn vcpupin(c: &mut Client, a: &VcpupinArgs) -> Result<Output, Failure> {
    a.scope.check()?;
    match (&a.cpulist, a.vcpu) {
        (Some(list), Some(vcpu)) => {
            let cpuset = if list == "r" {
                all_cpus(c)?
            } else {
                list.clone()
            };
            c.pin_vcpu(
                &a.domain,
                vcpu,
                &PinRequest {
                    cpuset,
                    live: a.scope.live,
                    config: a.scope.config,
                },
            )?;
            Ok(Output::text(String::new()))
        }
        (Some(_), None) => Err(Failure("a cpulist needs a vCPU".into())),
        (None, only) => {
            let r = c.vcpus(&a.domain, a.scope.read_config()?)?;
            if a.json {
                return Ok(Output::json(r.json));
            }
            let rows: Vec<&VcpuRow> = r
                .value
                .iter()
                .filter(|row| only.is_none_or(|v| v == row.vcpu))
                .collect();
            if let (Some(v), true) = (only, rows.is_empty()) {
                return Err(Failure(format!("vCPU {v} does not exist")));
            }
            let mut out = String::from(" VCPU   CPU Affinity\n----------------------\n");
            for row in rows {
                out.push_str(&format!(" {:<6} {}\n", row.vcpu, row.affinity));
            }
            Ok(Output::text(out))
        }
    }
}

/// `emulatorpin`.
#[derive(Debug, Args)]
pub struct EmulatorpinArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Host CPUs in libvirt's syntax, or `r` for all of them; without
    /// it, the current pinning is shown.
    pub cpulist: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// Print the daemon's JSON (when reading).
    #[arg(long)]
    pub json: bool,
}

/// `emulatorpin`.
pub fn emulatorpin(c: &mut Client, a: &EmulatorpinArgs) -> Result<Output, Failure> {
    a.scope.check()?;
    if let Some(list) = &a.cpulist {
        let cpuset = if list == "r" {
            all_cpus(c)?
        } else {
            list.clone()
        };
        c.pin_emulator(
            &a.domain,
            &PinRequest {
                cpuset,
                live: a.scope.live,
                config: a.scope.config,
            },
        )?;
        return Ok(Output::text(String::new()));
    }
    let r = c.emulator_affinity(&a.domain, a.scope.read_config()?)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::text(format!(
        " emulator: CPU Affinity\n----------------------------------\n       *: {}\n",
        r.value.cpuset
    )))
}

/// `numatune`.
#[derive(Debug, Args)]
pub struct NumatuneArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// strict, preferred, interleave or restrictive.
    #[arg(long)]
    pub mode: Option<String>,
    /// Host NUMA nodes in libvirt's syntax.
    #[arg(long)]
    pub nodeset: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// Print the daemon's JSON (when reading).
    #[arg(long)]
    pub json: bool,
}

/// `numatune`.
pub fn numatune(c: &mut Client, a: &NumatuneArgs) -> Result<Output, Failure> {
    a.scope.check()?;
    if a.mode.is_some() || a.nodeset.is_some() {
        c.set_numatune(
            &a.domain,
            &NumaTuneRequest {
                mode: a.mode.clone(),
                nodeset: a.nodeset.clone(),
                live: a.scope.live,
                config: a.scope.config,
            },
        )?;
        return Ok(Output::text(String::new()));
    }
    let r = c.numatune(&a.domain, a.scope.read_config()?)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::text(format!(
        "{:<15}: {}\n{:<15}: {}\n",
        "numa_mode", r.value.mode, "numa_nodeset", r.value.nodeset
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_sizes_default_to_kib() {
        assert_eq!(parse_kib("524288").unwrap(), 524_288);
        assert_eq!(parse_kib("512M").unwrap(), 524_288);
        assert_eq!(parse_kib("1GiB").unwrap(), 1_048_576);
        assert_eq!(parse_kib("1000b").unwrap(), 1);
        for bad in ["", "M", "12Q", "-5", "99999999999999999999"] {
            assert!(parse_kib(bad).is_err(), "{bad}");
        }
    }

    /// The layout of `virsh vcpuinfo` (virsh 9).
    #[test]
    fn vcpuinfo_layout() {
        let rows = [
            VcpuRow {
                vcpu: 0,
                cpu: Some(1),
                state: "running".into(),
                cpu_time_ns: Some(2_345_000_000),
                affinity: "0-1".into(),
            },
            VcpuRow {
                vcpu: 1,
                cpu: None,
                state: "offline".into(),
                cpu_time_ns: None,
                affinity: "1".into(),
            },
        ];
        assert_eq!(
            format_vcpuinfo(&rows, 2),
            "VCPU:           0\nCPU:            1\nState:          running\nCPU time:       2.3s\nCPU Affinity:   yy\n\n\
             VCPU:           1\nCPU:            N/A\nState:          N/A\nCPU time:       N/A\nCPU Affinity:   -y\n"
        );
    }
}
