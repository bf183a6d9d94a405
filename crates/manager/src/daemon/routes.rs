//! The route table of [`crate::api`] and the handlers that read.
//!
//! The router is built from [`routes`] alone, and a test checks that
//! table against `openapi.json`, so the served document and the served
//! routes cannot drift apart.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use serde::Deserialize;

use super::devices::{self, Family};
use super::failure::{no_content, ok, parse_body, parse_optional_body, Answer, Failure};
use super::registry::{driver_name, Entry};
use super::{
    console, host, iface_routes, lifecycle, net_routes, ops, pool_routes, port_policy,
    secret_routes, tuning_routes, vol_ops, Daemon,
};
use crate::api::{
    AutostartRequest, BandwidthRequest, CreateRequest, DefineRequest, DestroyRequest,
    DeviceRequest, DomainInfo, DomainStateInfo, DomainStats, StartRequest, XmlDocument,
};

/// The OpenAPI document served at `/openapi`.
pub(crate) const OPENAPI: &str = include_str!("openapi.json");

type D = State<Arc<Daemon>>;
type Dom = Result<Path<String>, PathRejection>;
type DomAndId = Result<Path<(String, String)>, PathRejection>;

macro_rules! route {
    ($method:ident $path:literal => $handler:expr) => {
        (Method::$method, $path, on(MethodFilter::$method, $handler))
    };
}

/// Every route: method, path (axum's syntax, as in the OpenAPI document)
/// and handler.
pub(crate) fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<Daemon>>)> {
    vec![
        route!(GET "/openapi" => openapi),
        route!(GET "/version" => version),
        route!(GET "/host" => node_info),
        route!(GET "/host/capabilities" => capabilities),
        route!(GET "/domains" => list),
        route!(POST "/domains" => define),
        route!(POST "/domains/create" => create),
        route!(GET "/domains/{dom}" => info),
        route!(DELETE "/domains/{dom}" => undefine),
        route!(GET "/domains/{dom}/xml" => dump_xml),
        route!(GET "/domains/{dom}/state" => state),
        route!(POST "/domains/{dom}/start" => start),
        route!(POST "/domains/{dom}/shutdown" => shutdown),
        route!(POST "/domains/{dom}/destroy" => destroy),
        route!(POST "/domains/{dom}/reboot" => reboot),
        route!(POST "/domains/{dom}/reset" => reset),
        route!(POST "/domains/{dom}/suspend" => suspend),
        route!(POST "/domains/{dom}/resume" => resume),
        route!(PUT "/domains/{dom}/autostart" => autostart),
        route!(GET "/domains/{dom}/stats" => stats),
        route!(GET "/domains/{dom}/disks" => disks),
        route!(POST "/domains/{dom}/disks" => attach_disk),
        route!(DELETE "/domains/{dom}/disks/{target}" => detach_disk),
        route!(GET "/domains/{dom}/interfaces" => interfaces),
        route!(POST "/domains/{dom}/interfaces" => attach_interface),
        route!(DELETE "/domains/{dom}/interfaces/{mac}" => detach_interface),
        route!(GET "/domains/{dom}/interfaces/{iface}/bandwidth" => bandwidth),
        route!(PUT "/domains/{dom}/interfaces/{iface}/bandwidth" => set_bandwidth),
        route!(GET "/domains/{dom}/memory" => tuning_routes::memory),
        route!(PUT "/domains/{dom}/memory" => tuning_routes::set_memory),
        route!(GET "/domains/{dom}/vcpus" => tuning_routes::vcpus),
        route!(PUT "/domains/{dom}/vcpus/{vcpu}/affinity" => tuning_routes::pin_vcpu),
        route!(GET "/domains/{dom}/emulator/affinity" => tuning_routes::emulator),
        route!(PUT "/domains/{dom}/emulator/affinity" => tuning_routes::pin_emulator),
        route!(GET "/domains/{dom}/numatune" => tuning_routes::numatune),
        route!(PUT "/domains/{dom}/numatune" => tuning_routes::set_numatune),
        route!(GET "/domains/{dom}/limits" => tuning_routes::limits),
        route!(PUT "/domains/{dom}/limits" => tuning_routes::set_limits),
        route!(GET "/domains/{dom}/console" => console_route),
        route!(GET "/domains/{dom}/addresses" => net_routes::addresses),
        route!(GET "/events" => events),
        route!(GET "/networks" => net_routes::list),
        route!(POST "/networks" => net_routes::define),
        route!(POST "/networks/create" => net_routes::create),
        route!(GET "/networks/{net}" => net_routes::info),
        route!(DELETE "/networks/{net}" => net_routes::undefine),
        route!(GET "/networks/{net}/xml" => net_routes::dump_xml),
        route!(POST "/networks/{net}/start" => net_routes::start),
        route!(POST "/networks/{net}/destroy" => net_routes::destroy),
        route!(PUT "/networks/{net}/autostart" => net_routes::autostart),
        route!(GET "/networks/{net}/leases" => net_routes::leases),
        route!(POST "/networks/{net}/update" => net_routes::update),
        route!(GET "/interfaces" => iface_routes::list),
        route!(POST "/interfaces" => iface_routes::define),
        route!(GET "/interfaces/{iface}" => iface_routes::info),
        route!(DELETE "/interfaces/{iface}" => iface_routes::undefine),
        route!(GET "/interfaces/{iface}/xml" => iface_routes::dump_xml),
        route!(POST "/interfaces/{iface}/start" => iface_routes::start),
        route!(POST "/interfaces/{iface}/destroy" => iface_routes::destroy),
        route!(GET "/pools" => pool_routes::list),
        route!(POST "/pools" => pool_routes::define),
        route!(POST "/pools/create" => pool_routes::create),
        route!(GET "/pools/{pool}" => pool_routes::info),
        route!(DELETE "/pools/{pool}" => pool_routes::undefine),
        route!(GET "/pools/{pool}/xml" => pool_routes::dump_xml),
        route!(POST "/pools/{pool}/build" => pool_routes::build),
        route!(POST "/pools/{pool}/start" => pool_routes::start),
        route!(POST "/pools/{pool}/destroy" => pool_routes::destroy),
        route!(POST "/pools/{pool}/delete" => pool_routes::delete),
        route!(POST "/pools/{pool}/refresh" => pool_routes::refresh),
        route!(PUT "/pools/{pool}/autostart" => pool_routes::autostart),
        route!(GET "/pools/{pool}/volumes" => pool_routes::volumes),
        route!(POST "/pools/{pool}/volumes" => pool_routes::create_volume),
        route!(GET "/pools/{pool}/volumes/{vol}" => pool_routes::volume),
        route!(DELETE "/pools/{pool}/volumes/{vol}" => pool_routes::delete_volume),
        route!(GET "/pools/{pool}/volumes/{vol}/xml" => pool_routes::volume_xml),
        route!(POST "/pools/{pool}/volumes/{vol}/resize" => pool_routes::resize_volume),
        route!(POST "/pools/{pool}/volumes/{vol}/copy" => vol_ops::copy),
        route!(POST "/pools/{pool}/volumes/{vol}/wipe" => vol_ops::wipe),
        route!(PUT "/pools/{pool}/volumes/{vol}/content" => vol_ops::upload),
        route!(GET "/pools/{pool}/volumes/{vol}/content" => vol_ops::download),
        route!(GET "/secrets" => secret_routes::list),
        route!(POST "/secrets" => secret_routes::define),
        route!(GET "/secrets/{secret}" => secret_routes::info),
        route!(DELETE "/secrets/{secret}" => secret_routes::undefine),
        route!(GET "/secrets/{secret}/xml" => secret_routes::dump_xml),
        route!(GET "/secrets/{secret}/value" => secret_routes::get_value),
        route!(PUT "/secrets/{secret}/value" => secret_routes::set_value),
    ]
}

/// The largest request body read. A body carries at most one XML
/// document, which virtxml caps at [`virtxml::MAX_DOCUMENT_BYTES`]; as a
/// JSON string each byte of valid XML takes at most three (`é` is two
/// bytes and, from an encoder that escapes non-ASCII, the six of
/// `\u00e9`), so no document virtxml accepts is refused here for its
/// encoding, and nothing larger is ever buffered.
pub(crate) const MAX_BODY_BYTES: usize = 3 * virtxml::MAX_DOCUMENT_BYTES + 64 * 1024;

/// The daemon's router.
pub(crate) fn router(daemon: Arc<Daemon>) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(daemon)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> Failure {
    Failure::not_found(format!("no such route: {method} {}", uri.path()))
}

async fn no_method(method: Method, uri: axum::http::Uri) -> Failure {
    Failure {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{method} is not allowed on {}", uri.path()),
    }
}

/// Runs a change to its end in a task of its own: a client that hangs up
/// mid-request drops the handler, and a start cut off between the driver
/// and the record (or a destroy before its end is recorded) must not be.
/// Each holds a share of [`Daemon::changes`], which a stopping daemon
/// waits for.
pub(crate) async fn detached<T: Send + 'static>(
    changes: Arc<tokio::sync::RwLock<()>>,
    change: impl std::future::Future<Output = Result<T, Failure>> + Send + 'static,
) -> Result<T, Failure> {
    // Spawned at the first poll, with nothing awaited before: the share
    // is taken inside the task.
    tokio::spawn(async move {
        let _share = changes.read_owned().await;
        change.await
    })
    .await?
}

fn dom(p: Dom) -> Result<String, Failure> {
    p.map(|Path(d)| d)
        .map_err(|e| Failure::bad_request(format!("bad path: {e}")))
}

fn dom_and_id(p: DomAndId) -> Result<(String, String), Failure> {
    p.map(|Path(pair)| pair)
        .map_err(|e| Failure::bad_request(format!("bad path: {e}")))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    q.map(|Query(t)| t)
        .map_err(|e| Failure::bad_request(format!("bad query: {}", e.body_text())))
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn version(State(d): D) -> Response {
    ok(&host::version(&d.drivers))
}

async fn node_info() -> Answer {
    let info = tokio::task::spawn_blocking(host::node_info).await?;
    Ok(ok(&info))
}

async fn capabilities(State(d): D) -> Answer {
    let xml = tokio::task::spawn_blocking(move || host::capabilities(&d.drivers)).await?;
    Ok(ok(&XmlDocument { xml }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    filter: Option<String>,
}

async fn list(State(d): D, q: Result<Query<ListQuery>, QueryRejection>) -> Answer {
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
    Ok(ok(&d.registry.summaries(active, inactive)))
}

async fn define(State(d): D, body: Bytes) -> Answer {
    let req: DefineRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        ops::define(&d, &req.xml).await
    })
    .await?))
}

async fn create(State(d): D, body: Bytes) -> Answer {
    let req: CreateRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        ops::create(&d, &req.xml, req.paused).await
    })
    .await?))
}

fn domain_info(name: &str, e: &Entry) -> Option<DomainInfo> {
    let domain = e.current()?;
    let pid = e.live.as_ref().map(|l| l.record.pid);
    Some(DomainInfo {
        summary: e.summary(name),
        os_type: "hvm".to_string(),
        driver: driver_name(domain.driver).to_string(),
        vcpus: domain.vcpu.count,
        cpu_time_ns: 0,
        max_memory_kib: domain.memory_kib,
        used_memory_kib: domain.current_memory_kib.unwrap_or(domain.memory_kib),
        pid,
    })
}

async fn info(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    let mut info = {
        let table = d.registry.lock();
        let (name, entry) = table.lookup(&key)?;
        domain_info(name, entry).ok_or_else(|| super::registry::no_domain(&key))?
    };
    if let Some(pid) = info.pid {
        let cpu = crate::driver::process::cpu_time(pid);
        info.cpu_time_ns = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
    }
    Ok(ok(&info))
}

async fn undefine(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    detached(
        d.changes.clone(),
        async move { ops::undefine(&d, &key).await },
    )
    .await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XmlQuery {
    #[serde(default)]
    inactive: bool,
}

async fn dump_xml(State(d): D, p: Dom, q: Result<Query<XmlQuery>, QueryRejection>) -> Answer {
    let key = dom(p)?;
    let inactive = query(q)?.inactive;
    let domain = {
        let table = d.registry.lock();
        let (_, entry) = table.lookup(&key)?;
        let chosen = if inactive {
            entry.config.as_ref().or(entry.current())
        } else {
            entry.current()
        };
        chosen
            .cloned()
            .ok_or_else(|| super::registry::no_domain(&key))?
    };
    Ok(ok(&XmlDocument {
        xml: domain.to_xml(),
    }))
}

async fn state(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    let table = d.registry.lock();
    let (_, entry) = table.lookup(&key)?;
    Ok(ok(&DomainStateInfo {
        state: entry.state,
        reason: entry.reason,
    }))
}

async fn start(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: StartRequest = parse_optional_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        lifecycle::start(&d, &key, req.paused).await
    })
    .await?))
}

async fn shutdown(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    detached(
        d.changes.clone(),
        async move { ops::shutdown(&d, &key).await },
    )
    .await?;
    Ok(no_content())
}

async fn destroy(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: DestroyRequest = parse_optional_body(&body)?;
    detached(d.changes.clone(), async move {
        lifecycle::destroy(&d, &key, req.graceful).await
    })
    .await?;
    Ok(no_content())
}

async fn reboot(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    detached(
        d.changes.clone(),
        async move { ops::reboot(&d, &key).await },
    )
    .await?;
    Ok(no_content())
}

async fn reset(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    detached(d.changes.clone(), async move { ops::reset(&d, &key).await }).await?;
    Ok(no_content())
}

async fn suspend(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    detached(
        d.changes.clone(),
        async move { ops::suspend(&d, &key).await },
    )
    .await?;
    Ok(no_content())
}

async fn resume(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    detached(
        d.changes.clone(),
        async move { ops::resume(&d, &key).await },
    )
    .await?;
    Ok(no_content())
}

async fn autostart(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: AutostartRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        ops::autostart(&d, &key, req.enabled).await
    })
    .await?;
    Ok(no_content())
}

/// libvirt's numbers for `state.state` and `state.reason`.
fn state_numbers(e: &Entry) -> (u32, u32) {
    use crate::api::{DomainState as S, StateReason as R};
    let state = match e.state {
        S::Running => 1,
        S::Paused => 3,
        S::InShutdown => 4,
        S::ShutOff => 5,
        S::Crashed => 6,
    };
    let reason = match (e.state, e.reason) {
        (S::Running, R::Booted) => 1,
        (S::Running, R::Unpaused) => 4,
        (S::Paused, R::User) => 1,
        (S::Paused, R::IoError) => 5,
        (S::InShutdown, R::User) => 1,
        (S::ShutOff, R::Shutdown) => 1,
        (S::ShutOff, R::Destroyed) => 2,
        (S::ShutOff, R::Crashed) => 3,
        (S::ShutOff, R::Failed) => 6,
        (S::Crashed, R::Crashed) => 1,
        _ => 0,
    };
    (state, reason)
}

async fn stats(State(d): D, p: Dom) -> Answer {
    let key = dom(p)?;
    let (name, numbers, instance) = {
        let table = d.registry.lock();
        let (name, entry) = table.lookup(&key)?;
        (
            name.to_string(),
            state_numbers(entry),
            entry.live.as_ref().map(|l| l.instance.clone()),
        )
    };
    let mut fields = match instance {
        Some(i) => ops::call(i, |i| i.stats()).await?,
        None => Default::default(),
    };
    fields.insert("state.state".into(), numbers.0.into());
    fields.insert("state.reason".into(), numbers.1.into());
    Ok(ok(&DomainStats { name, fields }))
}

fn current_domain(d: &Daemon, key: &str) -> Result<Arc<virtxml::Domain>, Failure> {
    let table = d.registry.lock();
    let (_, entry) = table.lookup(key)?;
    entry
        .current()
        .cloned()
        .ok_or_else(|| super::registry::no_domain(key))
}

async fn disks(State(d): D, p: Dom) -> Answer {
    let domain = current_domain(&d, &dom(p)?)?;
    Ok(ok(&devices::disk_rows(&domain)))
}

async fn interfaces(State(d): D, p: Dom) -> Answer {
    let domain = current_domain(&d, &dom(p)?)?;
    Ok(ok(&devices::interface_rows(&domain)))
}

async fn attach_disk(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: DeviceRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        devices::attach(&d, &key, Family::Disk, &req).await
    })
    .await?;
    Ok(no_content())
}

async fn attach_interface(State(d): D, p: Dom, body: Bytes) -> Answer {
    let key = dom(p)?;
    let req: DeviceRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        devices::attach(&d, &key, Family::Interface, &req).await
    })
    .await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetachQuery {
    #[serde(default)]
    live: bool,
    #[serde(default)]
    config: bool,
}

async fn detach_disk(
    State(d): D,
    p: DomAndId,
    q: Result<Query<DetachQuery>, QueryRejection>,
) -> Answer {
    let (key, target) = dom_and_id(p)?;
    let q = query(q)?;
    detached(d.changes.clone(), async move {
        devices::detach(&d, &key, Family::Disk, &target, q.live, q.config).await
    })
    .await?;
    Ok(no_content())
}

async fn detach_interface(
    State(d): D,
    p: DomAndId,
    q: Result<Query<DetachQuery>, QueryRejection>,
) -> Answer {
    let (key, mac) = dom_and_id(p)?;
    let q = query(q)?;
    detached(d.changes.clone(), async move {
        devices::detach(&d, &key, Family::Interface, &mac, q.live, q.config).await
    })
    .await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BandwidthQuery {
    #[serde(default)]
    config: bool,
}

async fn bandwidth(
    State(d): D,
    p: DomAndId,
    q: Result<Query<BandwidthQuery>, QueryRejection>,
) -> Answer {
    let (key, iface) = dom_and_id(p)?;
    let q = query(q)?;
    Ok(ok(&port_policy::bandwidth(&d, &key, &iface, q.config)?))
}

async fn set_bandwidth(State(d): D, p: DomAndId, body: Bytes) -> Answer {
    let (key, iface) = dom_and_id(p)?;
    let req: BandwidthRequest = parse_body(&body)?;
    detached(d.changes.clone(), async move {
        port_policy::set_bandwidth(&d, &key, &iface, &req).await
    })
    .await?;
    Ok(no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleQuery {
    #[serde(default)]
    force: bool,
}

async fn console_route(
    State(d): D,
    p: Dom,
    q: Result<Query<ConsoleQuery>, QueryRejection>,
    req: Request,
) -> Answer {
    let key = dom(p)?;
    let force = query(q)?.force;
    console::attach(&d, &key, force, req).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    domain: Option<String>,
}

async fn events(State(d): D, q: Result<Query<EventsQuery>, QueryRejection>) -> Answer {
    let uuid = match query(q)?.domain {
        Some(key) => {
            let table = d.registry.lock();
            Some(table.lookup(&key)?.1.uuid)
        }
        None => None,
    };
    Ok(d.events.stream(uuid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(
            doc["openapi"].as_str().unwrap().split('.').next(),
            Some("3")
        );
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if method == "parameters" {
                    continue;
                }
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(missing.is_empty(), "served but not documented: {missing:?}");
        assert!(extra.is_empty(), "documented but not served: {extra:?}");
    }

    #[test]
    fn every_route_fits_in_one_router() {
        // axum panics on paths that conflict (such as two parameter names
        // at one position); building the table is the check.
        let mut router: Router<Arc<Daemon>> = Router::new();
        for (_, path, handler) in routes() {
            router = router.route(path, handler);
        }
        drop(router);
    }
}
