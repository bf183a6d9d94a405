//! The client's calls for virtual networks and `domifaddr`.

use super::uri::percent_encode;
use super::{dom_path, Client, ClientError, ListFilter, Reply};
use crate::api::{
    AutostartRequest, DefineRequest, DefineResponse, DhcpLease, InterfaceAddress,
    NetworkDestroyRequest, NetworkSummary, NetworkUpdateRequest, XmlDocument,
};

fn net_path(net: &str, suffix: &str) -> String {
    format!("/networks/{}{suffix}", percent_encode(net))
}

impl Client {
    /// `GET /networks?filter=...`.
    pub fn networks(
        &mut self,
        filter: ListFilter,
    ) -> Result<Reply<Vec<NetworkSummary>>, ClientError> {
        let f = match filter {
            ListFilter::Active => "active",
            ListFilter::Inactive => "inactive",
            ListFilter::All => "all",
        };
        self.get(&format!("/networks?filter={f}"))
    }

    /// `POST /networks`: net-define.
    pub fn net_define(&mut self, xml: &str) -> Result<DefineResponse, ClientError> {
        let req = DefineRequest { xml: xml.into() };
        Ok(self.send_json("POST", "/networks", &req)?.value)
    }

    /// `POST /networks/create`: net-create.
    pub fn net_create(&mut self, xml: &str) -> Result<DefineResponse, ClientError> {
        let req = DefineRequest { xml: xml.into() };
        Ok(self.send_json("POST", "/networks/create", &req)?.value)
    }

    /// `GET /networks/{net}`.
    pub fn net_info(&mut self, net: &str) -> Result<Reply<NetworkSummary>, ClientError> {
        self.get(&net_path(net, ""))
    }

    /// `DELETE /networks/{net}`.
    pub fn net_undefine(&mut self, net: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("DELETE", &net_path(net, ""), None)
    }

    /// `GET /networks/{net}/xml`.
    pub fn net_xml(
        &mut self,
        net: &str,
        inactive: bool,
    ) -> Result<Reply<XmlDocument>, ClientError> {
        let q = if inactive { "?inactive=true" } else { "" };
        self.get(&format!("{}{q}", net_path(net, "/xml")))
    }

    /// `POST /networks/{net}/start`.
    pub fn net_start(&mut self, net: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("POST", &net_path(net, "/start"), None)
    }

    /// `POST /networks/{net}/destroy`.
    pub fn net_destroy(&mut self, net: &str, force: bool) -> Result<(), ClientError> {
        let req = NetworkDestroyRequest { force };
        self.send_no_answer("POST", &net_path(net, "/destroy"), Some(&req))
    }

    /// `PUT /networks/{net}/autostart`.
    pub fn net_set_autostart(&mut self, net: &str, enabled: bool) -> Result<(), ClientError> {
        let req = AutostartRequest { enabled };
        self.send_no_answer("PUT", &net_path(net, "/autostart"), Some(&req))
    }

    /// `GET /networks/{net}/leases`.
    pub fn net_leases(
        &mut self,
        net: &str,
        mac: Option<&str>,
    ) -> Result<Reply<Vec<DhcpLease>>, ClientError> {
        let q = mac.map_or(String::new(), |m| format!("?mac={}", percent_encode(m)));
        self.get(&format!("{}{q}", net_path(net, "/leases")))
    }

    /// `POST /networks/{net}/update`.
    pub fn net_update(&mut self, net: &str, req: &NetworkUpdateRequest) -> Result<(), ClientError> {
        self.send_no_answer("POST", &net_path(net, "/update"), Some(req))
    }

    /// `GET /domains/{dom}/addresses`: domifaddr.
    pub fn addresses(&mut self, dom: &str) -> Result<Reply<Vec<InterfaceAddress>>, ClientError> {
        self.get(&dom_path(dom, "/addresses"))
    }
}
