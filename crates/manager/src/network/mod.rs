//! Virtual networks: libvirt's network definitions made real on the host.
//!
//! - [`plan`]: what a definition asks for (bridge, addresses, firewall
//!   rules, dnsmasq), worked out without touching the host;
//! - [`host`]: making a plan real through `netvirt` (netlink, nftables,
//!   dnsmasq), taking it down, and finding it again.
//!
//! The daemon keeps the definitions and decides when; this module knows
//! how. It fills in what libvirt's `net-define` fills in (a bridge name,
//! a MAC) with [`complete`].

pub mod host;
pub mod plan;

use virtxml::network::forward::ForwardMode;
use virtxml::network::link::Bridge;
use virtxml::{MacAddress, Network};

/// The prefix of the bridge names chosen for networks that name none,
/// as libvirt's: `virbr0`, `virbr1`, ...
pub const BRIDGE_PREFIX: &str = "virbr";

/// Most bridge numbers tried before giving up (a host with this many
/// networks has other problems).
const MAX_BRIDGE_NUMBER: u32 = 4096;

/// Fills in what a definition leaves to the host, as libvirt's
/// `net-define` does: a bridge name (`virbrN`, the lowest not in `taken`)
/// and, for a network with its own bridge, a MAC for it. Returns an error
/// line when no name is free.
pub fn complete(net: &mut Network, taken: &[String]) -> Result<(), String> {
    if net.forward.as_ref().map(|f| f.mode) == Some(ForwardMode::Bridge) {
        return Ok(());
    }
    let bridge = net.bridge.get_or_insert_with(Bridge::default);
    if bridge.name.is_none() {
        let free = (0..MAX_BRIDGE_NUMBER)
            .map(|n| format!("{BRIDGE_PREFIX}{n}"))
            .find(|candidate| !taken.iter().any(|t| t == candidate))
            .ok_or_else(|| format!("network '{}': no free bridge name", net.name))?;
        bridge.name = Some(free);
    }
    if net.mac.is_none() {
        let mut mac = MacAddress::generate().map_err(|e| e.to_string())?;
        // libvirt's prefix, and what a bridge port must not be: multicast.
        mac.0[..3].copy_from_slice(&[0x52, 0x54, 0x00]);
        net.mac = Some(mac);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_name_and_mac_are_filled_in() {
        let mut n = Network::parse("<network><name>a</name></network>")
            .unwrap()
            .network;
        complete(&mut n, &["virbr0".into(), "virbr2".into()]).unwrap();
        assert_eq!(n.bridge.unwrap().name.as_deref(), Some("virbr1"));
        assert_eq!(n.mac.unwrap().0[..3], [0x52, 0x54, 0x00]);

        let mut named = Network::parse(
            "<network><name>b</name><bridge name='mine'/><mac address='52:54:00:01:02:03'/></network>",
        )
        .unwrap()
        .network;
        complete(&mut named, &[]).unwrap();
        assert_eq!(named.bridge.unwrap().name.as_deref(), Some("mine"));
        assert_eq!(named.mac.unwrap().0, [0x52, 0x54, 0, 1, 2, 3]);

        let mut bridged = Network::parse(
            "<network><name>c</name><forward mode='bridge'/><bridge name='br0'/></network>",
        )
        .unwrap()
        .network;
        complete(&mut bridged, &[]).unwrap();
        assert!(bridged.mac.is_none());
    }
}
