//! The host side of a host interface: making it from its definition
//! through netlink ([`netvirt::link`], never `ip`), and undoing exactly
//! what that made.
//!
//! A start first checks the whole tree against one snapshot of the
//! host's links (every member and VLAN parent there, no name taken by
//! another kind of link, no port enslaved elsewhere), so the common
//! refusals change nothing. Then each change is made with its inverse
//! noted in an [`Undo`] list; a failure midway (a kernel without VLAN
//! support) plays the list back, and so does `iface-destroy`, from the
//! list kept in the run record (written as each change is made, so a
//! daemon killed mid-start leaves it for the next one). So a pre-existing physical port is
//! released and its MTU, MAC and up state restored, never deleted.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netvirt::link::{BondOptions, BridgeOptions, LinkError, LinkInfo, Netlink};
use serde::{Deserialize, Serialize};
use virtxml::{BondMode, HostInterface, HostInterfaceKind};

use super::failure::Failure;

/// The inverse of one change a start made, in the order made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
pub(crate) enum Undo {
    /// The link was made: delete it.
    Delete { name: String },
    /// The link was enslaved: free it.
    Release { name: String },
    /// The link was brought up: take it down.
    Down { name: String },
    /// The link was taken down (to join a bond): bring it up.
    Up { name: String },
    /// The address was added: remove it.
    DelAddr {
        name: String,
        address: IpAddr,
        prefix: u8,
    },
    /// The MTU was changed from this.
    Mtu { name: String, mtu: u32 },
    /// The MAC was changed from this.
    Mac { name: String, mac: [u8; 6] },
}

/// The host's links by name, as one dump saw them.
pub(crate) struct Snapshot {
    links: BTreeMap<String, LinkInfo>,
}

impl Snapshot {
    pub fn take(nl: &mut Netlink) -> Result<Snapshot, Failure> {
        let links = nl.links().map_err(link_failure)?;
        Ok(Snapshot {
            links: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&LinkInfo> {
        self.links.get(name)
    }

    fn name_of(&self, index: u32) -> String {
        self.links
            .values()
            .find(|l| l.index == index)
            .map_or_else(|| format!("link #{index}"), |l| l.name.clone())
    }

    /// Active, as libvirt means it for a host interface: the link exists
    /// and is up.
    pub fn active(&self, name: &str) -> bool {
        self.get(name).is_some_and(|l| l.up)
    }
}

/// A kernel refusal: one line, naming the operation and the link.
pub(crate) fn link_failure(e: LinkError) -> Failure {
    match e {
        LinkError::Socket(_) => Failure::internal(e.to_string()),
        other => Failure::unprocessable(other.to_string()),
    }
}

/// Link kinds Vireo makes; anything else under an `ethernet` name is a
/// device the host already has (a NIC, a veth, a TAP).
fn made_kind(kind: &HostInterfaceKind) -> Option<&'static str> {
    match kind {
        HostInterfaceKind::Ethernet => None,
        HostInterfaceKind::Bridge(_) => Some("bridge"),
        HostInterfaceKind::Vlan(_) => Some("vlan"),
        HostInterfaceKind::Bond(_) => Some("bond"),
    }
}

fn kind_text(l: &LinkInfo) -> String {
    match &l.kind {
        Some(k) => format!("a {k} device"),
        None => "a plain device".into(),
    }
}

/// Refuses, before anything changes, what would leave a start half done.
pub(crate) fn check(snap: &Snapshot, top: &HostInterface) -> Result<(), Failure> {
    check_one(snap, top, None)
}

/// Refuses a link of another kind under the interface's name, or an
/// Ethernet device that is not there; `what` names it in the message.
pub(crate) fn check_kind(snap: &Snapshot, i: &HostInterface, what: &str) -> Result<(), Failure> {
    let name = &i.name;
    match (made_kind(&i.kind), snap.get(name)) {
        (None, None) => Err(Failure::unprocessable(format!(
            "{what} does not exist on the host"
        ))),
        (None, Some(l)) => match l.kind.as_deref() {
            Some(k @ ("bridge" | "vlan" | "bond")) => Err(Failure::unprocessable(format!(
                "{what} exists as a {k}, not an ethernet device"
            ))),
            _ => Ok(()),
        },
        (Some(want), Some(l)) if l.kind.as_deref() != Some(want) => {
            Err(Failure::unprocessable(format!(
                "{what}: a link named {name} already exists as {}, not a {want}",
                kind_text(l)
            )))
        }
        _ => Ok(()),
    }
}

fn check_one(snap: &Snapshot, i: &HostInterface, master: Option<&str>) -> Result<(), Failure> {
    let name = &i.name;
    let what = match master {
        Some(m) => format!("member {name} of {m}"),
        None => format!("interface {name}"),
    };
    let link = snap.get(name);
    check_kind(snap, i, &what)?;
    if let (Some(m), Some(l)) = (master, link) {
        if let Some(idx) = l.master {
            let current = snap.name_of(idx);
            if current != m {
                return Err(Failure::unprocessable(format!(
                    "{what} is already enslaved to {current}"
                )));
            }
        }
    }
    if let HostInterfaceKind::Vlan(v) = &i.kind {
        if link.is_none() && snap.get(&v.parent).is_none() {
            return Err(Failure::unprocessable(format!(
                "{what}: its VLAN parent {} does not exist on the host",
                v.parent
            )));
        }
    }
    for m in i.members() {
        check_one(snap, m, Some(name))?;
    }
    Ok(())
}

/// The undo list being built. Each change's inverse is handed to `note`
/// as soon as the change is made, so that a daemon killed mid-start
/// leaves a record of what it made for the next one to undo.
pub(crate) struct UndoLog<'a> {
    list: Vec<Undo>,
    note: &'a mut dyn FnMut(&[Undo]) -> Result<(), Failure>,
}

impl UndoLog<'_> {
    /// Notes a change made; a failure to note it fails the start, which
    /// then undoes this change with the others.
    fn push(&mut self, u: Undo) -> Result<(), Failure> {
        self.list.push(u);
        (self.note)(&self.list)
    }
}

/// Makes `top` on the host; what to undo, in the order made (each
/// prefix of it handed to `note` on the way). On a failure what was made
/// is undone before the error returns.
pub(crate) fn start(
    nl: &mut Netlink,
    snap: &Snapshot,
    top: &HostInterface,
    note: &mut dyn FnMut(&[Undo]) -> Result<(), Failure>,
) -> Result<Vec<Undo>, Failure> {
    check(snap, top)?;
    let mut undo = UndoLog {
        list: Vec::new(),
        note,
    };
    match make(nl, snap, top, None, &mut undo) {
        Ok(()) => Ok(undo.list),
        Err(e) => {
            if let Err(more) = play_back(nl, &undo.list) {
                tracing::error!("undoing a failed start of {}: {}", top.name, more.message);
            }
            Err(e)
        }
    }
}

/// One interface of the tree: made (or taken as it is), set, enslaved
/// to `master`, addressed if it is the top, brought up.
fn make(
    nl: &mut Netlink,
    snap: &Snapshot,
    i: &HostInterface,
    master: Option<(&str, bool)>,
    undo: &mut UndoLog<'_>,
) -> Result<(), Failure> {
    let name = i.name.as_str();
    let before = snap.get(name);
    let made = before.is_none();
    if made {
        create(nl, i)?;
        undo.push(Undo::Delete { name: name.into() })?;
    } else {
        set_attrs(nl, i, before, undo)?;
    }
    for m in i.members() {
        let is_bond = matches!(i.kind, HostInterfaceKind::Bond(_));
        make(nl, snap, m, Some((name, is_bond)), undo)?;
    }
    if let (true, Some(mtu)) = (made, i.mtu) {
        nl.set_mtu(name, mtu).map_err(link_failure)?;
    }
    let was_up = before.is_some_and(|l| l.up);
    if let Some((m, to_bond)) = master {
        let enslaved = before
            .and_then(|l| l.master)
            .is_some_and(|idx| snap.name_of(idx) == m);
        if !enslaved {
            // The bonding driver takes only slaves that are down, and
            // closes them again when they are released.
            if to_bond && was_up {
                nl.set_up(name, false).map_err(link_failure)?;
                if !made {
                    undo.push(Undo::Up { name: name.into() })?;
                }
            }
            nl.set_master(name, Some(m)).map_err(link_failure)?;
            if !made {
                undo.push(Undo::Release { name: name.into() })?;
            }
        }
    }
    for p in &i.protocols {
        for &(address, prefix) in &p.addresses {
            match nl.add_address(name, address, prefix) {
                Ok(()) => undo.push(Undo::DelAddr {
                    name: name.into(),
                    address,
                    prefix,
                })?,
                // Already there: not ours to remove later.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(link_failure(e)),
            }
        }
    }
    if !was_up || master.is_some_and(|(_, b)| b) {
        nl.set_up(name, true).map_err(link_failure)?;
        if !made && !was_up {
            undo.push(Undo::Down { name: name.into() })?;
        }
    }
    Ok(())
}

fn create(nl: &mut Netlink, i: &HostInterface) -> Result<(), Failure> {
    let name = i.name.as_str();
    match &i.kind {
        HostInterfaceKind::Bridge(b) => {
            let stp = b.stp.unwrap_or(false);
            // Unset, the kernel's own default (15 s), which only matters
            // with spanning tree on.
            let delay = b.delay_ms.unwrap_or(if stp { 15_000 } else { 0 });
            let opts = BridgeOptions {
                stp,
                forward_delay_ms: delay,
                // Set once the ports are in: a bridge takes its ports'
                // smallest MTU unless one was set on it since.
                mtu: None,
                mac: i.mac.map(|m| m.0),
            };
            return nl.create_bridge(name, &opts).map_err(link_failure);
        }
        HostInterfaceKind::Vlan(v) => nl
            .create_vlan(name, &v.parent, v.tag)
            .map_err(link_failure)?,
        HostInterfaceKind::Bond(b) => {
            let opts = BondOptions {
                mode: bond_mode(b.mode.unwrap_or(BondMode::BalanceRr)),
                miimon_ms: b.miimon_ms.unwrap_or(0),
            };
            nl.create_bond(name, &opts).map_err(link_failure)?;
        }
        HostInterfaceKind::Ethernet => {
            return Err(Failure::internal(format!(
                "ethernet interface {name} cannot be made"
            )))
        }
    }
    // A created link's MAC needs no undo: deleting it is enough.
    if let Some(mac) = i.mac {
        nl.set_mac(name, mac.0).map_err(link_failure)?;
    }
    Ok(())
}

/// The MTU and MAC of a link that was there before, the old values noted.
fn set_attrs(
    nl: &mut Netlink,
    i: &HostInterface,
    before: Option<&LinkInfo>,
    undo: &mut UndoLog<'_>,
) -> Result<(), Failure> {
    let name = i.name.as_str();
    if let (Some(mtu), Some(l)) = (i.mtu, before) {
        if l.mtu != mtu {
            nl.set_mtu(name, mtu).map_err(link_failure)?;
            undo.push(Undo::Mtu {
                name: name.into(),
                mtu: l.mtu,
            })?;
        }
    }
    if let (Some(mac), Some(l)) = (i.mac, before) {
        if l.mac != Some(mac.0) {
            nl.set_mac(name, mac.0).map_err(link_failure)?;
            if let Some(old) = l.mac {
                undo.push(Undo::Mac {
                    name: name.into(),
                    mac: old,
                })?;
            }
        }
    }
    Ok(())
}

fn bond_mode(m: BondMode) -> netvirt::link::BondMode {
    use netvirt::link::BondMode as K;
    match m {
        BondMode::BalanceRr => K::BalanceRr,
        BondMode::ActiveBackup => K::ActiveBackup,
        BondMode::BalanceXor => K::BalanceXor,
        BondMode::Broadcast => K::Broadcast,
        BondMode::Ieee8023ad => K::Ieee8023ad,
        BondMode::BalanceTlb => K::BalanceTlb,
        BondMode::BalanceAlb => K::BalanceAlb,
    }
}

/// Plays `undo` back, last change first. A link or address already gone
/// is no error (someone removed it, or deleting its master did); every
/// other step is still tried, and the first failure is returned.
pub(crate) fn play_back(nl: &mut Netlink, undo: &[Undo]) -> Result<(), Failure> {
    let mut first = None;
    for u in undo.iter().rev() {
        let r = match u {
            Undo::Delete { name } => nl.delete(name),
            Undo::Release { name } => nl.set_master(name, None),
            Undo::Down { name } => nl.set_up(name, false),
            Undo::Up { name } => nl.set_up(name, true),
            Undo::DelAddr {
                name,
                address,
                prefix,
            } => nl.del_address(name, *address, *prefix),
            Undo::Mtu { name, mtu } => nl.set_mtu(name, *mtu),
            Undo::Mac { name, mac } => nl.set_mac(name, *mac),
        };
        match r {
            Ok(()) | Err(LinkError::NotFound { .. }) => {}
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => {
                tracing::warn!("undoing {u:?}: {e}");
                first.get_or_insert(link_failure(e));
            }
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_records_read_back() {
        let undo = vec![
            Undo::Delete { name: "br0".into() },
            Undo::DelAddr {
                name: "br0".into(),
                address: "192.0.2.1".parse().unwrap(),
                prefix: 24,
            },
            Undo::Mac {
                name: "v0".into(),
                mac: [2, 0, 0, 0, 0, 1],
            },
        ];
        let json = serde_json::to_string(&undo).unwrap();
        assert!(json.contains(r#""undo":"del_addr""#), "{json}");
        let back: Vec<Undo> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, undo);
    }
}
