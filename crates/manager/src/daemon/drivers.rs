//! Which drivers a daemon runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DaemonError;
use crate::driver::vireo::VireoDriver;
use crate::driver::Driver;

/// The drivers of `vireo daemon`: Vireo's own VMM (`vmm_binary run ...`),
/// and QEMU when `qemu` names its binary or `qemu-system-x86_64` is on
/// `PATH`. A `qemu` that is not an executable file is an error.
pub fn default_drivers(
    vmm_binary: PathBuf,
    qemu: Option<PathBuf>,
) -> Result<Vec<Arc<dyn Driver>>, DaemonError> {
    let drivers: Vec<Arc<dyn Driver>> = vec![Arc::new(VireoDriver::new(vmm_binary))];
    let qemu = match qemu {
        Some(path) if is_executable(&path) => Some(path),
        Some(path) => {
            return Err(DaemonError::Driver(format!(
                "--qemu {}: not an executable file",
                path.display()
            )))
        }
        None => find_on_path("qemu-system-x86_64"),
    };
    if let Some(binary) = qemu {
        // QEMU DRIVER: register it here, as
        // `drivers.push(Arc::new(crate::driver::qemu::QemuDriver::new(binary)))`
        // (the driver is on branch i11-qemu; `drivers` becomes `mut`).
        tracing::info!(
            "QEMU found at {}, but this build has no QEMU driver",
            binary.display()
        );
    }
    Ok(drivers)
}

/// `name` in a directory of `PATH`, if it is there.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
