//! A queue-depth load for the network backends' tests: many reads
//! submitted at once through an [`AsyncDisk`] with four worker threads,
//! as a guest's virtqueue hands them over.

use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{AsyncDisk, DiskImage, Engine, IoBuf, IoBufMut, Request};

/// Read `count` pieces of `len` bytes from offset 0 on, all submitted at
/// once on four workers; the bytes read, in disk order.
pub(crate) fn read_at_depth_four(disk: Arc<dyn DiskImage>, count: usize, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; count * len];
    let queue = AsyncDisk::with_engine(disk, 4, Engine::Threads).unwrap();
    for (i, piece) in out.chunks_mut(len).enumerate() {
        // SAFETY: `out` outlives the queue's requests: every completion is
        // drained below before it is read or dropped.
        let buf = unsafe { IoBufMut::from_raw(piece.as_mut_ptr(), piece.len()) };
        let request = Request::Read {
            offset: (i * len) as u64,
            bufs: vec![buf],
        };
        queue.submit(request, i as u64).unwrap();
    }
    wait_all(&queue, count);
    drop(queue);
    out
}

/// Write `data` from offset 0 in pieces of `len` bytes, all submitted at
/// once on four workers.
pub(crate) fn write_at_depth_four(disk: Arc<dyn DiskImage>, data: &[u8], len: usize) {
    let queue = AsyncDisk::with_engine(disk, 4, Engine::Threads).unwrap();
    let mut count = 0;
    for (i, piece) in data.chunks(len).enumerate() {
        // SAFETY: `data` outlives the queue's requests: every completion
        // is drained below before this returns.
        let buf = unsafe { IoBuf::from_raw(piece.as_ptr(), piece.len()) };
        let request = Request::Write {
            offset: (i * len) as u64,
            bufs: vec![buf],
        };
        queue.submit(request, i as u64).unwrap();
        count += 1;
    }
    wait_all(&queue, count);
}

/// Wait for `count` completions, each a success.
fn wait_all(queue: &AsyncDisk, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = Vec::new();
    while done.len() < count {
        assert!(Instant::now() < deadline, "requests still in flight");
        let mut pfd = libc::pollfd {
            fd: queue.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 100) };
        queue.drain_completions(&mut done);
    }
    for c in &done {
        assert!(c.result.is_ok(), "request {}: {:?}", c.user_data, c.result);
    }
}
