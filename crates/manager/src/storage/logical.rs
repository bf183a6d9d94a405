//! `logical` pools: an LVM volume group; each logical volume is a volume,
//! at `/dev/<vg>/<lv>`.
//!
//! Everything goes through Debian's lvm2 tools, as libvirt's pool of this
//! type does: LVM's metadata format, locking and device-mapper tables are
//! its own business, and a second writer of that metadata would be a way
//! to lose a volume group. The reports are read as JSON (`--reportformat
//! json`, sizes in bytes), never parsed from columns. Every tool runs with
//! a deadline, so a stuck device cannot hold a daemon worker forever.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;
use virtxml::{Permissions, Pool, PoolSpace, Volume, VolumeFormat};

use super::blockdev;
use super::tool;
use super::{BuildMode, StorageError, VolumeInfo};

/// How long one LVM command may take before it is killed.
const DEADLINE: Duration = Duration::from_secs(60);

/// A `logical` pool: its volume group and the physical volumes
/// `pool-build` makes it from.
#[derive(Debug, Clone)]
pub struct LogicalPool {
    vg: String,
    devices: Vec<PathBuf>,
}

impl LogicalPool {
    /// The pool `pool` defines: the volume group `source/name` (the
    /// pool's name when absent), made of the `source/device`s, with
    /// `/dev/<vg>` as its target path.
    pub fn new(pool: &Pool) -> Result<LogicalPool, StorageError> {
        let vg = pool
            .source
            .name
            .clone()
            .unwrap_or_else(|| pool.name.clone());
        check_name("volume group", &vg)?;
        if let Some(f) = pool.source.format.as_deref().filter(|f| *f != "lvm2") {
            return Err(StorageError::Invalid(format!(
                "logical pool format '{f}' is not supported: only lvm2"
            )));
        }
        let want = format!("/dev/{vg}");
        if let Some(t) = pool.target.path.as_deref().filter(|t| *t != want) {
            return Err(StorageError::Invalid(format!(
                "a logical pool's target path is {want}, not {t}: LVM puts volume group {vg}'s volumes there"
            )));
        }
        Ok(LogicalPool {
            vg,
            devices: pool.source.devices.iter().map(PathBuf::from).collect(),
        })
    }

    /// `pool-build`: physical volumes on the source devices and the volume
    /// group over them. Without `--overwrite` only on devices that carry
    /// no signature, as libvirt.
    pub fn build(&self, mode: BuildMode) -> Result<(), StorageError> {
        if self.devices.is_empty() {
            return Err(StorageError::Invalid(format!(
                "building volume group {} needs its devices: add <source><device path='...'/>",
                self.vg
            )));
        }
        if self.exists()? {
            return Err(StorageError::Conflict(format!(
                "volume group {} already exists",
                self.vg
            )));
        }
        for dev in &self.devices {
            blockdev::block_device(dev)?;
            if mode != BuildMode::Overwrite {
                let found = blockdev::probe(dev)?;
                if !found.is_empty() {
                    return Err(StorageError::Conflict(format!(
                        "source device {} already holds {}: pool-build --overwrite replaces it",
                        dev.display(),
                        found.describe()
                    )));
                }
            }
        }
        let mut pv = vec!["pvcreate", "--yes", "--force"];
        let devs: Vec<String> = self
            .devices
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        pv.extend(devs.iter().map(String::as_str));
        lvm(&pv)?;
        let mut vg = vec!["vgcreate", "--yes", self.vg.as_str()];
        vg.extend(devs.iter().map(String::as_str));
        lvm(&vg).map(|_| ())
    }

    /// `pool-delete`: removes the volume group and the physical volume
    /// labels; refused while it has logical volumes.
    pub fn delete(&self) -> Result<(), StorageError> {
        if !self.volumes()?.is_empty() {
            return Err(StorageError::Conflict(format!(
                "volume group {} still has logical volumes: delete its volumes first",
                self.vg
            )));
        }
        let pvs = self.physical_volumes()?;
        lvm(&["vgremove", "--yes", &self.vg])?;
        let mut args = vec!["pvremove", "--yes"];
        args.extend(pvs.iter().map(String::as_str));
        if pvs.is_empty() {
            return Ok(());
        }
        lvm(&args).map(|_| ())
    }

    /// `pool-start`: activates the volume group's logical volumes.
    pub fn start(&self) -> Result<(), StorageError> {
        self.check_exists()?;
        lvm(&["vgchange", "--activate", "y", &self.vg]).map(|_| ())
    }

    /// `pool-destroy`: deactivates them (refused by LVM while one is
    /// open, which is the answer the user needs).
    pub fn stop(&self) -> Result<(), StorageError> {
        if !self.exists()? {
            return Ok(());
        }
        lvm(&["vgchange", "--activate", "n", &self.vg])
            .map(|_| ())
            .map_err(|e| match e {
                StorageError::Host(m) if m.contains("open") => StorageError::Conflict(format!(
                    "volume group {}: a logical volume is in use: {m}",
                    self.vg
                )),
                other => other,
            })
    }

    /// Whether the pool can start, or is still up: the volume group is
    /// there.
    pub fn check(&self) -> Result<(), StorageError> {
        self.check_exists()
    }

    /// The volume group's size, what its logical volumes use and what is
    /// free, as `vgs` reports them.
    pub fn space(&self) -> Result<PoolSpace, StorageError> {
        let out = lvm(&[
            "vgs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_name,vg_size,vg_free",
            &self.vg,
        ])?;
        let report: Report<VgRow> = parse(&out, "vgs")?;
        let row = report
            .rows()
            .find(|r| r.vg_name == self.vg)
            .ok_or_else(|| self.missing())?;
        let size = bytes(&row.vg_size, "vg_size")?;
        let free = bytes(&row.vg_free, "vg_free")?;
        Ok(PoolSpace {
            capacity: size,
            allocation: size.saturating_sub(free),
            available: free,
        })
    }

    /// Every logical volume, by name (LVM's hidden ones, such as a thin
    /// pool's metadata, are not volumes).
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let out = lvm(&[
            "lvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "lv_name,lv_size,vg_name",
            &self.vg,
        ])?;
        let report: Report<LvRow> = parse(&out, "lvs")?;
        let mut vols = report
            .rows()
            .filter(|r| r.vg_name == self.vg && !r.lv_name.starts_with('['))
            .map(|r| self.info(&r.lv_name, bytes(&r.lv_size, "lv_size")?))
            .collect::<Result<Vec<_>, _>>()?;
        vols.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vols)
    }

    /// The logical volume `name`.
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, StorageError> {
        self.volumes()?
            .into_iter()
            .find(|v| v.name == name)
            .ok_or_else(|| no_volume(name))
    }

    /// `vol-create`: a logical volume of the capacity (LVM rounds it up
    /// to whole extents), allocated in full.
    pub fn create(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        if vol.format.is_some_and(|f| f != VolumeFormat::Raw) {
            return Err(StorageError::Invalid(
                "a logical pool's volumes are logical volumes, which hold raw data: use format raw"
                    .into(),
            ));
        }
        if vol.backing.is_some() {
            return Err(StorageError::Invalid(
                "a logical volume with a backing volume (an LVM snapshot) is not supported".into(),
            ));
        }
        if vol.permissions != Permissions::default() {
            return Err(StorageError::Invalid(
                "a logical volume's device node permissions are not set by Vireo: leave <permissions> out".into(),
            ));
        }
        if vol.allocation.is_some_and(|a| a < vol.capacity) {
            return Err(StorageError::Invalid(
                "a logical pool allocates each volume in full: leave <allocation> out or equal to the capacity".into(),
            ));
        }
        if vol.capacity == 0 {
            return Err(StorageError::Invalid(
                "a logical volume needs a capacity above 0".into(),
            ));
        }
        check_name("logical volume", &vol.name)?;
        self.check_exists()?;
        if self.volume(&vol.name).is_ok() {
            return Err(StorageError::Conflict(format!(
                "storage volume '{}' exists already",
                vol.name
            )));
        }
        let size = format!("{}b", vol.capacity);
        lvm(&[
            "lvcreate",
            "--yes",
            "--wipesignatures",
            "y",
            "--zero",
            "y",
            "--name",
            &vol.name,
            "--size",
            &size,
            &self.vg,
        ])
        .map_err(|e| match e {
            StorageError::Host(m) if m.contains("Insufficient free space") => {
                StorageError::Invalid(format!(
                    "volume '{}' does not fit in volume group {}: {m}",
                    vol.name, self.vg
                ))
            }
            other => other,
        })?;
        self.volume(&vol.name)
    }

    /// `vol-create-from` and `vol-clone` into a volume group are refused:
    /// a logical volume is visible under its name before a copy into it
    /// ends, so a failed copy would leave a volume that looks whole.
    pub fn create_from(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        Err(StorageError::Invalid(format!(
            "cannot copy into logical pool volume '{}': a logical volume is visible before the copy ends; copy into a dir, fs or netfs pool",
            vol.name
        )))
    }

    /// `vol-wipe`: zeroes the whole logical volume.
    pub fn wipe(
        &self,
        name: &str,
        algorithm: super::wipe::Algorithm,
    ) -> Result<VolumeInfo, StorageError> {
        let v = self.volume(name)?;
        super::wipe::wipe(&v.path, algorithm)?;
        Ok(v)
    }

    /// `vol-delete`: refused by LVM while the volume is open.
    pub fn delete_volume(&self, name: &str) -> Result<(), StorageError> {
        self.volume(name)?;
        let lv = format!("{}/{name}", self.vg);
        lvm(&["lvremove", "--yes", &lv])
            .map(|_| ())
            .map_err(|e| match e {
                StorageError::Host(m) if m.contains("open") || m.contains("in use") => {
                    StorageError::Conflict(format!("storage volume '{name}' is in use: {m}"))
                }
                other => other,
            })
    }

    /// `vol-resize` to `capacity` bytes (rounded up to whole extents);
    /// smaller only when `shrink`, as the data past the new end is lost.
    pub fn resize(
        &self,
        name: &str,
        capacity: u64,
        shrink: bool,
    ) -> Result<VolumeInfo, StorageError> {
        let now = self.volume(name)?;
        if capacity == 0 {
            return Err(StorageError::Invalid(
                "a logical volume needs a capacity above 0".into(),
            ));
        }
        if capacity < now.capacity && !shrink {
            return Err(StorageError::Invalid(format!(
                "shrinking volume '{name}' from {} to {capacity} bytes loses data: pass --shrink",
                now.capacity
            )));
        }
        if capacity == now.capacity {
            return Ok(now);
        }
        let lv = format!("{}/{name}", self.vg);
        let size = format!("{capacity}b");
        let mut args = vec!["lvresize", "--yes", "--size", size.as_str()];
        if capacity < now.capacity {
            args.push("--force");
        }
        args.push(&lv);
        lvm(&args)?;
        self.volume(name)
    }

    fn info(&self, name: &str, size: u64) -> Result<VolumeInfo, StorageError> {
        Ok(VolumeInfo {
            name: name.to_string(),
            path: PathBuf::from(format!("/dev/{}/{name}", self.vg)),
            format: VolumeFormat::Raw,
            capacity: size,
            allocation: size,
            physical: size,
            backing: None,
        })
    }

    fn exists(&self) -> Result<bool, StorageError> {
        let out = lvm(&["vgs", "--reportformat", "json", "-o", "vg_name"])?;
        let report: Report<VgName> = parse(&out, "vgs")?;
        let found = report.rows().any(|r| r.vg_name == self.vg);
        Ok(found)
    }

    fn check_exists(&self) -> Result<(), StorageError> {
        if self.exists()? {
            Ok(())
        } else {
            Err(self.missing())
        }
    }

    fn missing(&self) -> StorageError {
        StorageError::Invalid(format!(
            "volume group {} does not exist: pool-build makes it from the source devices",
            self.vg
        ))
    }

    fn physical_volumes(&self) -> Result<Vec<String>, StorageError> {
        let out = lvm(&["pvs", "--reportformat", "json", "-o", "pv_name,vg_name"])?;
        let report: Report<PvRow> = parse(&out, "pvs")?;
        Ok(report
            .rows()
            .filter(|r| r.vg_name == self.vg)
            .map(|r| r.pv_name.clone())
            .collect())
    }
}

/// LVM's JSON report: `{"report": [{"vg": [...]}]}` (or `lv`, `pv`).
#[derive(Deserialize)]
struct Report<T> {
    report: Vec<std::collections::HashMap<String, Vec<T>>>,
}

impl<T> Report<T> {
    fn rows(&self) -> impl Iterator<Item = &T> {
        self.report.iter().flat_map(|m| m.values()).flatten()
    }
}

#[derive(Deserialize)]
struct VgName {
    vg_name: String,
}

#[derive(Deserialize)]
struct VgRow {
    vg_name: String,
    vg_size: String,
    vg_free: String,
}

#[derive(Deserialize)]
struct LvRow {
    lv_name: String,
    lv_size: String,
    vg_name: String,
}

#[derive(Deserialize)]
struct PvRow {
    pv_name: String,
    vg_name: String,
}

fn parse<T: for<'de> Deserialize<'de>>(out: &str, tool: &str) -> Result<T, StorageError> {
    serde_json::from_str(out)
        .map_err(|e| StorageError::Host(format!("{tool} printed a report Vireo cannot read: {e}")))
}

fn bytes(field: &str, what: &str) -> Result<u64, StorageError> {
    field
        .trim()
        .parse()
        .map_err(|_| StorageError::Host(format!("LVM reported {what} '{field}', not bytes")))
}

fn no_volume(name: &str) -> StorageError {
    StorageError::NotFound(format!(
        "Storage volume not found: no storage vol with matching name '{name}'"
    ))
}

/// LVM's rule for volume group and logical volume names (lvm(8), "VALID
/// NAMES"), checked before a name reaches a command line.
fn check_name(what: &str, name: &str) -> Result<(), StorageError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    if name.is_empty()
        || name.len() > 127
        || !ok_chars
        || name.starts_with('-')
        || name == "."
        || name == ".."
        || name.starts_with("snapshot")
        || name.starts_with("pvmove")
    {
        return Err(StorageError::Invalid(format!(
            "'{name}' is not a valid LVM {what} name: letters, digits and + _ . - only, not starting with '-', at most 127 bytes"
        )));
    }
    Ok(())
}

/// Runs an lvm2 command and returns what it printed, or its last error
/// line. LVM warns about every descriptor it inherits; the daemon has
/// many, so the warning is turned off rather than shown as an error.
fn lvm(args: &[&str]) -> Result<String, StorageError> {
    let (program, rest) = args.split_first().expect("an lvm command");
    let mut cmd = Command::new(program);
    cmd.args(rest).env("LVM_SUPPRESS_FD_WARNINGS", "1");
    tool::run(cmd, "lvm2", DEADLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvm_names_follow_lvms_rule() {
        for good in ["vg0", "data_1", "a.b+c-d", "x"] {
            assert!(check_name("volume group", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".",
            "..",
            "a/b",
            "a b",
            "snapshot1",
            "pvmove0",
            "ä",
        ] {
            let e = check_name("logical volume", bad).unwrap_err().to_string();
            assert!(
                e.contains("not a valid LVM logical volume name"),
                "{bad}: {e}"
            );
        }
        assert!(check_name("volume group", &"v".repeat(128)).is_err());
    }

    #[test]
    fn reports_are_read_as_lvm_prints_them() {
        let out = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"a", "lv_size":"4194304", "vg_name":"vg0"},
                  {"lv_name":"[lvol0_pmspare]", "lv_size":"4194304", "vg_name":"vg0"}
              ]
          }
      ]
  }"#;
        let r: Report<LvRow> = parse(out, "lvs").unwrap();
        let names: Vec<&str> = r.rows().map(|r| r.lv_name.as_str()).collect();
        assert_eq!(names, ["a", "[lvol0_pmspare]"]);
        assert!(parse::<Report<LvRow>>("WARNING: x", "lvs").is_err());
        assert!(bytes("12x", "lv_size").is_err());
        assert_eq!(bytes(" 512 ", "lv_size").unwrap(), 512);
    }

    #[test]
    fn a_target_path_other_than_the_vgs_is_refused() {
        let xml = "<pool type='logical'><name>p</name><source><name>vg0</name></source>\
                   <target><path>/srv/x</path></target></pool>";
        let pool = virtxml::Pool::parse(xml).unwrap().pool;
        let e = LogicalPool::new(&pool).unwrap_err().to_string();
        assert!(e.contains("/dev/vg0"), "{e}");
    }
}
