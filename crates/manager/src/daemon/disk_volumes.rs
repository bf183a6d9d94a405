//! `disk type='volume'`: a domain's disks that name a storage pool's
//! volume, looked up in the running pool when the domain starts, when the
//! disk is plugged, and when the daemon adopts a running domain again.
//!
//! The definition keeps naming the pool and volume (as libvirt's does);
//! the path found is carried beside it for the driver and for the claims
//! that keep two running domains off one image.

use virtxml::{Disk, DiskFormat, DiskSource, Domain, ResolvedVolume};

use super::failure::Failure;
use super::{pools, Daemon};

/// `domain` with each volume disk's path found. Blocking: it reads
/// the volumes' headers.
pub(crate) fn resolve(d: &Daemon, domain: &Domain) -> Result<Domain, Failure> {
    let mut out = domain.clone();
    for disk in &mut out.devices.disks {
        resolve_disk(d, &domain.name, disk)?;
    }
    Ok(out)
}

/// [`resolve`] for one disk (a hot-plug); other sources are left alone.
pub(crate) fn resolve_disk(d: &Daemon, domain: &str, disk: &mut Disk) -> Result<(), Failure> {
    let DiskSource::Volume(v) = &mut disk.source else {
        return Ok(());
    };
    let inactive = |_| {
        Failure::conflict(format!(
            "domain '{domain}': storage pool '{}' containing volume '{}' is not active",
            v.pool, v.volume
        ))
    };
    let pool = pools::active(d, &v.pool).map_err(|e| {
        if e.status.as_u16() == 404 {
            Failure::unprocessable(format!("domain '{domain}': {}", e.message))
        } else {
            inactive(e)
        }
    })?;
    let info = pools::backend(d, &pool)
        .and_then(|b| b.volume(&v.volume))
        .map_err(pools::failure)
        .map_err(|e| Failure {
            status: e.status,
            message: format!("domain '{domain}': {}", e.message),
        })?;
    let wanted = match disk.format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    };
    // A qcow2 read as raw hands the guest the image's metadata, and a raw
    // volume read as qcow2 would let its data name host files as backing.
    if info.format.as_str() != wanted {
        return Err(Failure::unprocessable(format!(
            "domain '{domain}': volume '{}' of pool '{}' is {}, but the disk says <driver type='{wanted}'/>",
            v.volume,
            v.pool,
            info.format.as_str()
        )));
    }
    let block = std::fs::metadata(&info.path)
        .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
        .unwrap_or(false);
    v.resolved = Some(ResolvedVolume {
        path: info.path.display().to_string(),
        block,
        auth: pool.source.auth.clone(),
    });
    Ok(())
}

/// Gives the volume disks of `into` (a definition read back from XML,
/// which does not carry them) the paths found for the same disks of
/// `from`.
pub(crate) fn carry_resolved(from: &Domain, into: &mut Domain) {
    for disk in &mut into.devices.disks {
        let DiskSource::Volume(v) = &mut disk.source else {
            continue;
        };
        let found = from.devices.disks.iter().find_map(|old| match &old.source {
            DiskSource::Volume(o)
                if old.target == disk.target && o.pool == v.pool && o.volume == v.volume =>
            {
                o.resolved.clone()
            }
            _ => None,
        });
        if found.is_some() {
            v.resolved = found;
        }
    }
}

/// The live definition of an adopted domain with its volumes found again
/// where they can be (a pool that did not come back leaves its volumes
/// named only, and says so in the log).
pub(crate) fn resolve_adopted(d: &Daemon, domain: Domain) -> Domain {
    let mut out = domain;
    let name = out.name.clone();
    for disk in &mut out.devices.disks {
        if let Err(e) = resolve_disk(d, &name, disk) {
            tracing::warn!("{}", e.message);
        }
    }
    out
}
