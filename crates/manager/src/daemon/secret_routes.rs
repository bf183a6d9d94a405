//! The handlers of the secret routes (`/secrets...`); the route table
//! itself is in [`super::routes`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};

use super::failure::{no_content, ok, parse_body, Answer, Failure};
use super::routes::detached;
use super::{secrets, Daemon};
use crate::api::{DefineRequest, SecretValue, XmlDocument};

type D = State<Arc<Daemon>>;
type SecretPath = Result<Path<String>, PathRejection>;

fn secret(p: SecretPath) -> Result<String, Failure> {
    p.map(|Path(n)| n)
        .map_err(|e| Failure::bad_request(format!("bad path: {e}")))
}

pub(crate) async fn list(State(d): D) -> Answer {
    Ok(ok(&secrets::list(&d)))
}

pub(crate) async fn define(State(d): D, body: Bytes) -> Answer {
    let req: DefineRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        secrets::define(&d, &req.xml).await
    })
    .await?))
}

pub(crate) async fn info(State(d): D, p: SecretPath) -> Answer {
    Ok(ok(&secrets::info(&d, &secret(p)?)?))
}

pub(crate) async fn undefine(State(d): D, p: SecretPath) -> Answer {
    let key = secret(p)?;
    detached(d.changes.clone(), async move {
        secrets::undefine(&d, &key).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn dump_xml(State(d): D, p: SecretPath) -> Answer {
    let xml = secrets::xml(&d, &secret(p)?)?;
    Ok(ok(&XmlDocument { xml }))
}

pub(crate) async fn set_value(State(d): D, p: SecretPath, body: Bytes) -> Answer {
    let key = secret(p)?;
    // Not parse_body: serde's message could quote the value.
    let req: SecretValue = serde_json::from_slice(&body)
        .map_err(|_| Failure::bad_request("bad request body: expected {\"value\": \"BASE64\"}"))?;
    detached(d.changes.clone(), async move {
        secrets::set_value(&d, &key, &req.value).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn get_value(State(d): D, p: SecretPath) -> Answer {
    let value = secrets::get_value(&d, &secret(p)?)?;
    Ok(ok(&SecretValue { value }))
}
