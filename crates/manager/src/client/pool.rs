//! The client's calls for storage pools and volumes.

use super::uri::percent_encode;
use super::{Client, ClientError, ListFilter, Reply};
use crate::api::{
    AutostartRequest, DefineRequest, DefineResponse, PoolSummary, VolumeCreateRequest,
    VolumeResizeRequest, VolumeSummary, XmlDocument,
};

fn pool_path(pool: &str, suffix: &str) -> String {
    format!("/pools/{}{suffix}", percent_encode(pool))
}

fn vol_path(pool: &str, vol: &str, suffix: &str) -> String {
    format!(
        "/pools/{}/volumes/{}{suffix}",
        percent_encode(pool),
        percent_encode(vol)
    )
}

impl Client {
    /// `GET /pools?filter=...`.
    pub fn pools(&mut self, filter: ListFilter) -> Result<Reply<Vec<PoolSummary>>, ClientError> {
        let f = match filter {
            ListFilter::Active => "active",
            ListFilter::Inactive => "inactive",
            ListFilter::All => "all",
        };
        self.get(&format!("/pools?filter={f}"))
    }

    /// `POST /pools`: pool-define.
    pub fn pool_define(&mut self, xml: &str) -> Result<DefineResponse, ClientError> {
        let req = DefineRequest { xml: xml.into() };
        Ok(self.send_json("POST", "/pools", &req)?.value)
    }

    /// `POST /pools/create`: pool-create.
    pub fn pool_create(&mut self, xml: &str) -> Result<DefineResponse, ClientError> {
        let req = DefineRequest { xml: xml.into() };
        Ok(self.send_json("POST", "/pools/create", &req)?.value)
    }

    /// `GET /pools/{pool}`.
    pub fn pool_info(&mut self, pool: &str) -> Result<Reply<PoolSummary>, ClientError> {
        self.get(&pool_path(pool, ""))
    }

    /// `DELETE /pools/{pool}`.
    pub fn pool_undefine(&mut self, pool: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("DELETE", &pool_path(pool, ""), None)
    }

    /// `GET /pools/{pool}/xml`.
    pub fn pool_xml(
        &mut self,
        pool: &str,
        inactive: bool,
    ) -> Result<Reply<XmlDocument>, ClientError> {
        let q = if inactive { "?inactive=true" } else { "" };
        self.get(&format!("{}{q}", pool_path(pool, "/xml")))
    }

    /// `POST /pools/{pool}/{verb}` for build, start, destroy, delete and
    /// refresh.
    pub fn pool_action(&mut self, pool: &str, verb: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("POST", &pool_path(pool, &format!("/{verb}")), None)
    }

    /// `POST /pools/{pool}/build`; `overwrite` is virsh's `--overwrite`
    /// (true) or `--no-overwrite` (false), neither when `None`.
    pub fn pool_build(&mut self, pool: &str, overwrite: Option<bool>) -> Result<(), ClientError> {
        let q = match overwrite {
            None => "",
            Some(true) => "?overwrite=true",
            Some(false) => "?overwrite=false",
        };
        self.send_no_answer::<()>("POST", &format!("{}{q}", pool_path(pool, "/build")), None)
    }

    /// `PUT /pools/{pool}/autostart`.
    pub fn pool_set_autostart(&mut self, pool: &str, enabled: bool) -> Result<(), ClientError> {
        let req = AutostartRequest { enabled };
        self.send_no_answer("PUT", &pool_path(pool, "/autostart"), Some(&req))
    }

    /// `GET /pools/{pool}/volumes`.
    pub fn volumes(&mut self, pool: &str) -> Result<Reply<Vec<VolumeSummary>>, ClientError> {
        self.get(&pool_path(pool, "/volumes"))
    }

    /// `POST /pools/{pool}/volumes`: vol-create (with `prealloc_metadata`,
    /// a qcow2 volume's clusters all mapped at creation).
    pub fn vol_create(
        &mut self,
        pool: &str,
        xml: &str,
        prealloc_metadata: bool,
    ) -> Result<VolumeSummary, ClientError> {
        let req = VolumeCreateRequest {
            xml: xml.into(),
            prealloc_metadata,
        };
        let path = pool_path(pool, "/volumes");
        // Mapping every cluster of a large volume takes a while (about
        // 0.6 s for 10 GiB here): as long as a copy may.
        let reply = if prealloc_metadata {
            self.long_change(|c| c.send_json("POST", &path, &req))?
        } else {
            self.send_json("POST", &path, &req)?
        };
        Ok(reply.value)
    }

    /// `GET /pools/{pool}/volumes/{vol}`.
    pub fn vol_info(&mut self, pool: &str, vol: &str) -> Result<Reply<VolumeSummary>, ClientError> {
        self.get(&vol_path(pool, vol, ""))
    }

    /// `GET /pools/{pool}/volumes/{vol}/xml`.
    pub fn vol_xml(&mut self, pool: &str, vol: &str) -> Result<Reply<XmlDocument>, ClientError> {
        self.get(&vol_path(pool, vol, "/xml"))
    }

    /// `DELETE /pools/{pool}/volumes/{vol}`.
    pub fn vol_delete(&mut self, pool: &str, vol: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("DELETE", &vol_path(pool, vol, ""), None)
    }

    /// `POST /pools/{pool}/volumes/{vol}/resize`.
    pub fn vol_resize(
        &mut self,
        pool: &str,
        vol: &str,
        capacity: u64,
        shrink: bool,
    ) -> Result<VolumeSummary, ClientError> {
        let req = VolumeResizeRequest { capacity, shrink };
        Ok(self
            .send_json("POST", &vol_path(pool, vol, "/resize"), &req)?
            .value)
    }
}
