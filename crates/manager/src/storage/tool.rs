//! Running the host's storage tools (lvm2, mount.nfs) with a deadline, so
//! a stuck device or an unreachable server cannot hold a daemon worker
//! forever, and with their last error line as the one-line message.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::blockdev::last_line;
use super::StorageError;

/// Runs `cmd` (from Debian's `package`) and returns what it printed, or
/// its last error line; killed after `deadline`.
pub fn run(mut cmd: Command, package: &str, deadline: Duration) -> Result<String, StorageError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StorageError::Host(format!(
                "{program} is not installed (Debian package {package})"
            )),
            _ => StorageError::Host(format!("cannot run {program}: {e}")),
        })?;
    // Both pipes are read on threads, so a chatty tool never blocks on a
    // full pipe while it is waited for.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StorageError::Host(format!(
                    "{program} did not finish within {} s and was killed",
                    deadline.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(StorageError::Host(format!("waiting for {program}: {e}"))),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let line = last_line(&err);
        // Most tools name themselves already.
        let base = program.rsplit('/').next().unwrap_or(&program);
        return Err(StorageError::Host(
            if line.starts_with(&format!("{base}:")) {
                line
            } else {
                format!("{program}: {line}")
            },
        ));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_errors_and_deadlines() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo warn >&2"]);
        assert_eq!(run(c, "dash", Duration::from_secs(5)).unwrap(), "out\n");
        let mut c = Command::new("sh");
        c.args(["-c", "echo first >&2; echo 'the reason' >&2; exit 3"]);
        let e = run(c, "dash", Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "sh: the reason");
        let mut c = Command::new("sleep");
        c.arg("10");
        let t = Instant::now();
        let e = run(c, "coreutils", Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let e = run(
            Command::new("/nonexistent/tool"),
            "pkg",
            Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not installed (Debian package pkg)"), "{e}");
    }
}
