//! Storage verbs: pool-define, pool-define-as, pool-create, pool-build,
//! pool-start, pool-destroy, pool-delete, pool-undefine, pool-refresh,
//! pool-autostart, pool-list, pool-info, pool-dumpxml, pool-edit; and
//! vol-create, vol-create-as, vol-list, vol-info, vol-dumpxml, vol-path,
//! vol-key, vol-delete, vol-resize. Messages and tables as virsh 9's.

use std::path::PathBuf;

use clap::Args;
use manager::api::{PoolSummary, VolumeSummary};
use manager::client::{Client, ListFilter};

use super::lifecycle::read_file;
use super::table::Table;
use super::{warn, Failure, Output};

/// A verb taking only a pool.
#[derive(Debug, Args)]
pub struct PoolArgs {
    /// Pool name or UUID.
    pub pool: String,
}

/// A reading verb on one pool.
#[derive(Debug, Args)]
pub struct PoolJsonArgs {
    /// Pool name or UUID.
    pub pool: String,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pool-build POOL`.
#[derive(Debug, Args)]
pub struct PoolBuildArgs {
    /// Pool name or UUID.
    pub pool: String,
    /// Make the filesystem or label even over what the device holds.
    #[arg(long)]
    pub overwrite: bool,
    /// Make the filesystem or label only on a device that holds nothing.
    #[arg(long, conflicts_with = "overwrite")]
    pub no_overwrite: bool,
}

/// `pool-define FILE` and `pool-create FILE`.
#[derive(Debug, Args)]
pub struct PoolFileArgs {
    /// The pool's libvirt XML.
    pub file: PathBuf,
}

/// `pool-define-as NAME TYPE`.
#[derive(Debug, Args)]
pub struct PoolDefineAsArgs {
    /// The pool's name.
    pub name: String,
    /// Its type: dir, fs and disk (the ones this version runs), netfs,
    /// logical, iscsi, iscsi-direct.
    #[arg(name = "type")]
    pub kind: String,
    /// The server of a network pool.
    #[arg(long)]
    pub source_host: Option<String>,
    /// The export (netfs) of a network pool.
    #[arg(long)]
    pub source_path: Option<String>,
    /// The device (fs, disk, logical) or target IQN (iscsi).
    #[arg(long)]
    pub source_dev: Option<String>,
    /// The volume group (logical).
    #[arg(long)]
    pub source_name: Option<String>,
    /// The source's format.
    #[arg(long)]
    pub source_format: Option<String>,
    /// The initiator IQN an iscsi-direct pool logs in as.
    #[arg(long)]
    pub source_initiator: Option<String>,
    /// Where the volumes appear.
    #[arg(long)]
    pub target: Option<String>,
    /// Print the XML instead of defining it.
    #[arg(long)]
    pub print_xml: bool,
}

/// `pool-list`.
#[derive(Debug, Args)]
pub struct PoolListArgs {
    /// Inactive pools too.
    #[arg(long)]
    pub all: bool,
    /// Only inactive pools.
    #[arg(long, conflicts_with = "all")]
    pub inactive: bool,
    /// Capacity, allocation and available space too.
    #[arg(long)]
    pub details: bool,
    /// Names only.
    #[arg(long)]
    pub name: bool,
    /// UUIDs only.
    #[arg(long)]
    pub uuid: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pool-autostart POOL`.
#[derive(Debug, Args)]
pub struct PoolAutostartArgs {
    /// Pool name or UUID.
    pub pool: String,
    /// Do not start it with the daemon.
    #[arg(long)]
    pub disable: bool,
}

/// `pool-dumpxml POOL`.
#[derive(Debug, Args)]
pub struct PoolDumpxmlArgs {
    /// Pool name or UUID.
    pub pool: String,
    /// The persistent definition, not the running one.
    #[arg(long)]
    pub inactive: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `vol-create POOL FILE`.
#[derive(Debug, Args)]
pub struct VolCreateArgs {
    /// Pool name or UUID.
    pub pool: String,
    /// The volume's libvirt XML.
    pub file: PathBuf,
    /// Map every cluster of a qcow2 volume at creation, its data unwritten (qemu-img's preallocation=metadata).
    #[arg(long)]
    pub prealloc_metadata: bool,
}

/// `vol-create-as POOL NAME CAPACITY`.
#[derive(Debug, Args)]
pub struct VolCreateAsArgs {
    /// Pool name or UUID.
    pub pool: String,
    /// The volume's name.
    pub name: String,
    /// Its size: bytes, or with a unit (`10G`, `512MiB`).
    pub capacity: String,
    /// Bytes to allocate up front.
    #[arg(long)]
    pub allocation: Option<String>,
    /// raw (the default) or qcow2.
    #[arg(long)]
    pub format: Option<String>,
    /// A volume (path or name in the pool) to make a qcow2 overlay on.
    #[arg(long)]
    pub backing_vol: Option<String>,
    /// The backing volume's format (raw or qcow2; required with
    /// --backing-vol: a backing file's format is never probed).
    #[arg(long)]
    pub backing_vol_format: Option<String>,
    /// Print the XML instead of creating the volume.
    #[arg(long)]
    pub print_xml: bool,
    /// Map every cluster of a qcow2 volume at creation, its data unwritten (qemu-img's preallocation=metadata).
    #[arg(long)]
    pub prealloc_metadata: bool,
}

/// `vol-list POOL`.
#[derive(Debug, Args)]
pub struct VolListArgs {
    /// Pool name or UUID.
    pub pool: String,
    /// Type, capacity and allocation too.
    #[arg(long)]
    pub details: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// A verb on one volume: `VOL --pool POOL`, or the volume's path.
#[derive(Debug, Args)]
pub struct VolArgs {
    /// The volume's name (with --pool) or path.
    pub vol: String,
    /// Its pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `vol-resize VOL CAPACITY`.
#[derive(Debug, Args)]
pub struct VolResizeArgs {
    /// The volume's name (with --pool) or path.
    pub vol: String,
    /// The new size: bytes, or with a unit.
    pub capacity: String,
    /// Its pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Allow a smaller size (data past it is lost).
    #[arg(long)]
    pub shrink: bool,
}

/// `pool-define FILE`.
pub fn define(c: &mut Client, a: &PoolFileArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let answer = c.pool_define(&xml)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Pool {} defined from {}",
        answer.name,
        a.file.display()
    )))
}

/// `pool-create FILE`.
pub fn create(c: &mut Client, a: &PoolFileArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let answer = c.pool_create(&xml)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Pool {} created from {}",
        answer.name,
        a.file.display()
    )))
}

/// `pool-define-as`: the XML virsh would write, defined (or printed).
pub fn define_as(c: &mut Client, a: &PoolDefineAsArgs) -> Result<Output, Failure> {
    let esc = super::devices::attr;
    let mut xml = format!(
        "<pool type='{}'>\n  <name>{}</name>\n",
        esc(&a.kind),
        esc(&a.name)
    );
    let source = [
        &a.source_host,
        &a.source_path,
        &a.source_dev,
        &a.source_name,
        &a.source_format,
        &a.source_initiator,
    ];
    if source.iter().any(|s| s.is_some()) {
        xml.push_str("  <source>\n");
        if let Some(h) = &a.source_host {
            xml.push_str(&format!("    <host name='{}'/>\n", esc(h)));
        }
        if let Some(p) = &a.source_path {
            xml.push_str(&format!("    <dir path='{}'/>\n", esc(p)));
        }
        if let Some(d) = &a.source_dev {
            xml.push_str(&format!("    <device path='{}'/>\n", esc(d)));
        }
        if let Some(n) = &a.source_name {
            xml.push_str(&format!("    <name>{}</name>\n", esc(n)));
        }
        if let Some(f) = &a.source_format {
            xml.push_str(&format!("    <format type='{}'/>\n", esc(f)));
        }
        if let Some(i) = &a.source_initiator {
            xml.push_str(&format!(
                "    <initiator>\n      <iqn name='{}'/>\n    </initiator>\n",
                esc(i)
            ));
        }
        xml.push_str("  </source>\n");
    }
    if let Some(t) = &a.target {
        xml.push_str(&format!(
            "  <target>\n    <path>{}</path>\n  </target>\n",
            esc(t)
        ));
    }
    xml.push_str("</pool>\n");
    if a.print_xml {
        return Ok(Output::text(xml));
    }
    let answer = c.pool_define(&xml)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!("Pool {} defined", answer.name)))
}

/// The name virsh prints for `pool` (a UUID is looked up).
fn pool_name(c: &mut Client, pool: &str) -> Result<String, Failure> {
    let hex: Vec<u8> = pool.bytes().filter(|&b| b != b'-').collect();
    if hex.len() == 32 && hex.iter().all(u8::is_ascii_hexdigit) {
        Ok(c.pool_info(pool)?.value.name)
    } else {
        Ok(pool.to_string())
    }
}

/// `pool-start`, `pool-destroy`, `pool-delete`,
/// `pool-refresh` and `pool-undefine`: the change, then virsh's line.
pub fn action(c: &mut Client, a: &PoolArgs, verb: &str) -> Result<Output, Failure> {
    let name = pool_name(c, &a.pool)?;
    let done = match verb {
        "undefine" => {
            c.pool_undefine(&a.pool)?;
            "has been undefined"
        }
        "start" => "started",
        "destroy" => "destroyed",
        "delete" => "deleted",
        "refresh" => "refreshed",
        other => return Err(Failure(format!("unknown pool action {other}"))),
    };
    if verb != "undefine" {
        c.pool_action(&a.pool, verb)?;
    }
    Ok(Output::line(format!("Pool {name} {done}")))
}

/// `pool-build POOL [--overwrite | --no-overwrite]`.
pub fn build(c: &mut Client, a: &PoolBuildArgs) -> Result<Output, Failure> {
    let name = pool_name(c, &a.pool)?;
    let overwrite = match (a.overwrite, a.no_overwrite) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    c.pool_build(&a.pool, overwrite)?;
    Ok(Output::line(format!("Pool {name} built")))
}

/// `pool-autostart POOL`.
pub fn autostart(c: &mut Client, a: &PoolAutostartArgs) -> Result<Output, Failure> {
    let name = pool_name(c, &a.pool)?;
    c.pool_set_autostart(&a.pool, !a.disable)?;
    let what = if a.disable { "unmarked" } else { "marked" };
    Ok(Output::line(format!("Pool {name} {what} as autostarted")))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A size as virsh prints it: two decimals in the largest binary unit
/// that keeps it at least 1.
pub fn pretty(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// A size the user typed: bytes, or a number with a binary unit (`10G`,
/// `512MiB`), as every vireo command reads sizes.
pub fn parse_size(text: &str) -> Result<u64, Failure> {
    crate::img::size::parse_size(text).map_err(|e| Failure(format!("Invalid size '{text}': {e}")))
}

/// `pool-list`.
pub fn list(c: &mut Client, a: &PoolListArgs) -> Result<Output, Failure> {
    let filter = if a.inactive {
        ListFilter::Inactive
    } else if a.all {
        ListFilter::All
    } else {
        ListFilter::Active
    };
    let pools: Vec<PoolSummary> = c.pools(filter)?.value;
    if a.json {
        let json = serde_json::to_string(&pools)
            .map_err(|e| Failure(format!("cannot encode the list: {e}")))?;
        return Ok(Output::json(json));
    }
    if a.name || a.uuid {
        let mut out = String::new();
        for p in &pools {
            out.push_str(&match (a.uuid, a.name) {
                (true, true) => format!("{} {}\n", p.uuid, p.name),
                (true, false) => format!("{}\n", p.uuid),
                _ => format!("{}\n", p.name),
            });
        }
        return Ok(Output::text(out));
    }
    let state = |p: &PoolSummary| if p.active { "running" } else { "inactive" };
    if a.details {
        let mut t = Table::new(&[
            "Name",
            "State",
            "Autostart",
            "Persistent",
            "Capacity",
            "Allocation",
            "Available",
        ]);
        for p in &pools {
            let size = |v: u64| if p.active { pretty(v) } else { "-".into() };
            t.row(vec![
                p.name.clone(),
                state(p).into(),
                yes_no(p.autostart).into(),
                yes_no(p.persistent).into(),
                size(p.capacity),
                size(p.allocation),
                size(p.available),
            ]);
        }
        return Ok(Output::text(t.render()));
    }
    let mut t = Table::new(&["Name", "State", "Autostart"]);
    for p in &pools {
        t.row(vec![
            p.name.clone(),
            if p.active { "active" } else { "inactive" }.into(),
            yes_no(p.autostart).into(),
        ]);
    }
    Ok(Output::text(t.render()))
}

/// `pool-info POOL`.
pub fn info(c: &mut Client, a: &PoolJsonArgs) -> Result<Output, Failure> {
    let r = c.pool_info(&a.pool)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let p = r.value;
    let mut out = format!(
        "{:<16}{}\n{:<16}{}\n{:<16}{}\n{:<16}{}\n{:<16}{}\n",
        "Name:",
        p.name,
        "UUID:",
        p.uuid,
        "State:",
        if p.active { "running" } else { "inactive" },
        "Persistent:",
        yes_no(p.persistent),
        "Autostart:",
        yes_no(p.autostart),
    );
    if p.active {
        out.push_str(&format!(
            "{:<16}{}\n{:<16}{}\n{:<16}{}\n",
            "Capacity:",
            pretty(p.capacity),
            "Allocation:",
            pretty(p.allocation),
            "Available:",
            pretty(p.available)
        ));
    }
    Ok(Output::text(out))
}

fn xml_output(json: String, mut xml: String, as_json: bool) -> Output {
    if as_json {
        return Output::json(json);
    }
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Output::text(xml)
}

/// `pool-dumpxml POOL`.
pub fn dumpxml(c: &mut Client, a: &PoolDumpxmlArgs) -> Result<Output, Failure> {
    let r = c.pool_xml(&a.pool, a.inactive)?;
    Ok(xml_output(r.json, r.value.xml, a.json))
}

/// `pool-edit POOL`.
pub fn edit(c: &mut Client, a: &PoolArgs) -> Result<Output, Failure> {
    let name = pool_name(c, &a.pool)?;
    let before = c.pool_xml(&a.pool, true)?.value.xml;
    let Some(after) = super::edit::edit_text(&before, &format!("pool {name}"))? else {
        return Ok(Output::line(format!(
            "Pool {name} XML configuration not changed."
        )));
    };
    let answer = c.pool_define(&after)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Pool {} XML configuration edited.",
        answer.name
    )))
}

/// `vol-create POOL FILE`.
pub fn vol_create(c: &mut Client, a: &VolCreateArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let v = c.vol_create(&a.pool, &xml, a.prealloc_metadata)?;
    Ok(Output::line(format!(
        "Vol {} created from {}",
        v.name,
        a.file.display()
    )))
}

/// `vol-create-as POOL NAME CAPACITY`.
pub fn vol_create_as(c: &mut Client, a: &VolCreateAsArgs) -> Result<Output, Failure> {
    let esc = super::devices::attr;
    let capacity = parse_size(&a.capacity)?;
    let mut xml = format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{capacity}</capacity>\n",
        esc(&a.name)
    );
    if let Some(al) = &a.allocation {
        xml.push_str(&format!(
            "  <allocation unit='bytes'>{}</allocation>\n",
            parse_size(al)?
        ));
    }
    if let Some(f) = &a.format {
        xml.push_str(&format!(
            "  <target>\n    <format type='{}'/>\n  </target>\n",
            esc(f)
        ));
    }
    if let Some(b) = &a.backing_vol {
        // A name is the pool's volume (looked up unless only printing).
        let path = if b.starts_with('/') || a.print_xml {
            b.clone()
        } else {
            c.vol_info(&a.pool, b)?.value.path
        };
        let format = a.backing_vol_format.as_deref().ok_or_else(|| {
            Failure(
                "--backing-vol needs --backing-vol-format: a backing file's format is never probed"
                    .into(),
            )
        })?;
        xml.push_str(&format!(
            "  <backingStore>\n    <path>{}</path>\n    <format type='{}'/>\n  </backingStore>\n",
            esc(&path),
            esc(format)
        ));
    }
    xml.push_str("</volume>\n");
    if a.print_xml {
        return Ok(Output::text(xml));
    }
    let v = c.vol_create(&a.pool, &xml, a.prealloc_metadata)?;
    Ok(Output::line(format!("Vol {} created", v.name)))
}

/// `vol-list POOL`.
pub fn vol_list(c: &mut Client, a: &VolListArgs) -> Result<Output, Failure> {
    let r = c.volumes(&a.pool)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    if a.details {
        let mut t = Table::new(&["Name", "Path", "Type", "Capacity", "Allocation"]);
        for v in &r.value {
            t.row(vec![
                v.name.clone(),
                v.path.clone(),
                v.kind.clone(),
                pretty(v.capacity),
                pretty(v.allocation),
            ]);
        }
        return Ok(Output::text(t.render()));
    }
    let mut t = Table::new(&["Name", "Path"]);
    for v in &r.value {
        t.row(vec![v.name.clone(), v.path.clone()]);
    }
    Ok(Output::text(t.render()))
}

/// The pool and name of `vol`: `--pool` and the name, or the active pool
/// holding the path `vol`.
pub(super) fn locate(
    c: &mut Client,
    vol: &str,
    pool: Option<&str>,
) -> Result<(String, String), Failure> {
    if let Some(p) = pool {
        return Ok((p.to_string(), vol.to_string()));
    }
    if vol.starts_with('/') {
        for p in c.pools(ListFilter::Active)?.value {
            if let Some(v) = c
                .volumes(&p.name)?
                .value
                .into_iter()
                .find(|v| v.path == vol)
            {
                return Ok((p.name, v.name));
            }
        }
        return Err(Failure(format!(
            "Storage volume not found: no storage vol with matching path '{vol}'"
        )));
    }
    Err(Failure(format!(
        "failed to get vol '{vol}': give its pool with --pool, or its path"
    )))
}

fn vol_info_of(c: &mut Client, a: &VolArgs) -> Result<(VolumeSummary, String), Failure> {
    let (pool, name) = locate(c, &a.vol, a.pool.as_deref())?;
    let r = c.vol_info(&pool, &name)?;
    Ok((r.value, r.json))
}

/// `vol-info VOL`.
pub fn vol_info(c: &mut Client, a: &VolArgs) -> Result<Output, Failure> {
    let (v, json) = vol_info_of(c, a)?;
    if a.json {
        return Ok(Output::json(json));
    }
    Ok(Output::text(format!(
        "{:<16}{}\n{:<16}{}\n{:<16}{}\n{:<16}{}\n",
        "Name:",
        v.name,
        "Type:",
        v.kind,
        "Capacity:",
        pretty(v.capacity),
        "Allocation:",
        pretty(v.allocation)
    )))
}

/// `vol-path VOL` and `vol-key VOL` (a file volume's key is its path).
pub fn vol_path(c: &mut Client, a: &VolArgs) -> Result<Output, Failure> {
    let (v, json) = vol_info_of(c, a)?;
    if a.json {
        return Ok(Output::json(json));
    }
    Ok(Output::line(v.path))
}

/// `vol-dumpxml VOL`.
pub fn vol_dumpxml(c: &mut Client, a: &VolArgs) -> Result<Output, Failure> {
    let (pool, name) = locate(c, &a.vol, a.pool.as_deref())?;
    let r = c.vol_xml(&pool, &name)?;
    Ok(xml_output(r.json, r.value.xml, a.json))
}

/// `vol-delete VOL`.
pub fn vol_delete(c: &mut Client, a: &VolArgs) -> Result<Output, Failure> {
    let (pool, name) = locate(c, &a.vol, a.pool.as_deref())?;
    c.vol_delete(&pool, &name)?;
    Ok(Output::line(format!("Vol {} deleted", a.vol)))
}

/// `vol-resize VOL CAPACITY`.
pub fn vol_resize(c: &mut Client, a: &VolResizeArgs) -> Result<Output, Failure> {
    let (pool, name) = locate(c, &a.vol, a.pool.as_deref())?;
    let capacity = parse_size(&a.capacity)?;
    c.vol_resize(&pool, &name, capacity, a.shrink)?;
    Ok(Output::line(format!(
        "Size of volume '{name}' successfully changed to {}",
        a.capacity
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_print_as_virsh_does() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("99999999999E").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(pretty(0), "0.00 B");
        assert_eq!(pretty(1536), "1.50 KiB");
        assert_eq!(pretty(10 << 30), "10.00 GiB");
    }
}
