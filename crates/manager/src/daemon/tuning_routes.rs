//! The handlers of the placement routes (`/domains/{dom}/memory`,
//! `/vcpus`, `/emulator/affinity`, `/numatune`); the route table itself
//! is in [`super::routes`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::failure::{no_content, ok, parse_body, Answer, Failure};
use super::routes::detached;
use super::{tuning, Daemon};
use crate::api::{LimitsRequest, NumaTuneRequest, PinRequest, SetMemoryRequest};

type D = State<Arc<Daemon>>;
type Dom = Result<Path<String>, PathRejection>;
type DomAndVcpu = Result<Path<(String, String)>, PathRejection>;

fn bad_path(e: PathRejection) -> Failure {
    Failure::bad_request(format!("bad path: {e}"))
}

fn dom(p: Dom) -> Result<String, Failure> {
    p.map(|Path(d)| d).map_err(bad_path)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigQuery {
    #[serde(default)]
    config: bool,
}

fn config(q: Result<Query<ConfigQuery>, QueryRejection>) -> Result<bool, Failure> {
    q.map(|Query(t)| t.config)
        .map_err(|e| Failure::bad_request(format!("bad query: {}", e.body_text())))
}

pub(crate) async fn memory(State(d): D, p: Dom) -> Answer {
    Ok(ok(&tuning::memory_stats(&d, &dom(p)?).await?))
}

pub(crate) async fn set_memory(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: SetMemoryRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        tuning::set_memory(&d, &key, &req).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn vcpus(
    State(d): D,
    p: Dom,
    q: Result<Query<ConfigQuery>, QueryRejection>,
) -> Answer {
    Ok(ok(&tuning::vcpus(&d, &dom(p)?, config(q)?).await?))
}

pub(crate) async fn pin_vcpu(State(d): D, p: DomAndVcpu, body: Bytes) -> Answer {
    let (key, vcpu) = p.map(|Path(pair)| pair).map_err(bad_path)?;
    let vcpu: u32 = vcpu
        .parse()
        .map_err(|_| Failure::bad_request(format!("vCPU '{vcpu}' is not a number")))?;
    let req: PinRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        tuning::pin_vcpu(&d, &key, vcpu, &req).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn emulator(
    State(d): D,
    p: Dom,
    q: Result<Query<ConfigQuery>, QueryRejection>,
) -> Answer {
    Ok(ok(&tuning::emulator(&d, &dom(p)?, config(q)?).await?))
}

pub(crate) async fn pin_emulator(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: PinRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        tuning::pin_emulator(&d, &key, &req).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn numatune(
    State(d): D,
    p: Dom,
    q: Result<Query<ConfigQuery>, QueryRejection>,
) -> Answer {
    Ok(ok(&tuning::numatune(&d, &dom(p)?, config(q)?)?))
}

pub(crate) async fn set_numatune(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: NumaTuneRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        tuning::set_numatune(&d, &key, &req).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn limits(
    State(d): D,
    p: Dom,
    q: Result<Query<ConfigQuery>, QueryRejection>,
) -> Answer {
    Ok(ok(&tuning::limits(&d, &dom(p)?, config(q)?)?))
}

pub(crate) async fn set_limits(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: LimitsRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        tuning::set_limits(&d, &key, &req).await
    })
    .await?;
    Ok(no_content())
}
