//! The client's calls for host interfaces (`iface-*`).

use super::uri::percent_encode;
use super::{Client, ClientError, ListFilter, Reply};
use crate::api::{DefineRequest, InterfaceDefineResponse, InterfaceSummary, XmlDocument};

fn iface_path(iface: &str, suffix: &str) -> String {
    format!("/interfaces/{}{suffix}", percent_encode(iface))
}

impl Client {
    /// `GET /interfaces?filter=...`.
    pub fn host_interfaces(
        &mut self,
        filter: ListFilter,
    ) -> Result<Reply<Vec<InterfaceSummary>>, ClientError> {
        let f = match filter {
            ListFilter::Active => "active",
            ListFilter::Inactive => "inactive",
            ListFilter::All => "all",
        };
        self.get(&format!("/interfaces?filter={f}"))
    }

    /// `POST /interfaces`: iface-define.
    pub fn iface_define(&mut self, xml: &str) -> Result<InterfaceDefineResponse, ClientError> {
        let req = DefineRequest { xml: xml.into() };
        Ok(self.send_json("POST", "/interfaces", &req)?.value)
    }

    /// `GET /interfaces/{iface}`.
    pub fn iface_info(&mut self, iface: &str) -> Result<Reply<InterfaceSummary>, ClientError> {
        self.get(&iface_path(iface, ""))
    }

    /// `DELETE /interfaces/{iface}`: iface-undefine.
    pub fn iface_undefine(&mut self, iface: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("DELETE", &iface_path(iface, ""), None)
    }

    /// `GET /interfaces/{iface}/xml`.
    pub fn iface_xml(
        &mut self,
        iface: &str,
        inactive: bool,
    ) -> Result<Reply<XmlDocument>, ClientError> {
        let q = if inactive { "?inactive=true" } else { "" };
        self.get(&format!("{}{q}", iface_path(iface, "/xml")))
    }

    /// `POST /interfaces/{iface}/start`.
    pub fn iface_start(&mut self, iface: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("POST", &iface_path(iface, "/start"), None)
    }

    /// `POST /interfaces/{iface}/destroy`.
    pub fn iface_destroy(&mut self, iface: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("POST", &iface_path(iface, "/destroy"), None)
    }
}
