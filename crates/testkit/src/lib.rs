//! Support shared by the workspace's integration tests.
//!
//! libtest has no way for a test to decide at run time that it cannot run
//! here: a test that returns early is counted as passed. [`skip`] closes
//! that gap. It prints a `SKIP:` line and appends the test's name and the
//! reason to the file named by `VIREO_SKIP_LOG`; `scripts/test.sh` sets
//! that variable and reports those tests as skipped, not passed, in its
//! summary. This crate is a dev-dependency only; nothing ships with it.

use std::io::Write;

/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG_VAR: &str = "VIREO_SKIP_LOG";

/// Record that the calling test cannot run on this host, and why.
///
/// The caller returns right after. The test's name is taken from the
/// current thread, which libtest names after the test.
pub fn skip(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    eprintln!("SKIP: {test}: {why}");
    let Some(path) = std::env::var_os(SKIP_LOG_VAR) else {
        return;
    };
    // One write per line: tests run on parallel threads and processes,
    // and O_APPEND keeps each line whole.
    let line = format!("{test}\t{why}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        // The summary would count this test as passed: fail it instead.
        panic!("cannot record skip in {}: {e}", path.to_string_lossy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_appends_the_test_name_and_reason() {
        let dir = std::env::temp_dir().join(format!("testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("skips");
        // Only this test in this binary touches the variable.
        std::env::set_var(SKIP_LOG_VAR, &log);
        skip("no frobnicator here");
        std::env::remove_var(SKIP_LOG_VAR);
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            text,
            "tests::skip_appends_the_test_name_and_reason\tno frobnicator here\n"
        );
    }
}
