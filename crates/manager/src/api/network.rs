//! The API's shapes for virtual networks (`net-*` verbs) and the
//! addresses of a domain's interfaces (`domifaddr`).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/networks?filter=active\|inactive\|all` | | `[`[`NetworkSummary`]`]` (default `active`) |
//! | POST | `/networks` | [`DefineRequest`](super::DefineRequest) | [`DefineResponse`](super::DefineResponse) (net-define) |
//! | POST | `/networks/create` | [`DefineRequest`](super::DefineRequest) | [`DefineResponse`](super::DefineResponse) (net-create: transient, started) |
//! | GET | `/networks/{net}` | | [`NetworkSummary`] (net-info) |
//! | DELETE | `/networks/{net}` | | 204 (net-undefine; an active network becomes transient) |
//! | GET | `/networks/{net}/xml?inactive=true` | | [`XmlDocument`](super::XmlDocument) |
//! | POST | `/networks/{net}/start` | | 204 |
//! | POST | `/networks/{net}/destroy` | [`NetworkDestroyRequest`] | 204 |
//! | PUT | `/networks/{net}/autostart` | [`AutostartRequest`](super::AutostartRequest) | 204 |
//! | GET | `/networks/{net}/leases?mac=` | | `[`[`DhcpLease`]`]` (net-dhcp-leases) |
//! | POST | `/networks/{net}/update` | [`NetworkUpdateRequest`] | 204 (net-update) |
//! | GET | `/domains/{dom}/addresses` | | `[`[`InterfaceAddress`]`]` (domifaddr, from the leases) |
//!
//! `{net}` is a network's name or UUID. Errors are as for domains: 404
//! for no such network, 409 when its state forbids the change (starting an
//! active network, destroying one running domains use), 422 for a
//! definition that cannot be (bad XML, an overlapping subnet, a bridge
//! name in use).

use serde::{Deserialize, Serialize};

/// A network, as `net-list` and `net-info` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkSummary {
    /// Its name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// Whether it is running.
    pub active: bool,
    /// Whether a definition is kept.
    pub persistent: bool,
    /// Whether it starts with the daemon.
    pub autostart: bool,
    /// The bridge its guests are plugged into.
    pub bridge: Option<String>,
}

/// `POST /networks/{net}/destroy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkDestroyRequest {
    /// Destroy it even though running domains are plugged into it (their
    /// NICs lose their network).
    #[serde(default)]
    pub force: bool,
}

/// One DHCP lease (`net-dhcp-leases`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DhcpLease {
    /// When it expires, seconds since the epoch (0: never).
    pub expiry: u64,
    /// The client's MAC.
    pub mac: String,
    /// `ipv4` or `ipv6`.
    pub protocol: String,
    /// The address leased.
    pub address: String,
    /// The network's prefix length for it.
    pub prefix: u8,
    /// The host name the client sent, if any.
    pub hostname: Option<String>,
    /// The client's identifier, if any.
    pub client_id: Option<String>,
}

/// `POST /networks/{net}/update`: libvirt's `net-update` for the section
/// Vireo implements, `ip-dhcp-host`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkUpdateRequest {
    /// `add` (`add-last`, `add-first`) or `delete` (`modify` too).
    pub command: String,
    /// The section: `ip-dhcp-host`.
    pub section: String,
    /// The element, e.g. `<host mac='52:54:00:00:00:01' ip='192.0.2.10'/>`.
    pub xml: String,
    /// Change the running network.
    #[serde(default)]
    pub live: bool,
    /// Change the persistent definition.
    #[serde(default)]
    pub config: bool,
}

/// One address of a domain's interface (`domifaddr`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The host-side device, `-` when not known.
    pub name: String,
    /// The guest's MAC.
    pub mac: String,
    /// `ipv4` or `ipv6`.
    pub protocol: String,
    /// The address.
    pub address: String,
    /// Its prefix length.
    pub prefix: u8,
}
