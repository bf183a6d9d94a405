//! `GET /domains/{dom}/console`: the connection is upgraded
//! (`Upgrade: vireo-console`) and then joined, byte for byte, with a
//! console connection the driver opens. One client at a time per domain;
//! `force=true` takes the console from the one attached.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;

use super::failure::{Answer, Failure};
use super::lifecycle::not_running;
use super::ops::call;
use super::Daemon;

/// The protocol name clients ask to upgrade to.
pub(crate) const PROTOCOL: &str = "vireo-console";

/// Upgrades the request into a console session.
pub(crate) async fn attach(d: &Arc<Daemon>, key: &str, force: bool, mut req: Request) -> Answer {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !asked {
        return Err(Failure::bad_request(format!(
            "the console is reached with the header 'Upgrade: {PROTOCOL}'"
        )));
    }
    let (name, uuid, instance, generation) = {
        let table = d.registry.lock();
        let (name, entry) = table.lookup(key)?;
        let live = entry.live.as_ref().ok_or_else(|| not_running(name))?;
        if entry.console.is_some() && !force {
            return Err(busy(name));
        }
        (
            name.to_string(),
            entry.uuid,
            live.instance.clone(),
            live.generation,
        )
    };
    let guest = call(instance, |i| i.console()).await?;
    guest
        .set_nonblocking(true)
        .map_err(|e| Failure::driver(format!("console of domain '{name}': {e}")))?;
    let mut guest = tokio::net::UnixStream::from_std(guest)
        .map_err(|e| Failure::driver(format!("console of domain '{name}': {e}")))?;
    let upgrade = hyper::upgrade::on(&mut req);
    let session = d.console_sessions.fetch_add(1, Ordering::Relaxed);

    let mut table = d.registry.lock();
    let entry = table
        .get_mut(&name, uuid)
        .filter(|e| e.live.as_ref().is_some_and(|l| l.generation == generation))
        .ok_or_else(|| not_running(&name))?;
    if let Some((_, previous)) = entry.console.take() {
        if !force {
            return Err(busy(&name));
        }
        previous.abort();
    }
    let task_d = d.clone();
    let task_name = name.clone();
    // Spawned with the table held: the session is recorded before its
    // task can end and clear it.
    let task = tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut guest).await {
                    tracing::debug!("console of domain '{task_name}' ended: {e}");
                }
            }
            Err(e) => tracing::warn!("console of domain '{task_name}': upgrade failed: {e}"),
        }
        if let Some(entry) = task_d.registry.lock().get_mut(&task_name, uuid) {
            if entry.console.as_ref().is_some_and(|(n, _)| *n == session) {
                entry.console = None;
            }
        }
    });
    entry.console = Some((session, task.abort_handle()));
    drop(table);

    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, PROTOCOL)
        .body(Body::empty())
        .map_err(|e| Failure::internal(e.to_string()))
}

fn busy(name: &str) -> Failure {
    Failure::conflict(format!(
        "domain '{name}' already has a console client (force=true takes the console over)"
    ))
}
