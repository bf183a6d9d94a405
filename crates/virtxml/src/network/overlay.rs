//! Vireo's VXLAN overlay (OpenStack's tunnel bridge, br-tun): an element
//! in Vireo's own network namespace, as libvirt puts application data in
//! namespaces of their own:
//!
//! ```xml
//! <network xmlns:vireo='urn:x-vireo:network:1'>
//!   ...
//!   <vireo:overlay vni='42' port='4789' dev='eth1'>
//!     <vireo:remote address='198.51.100.2'/>
//!   </vireo:overlay>
//! </network>
//! ```
//!
//! The prefix is the writer's to choose; the namespace is what names the
//! element, declared on the element itself or on `network`.

use std::net::IpAddr;

use crate::devices::interface::validate_ifname;
use crate::error::Error;
use crate::node::{parse_number, Ctx, Node};
use crate::raw::XmlWriter;

/// Vireo's network XML namespace.
pub const NETWORK_NAMESPACE: &str = "urn:x-vireo:network:1";

/// VXLAN's IANA port, the default.
pub const DEFAULT_PORT: u16 = 4789;

/// Largest VNI: 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Most remote peers one overlay may list (each is one flooding entry,
/// and every broadcast is copied to each).
pub const MAX_REMOTES: usize = 1024;

/// A VXLAN overlay carried by the network's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The VXLAN network identifier, 1 to 2^24 - 1.
    pub vni: u32,
    /// The UDP port.
    pub port: u16,
    /// The underlay device the tunnel's packets leave through.
    pub dev: Option<String>,
    /// The local tunnel address (the kernel picks one by route when
    /// absent).
    pub local: Option<IpAddr>,
    /// The other hosts' tunnel addresses: broadcasts and unknown
    /// destinations are sent to each.
    pub remotes: Vec<IpAddr>,
}

/// The namespace URI that element or attribute prefix `prefix` (`None`:
/// the default namespace) is bound to on `node` or on the document root
/// `root_decls`.
fn namespace_of<'a>(
    node: &Node<'a>,
    prefix: Option<&str>,
    root_decls: &'a [(String, String)],
) -> Option<&'a str> {
    let decl = match prefix {
        Some(p) => format!("xmlns:{p}"),
        None => "xmlns".to_string(),
    };
    node.attr(&decl).or_else(|| {
        root_decls
            .iter()
            .find(|(k, _)| *k == decl)
            .map(|(_, v)| v.as_str())
    })
}

/// The local name of `node` when it is in Vireo's network namespace.
pub(crate) fn vireo_local_name<'a>(
    node: &Node<'a>,
    root_decls: &'a [(String, String)],
) -> Option<&'a str> {
    let (prefix, local) = match node.name().split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, node.name()),
    };
    (namespace_of(node, prefix, root_decls) == Some(NETWORK_NAMESPACE)).then_some(local)
}

fn xmlns_attrs<'a>(node: &Node<'a>) -> Vec<&'a str> {
    node.el
        .attrs
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| *k == "xmlns" || k.starts_with("xmlns:"))
        .collect()
}

/// A tunnel address: a unicast address a host can have.
fn check_tunnel_address(addr: IpAddr) -> Result<(), String> {
    let bad = match addr {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast() || a.is_loopback(),
    };
    if bad {
        return Err(format!(
            "{addr} is not a unicast address another host can have"
        ));
    }
    Ok(())
}

fn parse_address(node: &Node<'_>, what: &str, value: &str) -> Result<IpAddr, Error> {
    let addr: IpAddr = value
        .trim()
        .parse()
        .map_err(|_| node.refuse(format!("{what} '{value}' is not an IP address")))?;
    check_tunnel_address(addr).map_err(|e| node.refuse(format!("{what}: {e}")))?;
    Ok(addr)
}

pub(crate) fn parse_overlay(
    node: &Node<'_>,
    ctx: &mut Ctx,
    root_decls: &[(String, String)],
) -> Result<Overlay, Error> {
    let mut known = xmlns_attrs(node);
    known.extend(["vni", "port", "dev", "local"]);
    node.check_attrs(ctx, &known);
    let vni_text = node.need("vni")?;
    let vni: u32 = parse_number(node, "vni", vni_text)?;
    if !(1..=MAX_VNI).contains(&vni) {
        return Err(node.refuse(format!("vni {vni} is outside 1-{MAX_VNI} (24 bits)")));
    }
    let port = match node.attr("port") {
        Some(p) => {
            let port: u16 = parse_number(node, "port", p)?;
            if port == 0 {
                return Err(node.refuse("port 0 is not a UDP port a tunnel can use"));
            }
            port
        }
        None => DEFAULT_PORT,
    };
    let dev = match node.attr("dev") {
        Some(d) => {
            validate_ifname(d).map_err(|e| node.refuse(format!("dev: {e}")))?;
            Some(d.to_string())
        }
        None => None,
    };
    let local = match node.attr("local") {
        Some(l) => Some(parse_address(node, "local", l)?),
        None => None,
    };
    // The children see the overlay's own declarations before the root's.
    let scope: Vec<(String, String)> = node
        .el
        .attrs
        .iter()
        .filter(|(k, _)| k == "xmlns" || k.starts_with("xmlns:"))
        .chain(root_decls)
        .cloned()
        .collect();
    let mut remotes: Vec<IpAddr> = Vec::new();
    for child in node.children() {
        let c = child.node();
        if vireo_local_name(&c, &scope) != Some("remote") {
            return Err(c.refuse(format!(
                "<{}> is not supported inside an overlay: it holds <remote address=...> elements in namespace {NETWORK_NAMESPACE}",
                c.name()
            )));
        }
        if remotes.len() >= MAX_REMOTES {
            return Err(c.refuse(format!("an overlay has at most {MAX_REMOTES} remotes")));
        }
        let mut known = xmlns_attrs(&c);
        known.push("address");
        c.leaf(ctx, &known)?;
        let addr = parse_address(&c, "address", c.need("address")?)?;
        if remotes.contains(&addr) {
            return Err(c.refuse(format!("remote {addr} is listed twice")));
        }
        if let Some(first) = remotes.first().copied().or(local) {
            if first.is_ipv4() != addr.is_ipv4() {
                return Err(c.refuse(format!(
                    "remote {addr} is not of the same address family as {first}: one tunnel is IPv4 or IPv6"
                )));
            }
        }
        if Some(addr) == local {
            return Err(c.refuse(format!("remote {addr} is the local address")));
        }
        remotes.push(addr);
    }
    if remotes.is_empty() {
        return Err(node.refuse(
            "an overlay needs at least one <remote address=...>: with none, nothing would be sent to another host",
        ));
    }
    Ok(Overlay {
        vni,
        port,
        dev,
        local,
        remotes,
    })
}

impl Overlay {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let vni = self.vni.to_string();
        let port = self.port.to_string();
        let local = self.local.map(|l| l.to_string());
        let mut attrs = vec![
            ("xmlns:vireo", NETWORK_NAMESPACE),
            ("vni", vni.as_str()),
            ("port", port.as_str()),
        ];
        if let Some(d) = &self.dev {
            attrs.push(("dev", d));
        }
        if let Some(l) = &local {
            attrs.push(("local", l));
        }
        w.open("vireo:overlay", &attrs);
        for r in &self.remotes {
            w.empty("vireo:remote", &[("address", &r.to_string())]);
        }
        w.close("vireo:overlay");
    }
}

#[cfg(test)]
mod tests {
    use crate::network::Network;

    fn net(overlay: &str) -> Result<Network, crate::Error> {
        Network::parse(&format!(
            "<network><name>o</name><bridge name='vbr-o'/>{overlay}</network>"
        ))
        .map(|p| p.network)
    }

    const NS: &str = "xmlns:vireo='urn:x-vireo:network:1'";

    #[test]
    fn an_overlay_is_read_and_written_back() {
        let n = net(&format!(
            "<vireo:overlay {NS} vni='42' dev='eth1'>\
             <vireo:remote address='198.51.100.2'/><vireo:remote address='198.51.100.3'/>\
             </vireo:overlay>"
        ))
        .unwrap();
        let o = n.overlay.clone().unwrap();
        assert_eq!((o.vni, o.port, o.dev.as_deref()), (42, 4789, Some("eth1")));
        assert_eq!(o.remotes.len(), 2);
        let xml = n.to_xml();
        assert!(
            xml.contains("<vireo:overlay xmlns:vireo='urn:x-vireo:network:1' vni='42' port='4789' dev='eth1'>"),
            "{xml}"
        );
        assert_eq!(Network::parse(&xml).unwrap().network, n);

        // Any prefix, declared on the root; or the default namespace.
        let p = Network::parse(
            "<network xmlns:v='urn:x-vireo:network:1'><name>o</name>\
             <v:overlay vni='7' port='8472' local='198.51.100.1'><v:remote address='198.51.100.9'/></v:overlay></network>",
        )
        .unwrap();
        let o = p.network.overlay.unwrap();
        assert_eq!((o.vni, o.port), (7, 8472));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let d = net(
            "<overlay xmlns='urn:x-vireo:network:1' vni='9'><remote address='2001:db8::2'/></overlay>",
        )
        .unwrap();
        assert_eq!(d.overlay.unwrap().remotes[0].to_string(), "2001:db8::2");
    }

    #[test]
    fn bad_overlays_are_refused_in_one_line() {
        let cases = [
            (format!("<vireo:overlay {NS}><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "vni="),
            (format!("<vireo:overlay {NS} vni='0'><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "outside"),
            (format!("<vireo:overlay {NS} vni='16777216'><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "outside"),
            (format!("<vireo:overlay {NS} vni='x'><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "not a valid number"),
            (format!("<vireo:overlay {NS} vni='1' port='0'><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "port 0"),
            (format!("<vireo:overlay {NS} vni='1' port='65536'><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "port"),
            (format!("<vireo:overlay {NS} vni='1' dev='a/b'><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "dev"),
            (format!("<vireo:overlay {NS} vni='1'/>"), "at least one"),
            (format!("<vireo:overlay {NS} vni='1'><vireo:remote address='nope'/></vireo:overlay>"), "not an IP address"),
            (format!("<vireo:overlay {NS} vni='1'><vireo:remote address='224.0.0.1'/></vireo:overlay>"), "unicast"),
            (format!("<vireo:overlay {NS} vni='1'><vireo:remote address='0.0.0.0'/></vireo:overlay>"), "unicast"),
            (format!("<vireo:overlay {NS} vni='1'><vireo:remote address='198.51.100.2'/><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "twice"),
            (format!("<vireo:overlay {NS} vni='1'><vireo:remote address='198.51.100.2'/><vireo:remote address='2001:db8::1'/></vireo:overlay>"), "family"),
            (format!("<vireo:overlay {NS} vni='1' local='198.51.100.2'><vireo:remote address='198.51.100.2'/></vireo:overlay>"), "local address"),
            (format!("<vireo:overlay {NS} vni='1'><vireo:peer address='198.51.100.2'/></vireo:overlay>"), "not supported inside an overlay"),
            (format!("<vireo:overlay {NS} vni='1'><vireo:remote address='198.51.100.2'/></vireo:overlay><vireo:overlay {NS} vni='2'><vireo:remote address='198.51.100.3'/></vireo:overlay>"), "more than once"),
            // The prefix bound to another namespace is not Vireo's.
            ("<vireo:overlay xmlns:vireo='urn:other' vni='1'/>".to_string(), "not supported"),
        ];
        for (xml, want) in cases {
            let e = net(&xml).unwrap_err().to_string();
            assert!(e.contains(want), "{xml}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // A host bridge is not Vireo's to add a tunnel to.
        let e = Network::parse(&format!(
            "<network><name>b</name><forward mode='bridge'/><bridge name='br0'/>\
             <vireo:overlay {NS} vni='1'><vireo:remote address='198.51.100.2'/></vireo:overlay></network>"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("forward mode 'bridge'"), "{e}");
    }
}
