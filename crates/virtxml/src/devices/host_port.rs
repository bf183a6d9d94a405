//! How a NIC's host port is set up beyond its kind: the macvtap mode of
//! a `type='direct'` NIC (`source mode=`) and the VLAN of a bridge port
//! (`vlan/tag`).

use crate::error::Error;
use crate::node::{Ctx, Node};

/// How a `type='direct'` NIC's macvtap shares its host device, as
/// libvirt's `source mode=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectMode {
    /// Guests on the same device reach each other inside the host.
    Bridge,
    /// Every frame goes out to the switch, which must reflect it back
    /// (libvirt's default).
    Vepa,
    /// Like vepa, but frames reflected back to another macvtap of the
    /// same device are dropped.
    Private,
    /// The device is given to this one guest.
    Passthrough,
}

impl DirectMode {
    /// libvirt's name for the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            DirectMode::Bridge => "bridge",
            DirectMode::Vepa => "vepa",
            DirectMode::Private => "private",
            DirectMode::Passthrough => "passthrough",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<DirectMode> {
        Some(match s {
            "bridge" => DirectMode::Bridge,
            "vepa" => DirectMode::Vepa,
            "private" => DirectMode::Private,
            "passthrough" => DirectMode::Passthrough,
            _ => return None,
        })
    }
}

/// Largest 802.1Q VLAN id (4095 is reserved).
pub const MAX_VLAN_ID: u16 = 4094;

/// `<vlan><tag id='N'/></vlan>`: one tag, the port's untagged VLAN.
pub(crate) fn parse_vlan(node: &Node<'_>, ctx: &mut Ctx) -> Result<u16, Error> {
    node.check_attrs(ctx, &["trunk"]);
    if let Some(t) = node.attr("trunk") {
        if t != "no" {
            return Err(node.refuse(format!(
                "trunk='{t}' is not supported: a NIC is an untagged member of one VLAN"
            )));
        }
    }
    let mut id = None;
    for child in node.children() {
        let c = child.node();
        if c.name() != "tag" {
            return Err(c.refuse(format!("<{}> inside <vlan> is not supported", c.name())));
        }
        if id.is_some() {
            return Err(c.refuse(
                "a second <tag> needs trunk mode, which is not supported: a NIC is an untagged member of one VLAN",
            ));
        }
        c.leaf(ctx, &["id", "nativeMode"])?;
        if let Some(m) = c.attr("nativeMode") {
            return Err(c.refuse(format!(
                "nativeMode='{m}' is not supported: it applies to trunk ports"
            )));
        }
        let text = c.need("id")?;
        let n: u16 = text
            .trim()
            .parse()
            .map_err(|_| c.refuse(format!("VLAN id '{text}' is not a number")))?;
        if !(1..=MAX_VLAN_ID).contains(&n) {
            return Err(c.refuse(format!("VLAN id {n} is outside 1-{MAX_VLAN_ID}")));
        }
        id = Some(n);
    }
    id.ok_or_else(|| node.refuse("<vlan> needs a <tag id=.../>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::interface::{parse_interface, Interface, InterfaceKind};
    use crate::raw::XmlWriter;
    use crate::tree::read;

    fn iface(xml: &str) -> Result<Interface, Error> {
        let el = read(xml).unwrap();
        parse_interface(
            &Node::root(&el, "/domain/devices/interface[1]"),
            &mut Ctx::default(),
        )
    }

    #[test]
    fn direct_modes_and_default() {
        let i = iface("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>")
            .unwrap();
        assert_eq!(
            i.kind,
            InterfaceKind::Direct {
                dev: "eth0".into(),
                mode: DirectMode::Bridge
            }
        );
        let i = iface("<interface type='direct'><source dev='eth0'/></interface>").unwrap();
        assert_eq!(
            i.kind,
            InterfaceKind::Direct {
                dev: "eth0".into(),
                mode: DirectMode::Vepa
            }
        );
        for m in ["bridge", "vepa", "private", "passthrough"] {
            let xml = format!(
                "<interface type='direct'><source dev='v0' mode='{m}'/>\
                 <mac address='52:54:00:00:00:09'/></interface>"
            );
            let i = iface(&xml).unwrap();
            let mut w = XmlWriter::default();
            i.write(&mut w);
            let out = w.finish();
            assert!(
                out.contains(&format!("<source dev='v0' mode='{m}'/>")),
                "{out}"
            );
            assert_eq!(iface(&out).unwrap(), i);
        }
    }

    #[test]
    fn direct_refusals_are_one_line() {
        let no_source = iface("<interface type='direct'/>").unwrap_err().to_string();
        assert!(no_source.contains("needs <source dev=...>"), "{no_source}");
        let no_dev = iface("<interface type='direct'><source mode='bridge'/></interface>")
            .unwrap_err()
            .to_string();
        assert!(no_dev.contains("dev"), "{no_dev}");
        let bad_mode =
            iface("<interface type='direct'><source dev='eth0' mode='fast'/></interface>")
                .unwrap_err()
                .to_string();
        assert!(
            bad_mode.contains("mode 'fast' is not supported"),
            "{bad_mode}"
        );
        for e in [no_source, no_dev, bad_mode] {
            assert!(!e.contains('\n'), "{e}");
        }
        assert!(
            iface("<interface type='direct'><source dev='a/b' mode='bridge'/></interface>")
                .is_err()
        );
    }

    #[test]
    fn a_vlan_tag_on_bridge_and_network_nics() {
        let i = iface(
            "<interface type='network'><source network='n'/><vlan><tag id='42'/></vlan></interface>",
        )
        .unwrap();
        assert_eq!(i.vlan, Some(42));
        let mut w = XmlWriter::default();
        i.write(&mut w);
        let out = w.finish();
        assert!(out.contains("<tag id='42'/>"), "{out}");
        assert_eq!(iface(&out).unwrap(), i);
        let b = iface(
            "<interface type='bridge'><source bridge='br0'/><vlan trunk='no'><tag id='4094'/></vlan></interface>",
        )
        .unwrap();
        assert_eq!(b.vlan, Some(4094));
        for (bad, want) in [
            ("<interface type='direct'><source dev='eth0'/><vlan><tag id='5'/></vlan></interface>", "VLAN device"),
            ("<interface type='ethernet'><vlan><tag id='5'/></vlan></interface>", "type='ethernet'"),
            ("<interface type='bridge'><source bridge='b'/><vlan><tag id='0'/></vlan></interface>", "outside"),
            ("<interface type='bridge'><source bridge='b'/><vlan><tag id='4095'/></vlan></interface>", "outside"),
            ("<interface type='bridge'><source bridge='b'/><vlan><tag id='x'/></vlan></interface>", "not a number"),
            ("<interface type='bridge'><source bridge='b'/><vlan/></interface>", "needs a <tag"),
            ("<interface type='bridge'><source bridge='b'/><vlan trunk='yes'><tag id='1'/><tag id='2'/></vlan></interface>", "trunk"),
            ("<interface type='bridge'><source bridge='b'/><vlan><tag id='1'/><tag id='2'/></vlan></interface>", "second <tag>"),
            ("<interface type='bridge'><source bridge='b'/><vlan><tag id='1' nativeMode='tagged'/></vlan></interface>", "nativeMode"),
        ] {
            let e = iface(bad).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains('\n'), "{bad}: {e}");
        }
    }
}
