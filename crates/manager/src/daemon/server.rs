//! The two unix sockets, their access rules, and the accept loops.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use super::failure::Failure;
use super::{routes, DaemonError};

/// Connections served at once per socket; more wait in the kernel's
/// backlog.
const MAX_CONNECTIONS: usize = 512;

/// How long a stopping daemon waits for the changes in progress.
const CHANGES_WAIT: Duration = Duration::from_secs(15);

/// A client has this long to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: Option<u32>,
    pid: Option<i32>,
    read_only: bool,
}

/// Fails when a daemon answers on `path`; removes a stale socket file
/// (nothing listens on it).
pub(crate) fn check_not_served(path: &Path) -> Result<(), DaemonError> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(DaemonError::SocketBusy(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            });
            if !is_socket {
                return Err(DaemonError::Listen {
                    path: path.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the path exists and is not a socket",
                    ),
                });
            }
            tracing::info!("replacing the stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|source| DaemonError::Listen {
                path: path.to_path_buf(),
                source,
            })
        }
    }
}

/// Binds `path` with `mode`; the read-write socket goes to group `vireo`
/// when that group exists.
fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<UnixListener, DaemonError> {
    let fail = |source| DaemonError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(fail)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(fail)?;
    }
    Ok(listener)
}

/// The gid of group `vireo`, if the host has one.
fn vireo_group() -> Option<u32> {
    group_id(&std::fs::read_to_string("/etc/group").ok()?, "vireo")
}

/// The gid of group `name` in `/etc/group`'s text.
fn group_id(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let mut fields = l.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// The bound sockets.
pub(crate) struct Listeners {
    main: (UnixListener, PathBuf),
    read_only: (UnixListener, PathBuf),
}

/// Binds the read-write socket (0660) and the read-only one (0666).
pub(crate) fn listen(socket: &Path, ro_socket: &Path) -> Result<Listeners, DaemonError> {
    let main = bind(socket, 0o660, vireo_group())?;
    let read_only = bind(ro_socket, 0o666, None)?;
    tracing::info!(
        "listening on {} and {} (read-only)",
        socket.display(),
        ro_socket.display()
    );
    Ok(Listeners {
        main: (main, socket.to_path_buf()),
        read_only: (read_only, ro_socket.to_path_buf()),
    })
}

/// Serves both sockets until SIGTERM or SIGINT, then removes them.
pub(crate) async fn serve(
    daemon: Arc<super::Daemon>,
    listeners: Listeners,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Runtime)?;
    let router = routes::router(daemon.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let Listeners { main, read_only } = listeners;
    let main_paths = main.1.clone();
    let ro_path = read_only.1.clone();
    let loops = [
        tokio::spawn(accept_loop(main.0, router.clone(), false, stop_rx.clone())),
        tokio::spawn(accept_loop(read_only.0, router, true, stop_rx)),
    ];
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping; running domains keep running"),
        _ = int.recv() => tracing::info!("SIGINT: stopping; running domains keep running"),
    }
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // Changes in progress (a start between its driver and its record)
    // finish first, within a bound; new ones wait behind this and end
    // with the process.
    match tokio::time::timeout(CHANGES_WAIT, daemon.changes.clone().write_owned()).await {
        // Never released: no change starts between here and the exit.
        Ok(all_done) => std::mem::forget(all_done),
        Err(_) => tracing::warn!(
            "changes still in progress after {} s are cut off",
            CHANGES_WAIT.as_secs()
        ),
    }
    let _ = std::fs::remove_file(&main_paths);
    let _ = std::fs::remove_file(&ro_path);
    Ok(())
}

async fn accept_loop(
    listener: UnixListener,
    router: axum::Router,
    read_only: bool,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    // EMFILE and the like: give the table time to drain.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let cred = stream.peer_cred().ok();
        let peer = Peer {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
            read_only,
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                handle(router.clone(), peer, req)
            });
            // Without half-close, hyper notices a client that hangs up
            // (an event stream's, say) and drops its connection; a change
            // whose handler had begun runs on in its own task (routes.rs),
            // one whose handler had not is not made at all.
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// Whether the read-only socket serves this request.
fn read_only_allows(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let console = matches!(segments.as_slice(), ["domains", _, "console"]);
    // A volume's bytes are not for read-only clients either (libvirt
    // refuses vol-download on a read-only connection too).
    let content = matches!(segments.as_slice(), ["pools", _, "volumes", _, "content"]);
    // Nor a secret's value (libvirt refuses secret-get-value there too).
    let value = matches!(segments.as_slice(), ["secrets", _, "value"]);
    *method == Method::GET && !console && !content && !value
}

async fn handle(
    router: axum::Router,
    peer: Peer,
    req: hyper::Request<Incoming>,
) -> Result<Response, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if peer.read_only && !read_only_allows(&method, &path) {
        return Ok(Failure::forbidden().into_response());
    }
    let req: Request = req.map(Body::new);
    let response = match router.oneshot(req).await {
        Ok(r) => as_json_error(r).await,
        Err(never) => match never {},
    };
    if method != Method::GET {
        // Every change is logged with who asked for it.
        tracing::info!(
            "peer uid={} pid={}: {method} {path} -> {}",
            peer.uid.map_or("?".into(), |u| u.to_string()),
            peer.pid.map_or("?".into(), |p| p.to_string()),
            response.status().as_u16()
        );
    }
    Ok(response)
}

/// axum's own refusals (a body over its size limit, say) are plain text;
/// every error this API gives is `{"error": ...}`.
async fn as_json_error(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    Failure {
        status,
        message: message
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lookup() {
        let text = "root:x:0:\nvireo-admins:x:5:\nvireo:x:998:alice,bob\nbad:x:zz:\n";
        assert_eq!(group_id(text, "vireo"), Some(998));
        assert_eq!(group_id(text, "root"), Some(0));
        assert_eq!(group_id(text, "bad"), None);
        assert_eq!(group_id(text, "nobody"), None);
    }

    #[test]
    fn sockets_get_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let main = dir.path().join("sub/v.sock");
        let ro = crate::api::read_only_socket(&main);
        assert_eq!(ro, dir.path().join("sub/v-ro.sock"));
        let default = crate::api::read_only_socket(Path::new(crate::api::DEFAULT_SOCKET));
        assert_eq!(default, Path::new("/run/vireo/vireo-ro.sock"));
        let bare = crate::api::read_only_socket(Path::new("/x/control"));
        assert_eq!(bare, Path::new("/x/control-ro"));
        let _l = listen(&main, &ro).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&main), 0o660);
        assert_eq!(mode(&ro), 0o666);
    }

    #[test]
    fn read_only_rule() {
        assert!(read_only_allows(&Method::GET, "/domains"));
        assert!(read_only_allows(&Method::GET, "/domains/a/xml"));
        assert!(!read_only_allows(&Method::GET, "/domains/a/console"));
        assert!(read_only_allows(&Method::GET, "/domains/console"));
        assert!(!read_only_allows(&Method::POST, "/domains/a/start"));
        assert!(!read_only_allows(
            &Method::GET,
            "/pools/p/volumes/v/content"
        ));
        assert!(!read_only_allows(
            &Method::PUT,
            "/pools/p/volumes/v/content"
        ));
        assert!(read_only_allows(&Method::GET, "/pools/p/volumes/v"));
        assert!(!read_only_allows(&Method::GET, "/secrets/s/value"));
        assert!(read_only_allows(&Method::GET, "/secrets/s/xml"));
        assert!(!read_only_allows(&Method::DELETE, "/domains/a"));
    }

    #[test]
    fn stale_sockets_are_replaced_and_live_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        check_not_served(&path).unwrap();
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let e = check_not_served(&path).unwrap_err();
        assert!(e.to_string().contains("already serves"), "{e}");
        drop(live);
        check_not_served(&path).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, "not a socket").unwrap();
        assert!(check_not_served(&path).is_err());
    }
}
