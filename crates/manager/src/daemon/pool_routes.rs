//! The handlers of the storage routes (`/pools...`); the route table
//! itself is in [`super::routes`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::failure::{no_content, ok, parse_body, Answer, Failure};
use super::routes::detached;
use super::{pools, Daemon};
use crate::api::{
    AutostartRequest, DefineRequest, VolumeCreateRequest, VolumeResizeRequest, XmlDocument,
};
use crate::storage::BuildMode;

type D = State<Arc<Daemon>>;
type PoolPath = Result<Path<String>, PathRejection>;
type VolPath = Result<Path<(String, String)>, PathRejection>;

fn pool(p: PoolPath) -> Result<String, Failure> {
    p.map(|Path(n)| n)
        .map_err(|e| Failure::bad_request(format!("bad path: {e}")))
}

fn vol(p: VolPath) -> Result<(String, String), Failure> {
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
    Ok(ok(&pools::list(&d, active, inactive).await))
}

pub(crate) async fn define(State(d): D, body: Bytes) -> Answer {
    let req: DefineRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        pools::define(&d, &req.xml).await
    })
    .await?))
}

pub(crate) async fn create(State(d): D, body: Bytes) -> Answer {
    let req: DefineRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        pools::create(&d, &req.xml).await
    })
    .await?))
}

pub(crate) async fn info(State(d): D, p: PoolPath) -> Answer {
    let key = pool(p)?;
    let d2 = d.clone();
    let summary = tokio::task::spawn_blocking(move || pools::info(&d2, &key)).await??;
    Ok(ok(&summary))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct XmlQuery {
    #[serde(default)]
    inactive: bool,
}

pub(crate) async fn dump_xml(
    State(d): D,
    p: PoolPath,
    q: Result<Query<XmlQuery>, QueryRejection>,
) -> Answer {
    let key = pool(p)?;
    let inactive = query(q)?.inactive;
    let d2 = d.clone();
    let xml = tokio::task::spawn_blocking(move || pools::xml(&d2, &key, inactive)).await??;
    Ok(ok(&XmlDocument { xml }))
}

/// A change with only the pool in its path, answered 204.
macro_rules! pool_change {
    ($name:ident, $op:path) => {
        pub(crate) async fn $name(State(d): D, p: PoolPath) -> Answer {
            let key = pool(p)?;
            detached(d.changes.clone(), async move { $op(&d, &key).await }).await?;
            Ok(no_content())
        }
    };
}

pool_change!(undefine, pools::undefine);
pool_change!(start, pools::start);
pool_change!(destroy, pools::destroy);
pool_change!(delete, pools::delete);
pool_change!(refresh, pools::refresh);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BuildQuery {
    /// virsh's `--overwrite` (true) or `--no-overwrite` (false).
    overwrite: Option<bool>,
}

pub(crate) async fn build(
    State(d): D,
    p: PoolPath,
    q: Result<Query<BuildQuery>, QueryRejection>,
) -> Answer {
    let key = pool(p)?;
    let mode = match query(q)?.overwrite {
        None => BuildMode::Default,
        Some(true) => BuildMode::Overwrite,
        Some(false) => BuildMode::NoOverwrite,
    };
    detached(d.changes.clone(), async move {
        pools::build(&d, &key, mode).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn autostart(State(d): D, p: PoolPath, body: Bytes) -> Answer {
    let key = pool(p)?;
    let req: AutostartRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        pools::set_autostart(&d, &key, req.enabled).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn volumes(State(d): D, p: PoolPath) -> Answer {
    Ok(ok(&pools::volumes(&d, &pool(p)?).await?))
}

pub(crate) async fn create_volume(State(d): D, p: PoolPath, body: Bytes) -> Answer {
    let key = pool(p)?;
    let req: VolumeCreateRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        pools::create_volume(&d, &key, &req.xml, req.prealloc_metadata).await
    })
    .await?))
}

pub(crate) async fn volume(State(d): D, p: VolPath) -> Answer {
    let (key, name) = vol(p)?;
    Ok(ok(&pools::volume(&d, &key, &name).await?))
}

pub(crate) async fn volume_xml(State(d): D, p: VolPath) -> Answer {
    let (key, name) = vol(p)?;
    Ok(ok(&XmlDocument {
        xml: pools::volume_xml(&d, &key, &name).await?,
    }))
}

pub(crate) async fn delete_volume(State(d): D, p: VolPath) -> Answer {
    let (key, name) = vol(p)?;
    detached(d.changes.clone(), async move {
        pools::delete_volume(&d, &key, &name).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn resize_volume(State(d): D, p: VolPath, body: Bytes) -> Answer {
    let (key, name) = vol(p)?;
    let req: VolumeResizeRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        pools::resize_volume(&d, &key, &name, req.capacity, req.shrink).await
    })
    .await?))
}
