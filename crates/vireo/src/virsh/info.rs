//! Reading verbs: list, dominfo, domstate, dumpxml, domid, domuuid,
//! domname, domstats.

use std::fmt::Write as _;

use clap::Args;
use manager::api::{DomainInfo, DomainState, DomainStats, DomainSummary};
use manager::client::{Client, ListFilter};

use super::table::Table;
use super::{Failure, Output};

/// A reading verb on one domain.
#[derive(Debug, Args)]
pub struct DomJsonArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Inactive domains too.
    #[arg(long)]
    pub all: bool,
    /// Only inactive domains.
    #[arg(long, conflicts_with = "all")]
    pub inactive: bool,
    /// Only persistent domains.
    #[arg(long)]
    pub persistent: bool,
    /// Only transient domains.
    #[arg(long)]
    pub transient: bool,
    /// Only domains marked autostart.
    #[arg(long)]
    pub autostart: bool,
    /// Only domains not marked autostart.
    #[arg(long)]
    pub no_autostart: bool,
    /// Only running domains.
    #[arg(long)]
    pub state_running: bool,
    /// Only paused domains.
    #[arg(long)]
    pub state_paused: bool,
    /// Only shut off domains.
    #[arg(long)]
    pub state_shutoff: bool,
    /// Only domains in other states (in shutdown, crashed).
    #[arg(long)]
    pub state_other: bool,
    /// Names only.
    #[arg(long)]
    pub name: bool,
    /// UUIDs only.
    #[arg(long)]
    pub uuid: bool,
    /// Ids only (running domains).
    #[arg(long)]
    pub id: bool,
    /// A table (the default).
    #[arg(long)]
    pub table: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `domstate`.
#[derive(Debug, Args)]
pub struct DomstateArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// Also why.
    #[arg(long)]
    pub reason: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dumpxml`.
#[derive(Debug, Args)]
pub struct DumpxmlArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// The persistent definition, not the running one.
    #[arg(long)]
    pub inactive: bool,
    /// Print the daemon's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `domstats`.
#[derive(Debug, Args)]
pub struct DomstatsArgs {
    /// Domains (default: every running one).
    pub domains: Vec<String>,
    /// Print the daemon's JSON (an array, one object per domain).
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    fn state_filters(&self) -> bool {
        self.state_running || self.state_paused || self.state_shutoff || self.state_other
    }

    fn keeps(&self, d: &DomainSummary) -> bool {
        let state_ok = !self.state_filters()
            || match d.state {
                DomainState::Running => self.state_running,
                DomainState::Paused => self.state_paused,
                DomainState::ShutOff => self.state_shutoff,
                DomainState::InShutdown | DomainState::Crashed => self.state_other,
            };
        state_ok
            && (!self.persistent || d.persistent)
            && (!self.transient || !d.persistent)
            && (!self.autostart || d.autostart)
            && (!self.no_autostart || !d.autostart)
    }

    fn client_filtered(&self) -> bool {
        self.state_filters()
            || self.persistent
            || self.transient
            || self.autostart
            || self.no_autostart
    }
}

/// `list`.
pub fn list(c: &mut Client, a: &ListArgs) -> Result<Output, Failure> {
    // A state filter names inactive states too, as in virsh.
    let filter = if a.inactive {
        ListFilter::Inactive
    } else if a.all || a.state_filters() {
        ListFilter::All
    } else {
        ListFilter::Active
    };
    let reply = c.list(filter)?;
    let mut domains: Vec<DomainSummary> = reply.value.into_iter().filter(|d| a.keeps(d)).collect();
    if a.json {
        if !a.client_filtered() {
            return Ok(Output::json(reply.json));
        }
        let json = serde_json::to_string(&domains)
            .map_err(|e| Failure(format!("cannot encode the list: {e}")))?;
        return Ok(Output::json(json));
    }
    // virsh's order: running domains by id, then the others by name.
    domains.sort_by(|x, y| match (x.id, y.id) {
        (Some(i), Some(j)) => i.cmp(&j),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => x.name.cmp(&y.name),
    });
    let mut out = String::new();
    if a.name || a.uuid || a.id {
        for d in &domains {
            if a.id {
                if let Some(id) = d.id {
                    let _ = writeln!(out, "{id}");
                }
            } else if a.uuid && a.name {
                let _ = writeln!(out, "{} {}", d.uuid, d.name);
            } else if a.uuid {
                let _ = writeln!(out, "{}", d.uuid);
            } else {
                let _ = writeln!(out, "{}", d.name);
            }
        }
        return Ok(Output::text(out));
    }
    let mut t = Table::new(&["Id", "Name", "State"]);
    for d in &domains {
        t.row(vec![
            d.id.map_or_else(|| "-".to_string(), |i| i.to_string()),
            d.name.clone(),
            d.state.virsh_name().to_string(),
        ]);
    }
    Ok(Output::text(t.render()))
}

/// dominfo's lines, as virsh lays them out.
pub fn format_dominfo(i: &DomainInfo) -> String {
    let s = &i.summary;
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<15} {value}");
    };
    field(
        "Id:",
        s.id.map_or_else(|| "-".to_string(), |i| i.to_string()),
    );
    field("Name:", s.name.clone());
    field("UUID:", s.uuid.clone());
    field("OS Type:", i.os_type.clone());
    field("State:", s.state.virsh_name().to_string());
    field("CPU(s):", i.vcpus.to_string());
    if i.cpu_time_ns != 0 {
        // Tenths of seconds, as virsh's "%.1lfs".
        // Saturating: the daemon's number, and a sum that overflows
        // would panic (debug) or print 0.0s (release).
        let tenths = i.cpu_time_ns.saturating_add(50_000_000) / 100_000_000;
        field("CPU time:", format!("{}.{}s", tenths / 10, tenths % 10));
    }
    field("Max memory:", format!("{} KiB", i.max_memory_kib));
    field("Used memory:", format!("{} KiB", i.used_memory_kib));
    field("Persistent:", yes_no(s.persistent).to_string());
    field(
        "Autostart:",
        if s.autostart { "enable" } else { "disable" }.to_string(),
    );
    field("Managed save:", "no".to_string());
    out
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `dominfo`.
pub fn dominfo(c: &mut Client, a: &DomJsonArgs) -> Result<Output, Failure> {
    let r = c.info(&a.domain)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::text(format_dominfo(&r.value)))
}

/// `domstate`.
pub fn domstate(c: &mut Client, a: &DomstateArgs) -> Result<Output, Failure> {
    let r = c.state(&a.domain)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let s = r.value;
    Ok(if a.reason {
        Output::line(format!(
            "{} ({})",
            s.state.virsh_name(),
            s.reason.virsh_name()
        ))
    } else {
        Output::line(s.state.virsh_name())
    })
}

/// `dumpxml`.
pub fn dumpxml(c: &mut Client, a: &DumpxmlArgs) -> Result<Output, Failure> {
    let r = c.xml(&a.domain, a.inactive)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    let mut xml = r.value.xml;
    if !xml.ends_with('\n') {
        xml.push('\n');
    }
    Ok(Output::text(xml))
}

/// `domid`.
pub fn domid(c: &mut Client, a: &DomJsonArgs) -> Result<Output, Failure> {
    let r = c.info(&a.domain)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::line(
        r.value
            .summary
            .id
            .map_or_else(|| "-".to_string(), |i| i.to_string()),
    ))
}

/// `domuuid`.
pub fn domuuid(c: &mut Client, a: &DomJsonArgs) -> Result<Output, Failure> {
    let r = c.info(&a.domain)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::line(r.value.summary.uuid))
}

/// `domname`.
pub fn domname(c: &mut Client, a: &DomJsonArgs) -> Result<Output, Failure> {
    let r = c.info(&a.domain)?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::line(r.value.summary.name))
}

/// One domain's block of `domstats`.
pub fn format_stats(s: &DomainStats) -> String {
    let mut out = format!("Domain: '{}'\n", s.name);
    for (k, v) in &s.fields {
        match v {
            serde_json::Value::String(text) => {
                let _ = writeln!(out, "  {k}={text}");
            }
            serde_json::Value::Bool(b) => {
                let _ = writeln!(out, "  {k}={}", u8::from(*b));
            }
            other => {
                let _ = writeln!(out, "  {k}={other}");
            }
        }
    }
    out
}

/// `domstats`.
pub fn domstats(c: &mut Client, a: &DomstatsArgs) -> Result<Output, Failure> {
    let domains = if a.domains.is_empty() {
        c.list(ListFilter::Active)?
            .value
            .into_iter()
            .map(|d| d.name)
            .collect()
    } else {
        a.domains.clone()
    };
    let mut texts = Vec::new();
    let mut jsons = Vec::new();
    for d in &domains {
        let r = c.stats(d)?;
        texts.push(format_stats(&r.value));
        jsons.push(r.json);
    }
    if a.json {
        return Ok(Output::json(format!("[{}]", jsons.join(","))));
    }
    // virsh separates domains with a blank line.
    Ok(Output::text(texts.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use manager::api::StateReason;

    fn info(active: bool) -> DomainInfo {
        DomainInfo {
            summary: DomainSummary {
                id: active.then_some(2),
                name: "x".into(),
                uuid: "06627388-6071-4393-b3a8-8ce774a9ba4b".into(),
                state: if active {
                    DomainState::Running
                } else {
                    DomainState::ShutOff
                },
                reason: StateReason::Booted,
                persistent: true,
                autostart: false,
            },
            os_type: "hvm".into(),
            driver: "vireo".into(),
            vcpus: 1,
            cpu_time_ns: if active { 1_795_830_058_249_000_000 } else { 0 },
            max_memory_kib: 65536,
            used_memory_kib: 65536,
            pid: None,
        }
    }

    /// The layout of `virsh -c test:///default dominfo x` (virsh 9.0.0)
    /// with Vireo's data; no security lines, as virsh prints none without
    /// a security model.
    #[test]
    fn dominfo_layout() {
        assert_eq!(
            format_dominfo(&info(true)),
            "Id:             2\n\
             Name:           x\n\
             UUID:           06627388-6071-4393-b3a8-8ce774a9ba4b\n\
             OS Type:        hvm\n\
             State:          running\n\
             CPU(s):         1\n\
             CPU time:       1795830058.2s\n\
             Max memory:     65536 KiB\n\
             Used memory:    65536 KiB\n\
             Persistent:     yes\n\
             Autostart:      disable\n\
             Managed save:   no\n"
        );
        let mut huge = info(true);
        huge.cpu_time_ns = u64::MAX;
        assert!(format_dominfo(&huge).contains("CPU time:       18446744073.7s\n"));
        let off = format_dominfo(&info(false));
        assert!(off.starts_with("Id:             -\n"));
        assert!(!off.contains("CPU time"));
        assert!(off.contains("State:          shut off\n"));
    }

    #[test]
    fn domstats_layout() {
        let mut s = DomainStats {
            name: "test".into(),
            ..Default::default()
        };
        s.fields.insert("state.state".into(), serde_json::json!(1));
        s.fields.insert("state.reason".into(), serde_json::json!(0));
        s.fields
            .insert("vcpu.0.name".into(), serde_json::json!("v0"));
        assert_eq!(
            format_stats(&s),
            "Domain: 'test'\n  state.reason=0\n  state.state=1\n  vcpu.0.name=v0\n"
        );
    }
}
