//! Raw images and the asynchronous request path, on real files.

use std::sync::Arc;

use block::{
    AsyncDisk, Completion, DiskImage, Engine, Error, IoBuf, IoBufMut, OpenOptions, Request,
};

fn raw_file(len: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().set_len(len).unwrap();
    f
}

fn open(path: &std::path::Path, read_only: bool, direct: bool) -> Arc<dyn DiskImage> {
    block::open(
        path,
        &OpenOptions {
            read_only,
            direct,
            format: None,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn vectored_write_then_read_back() {
    let f = raw_file(1 << 20);
    let disk = open(f.path(), false, false);
    assert_eq!(disk.size(), 1 << 20);
    let a = vec![1u8; 1000];
    let b = vec![2u8; 3000];
    disk.write_vectored(4000, &[IoBuf::new(&a), IoBuf::new(&b)])
        .unwrap();
    let mut x = vec![0u8; 500];
    let mut y = vec![0u8; 4000];
    disk.read_vectored(3500, &[IoBufMut::new(&mut x), IoBufMut::new(&mut y)])
        .unwrap();
    assert!(x.iter().all(|&v| v == 0));
    assert!(y[..1000].iter().all(|&v| v == 1));
    assert!(y[1000..].iter().all(|&v| v == 2));
    let on_disk = std::fs::read(f.path()).unwrap();
    assert_eq!(&on_disk[4000..5000], &a[..]);
}

#[test]
fn out_of_range_and_read_only() {
    let f = raw_file(8192);
    let disk = open(f.path(), true, false);
    let mut buf = [0u8; 512];
    assert!(matches!(
        disk.read_at(8000, &mut buf),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(disk.write_at(0, &buf), Err(Error::ReadOnly)));
    assert!(matches!(disk.discard(0, 512), Err(Error::ReadOnly)));
    assert!(matches!(disk.resize(4096), Err(Error::ReadOnly)));
}

#[test]
fn discard_and_write_zeroes_read_as_zero() {
    let f = raw_file(1 << 20);
    let disk = open(f.path(), false, false);
    disk.write_at(0, &vec![0xaa; 1 << 20]).unwrap();
    disk.discard(65536, 65536).unwrap();
    disk.write_zeroes(200_000, 10_000, false).unwrap();
    disk.write_zeroes(300_000, 70_000, true).unwrap();
    let mut back = vec![0u8; 1 << 20];
    disk.read_at(0, &mut back).unwrap();
    for (i, &v) in back.iter().enumerate() {
        let zero = (65536..131072).contains(&i)
            || (200_000..210_000).contains(&i)
            || (300_000..370_000).contains(&i);
        assert_eq!(v, if zero { 0 } else { 0xaa }, "byte {i}");
    }
}

#[test]
fn resize_changes_size() {
    let f = raw_file(4096);
    let disk = open(f.path(), false, false);
    disk.resize(1 << 20).unwrap();
    assert_eq!(disk.size(), 1 << 20);
    assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 1 << 20);
    let mut buf = [1u8; 512];
    disk.read_at((1 << 20) - 512, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 512]);
}

#[test]
fn writable_opens_exclude_each_other() {
    let f = raw_file(4096);
    let first = open(f.path(), false, false);
    let err = block::open(f.path(), &OpenOptions::default())
        .err()
        .unwrap();
    let text = format!("{err} {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("is in use (another VM"), "{text}");
    assert!(block::open(
        f.path(),
        &OpenOptions {
            read_only: true,
            ..Default::default()
        }
    )
    .is_err());
    drop(first);
    let r1 = open(f.path(), true, false);
    let r2 = open(f.path(), true, false);
    assert!(block::open(f.path(), &OpenOptions::default()).is_err());
    drop((r1, r2));
    open(f.path(), false, false);
}

#[test]
fn direct_io_with_unaligned_buffers() {
    // tmpfs has no O_DIRECT; use the target directory, on a real filesystem.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("d.raw");
    std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
    let disk = match block::open(
        &path,
        &OpenOptions {
            direct: true,
            ..Default::default()
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            testkit::skip(&format!("O_DIRECT unavailable here: {e:?}"));
            return;
        }
    };
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    disk.write_at(1001, &data).unwrap();
    let mut back = vec![0u8; 3000];
    disk.read_at(1, &mut back).unwrap();
    assert!(back[..1000].iter().all(|&v| v == 7));
    assert_eq!(&back[1000..2000], &data[..]);
    assert!(back[2000..].iter().all(|&v| v == 7));
    disk.flush().unwrap();
}

#[test]
fn async_requests_complete_with_their_user_data() {
    for engine in [Engine::Auto, Engine::Threads] {
        async_requests(engine, false);
        async_requests(engine, true);
    }
}

fn async_requests(engine: Engine, qcow2: bool) {
    let f = raw_file(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let disk = if qcow2 {
        let p = dir.path().join("async.qcow2");
        block::qcow2::create(
            &p,
            &block::qcow2::CreateOptions {
                size: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        open(&p, false, false)
    } else {
        open(f.path(), false, false)
    };
    let io = AsyncDisk::with_engine(disk, 3, engine).unwrap();
    eprintln!("{engine:?} qcow2={qcow2}: {}", io.engine_name());
    // Leaked so the buffers are 'static, as guest memory is.
    let src: &'static [u8] = Box::leak(vec![9u8; 65536].into_boxed_slice());
    for i in 0..16u64 {
        io.submit(
            Request::Write {
                offset: i * 65536,
                bufs: vec![IoBuf::new(src)],
            },
            i,
        )
        .unwrap();
    }
    let mut done: Vec<Completion> = Vec::new();
    while done.len() < 16 {
        let mut pfd = libc::pollfd {
            fd: std::os::unix::io::AsRawFd::as_raw_fd(&io),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 5000) };
        io.drain_completions(&mut done);
    }
    let mut ids: Vec<u64> = done.iter().map(|c| c.user_data).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..16).collect::<Vec<_>>());
    assert!(done.iter().all(|c| c.result.is_ok()));
    io.submit(Request::Flush, 100).unwrap();
    let dst: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
    let dst_ptr = dst.as_ptr();
    io.submit(
        Request::Read {
            offset: 15 * 65536,
            bufs: vec![IoBufMut::new(dst)],
        },
        101,
    )
    .unwrap();
    io.submit(
        Request::Read {
            offset: 1 << 20,
            bufs: vec![IoBufMut::new(Box::leak(vec![0u8; 512].into_boxed_slice()))],
        },
        102,
    )
    .unwrap();
    // Dropping finishes what was submitted.
    let disk = Arc::clone(io.disk());
    let mut rest = Vec::new();
    loop {
        io.drain_completions(&mut rest);
        if rest.len() == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(io);
    rest.sort_by_key(|c| c.user_data);
    assert!(rest[0].result.is_ok() && rest[1].result.is_ok());
    assert!(matches!(rest[2].result, Err(Error::OutOfRange { .. })));
    // SAFETY: the read completed; the buffer is ours again.
    let back = unsafe { std::slice::from_raw_parts(dst_ptr, 4096) };
    assert!(back.iter().all(|&v| v == 9));
    drop(disk);
}

#[test]
fn dropping_the_async_disk_finishes_queued_requests() {
    let f = raw_file(4 << 20);
    let disk = open(f.path(), false, false);
    let io = AsyncDisk::new(Arc::clone(&disk), 1).unwrap();
    assert!(["io_uring", "threads"].contains(&io.engine_name()));
    let src: &'static [u8] = Box::leak(vec![5u8; 1 << 20].into_boxed_slice());
    for i in 0..4u64 {
        io.submit(
            Request::Write {
                offset: i << 20,
                bufs: vec![IoBuf::new(src)],
            },
            i,
        )
        .unwrap();
    }
    drop(io);
    let mut back = vec![0u8; 4 << 20];
    disk.read_at(0, &mut back).unwrap();
    assert!(back.iter().all(|&v| v == 5));
}

#[test]
fn qcow2_discards_and_ring_reads_share_one_async_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mix.qcow2");
    block::qcow2::create(
        &p,
        &block::qcow2::CreateOptions {
            size: 4 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let disk = open(&p, false, false);
    disk.write_at(0, &vec![3u8; 4 << 20]).unwrap();
    let io = AsyncDisk::new(Arc::clone(&disk), 2).unwrap();
    let start = std::time::Instant::now();
    let mut expected = 0;
    for round in 0..20u64 {
        for i in 0..32u64 {
            let buf: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
            let off = ((round * 32 + i) * 4096) % (4 << 20);
            io.submit(
                Request::Read {
                    offset: off,
                    bufs: vec![IoBufMut::new(buf)],
                },
                round * 1000 + i,
            )
            .unwrap();
            expected += 1;
        }
        io.submit(
            Request::Discard {
                offset: (round % 4) << 20,
                len: 65536,
            },
            round * 1000 + 999,
        )
        .unwrap();
        expected += 1;
    }
    let mut done = Vec::new();
    while done.len() < expected {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "requests stalled: {} of {expected} done",
            done.len()
        );
        let mut pfd = libc::pollfd {
            fd: std::os::unix::io::AsRawFd::as_raw_fd(&io),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        io.drain_completions(&mut done);
    }
    assert!(done.iter().all(|c| c.result.is_ok()));
    drop(io);
    drop(disk);
    common_check(&p);
}

fn common_check(p: &std::path::Path) {
    let out = std::process::Command::new("qemu-img")
        .args(["check", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn qcow2_with_o_direct() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = dir.path().join("d.qcow2");
    block::qcow2::create(
        &p,
        &block::qcow2::CreateOptions {
            size: 8 << 20,
            cluster_size: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    let disk = match block::open(
        &p,
        &OpenOptions {
            direct: true,
            ..Default::default()
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            testkit::skip(&format!("O_DIRECT unavailable here: {e:?}"));
            return;
        }
    };
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
    disk.write_at(12_345, &data).unwrap();
    disk.discard(1 << 20, 1 << 20).unwrap();
    disk.write_zeroes(100_000, 5000, false).unwrap();
    disk.flush().unwrap();
    let mut back = vec![0u8; 300_000];
    disk.read_at(12_345, &mut back).unwrap();
    let mut expect = data.clone();
    expect[100_000 - 12_345..105_000 - 12_345].fill(0);
    assert!(back == expect);
    let io = AsyncDisk::new(Arc::clone(&disk), 2).unwrap();
    let buf: &'static mut [u8] = Box::leak(vec![0u8; 8192].into_boxed_slice());
    let ptr = buf.as_ptr();
    io.submit(
        Request::Read {
            offset: 16384,
            bufs: vec![IoBufMut::new(buf)],
        },
        1,
    )
    .unwrap();
    let mut done = Vec::new();
    while done.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(1));
        io.drain_completions(&mut done);
    }
    assert!(done[0].result.is_ok());
    // SAFETY: the read completed; the buffer is ours again.
    let got = unsafe { std::slice::from_raw_parts(ptr, 8192) };
    assert!(got == &expect[16384 - 12_345..16384 - 12_345 + 8192]);
    drop(io);
    drop(disk);
    common_check(&p);
}

#[test]
fn plugged_reads_go_to_the_kernel_at_unplug() {
    let f = raw_file(1 << 20);
    std::fs::write(f.path(), vec![7u8; 1 << 20]).unwrap();
    let disk = open(f.path(), false, false);
    let io = AsyncDisk::new(Arc::clone(&disk), 1).unwrap();
    let ring = io.engine_name() == "io_uring";
    io.plug();
    let mut ptrs = Vec::new();
    for i in 0..8u64 {
        let buf: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
        ptrs.push(buf.as_ptr());
        io.submit(
            Request::Read {
                offset: i * 65536,
                bufs: vec![IoBufMut::new(buf)],
            },
            i,
        )
        .unwrap();
    }
    let mut done: Vec<Completion> = Vec::new();
    if ring {
        // Held in the ring: nothing reached the kernel, nothing completes.
        std::thread::sleep(std::time::Duration::from_millis(50));
        io.drain_completions(&mut done);
        assert!(done.is_empty(), "{} completed while plugged", done.len());
    }
    io.unplug();
    let start = std::time::Instant::now();
    while done.len() < 8 {
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        let mut pfd = libc::pollfd {
            fd: std::os::unix::io::AsRawFd::as_raw_fd(&io),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        io.drain_completions(&mut done);
    }
    assert!(done.iter().all(|c| c.result.is_ok()));
    for p in ptrs {
        // SAFETY: the read completed; the buffer is ours again.
        let back = unsafe { std::slice::from_raw_parts(p, 4096) };
        assert!(back.iter().all(|&v| v == 7));
    }
    // Requests still held when the disk is dropped are finished too.
    io.plug();
    let buf: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
    let p = buf.as_ptr();
    io.submit(
        Request::Read {
            offset: 0,
            bufs: vec![IoBufMut::new(buf)],
        },
        9,
    )
    .unwrap();
    drop(io);
    // SAFETY: dropping waited for the read.
    let back = unsafe { std::slice::from_raw_parts(p, 4096) };
    assert!(back.iter().all(|&v| v == 7));
}
