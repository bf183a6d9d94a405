//! The management layer: libvirt's role beside Vireo's VMM.
//!
//! - [`acl`]: a confined VMM's access to its domain's files (POSIX ACL entries).
//! - [`api`]: the JSON shapes of the daemon's HTTP API, shared by the
//!   daemon and its clients. The route table is in the module's docs; the
//!   OpenAPI document the daemon serves at `/openapi` describes the same.
//! - [`daemon`]: `vireo daemon`, which keeps the domains, runs them
//!   through the drivers and serves the API on its unix sockets.
//! - [`driver`]: the seam between the daemon and what runs a VM. Vireo's own
//!   VMM is one driver, QEMU another. The daemon knows nothing of either's
//!   command line; it holds a [`driver::Instance`] per running domain.
//! - [`network`]: virtual networks (libvirt's network XML) made real on
//!   the host through `netvirt`: bridge, addresses, nftables, dnsmasq.
//! - [`storage`]: storage pools (libvirt's storage XML) on the host:
//!   their space and their volumes, made with the `block` crate.
//!
//! Data flows one way: CLI → daemon API → registry → driver → VMM process
//! (its per-VM API). The crate never reaches into a VMM's memory or devices.

#![warn(missing_docs)]

pub mod acl;
pub mod api;
pub mod base64;
pub mod cgroup;
pub mod client;
pub mod daemon;
pub mod driver;
pub mod network;
pub mod storage;
