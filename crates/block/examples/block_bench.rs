//! One block-layer benchmark run: `COUNT` requests of `SIZE` bytes kept
//! `DEPTH` deep through [`AsyncDisk`], sequential (like `qemu-img bench`)
//! or random, reads or writes, on an existing image. Prints one line:
//! `ops_per_sec=<n> mib_per_sec=<n>`. Driven by `bench/block.py`.
//!
//! ```text
//! block_bench IMAGE {read|write} {seq|rand} [--count N] [--depth D]
//!             [--size BYTES] [--workers W] [--direct]
//! block_bench --prepare IMAGE {raw|qcow2} SIZE_MIB   # fully allocated image
//! ```

// A benchmark driver: sizes are small and it runs on 64-bit hosts only.
#![allow(clippy::cast_possible_truncation)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use block::{AsyncDisk, Completion, DiskImage, IoBuf, IoBufMut, OpenOptions, Request};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn prepare(path: &Path, format: &str, mib: u64) -> Result<(), String> {
    let size = mib << 20;
    match format {
        "raw" => std::fs::File::create(path)
            .and_then(|f| f.set_len(size))
            .map_err(|e| e.to_string())?,
        "qcow2" => block::qcow2::create(
            path,
            &block::qcow2::CreateOptions {
                size,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?,
        _ => return Err(format!("unknown format {format}")),
    }
    let disk = block::open(path, &OpenOptions::default()).map_err(|e| e.to_string())?;
    // 64 KiB writes for both formats: the qcow2 layer writes a cluster at a
    // time, and the size of the writes that fill a file decides the size
    // of its page-cache folios, which changes later 4 KiB write costs
    // several-fold. Same writes, same page cache, a fair comparison.
    let chunk: Vec<u8> = (0..1u32 << 16).map(|i| (i % 251) as u8 | 1).collect();
    for i in 0..mib * 16 {
        disk.write_at(i << 16, &chunk).map_err(|e| e.to_string())?;
    }
    disk.flush().map_err(|e| e.to_string())
}

/// xorshift64: cheap request offsets.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--prepare") {
        let mib: u64 = args
            .get(3)
            .and_then(|s| s.parse().ok())
            .ok_or("--prepare IMAGE FORMAT SIZE_MIB")?;
        return prepare(Path::new(&args[1]), &args[2], mib);
    }
    let [image, op, pattern, ..] = args.as_slice() else {
        return Err("usage: block_bench IMAGE {read|write} {seq|rand} [options]".into());
    };
    let count: u64 = arg(&args, "--count", 100_000);
    let depth: usize = arg(&args, "--depth", 32);
    let size: usize = arg(&args, "--size", 4096);
    let workers: usize = arg(&args, "--workers", 4);
    let direct = args.iter().any(|a| a == "--direct");
    let write = op == "write";
    let random = pattern == "rand";
    let disk: Arc<dyn DiskImage> = block::open(
        Path::new(image),
        &OpenOptions {
            read_only: !write,
            direct,
            format: None,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| format!("{image}: {e}"))?;
    let blocks = disk.size() / size as u64;
    let io = AsyncDisk::new(Arc::clone(&disk), workers).map_err(|e| e.to_string())?;
    // One page-aligned buffer per slot, leaked: requests need 'static
    // memory, as guest memory is.
    let mut bufs: Vec<*mut u8> = Vec::new();
    for _ in 0..depth {
        let layout = std::alloc::Layout::from_size_align(size, 4096).map_err(|e| e.to_string())?;
        // SAFETY: non-zero size layout.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err("out of memory".into());
        }
        bufs.push(p);
    }
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut next_seq = 0u64;
    let mut offset = || {
        let b = if random {
            rng.next() % blocks
        } else {
            let b = next_seq % blocks;
            next_seq += 1;
            b
        };
        b * size as u64
    };
    let submit = |slot: usize, off: u64| -> Result<(), String> {
        let p = bufs[slot];
        let request = if write {
            // SAFETY: the slot's buffer is live for the program and used by
            // one request at a time.
            let buf = unsafe { IoBuf::from_raw(p, size) };
            Request::Write {
                offset: off,
                bufs: vec![buf],
            }
        } else {
            // SAFETY: as above.
            let buf = unsafe { IoBufMut::from_raw(p, size) };
            Request::Read {
                offset: off,
                bufs: vec![buf],
            }
        };
        io.submit(request, slot as u64).map_err(|e| e.to_string())
    };
    let start = Instant::now();
    let mut submitted = 0u64;
    let mut completed = 0u64;
    for slot in 0..depth.min(count as usize) {
        submit(slot, offset())?;
        submitted += 1;
    }
    let mut done: Vec<Completion> = Vec::with_capacity(depth);
    let fd = std::os::unix::io::AsRawFd::as_raw_fd(&io);
    while completed < count {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        io.drain_completions(&mut done);
        for c in done.drain(..) {
            c.result.map_err(|e| e.to_string())?;
            completed += 1;
            if submitted < count {
                submit(c.user_data as usize, offset())?;
                submitted += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(io);
    println!(
        "ops_per_sec={:.0} mib_per_sec={:.1}",
        count as f64 / secs,
        count as f64 * size as f64 / secs / (1 << 20) as f64
    );
    Ok(())
}
