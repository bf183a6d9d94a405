//! The API's shapes for secrets (`secret-*` verbs).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/secrets` | | `[`[`SecretSummary`]`]` (secret-list) |
//! | POST | `/secrets` | [`DefineRequest`](super::DefineRequest) | [`DefineResponse`](super::DefineResponse) (secret-define; `name` is the UUID) |
//! | GET | `/secrets/{secret}` | | [`SecretSummary`] |
//! | DELETE | `/secrets/{secret}` | | 204 (secret-undefine) |
//! | GET | `/secrets/{secret}/xml` | | [`XmlDocument`](super::XmlDocument) (secret-dumpxml) |
//! | PUT | `/secrets/{secret}/value` | [`SecretValue`] | 204 (secret-set-value) |
//! | GET | `/secrets/{secret}/value` | | [`SecretValue`] (secret-get-value; 409 for a private secret; never on the read-only socket) |
//!
//! `{secret}` is a secret's UUID or its usage id. A value travels
//! base64-encoded, and only in these two bodies: no other answer, error
//! or log line carries it.

use serde::{Deserialize, Serialize};

/// One secret, as `secret-list` shows it (never its value).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretSummary {
    /// Its UUID.
    pub uuid: String,
    /// The usage type (`iscsi`, `ceph`, `volume`, `tls`, `vtpm`), when it
    /// has one.
    pub usage_type: Option<String>,
    /// The usage id (an iSCSI usage name, a volume path, a name).
    pub usage_id: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// Kept only in the daemon's memory.
    pub ephemeral: bool,
    /// Its value cannot be read back.
    pub private: bool,
    /// Whether a value is set.
    pub has_value: bool,
}

/// A secret's value, base64-encoded (`secret-set-value`,
/// `secret-get-value`).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretValue {
    /// The value in base64 (RFC 4648, with padding).
    pub value: String,
}

impl std::fmt::Debug for SecretValue {
    // A value never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValue(..)")
    }
}
