//! Network verbs: net-define, net-undefine, net-create, net-start,
//! net-destroy, net-list, net-info, net-dumpxml, net-edit, net-autostart,
//! net-dhcp-leases, net-update; and domifaddr. Messages as virsh 9's
//! (which, unlike its domain messages, does not quote network names).

use std::path::PathBuf;

use clap::Args;
use manager::api::{NetworkSummary, NetworkUpdateRequest};
use manager::client::{Client, ListFilter};

use super::lifecycle::read_file;
use super::table::Table;
use super::{warn, Failure, Output};

/// A verb taking only a network.
#[derive(Debug, Args)]
pub struct NetArgs {
    /// Network name or UUID.
    pub network: String,
}

/// A reading verb on one network.
#[derive(Debug, Args)]
pub struct NetJsonArgs {
    /// Network name or UUID.
    pub network: String,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `net-define FILE` and `net-create FILE`.
#[derive(Debug, Args)]
pub struct NetFileArgs {
    /// The network's libvirt XML.
    pub file: PathBuf,
}

/// `net-destroy NETWORK`.
#[derive(Debug, Args)]
pub struct NetDestroyArgs {
    /// Network name or UUID.
    pub network: String,
    /// Destroy it even though running domains use it.
    #[arg(long)]
    pub force: bool,
}

/// `net-autostart NETWORK`.
#[derive(Debug, Args)]
pub struct NetAutostartArgs {
    /// Network name or UUID.
    pub network: String,
    /// Do not start it with the daemon.
    #[arg(long)]
    pub disable: bool,
}

/// `net-dumpxml NETWORK`.
#[derive(Debug, Args)]
pub struct NetDumpxmlArgs {
    /// Network name or UUID.
    pub network: String,
    /// The persistent definition, not the running one.
    #[arg(long)]
    pub inactive: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `net-list`.
#[derive(Debug, Args)]
pub struct NetListArgs {
    /// Inactive networks too.
    #[arg(long)]
    pub all: bool,
    /// Only inactive networks.
    #[arg(long, conflicts_with = "all")]
    pub inactive: bool,
    /// Only persistent networks.
    #[arg(long)]
    pub persistent: bool,
    /// Only transient networks.
    #[arg(long)]
    pub transient: bool,
    /// Only networks marked autostart.
    #[arg(long)]
    pub autostart: bool,
    /// Only networks not marked autostart.
    #[arg(long)]
    pub no_autostart: bool,
    /// Names only.
    #[arg(long)]
    pub name: bool,
    /// UUIDs only.
    #[arg(long)]
    pub uuid: bool,
    /// A table (the default).
    #[arg(long)]
    pub table: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `net-dhcp-leases NETWORK`.
#[derive(Debug, Args)]
pub struct NetLeasesArgs {
    /// Network name or UUID.
    pub network: String,
    /// Only this MAC's leases.
    #[arg(long)]
    pub mac: Option<String>,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `net-update NETWORK COMMAND SECTION XML`.
#[derive(Debug, Args)]
pub struct NetUpdateArgs {
    /// Network name or UUID.
    pub network: String,
    /// add (add-last, add-first), delete or modify.
    pub command: String,
    /// The section: ip-dhcp-host.
    pub section: String,
    /// The element's XML, or a file holding it.
    pub xml: String,
    /// Which `ip` element's DHCP service (only the first IPv4 one is
    /// supported).
    #[arg(long)]
    pub parent_index: Option<u32>,
    /// Change the running network.
    #[arg(long)]
    pub live: bool,
    /// Change the persistent definition.
    #[arg(long)]
    pub config: bool,
    /// The running network if active, else the definition (the default).
    #[arg(long, conflicts_with_all = ["live", "config"])]
    pub current: bool,
}

/// `domifaddr DOMAIN`.
#[derive(Debug, Args)]
pub struct DomifaddrArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Only this interface (its host device name or MAC).
    #[arg(long)]
    pub interface: Option<String>,
    /// Where addresses come from: only `lease` (the networks' DHCP servers)
    /// is supported.
    #[arg(long)]
    pub source: Option<String>,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `net-define FILE`.
pub fn define(c: &mut Client, a: &NetFileArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let answer = c.net_define(&xml)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Network {} defined from {}",
        answer.name,
        a.file.display()
    )))
}

/// `net-create FILE`.
pub fn create(c: &mut Client, a: &NetFileArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let answer = c.net_create(&xml)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Network {} created from {}",
        answer.name,
        a.file.display()
    )))
}

/// The name virsh prints for `net` (a UUID is looked up).
fn net_name(c: &mut Client, net: &str) -> Result<String, Failure> {
    let hex: Vec<u8> = net.bytes().filter(|&b| b != b'-').collect();
    if hex.len() == 32 && hex.iter().all(u8::is_ascii_hexdigit) {
        Ok(c.net_info(net)?.value.name)
    } else {
        Ok(net.to_string())
    }
}

/// `net-undefine NETWORK`.
pub fn undefine(c: &mut Client, a: &NetArgs) -> Result<Output, Failure> {
    let name = net_name(c, &a.network)?;
    c.net_undefine(&a.network)?;
    Ok(Output::line(format!("Network {name} has been undefined")))
}

/// `net-start NETWORK`.
pub fn start(c: &mut Client, a: &NetArgs) -> Result<Output, Failure> {
    let name = net_name(c, &a.network)?;
    c.net_start(&a.network)?;
    Ok(Output::line(format!("Network {name} started")))
}

/// `net-destroy NETWORK`.
pub fn destroy(c: &mut Client, a: &NetDestroyArgs) -> Result<Output, Failure> {
    let name = net_name(c, &a.network)?;
    c.net_destroy(&a.network, a.force)?;
    Ok(Output::line(format!("Network {name} destroyed")))
}

/// `net-autostart NETWORK`.
pub fn autostart(c: &mut Client, a: &NetAutostartArgs) -> Result<Output, Failure> {
    let name = net_name(c, &a.network)?;
    c.net_set_autostart(&a.network, !a.disable)?;
    let what = if a.disable { "unmarked" } else { "marked" };
    Ok(Output::line(format!(
        "Network {name} {what} as autostarted"
    )))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl NetListArgs {
    fn keeps(&self, n: &NetworkSummary) -> bool {
        (!self.persistent || n.persistent)
            && (!self.transient || !n.persistent)
            && (!self.autostart || n.autostart)
            && (!self.no_autostart || !n.autostart)
    }
}

/// `net-list`.
pub fn list(c: &mut Client, a: &NetListArgs) -> Result<Output, Failure> {
    let filter = if a.inactive {
        ListFilter::Inactive
    } else if a.all {
        ListFilter::All
    } else {
        ListFilter::Active
    };
    let reply = c.networks(filter)?;
    let nets: Vec<NetworkSummary> = reply.value.into_iter().filter(|n| a.keeps(n)).collect();
    if a.json {
        let json = serde_json::to_string(&nets)
            .map_err(|e| Failure(format!("cannot encode the list: {e}")))?;
        return Ok(Output::json(json));
    }
    if a.name || a.uuid {
        let mut out = String::new();
        for n in &nets {
            let line = match (a.uuid, a.name) {
                (true, true) => format!("{} {}\n", n.uuid, n.name),
                (true, false) => format!("{}\n", n.uuid),
                _ => format!("{}\n", n.name),
            };
            out.push_str(&line);
        }
        return Ok(Output::text(out));
    }
    let mut t = Table::new(&["Name", "State", "Autostart", "Persistent"]);
    for n in &nets {
        t.row(vec![
            n.name.clone(),
            if n.active { "active" } else { "inactive" }.into(),
            yes_no(n.autostart).into(),
            yes_no(n.persistent).into(),
        ]);
    }
    Ok(Output::text(t.render()))
}

/// `net-info NETWORK`.
pub fn info(c: &mut Client, a: &NetJsonArgs) -> Result<Output, Failure> {
    let r = c.net_info(&a.network)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let n = r.value;
    let mut out = format!(
        "{:<16}{}\n{:<16}{}\n{:<16}{}\n{:<16}{}\n{:<16}{}\n",
        "Name:",
        n.name,
        "UUID:",
        n.uuid,
        "Active:",
        yes_no(n.active),
        "Persistent:",
        yes_no(n.persistent),
        "Autostart:",
        yes_no(n.autostart),
    );
    if let Some(b) = &n.bridge {
        out.push_str(&format!("{:<16}{b}\n", "Bridge:"));
    }
    Ok(Output::text(out))
}

/// `net-dumpxml NETWORK`.
pub fn dumpxml(c: &mut Client, a: &NetDumpxmlArgs) -> Result<Output, Failure> {
    let r = c.net_xml(&a.network, a.inactive)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    // The XML ends with its own newline; virsh's blank line follows.
    let mut xml = r.value.xml;
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Ok(Output::text(xml))
}

/// `net-edit NETWORK`.
pub fn edit(c: &mut Client, a: &NetArgs) -> Result<Output, Failure> {
    let name = net_name(c, &a.network)?;
    let before = c.net_xml(&a.network, true)?.value.xml;
    let Some(after) = super::edit::edit_text(&before, &format!("network {name}"))? else {
        return Ok(Output::line(format!(
            "Network {name} XML configuration not changed."
        )));
    };
    let answer = c
        .net_define(&after)
        .map_err(|e| Failure(format!("{e}; network {name} is unchanged")))?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Network {} XML configuration edited.",
        answer.name
    )))
}

/// `yyyy-mm-dd hh:mm:ss` in the local time zone, as virsh prints a lease's
/// expiry.
fn local_time(secs: u64) -> String {
    let Ok(t) = libc::time_t::try_from(secs) else {
        return secs.to_string();
    };
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call's duration.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return secs.to_string();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// `net-dhcp-leases NETWORK`.
pub fn leases(c: &mut Client, a: &NetLeasesArgs) -> Result<Output, Failure> {
    let r = c.net_leases(&a.network, a.mac.as_deref())?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let mut t = Table::new(&[
        "Expiry Time",
        "MAC address",
        "Protocol",
        "IP address",
        "Hostname",
        "Client ID or DUID",
    ]);
    for l in &r.value {
        t.row(vec![
            if l.expiry == 0 {
                "never".into()
            } else {
                local_time(l.expiry)
            },
            l.mac.clone(),
            l.protocol.clone(),
            format!("{}/{}", l.address, l.prefix),
            l.hostname.clone().unwrap_or_else(|| "-".into()),
            l.client_id.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    Ok(Output::text(t.render()))
}

/// `net-update NETWORK COMMAND SECTION XML`.
pub fn update(c: &mut Client, a: &NetUpdateArgs) -> Result<Output, Failure> {
    if a.parent_index.is_some_and(|i| i != 0) {
        return Err(Failure(
            "--parent-index: only the network's first IPv4 address can be updated".into(),
        ));
    }
    let name = net_name(c, &a.network)?;
    // virsh takes the element itself or a file holding it.
    let xml = if a.xml.trim_start().starts_with('<') {
        a.xml.clone()
    } else {
        read_file(std::path::Path::new(&a.xml))?
    };
    let active = c.net_info(&a.network)?.value.active;
    let (live, config) = match (a.live, a.config) {
        (false, false) => (active, !active),
        flags => flags,
    };
    c.net_update(
        &a.network,
        &NetworkUpdateRequest {
            command: a.command.clone(),
            section: a.section.clone(),
            xml,
            live,
            config,
        },
    )?;
    let what = match (live, config) {
        (true, true) => "persistent config and live state",
        (false, true) => "persistent config",
        _ => "live state",
    };
    Ok(Output::line(format!("Updated network {name} {what}")))
}

/// `domifaddr DOMAIN`.
pub fn domifaddr(c: &mut Client, a: &DomifaddrArgs) -> Result<Output, Failure> {
    if let Some(s) = a.source.as_deref().filter(|s| *s != "lease") {
        return Err(Failure(format!(
            "--source '{s}' is not supported: only 'lease' (the networks' DHCP servers)"
        )));
    }
    let r = c.addresses(&a.domain)?;
    let rows: Vec<_> = r
        .value
        .into_iter()
        .filter(|x| {
            a.interface
                .as_deref()
                .is_none_or(|i| i == x.name || i.eq_ignore_ascii_case(&x.mac))
        })
        .collect();
    if a.json {
        let json = serde_json::to_string(&rows)
            .map_err(|e| Failure(format!("cannot encode the addresses: {e}")))?;
        return Ok(Output::json(json));
    }
    let mut t = Table::new(&["Name", "MAC address", "Protocol", "Address"]);
    for x in rows {
        t.row(vec![
            x.name,
            x.mac,
            x.protocol,
            format!("{}/{}", x.address, x.prefix),
        ]);
    }
    Ok(Output::text(t.render()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// virsh 9's `net-list --all` with libvirt's default network defined
    /// and started, and one inactive transient-less network.
    #[test]
    fn net_list_as_virsh_prints_it() {
        let mut t = Table::new(&["Name", "State", "Autostart", "Persistent"]);
        t.row(vec![
            "default".into(),
            "active".into(),
            "yes".into(),
            "yes".into(),
        ]);
        assert_eq!(
            t.render(),
            " Name      State    Autostart   Persistent\n\
             --------------------------------------------\n \
             default   active   yes         yes\n"
        );
    }

    #[test]
    fn lease_times_are_dates() {
        let t = local_time(86_400 * 365);
        assert_eq!(t.len(), "1971-01-01 00:00:00".len(), "{t}");
        assert!(
            t.starts_with("1971-01-0") || t.starts_with("1970-12-31"),
            "{t}"
        );
    }
}
