//! Host network virtualization: the host side of a guest's NIC and the
//! host plumbing of virtual networks.
//!
//! [`Tap`] is a layer-2 interface whose other end is a file descriptor
//! the VMM reads guest-bound frames from and writes guest-sent frames
//! to, each prefixed by a virtio-net header so offloads pass through
//! untouched. [`link`] creates and configures bridges, veths, VLANs,
//! bonds, macvtap and VXLAN links, addresses and routes over rtnetlink;
//! [`nft`] owns one nftables table per virtual network (NAT, forwarding
//! policy); [`dnsmasq`] runs the DHCP and DNS server of a network;
//! [`macvtap`] makes the direct ports of `type='direct'` NICs;
//! [`port_filter`] and [`shaping`] hold one guest port to its MAC and
//! addresses and to its rate limits.
//! This crate knows nothing of virtio queues, guest memory or domains.

pub mod bridge;
pub mod dnsmasq;
mod ifreq;
pub mod link;
pub mod macvtap;
pub mod netns;
pub mod nft;
pub mod port_filter;
pub mod shaping;
mod tap;

pub use tap::{Offloads, Tap, TapError, VNET_HDR_LEN};
