//! The API's JSON bodies made into the VMM's configuration, checked the way
//! `vireo run` checks its flags but with errors that name JSON fields.
//!
//! Everything here may touch the file system (paths are checked, kernels
//! and disks opened), so the controller calls it without its lock held:
//! a path that blocks (a FIFO, a slow mount) then holds only the request
//! that named it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::{bad_request, unprocessable};
use crate::api::{ApiError, DiskSpec, NetSpec, VmConfigSpec};
use crate::config::{DiskConfig, KernelSource, NetConfig, VmConfig};
use crate::error::{error_chain, Error};
use crate::machine::PreparedVm;

/// The most guest RAM the document allows (16 TiB); the host decides
/// below that.
pub(super) const MAX_MEMORY_MIB: u64 = 1 << 24;

/// A `VmConfig` from `PUT /vm/config`'s JSON, checked and its disks
/// opened (those `held` has open already are taken over from it). Fields the client left out
/// come from `defaults` (what `vireo run` was given on its command line).
pub(super) fn config_from_spec(
    spec: VmConfigSpec,
    defaults: &VmConfig,
    max_cpus: u32,
    held: Option<&PreparedVm>,
) -> Result<PreparedVm, ApiError> {
    let min_mib = arch::memory::MIN_MEMORY >> 20;
    let memory = match spec.memory_mib {
        Some(mib) if !(min_mib..=MAX_MEMORY_MIB).contains(&mib) => {
            return Err(bad_request(format!(
                "memory_mib {mib} is out of range ({min_mib} to {MAX_MEMORY_MIB})"
            )))
        }
        Some(mib) => mib << 20,
        None => defaults.memory,
    };
    let cpus = spec.cpus.unwrap_or(defaults.cpus);
    if cpus == 0 || cpus > crate::MAX_CPUS {
        return Err(bad_request(format!(
            "cpus {cpus} is out of range (1 to {})",
            crate::MAX_CPUS
        )));
    }
    absolute("kernel", &spec.kernel)?;
    if let Some(initrd) = &spec.initrd {
        absolute("initrd", initrd)?;
    }
    let disks = spec
        .disks
        .into_iter()
        .enumerate()
        .map(|(i, d)| disk_config(d, &format!("disks[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let nets = spec
        .nets
        .into_iter()
        .enumerate()
        .map(|(i, n)| net_config(n, &format!("nets[{i}]")))
        .collect::<Result<_, _>>()?;
    // The request is well formed (400s above); what follows is whether
    // this host can do it (422).
    check_memory(memory, spec.memory_mib)?;
    if cpus > max_cpus {
        return Err(unprocessable(format!(
            "cpus {cpus} is more than this host allows ({max_cpus})"
        )));
    }
    regular_file("kernel", &spec.kernel)?;
    if let Some(initrd) = &spec.initrd {
        regular_file("initrd", initrd)?;
    }
    for (i, disk) in disks.iter().enumerate() {
        disk_file(&format!("disks[{i}].path"), &disk.path)?;
    }
    distinct_images(&disks)?;
    let config = VmConfig {
        kernel: KernelSource::Path(spec.kernel),
        initrd: spec.initrd,
        cmdline: spec.cmdline.unwrap_or_else(|| defaults.cmdline.clone()),
        memory,
        cpus,
        disks,
        nets,
        rng: spec.rng,
        ..defaults.clone()
    };
    // The fields are sound; what is left opens the kernel, initrd and disks
    // (a bad image or a busy lock is the client's error, as on the command
    // line).
    crate::machine::validate_with(&config, max_cpus, held)
        .map_err(|e| unprocessable(error_chain(&e)))
}

/// Guest RAM the machine can have and the host can back.
fn check_memory(bytes: u64, mib: Option<u64>) -> Result<(), ApiError> {
    let field = match mib {
        Some(mib) => format!("memory_mib {mib}"),
        None => format!("the default memory ({} MiB)", bytes >> 20),
    };
    match crate::memory::check_size(bytes) {
        Ok(()) => Ok(()),
        Err(Error::NotEnoughHostMemory { host_mib, .. }) => Err(unprocessable(format!(
            "{field} is more than this host can give (it has {host_mib} MiB of RAM and swap)"
        ))),
        Err(e) => Err(unprocessable(format!("{field}: {}", error_chain(&e)))),
    }
}

/// A path the API takes must be absolute: the VMM's working directory
/// means nothing to a client (`vireo vm` makes its paths absolute).
pub(super) fn absolute<'a>(field: &str, path: &'a Path) -> Result<&'a Path, ApiError> {
    if path.as_os_str().is_empty() {
        return Err(bad_request(format!("{field} is empty")));
    }
    if !path.is_absolute() {
        return Err(bad_request(format!(
            "{field} {} is a relative path; the API takes absolute paths only",
            path.display()
        )));
    }
    Ok(path)
}

/// Check that `path` (the JSON field `field`) is a readable regular file,
/// without ever blocking: it is opened with O_NONBLOCK (a FIFO's open
/// would otherwise wait for a writer forever) and its type checked on the
/// open descriptor.
pub(super) fn regular_file(field: &'static str, path: &Path) -> Result<File, ApiError> {
    let path = absolute(field, path)?;
    crate::machine::open_regular(field, path).map_err(|e| {
        unprocessable(match e {
            crate::Error::Open { source, .. } => format!("{field} {}: {source}", path.display()),
            other => other.to_string(),
        })
    })
}

/// A disk image must be a regular file or a block device. Checked with
/// `stat`, which never blocks, before anything opens it.
pub(super) fn disk_file(field: &str, path: &Path) -> Result<(), ApiError> {
    // A network disk (iSCSI LUN, NFS file) is no host file: opening it
    // connects and checks it.
    if block::is_network(path) {
        return Ok(());
    }
    let path = absolute(field, path)?;
    let meta = std::fs::metadata(path)
        .map_err(|e| unprocessable(format!("{field} {}: {e}", path.display())))?;
    let kind = meta.file_type();
    if !kind.is_file() && !kind.is_block_device() {
        return Err(unprocessable(format!(
            "{field} {} is {}, not a disk image or block device",
            path.display(),
            devices::serial_backend::file_kind(kind)
        )));
    }
    Ok(())
}

/// One image cannot back two disks (its lock would refuse the second
/// anyway, but with a message about locks, not about the request).
fn distinct_images(disks: &[DiskConfig]) -> Result<(), ApiError> {
    let mut seen: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for (i, disk) in disks.iter().enumerate() {
        // Network disks take no host lock, so the same URL twice is caught
        // here.
        if block::is_network(&disk.path) {
            if let Some(first) = disks[..i].iter().position(|d| d.path == disk.path) {
                return Err(unprocessable(format!(
                    "disks[{i}].path {} is the network disk disks[{first}].path already names",
                    disk.path.display()
                )));
            }
            continue;
        }
        let Ok(meta) = std::fs::metadata(&disk.path) else {
            continue;
        };
        if let Some(first) = seen.insert((meta.dev(), meta.ino()), i) {
            return Err(unprocessable(format!(
                "disks[{i}].path {} is the image disks[{first}].path already names",
                disk.path.display()
            )));
        }
    }
    Ok(())
}

/// A disk's options from JSON (`field` names it in errors: `disks[0]`,
/// or the add-disk body), checked as `--disk` checks them.
///
/// Only the request itself is checked here (400); whether the file is an
/// image is [`disk_file`]'s question (422).
pub(super) fn disk_config(spec: DiskSpec, field: &str) -> Result<DiskConfig, ApiError> {
    let path_field = if field.is_empty() {
        "path".to_string()
    } else {
        format!("{field}.path")
    };
    if !block::is_network(&spec.path) {
        absolute(&path_field, &spec.path)?;
    }
    let what = if field.is_empty() { "add-disk" } else { field };
    let mut disk = DiskConfig::new(spec.path);
    let queues = spec.queues.map(|q| q.to_string());
    let options = [
        ("id", spec.id.as_deref()),
        ("format", spec.format.as_deref()),
        ("cache", spec.cache.as_deref()),
        ("serial", spec.serial.as_deref()),
        ("queues", queues.as_deref()),
        ("werror", spec.werror.as_deref()),
        ("rerror", spec.rerror.as_deref()),
    ];
    for (key, value) in options {
        if let Some(v) = value {
            disk.set(what, key, v).map_err(bad_request)?;
        }
    }
    disk.readonly = spec.readonly;
    if spec.image_fd && spec.passed.is_none() {
        // Schema-valid, but only add-disk carries a descriptor (as tap_fd).
        return Err(unprocessable(format!(
            "{what}: image_fd is for add-disk, with the image's descriptor sent alongside"
        )));
    }
    disk.passed = spec.passed;
    if let Some(secret) = &spec.chap_secret {
        if secret.expose().is_empty() || secret.expose().contains('\0') {
            return Err(unprocessable(format!(
                "{what}: chap_secret must be text without NUL bytes, and not empty"
            )));
        }
    }
    disk.chap_secret = spec.chap_secret.map(|s| *s);
    Ok(disk)
}

/// A card's options from JSON, checked as `--net` checks them, and as
/// strictly as the document states them (`--net` takes a few spellings the
/// document does not).
pub(super) fn net_config(spec: NetSpec, field: &str) -> Result<NetConfig, ApiError> {
    let what = if field.is_empty() { "add-net" } else { field };
    if let Some(tap) = &spec.tap {
        let ok = (1..=15).contains(&tap.len())
            && tap
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !ok {
            return Err(bad_request(format!(
                "{what}: tap {tap:?} must be 1 to 15 printable ASCII characters, no / or :"
            )));
        }
    }
    if let Some(mac) = &spec.mac {
        let octets: Vec<&str> = mac.split(':').collect();
        let hex = octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
        if !hex {
            return Err(bad_request(format!(
                "{what}: mac {mac:?} is not six hex octets like 52:54:00:12:34:56"
            )));
        }
    }
    let mut net = NetConfig::new();
    let queues = spec.queues.map(|q| q.to_string());
    let options = [
        ("id", spec.id.as_deref()),
        ("tap", spec.tap.as_deref()),
        ("mac", spec.mac.as_deref()),
        ("queues", queues.as_deref()),
    ];
    for (key, value) in options {
        if let Some(v) = value {
            net.set(what, key, v).map_err(bad_request)?;
        }
    }
    if spec.tap_fd {
        if !field.is_empty() {
            return Err(unprocessable(format!(
                "{what}: tap_fd is for add-net, whose request carries the descriptor"
            )));
        }
        if spec.tap.is_some() {
            return Err(unprocessable(format!(
                "{what}: give tap or tap_fd, not both"
            )));
        }
        if net.queues != 1 {
            return Err(unprocessable(format!(
                "{what}: tap_fd hands over one queue; queues must be 1"
            )));
        }
        net.passed = Some(spec.passed.ok_or_else(|| {
            unprocessable(format!(
                "{what}: tap_fd needs the TAP's descriptor sent with the request (SCM_RIGHTS)"
            ))
        })?);
    }
    Ok(net)
}

/// Where `vireo vm` and tests put paths: absolute, as the API wants them.
#[cfg(test)]
pub(super) fn scratch_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("vireo-spec-{}-{name}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(json: &str) -> Result<DiskConfig, ApiError> {
        disk_config(serde_json::from_str(json).unwrap(), "")
    }

    #[test]
    fn json_options_are_checked_one_by_one() {
        let image = scratch_path("a,b.img");
        std::fs::write(&image, b"").unwrap();
        let j = |extra: &str| format!(r#"{{"path":{:?}{extra}}}"#, image.to_str().unwrap());
        let d = disk(&j(r#","id":"d","serial":"s1","queues":2,"cache":"none""#)).unwrap();
        assert_eq!(d.path, image);
        assert_eq!(d.id.as_deref(), Some("d"));
        assert_eq!(d.queues, 2);
        // A value holding a comma cannot smuggle in another option.
        let d = disk(&j(r#","serial":"s,readonly=on""#)).unwrap();
        assert_eq!(d.serial.as_deref(), Some("s,readonly=on"));
        assert!(!d.readonly);
        assert!(disk(&j(r#","id":"d,readonly=on""#)).is_err());
        assert!(disk(&j(r#","queues":17"#))
            .unwrap_err()
            .message
            .contains("1 to 16"));
        let _ = std::fs::remove_file(&image);
        assert!(disk(r#"{"path":""}"#)
            .unwrap_err()
            .message
            .contains("path is empty"));
        let net = |j: &str| net_config(serde_json::from_str(j).unwrap(), "");
        let n = net(r#"{"tap":"t0,queues=16"}"#).unwrap();
        assert_eq!((n.tap.as_deref(), n.queues), (Some("t0,queues=16"), 1));
        assert_eq!(net(r#"{"queues":4}"#).unwrap().queues, 4);
        // `--net fd=N` is for the command line only: a descriptor number
        // from a client would name one of the VMM's own (the KVM fd, a
        // socket), so the API's document has no such field.
        let e = serde_json::from_str::<NetSpec>(r#"{"fd":3}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `fd`"), "{e}");
    }

    #[test]
    fn relative_and_special_paths_are_refused_naming_the_field() {
        let e = disk(r#"{"path":"disk.img"}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("path disk.img is a relative path"),
            "{e:?}"
        );
        let e = disk_file("disks[2].path", Path::new("/dev/null")).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(
            e.message
                .contains("disks[2].path /dev/null is a character device"),
            "{e:?}"
        );
        let fifo = scratch_path("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Returns at once (no writer is ever coming) with the field named.
        let e = regular_file("initrd", &fifo).unwrap_err();
        assert!(e.message.starts_with("initrd "), "{e:?}");
        assert!(e.message.contains("is a FIFO, not a regular file"), "{e:?}");
        let e = disk_file("path", &fifo).unwrap_err();
        assert!(e.message.contains("path "), "{e:?}");
        assert!(e.message.contains("is a FIFO"), "{e:?}");
        let _ = std::fs::remove_file(&fifo);
        let e = regular_file("kernel", Path::new("/")).unwrap_err();
        assert!(e.message.contains("kernel / is a directory"), "{e:?}");
        let e = regular_file("kernel", Path::new("k")).unwrap_err();
        assert!(e.message.contains("kernel k is a relative path"), "{e:?}");
    }

    #[test]
    fn machine_fields_are_named_as_json() {
        let defaults = VmConfig::default();
        let spec = |j: &str| serde_json::from_str::<VmConfigSpec>(j).unwrap();
        let e =
            config_from_spec(spec(r#"{"kernel":"/k","cpus":0}"#), &defaults, 8, None).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("cpus 0 is out of range"), "{e:?}");
        // Allowed by the document, beyond this host: 422, not 400.
        let e =
            config_from_spec(spec(r#"{"kernel":"/k","cpus":9}"#), &defaults, 8, None).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(
            e.message.contains("more than this host allows (8)"),
            "{e:?}"
        );
        let e = config_from_spec(spec(r#"{"kernel":"/k","cpus":255}"#), &defaults, 8, None)
            .unwrap_err();
        assert_eq!(e.status, 400);
        let e = config_from_spec(
            spec(r#"{"kernel":"/k","memory_mib":1}"#),
            &defaults,
            8,
            None,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("memory_mib 1"), "{e:?}");
        let e = config_from_spec(
            spec(r#"{"kernel":"/k","memory_mib":18446744073709551615}"#),
            &defaults,
            8,
            None,
        )
        .unwrap_err();
        assert!(e.message.starts_with("memory_mib "), "{e:?}");
        assert!(!e.message.contains("--"), "{e:?}");
        // A kernel that is not there: well formed, cannot be done.
        let e = config_from_spec(spec(r#"{"kernel":"/nonexistent/k"}"#), &defaults, 8, None)
            .unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.starts_with("kernel /nonexistent/k"), "{e:?}");
    }
}
