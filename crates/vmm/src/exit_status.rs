//! Why a `vireo run` ended, written to a file just before the process
//! exits (`--exit-status PATH`), so that a manager that is not the VMM's
//! parent (a daemon restarted since it started the VM) still learns it.
//!
//! The file is one JSON object, `{"reason": R, "detail": "..."}`, where R
//! is `poweroff` (the guest powered off, or a client powered the VM off),
//! `reset` (the guest reset without `--reboot`), `crashed` (a triple
//! fault, an instruction KVM could not emulate, a VMM failure while the VM
//! ran) or `signal` (SIGINT, SIGTERM or SIGHUP, or the console escape).
//! It is written to a temporary file beside PATH and renamed over it, so a
//! reader sees the whole object or none. A VMM killed with SIGKILL writes
//! nothing: no file means the process was killed.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// `poweroff`, `reset`, `crashed` or `signal`.
    pub reason: String,
    /// One line on what happened (empty for a plain power-off).
    pub detail: String,
}

impl ExitStatus {
    /// A status with `reason` and `detail`.
    pub fn new(reason: &str, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: detail.into(),
        }
    }

    /// Writes it to `path` atomically (temporary file, fsync, rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let Some(name) = path.file_name() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the exit status path names no file",
            ));
        };
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_object_and_replaces_an_old_one() {
        let dir = std::env::temp_dir().join(format!("vireo-exit-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("exit.json");
        ExitStatus::new("reset", "").write(&path).unwrap();
        ExitStatus::new("crashed", "vcpu0: triple fault")
            .write(&path)
            .unwrap();
        let read: ExitStatus =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read, ExitStatus::new("crashed", "vcpu0: triple fault"));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "a temporary file was left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
