//! The handlers of the host interface routes (`/interfaces...`); the
//! route table itself is in [`super::routes`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::failure::{no_content, ok, parse_body, Answer, Failure};
use super::routes::detached;
use super::{host_ifaces, Daemon};
use crate::api::{DefineRequest, XmlDocument};

type D = State<Arc<Daemon>>;
type Iface = Result<Path<String>, PathRejection>;

fn iface(p: Iface) -> Result<String, Failure> {
    p.map(|Path(n)| n)
        .map_err(|e| Failure::bad_request(format!("bad path: {e}")))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    q.map(|Query(t)| t)
        .map_err(|e| Failure::bad_request(format!("bad query: {}", e.body_text())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    filter: Option<String>,
}

pub(crate) async fn list(State(d): D, q: Result<Query<ListQuery>, QueryRejection>) -> Answer {
    let (active, inactive) = match query(q)?.filter.as_deref() {
        None | Some("active") => (true, false),
        Some("inactive") => (false, true),
        Some("all") => (true, true),
        Some(other) => {
            return Err(Failure::bad_request(format!(
                "unknown filter '{}': use active, inactive or all",
                other.escape_debug()
            )))
        }
    };
    Ok(ok(&host_ifaces::list(&d, active, inactive).await?))
}

pub(crate) async fn define(State(d): D, body: Bytes) -> Answer {
    let req: DefineRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        host_ifaces::define(&d, &req.xml).await
    })
    .await?))
}

pub(crate) async fn info(State(d): D, p: Iface) -> Answer {
    Ok(ok(&host_ifaces::info(&d, &iface(p)?).await?))
}

pub(crate) async fn undefine(State(d): D, p: Iface) -> Answer {
    let key = iface(p)?;
    detached(d.changes.clone(), async move {
        host_ifaces::undefine(&d, &key).await
    })
    .await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct XmlQuery {
    #[serde(default)]
    inactive: bool,
}

pub(crate) async fn dump_xml(
    State(d): D,
    p: Iface,
    q: Result<Query<XmlQuery>, QueryRejection>,
) -> Answer {
    let key = iface(p)?;
    let inactive = query(q)?.inactive;
    Ok(ok(&XmlDocument {
        xml: host_ifaces::xml(&d, &key, inactive)?,
    }))
}

pub(crate) async fn start(State(d): D, p: Iface) -> Answer {
    let key = iface(p)?;
    detached(d.changes.clone(), async move {
        host_ifaces::start(&d, &key).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn destroy(State(d): D, p: Iface) -> Answer {
    let key = iface(p)?;
    detached(d.changes.clone(), async move {
        host_ifaces::destroy(&d, &key).await
    })
    .await?;
    Ok(no_content())
}
