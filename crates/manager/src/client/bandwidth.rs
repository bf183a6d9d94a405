//! The client's calls for a NIC's rate limits (`domiftune`).

use super::uri::percent_encode;
use super::{dom_path, Client, ClientError, Reply};
use crate::api::{BandwidthRequest, InterfaceBandwidth};

fn bandwidth_path(dom: &str, iface: &str) -> String {
    format!(
        "{}/{}/bandwidth",
        dom_path(dom, "/interfaces"),
        percent_encode(iface)
    )
}

impl Client {
    /// `GET /domains/{dom}/interfaces/{iface}/bandwidth`.
    pub fn bandwidth(
        &mut self,
        dom: &str,
        iface: &str,
        config: bool,
    ) -> Result<Reply<InterfaceBandwidth>, ClientError> {
        self.get(&format!("{}?config={config}", bandwidth_path(dom, iface)))
    }

    /// `PUT /domains/{dom}/interfaces/{iface}/bandwidth`.
    pub fn set_bandwidth(
        &mut self,
        dom: &str,
        iface: &str,
        req: &BandwidthRequest,
    ) -> Result<(), ClientError> {
        self.send_no_answer("PUT", &bandwidth_path(dom, iface), Some(req))
    }
}
