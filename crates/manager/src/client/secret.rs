//! The client's calls for secrets.

use super::uri::percent_encode;
use super::{Client, ClientError, Reply};
use crate::api::{DefineRequest, DefineResponse, SecretSummary, SecretValue, XmlDocument};

fn secret_path(secret: &str, suffix: &str) -> String {
    format!("/secrets/{}{suffix}", percent_encode(secret))
}

impl Client {
    /// `GET /secrets`.
    pub fn secrets(&mut self) -> Result<Reply<Vec<SecretSummary>>, ClientError> {
        self.get("/secrets")
    }

    /// `POST /secrets`: secret-define.
    pub fn secret_define(&mut self, xml: &str) -> Result<DefineResponse, ClientError> {
        let req = DefineRequest { xml: xml.into() };
        Ok(self.send_json("POST", "/secrets", &req)?.value)
    }

    /// `GET /secrets/{secret}`.
    pub fn secret_info(&mut self, secret: &str) -> Result<Reply<SecretSummary>, ClientError> {
        self.get(&secret_path(secret, ""))
    }

    /// `DELETE /secrets/{secret}`: secret-undefine.
    pub fn secret_undefine(&mut self, secret: &str) -> Result<(), ClientError> {
        self.send_no_answer::<()>("DELETE", &secret_path(secret, ""), None)
    }

    /// `GET /secrets/{secret}/xml`: secret-dumpxml.
    pub fn secret_xml(&mut self, secret: &str) -> Result<Reply<XmlDocument>, ClientError> {
        self.get(&secret_path(secret, "/xml"))
    }

    /// `PUT /secrets/{secret}/value`: secret-set-value, `base64` encoded.
    pub fn secret_set_value(&mut self, secret: &str, base64: &str) -> Result<(), ClientError> {
        let req = SecretValue {
            value: base64.into(),
        };
        self.send_no_answer("PUT", &secret_path(secret, "/value"), Some(&req))
    }

    /// `GET /secrets/{secret}/value`: secret-get-value, base64 encoded.
    pub fn secret_value(&mut self, secret: &str) -> Result<Reply<SecretValue>, ClientError> {
        self.get(&secret_path(secret, "/value"))
    }
}
