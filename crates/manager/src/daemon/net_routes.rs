//! The handlers of the network routes (`/networks...`) and of
//! `domifaddr` (`/domains/{dom}/addresses`); the route table itself is in
//! [`super::routes`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::failure::{no_content, ok, parse_body, parse_optional_body, Answer, Failure};
use super::routes::detached;
use super::{networks, Daemon};
use crate::api::{
    AutostartRequest, DefineRequest, InterfaceAddress, NetworkDestroyRequest, NetworkUpdateRequest,
    XmlDocument,
};

type D = State<Arc<Daemon>>;
type Net = Result<Path<String>, PathRejection>;

fn net(p: Net) -> Result<String, Failure> {
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
    Ok(ok(&networks::list(&d, active, inactive)))
}

pub(crate) async fn define(State(d): D, body: Bytes) -> Answer {
    let req: DefineRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        networks::define(&d, &req.xml).await
    })
    .await?))
}

pub(crate) async fn create(State(d): D, body: Bytes) -> Answer {
    let req: DefineRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        networks::create(&d, &req.xml).await
    })
    .await?))
}

pub(crate) async fn info(State(d): D, p: Net) -> Answer {
    Ok(ok(&networks::info(&d, &net(p)?)?))
}

pub(crate) async fn undefine(State(d): D, p: Net) -> Answer {
    let key = net(p)?;
    detached(d.changes.clone(), async move {
        networks::undefine(&d, &key).await
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
    p: Net,
    q: Result<Query<XmlQuery>, QueryRejection>,
) -> Answer {
    let key = net(p)?;
    let inactive = query(q)?.inactive;
    Ok(ok(&XmlDocument {
        xml: networks::xml(&d, &key, inactive)?,
    }))
}

pub(crate) async fn start(State(d): D, p: Net) -> Answer {
    let key = net(p)?;
    detached(
        d.changes.clone(),
        async move { networks::start(&d, &key).await },
    )
    .await?;
    Ok(no_content())
}

pub(crate) async fn destroy(State(d): D, p: Net, body: Bytes) -> Answer {
    let key = net(p)?;
    let req: NetworkDestroyRequest = parse_optional_body(&body)?;
    detached(d.changes.clone(), async move {
        networks::destroy(&d, &key, req.force).await
    })
    .await?;
    Ok(no_content())
}

pub(crate) async fn autostart(State(d): D, p: Net, body: Bytes) -> Answer {
    let key = net(p)?;
    let req: AutostartRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        networks::set_autostart(&d, &key, req.enabled).await
    })
    .await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseQuery {
    mac: Option<String>,
}

pub(crate) async fn leases(
    State(d): D,
    p: Net,
    q: Result<Query<LeaseQuery>, QueryRejection>,
) -> Answer {
    let key = net(p)?;
    let mac = query(q)?.mac;
    Ok(ok(&networks::leases(&d, &key, mac.as_deref()).await?))
}

pub(crate) async fn update(State(d): D, p: Net, body: Bytes) -> Answer {
    let key = net(p)?;
    let req: NetworkUpdateRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        networks::update(&d, &key, &req).await
    })
    .await?;
    Ok(no_content())
}

/// `domifaddr`: the addresses the networks' DHCP servers leased to a
/// domain's interfaces (libvirt's default source, `lease`).
pub(crate) async fn addresses(State(d): D, p: Net) -> Answer {
    let key = net(p)?;
    let ifaces: Vec<(String, String, String)> = {
        let table = d.registry.lock();
        let (_, entry) = table.lookup(&key)?;
        let domain = entry
            .live
            .as_ref()
            .map(|l| l.domain.clone())
            .ok_or_else(|| Failure::conflict(format!("domain '{key}' is not running")))?;
        domain
            .devices
            .interfaces
            .iter()
            .filter_map(|i| match &i.kind {
                virtxml::InterfaceKind::Network { network, .. } => Some((
                    network.clone(),
                    i.mac.to_string(),
                    i.target.clone().unwrap_or_else(|| "-".to_string()),
                )),
                _ => None,
            })
            .collect()
    };
    let mut out = Vec::new();
    for (network, mac, name) in ifaces {
        // A network destroyed under a running domain has no leases.
        let Ok(leases) = networks::leases(&d, &network, Some(&mac)).await else {
            continue;
        };
        out.extend(leases.into_iter().map(|l| InterfaceAddress {
            name: name.clone(),
            mac: l.mac,
            protocol: l.protocol,
            address: l.address,
            prefix: l.prefix,
        }));
    }
    Ok(ok(&out))
}
