//! libvirt's XML formats as typed models.
//!
//! Four formats so far. The domain XML: [`Domain::parse`] reads a
//! definition into a [`Domain`] (with [`Warning`]s for what it accepts
//! without acting on), and [`Domain::to_xml`] writes it back. The rule,
//! applied element by element and documented in `docs/domain-xml.md`:
//! what Vireo cannot honour and a guest would notice is refused with one
//! line naming the element, its path and its line and column; what only
//! states a default or a hint is accepted, warned about once, and kept
//! verbatim so that writing back loses nothing. The network XML
//! ([`Network::parse`], [`Network::to_xml`], `docs/network-xml.md`),
//! the host interface XML of `virsh iface-dumpxml`
//! ([`HostInterface::parse`], [`HostInterface::to_xml`],
//! `docs/interface-xml.md`) and the storage XML ([`Pool::parse`],
//! [`Volume::parse`], `docs/storage-xml.md`) and the secret XML
//! ([`Secret::parse`], `docs/secrets.md`) follow the same rule.
//!
//! The crate does no I/O and knows nothing of the daemon, drivers or the
//! VMM: it turns `&str` into models and models into `String`. Input is
//! bounded ([`MAX_DOCUMENT_BYTES`], [`MAX_DEPTH`], [`MAX_ATTRIBUTES`],
//! [`MAX_ELEMENTS`]) and entities are never
//! expanded, so hostile documents cost little.

#![warn(missing_docs)]

pub mod auth;
pub mod cpu;
pub mod cpuset;
pub mod devices;
mod domain;
pub mod driver;
mod error;
pub mod iface;
pub mod limits;
pub mod network;
mod node;
pub mod os;
pub mod placement;
mod raw;
pub mod scalars;
pub mod secret;
pub mod storage;
mod tree;
mod uuid;

pub use auth::{ChapAuth, SecretRef};
pub use cpu::{Cpu, CpuModel, CpuTopology, NumaCell};
pub use cpuset::CpuSet;
pub use devices::balloon::MemBalloon;
pub use devices::chardev::{CharBackend, CharDevice, CharTarget};
pub use devices::disk::{
    Disk, DiskCache, DiskErrorPolicy, DiskFormat, DiskSource, IoTune, NetworkProtocol,
    NetworkSource, ResolvedVolume, VolumeSource, ISCSI_PORT,
};
pub use devices::interface::{DirectMode, Interface, InterfaceKind, MacAddress};
pub use devices::interface_policy::{Bandwidth, FilterRef, NetFilter, RateLimit, MAX_RATE_KIB};
pub use devices::rng::{Rng, RngBackend};
pub use devices::Devices;
pub use domain::{Domain, Parsed};
pub use driver::DriverKind;
pub use error::{Error, Location, Warning};
pub use iface::kinds::{BondDef, BondMode, BridgeDef, VlanDef};
pub use iface::protocol::{Family, Protocol};
pub use iface::{HostInterface, HostInterfaceKind, ParsedHostInterface, StartMode};
pub use limits::{BlkioDevice, BlkioTune, MemTune};
pub use network::dhcp::{Dhcp, DhcpHost, DhcpRange};
pub use network::dns::{Dns, DnsHost, Forwarder};
pub use network::forward::{Forward, ForwardMode, Nat};
pub use network::ip::IpDef;
pub use network::link::{Bridge, DnsDomain};
pub use network::{Network, ParsedNetwork};
pub use os::{Features, Os};
pub use placement::{
    CpuTune, HugePage, MemoryAccess, MemoryBacking, MemorySource, NodeBinding, NumaMode, NumaTune,
};
pub use raw::{escape, RawContent, RawElement};
pub use scalars::{LifecycleAction, Vcpu};
pub use secret::{ParsedSecret, Secret, SecretUsage, SecretUsageType};
pub use storage::pool::{
    ParsedPool, Pool, PoolSource, PoolSpace, PoolTarget, PoolType, SourceHost,
};
pub use storage::volume::{BackingStore, ParsedVolume, Volume, VolumeFormat, VolumeState};
pub use storage::Permissions;
pub use tree::{MAX_ATTRIBUTES, MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_ELEMENTS};
pub use uuid::Uuid;

#[cfg(test)]
mod tests;
