//! Test support for the nested runs of `scripts/nested/run.sh`: vireo inside
//! an L1 Linux under QEMU's emulator (which offers AMD SVM), booting stock
//! L2 Linux guests. Nesting is how a stock kernel reaches userspace on a host
//! whose KVM emulates guest kernel code (kvm-pvm); see docs/testing.md.
//!
//! One L1 boot runs many scenarios. [`run`] does it once per name and
//! scenario list; [`Run::scenario`] cuts out one scenario's part of L1's
//! console (its `VIREO-RESULT` lines, the L2 console and vireo's log), and
//! [`Scenario::assert_checks`] turns it into a test verdict quoting the
//! guest's own evidence.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The outcome of one L1 boot.
pub struct Run {
    /// Everything L1 printed on its console.
    pub log: String,
    /// QEMU's exit status as run.sh recorded it (124: the run timed out).
    pub qemu_rc: String,
    /// Wall time of the L1 boot, in seconds.
    pub wall_seconds: String,
    /// Where the run's files are.
    pub out: PathBuf,
}

/// One check a scenario reported.
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub evidence: String,
}

/// One scenario's part of L1's console.
pub struct Scenario<'a> {
    pub name: String,
    run: &'a Run,
    /// The lines between its BEGIN and END markers (or to the end of the log
    /// when it never ended).
    lines: Vec<&'a str>,
    /// Whether `VIREO-SCENARIO-END` was printed.
    ended: bool,
    /// vireo's exit code from the END line (`none` when vireo never ran).
    pub rc: Option<String>,
    pub checks: Vec<Check>,
    /// Why the scenario could not run in this L1 (its `VIREO-SKIP` line):
    /// a skip, never a pass.
    pub skipped: Option<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Boot L1 once with `scenarios` and wait for it (bounded by run.sh's
/// timeout). `Err` holds why this host cannot run it (a skip). Panics when
/// building the pieces fails: that is a failure, not a skip.
pub fn run(name: &str, scenarios: &[&str]) -> Result<Run, String> {
    run_with(name, scenarios, &[])
}

/// [`run`] with extra environment for run.sh (such as
/// `VIREO_NESTED_NUMA`).
pub fn run_with(name: &str, scenarios: &[&str], env: &[(&str, &str)]) -> Result<Run, String> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nested-{name}"));
    let output = Command::new(repo_root().join("scripts/nested/run.sh"))
        .arg(&out)
        .arg(scenarios.join(","))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run scripts/nested/run.sh: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprint!("{stderr}");
    if output.status.code() == Some(77) {
        let why = stderr
            .lines()
            .find_map(|l| l.strip_prefix("SKIP: "))
            .unwrap_or("scripts/nested/run.sh cannot run here");
        return Err(why.to_string());
    }
    assert!(
        output.status.success(),
        "scripts/nested/run.sh failed ({}):\n{stderr}",
        output.status
    );
    let read = |f: &str| {
        std::fs::read(out.join(f))
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_else(|e| panic!("read {}: {e}", out.join(f).display()))
    };
    let run = Run {
        log: read("l1-console.log"),
        qemu_rc: read("qemu.rc"),
        wall_seconds: read("wall-seconds"),
        out,
    };
    for froze in run.log.lines().filter(|l| l.starts_with("VIREO-L1-FROZE ")) {
        eprintln!("nested: {froze}");
    }
    eprintln!(
        "nested: {} scenario(s) in {} s of wall time (QEMU rc {})",
        scenarios.len(),
        run.wall_seconds,
        run.qemu_rc
    );
    Ok(run)
}

impl Run {
    /// The part of the log that belongs to `name`: its last attempt, when
    /// an L1 that froze was booted again for it (run.sh's
    /// `VIREO-L1-FROZE`). A scenario that never began has no lines; its
    /// checks then fail with the log's tail.
    pub fn scenario(&self, name: &str) -> Scenario<'_> {
        let begin = format!("VIREO-SCENARIO-BEGIN {name}");
        let end = format!("VIREO-SCENARIO-END {name} ");
        let mut lines = Vec::new();
        let mut inside = false;
        let mut ended = false;
        let mut rc = None;
        for line in self.log.lines().map(|l| l.trim_end_matches('\r')) {
            if line == begin {
                inside = true;
                lines.clear();
                continue;
            }
            if !inside {
                continue;
            }
            if let Some(rest) = line.strip_prefix(&end) {
                ended = true;
                rc = rest.strip_prefix("rc=").map(str::to_string);
                break;
            }
            // An attempt that never ended stops where its L1 boot did
            // (run.sh's freeze report and VIREO-L1-FROZE line are its last
            // lines) or where the next scenario began: the lines after it
            // belong to other scenarios.
            if line.starts_with("VIREO-SCENARIO-BEGIN ") {
                inside = false;
                continue;
            }
            lines.push(line);
            if line.starts_with("VIREO-L1-FROZE ") {
                inside = false;
            }
        }
        let skip = format!("VIREO-SKIP {name} ");
        let skipped = lines
            .iter()
            .find_map(|l| l.strip_prefix(&skip))
            .map(str::to_string);
        let prefix = format!("VIREO-RESULT {name} ");
        let checks = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                let mut words = rest.splitn(3, ' ');
                let check = words.next()?.to_string();
                let verdict = words.next()?;
                Some(Check {
                    name: check,
                    ok: verdict == "ok",
                    evidence: words.next().unwrap_or("").to_string(),
                })
            })
            .collect();
        Scenario {
            name: name.to_string(),
            run: self,
            lines,
            ended,
            rc,
            checks,
            skipped,
        }
    }
}

impl Scenario<'_> {
    /// The L2 guest's serial console, as vireo printed it.
    pub fn l2_console(&self) -> String {
        let mut text = String::new();
        for line in &self.lines {
            if let Some(l) = line.strip_prefix("L2| ") {
                text.push_str(l);
                text.push('\n');
            } else if *line == "L2|" {
                text.push('\n');
            }
        }
        text
    }

    /// Everything to show when the scenario failed: its lines (L2 console,
    /// vireo log, results; the start and the end of them when they are
    /// many) or, when it never began, the tail of L1's console.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "--- scenario {} (ended: {}, vireo rc {}; L1 console in {}/l1-console.log, \
             QEMU rc {}) ---\n",
            self.name,
            self.ended,
            self.rc.as_deref().unwrap_or("-"),
            self.run.out.display(),
            self.run.qemu_rc
        );
        // CI shows a bounded part of a failing test's output: the start of
        // the scenario and its last lines (where it failed or stopped)
        // fit, a whole L2 boot log does not.
        const HEAD: usize = 15;
        const TAIL: usize = 100;
        if self.lines.len() > HEAD + TAIL {
            let omitted = self.lines.len() - HEAD - TAIL;
            for line in &self.lines[..HEAD] {
                text.push_str(line);
                text.push('\n');
            }
            text.push_str(&format!(
                "[... {omitted} lines; all of them in {}/l1-console.log]\n",
                self.run.out.display()
            ));
            for line in &self.lines[self.lines.len() - TAIL..] {
                text.push_str(line);
                text.push('\n');
            }
        } else {
            for line in &self.lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        // A scenario that never began has no lines: what L1 did instead is
        // at the end of its console. (One that began and never ended has
        // its own lines up to where L1 died or froze.)
        if self.lines.is_empty() {
            let all: Vec<&str> = self.run.log.lines().collect();
            let from = all.len().saturating_sub(30);
            text.push_str(&format!(
                "--- the last lines of L1's console (QEMU's resets and guest errors: {}/qemu-debug.log) ---\n",
                self.run.out.display()
            ));
            for line in &all[from..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Assert the scenario ran to its end and every check in `expected`
    /// was reported, and reported ok (and no other check failed).
    pub fn assert_checks(&self, expected: &[&str]) {
        let mut problems = Vec::new();
        if let Some(why) = &self.skipped {
            problems.push(format!("the scenario could not run in L1 (a skip): {why}"));
        }
        if !self.ended {
            problems.push("the scenario never ended (L1 hung, timed out or died)".to_string());
        }
        for want in expected {
            if !self.checks.iter().any(|c| c.name == *want) {
                problems.push(format!("check {want}: never reported"));
            }
        }
        for c in self.checks.iter().filter(|c| !c.ok) {
            problems.push(format!("check {} failed: {}", c.name, c.evidence));
        }
        assert!(
            problems.is_empty(),
            "nested scenario {}:\n  {}\n{}",
            self.name,
            problems.join("\n  "),
            self.describe()
        );
    }
}
