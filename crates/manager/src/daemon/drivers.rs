//! Which drivers a daemon runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::DaemonError;
use crate::driver::qemu::QemuDriver;
use crate::driver::vireo::{UidRange, VireoDriver};
use crate::driver::Driver;

/// The drivers of `vireo daemon`: Vireo's own VMM (`vmm_binary run ...`,
/// each jailed under a uid of `jail` when given), and QEMU when `qemu`
/// names its binary or `qemu-system-x86_64` is on `PATH`. A `qemu` that
/// is not an executable file is an error.
pub fn default_drivers(
    vmm_binary: PathBuf,
    qemu: Option<PathBuf>,
    jail: Option<UidRange>,
) -> Result<Vec<Arc<dyn Driver>>, DaemonError> {
    let mut vireo = VireoDriver::new(vmm_binary);
    if let Some(uids) = jail {
        vireo = vireo.jailed(uids);
    }
    let mut drivers: Vec<Arc<dyn Driver>> = vec![Arc::new(vireo)];
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
        tracing::info!("QEMU driver: {}", binary.display());
        drivers.push(Arc::new(QemuDriver::new(binary)));
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
