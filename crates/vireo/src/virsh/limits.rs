//! cgroup limits: `schedinfo`, `memtune`, `blkiotune`.

use clap::Args;
use manager::api::{DeviceLimits, LimitsRequest, ResourceLimits};
use manager::client::Client;

use super::tuning::{parse_kib, Scope};
use super::{Failure, Output};

/// `schedinfo`.
#[derive(Debug, Args)]
pub struct SchedinfoArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// `cpu_shares=N`, `global_period=US`, `global_quota=US` (repeatable;
    /// also accepted without `--set`, as virsh does).
    #[arg(long = "set", value_name = "PARAM=VALUE")]
    pub set: Vec<String>,
    /// Parameters given positionally.
    #[arg(value_name = "PARAM=VALUE")]
    pub params: Vec<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

fn number<T: std::str::FromStr>(what: &str, v: &str) -> Result<T, Failure> {
    v.trim()
        .parse()
        .map_err(|_| Failure(format!("invalid value '{}' for {what}", v.escape_debug())))
}

fn request(
    c: &mut Client,
    dom: &str,
    scope: &Scope,
    limits: ResourceLimits,
) -> Result<Output, Failure> {
    c.set_limits(
        dom,
        &LimitsRequest {
            limits,
            live: scope.live,
            config: scope.config,
        },
    )?;
    Ok(Output::text(String::new()))
}

fn read(
    c: &mut Client,
    dom: &str,
    scope: &Scope,
) -> Result<manager::client::Reply<ResourceLimits>, Failure> {
    Ok(c.limits(dom, scope.read_config()?)?)
}

fn line(key: &str, value: impl std::fmt::Display) -> String {
    format!("{key:<15}: {value}\n")
}

/// `schedinfo`.
pub fn schedinfo(c: &mut Client, a: &SchedinfoArgs) -> Result<Output, Failure> {
    a.scope.check()?;
    let mut l = ResourceLimits::default();
    for p in a.set.iter().chain(&a.params) {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| Failure(format!("'{p}' is not PARAM=VALUE")))?;
        match k {
            "cpu_shares" => l.cpu_shares = Some(number(k, v)?),
            "global_period" => l.global_period = Some(number(k, v)?),
            "global_quota" => l.global_quota = Some(number(k, v)?),
            _ => {
                return Err(Failure(format!(
                    "invalid scheduler parameter '{k}': Vireo sets cpu_shares, global_period and global_quota"
                )))
            }
        }
    }
    if l != ResourceLimits::default() {
        return request(c, &a.domain, &a.scope, l);
    }
    let r = read(c, &a.domain, &a.scope)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let v = r.value;
    Ok(Output::text(format!(
        "{}{}{}{}",
        line("Scheduler", "posix"),
        line("cpu_shares", v.cpu_shares.unwrap_or(1024)),
        line("global_period", v.global_period.unwrap_or(100_000)),
        line("global_quota", v.global_quota.unwrap_or(-1)),
    )))
}

/// `memtune`.
#[derive(Debug, Args)]
pub struct MemtuneArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Most memory the domain may use (scaled, KiB by default).
    #[arg(long)]
    pub hard_limit: Option<String>,
    /// What it is pushed back to when the host is short.
    #[arg(long)]
    pub soft_limit: Option<String>,
    /// Memory plus swap.
    #[arg(long)]
    pub swap_hard_limit: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `memtune`.
pub fn memtune(c: &mut Client, a: &MemtuneArgs) -> Result<Output, Failure> {
    a.scope.check()?;
    let kib = |v: &Option<String>| v.as_deref().map(parse_kib).transpose();
    let l = ResourceLimits {
        hard_limit_kib: kib(&a.hard_limit)?,
        soft_limit_kib: kib(&a.soft_limit)?,
        swap_hard_limit_kib: kib(&a.swap_hard_limit)?,
        ..Default::default()
    };
    if l != ResourceLimits::default() {
        return request(c, &a.domain, &a.scope, l);
    }
    let r = read(c, &a.domain, &a.scope)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    Ok(Output::text(format!(
        "{}{}{}",
        line("hard_limit", show(r.value.hard_limit_kib)),
        line("soft_limit", show(r.value.soft_limit_kib)),
        line("swap_hard_limit", show(r.value.swap_hard_limit_kib)),
    )))
}

/// `blkiotune`.
#[derive(Debug, Args)]
pub struct BlkiotuneArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// The domain's weight, 100 to 1000.
    #[arg(long)]
    pub weight: Option<u64>,
    /// `/dev/X,WEIGHT[,/dev/Y,WEIGHT...]`.
    #[arg(long)]
    pub device_weights: Option<String>,
    /// `/dev/X,N[,...]`: reads per second.
    #[arg(long)]
    pub device_read_iops_sec: Option<String>,
    /// `/dev/X,N[,...]`: writes per second.
    #[arg(long)]
    pub device_write_iops_sec: Option<String>,
    /// `/dev/X,N[,...]`: bytes read per second.
    #[arg(long)]
    pub device_read_bytes_sec: Option<String>,
    /// `/dev/X,N[,...]`: bytes written per second.
    #[arg(long)]
    pub device_write_bytes_sec: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sets `field` of each device a `/dev/X,N,...` list names.
fn device_list(
    devices: &mut Vec<DeviceLimits>,
    text: &Option<String>,
    what: &str,
    field: fn(&mut DeviceLimits) -> &mut Option<u64>,
) -> Result<(), Failure> {
    let Some(text) = text else {
        return Ok(());
    };
    let items: Vec<&str> = text.split(',').collect();
    if !items.len().is_multiple_of(2) {
        return Err(Failure(format!("{what}: give pairs of /dev/PATH,VALUE")));
    }
    for pair in items.chunks(2) {
        let value: u64 = number(what, pair[1])?;
        let path = pair[0].to_string();
        let i = match devices.iter().position(|d| d.path == path) {
            Some(i) => i,
            None => {
                devices.push(DeviceLimits {
                    path,
                    ..Default::default()
                });
                devices.len() - 1
            }
        };
        *field(&mut devices[i]) = Some(value);
    }
    Ok(())
}

/// `blkiotune`.
pub fn blkiotune(c: &mut Client, a: &BlkiotuneArgs) -> Result<Output, Failure> {
    a.scope.check()?;
    let mut devices = Vec::new();
    device_list(&mut devices, &a.device_weights, "--device-weights", |d| {
        &mut d.weight
    })?;
    device_list(
        &mut devices,
        &a.device_read_iops_sec,
        "--device-read-iops-sec",
        |d| &mut d.read_iops_sec,
    )?;
    device_list(
        &mut devices,
        &a.device_write_iops_sec,
        "--device-write-iops-sec",
        |d| &mut d.write_iops_sec,
    )?;
    device_list(
        &mut devices,
        &a.device_read_bytes_sec,
        "--device-read-bytes-sec",
        |d| &mut d.read_bytes_sec,
    )?;
    device_list(
        &mut devices,
        &a.device_write_bytes_sec,
        "--device-write-bytes-sec",
        |d| &mut d.write_bytes_sec,
    )?;
    let l = ResourceLimits {
        blkio_weight: a.weight,
        devices,
        ..Default::default()
    };
    if l != ResourceLimits::default() {
        return request(c, &a.domain, &a.scope, l);
    }
    let r = read(c, &a.domain, &a.scope)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let v = r.value;
    let per = |f: fn(&DeviceLimits) -> Option<u64>| {
        v.devices
            .iter()
            .filter_map(|d| f(d).map(|n| format!("{},{n}", d.path)))
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(Output::text(format!(
        "{}{}{}{}{}{}",
        line(
            "weight",
            v.blkio_weight.map_or(String::new(), |w| w.to_string())
        ),
        line("device_weight", per(|d| d.weight)),
        line("device_read_iops_sec", per(|d| d.read_iops_sec)),
        line("device_write_iops_sec", per(|d| d.write_iops_sec)),
        line("device_read_bytes_sec", per(|d| d.read_bytes_sec)),
        line("device_write_bytes_sec", per(|d| d.write_bytes_sec)),
    )))
}
