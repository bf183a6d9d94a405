//! Writes under /proc/sys/net, which apply to the network namespace of
//! the calling thread.

use std::io;
use std::path::{Component, Path, PathBuf};

const ROOT: &str = "/proc/sys/net";

/// Turn IPv4 forwarding on or off in the calling thread's namespace.
pub fn set_ipv4_forwarding(on: bool) -> io::Result<()> {
    set_sysctl("ipv4/ip_forward", if on { "1" } else { "0" })
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Write `value` to /proc/sys/net/`path` (e.g. "ipv4/conf/vireobr0/forwarding").
/// Paths that are absolute, empty or climb with `..` are refused, as are
/// values with a newline (the kernel would parse only up to it).
pub fn set_sysctl(path: &str, value: &str) -> io::Result<()> {
    let rel = Path::new(path);
    let ok = !path.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(invalid(format!(
            "sysctl path {path:?} is not a plain path under {ROOT}"
        )));
    }
    if value.contains('\n') || value.contains('\0') {
        return Err(invalid(format!(
            "sysctl value {value:?} for {path} has a newline or NUL"
        )));
    }
    let full: PathBuf = Path::new(ROOT).join(rel);
    std::fs::write(&full, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", full.display()),
        )
    })
}
