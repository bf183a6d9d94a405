//! A virtual network's firewall: NAT, forwarding and isolation rules in
//! nftables, applied by feeding JSON to the `nft` binary.
//!
//! Each network owns one table, `inet vireo_<name>`, rather than chains in
//! a shared table: replacing or removing a network is then one
//! "delete table" that cannot touch another network's rules, and a table
//! left by a crashed daemon is found by name alone ([`tables`]).

mod ruleset;

pub(crate) use ruleset::check_ifname;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use serde_json::Value;

/// How a network's traffic reaches beyond its bridge (libvirt's
/// `<forward mode=...>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Masquerade IPv4 traffic from the subnets leaving through any
    /// interface but the bridge (or only `out_dev`); IPv6 is routed.
    Nat {
        /// Only masquerade traffic leaving through this interface.
        out_dev: Option<String>,
        /// Source-NAT to this inclusive address range instead of the
        /// outgoing interface's address.
        addresses: Option<(Ipv4Addr, Ipv4Addr)>,
        /// TCP/UDP source ports to map onto (inclusive).
        ports: Option<(u16, u16)>,
    },
    /// Forward both ways without address translation.
    Route {
        /// Only forward to and from this interface.
        out_dev: Option<String>,
    },
    /// No rules at all: the host's own firewall decides.
    Open,
    /// Nothing is forwarded into or out of the bridge.
    Isolated,
}

/// Everything the firewall needs to know about one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// The network's name (any string; it is sanitised for the table name).
    pub network: String,
    /// The network's bridge interface.
    pub bridge: String,
    /// The network's subnets, as address and prefix length.
    pub subnets: Vec<(IpAddr, u8)>,
    /// How traffic leaves the network.
    pub forward: Forward,
}

/// Why the firewall could not be changed or read.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` binary is missing.
    #[error("nft not found: install the Debian package nftables")]
    NotInstalled,
    /// `nft` could not be run.
    #[error("running nft: {0}")]
    Spawn(std::io::Error),
    /// `nft` refused the request; its own message (bounded).
    #[error("nft failed: {0}")]
    Failed(String),
    /// The request was invalid before reaching nft.
    #[error("invalid network rules: {0}")]
    Invalid(String),
    /// `nft` answered with something that is not the expected JSON.
    #[error("unexpected nft output: {0}")]
    Output(String),
}

/// Table family used for every Vireo table: one table covers IPv4 and IPv6.
const FAMILY: &str = "inet";
/// Prefix of every table Vireo owns.
const PREFIX: &str = "vireo_";
/// Longest nft error message we carry, so a runaway stderr stays one line.
const MAX_MESSAGE: usize = 1024;
/// Longest listing we parse from `nft -j list tables`.
const MAX_OUTPUT: usize = 4 << 20;

/// The table name a network's rules live in. Letters and digits are kept;
/// every other byte (including `_`) becomes `_xx` in hex, so two different
/// network names never share a table.
pub fn table_name(network: &str) -> String {
    let mut name = String::from(PREFIX);
    for b in network.bytes() {
        if b.is_ascii_alphanumeric() {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("_{b:02x}"));
        }
    }
    name
}

/// [`table_name`], refused when longer than nft allows (255 bytes).
fn checked_table_name(network: &str) -> Result<String, NftError> {
    let name = table_name(network);
    if name.len() > 255 {
        return Err(NftError::Invalid(format!(
            "network name {:?}... too long for an nft table name",
            network.chars().take(32).collect::<String>()
        )));
    }
    Ok(name)
}

/// Install the network's rules, replacing any it had, in one nft
/// transaction: either the new ruleset is in place or the old one is.
pub fn apply(rules: &NetworkRules) -> Result<(), NftError> {
    let doc = ruleset::build(rules, &checked_table_name(&rules.network)?)?;
    run(&["-j", "-f", "-"], Some(&doc.to_string())).map(|_| ())
}

/// Remove everything [`apply`] made for `network`; Ok if nothing was there.
pub fn remove(network: &str) -> Result<(), NftError> {
    let table = serde_json::json!({"family": FAMILY, "name": checked_table_name(network)?});
    // Adding first makes the delete succeed when the table is absent, and
    // both happen in one transaction.
    let doc = serde_json::json!({"nftables": [
        {"add": {"table": table.clone()}},
        {"delete": {"table": table}},
    ]});
    run(&["-j", "-f", "-"], Some(&doc.to_string())).map(|_| ())
}

/// Names of the tables Vireo owns in this network namespace.
pub fn tables() -> Result<Vec<String>, NftError> {
    let out = run(&["-j", "list", "tables", FAMILY], None)?;
    let doc: Value =
        serde_json::from_str(&out).map_err(|e| NftError::Output(format!("not JSON: {e}")))?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| NftError::Output("no \"nftables\" array".into()))?;
    Ok(items
        .iter()
        .filter_map(|i| i.get("table"))
        .filter(|t| t.get("family").and_then(Value::as_str) == Some(FAMILY))
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect())
}

/// Run nft with `args`, feeding `input` on stdin; its stdout on success.
pub(crate) fn run(args: &[&str], input: Option<&str>) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NftError::NotInstalled,
            _ => NftError::Spawn(e),
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A write error means nft exited early; its stderr says why.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(NftError::Spawn)?;
    if !out.status.success() {
        return Err(NftError::Failed(one_line(&out.stderr, &out.status)));
    }
    if out.stdout.len() > MAX_OUTPUT {
        return Err(NftError::Output(format!(
            "{} bytes, more than {MAX_OUTPUT}",
            out.stdout.len()
        )));
    }
    String::from_utf8(out.stdout).map_err(|_| NftError::Output("not UTF-8".into()))
}

/// nft's stderr as one bounded line (it spans several, with carets).
fn one_line(stderr: &[u8], status: &std::process::ExitStatus) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '^' || c == ' '))
        .collect::<Vec<_>>()
        .join("; ");
    if line.is_empty() {
        line = format!("exited with {status}");
    }
    if line.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_injective_and_safe() {
        assert_eq!(table_name("default"), "vireo_default");
        assert_eq!(table_name("a-b"), "vireo_a_2db");
        assert_eq!(table_name("a_b"), "vireo_a_5fb");
        assert_eq!(table_name("a b\n"), "vireo_a_20b_0a");
        assert!(checked_table_name(&"x".repeat(249)).is_ok());
        assert!(checked_table_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn nft_messages_become_one_bounded_line() {
        let status = std::process::Command::new("false").status().unwrap();
        let msg = one_line(b"Error: syntax error\nadd rule x\n    ^^^^\n", &status);
        assert_eq!(msg, "Error: syntax error; add rule x");
        assert!(one_line(&[b'x'; 5000], &status).len() <= MAX_MESSAGE + 3);
        assert!(one_line(b"", &status).starts_with("exited with"));
    }
}
