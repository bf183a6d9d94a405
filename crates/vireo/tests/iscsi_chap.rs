//! Secrets and CHAP through a real `vireo daemon` and the real CLI: the
//! `secret-*` verbs (text and `--json`), where values live and where they
//! never appear; and an `iscsi-direct` pool whose target (a real tgtd in
//! a network namespace the test makes) admits only a CHAP account.

mod daemon_harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use daemon_harness::{have_kvm, Daemon};
use iscsi::test_target::{LunSpec, TestTarget};

const MIB: u64 = 1 << 20;
/// The CHAP account the targets admit.
const USER: &str = "vireo-chap";
const PASSWORD: &str = "s3cret-Chap-pw";
/// PASSWORD in base64.
const PASSWORD_B64: &str = "czNjcmV0LUNoYXAtcHc=";

/// The virsh verbs of `vireo` against `socket`: exit code, stdout, stderr.
fn virsh_on(socket: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .env_remove("VIREO_DEFAULT_URI")
        .arg("-c")
        .arg(format!("vireo+unix:///system?socket={}", socket.display()))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn virsh(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    virsh_on(&d.socket, args)
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let (code, out, err) = virsh(d, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// A verb that must fail with exit code 1 and one line naming `says`;
/// the line is returned.
fn refused(d: &Daemon, args: &[&str], says: &str) -> String {
    let (code, _, err) = virsh(d, args);
    assert_eq!(code, 1, "{args:?} succeeded");
    assert!(err.contains(says), "{args:?}: want '{says}' in {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    err
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// Every file under `dir`, read as text (lossily).
fn all_text_under(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&all_text_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push_str(&String::from_utf8_lossy(&b));
        }
    }
    out
}

const UUID: &str = "c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6";

fn secret_xml(usage: &str, private: bool, ephemeral: bool, uuid: Option<&str>) -> String {
    let yn = |b| if b { "yes" } else { "no" };
    let uuid = uuid
        .map(|u| format!("<uuid>{u}</uuid>"))
        .unwrap_or_default();
    format!(
        "<secret ephemeral='{}' private='{}'>{uuid}<description>CHAP of the SAN</description>\
         <usage type='iscsi'><target>{usage}</target></usage></secret>\n",
        yn(ephemeral),
        yn(private)
    )
}

#[test]
fn secrets_through_the_daemon_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());

    // secret-define prints the UUID it was given (or made).
    let file = write(
        dir.path(),
        "s.xml",
        &secret_xml("san-chap", false, false, Some(UUID)),
    );
    let out = ok(&d, &["secret-define", &file]);
    assert_eq!(out, format!("Secret {UUID} created\n\n"));
    let made = write(
        dir.path(),
        "t.xml",
        "<secret><usage type='ceph'><name>client.admin</name></usage></secret>",
    );
    let out = ok(&d, &["secret-define", &made]);
    let ceph_uuid = out
        .strip_prefix("Secret ")
        .and_then(|s| s.strip_suffix(" created\n\n"))
        .unwrap()
        .to_string();
    assert_eq!(ceph_uuid.len(), 36, "{out}");

    // secret-list: virsh's table, and --json.
    let list = ok(&d, &["secret-list"]);
    let mut lines = list.lines();
    let head = lines.next().unwrap();
    assert!(
        head.starts_with(" UUID") && head.trim_end().ends_with("Usage"),
        "{list}"
    );
    assert!(lines.next().unwrap().starts_with("-----"), "{list}");
    assert!(
        list.contains(&format!(" {UUID}   iscsi san-chap\n")),
        "{list}"
    );
    assert!(list.contains("ceph client.admin"), "{list}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&d, &["secret-list", "--json"])).unwrap();
    let mine = json
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["uuid"] == UUID)
        .unwrap();
    assert_eq!(mine["usage_type"], "iscsi");
    assert_eq!(mine["usage_id"], "san-chap");
    assert_eq!(mine["has_value"], false);

    // secret-dumpxml, by UUID and by usage.
    let xml = ok(&d, &["secret-dumpxml", UUID]);
    assert!(
        xml.starts_with("<secret ephemeral='no' private='no'>"),
        "{xml}"
    );
    assert!(xml.contains("<target>san-chap</target>"), "{xml}");
    assert_eq!(ok(&d, &["secret-dumpxml", "san-chap"]), xml);
    let j: serde_json::Value =
        serde_json::from_str(&ok(&d, &["secret-dumpxml", UUID, "--json"])).unwrap();
    assert_eq!(format!("{}\n", j["xml"].as_str().unwrap()), xml);

    // No value yet.
    refused(&d, &["secret-get-value", UUID], "does not have a value");

    // The value, in each of virsh's forms.
    assert_eq!(
        ok(&d, &["secret-set-value", UUID, "--base64", PASSWORD_B64]),
        "Secret value set\n\n"
    );
    assert_eq!(
        ok(&d, &["secret-get-value", UUID]),
        format!("{PASSWORD_B64}\n")
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&d, &["secret-get-value", "san-chap", "--json"])).unwrap();
    assert_eq!(j["value"], PASSWORD_B64);
    assert_eq!(
        ok(&d, &["secret-get-value", UUID, "--plain"]),
        format!("{PASSWORD}\n")
    );
    let plain = write(dir.path(), "pw.txt", "other-password");
    ok(
        &d,
        &["secret-set-value", "san-chap", "--file", &plain, "--plain"],
    );
    assert_eq!(
        ok(&d, &["secret-get-value", UUID, "--plain"]),
        "other-password\n"
    );
    let b64 = write(dir.path(), "pw.b64", &format!("{PASSWORD_B64}\n"));
    ok(&d, &["secret-set-value", UUID, "--file", &b64]);
    assert_eq!(
        ok(&d, &["secret-get-value", UUID]),
        format!("{PASSWORD_B64}\n")
    );
    ok(&d, &["secret-set-value", UUID, "b3RoZXI="]);
    assert_eq!(ok(&d, &["secret-get-value", UUID]), "b3RoZXI=\n");
    ok(&d, &["secret-set-value", UUID, PASSWORD_B64]);
    // --interactive reads one line from standard input (no terminal here).
    let mut child = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .env_remove("VIREO_DEFAULT_URI")
        .arg("-c")
        .arg(format!(
            "vireo+unix:///system?socket={}",
            d.socket.display()
        ))
        .args(["secret-set-value", UUID, "--interactive"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        ok(&d, &["secret-get-value", UUID]),
        format!("{PASSWORD_B64}\n")
    );

    // Malformed base64, from the CLI and straight to the API.
    refused(
        &d,
        &["secret-set-value", UUID, "--base64", "not base64!"],
        "not valid base64",
    );
    let a = d.http(
        "PUT",
        &format!("/secrets/{UUID}/value"),
        Some(&serde_json::json!({"value": "%%%%"})),
    );
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.error().contains("not valid base64"), "{}", a.body);
    assert!(!a.body.contains("%%%%"), "{}", a.body);
    assert_eq!(
        ok(&d, &["secret-get-value", UUID]),
        format!("{PASSWORD_B64}\n")
    );

    // Two secrets for one usage.
    let dup = write(
        dir.path(),
        "dup.xml",
        &secret_xml("san-chap", false, false, None),
    );
    refused(
        &d,
        &["secret-define", &dup],
        &format!("a secret with UUID {UUID} already defined for use with san-chap"),
    );

    // A private secret's value is set but never read back.
    let private = write(
        dir.path(),
        "p.xml",
        &secret_xml("private-chap", true, false, None),
    );
    ok(&d, &["secret-define", &private]);
    ok(
        &d,
        &[
            "secret-set-value",
            "private-chap",
            "--base64",
            "cHJpdmF0ZS12YWx1ZQ==",
        ],
    );
    refused(
        &d,
        &["secret-get-value", "private-chap"],
        "secret is private",
    );
    refused(
        &d,
        &["secret-get-value", "private-chap", "--json"],
        "secret is private",
    );
    let made_public = secret_xml("private-chap", false, false, None);
    let private_uuid = ok(&d, &["secret-list", "--private", "--json"]);
    let pj: serde_json::Value = serde_json::from_str(&private_uuid).unwrap();
    let puuid = pj[0]["uuid"].as_str().unwrap().to_string();
    let public = write(
        dir.path(),
        "pub.xml",
        &made_public.replace(
            "<description>",
            &format!("<uuid>{puuid}</uuid><description>"),
        ),
    );
    refused(
        &d,
        &["secret-define", &public],
        "cannot change private flag",
    );

    // The read-only socket lists secrets but never gives a value.
    let ro = virsh_on(&d.ro_socket, &["secret-get-value", UUID]);
    assert_eq!(ro.0, 1, "{ro:?}");
    assert!(ro.2.contains("read only"), "{ro:?}");
    assert_eq!(virsh_on(&d.ro_socket, &["secret-list"]).0, 0);

    // An ephemeral secret is never written to disk.
    let eph = write(
        dir.path(),
        "e.xml",
        &secret_xml("eph-chap", false, true, None),
    );
    ok(&d, &["secret-define", &eph]);
    ok(
        &d,
        &[
            "secret-set-value",
            "eph-chap",
            "--base64",
            "ZXBoZW1lcmFsLXZhbHVl",
        ],
    );
    assert_eq!(
        ok(&d, &["secret-get-value", "eph-chap"]),
        "ZXBoZW1lcmFsLXZhbHVl\n"
    );

    // A secret keeps its usage; an ephemeral one made persistent is
    // written out with its value.
    let moved = write(
        dir.path(),
        "moved.xml",
        &secret_xml("other-usage", false, false, Some(UUID)),
    );
    refused(
        &d,
        &["secret-define", &moved],
        &format!("a secret with UUID {UUID} is already defined for use with san-chap"),
    );
    let eph_json: serde_json::Value =
        serde_json::from_str(&ok(&d, &["secret-list", "--ephemeral", "--json"])).unwrap();
    let eph_uuid = eph_json[0]["uuid"].as_str().unwrap().to_string();
    let kept = write(
        dir.path(),
        "kept.xml",
        &secret_xml("kept-chap", false, false, None),
    );
    ok(&d, &["secret-define", &kept]);
    ok(
        &d,
        &["secret-set-value", "kept-chap", "--base64", "a2VwdA=="],
    );
    let persistent = write(
        dir.path(),
        "kept2.xml",
        &secret_xml("kept-chap", false, true, None).replace(
            "<description>",
            &format!("<uuid>{}</uuid><description>", {
                let j: serde_json::Value =
                    serde_json::from_str(&ok(&d, &["secret-list", "--json"])).unwrap();
                j.as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["usage_id"] == "kept-chap")
                    .unwrap()["uuid"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }),
        ),
    );
    // Persistent made ephemeral: its files go, its value stays in memory.
    ok(&d, &["secret-define", &persistent]);
    assert_eq!(ok(&d, &["secret-get-value", "kept-chap"]), "a2VwdA==\n");
    let kept_files = std::fs::read_dir(d.state.join("secret/secrets"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .any(|t| t.contains("kept-chap") || t.contains("a2VwdA=="));
    assert!(!kept_files, "an ephemeral secret left files");
    ok(&d, &["secret-undefine", "kept-chap"]);
    // Ephemeral made persistent: written out, value and all.
    let now_persistent = write(
        dir.path(),
        "eph2.xml",
        &secret_xml("eph-chap", false, false, Some(&eph_uuid)),
    );
    ok(&d, &["secret-define", &now_persistent]);
    assert_eq!(
        std::fs::read_to_string(d.state.join(format!("secret/secrets/{eph_uuid}.base64"))).unwrap(),
        "ZXBoZW1lcmFsLXZhbHVl"
    );
    // ... and back, so that the checks below find it ephemeral.
    let eph_again = write(
        dir.path(),
        "eph3.xml",
        &secret_xml("eph-chap", false, true, Some(&eph_uuid)),
    );
    ok(&d, &["secret-define", &eph_again]);
    assert!(!d
        .state
        .join(format!("secret/secrets/{eph_uuid}.base64"))
        .exists());

    // Persistent secrets and their values: mode 0600, in a 0700 directory.
    let secrets = d.state.join("secret/secrets");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secrets), 0o700);
    for f in [format!("{UUID}.xml"), format!("{UUID}.base64")] {
        assert_eq!(mode(&secrets.join(&f)), 0o600, "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(secrets.join(format!("{UUID}.base64"))).unwrap(),
        PASSWORD_B64
    );
    let on_disk = all_text_under(&secrets);
    assert!(!on_disk.contains("eph-chap") && !on_disk.contains("ZXBoZW1lcmFsLXZhbHVl"));

    // No value in any dumpxml, in the daemon's log, or in the XML files.
    for s in [UUID, "private-chap", "eph-chap", &ceph_uuid] {
        let xml = ok(&d, &["secret-dumpxml", s]);
        for v in [
            PASSWORD,
            PASSWORD_B64,
            "cHJpdmF0ZS12YWx1ZQ==",
            "private-value",
        ] {
            assert!(!xml.contains(v), "{s}: {xml}");
        }
    }
    let log = d.log_text();
    for v in [
        PASSWORD,
        PASSWORD_B64,
        "cHJpdmF0ZS12YWx1ZQ==",
        "ZXBoZW1lcmFsLXZhbHVl",
    ] {
        assert!(!log.contains(v), "the log holds a value:\n{log}");
    }
    let xml_file = std::fs::read_to_string(secrets.join(format!("{UUID}.xml"))).unwrap();
    assert!(!xml_file.contains(PASSWORD_B64), "{xml_file}");

    // A restarted daemon has the persistent secrets and values, not the
    // ephemeral one.
    d.terminate();
    d.spawn();
    assert_eq!(
        ok(&d, &["secret-get-value", "san-chap"]),
        format!("{PASSWORD_B64}\n")
    );
    refused(
        &d,
        &["secret-dumpxml", "eph-chap"],
        "no secret with matching usage 'eph-chap'",
    );
    refused(
        &d,
        &["secret-get-value", "private-chap"],
        "secret is private",
    );

    // secret-undefine, by usage and by UUID; its files go with it.
    assert_eq!(
        ok(&d, &["secret-undefine", "san-chap"]),
        "Secret san-chap deleted\n\n"
    );
    assert!(!secrets.join(format!("{UUID}.base64")).exists());
    assert!(!secrets.join(format!("{UUID}.xml")).exists());
    ok(&d, &["secret-undefine", &ceph_uuid]);
    refused(
        &d,
        &["secret-undefine", UUID],
        &format!("no secret with matching uuid '{UUID}'"),
    );
    let list = ok(&d, &["secret-list"]);
    assert!(
        !list.contains(UUID) && list.contains("iscsi private-chap"),
        "{list}"
    );
}

fn root_and_kvm() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        testkit::skip("making a network namespace needs root");
        return false;
    }
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return false;
    }
    true
}

fn pool_xml(iqn: &str, secret: &str) -> String {
    format!(
        "<pool type='iscsi-direct'><name>san</name><uuid>4e3fce45-4f53-4fa7-bb32-11f34168b82b</uuid><source><host name='169.254.77.1'/>\
         <device path='{iqn}'/><initiator><iqn name='iqn.2026-01.org.vireo.test:host'/></initiator>\
         <auth type='chap' username='{USER}'>{secret}</auth></source></pool>"
    )
}

/// The pool is inactive and left as it was.
fn inactive(d: &Daemon) {
    let list = ok(d, &["pool-list", "--all"]);
    let row = list
        .lines()
        .find(|l| l.contains(" san "))
        .unwrap_or_default();
    assert!(row.contains("inactive"), "{list}");
}

#[test]
fn an_iscsi_direct_pool_logs_in_with_chap() {
    if !root_and_kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [LunSpec {
        size: 4 * MIB,
        thin: false,
    }];
    let t = TestTarget::start("chap", dir.path(), &luns, Some((USER, PASSWORD))).unwrap();
    let mut d = Daemon::start_in(dir.path(), &[], Some(t.netns()));

    let xml = write(
        dir.path(),
        "san.xml",
        &pool_xml(t.iqn(), "<secret usage='san-chap'/>"),
    );
    ok(&d, &["pool-define", &xml]);
    let dumped = ok(&d, &["pool-dumpxml", "san"]);
    assert!(
        dumped.contains(&format!("<auth type='chap' username='{USER}'>"))
            && dumped.contains("<secret usage='san-chap'/>"),
        "{dumped}"
    );

    // No secret: one line, and the pool stays inactive.
    refused(
        &d,
        &["pool-start", "san"],
        "CHAP secret not found: no iscsi secret with usage 'san-chap'",
    );
    inactive(&d);

    // A secret without a value.
    let s = write(
        dir.path(),
        "s.xml",
        &secret_xml("san-chap", true, false, Some(UUID)),
    );
    ok(&d, &["secret-define", &s]);
    refused(
        &d,
        &["pool-start", "san"],
        &format!("CHAP secret {UUID} has no value"),
    );
    inactive(&d);

    // The wrong password: the target's refusal, in one line.
    let wrong = write(dir.path(), "wrong", "not-the-password");
    ok(&d, &["secret-set-value", UUID, "--file", &wrong, "--plain"]);
    let line = refused(&d, &["pool-start", "san"], "login refused");
    assert!(line.contains(t.iqn()), "{line}");
    inactive(&d);

    // The right one: the pool starts and lists the LUN.
    let right = write(dir.path(), "right", PASSWORD);
    ok(
        &d,
        &["secret-set-value", "san-chap", "--file", &right, "--plain"],
    );
    assert!(ok(&d, &["pool-start", "san"]).contains("Pool san started"));
    let list = ok(&d, &["vol-list", "san"]);
    assert!(list.contains("unit:0:0:1"), "{list}");
    let info = ok(&d, &["pool-info", "san"]);
    assert!(info.contains("Capacity:       4.00 MiB"), "{info}");
    ok(&d, &["pool-refresh", "san"]);
    // A restarted daemon finds the pool again, logging in with the secret
    // it read back from its state directory.
    d.terminate();
    d.spawn();
    let list = ok(&d, &["pool-list"]);
    assert!(list.contains(" san ") && list.contains("active"), "{list}");
    assert!(ok(&d, &["vol-list", "san"]).contains("unit:0:0:1"));
    // A changed value is used at the next login.
    ok(&d, &["secret-set-value", UUID, "--file", &wrong, "--plain"]);
    refused(&d, &["pool-refresh", "san"], "login refused");
    ok(&d, &["secret-set-value", UUID, "--file", &right, "--plain"]);
    ok(&d, &["pool-destroy", "san"]);

    // By UUID too.
    let by_uuid = pool_xml(t.iqn(), &format!("<secret uuid='{UUID}'/>"));
    let xml = write(dir.path(), "san2.xml", &by_uuid);
    ok(&d, &["pool-define", &xml]);
    ok(&d, &["pool-start", "san"]);
    assert!(ok(&d, &["vol-list", "san"]).contains("unit:0:0:1"));
    ok(&d, &["pool-destroy", "san"]);

    // A pool without <auth> is refused by this target.
    let open =
        pool_xml(t.iqn(), "").replace(&format!("<auth type='chap' username='{USER}'></auth>"), "");
    let xml = write(dir.path(), "open.xml", &open);
    ok(&d, &["pool-define", &xml]);
    refused(&d, &["pool-start", "san"], "login refused");

    // The password never reached the daemon's log.
    let log = d.log_text();
    assert!(!log.contains(PASSWORD), "{log}");
}

/// Waits (60 s at most) for `out` to hold `text`.
fn wait_text(out: &Path, text: &str) -> String {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let got = std::fs::read_to_string(out).unwrap_or_default();
        if got.contains(text) {
            return got;
        }
        assert!(
            std::time::Instant::now() < end,
            "no '{text}' from the guest:\n{got}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A domain running the `virtio` guest with `disks`, its console in `out`.
fn guest_domain(name: &str, cmdline: &str, disks: &str, out: &Path) -> String {
    daemon_harness::domain_xml(name, "virtio", "")
        .replace("<memory unit='MiB'>32</memory>", "<memory unit='MiB'>64</memory>")
        .replace("</os>", &format!("<cmdline>mirror {cmdline}</cmdline></os>"))
        .replace(
            "<devices>",
            &format!(
                "<devices>{disks}<console type='file'><source path='{}'/><target type='virtio'/></console>",
                out.display()
            ),
        )
}

/// Sector `n` of each of `lun`'s first `count` stride-`stride` sectors
/// from `first` holds the guest's pattern.
fn check_written(file: &Path, first: u64, count: u64, stride: u64) {
    use guest_sectors::{fnv1a32, pattern, SECTOR};
    let bytes = std::fs::read(file).unwrap();
    for k in 0..count {
        let n = first + stride * k;
        let at = usize::try_from(n).unwrap() * SECTOR;
        assert_eq!(
            fnv1a32(&bytes[at..at + SECTOR]),
            fnv1a32(&pattern(n)),
            "{} sector {n}",
            file.display()
        );
    }
}

mod guest_sectors;

#[test]
fn a_domain_runs_on_iscsi_disks_that_log_in_with_chap() {
    if !root_and_kvm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let luns = [
        LunSpec {
            size: 8 * MIB,
            thin: false,
        },
        LunSpec {
            size: 4 * MIB,
            thin: false,
        },
    ];
    let t = TestTarget::start("chapdom", dir.path(), &luns, Some((USER, PASSWORD))).unwrap();
    let d = Daemon::start_in(dir.path(), &[], Some(t.netns()));
    let files = tempfile::tempdir().unwrap();
    let s = write(
        files.path(),
        "s.xml",
        &secret_xml("san-chap", true, false, Some(UUID)),
    );
    ok(&d, &["secret-define", &s]);
    ok(
        &d,
        &["secret-set-value", "san-chap", "--base64", PASSWORD_B64],
    );

    // LUN 2 with <auth> in its source; LUN 1 plugged later with <auth>
    // in the disk (libvirt's older place).
    let disk = format!(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
         <source protocol='iscsi' name='{}/2'><host name='169.254.77.1' port='3260'/>\
         <auth username='{USER}'><secret type='iscsi' usage='san-chap'/></auth></source>\
         <target dev='vda' bus='virtio'/></disk>",
        t.iqn()
    );
    let out = dir.path().join("chap.out");
    d.define(&guest_domain(
        "chap",
        "blk blk-first=3 blk-count=16 blk-stride=3 blk-read=0 wait-hotplug=60000 hotplug-events=1",
        &disk,
        &out,
    ));
    let xml = ok(&d, &["dumpxml", "chap"]);
    assert!(
        xml.contains("<secret type='iscsi' usage='san-chap'/>"),
        "{xml}"
    );
    d.ok("POST", "/domains/chap/start", Some(&serde_json::json!({})));
    wait_text(&out, "virtio-blk: ok capacity=8192 wrote=16");

    // The VMM got the password on a descriptor: not in its command line.
    let pids = d.vmm_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        !cmdline.contains(PASSWORD) && !cmdline.contains(PASSWORD_B64),
        "{cmdline}"
    );
    assert!(
        cmdline.contains(&format!("iscsi://{USER}@169.254.77.1:3260/")),
        "{cmdline}"
    );
    assert!(cmdline.contains("--secret id=vda,fd="), "{cmdline}");
    // Nor in any file the daemon or the VMM wrote (the run directory,
    // the state, the logs): only the base64 value file holds it.
    let everything = all_text_under(dir.path());
    assert!(!everything.contains(PASSWORD), "the password is in a file");

    let hot = format!(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
         <auth username='{USER}'><secret type='iscsi' uuid='{UUID}'/></auth>\
         <source protocol='iscsi' name='{}/1'><host name='169.254.77.1'/></source>\
         <target dev='vdb' bus='virtio'/></disk>",
        t.iqn()
    );
    d.ok(
        "POST",
        "/domains/chap/disks",
        Some(&serde_json::json!({ "xml": hot, "live": true })),
    );
    wait_text(&out, "virtio-blk: ok capacity=16384 wrote=16");
    d.wait_state("chap", "shut_off", std::time::Duration::from_secs(30));
    check_written(&t.lun_file(2), 3, 16, 3);
    check_written(&t.lun_file(1), 3, 16, 3);
    let log =
        d.log_text() + &std::fs::read_to_string(d.state.join("log/chap.log")).unwrap_or_default();
    assert!(!log.contains(PASSWORD), "{log}");

    // A missing secret and a wrong password: the start is refused in one
    // line, and nothing runs.
    let missing = disk.replace("usage='san-chap'", "usage='nobody'");
    d.define(&guest_domain(
        "nosecret",
        "blk",
        &missing,
        &dir.path().join("n.out"),
    ));
    let a = d.http(
        "POST",
        "/domains/nosecret/start",
        Some(&serde_json::json!({})),
    );
    assert_eq!(a.status, 422, "{}", a.body);
    assert!(
        a.error()
            .contains("CHAP secret not found: no iscsi secret with usage 'nobody'"),
        "{}",
        a.body
    );
    let wrong_secret = write(
        files.path(),
        "w.xml",
        &secret_xml("wrong-chap", false, false, None),
    );
    ok(&d, &["secret-define", &wrong_secret]);
    ok(
        &d,
        &[
            "secret-set-value",
            "wrong-chap",
            "--base64",
            "d3JvbmctcGFzc3dvcmQ=",
        ],
    );
    let wrong = disk.replace("usage='san-chap'", "usage='wrong-chap'");
    d.define(&guest_domain(
        "wrong",
        "blk",
        &wrong,
        &dir.path().join("w.out"),
    ));
    let a = d.http("POST", "/domains/wrong/start", Some(&serde_json::json!({})));
    assert!(a.status >= 400, "{}", a.body);
    assert!(a.error().contains("login refused"), "{}", a.body);
    assert!(!a.error().contains("wrong-password"), "{}", a.body);
    for dom in ["nosecret", "wrong"] {
        assert_eq!(d.state(dom).0, "shut_off");
    }
    assert!(d.vmm_pids().is_empty());

    // A volume of an iscsi-direct pool with <auth>: the pool's secret.
    let pool = write(
        files.path(),
        "san.xml",
        &pool_xml(t.iqn(), "<secret usage='san-chap'/>"),
    );
    ok(&d, &["pool-define", &pool]);
    ok(&d, &["pool-start", "san"]);
    let vol_disk = "<disk type='volume' device='disk'><driver name='qemu' type='raw'/>\
                    <source pool='san' volume='unit:0:0:1'/><target dev='vda' bus='virtio'/></disk>";
    let vout = dir.path().join("vol.out");
    d.define(&guest_domain(
        "vol",
        "blk blk-first=100 blk-count=8",
        vol_disk,
        &vout,
    ));
    d.ok("POST", "/domains/vol/start", Some(&serde_json::json!({})));
    wait_text(&vout, "virtio-blk: ok capacity=16384 wrote=8");
    d.wait_state("vol", "shut_off", std::time::Duration::from_secs(30));
    check_written(&t.lun_file(1), 100, 8, 1);
}
