//! Every example in `docs/` and `README.md` runs here, so the docs cannot
//! drift from what vireo does.
//!
//! Each Markdown file runs in a scratch directory of its own, its blocks in
//! order (a later block sees what an earlier one made), with the `vireo`
//! under test first on `PATH`, `target/guests` holding the test guests,
//! `guest.elf` a guest that exits at once and `$S` a socket path. Two shell
//! functions are defined for hidden setup lines: `wait_socket PATH` (until a
//! VM's API socket exists) and `wait_gone PATH` (until it is removed). What
//! a fenced block is decides what happens to it:
//!
//! - `sh`: run with `bash -e`; it must exit 0.
//! - `console`: a transcript. Each `$ ` line (with `\` continuations) is
//!   run; the lines after it, up to the next `$ `, are its expected
//!   output (stdout and stderr together). In expected lines `...` matches
//!   any text, and a line that is only `...` matches any number of lines.
//! - anything else is text for the reader, unless a directive says more.
//!
//! Directives are HTML comments (invisible when rendered) between the
//! previous block and this one:
//!
//! - `<!-- doc-test: setup` + lines + `-->`: shell lines run first, hidden
//!   from the reader (make an image, start a VM in the background);
//! - `<!-- doc-test: output -->`: this block is the expected output of the
//!   `sh` block before it, compared as in a transcript;
//! - `<!-- doc-test: no-run: REASON -->`: the block is not run, and the
//!   reason is printed in the test's output. Needed for `sh` and `console`
//!   blocks that cannot run here (a stock kernel, a minutes-long
//!   benchmark) and for code fragments (`rust`).
//!
//! Processes a file leaves running (a VM started with `&`) are killed when
//! the file is done.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any one block may run.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The files whose examples are tested; `every_doc_file_is_tested` keeps
/// this list complete.
const DOC_FILES: &[&str] = &[
    "README.md",
    "docs/api.md",
    "docs/architecture.md",
    "docs/daemon.md",
    "docs/devices.md",
    "docs/disks.md",
    "docs/domain-xml.md",
    "docs/interface-xml.md",
    "docs/leases.md",
    "docs/manager.md",
    "docs/memory.md",
    "docs/network-xml.md",
    "docs/networks.md",
    "docs/port-policy.md",
    "docs/remote.md",
    "docs/run.md",
    "docs/secrets.md",
    "docs/security.md",
    "docs/storage.md",
    "docs/storage-xml.md",
    "docs/testing.md",
];

#[derive(Debug, Default)]
struct Block {
    /// Line of the opening fence, 1-based.
    line: usize,
    lang: String,
    body: String,
    setup: Vec<String>,
    output: bool,
    no_run: Option<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fenced blocks of a Markdown text, with the directives before each.
fn parse(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut pending = Block::default();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("<!-- doc-test:") {
            let mut directive = rest.to_string();
            while !directive.contains("-->") {
                let Some((_, more)) = lines.next() else { break };
                directive.push('\n');
                directive.push_str(more);
            }
            let directive = directive.split("-->").next().unwrap_or("").trim();
            if let Some(cmds) = directive.strip_prefix("setup") {
                pending.setup.push(cmds.trim().to_string());
            } else if directive == "output" {
                pending.output = true;
            } else if let Some(reason) = directive.strip_prefix("no-run:") {
                pending.no_run = Some(reason.trim().to_string());
            } else {
                panic!("line {}: unknown doc-test directive: {directive}", i + 1);
            }
        } else if let Some(lang) = trimmed.strip_prefix("```") {
            let mut block = std::mem::take(&mut pending);
            block.line = i + 1;
            block.lang = lang.trim().to_string();
            // A block inside a list item is indented with it.
            let indent = line.len() - trimmed.len();
            for (_, l) in lines.by_ref() {
                if l.trim_start().starts_with("```") {
                    break;
                }
                let strip = l.len() - l.trim_start_matches(' ').len();
                block.body.push_str(&l[strip.min(indent)..]);
                block.body.push('\n');
            }
            blocks.push(block);
        }
    }
    blocks
}

/// Whether `actual` matches `expected`, where `...` in an expected line
/// matches any text and a line of only `...` matches any run of lines.
fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
        Some((first, rest)) => match actual.split_first() {
            Some((a, arest)) => line_matches(first, a) && lines_match(rest, arest),
            None => false,
        },
    }
}

fn line_matches(expected: &str, actual: &str) -> bool {
    let expected = expected.trim_end();
    let actual = actual.trim_end();
    let parts: Vec<&str> = expected.split("...").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let mut rest = actual;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Text lines without trailing blank lines.
fn text_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

/// Sourced by every bash the examples run in (through `BASH_ENV`).
const SHELL_FUNCTIONS: &str = r#"
wait_socket() { for _ in $(seq 400); do [ -S "$1" ] && return 0; sleep 0.025; done; echo "no socket at $1" >&2; return 1; }
wait_gone() { for _ in $(seq 400); do [ -e "$1" ] || return 0; sleep 0.025; done; echo "$1 is still there" >&2; return 1; }
"#;

/// One Markdown file's scratch directory and shell.
struct DocRun {
    dir: tempfile::TempDir,
    path_env: String,
    socket: PathBuf,
    /// Process groups of the shells run, each with what it left behind.
    groups: std::cell::RefCell<Vec<i32>>,
}

impl DocRun {
    fn new(name: &str) -> Self {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docs");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::Builder::new()
            .prefix(&name.replace('/', "-"))
            .tempdir_in(&base)
            .unwrap();
        let guests = common::guests_dir();
        std::fs::create_dir_all(dir.path().join("target")).unwrap();
        std::os::unix::fs::symlink(guests, dir.path().join("target/guests")).unwrap();
        std::os::unix::fs::symlink(guests.join("exit.elf"), dir.path().join("guest.elf")).unwrap();
        std::fs::write(dir.path().join(".doc-test-functions"), SHELL_FUNCTIONS).unwrap();
        // curl prints no progress meter on a terminal, where a reader runs
        // the examples; here its stderr is a file.
        std::fs::write(dir.path().join(".curlrc"), "silent\nshow-error\n").unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_vireo")).parent().unwrap();
        let path_env = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // In /tmp: a unix socket path has at most 107 bytes.
        let stem = Path::new(name).file_stem().unwrap().to_string_lossy();
        let socket = PathBuf::from(format!("/tmp/vireo-doc-{}-{stem}.sock", std::process::id()));
        Self {
            dir,
            path_env,
            socket,
            groups: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Run `script` with bash in the scratch directory; its exit status
    /// and its stdout and stderr together.
    fn bash(&self, script: &str) -> (Option<i32>, String) {
        let out_path = self.dir.path().join(".doc-test-output");
        let out = std::fs::File::create(&out_path).unwrap();
        let err = out.try_clone().unwrap();
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("PATH", &self.path_env)
            .env("S", &self.socket)
            .env("NO_COLOR", "1")
            .env("CURL_HOME", self.dir.path())
            .env("BASH_ENV", self.dir.path().join(".doc-test-functions"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: what it starts in the background (a
            // VM, or anything a wrong example starts) can be killed with it.
            .process_group(0)
            .spawn()
            .expect("run bash");
        let group = i32::try_from(child.id()).expect("pid");
        self.groups.borrow_mut().push(group);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > BLOCK_TIMEOUT {
                kill_group(group);
                let _ = child.wait();
                let text = std::fs::read_to_string(&out_path).unwrap_or_default();
                panic!("did not finish within {BLOCK_TIMEOUT:?}:\n{script}\noutput:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        (status.code(), text)
    }

    /// Kill what the examples left running: their process groups, and
    /// anything else working in the scratch directory.
    fn kill_leftovers(&self) {
        for group in self.groups.borrow().iter() {
            kill_group(*group);
        }
        let dir = self.dir.path().canonicalize().unwrap();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)) {
                // SAFETY: kill(2) on a pid has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for DocRun {
    fn drop(&mut self) {
        self.kill_leftovers();
    }
}

/// SIGKILL to every process in process group `group`.
fn kill_group(group: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
    // names a process group.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

/// A transcript as one script: each command is preceded by a marker line,
/// keeping `$?` of the command before it for an `echo $?`.
fn transcript_script(body: &str) -> (String, Vec<(String, Vec<String>)>) {
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    let mut continuing = false;
    for line in body.lines() {
        if continuing {
            let (cmd, _) = steps.last_mut().unwrap();
            cmd.push('\n');
            cmd.push_str(line);
            continuing = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            steps.push((cmd.to_string(), Vec::new()));
            continuing = cmd.ends_with('\\');
        } else if let Some((_, expected)) = steps.last_mut() {
            expected.push(line.to_string());
        } else {
            panic!("transcript text before its first `$ ` command: {line}");
        }
    }
    let mut script = String::from("exec 2>&1\n");
    for (i, (cmd, _)) in steps.iter().enumerate() {
        script.push_str(&format!(
            "__s=$?; printf '\\n@@doc-test-step-{i}@@\\n'; (exit $__s)\n{cmd}\n"
        ));
    }
    (script, steps)
}

/// Run every example of one file; panic listing every mismatch.
fn run_doc(file: &str) {
    let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
    let blocks = parse(&text);
    let run = DocRun::new(file);
    let mut failures = Vec::new();
    let mut last_sh_output: Option<String> = None;
    for block in &blocks {
        let place = format!("{file}:{}", block.line);
        for setup in &block.setup {
            let (code, out) = run.bash(&format!("set -e\n{setup}"));
            if code != Some(0) {
                failures.push(format!("{place}: setup failed ({code:?}):\n{setup}\n{out}"));
            }
        }
        if let Some(reason) = &block.no_run {
            eprintln!("{place}: not run: {reason}");
            continue;
        }
        if block.output {
            let Some(actual) = last_sh_output.take() else {
                failures.push(format!(
                    "{place}: an output block with no sh block before it"
                ));
                continue;
            };
            let expected = text_lines(&block.body);
            if !lines_match(&expected, &text_lines(&actual)) {
                failures.push(format!(
                    "{place}: output differs\nexpected:\n{}\nactual:\n{actual}",
                    block.body
                ));
            }
            continue;
        }
        match block.lang.as_str() {
            "sh" | "bash" => {
                let (code, out) = run.bash(&format!("set -e\n{}", block.body));
                if code != Some(0) {
                    failures.push(format!(
                        "{place}: exit code {code:?}\n{}output:\n{out}",
                        block.body
                    ));
                }
                last_sh_output = Some(out);
            }
            "console" => {
                let (script, steps) = transcript_script(&block.body);
                let (_, out) = run.bash(&script);
                let mut pieces = out.split("\n@@doc-test-step-");
                pieces.next();
                for (i, (cmd, expected)) in steps.iter().enumerate() {
                    let actual = pieces
                        .next()
                        .and_then(|p| p.split_once("@@\n"))
                        .map_or("", |(_, rest)| rest);
                    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
                    let expected = text_lines_slice(&expected);
                    if !lines_match(expected, &text_lines(actual)) {
                        failures.push(format!(
                            "{place}: `{cmd}` step {i} differs\nexpected:\n{}\nactual:\n{actual}",
                            expected.join("\n")
                        ));
                    }
                }
            }
            "rust" => failures.push(format!(
                "{place}: a rust block needs a no-run directive saying where the same calls run"
            )),
            _ => {}
        }
    }
    drop(run);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn text_lines_slice<'a>(lines: &'a [&'a str]) -> &'a [&'a str] {
    let mut end = lines.len();
    while end > 0 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    &lines[..end]
}

#[test]
fn every_doc_file_is_tested() {
    let mut found: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|n| n.ends_with(".md"))
        .collect();
    found.push("README.md".into());
    found.sort();
    let mut listed: Vec<String> = DOC_FILES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "DOC_FILES must list every docs/*.md and README.md"
    );
}

#[test]
fn transcript_matching() {
    assert!(lines_match(&["a", "...", "d"], &["a", "b", "c", "d"]));
    assert!(lines_match(&["x ... z"], &["x and z"]));
    assert!(!lines_match(&["x ... z"], &["x and y"]));
    assert!(!lines_match(&["a"], &["a", "b"]));
    let blocks = parse("<!-- doc-test: setup\ntouch f\n-->\n```sh\nls\n```\n");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].setup, vec!["touch f".to_string()]);
    assert_eq!(blocks[0].body, "ls\n");
}

#[test]
fn readme() {
    run_doc("README.md");
}

#[test]
fn api() {
    run_doc("docs/api.md");
}

#[test]
fn architecture() {
    run_doc("docs/architecture.md");
}

#[test]
fn daemon() {
    run_doc("docs/daemon.md");
}

#[test]
fn devices() {
    run_doc("docs/devices.md");
}

#[test]
fn disks() {
    run_doc("docs/disks.md");
}

#[test]
fn domain_xml() {
    run_doc("docs/domain-xml.md");
}

#[test]
fn manager() {
    run_doc("docs/manager.md");
}

#[test]
fn memory() {
    run_doc("docs/memory.md");
}

#[test]
fn network_xml() {
    run_doc("docs/network-xml.md");
}

#[test]
fn port_policy() {
    run_doc("docs/port-policy.md");
}

#[test]
fn remote() {
    run_doc("docs/remote.md");
}

#[test]
fn run() {
    run_doc("docs/run.md");
}

#[test]
fn security() {
    run_doc("docs/security.md");
}

#[test]
fn testing() {
    run_doc("docs/testing.md");
}

#[test]
fn interface_xml() {
    run_doc("docs/interface-xml.md");
}

#[test]
fn networks() {
    run_doc("docs/networks.md");
}

#[test]
fn storage() {
    run_doc("docs/storage.md");
}

#[test]
fn leases() {
    run_doc("docs/leases.md");
}

#[test]
fn storage_xml() {
    run_doc("docs/storage-xml.md");
}

#[test]
fn secrets() {
    run_doc("docs/secrets.md");
}
