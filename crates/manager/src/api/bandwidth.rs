//! A NIC's rate limits (virsh `domiftune`), in libvirt's units: rates in
//! KiB/s, bursts in KiB. `{iface}` in the routes is the NIC's host-side
//! device (`target dev`) or its MAC address.

use serde::{Deserialize, Serialize};

/// One direction's limits.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    /// Long-term rate, KiB/s. In a [`BandwidthRequest`], 0 removes the
    /// direction's limits (as virsh's `--inbound 0`).
    pub average: u64,
    /// Rate while bursting, KiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<u64>,
    /// What may be sent at the peak rate, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Guaranteed minimum, KiB/s: kept in the definition, not enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<u64>,
}

/// `GET /domains/{dom}/interfaces/{iface}/bandwidth`: the NIC's limits;
/// a direction without limits is `null`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct InterfaceBandwidth {
    /// Traffic to the guest.
    pub inbound: Option<RateSpec>,
    /// Traffic from the guest.
    pub outbound: Option<RateSpec>,
}

/// `PUT /domains/{dom}/interfaces/{iface}/bandwidth`: new limits for the
/// directions given; a direction left out keeps its limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct BandwidthRequest {
    /// New limits on traffic to the guest.
    #[serde(default)]
    pub inbound: Option<RateSpec>,
    /// New limits on traffic from the guest.
    #[serde(default)]
    pub outbound: Option<RateSpec>,
    /// Change the running domain (virsh `--live`).
    #[serde(default)]
    pub live: bool,
    /// Change the persistent definition (virsh `--config`).
    #[serde(default)]
    pub config: bool,
}
