//! Host network virtualization: the host side of a guest's NIC.
//!
//! For now this is TAP devices ([`Tap`]): a layer-2 interface whose
//! other end is a file descriptor the VMM reads guest-bound frames from
//! and writes guest-sent frames to, each prefixed by a virtio-net header
//! so checksum and segmentation offloads pass through untouched.
//! Bridges, veth pairs, VLANs, NAT and the rest come later; this crate
//! knows nothing of virtio queues or guest memory.

pub mod bridge;
mod ifreq;
/// Links (bridges, veths, VLANs, bonds, macvtap, VXLAN), addresses and routes through rtnetlink.
pub mod link;
pub mod netns;
mod tap;

pub use tap::{Offloads, Tap, TapError, VNET_HDR_LEN};
