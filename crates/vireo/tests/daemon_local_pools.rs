//! `fs` and `disk` pools under `vireo daemon`, through the virsh verbs,
//! on loop devices the tests attach (and always detach): an ext4 pool
//! built, mounted, filled with raw and qcow2 volumes (checked by
//! qemu-img), unmounted, mounted again and re-adopted by a restarted
//! daemon; a GPT disk whose partitions are volumes, checked against
//! sgdisk's reading of the label; and the bad inputs of both.

mod daemon_harness;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use daemon_harness::Daemon;

/// The virsh verbs of `vireo` against daemon `d`: (exit code, stdout,
/// stderr).
fn virsh(d: &Daemon, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .env_remove("VIREO_DEFAULT_URI")
        .arg("-c")
        .arg(format!(
            "vireo+unix:///system?socket={}",
            d.socket.display()
        ))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a verb that must succeed; its stdout.
fn ok(d: &Daemon, args: &[&str]) -> String {
    let (code, out, err) = virsh(d, args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// Runs a verb that must fail with one `error:` line containing `says`.
fn refused(d: &Daemon, args: &[&str], says: &str) {
    let (code, _, err) = virsh(d, args);
    assert_eq!(code, 1, "{args:?} should fail: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(says),
        "{args:?}: {err}"
    );
}

/// Runs a host tool that must succeed; its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device on a sparse file, detached (after unmounting what the
/// test may have left mounted from it) when dropped, even on failure.
struct Loop {
    dev: String,
    mount: Option<PathBuf>,
}

impl Loop {
    /// Attaches a new `size`-byte file; `partscan` as `losetup -P`.
    fn attach(file: &Path, size: u64, partscan: bool) -> Loop {
        std::fs::File::create(file).unwrap().set_len(size).unwrap();
        let mut args = vec!["--find", "--show"];
        if partscan {
            args.push("--partscan");
        }
        args.push(file.to_str().unwrap());
        let dev = run("losetup", &args).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "{dev}");
        Loop { dev, mount: None }
    }

    /// The kernel's name (`loop3`).
    fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = &self.mount {
            if is_mounted(m) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// Whether `/proc/self/mountinfo` lists `point` as a mount point.
fn is_mounted(point: &Path) -> bool {
    let point = std::fs::canonicalize(point).unwrap_or_else(|_| point.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .any(|l| l.split(' ').nth(4) == Some(point.to_str().unwrap()))
}

/// The reason these tests cannot run here, if there is one.
fn missing() -> Option<String> {
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control: the kernel has no loop devices".into());
    }
    for tool in ["losetup", "blkid", "mkfs.ext4", "sgdisk", "qemu-img"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

fn qemu_img_check(path: &Path) {
    run("qemu-img", &["check", "-q", path.to_str().unwrap()]);
}

#[test]
fn an_ext4_fs_pool_from_build_to_delete() {
    if let Some(why) = missing() {
        testkit::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let mut lo = Loop::attach(&dir.path().join("fs.img"), 256 << 20, false);
    lo.mount = Some(mnt.clone());
    let mut d = Daemon::start(dir.path());
    let target = mnt.to_str().unwrap();

    ok(
        &d,
        &[
            "pool-define-as",
            "f",
            "fs",
            "--source-dev",
            &lo.dev,
            "--source-format",
            "ext4",
            "--target",
            target,
        ],
    );
    refused(&d, &["pool-start", "f"], "holds no filesystem");
    // As libvirt: without a flag, pool-build makes only the directory.
    assert_eq!(ok(&d, &["pool-build", "f"]), "Pool f built\n\n");
    assert!(mnt.is_dir());
    refused(
        &d,
        &["pool-start", "f"],
        "pool-build --no-overwrite makes one",
    );
    ok(&d, &["pool-build", "f", "--no-overwrite"]);
    assert_eq!(
        run("blkid", &["-p", "-o", "value", "-s", "TYPE", &lo.dev]).trim(),
        "ext4"
    );
    refused(
        &d,
        &["pool-build", "f", "--no-overwrite"],
        "already holds a ext4 filesystem",
    );
    ok(&d, &["pool-build", "f", "--overwrite"]);
    assert_eq!(ok(&d, &["pool-start", "f"]), "Pool f started\n\n");
    assert!(is_mounted(&mnt));
    refused(&d, &["pool-build", "f", "--overwrite"], "is active");
    let info = ok(&d, &["pool-info", "f"]);
    assert!(info.contains("State:          running"), "{info}");

    ok(&d, &["vol-create-as", "f", "a.raw", "1M"]);
    ok(
        &d,
        &["vol-create-as", "f", "b.qcow2", "64M", "--format", "qcow2"],
    );
    refused(&d, &["vol-create-as", "f", "huge", "1G"], "free");
    qemu_img_check(&mnt.join("b.qcow2"));
    assert_eq!(
        ok(&d, &["vol-path", "b.qcow2", "--pool", "f"]).trim(),
        mnt.join("b.qcow2").to_str().unwrap()
    );

    // A restarted daemon finds the pool still mounted and adopts it.
    d.kill9();
    d.spawn();
    assert!(ok(&d, &["pool-info", "f"]).contains("running"));
    let list = ok(&d, &["vol-list", "f"]);
    assert!(
        list.contains(" a.raw ") && list.contains(" b.qcow2 "),
        "{list}"
    );

    // Destroy unmounts: the files are on the device, not in the directory.
    assert_eq!(ok(&d, &["pool-destroy", "f"]), "Pool f destroyed\n\n");
    assert!(!is_mounted(&mnt));
    assert!(!mnt.join("a.raw").exists());
    ok(&d, &["pool-start", "f"]);
    let list = ok(&d, &["vol-list", "f", "--details"]);
    assert!(
        list.contains(" a.raw ") && list.contains(" b.qcow2 "),
        "{list}"
    );
    qemu_img_check(&mnt.join("b.qcow2"));

    // Unmounted behind the daemon's back: the next daemon sees it down.
    d.kill9();
    run("umount", &[target]);
    d.spawn();
    assert!(ok(&d, &["pool-info", "f"]).contains("State:          inactive"));
    // Mounted by hand (or by a daemon stopped before it recorded the
    // pool): start takes the mount as it is rather than mounting twice.
    run("mount", &["-t", "ext4", &lo.dev, target]);
    ok(&d, &["pool-start", "f"]);
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let point = std::fs::canonicalize(&mnt).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.split(' ').nth(4) == point.to_str())
            .count(),
        1,
        "{text}"
    );

    // Taken apart: volumes, unmount, the directory; the filesystem stays.
    for v in ["a.raw", "b.qcow2"] {
        ok(&d, &["vol-delete", v, "--pool", "f"]);
    }
    ok(&d, &["pool-destroy", "f"]);
    assert_eq!(ok(&d, &["pool-delete", "f"]), "Pool f deleted\n\n");
    assert!(!mnt.exists());
    ok(&d, &["pool-undefine", "f"]);
    assert_eq!(
        run("blkid", &["-p", "-o", "value", "-s", "TYPE", &lo.dev]).trim(),
        "ext4"
    );
}

#[test]
fn fs_pools_refuse_what_they_cannot_mount() {
    if let Some(why) = missing() {
        testkit::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::attach(&dir.path().join("ext4.img"), 64 << 20, false);
    run("mkfs.ext4", &["-q", &lo.dev]);
    let d = Daemon::start(dir.path());
    let plain = dir.path().join("plain.img");
    std::fs::File::create(&plain)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let define = |name: &str, dev: &str, format: &str| {
        let t = dir.path().join(name);
        ok(
            &d,
            &[
                "pool-define-as",
                name,
                "fs",
                "--source-dev",
                dev,
                "--source-format",
                format,
                "--target",
                t.to_str().unwrap(),
            ],
        );
    };
    define("wrongtype", &lo.dev, "xfs");
    refused(
        &d,
        &["pool-start", "wrongtype"],
        "holds ext4, not the pool's format xfs",
    );
    refused(
        &d,
        &["pool-build", "wrongtype", "--no-overwrite"],
        "already holds a ext4 filesystem",
    );
    // A second pool on the same device is refused at define.
    refused(
        &d,
        &[
            "pool-define-as",
            "twice",
            "fs",
            "--source-dev",
            &lo.dev,
            "--target",
            dir.path().join("twice").to_str().unwrap(),
        ],
        "uses source device",
    );
    define("file", plain.to_str().unwrap(), "ext4");
    refused(
        &d,
        &["pool-start", "file"],
        "is a regular file: attach it with `losetup",
    );
    refused(
        &d,
        &["pool-build", "file", "--overwrite"],
        "is a regular file",
    );
    define("gone", "/dev/vireo-no-such-device", "ext4");
    refused(&d, &["pool-start", "gone"], "does not exist");
    ok(&d, &["pool-undefine", "wrongtype"]);
    define("auto", &lo.dev, "auto");
    refused(
        &d,
        &["pool-build", "auto", "--overwrite"],
        "format 'auto' names no filesystem to make",
    );
    refused(
        &d,
        &["pool-define-as", "nodev", "fs", "--target", "/tmp/x"],
        "needs exactly one <source><device",
    );
    // Something else mounted on the target is not the pool.
    let auto = dir.path().join("auto");
    std::fs::create_dir_all(&auto).unwrap();
    let mut lo = lo;
    lo.mount = Some(auto.clone());
    run("mount", &["-t", "tmpfs", "none", auto.to_str().unwrap()]);
    refused(
        &d,
        &["pool-start", "auto"],
        "is already a mount point (tmpfs)",
    );
    run("umount", &[auto.to_str().unwrap()]);
    // 'auto' mounts whatever is there.
    ok(&d, &["pool-start", "auto"]);
    assert!(is_mounted(&dir.path().join("auto")));
    ok(&d, &["pool-destroy", "auto"]);
    assert!(!is_mounted(&dir.path().join("auto")));
}

/// sgdisk's reading of `dev`'s partitions: (number, first, last sector).
fn sgdisk_partitions(dev: &str) -> Vec<(u32, u64, u64)> {
    let out = run("sgdisk", &["-p", dev]);
    let mut rows = Vec::new();
    let mut table = false;
    for line in out.lines() {
        if line.trim_start().starts_with("Number") {
            table = true;
            continue;
        }
        if !table {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 {
            rows.push((
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            ));
        }
    }
    rows
}

fn device_size(dev: &str) -> u64 {
    run("blockdev", &["--getsize64", dev])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_gpt_disk_pool_with_partitions_as_volumes() {
    if let Some(why) = missing() {
        testkit::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::attach(&dir.path().join("disk.img"), 64 << 20, true);
    let flat = Loop::attach(&dir.path().join("flat.img"), 16 << 20, false);
    let mut d = Daemon::start(dir.path());
    let n = lo.name().to_string();
    let part = |i: u32| format!("{n}p{i}");

    ok(
        &d,
        &[
            "pool-define-as",
            "d",
            "disk",
            "--source-dev",
            &lo.dev,
            "--source-format",
            "gpt",
            "--target",
            "/dev",
        ],
    );
    refused(
        &d,
        &["pool-start", "d"],
        "has no GPT label: pool-build writes one",
    );
    assert_eq!(ok(&d, &["pool-build", "d"]), "Pool d built\n\n");
    assert!(run("sgdisk", &["-v", &lo.dev]).contains("No problems found"));
    refused(
        &d,
        &["pool-build", "d"],
        "already holds a gpt partition table",
    );
    ok(&d, &["pool-build", "d", "--overwrite"]);
    ok(&d, &["pool-start", "d"]);
    let info = ok(&d, &["pool-info", "d"]);
    assert!(info.contains("Capacity:       64.00 MiB"), "{info}");

    for i in 1..=3 {
        let name = part(i);
        assert_eq!(
            ok(&d, &["vol-create-as", "d", &name, "8M"]),
            format!("Vol {name} created\n\n")
        );
    }
    refused(
        &d,
        &["vol-create-as", "d", "data", "1M"],
        &format!("the next one is '{}'", part(4)),
    );
    refused(
        &d,
        &["vol-create-as", "d", &part(4), "1M", "--format", "qcow2"],
        "hold raw data",
    );
    refused(
        &d,
        &["vol-create-as", "d", &part(4), "1G"],
        "no free extent",
    );
    refused(
        &d,
        &["vol-resize", &part(1), "16M", "--pool", "d"],
        "not supported",
    );
    let rows = sgdisk_partitions(&lo.dev);
    assert_eq!(
        rows,
        vec![(1, 2048, 18431), (2, 18432, 34815), (3, 34816, 51199)]
    );
    let p2 = format!("/dev/{}", part(2));
    assert_eq!(ok(&d, &["vol-path", &part(2), "--pool", "d"]).trim(), p2);
    assert!(std::fs::metadata(&p2)
        .unwrap()
        .file_type()
        .is_block_device());
    assert_eq!(device_size(&p2), 8 << 20);
    let list = ok(&d, &["vol-list", "d", "--details"]);
    assert_eq!(list.matches("8.00 MiB").count(), 6, "{list}");
    assert!(list.contains(" block "), "{list}");

    // Delete the middle one: the others keep their numbers, and the next
    // partition fills the hole with number 2 again.
    ok(&d, &["vol-delete", &part(2), "--pool", "d"]);
    assert!(!Path::new(&p2).exists());
    assert!(Path::new(&format!("/dev/{}", part(3))).exists());
    refused(
        &d,
        &["vol-info", &part(2), "--pool", "d"],
        "no storage volume",
    );
    ok(&d, &["vol-create-as", "d", &part(2), "4M"]);
    assert_eq!(
        sgdisk_partitions(&lo.dev),
        vec![(1, 2048, 18431), (2, 18432, 26623), (3, 34816, 51199)]
    );
    assert_eq!(device_size(&p2), 4 << 20);
    assert!(run("sgdisk", &["-v", &lo.dev]).contains("No problems found"));
    let info = ok(&d, &["vol-info", &part(2), "--pool", "d"]);
    assert!(info.contains("Capacity:       4.00 MiB"), "{info}");

    // A restarted daemon re-adopts it.
    d.kill9();
    d.spawn();
    assert!(ok(&d, &["pool-info", "d"]).contains("running"));

    // Bad devices: a partition, a loop device without partition scanning.
    ok(&d, &["pool-define-as", "sub", "disk", "--source-dev", &p2]);
    refused(&d, &["pool-build", "sub"], "is a partition");
    ok(
        &d,
        &["pool-define-as", "flat", "disk", "--source-dev", &flat.dev],
    );
    refused(&d, &["pool-build", "flat"], "losetup --partscan");
    refused(
        &d,
        &[
            "pool-define-as",
            "slash",
            "disk",
            "--source-dev",
            &lo.dev,
            "--target",
            "/srv",
        ],
        "target path is /dev",
    );

    // Taken apart.
    ok(&d, &["pool-destroy", "d"]);
    refused(&d, &["pool-delete", "d"], "still has partitions");
    ok(&d, &["pool-start", "d"]);
    for i in [1, 2, 3] {
        ok(&d, &["vol-delete", &part(i), "--pool", "d"]);
    }
    assert!(sgdisk_partitions(&lo.dev).is_empty());
    ok(&d, &["pool-destroy", "d"]);
    ok(&d, &["pool-delete", "d"]);
    ok(&d, &["pool-undefine", "d"]);
}

/// The bytes the `virtio` guest's `blk` step writes to sector `n`.
fn guest_pattern(n: u64) -> Vec<u8> {
    let mut s: Vec<u8> = (0..512u64)
        .map(|i| n.wrapping_add(i).to_le_bytes()[0])
        .collect();
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

/// Checks sectors 1..=8 of `file` from byte `base` on hold the guest's
/// pattern, and sector 0 is untouched (zero).
fn assert_guest_wrote(file: &Path, base: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file).unwrap();
    let mut sector = vec![0u8; 512];
    f.read_exact_at(&mut sector, base).unwrap();
    assert!(
        sector.iter().all(|b| *b == 0),
        "{}: sector 0 written",
        file.display()
    );
    for n in 1..=8u64 {
        f.read_exact_at(&mut sector, base + n * 512).unwrap();
        assert_eq!(sector, guest_pattern(n), "{} sector {n}", file.display());
    }
}

#[test]
fn a_guest_writes_a_partition_and_an_image_on_a_mounted_filesystem() {
    if let Some(why) = missing() {
        testkit::skip(&why);
        return;
    }
    if !daemon_harness::have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk.img");
    let disk = Loop::attach(&backing, 32 << 20, true);
    let mnt = dir.path().join("mnt");
    let mut fs = Loop::attach(&dir.path().join("fs.img"), 64 << 20, false);
    fs.mount = Some(mnt.clone());
    let d = Daemon::start(dir.path());
    let p1 = format!("{}p1", disk.name());
    ok(
        &d,
        &["pool-define-as", "d", "disk", "--source-dev", &disk.dev],
    );
    ok(&d, &["pool-build", "d"]);
    ok(&d, &["pool-start", "d"]);
    ok(&d, &["vol-create-as", "d", &p1, "4M"]);
    let target = mnt.to_str().unwrap();
    ok(
        &d,
        &[
            "pool-define-as",
            "f",
            "fs",
            "--source-dev",
            &fs.dev,
            "--source-format",
            "ext4",
            "--target",
            target,
        ],
    );
    ok(&d, &["pool-build", "f", "--no-overwrite"]);
    ok(&d, &["pool-start", "f"]);
    ok(&d, &["vol-create-as", "f", "g.raw", "4M"]);
    let part = ok(&d, &["vol-path", &p1, "--pool", "d"]).trim().to_string();
    let image = ok(&d, &["vol-path", "g.raw", "--pool", "f"])
        .trim()
        .to_string();

    let xml = daemon_harness::domain_xml("w", "virtio", "")
        .replace(
            "<memory unit='MiB'>32</memory>",
            "<memory unit='MiB'>64</memory>",
        )
        .replace("</os>", "<cmdline>blk</cmdline></os>")
        .replace(
            "<devices>",
            &format!(
                "<devices><disk type='block' device='disk'><driver name='qemu' type='raw'/>\
                 <source dev='{part}'/><target dev='vda' bus='virtio'/></disk>\
                 <disk type='file' device='disk'><driver name='qemu' type='raw'/>\
                 <source file='{image}'/><target dev='vdb' bus='virtio'/></disk>"
            ),
        );
    d.define(&xml);
    d.ok("POST", "/domains/w/start", None);
    d.wait_state("w", "shut_off", std::time::Duration::from_secs(60));

    assert_guest_wrote(Path::new(&part), 0);
    // The same bytes, found independently at the partition's offset in
    // the loop device's backing file (1 MiB: the first aligned sector).
    assert_guest_wrote(&backing, 1 << 20);
    assert_guest_wrote(Path::new(&image), 0);
    ok(&d, &["pool-destroy", "f"]);
    assert!(!is_mounted(&mnt));
}

#[test]
fn volumes_a_running_domain_uses_stay() {
    if let Some(why) = missing() {
        testkit::skip(&why);
        return;
    }
    if !daemon_harness::have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::attach(&dir.path().join("disk.img"), 32 << 20, true);
    let mnt = dir.path().join("mnt");
    let mut fs = Loop::attach(&dir.path().join("fs.img"), 64 << 20, false);
    fs.mount = Some(mnt.clone());
    let d = Daemon::start(dir.path());
    let p1 = format!("{}p1", disk.name());
    ok(
        &d,
        &["pool-define-as", "d", "disk", "--source-dev", &disk.dev],
    );
    ok(&d, &["pool-build", "d"]);
    ok(&d, &["pool-start", "d"]);
    ok(&d, &["vol-create-as", "d", &p1, "4M"]);
    let target = mnt.to_str().unwrap();
    ok(
        &d,
        &[
            "pool-define-as",
            "f",
            "fs",
            "--source-dev",
            &fs.dev,
            "--source-format",
            "ext4",
            "--target",
            target,
        ],
    );
    ok(&d, &["pool-build", "f", "--overwrite"]);
    ok(&d, &["pool-start", "f"]);
    ok(
        &d,
        &["vol-create-as", "f", "u.qcow2", "16M", "--format", "qcow2"],
    );
    let xml = daemon_harness::domain_xml("u", "idle", "").replace(
        "<devices>",
        &format!(
            "<devices><disk type='block' device='disk'><driver name='qemu' type='raw'/>\
             <source dev='/dev/{p1}'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
             <source file='{}'/><target dev='vdb' bus='virtio'/></disk>",
            mnt.join("u.qcow2").display()
        ),
    );
    d.define(&xml);
    d.ok("POST", "/domains/u/start", None);
    refused(
        &d,
        &["vol-delete", &p1, "--pool", "d"],
        "in use by running domain(s) u",
    );
    refused(
        &d,
        &["vol-delete", "u.qcow2", "--pool", "f"],
        "in use by running domain(s) u",
    );
    refused(&d, &["pool-destroy", "f"], "it is in use");
    assert!(is_mounted(&mnt));
    d.ok("POST", "/domains/u/destroy", None);
    d.wait_state("u", "shut_off", std::time::Duration::from_secs(10));
    ok(&d, &["vol-delete", &p1, "--pool", "d"]);
    ok(&d, &["vol-delete", "u.qcow2", "--pool", "f"]);
    ok(&d, &["pool-destroy", "f"]);
    assert!(!is_mounted(&mnt));
}

#[test]
fn an_xfs_pool_is_made_and_mounted() {
    if let Some(why) = missing() {
        testkit::skip(&why);
        return;
    }
    if Command::new("mkfs.xfs").arg("-V").output().is_err() {
        testkit::skip("mkfs.xfs is not installed (Debian package xfsprogs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("x");
    // xfsprogs makes no filesystem under 300 MiB.
    let mut lo = Loop::attach(&dir.path().join("xfs.img"), 320 << 20, false);
    lo.mount = Some(mnt.clone());
    let d = Daemon::start(dir.path());
    ok(
        &d,
        &[
            "pool-define-as",
            "x",
            "fs",
            "--source-dev",
            &lo.dev,
            "--source-format",
            "xfs",
            "--target",
            mnt.to_str().unwrap(),
        ],
    );
    ok(&d, &["pool-build", "x", "--no-overwrite"]);
    assert_eq!(
        run("blkid", &["-p", "-o", "value", "-s", "TYPE", &lo.dev]).trim(),
        "xfs"
    );
    ok(&d, &["pool-start", "x"]);
    ok(
        &d,
        &["vol-create-as", "x", "v.qcow2", "64M", "--format", "qcow2"],
    );
    qemu_img_check(&mnt.join("v.qcow2"));
    ok(&d, &["pool-destroy", "x"]);
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_vfat_pool_mounts_or_names_the_missing_driver() {
    if let Some(why) = missing() {
        testkit::skip(&why);
        return;
    }
    if Command::new("mkfs.vfat").arg("--help").output().is_err() {
        testkit::skip("mkfs.vfat is not installed (Debian package dosfstools)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("v");
    let mut lo = Loop::attach(&dir.path().join("vfat.img"), 64 << 20, false);
    lo.mount = Some(mnt.clone());
    let d = Daemon::start(dir.path());
    ok(
        &d,
        &[
            "pool-define-as",
            "v",
            "fs",
            "--source-dev",
            &lo.dev,
            "--source-format",
            "vfat",
            "--target",
            mnt.to_str().unwrap(),
        ],
    );
    ok(&d, &["pool-build", "v", "--no-overwrite"]);
    let has_vfat = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().last() == Some("vfat"));
    // The kernel loads the module on demand, if it has one: either way
    // the answer is a mount or one line naming the missing driver.
    let (code, _, err) = virsh(&d, &["pool-start", "v"]);
    if code == 0 {
        assert!(is_mounted(&mnt));
        ok(&d, &["vol-create-as", "v", "a.raw", "1M"]);
        ok(&d, &["vol-delete", "a.raw", "--pool", "v"]);
        ok(&d, &["pool-destroy", "v"]);
    } else {
        assert!(!has_vfat, "vfat is in /proc/filesystems, yet: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("this kernel has no vfat filesystem driver"),
            "{err}"
        );
        assert!(!is_mounted(&mnt));
    }
}
