//! The client's calls for memory and CPU placement (`setmem`,
//! `dommemstat`, `vcpupin`, `emulatorpin`, `vcpuinfo`, `numatune`).

use super::{dom_path, Client, ClientError, Reply};
use crate::api::{
    Affinity, MemoryStats, NumaTuneInfo, NumaTuneRequest, PinRequest, SetMemoryRequest, VcpuRow,
};

impl Client {
    /// `GET /domains/{dom}/memory`.
    pub fn memory_stats(&mut self, dom: &str) -> Result<Reply<MemoryStats>, ClientError> {
        self.get(&dom_path(dom, "/memory"))
    }

    /// `PUT /domains/{dom}/memory`.
    pub fn set_memory(&mut self, dom: &str, req: &SetMemoryRequest) -> Result<(), ClientError> {
        self.send_no_answer("PUT", &dom_path(dom, "/memory"), Some(req))
    }

    /// `GET /domains/{dom}/vcpus`.
    pub fn vcpus(&mut self, dom: &str, config: bool) -> Result<Reply<Vec<VcpuRow>>, ClientError> {
        self.get(&format!("{}?config={config}", dom_path(dom, "/vcpus")))
    }

    /// `PUT /domains/{dom}/vcpus/{vcpu}/affinity`.
    pub fn pin_vcpu(&mut self, dom: &str, vcpu: u32, req: &PinRequest) -> Result<(), ClientError> {
        let path = dom_path(dom, &format!("/vcpus/{vcpu}/affinity"));
        self.send_no_answer("PUT", &path, Some(req))
    }

    /// `GET /domains/{dom}/emulator/affinity`.
    pub fn emulator_affinity(
        &mut self,
        dom: &str,
        config: bool,
    ) -> Result<Reply<Affinity>, ClientError> {
        self.get(&format!(
            "{}?config={config}",
            dom_path(dom, "/emulator/affinity")
        ))
    }

    /// `PUT /domains/{dom}/emulator/affinity`.
    pub fn pin_emulator(&mut self, dom: &str, req: &PinRequest) -> Result<(), ClientError> {
        self.send_no_answer("PUT", &dom_path(dom, "/emulator/affinity"), Some(req))
    }

    /// `GET /domains/{dom}/numatune`.
    pub fn numatune(
        &mut self,
        dom: &str,
        config: bool,
    ) -> Result<Reply<NumaTuneInfo>, ClientError> {
        self.get(&format!("{}?config={config}", dom_path(dom, "/numatune")))
    }

    /// `PUT /domains/{dom}/numatune`.
    pub fn set_numatune(&mut self, dom: &str, req: &NumaTuneRequest) -> Result<(), ClientError> {
        self.send_no_answer("PUT", &dom_path(dom, "/numatune"), Some(req))
    }
}

impl Client {
    /// `GET /domains/{dom}/limits`.
    pub fn limits(
        &mut self,
        dom: &str,
        config: bool,
    ) -> Result<Reply<crate::api::ResourceLimits>, ClientError> {
        self.get(&format!("{}?config={config}", dom_path(dom, "/limits")))
    }

    /// `PUT /domains/{dom}/limits`.
    pub fn set_limits(
        &mut self,
        dom: &str,
        req: &crate::api::LimitsRequest,
    ) -> Result<(), ClientError> {
        self.send_no_answer("PUT", &dom_path(dom, "/limits"), Some(req))
    }
}
