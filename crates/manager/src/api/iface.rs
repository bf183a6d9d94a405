//! The API's shapes for host interfaces (`iface-*` verbs).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/interfaces?filter=active\|inactive\|all` | | `[`[`InterfaceSummary`]`]` (default `active`) |
//! | POST | `/interfaces` | [`DefineRequest`](super::DefineRequest) | [`InterfaceDefineResponse`] (iface-define) |
//! | GET | `/interfaces/{iface}` | | [`InterfaceSummary`] |
//! | DELETE | `/interfaces/{iface}` | | 204 (iface-undefine; an active interface stays up) |
//! | GET | `/interfaces/{iface}/xml?inactive=true` | | [`XmlDocument`](super::XmlDocument) |
//! | POST | `/interfaces/{iface}/start` | | 204 |
//! | POST | `/interfaces/{iface}/destroy` | | 204 |
//!
//! `{iface}` is the interface's name. Errors: 404 for no such
//! interface, 409 when its state forbids the change (starting an active
//! one, destroying an inactive one), 422 when the host cannot do it (a
//! member or VLAN parent missing, a name taken by another kind of link,
//! a kernel without VLAN or bonding support).

use serde::{Deserialize, Serialize};

/// A host interface, as `iface-list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceSummary {
    /// Its name (the Linux link's).
    pub name: String,
    /// `ethernet`, `bridge`, `vlan` or `bond`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether the link exists and is up.
    pub active: bool,
    /// The link's MAC when it exists, else the definition's, if any.
    pub mac: Option<String>,
    /// Whether a definition is kept (an undefined interface the daemon
    /// started stays listed until it is destroyed).
    pub persistent: bool,
    /// `onboot`, `none` or `hotplug`.
    pub start_mode: String,
}

/// The answer to `POST /interfaces`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceDefineResponse {
    /// The interface's name.
    pub name: String,
    /// One line per element accepted without effect.
    pub warnings: Vec<String>,
    /// Whether this replaced an existing definition.
    pub updated: bool,
}
