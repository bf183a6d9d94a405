//! Host links through rtnetlink: bridges, veth pairs, VLANs, bonds,
//! macvtap and VXLAN devices, their addresses, routes and VXLAN flood
//! entries, all made by talking NETLINK_ROUTE directly, never by running
//! `ip`.
//!
//! [`Netlink`] is one blocking socket; each call sends one request and
//! waits (at most 5 s) for the kernel's acknowledgement or dump, so the
//! daemon can use it from any blocking context. Names are checked by
//! [`valid_name`] before any system call. Every error is a [`LinkError`]
//! whose message names the operation and the interface, and a kernel
//! that lacks a device type (VLAN without 8021q, bonding) says so.
//!
//! The messages are built by hand (`msg.rs`): the handful of attributes
//! needed here is smaller than the API surface of a netlink crate, and
//! every length from the kernel is checked where it is read.
//!
//! [`sysctl`] holds the /proc/sys/net writes a routed network needs; the
//! VLANs of bridge ports are set through the AF_BRIDGE messages of
//! `bridge_vlan`.

mod bridge_vlan;
mod msg;
mod sock;
pub mod sysctl;
#[cfg(test)]
mod tests;

use msg::{attrs, get_str, get_u32, Msg};
use sock::{Socket, Want};
use std::io;
use std::net::IpAddr;

pub use bridge_vlan::PortVlan;
pub use sysctl::{set_ipv4_forwarding, set_sysctl};

/// Why a link operation failed. Each message is one line naming the
/// operation and interface.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The name cannot be an interface name; nothing was sent.
    #[error("invalid interface name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    /// An argument other than a name is out of range; nothing was sent.
    #[error("{op}: {why}")]
    InvalidArgument { op: String, why: String },
    /// The interface the operation needs does not exist.
    #[error("{op}: no such interface {name:?}")]
    NotFound { op: String, name: String },
    /// The kernel has no support for this kind of device.
    #[error("{op}: this kernel has no support for {kind} devices{module}")]
    Unsupported {
        op: String,
        kind: &'static str,
        module: &'static str,
    },
    /// The kernel lacks a feature the operation needs.
    #[error("{op}: this kernel has no {feature}")]
    NoFeature { op: String, feature: &'static str },
    /// The NETLINK_ROUTE socket could not be opened.
    #[error("opening the rtnetlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel refused, timed out or answered nonsense.
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
}

impl LinkError {
    fn kernel(op: String, source: io::Error) -> LinkError {
        LinkError::Kernel { op, source }
    }

    /// The kernel's errno, when the kernel refused.
    pub fn errno(&self) -> Option<i32> {
        match self {
            LinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Check that `name` can be a Linux interface name: 1 to 15 bytes, no
/// '/', ':' or whitespace, not "." or "..".
pub fn valid_name(name: &str) -> Result<(), LinkError> {
    let bad = |why| {
        Err(LinkError::InvalidName {
            name: name.to_owned(),
            why,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 15 {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("\".\" and \"..\" are reserved");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    // The kernel's dev_valid_name also refuses ':' (alias syntax).
    if name.contains(':') {
        return bad("contains ':'");
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("contains whitespace or a control character");
    }
    Ok(())
}

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// The device kind ("bridge", "veth", "tun", "vlan", "bond",
    /// "macvtap", "vxlan", ...); `None` for plain devices such as `lo`.
    pub kind: Option<String>,
    /// Index of the bridge or bond this link is enslaved to.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub mtu: u32,
    /// The hardware address, when it is an Ethernet one.
    pub mac: Option<[u8; 6]>,
}

/// Settings for a new bridge.
#[derive(Debug, Clone, Default)]
pub struct BridgeOptions {
    /// Run the spanning tree protocol.
    pub stp: bool,
    /// Forward delay in milliseconds (the kernel keeps centiseconds;
    /// with STP on it must lie within 2 to 30 s).
    pub forward_delay_ms: u32,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
}

/// Bonding policies, as the kernel numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondMode {
    BalanceRr = 0,
    ActiveBackup = 1,
    BalanceXor = 2,
    Broadcast = 3,
    Ieee8023ad = 4,
    BalanceTlb = 5,
    BalanceAlb = 6,
}

/// Settings for a new bond.
#[derive(Debug, Clone)]
pub struct BondOptions {
    pub mode: BondMode,
    /// Link monitoring interval; 0 turns MII monitoring off.
    pub miimon_ms: u32,
}

/// How a macvtap device shares its parent with its siblings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    Bridge,
    Vepa,
    Private,
    Passthru,
}

impl MacvlanMode {
    fn bits(self) -> u32 {
        match self {
            MacvlanMode::Private => 1,
            MacvlanMode::Vepa => 2,
            MacvlanMode::Bridge => 4,
            MacvlanMode::Passthru => 8,
        }
    }
}

/// Settings for a new VXLAN device.
#[derive(Debug, Clone)]
pub struct VxlanOptions {
    /// VXLAN network identifier, 24 bits.
    pub vni: u32,
    /// UDP destination port (4789 is IANA's).
    pub port: u16,
    pub local: Option<IpAddr>,
    /// Multicast group for flooding; `None` means unicast peers added
    /// with [`Netlink::add_fdb_remote`].
    pub group: Option<IpAddr>,
    /// Underlay device.
    pub dev: Option<String>,
    /// Learn remote MAC addresses from received packets.
    pub learning: bool,
}

// Attribute numbers from <linux/if_link.h>, <linux/if_addr.h>,
// <linux/rtnetlink.h> and <linux/neighbour.h>.
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_BR_FORWARD_DELAY: u16 = 1;
const IFLA_BR_STP_STATE: u16 = 5;
const VETH_INFO_PEER: u16 = 1;
const IFLA_VLAN_ID: u16 = 1;
const IFLA_BOND_MODE: u16 = 1;
const IFLA_BOND_MIIMON: u16 = 3;
const IFLA_MACVLAN_MODE: u16 = 1;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_GROUP: u16 = 2;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_GROUP6: u16 = 16;
const IFLA_VXLAN_LOCAL6: u16 = 17;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

// Netlink flags and address families, typed as the headers carry them
// (libc has them as c_int).
const REQ: u16 = 0x1;
const ACK: u16 = 0x4;
const DUMP: u16 = 0x300;
const CREATE: u16 = 0x400 | 0x200; // NLM_F_CREATE | NLM_F_EXCL
const APPEND: u16 = 0x800 | 0x400; // NLM_F_APPEND | NLM_F_CREATE
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const AF_BRIDGE: u8 = 7;

/// `struct ifinfomsg` for link `index` with `flags` changed under `change`.
fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

fn check_prefix(op: &str, ip: IpAddr, prefix: u8) -> Result<(), LinkError> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(LinkError::InvalidArgument {
            op: op.to_owned(),
            why: format!("prefix length {prefix} is over {max}"),
        });
    }
    Ok(())
}

fn parse_ip(data: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(data) {
        Some(IpAddr::from(b))
    } else {
        <[u8; 16]>::try_from(data).ok().map(IpAddr::from)
    }
}

fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    let hdr = payload.get(..16)?;
    let index = u32::from_ne_bytes(hdr[4..8].try_into().ok()?);
    let flags = u32::from_ne_bytes(hdr[8..12].try_into().ok()?);
    let mut info = LinkInfo {
        index,
        name: String::new(),
        kind: None,
        master: None,
        up: flags & libc::IFF_UP as u32 != 0,
        mtu: 0,
        mac: None,
    };
    for (ty, data) in attrs(&payload[16..]) {
        match ty {
            IFLA_IFNAME => info.name = get_str(data)?,
            IFLA_MTU => info.mtu = get_u32(data)?,
            IFLA_ADDRESS => info.mac = data.try_into().ok(),
            IFLA_MASTER => info.master = get_u32(data).filter(|&m| m != 0),
            IFLA_LINKINFO => {
                info.kind = attrs(data)
                    .find(|&(t, _)| t == IFLA_INFO_KIND)
                    .and_then(|(_, d)| get_str(d));
            }
            _ => {}
        }
    }
    Some(info)
}

/// One NETLINK_ROUTE socket in the calling thread's network namespace.
pub struct Netlink {
    sock: Socket,
}

impl Netlink {
    /// Open the socket (blocking, 5 s receive timeout).
    pub fn open() -> Result<Netlink, LinkError> {
        Ok(Netlink {
            sock: Socket::open().map_err(LinkError::Socket)?,
        })
    }

    /// Index of interface `name`, or `None` when there is none.
    pub fn index(&mut self, name: &str) -> Result<Option<u32>, LinkError> {
        Ok(self.link(name)?.map(|l| l.index))
    }

    /// Every link in this network namespace.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>, LinkError> {
        let mut m = Msg::new(libc::RTM_GETLINK, REQ | DUMP);
        m.header(&ifinfomsg(0, 0, 0));
        let op = || "listing links".to_owned();
        let answers = self
            .sock
            .exchange(m, Want::Dump)
            .map_err(|e| LinkError::kernel(op(), e))?;
        answers
            .iter()
            .map(|p| {
                parse_link(p).ok_or_else(|| {
                    LinkError::kernel(
                        op(),
                        io::Error::new(io::ErrorKind::InvalidData, "malformed link message"),
                    )
                })
            })
            .collect()
    }

    /// Link `name`, or `None` when there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        valid_name(name)?;
        let mut m = Msg::new(libc::RTM_GETLINK, REQ);
        m.header(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        let op = || format!("looking up {name}");
        match self.sock.exchange(m, Want::One) {
            Ok(a) => match a.first().and_then(|p| parse_link(p)) {
                Some(l) => Ok(Some(l)),
                None => Err(LinkError::kernel(
                    op(),
                    io::Error::new(io::ErrorKind::InvalidData, "malformed link message"),
                )),
            },
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(LinkError::kernel(op(), e)),
        }
    }

    /// The kind-specific attributes (IFLA_INFO_DATA) of link `name`.
    #[cfg(test)]
    fn info_data(&mut self, name: &str) -> Result<Vec<(u16, Vec<u8>)>, LinkError> {
        let op = format!("looking up {name}");
        self.need(&op, name)?;
        let mut m = Msg::new(libc::RTM_GETLINK, REQ);
        m.header(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        let a = self
            .sock
            .exchange(m, Want::One)
            .map_err(|e| LinkError::kernel(op, e))?;
        let mut out = Vec::new();
        for p in a.iter().filter_map(|p| p.get(16..)) {
            for (_, li) in attrs(p).filter(|&(t, _)| t == IFLA_LINKINFO) {
                for (_, d) in attrs(li).filter(|&(t, _)| t == IFLA_INFO_DATA) {
                    out.extend(attrs(d).map(|(t, v)| (t, v.to_vec())));
                }
            }
        }
        Ok(out)
    }

    /// Index of `name`, or NotFound for `op`.
    fn need(&mut self, op: &str, name: &str) -> Result<u32, LinkError> {
        valid_name(name)?;
        self.index(name)?.ok_or_else(|| LinkError::NotFound {
            op: op.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Send a RTM_NEWLINK creating `name` of `kind`; `extra` adds the
    /// top-level attributes, `data` the kind-specific ones.
    fn create(
        &mut self,
        op: &str,
        name: &str,
        kind: &'static str,
        extra: impl FnOnce(&mut Msg),
        data: impl FnOnce(&mut Msg),
    ) -> Result<(), LinkError> {
        let mut m = Msg::new(libc::RTM_NEWLINK, REQ | ACK | CREATE);
        m.header(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        extra(&mut m);
        let li = m.begin_nest(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, kind);
        let d = m.begin_nest(IFLA_INFO_DATA);
        data(&mut m);
        m.end_nest(d);
        m.end_nest(li);
        match self.sock.exchange(m, Want::Ack) {
            Ok(_) => Ok(()),
            // rtnetlink answers EOPNOTSUPP for a kind no module provides.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(LinkError::Unsupported {
                op: op.to_owned(),
                kind,
                module: match kind {
                    "vlan" => " (module 8021q)",
                    "bond" => " (module bonding)",
                    "macvtap" => " (module macvtap)",
                    "vxlan" => " (module vxlan)",
                    "bridge" => " (module bridge)",
                    "veth" => " (module veth)",
                    "ifb" => " (module ifb)",
                    _ => "",
                },
            }),
            Err(e) => Err(LinkError::kernel(op.to_owned(), e)),
        }
    }

    /// Create bridge `name`.
    pub fn create_bridge(&mut self, name: &str, opts: &BridgeOptions) -> Result<(), LinkError> {
        valid_name(name)?;
        let op = format!("creating bridge {name}");
        self.create(
            &op,
            name,
            "bridge",
            |m| {
                if let Some(mtu) = opts.mtu {
                    m.attr_u32(IFLA_MTU, mtu);
                }
                if let Some(mac) = opts.mac {
                    m.attr(IFLA_ADDRESS, &mac);
                }
            },
            |m| {
                // The kernel counts bridge times in clock ticks of 1/100 s.
                m.attr_u32(IFLA_BR_FORWARD_DELAY, opts.forward_delay_ms / 10);
                m.attr_u32(IFLA_BR_STP_STATE, u32::from(opts.stp));
            },
        )
    }

    /// Create veth pair `name` <-> `peer`.
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<(), LinkError> {
        valid_name(name)?;
        valid_name(peer)?;
        let op = format!("creating veth pair {name}/{peer}");
        self.create(
            &op,
            name,
            "veth",
            |_| {},
            |m| {
                let p = m.begin_nest(VETH_INFO_PEER);
                m.header(&ifinfomsg(0, 0, 0));
                m.attr_str(IFLA_IFNAME, peer);
                m.end_nest(p);
            },
        )
    }

    /// Create VLAN `name` with tag `id` on `parent`.
    pub fn create_vlan(&mut self, name: &str, parent: &str, id: u16) -> Result<(), LinkError> {
        valid_name(name)?;
        let op = format!("creating vlan {name}");
        if !(1..=4094).contains(&id) {
            return Err(LinkError::InvalidArgument {
                op,
                why: format!("VLAN id {id} is outside 1..=4094"),
            });
        }
        let parent = self.need(&op, parent)?;
        self.create(
            &op,
            name,
            "vlan",
            |m| m.attr_u32(IFLA_LINK, parent),
            |m| m.attr_u16(IFLA_VLAN_ID, id),
        )
    }

    /// Create bond `name`.
    pub fn create_bond(&mut self, name: &str, opts: &BondOptions) -> Result<(), LinkError> {
        valid_name(name)?;
        let op = format!("creating bond {name}");
        self.create(
            &op,
            name,
            "bond",
            |_| {},
            |m| {
                m.attr_u8(IFLA_BOND_MODE, opts.mode as u8);
                m.attr_u32(IFLA_BOND_MIIMON, opts.miimon_ms);
            },
        )
    }

    /// Create macvtap `name` on `parent`; its character device is
    /// /dev/tapN, N being the new link's index.
    pub fn create_macvtap(
        &mut self,
        name: &str,
        parent: &str,
        mode: MacvlanMode,
        mac: Option<[u8; 6]>,
    ) -> Result<(), LinkError> {
        valid_name(name)?;
        let op = format!("creating macvtap {name}");
        let parent = self.need(&op, parent)?;
        self.create(
            &op,
            name,
            "macvtap",
            |m| {
                m.attr_u32(IFLA_LINK, parent);
                if let Some(mac) = mac {
                    m.attr(IFLA_ADDRESS, &mac);
                }
            },
            |m| m.attr_u32(IFLA_MACVLAN_MODE, mode.bits()),
        )
    }

    /// Create VXLAN device `name`.
    pub fn create_vxlan(&mut self, name: &str, opts: &VxlanOptions) -> Result<(), LinkError> {
        valid_name(name)?;
        let op = format!("creating vxlan {name}");
        let bad = |why: String| LinkError::InvalidArgument {
            op: op.clone(),
            why,
        };
        if opts.vni >= 1 << 24 {
            return Err(bad(format!("VNI {} does not fit 24 bits", opts.vni)));
        }
        if let (Some(l), Some(g)) = (opts.local, opts.group) {
            if l.is_ipv4() != g.is_ipv4() {
                return Err(bad(
                    "local and group addresses are of different families".into()
                ));
            }
        }
        if let Some(g) = opts.group {
            if !g.is_multicast() {
                return Err(bad(format!("group {g} is not a multicast address")));
            }
        }
        let dev = match &opts.dev {
            Some(d) => Some(self.need(&op, d)?),
            None => None,
        };
        self.create(
            &op,
            name,
            "vxlan",
            |_| {},
            |m| {
                m.attr_u32(IFLA_VXLAN_ID, opts.vni);
                // The port travels in network byte order.
                m.attr(IFLA_VXLAN_PORT, &opts.port.to_be_bytes());
                m.attr_u8(IFLA_VXLAN_LEARNING, u8::from(opts.learning));
                if let Some(d) = dev {
                    m.attr_u32(IFLA_VXLAN_LINK, d);
                }
                match opts.local {
                    Some(IpAddr::V4(a)) => m.attr(IFLA_VXLAN_LOCAL, &a.octets()),
                    Some(IpAddr::V6(a)) => m.attr(IFLA_VXLAN_LOCAL6, &a.octets()),
                    None => {}
                }
                match opts.group {
                    Some(IpAddr::V4(a)) => m.attr(IFLA_VXLAN_GROUP, &a.octets()),
                    Some(IpAddr::V6(a)) => m.attr(IFLA_VXLAN_GROUP6, &a.octets()),
                    None => {}
                }
            },
        )
    }

    /// Create IFB (intermediate functional block) device `name`: a queue
    /// that traffic redirected from another link's ingress passes through,
    /// so it can be shaped as if it were leaving.
    pub fn create_ifb(&mut self, name: &str) -> Result<(), LinkError> {
        valid_name(name)?;
        let op = format!("creating ifb {name}");
        self.create(&op, name, "ifb", |_| {}, |_| {})
    }

    /// Delete link `name`; [`LinkError::NotFound`] when it is absent.
    pub fn delete(&mut self, name: &str) -> Result<(), LinkError> {
        let op = format!("deleting {name}");
        let index = self.need(&op, name)?;
        let mut m = Msg::new(libc::RTM_DELLINK, REQ | ACK);
        m.header(&ifinfomsg(index, 0, 0));
        self.ack(&op, name, m)
    }

    /// Exchange `m` for an acknowledgement; ENODEV (the link vanished
    /// since its index was looked up) becomes NotFound.
    fn ack(&mut self, op: &str, name: &str, m: Msg) -> Result<(), LinkError> {
        match self.sock.exchange(m, Want::Ack) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Err(LinkError::NotFound {
                op: op.to_owned(),
                name: name.to_owned(),
            }),
            Err(e) => Err(LinkError::kernel(op.to_owned(), e)),
        }
    }

    /// Change link `name` with a RTM_NEWLINK carrying `attrs`.
    fn set(
        &mut self,
        op: &str,
        name: &str,
        flags: u32,
        change: u32,
        attrs: impl FnOnce(&mut Msg),
    ) -> Result<(), LinkError> {
        let index = self.need(op, name)?;
        let mut m = Msg::new(libc::RTM_NEWLINK, REQ | ACK);
        m.header(&ifinfomsg(index, flags, change));
        attrs(&mut m);
        self.ack(op, name, m)
    }

    /// Bring link `name` up or down.
    pub fn set_up(&mut self, name: &str, up: bool) -> Result<(), LinkError> {
        let op = format!("setting {name} {}", if up { "up" } else { "down" });
        let iff = libc::IFF_UP as u32;
        self.set(&op, name, if up { iff } else { 0 }, iff, |_| {})
    }

    /// Enslave `name` to bridge or bond `master`, or free it with `None`.
    pub fn set_master(&mut self, name: &str, master: Option<&str>) -> Result<(), LinkError> {
        let op = match master {
            Some(b) => format!("attaching {name} to {b}"),
            None => format!("detaching {name} from its master"),
        };
        let m = match master {
            Some(b) => self.need(&op, b)?,
            None => 0,
        };
        self.set(&op, name, 0, 0, |msg| msg.attr_u32(IFLA_MASTER, m))
    }

    /// Set the MTU of `name`.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<(), LinkError> {
        let op = format!("setting the MTU of {name} to {mtu}");
        self.set(&op, name, 0, 0, |m| m.attr_u32(IFLA_MTU, mtu))
    }

    /// Set the hardware address of `name`.
    pub fn set_mac(&mut self, name: &str, mac: [u8; 6]) -> Result<(), LinkError> {
        let op = format!("setting the MAC address of {name}");
        self.set(&op, name, 0, 0, |m| m.attr(IFLA_ADDRESS, &mac))
    }

    /// Add `addr`/`prefix` to `name`.
    pub fn add_address(&mut self, name: &str, addr: IpAddr, prefix: u8) -> Result<(), LinkError> {
        let op = format!("adding address {addr}/{prefix} to {name}");
        check_prefix(&op, addr, prefix)?;
        let index = self.need(&op, name)?;
        let mut m = Msg::new(libc::RTM_NEWADDR, REQ | ACK | CREATE);
        let mut h = [0u8; 8];
        h[0] = family(addr);
        h[1] = prefix;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        m.header(&h);
        let b = ip_bytes(addr);
        if addr.is_ipv4() {
            m.attr(IFA_LOCAL, &b);
        }
        m.attr(IFA_ADDRESS, &b);
        self.ack(&op, name, m)
    }

    /// Remove `addr`/`prefix` from `name`; [`LinkError::NotFound`] when
    /// the link is absent, the kernel's EADDRNOTAVAIL when the address is.
    pub fn del_address(&mut self, name: &str, addr: IpAddr, prefix: u8) -> Result<(), LinkError> {
        let op = format!("removing address {addr}/{prefix} from {name}");
        check_prefix(&op, addr, prefix)?;
        let index = self.need(&op, name)?;
        let mut m = Msg::new(libc::RTM_DELADDR, REQ | ACK);
        let mut h = [0u8; 8];
        h[0] = family(addr);
        h[1] = prefix;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        m.header(&h);
        let b = ip_bytes(addr);
        if addr.is_ipv4() {
            m.attr(IFA_LOCAL, &b);
        }
        m.attr(IFA_ADDRESS, &b);
        self.ack(&op, name, m)
    }

    /// The addresses of `name`, each with its prefix length.
    pub fn addresses(&mut self, name: &str) -> Result<Vec<(IpAddr, u8)>, LinkError> {
        let op = format!("listing addresses of {name}");
        let index = self.need(&op, name)?;
        let mut m = Msg::new(libc::RTM_GETADDR, REQ | DUMP);
        m.header(&[0u8; 8]);
        let answers = self
            .sock
            .exchange(m, Want::Dump)
            .map_err(|e| LinkError::kernel(op.clone(), e))?;
        let mut out = Vec::new();
        for p in &answers {
            let Some(h) = p.get(..8) else { continue };
            if u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) != index {
                continue;
            }
            // IFA_LOCAL is the interface's own address on point-to-point
            // links, where IFA_ADDRESS is the peer's.
            let mut local = None;
            let mut address = None;
            for (ty, d) in attrs(&p[8..]) {
                match ty {
                    IFA_LOCAL => local = parse_ip(d),
                    IFA_ADDRESS => address = parse_ip(d),
                    _ => {}
                }
            }
            if let Some(a) = local.or(address) {
                out.push((a, h[1]));
            }
        }
        Ok(out)
    }

    /// Add a route to `dest`/`prefix` in the main table, through gateway
    /// `via`, out of `dev`, or both.
    pub fn add_route(
        &mut self,
        dest: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
        dev: Option<&str>,
    ) -> Result<(), LinkError> {
        let op = format!("adding route to {dest}/{prefix}");
        check_prefix(&op, dest, prefix)?;
        let bad = |why: String| LinkError::InvalidArgument {
            op: op.clone(),
            why,
        };
        if via.is_none() && dev.is_none() {
            return Err(bad("neither a gateway nor a device given".into()));
        }
        if let Some(g) = via {
            if g.is_ipv4() != dest.is_ipv4() {
                return Err(bad(format!(
                    "gateway {g} is not of the destination's family"
                )));
            }
        }
        let host_bits = match dest {
            IpAddr::V4(a) => u32::from(a).checked_shl(u32::from(prefix)).unwrap_or(0) != 0,
            IpAddr::V6(a) => u128::from(a).checked_shl(u32::from(prefix)).unwrap_or(0) != 0,
        };
        if host_bits {
            return Err(bad("the destination has bits set beyond its prefix".into()));
        }
        let oif = match dev {
            Some(d) => Some(self.need(&op, d)?),
            None => None,
        };
        let mut m = Msg::new(libc::RTM_NEWROUTE, REQ | ACK | CREATE);
        let mut h = [0u8; 12];
        h[0] = family(dest);
        h[1] = prefix;
        h[4] = libc::RT_TABLE_MAIN;
        h[5] = libc::RTPROT_STATIC;
        // Without a gateway the destination is directly on the link.
        h[6] = if via.is_some() {
            libc::RT_SCOPE_UNIVERSE
        } else {
            libc::RT_SCOPE_LINK
        };
        h[7] = libc::RTN_UNICAST;
        m.header(&h);
        m.attr(RTA_DST, &ip_bytes(dest));
        if let Some(g) = via {
            m.attr(RTA_GATEWAY, &ip_bytes(g));
        }
        if let Some(i) = oif {
            m.attr_u32(RTA_OIF, i);
        }
        match dev {
            Some(d) => self.ack(&op, d, m),
            None => self
                .sock
                .exchange(m, Want::Ack)
                .map(drop)
                .map_err(|e| LinkError::kernel(op, e)),
        }
    }

    /// Append a flooding entry (all-zeros MAC) sending broadcast and
    /// unknown traffic of VXLAN device `vxlan` to `remote`.
    pub fn add_fdb_remote(&mut self, vxlan: &str, remote: IpAddr) -> Result<(), LinkError> {
        let op = format!("adding VXLAN peer {remote} to {vxlan}");
        let index = self.need(&op, vxlan)?;
        let mut m = Msg::new(libc::RTM_NEWNEIGH, REQ | ACK | APPEND);
        let mut h = [0u8; 12];
        h[0] = AF_BRIDGE;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        let state = libc::NUD_NOARP | libc::NUD_PERMANENT;
        h[8..10].copy_from_slice(&state.to_ne_bytes());
        // NTF_SELF: the entry belongs to the VXLAN device's own table.
        h[10] = libc::NTF_SELF;
        m.header(&h);
        m.attr(NDA_LLADDR, &[0; 6]);
        m.attr(NDA_DST, &ip_bytes(remote));
        self.ack(&op, vxlan, m)
    }

    /// The flooding peers (all-zeros MAC entries) of VXLAN device `vxlan`.
    pub fn fdb_remotes(&mut self, vxlan: &str) -> Result<Vec<IpAddr>, LinkError> {
        let op = format!("listing VXLAN peers of {vxlan}");
        let index = self.need(&op, vxlan)?;
        let mut m = Msg::new(libc::RTM_GETNEIGH, REQ | DUMP);
        let mut h = [0u8; 12];
        h[0] = AF_BRIDGE;
        m.header(&h);
        let answers = self
            .sock
            .exchange(m, Want::Dump)
            .map_err(|e| LinkError::kernel(op.clone(), e))?;
        let mut out = Vec::new();
        for p in &answers {
            let Some(h) = p.get(..12) else { continue };
            if u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) != index {
                continue;
            }
            let mut zero_mac = false;
            let mut dst = None;
            for (ty, d) in attrs(&p[12..]) {
                match ty {
                    NDA_LLADDR => zero_mac = d == [0; 6],
                    NDA_DST => dst = parse_ip(d),
                    _ => {}
                }
            }
            if let (true, Some(d)) = (zero_mac, dst) {
                out.push(d);
            }
        }
        Ok(out)
    }
}
