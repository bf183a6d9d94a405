//! Lifecycle events: a broadcast to every `GET /events` client.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use tokio::sync::broadcast;
use virtxml::Uuid;

use crate::api::{Event, EventKind};

/// Events a slow client may fall behind by before it misses some (it is
/// told with a log line on the daemon's side; the stream goes on).
const BACKLOG: usize = 1024;

/// The event bus.
pub(crate) struct Events {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Events {
    /// A bus with no listener yet.
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    /// Sends an event to every listener (none is fine).
    pub fn emit(&self, domain: &str, uuid: Uuid, event: EventKind, detail: &str) {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        tracing::info!(
            "event 'lifecycle' for domain '{domain}': {} {detail}",
            event.virsh_name()
        );
        let _ = self.tx.send(Arc::new(Event {
            timestamp,
            domain: domain.to_string(),
            uuid: uuid.to_string(),
            event,
            detail: detail.to_string(),
        }));
    }

    /// A streaming answer: every event from now on (those of the domain
    /// with `uuid` only, when given), one JSON object per line, until the
    /// client goes away.
    pub fn stream(&self, uuid: Option<Uuid>) -> Response {
        let rx = self.tx.subscribe();
        let uuid = uuid.map(|u| u.to_string());
        let lines = futures_util::stream::unfold((rx, uuid), |(mut rx, uuid)| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => {
                        if uuid.as_ref().is_some_and(|u| *u != event.uuid) {
                            continue;
                        }
                        let Ok(mut line) = serde_json::to_vec(&*event) else {
                            continue;
                        };
                        line.push(b'\n');
                        return Some((Ok::<Bytes, Infallible>(Bytes::from(line)), (rx, uuid)));
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("an event client fell behind and missed {n} events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Body::from_stream(lines))
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}
