//! Forwarding host input to the guest's serial port.
//!
//! One named thread (`serial-input`) waits in `poll` on the input source and
//! on a stop `EventFd`, reads what arrives, and offers it to a callback
//! (normally [`Serial::enqueue_input`]). What the callback does not take yet
//! stays here and is offered again every few milliseconds; meanwhile the
//! thread stops reading, so back-pressure reaches the host side (the socket
//! or terminal buffer) and no byte is lost.
//!
//! For a `unix:` backend the same thread accepts clients; a new client
//! replaces the previous one. The thread ends when `stop` becomes readable
//! (it polls `stop` but never reads it, so the count stays for whoever
//! owns it), or when stdin reaches end of file.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::serial::Serial;
use crate::serial_backend::UnixClient;

/// How often undelivered input is offered again while the guest's FIFO
/// and pending buffer are full.
const RETRY_INTERVAL_MS: libc::c_int = 10;

/// How long the last output may wait for a slow socket client when the
/// VM ends.
const FINAL_OUTPUT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Ctrl-A, the escape character (as in QEMU).
const ESCAPE: u8 = 0x01;
/// After the escape character: quit.
const ESCAPE_QUIT: u8 = b'x';

/// Host input of an opened serial backend, ready for
/// [`spawn_input_thread`].
#[derive(Debug)]
pub struct SerialInput {
    source: InputSource,
}

#[derive(Debug)]
pub(crate) enum InputSource {
    /// A stream (stdin), with the escape filter when it is a raw terminal.
    Stdin {
        fd: File,
        escape: Option<EscapeFilter>,
    },
    /// A pty master (non-blocking).
    Pty { master: File },
    /// A listening socket and the slot holding its current client.
    Unix {
        listener: UnixListener,
        client: UnixClient,
    },
    /// A socket Vireo connected to (`unix-connect:`), in its slot: input
    /// ends when the peer hangs up.
    Connected { client: UnixClient },
}

impl SerialInput {
    pub(crate) fn new(source: InputSource) -> Self {
        Self { source }
    }
}

/// QEMU's console escapes: `Ctrl-A x` signals the quit `EventFd`,
/// `Ctrl-A Ctrl-A` sends one Ctrl-A, and `Ctrl-A` followed by anything else
/// sends nothing (as in QEMU).
#[derive(Debug)]
pub struct EscapeFilter {
    quit: EventFd,
    after_escape: bool,
}

impl EscapeFilter {
    /// A filter that writes `quit` on `Ctrl-A x`.
    pub fn new(quit: EventFd) -> Self {
        Self {
            quit,
            after_escape: false,
        }
    }

    /// Append the bytes of `input` meant for the guest to `out`. An escape
    /// split across two calls is handled.
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &byte in input {
            if self.after_escape {
                self.after_escape = false;
                match byte {
                    ESCAPE => out.push(ESCAPE),
                    ESCAPE_QUIT => {
                        tracing::info!("serial: Ctrl-A x, stopping the VM");
                        if let Err(e) = self.quit.write(1) {
                            tracing::error!("serial: cannot signal quit: {e}");
                        }
                    }
                    _ => {}
                }
            } else if byte == ESCAPE {
                self.after_escape = true;
            } else {
                out.push(byte);
            }
        }
    }
}

/// Start the `serial-input` thread: it reads `input` and calls `deliver`
/// with the bytes; `deliver` returns how many it took (the rest is offered
/// again later). The thread ends soon after `stop` becomes readable; the
/// VMM signals it and joins the handle (or drops it: the thread never keeps
/// the process alive).
pub fn spawn_input_thread<F>(
    input: SerialInput,
    stop: EventFd,
    deliver: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnMut(&[u8]) -> usize + Send + 'static,
{
    confine::spawn(
        confine::ThreadKind::SerialInput,
        "serial-input".to_string(),
        move || run(input.source, &stop, deliver),
    )
}

/// [`spawn_input_thread`] delivering into a serial port.
pub fn spawn_serial_input(
    input: SerialInput,
    stop: EventFd,
    serial: Arc<Mutex<Serial>>,
) -> io::Result<JoinHandle<()>> {
    spawn_input_thread(input, stop, move |bytes| {
        serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .enqueue_input(bytes)
    })
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `poll(2)`; an interrupted call reports no events.
fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<()> {
    let nfds = libc::nfds_t::try_from(fds.len()).map_err(io::Error::other)?;
    // SAFETY: `fds` is a live, exclusively borrowed array of `nfds` pollfd
    // structs; poll only writes their `revents`.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
        fds.iter_mut().for_each(|f| f.revents = 0);
    }
    Ok(())
}

/// What the loop does after servicing the source.
enum Flow {
    Continue,
    Finished,
}

fn run<F: FnMut(&[u8]) -> usize>(mut source: InputSource, stop: &EventFd, mut deliver: F) {
    let mut backlog: Vec<u8> = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if !backlog.is_empty() {
            let taken = deliver(&backlog).min(backlog.len());
            backlog.drain(..taken);
        }
        let mut fds = vec![pollfd(stop.as_raw_fd())];
        let timeout = if backlog.is_empty() {
            source.add_fds(&mut fds);
            -1
        } else {
            // Full guest FIFO: wait for stop or the next retry only.
            RETRY_INTERVAL_MS
        };
        if let Err(e) = poll(&mut fds, timeout) {
            tracing::error!("serial input: poll: {e}");
            return;
        }
        if fds[0].revents != 0 {
            source.finish();
            return;
        }
        if fds.len() > 1 {
            if let Flow::Finished = source.service(&fds[1..], &mut buf, &mut backlog) {
                if !backlog.is_empty() {
                    deliver_rest(&mut backlog, stop, &mut deliver);
                }
                return;
            }
        }
    }
}

/// Deliver the last bytes before the source's end, still honouring `stop`.
fn deliver_rest<F: FnMut(&[u8]) -> usize>(backlog: &mut Vec<u8>, stop: &EventFd, deliver: &mut F) {
    while !backlog.is_empty() {
        let taken = deliver(backlog).min(backlog.len());
        backlog.drain(..taken);
        let mut fds = [pollfd(stop.as_raw_fd())];
        if backlog.is_empty() || poll(&mut fds, RETRY_INTERVAL_MS).is_err() || fds[0].revents != 0 {
            return;
        }
    }
}

/// Read from `file` into `buf`; `Ok(None)` when it would block.
fn read_some(mut file: &File, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match file.read(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A client slot's descriptors: its wake eventfd, and its socket if one
/// is connected, polled for room too while output waits for it.
fn add_client_fds(client: &UnixClient, fds: &mut Vec<libc::pollfd>) {
    let client = client.lock().unwrap_or_else(|e| e.into_inner());
    fds.push(pollfd(client.wake_fd()));
    if let Some(stream) = client.stream() {
        let mut fd = pollfd(stream.as_raw_fd());
        if client.wants_to_send() {
            fd.events |= libc::POLLOUT;
        }
        fds.push(fd);
    }
}

impl InputSource {
    fn add_fds(&self, fds: &mut Vec<libc::pollfd>) {
        match self {
            Self::Stdin { fd, .. } => fds.push(pollfd(fd.as_raw_fd())),
            Self::Pty { master } => fds.push(pollfd(master.as_raw_fd())),
            Self::Unix { listener, client } => {
                fds.push(pollfd(listener.as_raw_fd()));
                add_client_fds(client, fds);
            }
            Self::Connected { client } => add_client_fds(client, fds),
        }
    }

    /// The VM is ending: a socket client gets the output still waiting
    /// for it, within [`FINAL_OUTPUT_WAIT`].
    fn finish(&self) {
        if let Self::Unix { client, .. } | Self::Connected { client } = self {
            let deadline = std::time::Instant::now() + FINAL_OUTPUT_WAIT;
            client
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .flush_until(deadline);
        }
    }

    fn service(&mut self, fds: &[libc::pollfd], buf: &mut [u8], out: &mut Vec<u8>) -> Flow {
        match self {
            Self::Stdin { fd, escape } => {
                if fds[0].revents == 0 {
                    return Flow::Continue;
                }
                match read_some(fd, buf) {
                    Ok(Some(0)) => Flow::Finished,
                    Ok(Some(n)) => {
                        match escape {
                            Some(filter) => filter.filter(&buf[..n], out),
                            None => out.extend_from_slice(&buf[..n]),
                        }
                        Flow::Continue
                    }
                    Ok(None) => Flow::Continue,
                    Err(e) => {
                        tracing::warn!("serial input: stdin: {e}");
                        Flow::Finished
                    }
                }
            }
            Self::Pty { master } => {
                let revents = fds[0].revents;
                if revents & libc::POLLIN != 0 {
                    match read_some(master, buf) {
                        Ok(Some(n)) => out.extend_from_slice(&buf[..n]),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("serial input: pty: {e}");
                            return Flow::Finished;
                        }
                    }
                } else if revents != 0 {
                    // Hang-up or error without data; we hold the slave open,
                    // so this would only repeat.
                    tracing::warn!("serial input: pty poll events {revents:#x}");
                    return Flow::Finished;
                }
                Flow::Continue
            }
            Self::Unix { listener, client } => {
                if fds.get(1).is_some_and(|f| f.revents != 0) {
                    client.lock().unwrap_or_else(|e| e.into_inner()).woke();
                }
                let revents = fds.get(2).map_or(0, |f| f.revents);
                if revents & libc::POLLOUT != 0 {
                    client.lock().unwrap_or_else(|e| e.into_inner()).flush();
                }
                if revents & !libc::POLLOUT != 0 {
                    read_client(client, buf, out);
                }
                if fds[0].revents != 0 {
                    accept_clients(listener, client);
                }
                Flow::Continue
            }
            Self::Connected { client } => {
                if fds[0].revents != 0 {
                    client.lock().unwrap_or_else(|e| e.into_inner()).woke();
                }
                let revents = fds.get(1).map_or(0, |f| f.revents);
                if revents & libc::POLLOUT != 0 {
                    client.lock().unwrap_or_else(|e| e.into_inner()).flush();
                }
                if revents & !libc::POLLOUT != 0 {
                    read_client(client, buf, out);
                }
                // The peer hung up (the slot forgot it): no more input.
                if client
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .stream()
                    .is_none()
                {
                    return Flow::Finished;
                }
                Flow::Continue
            }
        }
    }
}

fn read_client(client: &UnixClient, buf: &mut [u8], out: &mut Vec<u8>) {
    let mut slot = client.lock().unwrap_or_else(|e| e.into_inner());
    let Some(stream) = slot.stream() else {
        return;
    };
    let mut stream_ref = stream;
    match stream_ref.read(buf) {
        Ok(0) => {
            tracing::info!("serial: socket client disconnected");
            slot.disconnect();
        }
        Ok(n) => out.extend_from_slice(&buf[..n]),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) => {}
        Err(e) => {
            tracing::info!("serial: socket client dropped: {e}");
            slot.disconnect();
        }
    }
}

fn accept_clients(listener: &UnixListener, client: &UnixClient) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = stream.set_nonblocking(true) {
                    tracing::warn!("serial: cannot use socket client: {e}");
                    continue;
                }
                tracing::info!("serial: socket client connected");
                client
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .connect(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!("serial: accept: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    fn quit_fd() -> EventFd {
        EventFd::new(libc::EFD_NONBLOCK).unwrap()
    }

    #[test]
    fn escape_quit_and_literal_ctrl_a() {
        let quit = quit_fd();
        let mut f = EscapeFilter::new(quit.try_clone().unwrap());
        let mut out = Vec::new();
        f.filter(b"ab\x01\x01c\x01", &mut out);
        assert_eq!(out, b"ab\x01c");
        assert!(quit.read().is_err());
        // The escape arrived at the end of one read; `x` comes in the next.
        f.filter(b"x", &mut out);
        assert_eq!(quit.read().unwrap(), 1);
        assert_eq!(out, b"ab\x01c");
        // Ctrl-C passes through; an unknown escape is swallowed.
        f.filter(b"\x03\x01qz", &mut out);
        assert_eq!(out, b"ab\x01c\x03z");
        assert!(quit.read().is_err());
    }

    fn stream_input(escape: Option<EscapeFilter>) -> (SerialInput, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let input = SerialInput::new(InputSource::Stdin {
            fd: File::from(std::os::fd::OwnedFd::from(ours)),
            escape,
        });
        (input, theirs)
    }

    #[test]
    fn forwards_until_stopped() {
        let (input, mut host) = stream_input(None);
        let stop = quit_fd();
        let (tx, rx) = mpsc::channel();
        let handle = spawn_input_thread(input, stop.try_clone().unwrap(), move |b| {
            tx.send(b.to_vec()).unwrap();
            b.len()
        })
        .unwrap();
        assert_eq!(handle.thread().name(), Some("serial-input"));
        host.write_all(b"hello").unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            got.extend(rx.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        assert_eq!(got, b"hello");
        let t = Instant::now();
        stop.write(1).unwrap();
        handle.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        // The thread polls `stop` but leaves its count alone.
        assert_eq!(stop.read().unwrap(), 1);
    }

    #[test]
    fn backpressure_retries_without_loss() {
        let (input, mut host) = stream_input(None);
        let stop = quit_fd();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        // Take at most 3 bytes per call, and nothing every other call.
        let mut refuse = false;
        let handle = spawn_input_thread(input, stop.try_clone().unwrap(), move |b| {
            refuse = !refuse;
            if !refuse {
                return 0;
            }
            let n = b.len().min(3);
            sink.lock().unwrap().extend_from_slice(&b[..n]);
            n
        })
        .unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        host.write_all(&data).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.lock().unwrap().len() < data.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*got.lock().unwrap(), data);
        stop.write(1).unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn end_of_file_ends_the_thread_after_delivering() {
        let (input, mut host) = stream_input(Some(EscapeFilter::new(quit_fd())));
        host.write_all(b"bye\x01\x01").unwrap();
        drop(host);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let handle = spawn_input_thread(input, quit_fd(), move |b| {
            sink.lock().unwrap().extend_from_slice(b);
            b.len()
        })
        .unwrap();
        handle.join().unwrap();
        assert_eq!(*got.lock().unwrap(), b"bye\x01");
    }

    #[test]
    fn serial_receives_forwarded_input() {
        let (input, mut host) = stream_input(None);
        let irq = quit_fd();
        let serial = Arc::new(Mutex::new(Serial::new(
            irq,
            crate::serial::SharedOutput::discard(),
        )));
        let stop = quit_fd();
        let handle = spawn_serial_input(input, stop.try_clone().unwrap(), serial.clone()).unwrap();
        let data = vec![b'k'; 300];
        host.write_all(&data).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < data.len() && Instant::now() < deadline {
            let mut s = serial.lock().unwrap();
            let mut lsr = [0u8];
            crate::BusDevice::read(&mut *s, 5, &mut lsr);
            if lsr[0] & 1 != 0 {
                let mut b = [0u8];
                crate::BusDevice::read(&mut *s, 0, &mut b);
                got.push(b[0]);
            } else {
                drop(s);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(got, data);
        stop.write(1).unwrap();
        handle.join().unwrap();
    }
}
