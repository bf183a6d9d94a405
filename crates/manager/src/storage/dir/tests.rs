//! `dir` pools on a scratch directory: volumes made whole or not at all,
//! never over an existing one, and read back as they are.

use super::*;

fn pool(dir: &Path) -> (Pool, DirPool) {
    let xml = format!(
        "<pool type='dir'><name>p</name><target><path>{}</path>\
         <permissions><mode>0750</mode></permissions></target></pool>",
        dir.display()
    );
    let pool = Pool::parse(&xml).unwrap().pool;
    let dp = DirPool::new(&pool).unwrap();
    (pool, dp)
}

fn volume(xml: &str) -> Volume {
    Volume::parse(xml).unwrap().volume
}

#[test]
fn build_check_and_delete_the_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let (p, dp) = pool(&scratch.path().join("a/b"));
    match dp.check() {
        Err(StorageError::NotFound(m)) => assert!(m.contains("pool-build"), "{m}"),
        other => panic!("{other:?}"),
    }
    dp.build(&p.target.permissions).unwrap();
    dp.check().unwrap();
    let mode = fs::metadata(dp.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
    let space = dp.space().unwrap();
    assert!(
        space.capacity >= space.available && space.available > 0,
        "{space:?}"
    );

    fs::write(dp.path().join("v"), b"x").unwrap();
    assert!(matches!(dp.delete(), Err(StorageError::Conflict(_))));
    fs::remove_file(dp.path().join("v")).unwrap();
    dp.delete().unwrap();
    assert!(!dp.path().exists());

    // A file where the directory should be: refused both ways.
    let file = scratch.path().join("f");
    fs::write(&file, b"").unwrap();
    let (p, dp) = pool(&file);
    assert!(matches!(dp.check(), Err(StorageError::Invalid(_))));
    assert!(matches!(
        dp.build(&p.target.permissions),
        Err(StorageError::Conflict(_))
    ));
}

#[test]
fn raw_and_qcow2_volumes_are_made_whole_and_listed() {
    let scratch = tempfile::tempdir().unwrap();
    let (_, dp) = pool(scratch.path());
    let raw = dp
        .create(&volume(
            "<volume><name>a.raw</name><capacity unit='MiB'>2</capacity>\
             <allocation unit='MiB'>1</allocation>\
             <target><permissions><mode>0600</mode></permissions></target></volume>",
        ))
        .unwrap();
    assert_eq!(raw.format, VolumeFormat::Raw);
    assert_eq!((raw.capacity, raw.physical), (2 << 20, 2 << 20));
    assert!(raw.allocation >= 1 << 20, "{raw:?}");
    let mode = fs::metadata(&raw.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let q = dp
        .create(&volume(
            "<volume><name>b.qcow2</name><capacity unit='MiB'>64</capacity>\
             <target><format type='qcow2'/></target></volume>",
        ))
        .unwrap();
    assert_eq!(q.format, VolumeFormat::Qcow2);
    assert_eq!(q.capacity, 64 << 20);
    assert!(q.physical < 1 << 20, "{q:?}");
    // The block layer opens what the pool made.
    let disk = block::open(
        &q.path,
        &block::OpenOptions {
            read_only: true,
            format: Some(ImageFormat::Qcow2),
            ..block::OpenOptions::default()
        },
    )
    .unwrap();
    assert_eq!(disk.size(), 64 << 20);
    drop(disk);

    // An overlay on the raw volume takes its size.
    let o = dp
        .create(&volume(&format!(
            "<volume><name>c.qcow2</name><capacity>0</capacity>\
             <target><format type='qcow2'/></target>\
             <backingStore><path>{}</path><format type='raw'/></backingStore></volume>",
            raw.path.display()
        )))
        .unwrap();
    assert_eq!(o.capacity, 2 << 20);
    let b = o.backing.unwrap();
    assert_eq!(
        (b.path.as_str(), b.format),
        (raw.path.to_str().unwrap(), VolumeFormat::Raw)
    );

    // Hidden files and directories are not volumes; the rest is sorted.
    fs::write(scratch.path().join(".hidden"), b"").unwrap();
    fs::create_dir(scratch.path().join("sub")).unwrap();
    let names: Vec<String> = dp.volumes().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["a.raw", "b.qcow2", "c.qcow2"]);
    // Nothing of the making is left behind.
    let left: Vec<_> = fs::read_dir(scratch.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("vireo-new"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_volume_requests_change_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let (_, dp) = pool(scratch.path());
    let v = volume("<volume><name>a</name><capacity>4096</capacity></volume>");
    dp.create(&v).unwrap();
    fs::write(dp.path().join("a"), b"precious").unwrap();
    match dp.create(&v) {
        Err(StorageError::Conflict(m)) => assert!(m.contains("already in use"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(dp.path().join("a")).unwrap(), b"precious");

    let huge = volume("<volume><name>huge</name><capacity unit='EiB'>8</capacity></volume>");
    match dp.create(&huge) {
        Err(StorageError::Invalid(m)) => assert!(m.contains("free"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!dp.path().join("huge").exists());

    let missing = volume(
        "<volume><name>o</name><capacity>0</capacity><target><format type='qcow2'/></target>\
         <backingStore><path>/nonexistent/base</path><format type='raw'/></backingStore></volume>",
    );
    assert!(matches!(
        dp.create(&missing),
        Err(StorageError::NotFound(_))
    ));
    let wrong = volume(&format!(
        "<volume><name>o</name><capacity>0</capacity><target><format type='qcow2'/></target>\
         <backingStore><path>{}</path><format type='qcow2'/></backingStore></volume>",
        dp.path().join("a").display()
    ));
    match dp.create(&wrong) {
        Err(StorageError::Invalid(m)) => assert!(m.contains("is raw, not qcow2"), "{m}"),
        other => panic!("{other:?}"),
    }

    for bad in ["../x", ".x", "", "a/b"] {
        assert!(
            matches!(dp.volume(bad), Err(StorageError::Invalid(_))),
            "{bad}"
        );
    }
    assert!(matches!(dp.volume("nope"), Err(StorageError::NotFound(_))));
    assert!(matches!(
        dp.delete_volume("nope"),
        Err(StorageError::NotFound(_))
    ));
}

#[test]
fn resize_grows_and_shrinks_only_when_asked() {
    let scratch = tempfile::tempdir().unwrap();
    let (_, dp) = pool(scratch.path());
    for xml in [
        "<volume><name>r</name><capacity unit='MiB'>1</capacity></volume>",
        "<volume><name>q</name><capacity unit='MiB'>1</capacity><target><format type='qcow2'/></target></volume>",
    ] {
        let v = dp.create(&volume(xml)).unwrap();
        let grown = dp.resize(&v.name, 4 << 20, false).unwrap();
        assert_eq!(grown.capacity, 4 << 20);
        match dp.resize(&v.name, 1 << 20, false) {
            Err(StorageError::Invalid(m)) => assert!(m.contains("--shrink"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(dp.volume(&v.name).unwrap().capacity, 4 << 20);
        if v.format == VolumeFormat::Raw {
            assert_eq!(dp.resize(&v.name, 1 << 20, true).unwrap().capacity, 1 << 20);
        }
        dp.delete_volume(&v.name).unwrap();
        assert!(!v.path.exists());
    }
}
