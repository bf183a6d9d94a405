//! `iscsi-direct` pools: the LUNs of one iSCSI target, reached in user
//! space through libiscsi (the `iscsi` crate), as libvirt's pool of that
//! type does. Nothing is attached to the host: `pool-start` logs in to
//! check the target answers, and each listing logs in, reports the LUNs
//! and reads their capacity. Volumes are the disk LUNs, named
//! `unit:0:0:N` with the path `iscsi://HOST:PORT/IQN/N` (what a domain
//! disk on them opens); the target makes and sizes them, so volumes are
//! neither created, deleted nor resized here.

use std::path::PathBuf;
use std::time::Duration;

use iscsi::{Chap, Login, Session};
use virtxml::{Pool, PoolSpace, Volume, VolumeFormat};

use super::{Credentials, StorageError, VolumeInfo};

/// The initiator name used when the pool's XML gives none.
pub const DEFAULT_INITIATOR: &str = "iqn.2026-01.org.vireo:initiator";

/// How long a login or one SCSI command may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// libvirt's prefix of an iSCSI volume name (`unit:0:0:LUN`).
const VOLUME_PREFIX: &str = "unit:0:0:";

/// One target's LUNs.
#[derive(Debug, Clone)]
pub struct IscsiDirectPool {
    host: String,
    port: u16,
    target: String,
    initiator: String,
    /// CHAP credentials, for a pool with `<auth>` (the daemon looks
    /// the secret up).
    chap: Option<Chap>,
    /// Whether the pool has `<auth>`: without credentials it cannot log in.
    wants_chap: bool,
}

fn remote(target: &str, e: iscsi::Error) -> StorageError {
    StorageError::Host(format!("iSCSI target {target}: {e}"))
}

impl IscsiDirectPool {
    /// The pool `pool` defines (virtxml checked its host and IQN).
    pub fn new(pool: &Pool) -> Result<Self, StorageError> {
        let invalid =
            |what: &str| StorageError::Invalid(format!("pool '{}' has no {what}", pool.name));
        let host = pool
            .source
            .host
            .as_ref()
            .ok_or_else(|| invalid("<source><host>"))?;
        let target = pool
            .source
            .devices
            .first()
            .ok_or_else(|| invalid("<source><device path='IQN'/>"))?;
        Ok(Self {
            host: host.name.clone(),
            port: host.port.unwrap_or(iscsi::DEFAULT_PORT),
            target: target.clone(),
            initiator: pool
                .source
                .initiator
                .clone()
                .unwrap_or_else(|| DEFAULT_INITIATOR.to_string()),
            chap: None,
            wants_chap: pool.source.auth.is_some(),
        })
    }

    /// The pool logging in with `chap`.
    pub fn with_chap(mut self, chap: Option<Credentials>) -> Self {
        self.chap = chap.map(|c| Chap {
            user: c.user,
            secret: c.secret,
        });
        self
    }

    fn portal(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn session(&self) -> Result<Session, StorageError> {
        if self.wants_chap && self.chap.is_none() {
            return Err(StorageError::Invalid(format!(
                "iSCSI target {}: the pool has <auth> but no CHAP credentials were found",
                self.target
            )));
        }
        Session::connect(&Login {
            portal: self.portal(),
            target: self.target.clone(),
            initiator: self.initiator.clone(),
            chap: self.chap.clone(),
            timeout: TIMEOUT,
        })
        .map_err(|e| remote(&self.target, e))
    }

    /// `pool-start` and `pool-refresh`: the target takes our login and
    /// reports its LUNs.
    pub fn check(&self) -> Result<(), StorageError> {
        let mut s = self.session()?;
        s.report_luns().map_err(|e| remote(&self.target, e))?;
        Ok(())
    }

    /// Capacity and allocation are the sum of the LUNs' sizes; nothing is
    /// available for new volumes (the target makes them).
    pub fn space(&self) -> Result<PoolSpace, StorageError> {
        Ok(super::lun_space(&self.volumes()?))
    }

    /// The target's disk LUNs, by LUN number (so by name).
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let mut s = self.session()?;
        let err = |e| remote(&self.target, e);
        let mut luns = s.report_luns().map_err(err)?;
        luns.sort_unstable();
        let mut out = Vec::new();
        for lun in luns {
            // A controller or any other non-disk LUN is no volume.
            if !s.device_type(lun).map_err(err)?.is_disk() {
                continue;
            }
            let cap = s.read_capacity(lun).map_err(err)?;
            out.push(VolumeInfo {
                name: format!("{VOLUME_PREFIX}{lun}"),
                path: PathBuf::from(format!("iscsi://{}/{}/{lun}", self.portal(), self.target)),
                format: VolumeFormat::Raw,
                capacity: cap.bytes(),
                allocation: cap.bytes(),
                physical: cap.bytes(),
                backing: None,
            });
        }
        Ok(out)
    }

    /// The volume `name` (`unit:0:0:N`).
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, StorageError> {
        super::named(self.volumes()?, name)
    }

    /// Refused: the target makes LUNs (libvirt's words).
    pub fn create(&self, _vol: &Volume) -> Result<VolumeInfo, StorageError> {
        Err(StorageError::Invalid(
            "storage pool does not support volume creation (iscsi-direct: the target makes its LUNs)"
                .into(),
        ))
    }

    /// Refused, as `create`: a copy needs a new volume, and the target
    /// makes LUNs.
    pub fn create_from(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        self.create(vol)
    }

    /// Refused: zeroing a LUN through the pool is not offered yet (the
    /// VMM reaches LUNs; the daemon only lists them).
    pub fn wipe(
        &self,
        name: &str,
        _algorithm: super::wipe::Algorithm,
    ) -> Result<VolumeInfo, StorageError> {
        self.volume(name)?;
        Err(StorageError::Invalid(format!(
            "vol-wipe of iSCSI LUN '{name}' is not supported (iscsi-direct)"
        )))
    }

    /// Refused: the target removes LUNs.
    pub fn delete_volume(&self, _name: &str) -> Result<(), StorageError> {
        Err(StorageError::Invalid(
            "storage pool does not support vol deletion (iscsi-direct: the target removes its LUNs)"
                .into(),
        ))
    }

    /// Refused: the target sizes LUNs.
    pub fn resize(&self, _name: &str) -> Result<VolumeInfo, StorageError> {
        Err(StorageError::Invalid(
            "storage pool does not support changing of volume capacity (iscsi-direct: the target sizes its LUNs)"
                .into(),
        ))
    }

    /// Refused: there is nothing on the host to build.
    pub fn build(&self) -> Result<(), StorageError> {
        Err(StorageError::Invalid(
            "an iscsi-direct pool has nothing to build: the target's LUNs are used as they are"
                .into(),
        ))
    }
}
