//! `iscsi` pools: the LUNs of one iSCSI target, logged in through the
//! kernel's initiator with open-iscsi's `iscsiadm`, as libvirt's pool of
//! that type does. Each disk LUN becomes a SCSI disk of the host
//! (`/dev/sdX`); volumes are named `unit:0:0:N` after the LUN, and their
//! path is the udev `by-path` link when the pool's target path has it, or
//! the disk's node. The target makes and sizes LUNs, so volumes are
//! neither created, deleted nor resized here.
//!
//! The session is found in sysfs (`/sys/class/iscsi_session`), not by
//! parsing `iscsiadm`'s reports: the kernel's view is what a guest opens.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use virtxml::{Pool, PoolSpace, Volume, VolumeFormat};

use super::{tool, Credentials, StorageError, VolumeInfo};

/// How long one `iscsiadm` may take (it has its own login timeouts).
const DEADLINE: Duration = Duration::from_secs(60);

/// How long the LUNs' disks may take to appear after a login.
const SCAN_WAIT: Duration = Duration::from_secs(15);

/// libvirt's prefix of an iSCSI volume name (`unit:0:0:LUN`).
const VOLUME_PREFIX: &str = "unit:0:0:";

/// Where the kernel lists its iSCSI sessions.
const SESSIONS: &str = "/sys/class/iscsi_session";

/// One target, logged in through the kernel.
#[derive(Debug, Clone)]
pub struct IscsiPool {
    portal: String,
    host: String,
    port: u16,
    target: String,
    initiator: Option<String>,
    by_path: Option<PathBuf>,
    /// CHAP credentials, for a pool with `<auth>` (the daemon looks the
    /// secret up).
    chap: Option<Credentials>,
    /// Whether the pool has `<auth>`: without credentials it cannot log in.
    wants_chap: bool,
}

impl IscsiPool {
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
        check_word("target IQN", target)?;
        check_word("host", &host.name)?;
        if let Some(i) = &pool.source.initiator {
            check_word("initiator IQN", i)?;
        }
        let port = host.port.unwrap_or(3260);
        let portal = if host.name.contains(':') {
            format!("[{}]:{port}", host.name)
        } else {
            format!("{}:{port}", host.name)
        };
        Ok(Self {
            portal,
            host: host.name.clone(),
            port,
            target: target.clone(),
            initiator: pool.source.initiator.clone(),
            by_path: pool.target.path.as_ref().map(PathBuf::from),
            chap: None,
            wants_chap: pool.source.auth.is_some(),
        })
    }

    /// The pool logging in with `chap`.
    pub fn with_chap(mut self, chap: Option<Credentials>) -> Self {
        self.chap = chap;
        self
    }

    /// The `iscsiadm` arguments that set the node record's CHAP settings
    /// before the login (libvirt's way): `node.session.auth.authmethod`
    /// CHAP, its `.username` and `.password`. The password is on that
    /// short-lived command line, as libvirt's is: iscsiadm takes it no
    /// other way.
    fn chap_updates(&self, chap: &Credentials, iface: Option<&str>) -> Vec<Vec<String>> {
        [
            ("node.session.auth.authmethod", "CHAP"),
            ("node.session.auth.username", chap.user.as_str()),
            ("node.session.auth.password", chap.secret.as_str()),
        ]
        .into_iter()
        .map(|(name, value)| {
            let mut args: Vec<String> = [
                "--mode",
                "node",
                "--targetname",
                &self.target,
                "--portal",
                &self.portal,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(i) = iface {
                args.extend(["--interface".to_string(), i.to_string()]);
            }
            args.extend(
                ["--op", "update", "--name", name, "--value", value]
                    .iter()
                    .map(|s| s.to_string()),
            );
            args
        })
        .collect()
    }

    /// The open-iscsi interface record that carries the pool's initiator
    /// name (libvirt makes one per initiator the same way).
    fn iface(&self) -> Option<String> {
        self.initiator.as_ref().map(|i| {
            let mut h: u32 = 2166136261;
            for b in i.bytes() {
                h = (h ^ u32::from(b)).wrapping_mul(16777619);
            }
            format!("vireo-{h:08x}")
        })
    }

    /// `pool-start`: discovery (so the node record exists), then a login
    /// unless the kernel already has a session to the target; waits for
    /// the LUNs' disks.
    pub fn start(&self) -> Result<(), StorageError> {
        if self.wants_chap && self.chap.is_none() {
            return Err(StorageError::Invalid(format!(
                "iSCSI target {}: the pool has <auth> but no CHAP credentials were found",
                self.target
            )));
        }
        if self.session()?.is_none() {
            if let (Some(iface), Some(initiator)) = (self.iface(), &self.initiator) {
                // A second `new` of an existing record fails; the update
                // is what counts.
                let _ = iscsiadm(&["--mode", "iface", "--interface", &iface, "--op", "new"]);
                iscsiadm(&[
                    "--mode",
                    "iface",
                    "--interface",
                    &iface,
                    "--op",
                    "update",
                    "--name",
                    "iface.initiatorname",
                    "--value",
                    initiator,
                ])?;
            }
            let mut discover = vec![
                "--mode",
                "discovery",
                "--type",
                "sendtargets",
                "--portal",
                self.portal.as_str(),
            ];
            let iface = self.iface();
            if let Some(i) = &iface {
                discover.extend(["--interface", i.as_str()]);
            }
            let found = iscsiadm(&discover)?;
            if !found
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(self.target.as_str()))
            {
                return Err(StorageError::Invalid(format!(
                    "the iSCSI portal {} does not offer target {} (it offers: {})",
                    self.portal,
                    self.target,
                    found
                        .lines()
                        .filter_map(|l| l.split_whitespace().nth(1))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if let Some(chap) = &self.chap {
                for args in self.chap_updates(chap, iface.as_deref()) {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    iscsiadm(&args)?;
                }
            }
            let mut login = vec![
                "--mode",
                "node",
                "--targetname",
                self.target.as_str(),
                "--portal",
                self.portal.as_str(),
            ];
            if let Some(i) = &iface {
                login.extend(["--interface", i.as_str()]);
            }
            login.push("--login");
            iscsiadm(&login)?;
        }
        // The kernel scans the target's LUNs after the login returns.
        let deadline = Instant::now() + SCAN_WAIT;
        loop {
            if let Some(s) = self.session()? {
                if s.luns_have_disks() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(StorageError::Host(format!(
                    "logged in to {} but its LUNs' disks did not appear within {} s",
                    self.target,
                    SCAN_WAIT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `pool-destroy`: logs out (the kernel refuses nothing here: a guest
    /// still using a LUN is the daemon's check, before this).
    pub fn stop(&self) -> Result<(), StorageError> {
        if self.session()?.is_none() {
            return Ok(());
        }
        let mut logout = vec![
            "--mode",
            "node",
            "--targetname",
            self.target.as_str(),
            "--portal",
            self.portal.as_str(),
        ];
        let iface = self.iface();
        if let Some(i) = &iface {
            logout.extend(["--interface", i.as_str()]);
        }
        logout.push("--logout");
        iscsiadm(&logout).map(|_| ())
    }

    /// Whether the pool is up: the kernel has a session to the target.
    pub fn check(&self) -> Result<(), StorageError> {
        match self.session()? {
            Some(_) => Ok(()),
            None => Err(StorageError::Invalid(format!(
                "no iSCSI session to {} at {}",
                self.target, self.portal
            ))),
        }
    }

    /// `pool-build` and `pool-delete`: there is nothing on the host to
    /// make or remove.
    pub fn nothing_to_build(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Capacity and allocation are the sum of the LUNs; nothing is
    /// available for new volumes (the target makes them).
    pub fn space(&self) -> Result<PoolSpace, StorageError> {
        Ok(super::lun_space(&self.volumes()?))
    }

    /// The target's disk LUNs, by LUN number.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, StorageError> {
        let Some(s) = self.session()? else {
            return Err(StorageError::Invalid(format!(
                "no iSCSI session to {}: pool-start logs in",
                self.target
            )));
        };
        let mut out = Vec::new();
        for lun in s.disks()? {
            let bytes = read_u64(&Path::new("/sys/block").join(&lun.disk).join("size"))? * 512;
            out.push(VolumeInfo {
                name: format!("{VOLUME_PREFIX}{}", lun.lun),
                path: self.volume_path(lun.lun, &lun.disk),
                format: VolumeFormat::Raw,
                capacity: bytes,
                allocation: bytes,
                physical: bytes,
                backing: None,
            });
        }
        out.sort_by_key(|v| {
            v.name[VOLUME_PREFIX.len()..]
                .parse::<u64>()
                .unwrap_or(u64::MAX)
        });
        Ok(out)
    }

    /// udev's `by-path` link under the pool's target path when it is
    /// there (stable across logins), else the disk's node.
    fn volume_path(&self, lun: u64, disk: &str) -> PathBuf {
        if let Some(dir) = &self.by_path {
            let link = dir.join(format!(
                "ip-{}:{}-iscsi-{}-lun-{lun}",
                self.host, self.port, self.target
            ));
            if link.exists() {
                return link;
            }
        }
        Path::new("/dev").join(disk)
    }

    /// The volume `name` (`unit:0:0:N`).
    pub fn volume(&self, name: &str) -> Result<VolumeInfo, StorageError> {
        super::named(self.volumes()?, name)
    }

    /// Refused: the target makes LUNs.
    pub fn create(&self, _vol: &Volume) -> Result<VolumeInfo, StorageError> {
        Err(StorageError::Invalid(
            "storage pool does not support volume creation (iscsi: the target makes its LUNs)"
                .into(),
        ))
    }

    /// Refused, as `create`.
    pub fn create_from(&self, vol: &Volume) -> Result<VolumeInfo, StorageError> {
        self.create(vol)
    }

    /// Refused: the target removes LUNs.
    pub fn delete_volume(&self, _name: &str) -> Result<(), StorageError> {
        Err(StorageError::Invalid(
            "storage pool does not support vol deletion (iscsi: the target removes its LUNs)"
                .into(),
        ))
    }

    /// Refused: the target sizes LUNs.
    pub fn resize(&self, _name: &str) -> Result<VolumeInfo, StorageError> {
        Err(StorageError::Invalid(
            "storage pool does not support changing of volume capacity (iscsi: the target sizes its LUNs)"
                .into(),
        ))
    }

    /// `vol-wipe`: zeroes the LUN through its disk.
    pub fn wipe(
        &self,
        name: &str,
        algorithm: super::wipe::Algorithm,
    ) -> Result<VolumeInfo, StorageError> {
        let v = self.volume(name)?;
        super::wipe::wipe(&v.path, algorithm)?;
        Ok(v)
    }

    /// The kernel's session to the pool's target, if any.
    fn session(&self) -> Result<Option<Session>, StorageError> {
        let dir = Path::new(SESSIONS);
        let Ok(entries) = fs::read_dir(dir) else {
            // No iscsi_transport loaded: no session can exist.
            return Ok(None);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("session") {
                continue;
            }
            let target = fs::read_to_string(e.path().join("targetname")).unwrap_or_default();
            if target.trim() == self.target {
                return Ok(Some(Session {
                    device: e.path().join("device"),
                }));
            }
        }
        Ok(None)
    }
}

/// A kernel iSCSI session, by its sysfs device directory.
struct Session {
    device: PathBuf,
}

/// One disk LUN of a session.
struct Lun {
    lun: u64,
    disk: String,
}

impl Session {
    /// The session's SCSI devices that are disks (type 0) with a block
    /// device: `device/targetH:C:T/H:C:T:L/block/sdX`.
    fn disks(&self) -> Result<Vec<Lun>, StorageError> {
        let mut out = Vec::new();
        let Ok(targets) = fs::read_dir(&self.device) else {
            return Ok(out);
        };
        for t in targets.flatten() {
            if !t.file_name().to_string_lossy().starts_with("target") {
                continue;
            }
            let Ok(devs) = fs::read_dir(t.path()) else {
                continue;
            };
            for d in devs.flatten() {
                let hctl = d.file_name().to_string_lossy().into_owned();
                let Some(lun) = hctl
                    .rsplit(':')
                    .next()
                    .filter(|_| hctl.split(':').count() == 4)
                    .and_then(|l| l.parse().ok())
                else {
                    continue;
                };
                let kind = fs::read_to_string(d.path().join("type")).unwrap_or_default();
                if kind.trim() != "0" {
                    continue;
                }
                let disk = fs::read_dir(d.path().join("block"))
                    .ok()
                    .and_then(|mut b| b.next())
                    .and_then(|b| b.ok())
                    .map(|b| b.file_name().to_string_lossy().into_owned());
                if let Some(disk) = disk {
                    out.push(Lun { lun, disk });
                }
            }
        }
        Ok(out)
    }

    /// Whether every disk LUN the session shows has its block device
    /// (and there is at least one).
    fn luns_have_disks(&self) -> bool {
        self.disks().map(|d| !d.is_empty()).unwrap_or(false)
    }
}

fn read_u64(path: &Path) -> Result<u64, StorageError> {
    let text = fs::read_to_string(path).map_err(|e| super::blockdev::host(path, e))?;
    text.trim().parse().map_err(|_| {
        StorageError::Host(format!(
            "{}: '{}' is not a number",
            path.display(),
            text.trim()
        ))
    })
}

/// A name that goes on iscsiadm's command line: no option-looking start,
/// no spaces or control characters.
fn check_word(what: &str, s: &str) -> Result<(), StorageError> {
    if s.is_empty() || s.starts_with('-') || s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(StorageError::Invalid(format!(
            "'{s}' is not a valid {what}"
        )));
    }
    Ok(())
}

/// Runs open-iscsi's `iscsiadm` under the deadline.
fn iscsiadm(args: &[&str]) -> Result<String, StorageError> {
    let mut cmd = Command::new("iscsiadm");
    cmd.args(args);
    tool::run(cmd, "open-iscsi", DEADLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_the_command_line_are_checked() {
        assert!(check_word("host", "192.0.2.1").is_ok());
        assert!(check_word("target IQN", "iqn.2026-11.org.example:disks").is_ok());
        for bad in ["", "-x", "a b", "a\nb"] {
            assert!(check_word("host", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chap_is_set_on_the_node_record_before_the_login() {
        let xml = "<pool type='iscsi'><name>p</name><source><host name='192.0.2.1'/>\
                   <device path='iqn.2026-11.org.example:t'/></source></pool>";
        let pool = virtxml::Pool::parse(xml).unwrap().pool;
        let chap = Credentials {
            user: "u1".into(),
            secret: "pw-1".into(),
        };
        let p = IscsiPool::new(&pool).unwrap().with_chap(Some(chap.clone()));
        let updates = p.chap_updates(&chap, Some("vireo-1"));
        let lines: Vec<String> = updates.iter().map(|a| a.join(" ")).collect();
        let node = "--mode node --targetname iqn.2026-11.org.example:t --portal 192.0.2.1:3260 --interface vireo-1 --op update";
        assert_eq!(
            lines,
            [
                format!("{node} --name node.session.auth.authmethod --value CHAP"),
                format!("{node} --name node.session.auth.username --value u1"),
                format!("{node} --name node.session.auth.password --value pw-1"),
            ]
        );
        assert!(!format!("{p:?}").contains("pw-1"));
    }

    #[test]
    fn an_initiator_gets_its_own_stable_interface_record() {
        let xml = "<pool type='iscsi'><name>p</name><source><host name='192.0.2.1'/>\
                   <device path='iqn.2026-11.org.example:t'/>\
                   <initiator><iqn name='iqn.2026-11.org.example:h1'/></initiator></source>\
                   <target><path>/dev/disk/by-path</path></target></pool>";
        let pool = virtxml::Pool::parse(xml).unwrap().pool;
        let p = IscsiPool::new(&pool).unwrap();
        assert_eq!(p.portal, "192.0.2.1:3260");
        let a = p.iface().unwrap();
        assert!(a.starts_with("vireo-") && a.len() == 14, "{a}");
        assert_eq!(IscsiPool::new(&pool).unwrap().iface().unwrap(), a);
    }
}
