//! VLANs on a Linux bridge's ports (802.1Q filtering inside the bridge,
//! no VLAN devices): turning a bridge's VLAN filtering on, and making a
//! port an untagged member of one VLAN, its PVID, so frames from the guest
//! are classified into that VLAN and leave it untagged to the guest.
//!
//! The kernel does this only when built with CONFIG_BRIDGE_VLAN_FILTERING
//! (which needs 802.1Q support); without it, turning filtering on answers
//! EOPNOTSUPP, reported as [`LinkError::NoFeature`].

use super::msg::{attrs, get_str, Msg};
use super::sock::Want;
use super::{
    ifinfomsg, LinkError, Netlink, ACK, AF_BRIDGE, DUMP, IFLA_INFO_DATA, IFLA_INFO_KIND,
    IFLA_LINKINFO, REQ,
};

const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const RTEXT_FILTER_BRVLAN: u32 = 1 << 1;
/// `struct bridge_vlan_info` flags.
const BRIDGE_VLAN_INFO_PVID: u16 = 1 << 1;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 1 << 2;
/// The VLAN every port joins when it is added to a bridge (the bridge's
/// default_pvid).
const DEFAULT_PVID: u16 = 1;

/// One VLAN of a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortVlan {
    pub vid: u16,
    /// Untagged frames arriving on the port are classified into it.
    pub pvid: bool,
    /// Frames of it leave the port without a tag.
    pub untagged: bool,
}

/// `ifinfomsg` of family AF_BRIDGE for link `index`.
fn bridge_ifinfomsg(index: u32) -> [u8; 16] {
    let mut h = ifinfomsg(index, 0, 0);
    h[0] = AF_BRIDGE;
    h
}

/// `struct bridge_vlan_info` as the kernel lays it out.
fn vlan_info(flags: u16, vid: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[..2].copy_from_slice(&flags.to_ne_bytes());
    b[2..].copy_from_slice(&vid.to_ne_bytes());
    b
}

/// The RTM_NEWLINK turning VLAN filtering of bridge `index` on or off.
pub(super) fn vlan_filtering_msg(index: u32, on: bool) -> Msg {
    let mut m = Msg::new(libc::RTM_NEWLINK, REQ | ACK);
    m.header(&ifinfomsg(index, 0, 0));
    let li = m.begin_nest(IFLA_LINKINFO);
    m.attr_str(IFLA_INFO_KIND, "bridge");
    let d = m.begin_nest(IFLA_INFO_DATA);
    m.attr_u8(IFLA_BR_VLAN_FILTERING, u8::from(on));
    m.end_nest(d);
    m.end_nest(li);
    m
}

/// The AF_BRIDGE RTM_SETLINK (add) or RTM_DELLINK (remove) of VLAN `vid`
/// on bridge port `index`; added as PVID and untagged when `access`.
pub(super) fn port_vlan_msg(index: u32, vid: u16, add: bool, access: bool) -> Msg {
    let ty = if add {
        libc::RTM_SETLINK
    } else {
        libc::RTM_DELLINK
    };
    let mut m = Msg::new(ty, REQ | ACK);
    m.header(&bridge_ifinfomsg(index));
    let spec = m.begin_nest(IFLA_AF_SPEC);
    let flags = if access {
        BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED
    } else {
        0
    };
    m.attr(IFLA_BRIDGE_VLAN_INFO, &vlan_info(flags, vid));
    m.end_nest(spec);
    m
}

/// The VLANs in an AF_BRIDGE link message's IFLA_AF_SPEC.
pub(super) fn parse_port_vlans(payload: &[u8]) -> Vec<PortVlan> {
    let mut out = Vec::new();
    let Some(rest) = payload.get(16..) else {
        return out;
    };
    for (_, spec) in attrs(rest).filter(|&(t, _)| t == IFLA_AF_SPEC) {
        for (_, info) in attrs(spec).filter(|&(t, _)| t == IFLA_BRIDGE_VLAN_INFO) {
            let Ok(b) = <[u8; 4]>::try_from(info) else {
                continue;
            };
            let flags = u16::from_ne_bytes([b[0], b[1]]);
            out.push(PortVlan {
                vid: u16::from_ne_bytes([b[2], b[3]]),
                pvid: flags & BRIDGE_VLAN_INFO_PVID != 0,
                untagged: flags & BRIDGE_VLAN_INFO_UNTAGGED != 0,
            });
        }
    }
    out
}

fn check_vid(op: &str, vid: u16) -> Result<(), LinkError> {
    if !(1..=4094).contains(&vid) {
        return Err(LinkError::InvalidArgument {
            op: op.to_owned(),
            why: format!("VLAN id {vid} is outside 1..=4094"),
        });
    }
    Ok(())
}

impl Netlink {
    /// Whether bridge `name` filters VLANs.
    pub fn bridge_vlan_filtering(&mut self, name: &str) -> Result<bool, LinkError> {
        let op = format!("reading the VLAN filtering of {name}");
        self.need(&op, name)?;
        let mut m = Msg::new(libc::RTM_GETLINK, REQ);
        m.header(&ifinfomsg(0, 0, 0));
        m.attr_str(super::IFLA_IFNAME, name);
        let answers = self
            .sock
            .exchange(m, Want::One)
            .map_err(|e| LinkError::kernel(op.clone(), e))?;
        let mut kind = None;
        let mut on = false;
        for p in answers.iter().filter_map(|p| p.get(16..)) {
            for (_, li) in attrs(p).filter(|&(t, _)| t == IFLA_LINKINFO) {
                for (t, d) in attrs(li) {
                    match t {
                        IFLA_INFO_KIND => kind = get_str(d),
                        IFLA_INFO_DATA => {
                            on = attrs(d)
                                .find(|&(t, _)| t == IFLA_BR_VLAN_FILTERING)
                                .is_some_and(|(_, v)| v.first() == Some(&1));
                        }
                        _ => {}
                    }
                }
            }
        }
        if kind.as_deref() != Some("bridge") {
            return Err(LinkError::InvalidArgument {
                op,
                why: "it is not a bridge".into(),
            });
        }
        Ok(on)
    }

    /// Turns VLAN filtering of bridge `name` on or off.
    pub fn set_bridge_vlan_filtering(&mut self, name: &str, on: bool) -> Result<(), LinkError> {
        let op = format!(
            "turning VLAN filtering of bridge {name} {}",
            if on { "on" } else { "off" }
        );
        let index = self.need(&op, name)?;
        match self.sock.exchange(vlan_filtering_msg(index, on), Want::Ack) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Err(LinkError::NoFeature {
                op,
                feature:
                    "VLAN filtering on bridges (CONFIG_BRIDGE_VLAN_FILTERING, which needs 802.1Q)",
            }),
            Err(e) => Err(LinkError::kernel(op, e)),
        }
    }

    /// Makes bridge port `port` an untagged member of VLAN `vid` only: it
    /// joins `vid` as its PVID and leaves the default VLAN 1 (unless `vid`
    /// is 1). The bridge must filter VLANs.
    pub fn set_port_access_vlan(&mut self, port: &str, vid: u16) -> Result<(), LinkError> {
        let op = format!("putting {port} in VLAN {vid}");
        check_vid(&op, vid)?;
        let index = self.need(&op, port)?;
        self.ack(&op, port, port_vlan_msg(index, vid, true, true))?;
        if vid != DEFAULT_PVID {
            let op = format!("taking {port} out of VLAN {DEFAULT_PVID}");
            match self.ack(&op, port, port_vlan_msg(index, DEFAULT_PVID, false, false)) {
                // Not a member (the bridge's default_pvid is not 1).
                Err(LinkError::Kernel { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// The VLANs of bridge port `port`.
    pub fn port_vlans(&mut self, port: &str) -> Result<Vec<PortVlan>, LinkError> {
        let op = format!("listing the VLANs of {port}");
        let index = self.need(&op, port)?;
        let mut m = Msg::new(libc::RTM_GETLINK, REQ | DUMP);
        m.header(&bridge_ifinfomsg(0));
        m.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_BRVLAN);
        let answers = self
            .sock
            .exchange(m, Want::Dump)
            .map_err(|e| LinkError::kernel(op, e))?;
        Ok(answers
            .iter()
            .filter(|p| {
                p.get(4..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_ne_bytes)
                    == Some(index)
            })
            .flat_map(|p| parse_port_vlans(p))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::msg::split;

    fn nested(data: &[u8]) -> Vec<(u16, Vec<u8>)> {
        attrs(data).map(|(t, d)| (t, d.to_vec())).collect()
    }

    #[test]
    fn the_filtering_switch_is_a_bridge_linkinfo_attribute() {
        let bytes = vlan_filtering_msg(7, true).finish(1);
        let msgs = split(&bytes).unwrap();
        assert_eq!(msgs[0].ty, libc::RTM_NEWLINK);
        let p = msgs[0].payload;
        assert_eq!(u32::from_ne_bytes(p[4..8].try_into().unwrap()), 7);
        assert_eq!(p[0], 0, "family unspecified, as for any link change");
        let top = nested(&p[16..]);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, IFLA_LINKINFO);
        let li = nested(&top[0].1);
        assert_eq!(li[0], (IFLA_INFO_KIND, b"bridge\0".to_vec()));
        assert_eq!(li[1].0, IFLA_INFO_DATA);
        assert_eq!(nested(&li[1].1), vec![(IFLA_BR_VLAN_FILTERING, vec![1])]);
        let off = vlan_filtering_msg(7, false).finish(1);
        assert!(off.ends_with(&[5, 0, 7, 0, 0, 0, 0, 0]), "{off:?}");
    }

    #[test]
    fn a_port_vlan_is_an_af_bridge_vlan_info() {
        let bytes = port_vlan_msg(9, 42, true, true).finish(3);
        let msgs = split(&bytes).unwrap();
        assert_eq!(msgs[0].ty, libc::RTM_SETLINK);
        let flags = u16::from_ne_bytes(bytes[6..8].try_into().unwrap());
        assert_eq!(flags, REQ | ACK);
        let p = msgs[0].payload;
        assert_eq!(p[0], AF_BRIDGE);
        assert_eq!(u32::from_ne_bytes(p[4..8].try_into().unwrap()), 9);
        let top = nested(&p[16..]);
        assert_eq!(top[0].0, IFLA_AF_SPEC);
        let info = nested(&top[0].1);
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].0, IFLA_BRIDGE_VLAN_INFO);
        // flags PVID | UNTAGGED = 6, then vid 42, native-endian u16s.
        let mut want = 6u16.to_ne_bytes().to_vec();
        want.extend_from_slice(&42u16.to_ne_bytes());
        assert_eq!(info[0].1, want);
        // Read back as a dump would show it.
        assert_eq!(
            parse_port_vlans(p),
            vec![PortVlan {
                vid: 42,
                pvid: true,
                untagged: true
            }]
        );

        let del = port_vlan_msg(9, 1, false, false).finish(4);
        let msgs = split(&del).unwrap();
        assert_eq!(msgs[0].ty, libc::RTM_DELLINK);
        assert_eq!(
            parse_port_vlans(msgs[0].payload),
            vec![PortVlan {
                vid: 1,
                pvid: false,
                untagged: false
            }]
        );
        assert!(parse_port_vlans(&[0u8; 3]).is_empty());
    }
}
