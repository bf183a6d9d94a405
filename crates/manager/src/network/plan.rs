//! What a network definition asks of the host, worked out before anything
//! is touched: the bridge, its addresses, the firewall rules and the
//! DHCP/DNS server's configuration. Pure, so every mapping from libvirt's
//! XML to host state is tested without a host.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use netvirt::dnsmasq;
use netvirt::nft;
use virtxml::network::forward::ForwardMode;
use virtxml::Network;

/// The host state one network needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The network's name.
    pub network: String,
    /// Its bridge.
    pub bridge: BridgePlan,
    /// The bridge's own addresses, with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// The firewall rules (none for a `bridge` or `open` network).
    pub rules: Option<nft::NetworkRules>,
    /// The DHCP and DNS server (none when the network has no address or
    /// turns both off).
    pub dnsmasq: Option<dnsmasq::Config>,
    /// Whether the host must forward IPv4 between interfaces (NAT and
    /// routed networks).
    pub ipv4_forwarding: bool,
    /// A VXLAN device on the bridge, joining it to other hosts' bridges.
    pub overlay: Option<OverlayPlan>,
}

/// The VXLAN device of an overlay network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayPlan {
    /// The device's name: [`overlay_link_name`].
    pub name: String,
    /// The VXLAN network identifier.
    pub vni: u32,
    /// The UDP port.
    pub port: u16,
    /// The underlay device, which must exist when the network starts.
    pub dev: Option<String>,
    /// The local tunnel address.
    pub local: Option<IpAddr>,
    /// The other hosts: one flooding entry each.
    pub remotes: Vec<IpAddr>,
}

/// The VXLAN device of the overlay with `vni`: one per VNI on a host
/// (two networks on one VNI would be one segment), at most 12 bytes.
pub fn overlay_link_name(vni: u32) -> String {
    format!("vrvx{vni}")
}

/// The bridge a network's guests are plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgePlan {
    /// A bridge the network makes on start and removes on destroy.
    Own {
        /// Its name.
        name: String,
        /// Spanning tree.
        stp: bool,
        /// Forwarding delay, milliseconds.
        delay_ms: u32,
        /// Its MTU, when set.
        mtu: Option<u32>,
        /// Its MAC, when set.
        mac: Option<[u8; 6]>,
    },
    /// `forward mode='bridge'`: a host bridge someone else made; the
    /// network only names it.
    Existing(String),
}

impl BridgePlan {
    /// The bridge's name.
    pub fn name(&self) -> &str {
        match self {
            BridgePlan::Own { name, .. } | BridgePlan::Existing(name) => name,
        }
    }
}

/// Why a definition cannot become a plan. The daemon fills in what the
/// XML leaves out (the bridge name) when it defines a network, so these
/// are definitions that reached the daemon some other way.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A network with its own bridge needs the bridge's name.
    #[error("network '{0}' has no bridge name")]
    NoBridgeName(String),
}

/// libvirt's default DHCP lease: one hour.
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);

/// Works out what `net` needs; `dir` is the network's private directory
/// (dnsmasq's configuration, leases and pid file go there).
pub fn plan(net: &Network, dir: &Path) -> Result<Plan, PlanError> {
    let mode = net.forward.as_ref().map(|f| f.mode);
    let bridge_name = net.bridge.as_ref().and_then(|b| b.name.clone());
    if mode == Some(ForwardMode::Bridge) {
        // The XML model refuses a bridge-mode network without a name or
        // with addresses, DHCP or DNS of its own.
        let name = bridge_name.ok_or_else(|| PlanError::NoBridgeName(net.name.clone()))?;
        return Ok(Plan {
            network: net.name.clone(),
            bridge: BridgePlan::Existing(name),
            addresses: Vec::new(),
            rules: None,
            dnsmasq: None,
            ipv4_forwarding: false,
            overlay: None,
        });
    }
    let name = bridge_name.ok_or_else(|| PlanError::NoBridgeName(net.name.clone()))?;
    let bridge = BridgePlan::Own {
        name: name.clone(),
        // libvirt's defaults: spanning tree on, no forwarding delay.
        stp: net.bridge.as_ref().and_then(|b| b.stp).unwrap_or(true),
        delay_ms: net
            .bridge
            .as_ref()
            .and_then(|b| b.delay)
            .unwrap_or(0)
            .saturating_mul(1000),
        mtu: net.mtu,
        mac: net.mac.map(|m| m.0),
    };
    let addresses: Vec<(IpAddr, u8)> = net.ips.iter().map(|ip| (ip.address, ip.prefix)).collect();
    let subnets: Vec<(IpAddr, u8)> = net
        .ips
        .iter()
        .map(|ip| (network_address(ip.address, ip.prefix), ip.prefix))
        .collect();
    let out_dev = net.forward.as_ref().and_then(|f| f.dev.clone());
    let forward = match mode {
        None => Some(nft::Forward::Isolated),
        Some(ForwardMode::Nat) => {
            let nat = net.forward.as_ref().and_then(|f| f.nat.clone());
            Some(nft::Forward::Nat {
                out_dev,
                addresses: nat.as_ref().and_then(|n| n.addresses),
                ports: nat.as_ref().and_then(|n| n.ports),
            })
        }
        Some(ForwardMode::Route) => Some(nft::Forward::Route { out_dev }),
        Some(ForwardMode::Open) | Some(ForwardMode::Bridge) => None,
    };
    let rules = forward.map(|forward| nft::NetworkRules {
        network: net.name.clone(),
        bridge: name.clone(),
        subnets,
        forward,
    });
    Ok(Plan {
        network: net.name.clone(),
        ipv4_forwarding: matches!(mode, Some(ForwardMode::Nat | ForwardMode::Route)),
        dnsmasq: dnsmasq_config(net, &name, dir),
        bridge,
        addresses,
        rules,
        overlay: net.overlay.as_ref().map(|o| OverlayPlan {
            name: overlay_link_name(o.vni),
            vni: o.vni,
            port: o.port,
            dev: o.dev.clone(),
            local: o.local,
            remotes: o.remotes.clone(),
        }),
    })
}

/// dnsmasq's configuration: none when the network has no address, or
/// has turned DNS off and serves no DHCP (libvirt runs no dnsmasq then).
fn dnsmasq_config(net: &Network, bridge: &str, dir: &Path) -> Option<dnsmasq::Config> {
    let dns_enabled = net.dns.as_ref().and_then(|d| d.enable).unwrap_or(true);
    let has_dhcp = net.ips.iter().any(|ip| ip.dhcp.is_some());
    if net.ips.is_empty() || (!dns_enabled && !has_dhcp) {
        return None;
    }
    let mut ranges = Vec::new();
    let mut hosts = Vec::new();
    for ip in &net.ips {
        let Some(dhcp) = &ip.dhcp else { continue };
        for r in &dhcp.ranges {
            ranges.push(dnsmasq::Range {
                start: r.start,
                end: r.end,
                prefix: ip.prefix,
                lease: Some(
                    r.lease_seconds
                        .map(Duration::from_secs)
                        .unwrap_or(DEFAULT_LEASE),
                ),
            });
        }
        for h in &dhcp.hosts {
            hosts.push(dnsmasq::Host {
                mac: h.mac.map(|m| m.0),
                name: h.name.clone(),
                ip: Some(h.ip),
            });
        }
    }
    let dns = net.dns.as_ref();
    Some(dnsmasq::Config {
        network: net.name.clone(),
        bridge: bridge.to_string(),
        dir: dir.to_path_buf(),
        domain: net.domain.as_ref().map(|d| d.name.clone()),
        local_only_domain: net
            .domain
            .as_ref()
            .and_then(|d| d.local_only)
            .unwrap_or(false),
        listen: net.ips.iter().map(|ip| ip.address).collect(),
        ranges,
        hosts,
        dns_hosts: dns
            .map(|d| {
                d.hosts
                    .iter()
                    .map(|h| (h.ip, h.hostnames.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        forwarders: dns
            .map(|d| {
                d.forwarders
                    .iter()
                    .map(|f| dnsmasq::Forwarder {
                        addr: f.addr,
                        domain: f.domain.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        // Forwarders that name a server replace the host's resolv.conf,
        // as libvirt does: the network asked for those servers only.
        no_resolv: dns.is_some_and(|d| {
            d.forwarders
                .iter()
                .any(|f| f.addr.is_some() && f.domain.is_none())
        }),
        dns: dns_enabled,
        // libvirt's isolated networks give no default route.
        router: net.forward.is_some(),
    })
}

/// The first address of `addr/prefix`.
pub fn network_address(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// Whether two subnets share an address.
pub fn overlaps(a: (IpAddr, u8), b: (IpAddr, u8)) -> bool {
    if a.0.is_ipv4() != b.0.is_ipv4() {
        return false;
    }
    let shorter = a.1.min(b.1);
    network_address(a.0, shorter) == network_address(b.0, shorter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(xml: &str) -> Network {
        Network::parse(xml).unwrap().network
    }

    /// libvirt's stock `default` network, with its bridge name as
    /// net-define fills it in.
    const DEFAULT: &str = "<network><name>default</name>\
        <forward mode='nat'/><bridge name='virbr0' stp='on' delay='0'/>\
        <ip address='192.168.122.1' netmask='255.255.255.0'>\
        <dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>";

    #[test]
    fn the_default_network_is_a_nat_bridge_with_dhcp() {
        let p = plan(&net(DEFAULT), Path::new("/s/default")).unwrap();
        assert_eq!(
            p.bridge,
            BridgePlan::Own {
                name: "virbr0".into(),
                stp: true,
                delay_ms: 0,
                mtu: None,
                mac: None
            }
        );
        assert_eq!(p.addresses, vec![("192.168.122.1".parse().unwrap(), 24)]);
        let rules = p.rules.unwrap();
        assert_eq!(rules.subnets, vec![("192.168.122.0".parse().unwrap(), 24)]);
        assert!(matches!(
            rules.forward,
            nft::Forward::Nat { out_dev: None, .. }
        ));
        assert!(p.ipv4_forwarding);
        let d = p.dnsmasq.unwrap();
        assert_eq!(d.bridge, "virbr0");
        assert_eq!(d.ranges.len(), 1);
        assert_eq!(d.ranges[0].lease, Some(DEFAULT_LEASE));
        assert_eq!(d.dir, Path::new("/s/default"));
        assert!(d.dns);
    }

    #[test]
    fn an_overlay_plans_a_vxlan_device_on_the_bridge() {
        let p = plan(
            &net(
                "<network xmlns:vireo='urn:x-vireo:network:1'><name>o</name><forward mode='open'/>\
                  <bridge name='vbr-o'/>\
                  <vireo:overlay vni='4242' port='8472' dev='under0'>\
                  <vireo:remote address='198.51.100.2'/><vireo:remote address='198.51.100.3'/>\
                  </vireo:overlay></network>",
            ),
            Path::new("/d"),
        )
        .unwrap();
        let o = p.overlay.unwrap();
        assert_eq!(o.name, "vrvx4242");
        assert_eq!(
            (o.vni, o.port, o.dev.as_deref()),
            (4242, 8472, Some("under0"))
        );
        assert_eq!(o.remotes.len(), 2);
        assert!(overlay_link_name(virtxml::network::overlay::MAX_VNI).len() <= 15);
        assert!(p.rules.is_none());
        let none = plan(&net(DEFAULT), Path::new("/d")).unwrap();
        assert!(none.overlay.is_none());
    }

    #[test]
    fn isolated_routed_open_and_bridge_modes() {
        let isolated = plan(
            &net("<network><name>i</name><bridge name='br1'/>\
                  <ip address='192.0.2.1' prefix='24'/></network>"),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(isolated.rules.unwrap().forward, nft::Forward::Isolated);
        assert!(!isolated.ipv4_forwarding);

        let routed = plan(
            &net("<network><name>r</name><forward mode='route' dev='up0'/>\
                  <bridge name='br2'/><ip address='198.51.100.1' prefix='25'/></network>"),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(
            routed.rules.unwrap().forward,
            nft::Forward::Route {
                out_dev: Some("up0".into())
            }
        );

        let open = plan(
            &net("<network><name>o</name><forward mode='open'/>\
                  <bridge name='br3'/><ip address='203.0.113.1' prefix='24'/></network>"),
            Path::new("/d"),
        )
        .unwrap();
        assert!(open.rules.is_none());

        let bridged = plan(
            &net("<network><name>b</name><forward mode='bridge'/>\
                  <bridge name='host0'/></network>"),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(bridged.bridge, BridgePlan::Existing("host0".into()));
        assert!(bridged.dnsmasq.is_none() && bridged.rules.is_none());
    }

    #[test]
    fn nat_ranges_hosts_dns_and_lease_times_reach_the_plan() {
        let p = plan(
            &net("<network><name>n</name>\
                  <forward mode='nat'><nat><address start='198.51.100.10' end='198.51.100.20'/>\
                  <port start='2000' end='3000'/></nat></forward>\
                  <bridge name='br4' stp='off' delay='2'/><mtu size='1400'/>\
                  <mac address='52:54:00:aa:bb:cc'/><domain name='example.test' localOnly='yes'/>\
                  <dns><forwarder addr='192.0.2.53'/><host ip='192.0.2.7'><hostname>web</hostname></host></dns>\
                  <ip address='192.0.2.1' prefix='24'><dhcp>\
                  <range start='192.0.2.100' end='192.0.2.150'><lease expiry='10' unit='minutes'/></range>\
                  <host mac='52:54:00:00:00:07' name='g7' ip='192.0.2.7'/></dhcp></ip></network>"),
            Path::new("/d"),
        )
        .unwrap();
        assert_eq!(
            p.bridge,
            BridgePlan::Own {
                name: "br4".into(),
                stp: false,
                delay_ms: 2000,
                mtu: Some(1400),
                mac: Some([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc])
            }
        );
        match p.rules.unwrap().forward {
            nft::Forward::Nat {
                addresses, ports, ..
            } => {
                assert_eq!(
                    addresses,
                    Some((
                        "198.51.100.10".parse().unwrap(),
                        "198.51.100.20".parse().unwrap()
                    ))
                );
                assert_eq!(ports, Some((2000, 3000)));
            }
            other => panic!("not nat: {other:?}"),
        }
        let d = p.dnsmasq.unwrap();
        assert_eq!(d.ranges[0].lease, Some(Duration::from_secs(600)));
        assert_eq!(d.hosts.len(), 1);
        assert_eq!(d.hosts[0].name.as_deref(), Some("g7"));
        assert_eq!(
            d.dns_hosts,
            vec![("192.0.2.7".parse().unwrap(), vec!["web".into()])]
        );
        assert_eq!(d.domain.as_deref(), Some("example.test"));
        assert!(d.local_only_domain && d.no_resolv);
    }

    #[test]
    fn no_address_or_no_services_means_no_dnsmasq() {
        let p = plan(
            &net("<network><name>x</name><bridge name='br5'/></network>"),
            Path::new("/d"),
        )
        .unwrap();
        assert!(p.dnsmasq.is_none());
        let p = plan(
            &net(
                "<network><name>x</name><bridge name='br5'/><dns enable='no'/>\
                  <ip address='192.0.2.1' prefix='24'/></network>",
            ),
            Path::new("/d"),
        )
        .unwrap();
        assert!(p.dnsmasq.is_none());
    }

    #[test]
    fn subnets_overlap_by_their_shorter_prefix() {
        let a = ("192.0.2.1".parse().unwrap(), 24);
        assert!(overlaps(a, ("192.0.2.200".parse().unwrap(), 25)));
        assert!(overlaps(a, ("192.0.0.1".parse().unwrap(), 16)));
        assert!(!overlaps(a, ("192.0.3.1".parse().unwrap(), 24)));
        assert!(!overlaps(a, ("::1".parse().unwrap(), 0)));
        assert!(overlaps(
            ("2001:db8::1".parse().unwrap(), 64),
            ("2001:db8::ff".parse().unwrap(), 120)
        ));
        assert_eq!(
            network_address("10.1.2.3".parse().unwrap(), 0),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
    }
}
