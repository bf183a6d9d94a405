//! virtio-console against well-formed and hostile rings, with a pipe as
//! input and a shared buffer as output.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::{Address, Bytes, GuestAddress};

use super::*;
use crate::device::{ActivateContext, VirtioDevice};
use crate::net::tests::{
    make_queue, memory, read_mem, wait_for, DriverQueue, TestInterrupt, BUF_BASE, D, MEM_SIZE,
};
use crate::GuestMemory;

/// Output the test can look at while the device writes to it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A blocking pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by no one.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_fd(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: writes `data`, a live slice.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(usize::try_from(n).unwrap(), data.len());
}

struct Rig<'a> {
    console: Console,
    output: Shared,
    input: Option<OwnedFd>,
    rx: Option<DriverQueue<'a>>,
    tx: Option<DriverQueue<'a>>,
    interrupt: Arc<TestInterrupt>,
}

impl<'a> Rig<'a> {
    fn new(mem: &'a GuestMemory, with_input: bool, queues: &[u16]) -> Self {
        let output = Shared::default();
        let (read, write) = pipe();
        let input = with_input.then_some(read);
        let mut console = Console::new(Box::new(output.clone()), input);
        let interrupt = Arc::new(TestInterrupt::default());
        let mut active = Vec::new();
        let (mut rx, mut tx) = (None, None);
        for &i in queues {
            let (q, d) = make_queue(mem, i);
            active.push(q);
            match i {
                0 => rx = Some(d),
                1 => tx = Some(d),
                _ => {}
            }
        }
        console
            .activate(ActivateContext {
                mem: mem.clone(),
                interrupt: interrupt.clone(),
                queues: active,
                features: 0,
            })
            .unwrap();
        Self {
            console,
            output,
            input: with_input.then_some(write),
            rx,
            tx,
            interrupt,
        }
    }

    fn rx(&mut self) -> &mut DriverQueue<'a> {
        self.rx.as_mut().unwrap()
    }

    fn tx(&mut self) -> &mut DriverQueue<'a> {
        self.tx.as_mut().unwrap()
    }

    fn output(&self) -> Vec<u8> {
        self.output.0.lock().unwrap().clone()
    }

    fn counter(&self, name: &str) -> u64 {
        let c = self.console.counters();
        c.into_iter().find(|(n, _)| *n == name).unwrap().1
    }
}

#[test]
fn guest_output_reaches_the_backend() {
    let mem = memory();
    let mut rig = Rig::new(&mem, false, &[0, 1]);
    mem.write_slice(b"hello ", GuestAddress(BUF_BASE)).unwrap();
    mem.write_slice(b"world\n", GuestAddress(BUF_BASE + 0x100))
        .unwrap();
    rig.tx()
        .push(&[D(BUF_BASE, 6, false), D(BUF_BASE + 0x100, 6, false)]);
    rig.tx().wait_used(1);
    assert_eq!(rig.tx().used(0), (0, 0));
    assert_eq!(rig.output(), b"hello world\n");
    assert_eq!(rig.counter("tx_bytes"), 12);
    assert!(rig.interrupt.queue_notifies.lock().unwrap().contains(&1));
}

#[test]
fn input_waits_for_buffers_and_is_never_lost() {
    let mem = memory();
    let mut rig = Rig::new(&mem, true, &[0, 1]);
    let input = rig.input.take().unwrap();
    write_fd(&input, b"abc");
    rig.rx().push(&[D(BUF_BASE, 16, true)]);
    rig.rx().wait_used(1);
    assert_eq!(rig.rx().used(0), (0, 3));
    assert_eq!(read_mem(&mem, BUF_BASE, 3), b"abc");
    // Input with no buffer waits; small buffers take it piece by piece.
    write_fd(&input, b"defgh");
    std::thread::sleep(Duration::from_millis(20));
    rig.rx().push(&[D(BUF_BASE + 0x100, 2, true)]);
    rig.rx().wait_used(2);
    rig.rx()
        .push(&[D(BUF_BASE + 0x200, 1, true), D(BUF_BASE + 0x300, 15, true)]);
    rig.rx().wait_used(3);
    assert_eq!(rig.rx().used(1).1, 2);
    assert_eq!(read_mem(&mem, BUF_BASE + 0x100, 2), b"de");
    assert_eq!(rig.rx().used(2).1, 3);
    assert_eq!(read_mem(&mem, BUF_BASE + 0x200, 1), b"f");
    assert_eq!(read_mem(&mem, BUF_BASE + 0x300, 2), b"gh");
    assert_eq!(rig.counter("rx_bytes"), 8);
    // At the input's end the device stops reading, and keeps serving output.
    drop(input);
    rig.rx().push(&[D(BUF_BASE + 0x400, 16, true)]);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(rig.rx().used_count(), 3);
    mem.write_slice(b"x", GuestAddress(BUF_BASE)).unwrap();
    rig.tx().push(&[D(BUF_BASE, 1, false)]);
    rig.tx().wait_used(1);
    assert_eq!(rig.output(), b"x");
}

/// Linux fills the receive ring once and kicks only when it adds buffers:
/// input arriving after the first buffer was used must go into the next
/// queued buffer without another kick (it once waited for one, and a line
/// sent to a Linux guest's hvc after the first never arrived).
#[test]
fn input_after_a_used_buffer_fills_the_next_queued_one() {
    let mem = memory();
    let mut rig = Rig::new(&mem, true, &[0, 1]);
    let input = rig.input.take().unwrap();
    rig.rx().push(&[D(BUF_BASE, 16, true)]);
    rig.rx().push(&[D(BUF_BASE + 0x100, 16, true)]);
    rig.rx().push(&[D(BUF_BASE + 0x200, 16, true)]);
    write_fd(&input, b"first");
    rig.rx().wait_used(1);
    write_fd(&input, b"second");
    rig.rx().wait_used(2);
    write_fd(&input, b"third");
    rig.rx().wait_used(3);
    assert_eq!(read_mem(&mem, BUF_BASE, 5), b"first");
    assert_eq!(read_mem(&mem, BUF_BASE + 0x100, 6), b"second");
    assert_eq!(read_mem(&mem, BUF_BASE + 0x200, 5), b"third");
    assert_eq!(rig.counter("rx_bytes"), 16);
}

#[test]
fn hostile_chains_fail_without_harm() {
    let mem = memory();
    let mut rig = Rig::new(&mem, true, &[0, 1]);
    let end = MEM_SIZE as u64;
    let tx_cases: Vec<Vec<D>> = vec![
        vec![D(BUF_BASE, 4, false), D(BUF_BASE + 0x100, 4, true)],
        vec![D(end - 2, 4, false)],
        vec![D(u64::MAX - 1, 8, false)],
        vec![D(BUF_BASE, 70_000, false)],
        vec![D(BUF_BASE, 0, false)],
    ];
    for c in &tx_cases {
        rig.tx().push(c);
    }
    rig.tx().wait_used(5);
    assert_eq!(rig.counter("tx_errors"), 5);
    assert!(rig.output().is_empty());

    rig.rx().push(&[D(BUF_BASE, 16, false)]); // readable
    rig.rx().push(&[D(end - 2, 16, true)]); // outside memory
    rig.rx().push(&[D(BUF_BASE, 0, true)]); // empty
    rig.rx().wait_used(3);
    for i in 0..3 {
        assert_eq!(rig.rx().used(i).1, 0);
    }
    assert_eq!(rig.counter("rx_errors"), 3);
    assert!(!rig.interrupt.needs_reset.load(Ordering::SeqCst));
    // Still serving.
    let input = rig.input.take().unwrap();
    write_fd(&input, b"ok");
    rig.rx().push(&[D(BUF_BASE + 0x1000, 16, true)]);
    rig.rx().wait_used(4);
    assert_eq!(rig.rx().used(3).1, 2);
}

#[test]
fn a_runaway_available_index_needs_a_reset() {
    let mem = memory();
    let mut rig = Rig::new(&mem, false, &[0, 1]);
    let tx = rig.tx();
    mem.write_obj(500u16, tx.mock.avail_addr().unchecked_add(2))
        .unwrap();
    tx.kick.write(1).unwrap();
    wait_for("DEVICE_NEEDS_RESET", || {
        rig.interrupt.needs_reset.load(Ordering::SeqCst)
    });
}

#[test]
fn configuration_is_one_port_of_unknown_size_and_read_only() {
    let mut c = Console::new(Box::new(Shared::default()), None);
    assert_eq!(c.features(), 0);
    assert_eq!(c.device_type(), 3);
    let mut cfg = [0xffu8; 16];
    c.read_config(0, &mut cfg);
    assert_eq!(cfg, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    c.write_config(4, &[9, 9, 9, 9]);
    let mut ports = [0u8; 4];
    c.read_config(4, &mut ports);
    assert_eq!(ports, [1, 0, 0, 0]);
    c.read_config(u64::MAX, &mut ports);
    assert_eq!(ports, [0; 4]);
}

#[test]
fn activation_needs_a_queue_and_ignores_strays() {
    let mem = memory();
    let mut c = Console::new(Box::new(Shared::default()), None);
    let err = c.activate(ActivateContext {
        mem: mem.clone(),
        interrupt: Arc::new(TestInterrupt::default()),
        queues: Vec::new(),
        features: 0,
    });
    assert!(err.is_err());
    // Only the transmit queue, plus a queue that does not exist.
    let mut rig = Rig::new(&mem, true, &[1, 7]);
    mem.write_slice(b"z", GuestAddress(BUF_BASE)).unwrap();
    rig.tx().push(&[D(BUF_BASE, 1, false)]);
    rig.tx().wait_used(1);
    assert_eq!(rig.output(), b"z");
    rig.console.reset();
}
