//! Why a `vireo run` ended, written to a file just before the process
//! exits (`--exit-status PATH`), so that a manager that is not the VMM's
//! parent (a daemon restarted since it started the VM) still learns it.
//!
//! The file is one JSON object, `{"reason": R, "detail": "..."}`, where R
//! is `poweroff` (the guest powered off, or a client powered the VM off),
//! `reset` (the guest reset without `--reboot`), `crashed` (a triple
//! fault, an instruction KVM could not emulate, a VMM failure while the VM
//! ran), `signal` (SIGINT, SIGTERM or SIGHUP, or the console escape) or
//! `seccomp` (a thread made a system call its filter forbids; the detail
//! names the thread and the call).
//! It is written to a temporary file beside PATH and renamed over it, so a
//! reader sees the whole object or none. A VMM killed with SIGKILL writes
//! nothing: no file means the process was killed. PATH is checked when the
//! run starts ([`check_path`]), so a path that can never be written is a
//! usage error then, not a lost status at the end.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What the file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// `poweroff`, `reset`, `crashed`, `failed`, `signal` or `seccomp`.
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

    /// The file's text: one JSON object and a newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Writes it to `path` atomically (temporary file, fsync, rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        check_path(path)?;
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        // create_new (O_CREAT|O_EXCL): never through a symlink or into a
        // file someone else placed at the temporary name (which is left
        // alone: only a file this call made is removed on failure).
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let result = (|| {
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

/// Whether `path` can take the exit status: its directory exists, and
/// nothing but a regular file is there already (a directory, a symlink, a
/// socket or a FIFO is refused rather than replaced).
pub fn check_path(path: &Path) -> std::io::Result<()> {
    let refuse = |why: &str| {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: {why}", path.display()),
        ))
    };
    if path.file_name().is_none() {
        return refuse("names no file");
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return refuse("its directory does not exist");
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) if m.file_type().is_symlink() => refuse("is a symbolic link"),
        Ok(m) if m.is_dir() => refuse("is a directory"),
        Ok(_) => refuse("is not a regular file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
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

    #[test]
    fn refuses_a_directory_a_symlink_and_a_missing_directory() {
        let dir = scratch_dir("refuses");
        let status = ExitStatus::new("poweroff", "");
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        for (path, why) in [
            (&sub, "is a directory"),
            (&link, "is a symbolic link"),
            (&dir.join("none/exit.json"), "directory does not exist"),
        ] {
            let err = status.write(path).unwrap_err().to_string();
            assert!(err.contains(why), "{}: {err}", path.display());
        }
        assert!(sub.is_dir());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn never_writes_through_a_symlink_at_the_temporary_name() {
        let dir = scratch_dir("tmp-symlink");
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let path = dir.join("exit.json");
        let tmp = dir.join(format!("exit.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        assert!(ExitStatus::new("poweroff", "").write(&path).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(!path.exists());
        assert!(std::fs::symlink_metadata(&tmp).unwrap().is_symlink());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vireo-exit-status-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
