//! Host interface verbs: iface-define, iface-undefine, iface-start,
//! iface-destroy, iface-list, iface-dumpxml, iface-edit, iface-mac and
//! iface-name. Messages as virsh 9's, which do not quote interface names.

use std::path::PathBuf;

use clap::Args;
use manager::api::InterfaceSummary;
use manager::client::{Client, ListFilter};

use super::lifecycle::read_file;
use super::table::Table;
use super::{warn, Failure, Output};

/// A verb taking only an interface.
#[derive(Debug, Args)]
pub struct IfaceArgs {
    /// Interface name.
    pub interface: String,
}

/// `iface-mac INTERFACE`.
#[derive(Debug, Args)]
pub struct IfaceJsonArgs {
    /// Interface name.
    pub interface: String,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `iface-name MAC`.
#[derive(Debug, Args)]
pub struct IfaceNameArgs {
    /// The interface's MAC address.
    pub mac: String,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `iface-define FILE`.
#[derive(Debug, Args)]
pub struct IfaceFileArgs {
    /// The interface's libvirt XML.
    pub file: PathBuf,
}

/// `iface-dumpxml INTERFACE`.
#[derive(Debug, Args)]
pub struct IfaceDumpxmlArgs {
    /// Interface name.
    pub interface: String,
    /// The persistent definition, not the one it was started with.
    #[arg(long)]
    pub inactive: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `iface-list`.
#[derive(Debug, Args)]
pub struct IfaceListArgs {
    /// Inactive interfaces too.
    #[arg(long)]
    pub all: bool,
    /// Only inactive interfaces.
    #[arg(long, conflicts_with = "all")]
    pub inactive: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `iface-define FILE`.
pub fn define(c: &mut Client, a: &IfaceFileArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let answer = c.iface_define(&xml)?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Interface {} defined from {}",
        answer.name,
        a.file.display()
    )))
}

/// `iface-undefine INTERFACE`.
pub fn undefine(c: &mut Client, a: &IfaceArgs) -> Result<Output, Failure> {
    c.iface_undefine(&a.interface)?;
    Ok(Output::line(format!("Interface {} undefined", a.interface)))
}

/// `iface-start INTERFACE`.
pub fn start(c: &mut Client, a: &IfaceArgs) -> Result<Output, Failure> {
    c.iface_start(&a.interface)?;
    Ok(Output::line(format!("Interface {} started", a.interface)))
}

/// `iface-destroy INTERFACE`.
pub fn destroy(c: &mut Client, a: &IfaceArgs) -> Result<Output, Failure> {
    c.iface_destroy(&a.interface)?;
    Ok(Output::line(format!("Interface {} destroyed", a.interface)))
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Output, Failure> {
    serde_json::to_string(v)
        .map(Output::json)
        .map_err(|e| Failure(format!("cannot encode the answer: {e}")))
}

/// The table `iface-list` prints.
fn list_table(ifaces: &[InterfaceSummary]) -> String {
    let mut t = Table::new(&["Name", "State", "MAC Address"]);
    for i in ifaces {
        t.row(vec![
            i.name.clone(),
            if i.active { "active" } else { "inactive" }.into(),
            i.mac.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}

/// `iface-list`.
pub fn list(c: &mut Client, a: &IfaceListArgs) -> Result<Output, Failure> {
    let filter = if a.inactive {
        ListFilter::Inactive
    } else if a.all {
        ListFilter::All
    } else {
        ListFilter::Active
    };
    let r = c.host_interfaces(filter)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::text(list_table(&r.value)))
}

/// `iface-dumpxml INTERFACE`.
pub fn dumpxml(c: &mut Client, a: &IfaceDumpxmlArgs) -> Result<Output, Failure> {
    let r = c.iface_xml(&a.interface, a.inactive)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let mut xml = r.value.xml;
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Ok(Output::text(xml))
}

/// `iface-edit INTERFACE`.
pub fn edit(c: &mut Client, a: &IfaceArgs) -> Result<Output, Failure> {
    let name = &a.interface;
    let before = c.iface_xml(name, true)?.value.xml;
    let Some(after) = super::edit::edit_text(&before, &format!("interface {name}"))? else {
        return Ok(Output::line(format!(
            "Interface {name} XML configuration not changed."
        )));
    };
    let answer = c
        .iface_define(&after)
        .map_err(|e| Failure(format!("{e}; interface {name} is unchanged")))?;
    answer.warnings.iter().for_each(|w| warn(w));
    Ok(Output::line(format!(
        "Interface {} XML configuration edited.",
        answer.name
    )))
}

/// `iface-mac INTERFACE`.
pub fn mac(c: &mut Client, a: &IfaceJsonArgs) -> Result<Output, Failure> {
    let r = c.iface_info(&a.interface)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    match r.value.mac {
        Some(m) => Ok(Output::line(m)),
        None => Err(Failure(format!(
            "interface {} has no MAC address: it is not on the host and its definition gives none",
            a.interface
        ))),
    }
}

/// `iface-name MAC`: the interfaces with this MAC, matched without
/// regard to case; more than one is an error, as in virsh.
pub fn name(c: &mut Client, a: &IfaceNameArgs) -> Result<Output, Failure> {
    let all = c.host_interfaces(ListFilter::All)?.value;
    let found: Vec<InterfaceSummary> = all
        .into_iter()
        .filter(|i| {
            i.mac
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(&a.mac))
        })
        .collect();
    match found.as_slice() {
        [] => Err(Failure(format!(
            "Interface not found: couldn't find interface with MAC address '{}'",
            a.mac.escape_debug()
        ))),
        [one] if a.json => encode(one),
        [one] => Ok(Output::line(&one.name)),
        many => Err(Failure(format!(
            "multiple interfaces with matching MAC address '{}': {}",
            a.mac.escape_debug(),
            many.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// virsh 9's `iface-list --all` layout.
    #[test]
    fn iface_list_as_virsh_prints_it() {
        let rows = [
            InterfaceSummary {
                name: "br0".into(),
                kind: "bridge".into(),
                active: true,
                mac: Some("52:54:00:12:34:56".into()),
                persistent: true,
                start_mode: "onboot".into(),
            },
            InterfaceSummary {
                name: "eth1".into(),
                kind: "ethernet".into(),
                active: false,
                mac: None,
                persistent: true,
                start_mode: "none".into(),
            },
        ];
        assert_eq!(
            list_table(&rows),
            " Name   State      MAC Address\n\
             --------------------------------------\n \
             br0    active     52:54:00:12:34:56\n \
             eth1   inactive   \n"
        );
    }
}
