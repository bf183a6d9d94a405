//! The client's calls for the volume operations that move data: copy
//! (vol-create-from, vol-clone), wipe, and the streamed upload and
//! download, which hold one piece of the data in memory at a time.

use std::io::{self, Read};

use super::http::HttpError;
use super::uri::percent_encode;
use super::{api_error, deadline_after, Client, ClientError, Reply};
use crate::api::{VolumeCopyRequest, VolumeSummary, VolumeTransfer, VolumeWipeRequest};

/// Bytes sent per chunk of an upload.
const UPLOAD_PIECE: usize = 1 << 20;

/// The least a copy or wipe is waited for: the daemon answers when the
/// data is written, which for a large volume takes far longer than any
/// other answer (the client's timeout still applies when longer).
pub const LONG_CHANGE: std::time::Duration = std::time::Duration::from_secs(3600);

fn vol_path(pool: &str, vol: &str, suffix: &str) -> String {
    format!(
        "/pools/{}/volumes/{}{suffix}",
        percent_encode(pool),
        percent_encode(vol)
    )
}

fn content_path(pool: &str, vol: &str, offset: u64, length: u64) -> String {
    vol_path(
        pool,
        vol,
        &format!("/content?offset={offset}&length={length}"),
    )
}

/// Where an upload goes in a volume.
#[derive(Debug, Clone, Copy, Default)]
pub struct UploadRange {
    /// The first byte of the volume's file written.
    pub offset: u64,
    /// Bytes at most (0: no bound).
    pub length: u64,
    /// virsh's `--sparse`: blocks of zeroes become holes.
    pub sparse: bool,
}

/// Where an upload failed: reading the local file, or the exchange.
#[derive(Debug)]
pub enum UploadError {
    /// The local file could not be read.
    Local(io::Error),
    /// The daemon refused, or the connection failed.
    Client(ClientError),
}

impl From<ClientError> for UploadError {
    fn from(e: ClientError) -> Self {
        UploadError::Client(e)
    }
}

impl Client {
    /// `POST /pools/{pool}/volumes/{vol}/copy`: a new volume in
    /// `target_pool` as `xml` defines it, with `vol`'s data, made as `how`
    /// says.
    pub fn vol_copy(
        &mut self,
        pool: &str,
        vol: &str,
        target_pool: &str,
        xml: &str,
        how: crate::storage::CopyOptions,
    ) -> Result<Reply<VolumeSummary>, ClientError> {
        let req = VolumeCopyRequest {
            pool: target_pool.into(),
            xml: xml.into(),
            reflink: how.reflink,
            prealloc_metadata: how.prealloc_metadata,
        };
        self.long_change(|c| c.send_json("POST", &vol_path(pool, vol, "/copy"), &req))
    }

    /// Runs `call` waiting at least [`LONG_CHANGE`] for its answer.
    pub(super) fn long_change<T>(
        &mut self,
        call: impl FnOnce(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let saved = self.timeout;
        self.timeout = saved.max(LONG_CHANGE);
        let result = call(self);
        self.timeout = saved;
        result
    }

    /// `POST /pools/{pool}/volumes/{vol}/wipe`.
    pub fn vol_wipe(
        &mut self,
        pool: &str,
        vol: &str,
        algorithm: Option<&str>,
    ) -> Result<Reply<VolumeSummary>, ClientError> {
        let req = VolumeWipeRequest {
            algorithm: algorithm.map(str::to_string),
        };
        self.long_change(|c| c.send_json("POST", &vol_path(pool, vol, "/wipe"), &req))
    }

    /// `PUT /pools/{pool}/volumes/{vol}/content`: the bytes `source`
    /// yields, chunked. The daemon's `100 Continue` (every check passed,
    /// the transport works) comes before any byte is sent, so a refusal
    /// or a failed ssh costs no data. `progress` hears the bytes sent.
    /// `range` says where, and whether the daemon punches the blocks of
    /// zeroes out of a file volume instead of writing them.
    pub fn vol_upload(
        &mut self,
        pool: &str,
        vol: &str,
        range: UploadRange,
        source: &mut dyn Read,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Reply<VolumeTransfer>, UploadError> {
        let mut path = content_path(pool, vol, range.offset, range.length);
        if range.sparse {
            path.push_str("&sparse=true");
        }
        let deadline = deadline_after(self.timeout);
        // A kept-alive connection with something to read was closed by
        // the daemon meanwhile: a new one (as `exchange` does).
        let kept = self
            .conn
            .take()
            .filter(|c| !super::transport::poll_in(c.stream.read_fd(), 0).unwrap_or(true));
        let mut conn = match kept {
            Some(c) => c,
            None => self.connect()?,
        };
        let fresh = !conn.used;
        let head = conn
            .send_head(
                "PUT",
                &path,
                &[
                    "Content-Type: application/octet-stream",
                    "Transfer-Encoding: chunked",
                    "Expect: 100-continue",
                ],
            )
            .and_then(|()| conn.read_head_or_continue("PUT", deadline, true))
            .map_err(|e| self.failure(e, &mut conn, fresh))?;
        if head.status != 100 {
            // Refused before any data: the body is the daemon's error. The
            // connection is not kept (the daemon may still await a body).
            let body = conn
                .read_body(deadline)
                .map_err(|e| self.failure(e, &mut conn, false))?;
            return Err(api_error(head.status, &body).into());
        }
        let mut buf = vec![0u8; UPLOAD_PIECE];
        let mut sent = 0u64;
        loop {
            let want = if range.length == 0 {
                buf.len()
            } else {
                usize::try_from(range.length - sent)
                    .unwrap_or(usize::MAX)
                    .min(buf.len())
            };
            if want == 0 {
                break;
            }
            let n = match source.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Dropping the connection mid-body makes the daemon stop.
                Err(e) => return Err(UploadError::Local(e)),
            };
            if let Err(e) = conn.send_chunk(&buf[..n]) {
                return Err(self.stream_cut(e, &mut conn).into());
            }
            sent += n as u64;
            progress(sent);
        }
        if let Err(e) = conn.send_chunk(&[]) {
            return Err(self.stream_cut(e, &mut conn).into());
        }
        // The daemon syncs the volume before it answers.
        let deadline = deadline_after(self.timeout);
        let head = conn
            .read_head("PUT", deadline)
            .map_err(|e| self.failure(e, &mut conn, false))?;
        let body = conn
            .read_body(deadline)
            .map_err(|e| self.failure(e, &mut conn, false))?;
        if head.keep_alive {
            self.conn = Some(conn);
        }
        if !(200..300).contains(&head.status) {
            return Err(api_error(head.status, &body).into());
        }
        Ok(self.decode(body)?)
    }

    /// A send that failed mid-upload: the daemon's answer when it gave
    /// one (it refused more data), else the connection's failure.
    fn stream_cut(&self, e: HttpError, conn: &mut super::http::Connection) -> ClientError {
        let soon = deadline_after(std::time::Duration::from_secs(2));
        if let Ok(head) = conn.read_head("PUT", soon) {
            if let Ok(body) = conn.read_body(soon) {
                if !(200..300).contains(&head.status) {
                    return api_error(head.status, &body);
                }
            }
        }
        self.failure(e, conn, false)
    }

    /// `GET /pools/{pool}/volumes/{vol}/content`: hands each piece of the
    /// range to `sink` as it arrives; returns the bytes received. Every
    /// wait for a piece is bounded by the client's timeout.
    pub fn vol_download(
        &mut self,
        pool: &str,
        vol: &str,
        offset: u64,
        length: u64,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u64, UploadError> {
        let path = content_path(pool, vol, offset, length);
        let deadline = deadline_after(self.timeout);
        let (mut conn, head) = self.exchange("GET", &path, &[], None, deadline)?;
        if !(200..300).contains(&head.status) {
            let body = conn
                .read_body(deadline)
                .map_err(|e| self.failure(e, &mut conn, false))?;
            return Err(api_error(head.status, &body).into());
        }
        let mut piece = Vec::with_capacity(2 << 20);
        let mut received = 0u64;
        loop {
            piece.clear();
            match conn.read_chunk(&mut piece, Some(deadline_after(self.timeout))) {
                Ok(true) => {
                    received += piece.len() as u64;
                    sink(&piece).map_err(UploadError::Local)?;
                }
                Ok(false) => break,
                Err(e) => return Err(self.failure(e, &mut conn, false).into()),
            }
        }
        if head.keep_alive {
            self.conn = Some(conn);
        }
        Ok(received)
    }
}
