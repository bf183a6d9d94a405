//! The benchmark scripts are not run by the suite (they take minutes and
//! want a quiet machine), so a script whose options no longer parse would
//! only be found by whoever runs it next: each must at least answer
//! `--help`.

use std::path::Path;
use std::process::Command;

#[test]
fn every_benchmark_script_parses_its_options() {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
    let mut scripts: Vec<_> = std::fs::read_dir(&bench)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "py"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 10, "{scripts:?}");
    let mut broken = Vec::new();
    for script in &scripts {
        let out = Command::new("python3")
            .arg(script)
            .arg("--help")
            .output()
            .expect("python3 runs");
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.contains("usage:") {
            broken.push(format!(
                "{}: {}\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
