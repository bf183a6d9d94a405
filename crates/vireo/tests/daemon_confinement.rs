//! Every VMM the daemon starts is confined (docs/security.md): jailed
//! under a uid of its own, with no capabilities, `no_new_privs` and a
//! seccomp filter on every thread, a root holding nothing of the host's,
//! and ACL entries for that uid on the domain's image while it runs.

mod daemon_harness;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use daemon_harness::{domain_xml, have_kvm, vmm_process, Daemon};

/// `Key:` lines of every thread's status of `pid`: one entry per thread.
fn thread_fields(pid: u32, key: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

fn domain_with_disk(name: &str, image: &Path) -> String {
    domain_xml(name, "idle", "").replace(
        "<devices>",
        &format!(
            "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='vda'/></disk>",
            image.display()
        ),
    )
}

fn image(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(1 << 20).unwrap();
    p
}

#[test]
fn each_vmm_is_jailed_unprivileged_and_filtered_under_a_uid_of_its_own() {
    if !have_kvm() {
        testkit::skip("no /dev/kvm");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let (a_img, b_img) = (image(dir.path(), "a.img"), image(dir.path(), "b.img"));
    d.define(&domain_with_disk("a", &a_img));
    d.define(&domain_with_disk("b", &b_img));
    d.ok("POST", "/domains/a/start", None);
    d.ok("POST", "/domains/b/start", None);

    let vmm = |name: &str| {
        let pid = d.ok("GET", &format!("/domains/{name}"), None)["pid"]
            .as_u64()
            .unwrap();
        vmm_process(u32::try_from(pid).unwrap())
    };
    let (a, b) = (vmm("a"), vmm("b"));
    let mut uids = Vec::new();
    for pid in [a, b] {
        let threads = thread_fields(pid, "Uid:");
        assert!(threads.len() > 1, "{pid}: {threads:?}");
        let uid = threads[0].split(' ').next().unwrap().to_string();
        assert_ne!(uid, "0", "pid {pid} runs as root");
        for (key, want) in [
            ("Uid:", format!("{uid} {uid} {uid} {uid}")),
            ("Gid:", format!("{uid} {uid} {uid} {uid}")),
            ("CapEff:", "0000000000000000".to_string()),
            ("CapPrm:", "0000000000000000".to_string()),
            ("CapBnd:", "0000000000000000".to_string()),
            ("NoNewPrivs:", "1".to_string()),
            ("Seccomp:", "2".to_string()),
        ] {
            for v in thread_fields(pid, key) {
                assert_eq!(v, want, "pid {pid} {key}");
            }
        }
        // Its root is the jail: nothing of the host's, no image.
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        assert!(!root.join("etc/shadow").exists());
        assert!(!root.join(a_img.strip_prefix("/").unwrap()).exists());
        assert!(!root.join(b_img.strip_prefix("/").unwrap()).exists());
        uids.push(uid.parse::<u32>().unwrap());
    }
    assert_ne!(uids[0], uids[1], "each domain has a uid of its own");

    // While it runs, each image has an ACL entry for its domain's uid only.
    use manager::acl::{entry_for, Access};
    assert_eq!(entry_for(&a_img, uids[0]).unwrap(), Some(Access::ReadWrite));
    assert_eq!(entry_for(&a_img, uids[1]).unwrap(), None);
    assert_eq!(entry_for(&b_img, uids[1]).unwrap(), Some(Access::ReadWrite));

    // A process with a's uid can neither signal b's VMM nor a's keeper's
    // neighbour: kill -0 across uids is refused.
    let probe = |uid: u32, target: u32| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("kill -0 {target}"))
            .uid(uid)
            .gid(uid)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(!probe(uids[0], b), "a's uid signalled b's VMM");
    assert!(!probe(uids[1], a), "b's uid signalled a's VMM");
    assert!(probe(uids[0], a), "the probe itself works");

    d.ok("POST", "/domains/a/destroy", None);
    d.ok("POST", "/domains/b/destroy", None);
    // Their ends take the entries back.
    assert_eq!(entry_for(&a_img, uids[0]).unwrap(), None);
    assert_eq!(entry_for(&b_img, uids[1]).unwrap(), None);
    let status = std::fs::read_to_string(format!("/proc/{a}/status")).unwrap_or_default();
    assert!(status.is_empty(), "a's VMM is still there: {status}");
}
