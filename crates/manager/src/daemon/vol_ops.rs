//! The volume operations that move data: `vol-create-from` and
//! `vol-clone` (one copy route), `vol-wipe`, and `vol-upload` and
//! `vol-download`, whose bytes stream through the request or answer body.
//!
//! A stream moves through a channel of a few pieces between the
//! connection and a blocking thread that does the file I/O, so a transfer
//! of any size holds at most a few MiB in memory. Copies
//! and wipes are changes like the other volume changes (one at a time,
//! under [`super::pools::Pools`]' lock); transfers are not, since they
//! can run as long as a client sends.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use virtxml::Volume;

use super::failure::{ok, parse_body, Answer, Failure};
use super::pools::{self, active, blocking, users, volume_summary};
use super::routes::detached;
use super::Daemon;
use crate::api::{VolumeCopyRequest, VolumeSummary, VolumeTransfer, VolumeWipeRequest};
use crate::storage::{stream, wipe, Backend, StorageError, VolumeInfo};

type D = State<Arc<Daemon>>;
type VolPath = Result<Path<(String, String)>, PathRejection>;

/// Bytes per piece of a download (an upload's pieces are the frames the
/// connection reads, at most hyper's buffer each).
const PIECE: usize = 1 << 20;
/// Pieces queued between the connection and the file: with the piece
/// size, what bounds a transfer's memory.
const IN_FLIGHT: usize = 4;

fn vol(p: VolPath) -> Result<(String, String), Failure> {
    p.map(|Path(n)| n)
        .map_err(|e| Failure::bad_request(format!("bad path: {e}")))
}

/// The volume `name` of the active pool `key`.
async fn find(d: &Daemon, key: &str, name: &str) -> Result<VolumeInfo, Failure> {
    let pool = active(d, key)?;
    let name = name.to_string();
    let b = pools::backend(d, &pool).map_err(pools::failure)?;
    blocking(move || b.volume(&name)).await
}

/// Refuses a change of a volume a running domain uses.
fn not_in_use(d: &Daemon, v: &VolumeInfo, what: &str) -> Result<(), Failure> {
    let using = users(d, &v.path);
    if using.is_empty() {
        return Ok(());
    }
    Err(Failure::conflict(format!(
        "cannot {what} volume '{}': it is in use by running domain(s) {}",
        v.name,
        using.join(", ")
    )))
}

/// `POST /pools/{pool}/volumes/{vol}/copy`.
pub(crate) async fn copy(State(d): D, p: VolPath, body: Bytes) -> Answer {
    let (key, name) = vol(p)?;
    let req: VolumeCopyRequest = parse_body(&body)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        copy_volume(&d, &key, &name, &req).await
    })
    .await?))
}

async fn copy_volume(
    d: &Arc<Daemon>,
    key: &str,
    name: &str,
    req: &VolumeCopyRequest,
) -> Result<VolumeSummary, Failure> {
    let _ops = d.pools.ops.lock().await;
    let source = find(d, key, name).await?;
    let target = active(d, &req.pool)?;
    let vol = Volume::parse(&req.xml)
        .map_err(|e| Failure::unprocessable(e.to_string()))?
        .volume;
    let how = crate::storage::CopyOptions {
        reflink: req.reflink,
        prealloc_metadata: req.prealloc_metadata,
    };
    let v = blocking(move || Backend::open(&target)?.create_from(&vol, &source, how)).await?;
    Ok(volume_summary(&v))
}

/// `POST /pools/{pool}/volumes/{vol}/wipe`.
pub(crate) async fn wipe(State(d): D, p: VolPath, body: Bytes) -> Answer {
    let (key, name) = vol(p)?;
    let req: VolumeWipeRequest = if body.is_empty() {
        VolumeWipeRequest::default()
    } else {
        parse_body(&body)?
    };
    let algorithm = wipe::Algorithm::parse(req.algorithm.as_deref()).map_err(pools::failure)?;
    Ok(ok(&detached(d.changes.clone(), async move {
        let _ops = d.pools.ops.lock().await;
        let v = find(&d, &key, &name).await?;
        not_in_use(&d, &v, "wipe")?;
        let pool = active(&d, &key)?;
        let b = pools::backend(&d, &pool).map_err(pools::failure)?;
        let v = blocking(move || b.wipe(&name, algorithm)).await?;
        Ok(volume_summary(&v))
    })
    .await?))
}

/// `?offset=N&length=N` of a transfer (0 or none: from the start, to the
/// end).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    length: u64,
}

/// An upload's query: the range, and virsh's `--sparse`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    length: u64,
    #[serde(default)]
    sparse: bool,
}

fn range(q: Result<Query<RangeQuery>, QueryRejection>) -> Result<RangeQuery, Failure> {
    q.map(|Query(r)| r)
        .map_err(|e| Failure::bad_request(format!("bad query: {}", e.body_text())))
}

/// `PUT /pools/{pool}/volumes/{vol}/content`: every check is made before
/// the body is read, so a client that asked `Expect: 100-continue` hears
/// a refusal before it sends a byte.
pub(crate) async fn upload(
    State(d): D,
    p: VolPath,
    q: Result<Query<UploadQuery>, QueryRejection>,
    body: Body,
) -> Answer {
    let (key, name) = vol(p)?;
    let r = q
        .map(|Query(r)| r)
        .map_err(|e| Failure::bad_request(format!("bad query: {}", e.body_text())))?;
    let v = find(&d, &key, &name).await?;
    not_in_use(&d, &v, "upload to")?;
    let mut transfer = blocking(move || stream::upload(&v, r.offset, r.length, r.sparse)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || {
        let mut bytes = 0u64;
        while let Some(piece) = rx.blocking_recv() {
            transfer.write_next(&piece)?;
            bytes += piece.len() as u64;
        }
        transfer.finish()?;
        Ok::<u64, StorageError>(bytes)
    });
    let mut data = body.into_data_stream();
    let mut cut: Option<String> = None;
    while let Some(piece) = data.next().await {
        match piece {
            Ok(b) => {
                if tx.send(b).await.is_err() {
                    // The writer stopped: its error is the answer.
                    break;
                }
            }
            Err(e) => {
                cut = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let bytes = writer.await?.map_err(pools::failure)?;
    if let Some(e) = cut {
        return Err(Failure::bad_request(format!(
            "the upload to volume '{name}' ended after {bytes} bytes: {e}"
        )));
    }
    tracing::info!("uploaded {bytes} bytes to volume '{name}' of pool '{key}'");
    Ok(ok(&VolumeTransfer { bytes }))
}

/// `GET /pools/{pool}/volumes/{vol}/content`: the range, chunked. A read
/// error cuts the stream short, which the client reports.
pub(crate) async fn download(
    State(d): D,
    p: VolPath,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Answer {
    let (key, name) = vol(p)?;
    let r = range(q)?;
    let v = find(&d, &key, &name).await?;
    let mut transfer = blocking(move || stream::download(&v, r.offset, r.length)).await?;
    let length = transfer.length;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = vec![0u8; PIECE];
        match transfer.read_next(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("download of volume '{name}' of pool '{key}' cut short: {e}");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        }
    });
    let pieces = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    Ok(Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
        .header("X-Vireo-Length", length.to_string())
        .body(Body::from_stream(pieces))
        .map_err(|e| Failure::internal(e.to_string()))?
        .into_response())
}
