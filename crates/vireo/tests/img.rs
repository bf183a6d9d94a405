//! `vireo img` end to end, with qemu-img as the judge: what vireo creates,
//! converts, resizes and snapshots, qemu-img reads and finds clean; what
//! vireo prints matches what qemu-img says about the same image.

// Test images are small and the tests run on 64-bit hosts only.
#![allow(clippy::cast_possible_truncation)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn vireo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vireo"))
        .args(["img"])
        .args(args)
        .output()
        .expect("run vireo")
}

fn ok(args: &[&str]) -> String {
    let out = vireo(args);
    assert!(
        out.status.success(),
        "vireo img {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn create_info_check_agree_with_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.qcow2");
    let out = ok(&["create", "-f", "qcow2", s(&img), "1G"]);
    assert!(out.starts_with("Formatting '"), "{out}");
    // -q, as qemu-img's: the same image, nothing printed.
    let quiet = dir.path().join("q.qcow2");
    assert_eq!(ok(&["create", "-q", "-f", "qcow2", s(&quiet), "1G"]), "");
    assert_eq!(
        ok(&[
            "create",
            "-q",
            "-f",
            "raw",
            s(&dir.path().join("q.raw")),
            "1M"
        ]),
        ""
    );
    let human = ok(&["info", s(&img)]);
    for line in [
        "file format: qcow2",
        "virtual size: 1 GiB (1073741824 bytes)",
        "cluster_size: 65536",
        "compat: 1.1",
        "refcount bits: 16",
    ] {
        assert!(human.contains(line), "missing {line:?} in\n{human}");
    }
    let mine = json(&ok(&["info", "--output", "json", s(&img)]));
    let theirs = json(&qemu(&["info", "--output", "json", s(&img)]));
    for key in [
        "virtual-size",
        "cluster-size",
        "format",
        "format-specific",
        "dirty-flag",
    ] {
        assert_eq!(mine[key], theirs[key], "field {key}");
    }
    qemu(&["check", s(&img)]);
    let check = ok(&["check", s(&img)]);
    assert!(
        check.contains("No errors were found on the image."),
        "{check}"
    );

    // Version 2, small clusters, raw.
    let v2 = dir.path().join("v2.qcow2");
    ok(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10,cluster_size=4k",
        s(&v2),
        "100M",
    ]);
    let theirs = json(&qemu(&["info", "--output", "json", s(&v2)]));
    assert_eq!(theirs["cluster-size"], 4096);
    assert_eq!(theirs["format-specific"]["data"]["compat"], "0.10");
    qemu(&["check", s(&v2)]);
    let raw = dir.path().join("r.img");
    ok(&["create", s(&raw), "10M"]);
    let theirs = json(&qemu(&["info", "--output", "json", s(&raw)]));
    assert_eq!(theirs["format"], "raw");
    assert_eq!(theirs["virtual-size"], 10 << 20);
}

#[test]
fn backing_files_convert_and_resize() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&base, &data).unwrap();
    let top = dir.path().join("top.qcow2");
    // Size from the backing file; format probed.
    ok(&["create", "-f", "qcow2", "-b", "base.raw", s(&top)]);
    let info = json(&ok(&["info", "--output", "json", s(&top)]));
    assert_eq!(info["virtual-size"], 4 << 20);
    assert_eq!(info["backing-filename"], "base.raw");
    assert_eq!(info["backing-filename-format"], "raw");
    let theirs = json(&qemu(&["info", "--output", "json", s(&top)]));
    assert_eq!(theirs["backing-filename-format"], "raw");
    Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x61 100k 300k", s(&top)])
        .output()
        .unwrap();

    // convert flattens the chain, with a progress bar.
    let flat = dir.path().join("flat.qcow2");
    ok(&["convert", "-p", "-O", "qcow2", s(&top), s(&flat)]);
    qemu(&["check", s(&flat)]);
    qemu(&["compare", s(&top), s(&flat)]);
    let flat_info = json(&qemu(&["info", "--output", "json", s(&flat)]));
    assert!(flat_info.get("backing-filename").is_none());
    let raw = dir.path().join("flat.raw");
    ok(&["convert", "-O", "raw", s(&flat), s(&raw)]);
    qemu(&["compare", "-f", "qcow2", "-F", "raw", s(&top), s(&raw)]);

    // resize grows the virtual disk; the new space reads as zeroes.
    ok(&["resize", s(&flat), "+1G"]);
    let grown = json(&qemu(&["info", "--output", "json", s(&flat)]));
    assert_eq!(grown["virtual-size"], (4u64 << 20) + (1 << 30));
    qemu(&["check", s(&flat)]);
    let out = vireo(&["resize", s(&flat), "1M"]);
    assert_eq!(out.status.code(), Some(2), "shrinking needs --shrink");
    ok(&["resize", "--shrink", s(&flat), "2M"]);
    qemu(&["check", s(&flat)]);
    assert_eq!(
        json(&qemu(&["info", "--output", "json", s(&flat)]))["virtual-size"],
        2 << 20
    );
}

#[test]
fn snapshots_made_by_either_tool_are_seen_by_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("s.qcow2");
    ok(&["create", "-f", "qcow2", s(&img), "16M"]);
    Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 1 0 1M", s(&img)])
        .output()
        .unwrap();
    ok(&["snapshot", "-c", "mine", s(&img)]);
    qemu(&["snapshot", "-c", "theirs", s(&img)]);
    let listed = ok(&["snapshot", "-l", s(&img)]);
    assert!(
        listed.contains("mine") && listed.contains("theirs"),
        "{listed}"
    );
    let q = qemu(&["snapshot", "-l", s(&img)]);
    assert!(q.contains("mine") && q.contains("theirs"), "{q}");
    let info = json(&ok(&["info", "--output", "json", s(&img)]));
    assert_eq!(info["snapshots"].as_array().unwrap().len(), 2);
    // The snapshot converts to what it held.
    let out = dir.path().join("mine.raw");
    ok(&["convert", "-s", "mine", "-O", "raw", s(&img), s(&out)]);
    let back = std::fs::read(&out).unwrap();
    assert!(back[..1 << 20].iter().all(|&b| b == 1));
    assert!(back[1 << 20..].iter().all(|&b| b == 0));
    // Write over the snapshot's data, then revert to it.
    Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 9 512k 1M", s(&img)])
        .output()
        .unwrap();
    ok(&["snapshot", "-a", "mine", s(&img)]);
    qemu(&["check", s(&img)]);
    let reverted = dir.path().join("reverted.raw");
    qemu(&["convert", "-O", "raw", s(&img), s(&reverted)]);
    assert!(
        std::fs::read(&reverted).unwrap() == back,
        "apply restores the snapshot"
    );
    ok(&["snapshot", "-d", "theirs", s(&img)]);
    qemu(&["check", s(&img)]);
    let q = qemu(&["snapshot", "-l", s(&img)]);
    assert!(q.contains("mine") && !q.contains("theirs"), "{q}");
}

#[test]
fn check_reports_leaks_and_repairs_them() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("leak.qcow2");
    ok(&["create", "-f", "qcow2", s(&img), "16M"]);
    // Leak a cluster: count cluster 10 without referencing it (refcount
    // block at 0x20000, 16-bit entries).
    let mut bytes = std::fs::read(&img).unwrap();
    bytes.resize(11 * 65536, 0);
    bytes[0x20000 + 2 * 10 + 1] = 1;
    std::fs::write(&img, &bytes).unwrap();
    let out = vireo(&["check", s(&img)]);
    assert_eq!(out.status.code(), Some(3), "leaks only: exit 3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 leaked clusters were found"), "{text}");
    let j = json(&String::from_utf8_lossy(
        &vireo(&["check", "--output", "json", s(&img)]).stdout,
    ));
    assert_eq!(j["leaks"], 1);
    ok(&["check", "-r", "leaks", s(&img)]);
    qemu(&["check", s(&img)]);
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.qcow2");
    std::fs::write(&junk, b"QFI\xfbnot really").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["create".into(), "x.img".into(), "12Q".into()],
            "invalid size",
        ),
        (
            vec!["info".into(), "/nonexistent.qcow2".into()],
            "No such file",
        ),
        (vec!["info".into(), s(&junk).into()], "too short"),
        (
            vec![
                "create".into(),
                "-f".into(),
                "vmdk".into(),
                "x".into(),
                "1M".into(),
            ],
            "vmdk",
        ),
        (
            vec![
                "create".into(),
                "-f".into(),
                "qcow2".into(),
                "-o".into(),
                "cluster_size=3000".into(),
                s(&dir.path().join("c")).into(),
                "1M".into(),
            ],
            "cluster size",
        ),
        (
            vec![
                "create".into(),
                "-f".into(),
                "qcow2".into(),
                s(&dir.path().join("nosize")).into(),
            ],
            "size is required",
        ),
    ];
    for (args, want) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = vireo(&refs);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(want),
            "{args:?}: {err:?} should mention {want:?}"
        );
    }
}

fn qemu_io(img: &Path, cmd: &str) {
    let out = Command::new("qemu-io")
        .args(["-c", cmd, s(img)])
        .output()
        .expect("run qemu-io");
    assert!(out.status.success(), "qemu-io {cmd}: {out:?}");
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Issue 9, item 1: with a VM running on an image, `img create` and `img
/// convert` onto it fail with "in use" and leave it byte for byte as it
/// was (they used to truncate it first).
#[test]
fn create_and_convert_never_touch_an_image_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.qcow2");
    let base = dir.path().join("base.img");
    ok(&["create", "-f", "qcow2", s(&live), "64M"]);
    ok(&["create", "-f", "raw", s(&base), "1M"]);
    qemu_io(&live, "write -P 7 0 1M");
    let before = std::fs::read(&live).unwrap();
    let mut vm = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .args(["run", "--kernel"])
        .arg(common::guest("idle"))
        .arg("--disk")
        .arg(format!("path={}", s(&live)))
        .args(["--serial", "off"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start vireo run");
    // The VM holds the image's lock once qemu-img can no longer open it,
    // and keeps holding it: `vireo run` first opens each disk briefly to
    // check it, then opens it again when it builds the VM.
    let start = std::time::Instant::now();
    let mut held = 0;
    while held < 10 {
        let q = Command::new("qemu-img")
            .args(["info", s(&live)])
            .output()
            .unwrap();
        held = if q.status.success() { 0 } else { held + 1 };
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "the VM never held its disk's lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let attempts: [&[&str]; 4] = [
        &["create", "-f", "qcow2", s(&live), "64M"],
        &["create", "-f", "raw", s(&live), "1M"],
        &["convert", "-O", "raw", s(&base), s(&live)],
        &["convert", "-O", "qcow2", s(&base), s(&live)],
    ];
    let mut failures = Vec::new();
    for args in attempts {
        let out = vireo(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() || !err.contains("in use") {
            failures.push(format!("{args:?}: {} {err}", out.status));
        }
        if std::fs::read(&live).unwrap() != before {
            failures.push(format!("{args:?} changed the VM's disk"));
        }
    }
    let still_running = vm.try_wait().unwrap().is_none();
    vm.kill().unwrap();
    let vm_out = vm.wait_with_output().unwrap();
    assert!(
        still_running,
        "the VM exited during the test: {}",
        String::from_utf8_lossy(&vm_out.stderr)
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(files_in(dir.path()), ["base.img", "live.qcow2"]);
}

/// Issue 9, item 1: convert onto its own source, onto a file in the
/// source's backing chain, or onto another name of either is refused as
/// such (not "in use"), and nothing is written.
#[test]
fn convert_refuses_to_write_over_its_own_input() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.img");
    let ov = dir.path().join("ov.qcow2");
    ok(&["create", "-f", "raw", s(&base), "1M"]);
    qemu_io(&base, "write -P 9 0 64k");
    ok(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.img",
        "-F",
        "raw",
        s(&ov),
    ]);
    let hard = dir.path().join("hard.img");
    std::fs::hard_link(&base, &hard).unwrap();
    let sym = dir.path().join("sym.img");
    std::os::unix::fs::symlink("base.img", &sym).unwrap();
    let before = std::fs::read(&base).unwrap();
    let cases: [(&Path, &Path, &str); 4] = [
        (&base, &base, "the source image itself"),
        (&ov, &base, "in the source's backing chain"),
        (&base, &hard, "the source image itself"),
        (&sym, &base, "the source image itself"),
    ];
    for (src, dst, why) in cases {
        let out = vireo(&["convert", "-O", "raw", s(src), s(dst)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{src:?} -> {dst:?}: {err}");
        assert!(err.contains(why) && !err.contains("in use"), "{err}");
        assert_eq!(std::fs::read(&base).unwrap(), before, "{src:?} -> {dst:?}");
    }
    // A new image naming itself (through its chain) as backing file.
    let out = vireo(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "ov.qcow2",
        "-F",
        "qcow2",
        s(&base),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("its own backing file"), "{err}");
    assert_eq!(std::fs::read(&base).unwrap(), before);
    assert_eq!(
        files_in(dir.path()),
        ["base.img", "hard.img", "ov.qcow2", "sym.img"]
    );
}

/// Issue 9, item 1: a create that fails leaves the existing file as it
/// was (`-f raw keep.img 8E` used to leave it at 0 bytes), and the error
/// names the file.
#[test]
fn failed_create_leaves_the_existing_file_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("keep.img");
    std::fs::write(&keep, b"precious").unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["create", "-f", "raw", s(&keep), "8E"], "keep.img: size"),
        (&["create", "-f", "qcow2", s(&keep), "4E"], "keep.img: size"),
        (
            &["create", "-f", "qcow2", "-b", "missing.img", s(&keep)],
            "missing.img: open: No such file",
        ),
    ];
    for (args, want) in cases {
        let out = vireo(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(std::fs::read(&keep).unwrap(), b"precious", "{args:?}");
    }
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let out = vireo(&["create", s(&sub), "1M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    std::fs::remove_dir(&sub).unwrap();
    let out = vireo(&["create", "/nodir/x", "1G"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/nodir/x") && err.contains("does not exist"),
        "{err}"
    );
    // A successful create replaces the file and keeps its mode (and, as
    // root, its owner).
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(&keep, std::fs::Permissions::from_mode(0o640)).unwrap();
    let root = std::os::unix::fs::chown(&keep, Some(4321), Some(4321)).is_ok();
    ok(&["create", "-f", "qcow2", s(&keep), "1M"]);
    let meta = std::fs::metadata(&keep).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    if root {
        assert_eq!((meta.uid(), meta.gid()), (4321, 4321));
    }
    qemu(&["check", s(&keep)]);
    assert_eq!(files_in(dir.path()), ["keep.img"]);
}

fn code_of(cmd: &mut Command) -> Option<i32> {
    cmd.output().unwrap().status.code()
}

/// Set the refcount of the active L2 table to 0 (refcount block at
/// 0x20000, 16-bit entries, as vireo and qemu-img lay images out).
fn zero_l2_refcount(img: &Path) {
    let mut b = std::fs::read(img).unwrap();
    let l1 = u64::from_be_bytes(b[40..48].try_into().unwrap()) as usize;
    let l2 = u64::from_be_bytes(b[l1..l1 + 8].try_into().unwrap()) & 0x00ff_ffff_ffff_fe00;
    let c = (l2 >> 16) as usize;
    b[0x20000 + 2 * c..0x20000 + 2 * c + 2].copy_from_slice(&[0, 0]);
    std::fs::write(img, &b).unwrap();
}

/// Issue 9, item 3: `check -r all` reaches a clean image in one run (an
/// L2 table with refcount 0 used to leave an OFLAG_COPIED error behind
/// while reporting none), and says what is left when it cannot.
#[test]
fn check_repair_all_reaches_a_clean_image_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("l2rc0.qcow2");
    ok(&["create", "-f", "qcow2", s(&img), "16M"]);
    qemu_io(&img, "write -P 1 0 64k");
    zero_l2_refcount(&img);
    let copy = dir.path().join("copy.qcow2");
    std::fs::copy(&img, &copy).unwrap();
    assert_eq!(vireo(&["check", s(&img)]).status.code(), Some(2));
    assert_eq!(
        code_of(Command::new("qemu-img").args(["check", s(&copy)])),
        Some(2)
    );
    let out = vireo(&["check", "-r", "all", s(&img)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Double checking the fixed image now..."),
        "{text}"
    );
    qemu(&["check", s(&img)]);
    assert_eq!(vireo(&["check", s(&img)]).status.code(), Some(0));
    // Reserved bits in an L1 entry cannot be repaired: -r all says so
    // and exits 2, as qemu-img does.
    let mut b = std::fs::read(&img).unwrap();
    let l1 = u64::from_be_bytes(b[40..48].try_into().unwrap()) as usize;
    b[l1 + 7] |= 2;
    std::fs::write(&img, &b).unwrap();
    std::fs::write(&copy, &b).unwrap();
    let out = vireo(&["check", "-r", "all", s(&img)]);
    assert_eq!(
        out.status.code(),
        code_of(Command::new("qemu-img").args(["check", "-r", "all", s(&copy)])),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved bits"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 errors were found"));
}

/// Issue 9: `img check` exits as qemu-img check does: 0 clean, 1 check
/// not completed (no image, unreadable header), 2 corruptions, 3 leaks
/// only, 63 a format with no checks.
#[test]
fn check_exit_codes_match_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.qcow2");
    ok(&["create", "-f", "qcow2", s(&clean), "16M"]);
    let raw = dir.path().join("raw.img");
    ok(&["create", "-f", "raw", s(&raw), "1M"]);
    let junk = dir.path().join("junk.qcow2");
    std::fs::write(&junk, b"QFI\xfbnot really a header").unwrap();
    let leak = dir.path().join("leak.qcow2");
    ok(&["create", "-f", "qcow2", s(&leak), "16M"]);
    let mut b = std::fs::read(&leak).unwrap();
    b.resize(11 * 65536, 0);
    b[0x20000 + 2 * 10 + 1] = 1;
    std::fs::write(&leak, &b).unwrap();
    let corrupt = dir.path().join("corrupt.qcow2");
    ok(&["create", "-f", "qcow2", s(&corrupt), "16M"]);
    qemu_io(&corrupt, "write 0 64k");
    zero_l2_refcount(&corrupt);
    let missing = dir.path().join("missing.qcow2");
    for (img, want) in [
        (&clean, 0),
        (&raw, 63),
        (&junk, 1),
        (&missing, 1),
        (&leak, 3),
        (&corrupt, 2),
    ] {
        let theirs = code_of(Command::new("qemu-img").args(["check", s(img)]));
        let out = vireo(&["check", s(img)]);
        assert_eq!(theirs, Some(want), "qemu-img check {img:?}");
        assert_eq!(
            out.status.code(),
            Some(want),
            "vireo img check {img:?}: {out:?}"
        );
        if want == 1 || want == 63 {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(
                err.contains(img.file_name().unwrap().to_str().unwrap()),
                "{err}"
            );
        }
    }
}
