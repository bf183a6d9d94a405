//! What opening an image may trust, on real files: a probed raw image
//! keeps image headers out of its sector 0 (through every write path),
//! probing refuses what it would misread as raw, files that could block or
//! are no image are refused at once, and backing chains obey their policy
//! and cannot loop or run deep.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use block::{AsyncDisk, BackingPolicy, Engine, Error, ImageFormat, IoBuf, OpenOptions, Request};

/// The start of a qcow2 v3 header, as a guest would write it.
fn qcow2_sector() -> Vec<u8> {
    let mut s = vec![0u8; 512];
    s[..4].copy_from_slice(b"QFI\xfb");
    s[4..8].copy_from_slice(&3u32.to_be_bytes());
    s[20..24].copy_from_slice(&16u32.to_be_bytes());
    s
}

fn scratch() -> tempfile::TempDir {
    // On the target's filesystem: tmpfs has no O_DIRECT.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn raw_image(dir: &Path, name: &str, len: usize) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, vec![0x5au8; len]).unwrap();
    p
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn writable(format: Option<ImageFormat>, direct: bool) -> OpenOptions {
    OpenOptions {
        format,
        direct,
        ..OpenOptions::default()
    }
}

fn read_only() -> OpenOptions {
    OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    }
}

fn sector0(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()[..512].to_vec()
}

/// `block::open` on another thread: the error it gives, or a panic if it
/// takes longer than `limit` (a blocked open would hang the test instead).
fn open_err_within(path: &Path, options: OpenOptions, limit: Duration) -> Error {
    let (tx, rx) = mpsc::channel();
    let p = path.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(block::open(&p, &options).err());
    });
    match rx.recv_timeout(limit) {
        Ok(Some(e)) => e,
        Ok(None) => panic!("{}: opened", path.display()),
        Err(_) => panic!("{}: open still blocked after {limit:?}", path.display()),
    }
}

/// An error's whole cause chain on one line, as the CLI prints it.
fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        s.push_str(": ");
        s.push_str(&next.to_string());
        cur = next;
    }
    s
}

#[test]
fn probed_raw_refuses_header_writes_to_sector_0() {
    let dir = scratch();
    let p = raw_image(dir.path(), "guest.raw", 1 << 20);
    let disk = block::open(&p, &writable(None, false)).unwrap();
    assert_eq!(disk.format(), ImageFormat::Raw);
    let header = qcow2_sector();
    let e = disk.write_at(0, &header).unwrap_err();
    assert!(matches!(e, Error::HeaderWrite("qcow2")), "{e}");
    // Split over two buffers, or written in two steps, it is still caught.
    let e = disk
        .write_vectored(0, &[IoBuf::new(&header[..2]), IoBuf::new(&header[2..])])
        .unwrap_err();
    assert!(matches!(e, Error::HeaderWrite(_)), "{e}");
    disk.write_at(4, &header[4..]).unwrap();
    let e = disk.write_at(0, &header[..4]).unwrap_err();
    assert!(matches!(e, Error::HeaderWrite("qcow2")), "{e}");
    // Other formats QEMU would probe, too.
    for magic in [&b"QED\0"[..], b"KDMV", b"vhdxfile", b"conectix"] {
        let e = disk.write_at(0, magic).unwrap_err();
        assert!(matches!(e, Error::HeaderWrite(_)), "{magic:?}: {e}");
    }
    let s = sector0(&p);
    assert_eq!(&s[..4], &[0x5a; 4], "the magic never landed");
    // Ordinary data in sector 0 and headers elsewhere are the guest's own.
    disk.write_at(0, &[0u8; 512]).unwrap();
    disk.write_at(512, &header).unwrap();
    disk.write_zeroes(0, 512, false).unwrap();
    drop(disk);
    assert_eq!(block::probe(&p).unwrap(), ImageFormat::Raw);
    // Given format=raw, the guest may write anything anywhere.
    let disk = block::open(&p, &writable(Some(ImageFormat::Raw), false)).unwrap();
    disk.write_at(0, &header).unwrap();
    drop(disk);
    assert_eq!(&sector0(&p)[..4], b"QFI\xfb");
}

#[test]
fn probed_raw_guard_covers_the_async_paths() {
    let dir = scratch();
    let p = raw_image(dir.path(), "async.raw", 1 << 20);
    for (engine, direct) in [
        (Engine::Auto, true),
        (Engine::Auto, false),
        (Engine::Threads, false),
    ] {
        let disk = match block::open(&p, &writable(None, direct)) {
            Ok(d) => d,
            Err(e) if direct => {
                eprintln!("O_DIRECT unavailable here ({e}); the ring takes no writes then");
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        let io = AsyncDisk::with_engine(disk, 2, engine).unwrap();
        eprintln!("{engine:?} direct={direct}: {}", io.engine_name());
        // Aligned for O_DIRECT, and 'static as guest memory is.
        let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
        // SAFETY: the layout is non-zero; the buffer is leaked, so it
        // outlives every request that points at it.
        let buf: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(std::alloc::alloc_zeroed(layout), 4096) };
        buf[..512].copy_from_slice(&qcow2_sector());
        let header: &'static [u8] = buf;
        let requests = [(0u64, false), (4096, true)];
        for (i, (offset, _)) in requests.iter().enumerate() {
            let bufs = vec![IoBuf::new(header)];
            let request = Request::Write {
                offset: *offset,
                bufs,
            };
            io.submit(request, i as u64).unwrap();
        }
        let mut done = Vec::new();
        let start = Instant::now();
        while done.len() < requests.len() {
            assert!(start.elapsed() < Duration::from_secs(10), "requests lost");
            io.drain_completions(&mut done);
            std::thread::sleep(Duration::from_millis(1));
        }
        for c in &done {
            let (offset, ok) = requests[usize::try_from(c.user_data).unwrap()];
            assert_eq!(c.result.is_ok(), ok, "write at {offset}: {:?}", c.result);
        }
        drop(io);
        assert_eq!(&sector0(&p)[..4], &[0x5a; 4], "{engine:?} direct={direct}");
        assert_eq!(&std::fs::read(&p).unwrap()[4096..4100], b"QFI\xfb");
    }
}

#[test]
fn probing_refuses_what_it_would_misread_as_raw() {
    let dir = scratch();
    let q = dir.path().join("damaged.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", q.to_str().unwrap(), "1M"]);
    let mut bytes = std::fs::read(&q).unwrap();
    bytes[..4].copy_from_slice(&[0, 0, 0, 0]);
    std::fs::write(&q, &bytes).unwrap();
    let e = block::open(&q, &writable(None, false)).err().unwrap();
    assert!(
        chain(&e).contains("looks like a qcow2 image whose magic is damaged"),
        "{}",
        chain(&e)
    );
    // Asked for as raw, it is raw.
    block::open(&q, &writable(Some(ImageFormat::Raw), false)).unwrap();

    let v = dir.path().join("disk.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", v.to_str().unwrap(), "1M"]);
    let e = block::probe(&v).unwrap_err();
    assert!(e.to_string().contains("is a VMDK image"), "{e}");
}

#[test]
fn files_that_are_no_image_are_refused_without_blocking() {
    let dir = scratch();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let limit = Duration::from_secs(5);
    for options in [
        writable(None, false),
        read_only(),
        writable(Some(ImageFormat::Raw), false),
    ] {
        let e = open_err_within(&fifo, options, limit);
        let text = chain(&e);
        assert!(
            text.contains("fifo") && text.contains("is a FIFO"),
            "{text}"
        );
    }
    let e = block::probe(&fifo).unwrap_err();
    assert!(e.to_string().contains("FIFO"), "{e}");
    let sock = dir.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let e = open_err_within(&sock, read_only(), limit);
    assert!(chain(&e).contains("is a socket"), "{}", chain(&e));
    let e = open_err_within(dir.path(), read_only(), limit);
    assert!(chain(&e).contains("is a directory"), "{}", chain(&e));
    let e = open_err_within(Path::new("/dev/null"), read_only(), limit);
    assert!(chain(&e).contains("is a character device"), "{}", chain(&e));

    // A FIFO as a backing file: the tenant's image of issue 8.
    let evil = dir.path().join("evil.qcow2");
    qcow2_over(&evil, fifo.to_str().unwrap(), Some("raw"));
    let e = open_err_within(&evil, read_only(), limit);
    let text = chain(&e);
    assert!(
        text.contains("evil.qcow2") && text.contains("fifo: is a FIFO"),
        "{text}"
    );
}

/// Make the qcow2 at `path` forget its backing file's format (qemu-img no
/// longer makes such images; older ones exist): its backing-format header
/// extension becomes one of an unknown type, which readers skip.
fn forget_backing_format(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes[..4096]
        .windows(4)
        .position(|w| w == 0xe279_2acau32.to_be_bytes())
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&0x0bad_f00du32.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A 64 MiB qcow2 at `path` over `backing`, made without looking at it.
fn qcow2_over(path: &Path, backing: &str, format: Option<&str>) {
    let mut args = vec!["create", "-q", "-f", "qcow2", "-u", "-b", backing];
    if let Some(f) = format {
        args.extend(["-F", f]);
    }
    args.extend([path.to_str().unwrap(), "64M"]);
    qemu_img(&args);
}

#[test]
fn backing_loops_are_named_and_caught_before_loading() {
    let dir = scratch();
    let me = dir.path().join("self.qcow2");
    qcow2_over(&me, "self.qcow2", Some("qcow2"));
    for options in [read_only(), writable(None, false)] {
        let e = block::open(&me, &options).err().unwrap();
        assert!(matches!(e, Error::BackingLoop { .. }), "{}", chain(&e));
        let text = chain(&e);
        assert!(!text.contains("in use"), "{text}");
        assert!(
            text.contains("backing chain loops:")
                && text.contains("self.qcow2 names")
                && text.contains("which is already in the chain"),
            "{text}"
        );
    }
    // a -> b -> a, one reached through a symbolic link: identity, not name.
    let a = dir.path().join("a.qcow2");
    let b = dir.path().join("b.qcow2");
    std::os::unix::fs::symlink("a.qcow2", dir.path().join("alias.qcow2")).unwrap();
    qcow2_over(&a, "b.qcow2", Some("qcow2"));
    qcow2_over(&b, "alias.qcow2", Some("qcow2"));
    let e = block::open(&a, &writable(None, false)).err().unwrap();
    let text = chain(&e);
    assert!(
        text.contains(&format!(
            "{} names {}",
            b.display(),
            dir.path().join("alias.qcow2").display()
        )),
        "{text}"
    );
}

#[test]
fn a_deep_chain_is_refused_quickly_naming_the_top() {
    let dir = scratch();
    raw_image(dir.path(), "l0.img", 4096);
    for i in 1..=100 {
        let below = if i == 1 {
            ("l0.img".to_string(), "raw")
        } else {
            (format!("l{}.qcow2", i - 1), "qcow2")
        };
        qcow2_over(
            &dir.path().join(format!("l{i}.qcow2")),
            &below.0,
            Some(below.1),
        );
    }
    let top = dir.path().join("l100.qcow2");
    let start = Instant::now();
    let e = block::open(&top, &read_only()).err().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let text = chain(&e);
    assert_eq!(
        text,
        format!(
            "backing chain of {} is deeper than 32 images",
            top.display()
        )
    );
    // 33 images are followed.
    block::open(&dir.path().join("l32.qcow2"), &read_only()).unwrap();
}

#[test]
fn backing_files_obey_the_policy() {
    let dir = scratch();
    let inside = dir.path().join("inside");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    raw_image(&inside, "base.raw", 1 << 20);
    raw_image(&outside, "secret.raw", 1 << 20);
    std::os::unix::fs::symlink(outside.join("secret.raw"), inside.join("link.raw")).unwrap();
    std::os::unix::fs::symlink("inside", dir.path().join("inside-link")).unwrap();
    let ok = inside.join("ok.qcow2");
    let link = inside.join("link.qcow2");
    let bad = inside.join("bad.qcow2");
    let unformatted = inside.join("unformatted.qcow2");
    // Relative names resolve against the image's directory, not ours.
    qcow2_over(&ok, "base.raw", Some("raw"));
    qcow2_over(&link, "link.raw", Some("raw"));
    qcow2_over(&bad, "../outside/secret.raw", Some("raw"));
    qcow2_over(&unformatted, "base.raw", Some("raw"));
    forget_backing_format(&unformatted);
    let allowed = OpenOptions {
        read_only: true,
        backing: BackingPolicy {
            // Through a link: the policy compares canonical paths.
            allowed_dirs: vec![dir.path().join("inside-link")],
            ..BackingPolicy::default()
        },
        ..OpenOptions::default()
    };
    block::open(&ok, &allowed).unwrap();
    for image in [&link, &bad] {
        let e = block::open(image, &allowed).err().unwrap();
        assert!(
            chain(&e).contains("is outside the allowed backing directories"),
            "{}",
            chain(&e)
        );
    }
    // The default policy follows them; the backing file is read-only even
    // when the overlay is writable.
    let overlay = block::qcow2::Qcow2Disk::open(&ok, &OpenOptions::default()).unwrap();
    assert!(!block::DiskImage::read_only(&overlay));
    assert!(overlay.backing().unwrap().read_only());
    drop(overlay);
    block::open(&unformatted, &read_only()).unwrap();
    let strict = OpenOptions {
        read_only: true,
        backing: BackingPolicy {
            require_format: true,
            ..BackingPolicy::default()
        },
        ..OpenOptions::default()
    };
    let e = block::open(&unformatted, &strict).err().unwrap();
    assert!(
        chain(&e).contains("does not record the backing file's format"),
        "{}",
        chain(&e)
    );
    let none = OpenOptions {
        read_only: true,
        backing: BackingPolicy {
            deny_all: true,
            ..BackingPolicy::default()
        },
        ..OpenOptions::default()
    };
    let e = block::open(&ok, &none).err().unwrap();
    assert!(
        chain(&e).contains("backing files are not allowed"),
        "{}",
        chain(&e)
    );
}

/// `block::open_file`: a descriptor another process opened is taken as
/// its path would be (format, lock, guard), and one open read-only is
/// refused for a writable disk.
#[test]
fn a_passed_descriptor_opens_as_its_path_would() {
    let dir = scratch();
    let path = raw_image(dir.path(), "passed.img", 1 << 20);
    let rw = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let raw = OpenOptions {
        format: Some(ImageFormat::Raw),
        ..OpenOptions::default()
    };
    let image = block::open_file(rw, &path, &raw).unwrap();
    assert_eq!(image.format(), ImageFormat::Raw);
    assert_eq!(image.size(), 1 << 20);
    // Locked as an open by path would lock it.
    let second = block::open(&path, &raw).map(|_| ()).unwrap_err();
    assert!(chain(&second).contains("in use"), "{}", chain(&second));
    drop(image);
    let ro = std::fs::File::open(&path).unwrap();
    let err = block::open_file(ro, &path, &raw).map(|_| ()).unwrap_err();
    assert!(
        chain(&err).contains("the descriptor is open read-only"),
        "{err}"
    );
    let ro = std::fs::File::open(&path).unwrap();
    let read_only = OpenOptions {
        read_only: true,
        ..raw
    };
    assert!(block::open_file(ro, &path, &read_only).is_ok());
}
