//! The per-VM control API: HTTP/1.1 with JSON bodies on a unix socket, as
//! Firecracker's and Cloud Hypervisor's.

pub mod http;
mod message;
pub mod routes;
pub mod types;

pub use http::{ApiListener, ApiServer, ServerLimits, ANSWER_GRACE};
pub use types::{
    Action, ActionResult, ApiError, BalloonInfo, BalloonSpec, Counters, DeviceInfo, DiskSpec,
    EmulatorPinSpec, NetSpec, NumaCellInfo, NumaInfo, RemoveDeviceSpec, ResizeDiskSpec, VcpuInfo,
    VcpuPinSpec, VmConfigSpec, VmController, VmInfo, VmState,
};
