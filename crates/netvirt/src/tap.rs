//! TAP devices: a guest NIC's host side, one non-blocking descriptor per
//! queue pair, each frame carrying a virtio-net header.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use crate::ifreq;

/// Bytes of virtio-net header in front of every frame on a Vireo TAP
/// (`struct virtio_net_hdr_v1`, the modern header with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// The name pattern for TAPs Vireo creates; the kernel fills in the number.
const DEFAULT_NAME: &str = "vireo%d";

const TUN_PATH: &CStr = c"/dev/net/tun";

/// Why a TAP could not be opened or configured.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The requested name is not a valid interface name.
    #[error("invalid TAP name '{name}': {reason}")]
    BadName {
        /// The name asked for.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// At least one queue is needed.
    #[error("a TAP needs at least one queue")]
    NoQueues,
    /// Opening /dev/net/tun or attaching to the interface failed.
    #[error("cannot open TAP '{name}': {source}")]
    Open {
        /// The interface name (or the pattern) asked for.
        name: String,
        /// The host error.
        #[source]
        source: io::Error,
    },
    /// The named interface exists but cannot be attached to as asked.
    #[error("cannot attach to '{name}': {reason}")]
    Unusable {
        /// The interface name.
        name: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A queue index past the TAP's last queue.
    #[error("TAP '{name}' has {queues} queues, no queue {index}")]
    NoSuchQueue {
        /// The interface.
        name: String,
        /// The index asked for.
        index: usize,
        /// Queues the TAP was opened with.
        queues: usize,
    },
    /// Configuring the opened TAP failed.
    #[error("TAP '{name}': {what}: {source}")]
    Configure {
        /// The interface.
        name: String,
        /// The step that failed.
        what: &'static str,
        /// The host error.
        #[source]
        source: io::Error,
    },
}

/// Offloads the reader of a TAP (the guest) accepts in the frames it is
/// given: partial checksums and the segmentation kinds it can take whole.
/// Mirrors the guest's negotiated GUEST_* virtio-net features.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames may carry a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM).
    pub csum: bool,
    /// TCP over IPv4 segmentation (needs `csum`).
    pub tso4: bool,
    /// TCP over IPv6 segmentation (needs `csum`).
    pub tso6: bool,
    /// TSO with the ECN (CWR) bit.
    pub tso_ecn: bool,
    /// UDP fragmentation offload (needs `csum`).
    pub ufo: bool,
}

impl Offloads {
    /// Every offload this crate knows.
    pub const ALL: Self = Self {
        csum: true,
        tso4: true,
        tso6: true,
        tso_ecn: true,
        ufo: true,
    };

    /// The TUNSETOFFLOAD argument.
    pub fn tun_flags(self) -> libc::c_uint {
        let mut flags = 0;
        for (on, bit) in [
            (self.csum, libc::TUN_F_CSUM),
            (self.tso4, libc::TUN_F_TSO4),
            (self.tso6, libc::TUN_F_TSO6),
            (self.tso_ecn, libc::TUN_F_TSO_ECN),
            (self.ufo, libc::TUN_F_UFO),
        ] {
            if on {
                flags |= bit;
            }
        }
        flags
    }
}

/// A TAP queue descriptor this process was handed, duplicated, checked
/// (a TAP with `IFF_NO_PI` and `IFF_VNET_HDR`) and made non-blocking:
/// the duplicate, the interface's name and its TUN flags.
fn adopt_queue(fd: BorrowedFd<'_>) -> Result<(OwnedFd, String, libc::c_int), TapError> {
    let what = format!("descriptor {}", fd.as_raw_fd());
    let open_err = |source| TapError::Open {
        name: what.clone(),
        source,
    };
    let owned = fd.try_clone_to_owned().map_err(open_err)?;
    let mut req = ifreq::request("");
    // SAFETY: TUNGETIFF takes a struct ifreq and writes the
    // interface's name and flags into it.
    unsafe { ifreq::ifreq_ioctl(&owned, libc::TUNGETIFF, &mut req) }.map_err(|e| {
        TapError::Unusable {
            name: what.clone(),
            reason: format!("it is not a TAP descriptor ({e})"),
        }
    })?;
    // SAFETY: TUNGETIFF just wrote ifru_flags.
    let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
    let want = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if flags & want != want {
        return Err(TapError::Unusable {
            name: ifreq::name_of(&req),
            reason: "the descriptor is not a TAP opened with IFF_NO_PI and IFF_VNET_HDR".into(),
        });
    }
    let raw = owned.as_raw_fd();
    // SAFETY: F_GETFL takes no argument and returns the status flags.
    let status = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if status < 0 {
        return Err(open_err(io::Error::last_os_error()));
    }
    // SAFETY: F_SETFL takes the flags by value; no memory is passed.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, status | libc::O_NONBLOCK) } < 0 {
        return Err(open_err(io::Error::last_os_error()));
    }
    Ok((owned, ifreq::name_of(&req), flags))
}

/// An open TAP interface: its name and one descriptor per queue.
///
/// A TAP Vireo created (no name given) is not persistent: the kernel
/// removes it when the last descriptor closes. Attaching to an existing
/// (persistent) TAP leaves it in place afterwards.
#[derive(Debug)]
pub struct Tap {
    name: String,
    queues: Vec<OwnedFd>,
    /// Whether each queue is attached (TUNSETQUEUE): the kernel refuses
    /// to attach an attached queue or detach a detached one, so the state
    /// is kept here and changes are made under this lock.
    attached: Mutex<Vec<bool>>,
}

impl Tap {
    /// Create a TAP (`name` None: the kernel picks `vireoN`) or attach to
    /// the existing interface `name` (a TAP, or a macvtap with one queue),
    /// with `queues` descriptors (a
    /// multi-queue TAP when more than one). Every descriptor is
    /// non-blocking and carries 12-byte virtio-net headers; no offloads
    /// are on until [`Tap::set_offloads`]. The link is brought up.
    pub fn open(name: Option<&str>, queues: usize) -> Result<Self, TapError> {
        if queues == 0 {
            return Err(TapError::NoQueues);
        }
        if let Some(n) = name {
            check_name(n)?;
        }
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if queues > 1 {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let asked = name.unwrap_or(DEFAULT_NAME).to_string();
        let open_err = |source| explain_open_error(&asked, name.is_some(), queues, source);
        let first = match open_queue(&asked, flags) {
            Ok(f) => f,
            // A macvtap refuses TUNSETIFF; its queue is its own character
            // device (a hot-plugged `type='direct'` card is named so).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && queues == 1 => {
                match name.filter(|n| is_macvtap(n)) {
                    Some(n) => return crate::macvtap::open_macvtap(n),
                    None => return Err(open_err(e)),
                }
            }
            Err(e) => return Err(open_err(e)),
        };
        // The kernel resolved the pattern on the first attach; the other
        // queues must join that same interface.
        let actual = first.1;
        let mut fds = vec![first.0];
        for _ in 1..queues {
            let (fd, _) = open_queue(&actual, flags).map_err(open_err)?;
            fds.push(fd);
        }
        let tap = Self {
            name: actual,
            attached: Mutex::new(vec![true; fds.len()]),
            queues: fds,
        };
        tap.finish()
    }

    /// A TAP from a descriptor this process was handed (inherited from
    /// the management daemon, which created the interface): the caller's
    /// descriptor is duplicated, checked to be a TAP queue with the flags
    /// [`Tap::open`] uses, and configured as `open` configures its own.
    /// One queue.
    pub fn from_fd(fd: BorrowedFd<'_>) -> Result<Self, TapError> {
        Self::from_fds(&[fd])
    }

    /// [`Tap::from_fd`] for every queue of one TAP, in order: each is
    /// checked as `from_fd` checks it, all must name the same interface,
    /// and more than one must be a multi-queue TAP's.
    pub fn from_fds(fds: &[BorrowedFd<'_>]) -> Result<Self, TapError> {
        if fds.is_empty() {
            return Err(TapError::NoQueues);
        }
        let mut queues = Vec::with_capacity(fds.len());
        let mut name = String::new();
        for &fd in fds {
            let (owned, this_name, flags) = adopt_queue(fd)?;
            if fds.len() > 1 && flags & libc::IFF_MULTI_QUEUE == 0 {
                return Err(TapError::Unusable {
                    name: this_name,
                    reason: "several descriptors of a TAP that is not multi-queue".into(),
                });
            }
            if queues.is_empty() {
                name = this_name;
            } else if this_name != name {
                return Err(TapError::Unusable {
                    name,
                    reason: format!("the descriptors name two interfaces (and {this_name})"),
                });
            }
            queues.push(owned);
        }
        Self {
            name,
            attached: Mutex::new(vec![true; queues.len()]),
            queues,
        }
        .finish_handed_over()
    }

    /// [`Tap::finish`] for a descriptor another opened: the interface may
    /// live in another network namespace than this process (a jailed VMM
    /// has one of its own; the descriptor still carries frames), where it
    /// cannot be named: its link is then its opener's to bring up.
    fn finish_handed_over(self) -> Result<Self, TapError> {
        match self.finish_queues() {
            Ok(tap) => match ifreq::set_up(&tap.name) {
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                    tracing::debug!(
                        name = tap.name,
                        "TAP outside this network namespace: its link is left as it is"
                    );
                    Ok(tap)
                }
                Err(e) => Err(tap.configure_err("bringing the link up")(e)),
                Ok(()) => Ok(tap),
            },
            Err(e) => Err(e),
        }
    }

    /// The set-up every TAP gets once its queues are attached: the
    /// virtio-net header size, no offloads, the link up.
    fn finish(self) -> Result<Self, TapError> {
        let tap = self.finish_queues()?;
        ifreq::set_up(&tap.name).map_err(tap.configure_err("bringing the link up"))?;
        tracing::debug!(name = tap.name, queues = tap.queues.len(), "TAP open");
        Ok(tap)
    }

    /// The header size and offloads of every queue.
    fn finish_queues(self) -> Result<Self, TapError> {
        let tap = self;
        for fd in &tap.queues {
            let size = libc::c_int::try_from(VNET_HDR_LEN).unwrap_or(12);
            // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer,
            // which points at `size`, live for the call.
            let ret = unsafe {
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETVNETHDRSZ,
                    std::ptr::from_ref(&size),
                )
            };
            if ret < 0 {
                return Err(tap.configure_err("setting the vnet header size")(
                    io::Error::last_os_error(),
                ));
            }
        }
        tap.set_offloads(Offloads::default())?;
        Ok(tap)
    }

    /// The interface's name as the kernel knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many queue descriptors this TAP has.
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// The descriptor of queue `index`, if there is one.
    pub fn queue(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.queues.get(index).map(AsFd::as_fd)
    }

    /// Duplicates of every queue descriptor, for a worker thread to own.
    pub fn clone_queues(&self) -> io::Result<Vec<OwnedFd>> {
        self.queues.iter().map(OwnedFd::try_clone).collect()
    }

    /// Attach (`enabled`) or detach queue `index` of a multi-queue TAP
    /// (TUNSETQUEUE with IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE). The kernel
    /// spreads frames bound for the reader over the attached queues only
    /// (by flow hash); a detached queue's descriptor stays open and
    /// quiet (nothing to read, never readable to poll) until attached
    /// again, though frames written to it still reach the host. Frames
    /// already waiting on a queue when it is detached are dropped by the
    /// kernel.
    ///
    /// Asking for the state a queue is already in does nothing, and so
    /// does any request on a single-queue TAP (its one queue cannot be
    /// detached). Queues are attached when the TAP is opened.
    pub fn set_queue_enabled(&self, index: usize, enabled: bool) -> Result<(), TapError> {
        let Some(fd) = self.queues.get(index) else {
            return Err(TapError::NoSuchQueue {
                name: self.name.clone(),
                index,
                queues: self.queues.len(),
            });
        };
        if self.queues.len() == 1 {
            return Ok(());
        }
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = attached.get_mut(index) else {
            return Ok(());
        };
        if *state == enabled {
            return Ok(());
        }
        let (flag, what) = if enabled {
            (libc::IFF_ATTACH_QUEUE, "attaching a queue")
        } else {
            (libc::IFF_DETACH_QUEUE, "detaching a queue")
        };
        let mut req = ifreq::request("");
        req.ifr_ifru.ifru_flags = libc::c_short::try_from(flag)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
            .map_err(self.configure_err(what))?;
        // SAFETY: TUNSETQUEUE takes a struct ifreq and reads its flags.
        unsafe { ifreq::ifreq_ioctl(fd, libc::TUNSETQUEUE, &mut req) }
            .map_err(self.configure_err(what))?;
        *state = enabled;
        tracing::debug!(name = self.name, index, enabled, "TAP queue attachment");
        Ok(())
    }

    /// Whether queue `index` is attached (see [`Tap::set_queue_enabled`]);
    /// false for a queue the TAP does not have.
    pub fn queue_enabled(&self, index: usize) -> bool {
        let attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        attached.get(index).copied().unwrap_or(false)
    }

    /// Tell the kernel which offloads the reader accepts, so it hands over
    /// unsegmented, partially checksummed frames only when it may.
    pub fn set_offloads(&self, offloads: Offloads) -> Result<(), TapError> {
        set_offload_flags(&self.queues[0], offloads.tun_flags())
            .map_err(self.configure_err("setting offloads"))
    }

    /// The offloads this kernel's TAP accepts, found by trying each (the
    /// TAP is left with none on).
    pub fn supported_offloads(&self) -> Offloads {
        let fd = &self.queues[0];
        let try_bits = |bits| set_offload_flags(fd, libc::TUN_F_CSUM | bits).is_ok();
        let supported = Offloads {
            csum: try_bits(0),
            tso4: try_bits(libc::TUN_F_TSO4),
            tso6: try_bits(libc::TUN_F_TSO6),
            tso_ecn: try_bits(libc::TUN_F_TSO4 | libc::TUN_F_TSO_ECN),
            ufo: try_bits(libc::TUN_F_UFO),
        };
        let _ = set_offload_flags(fd, 0);
        supported
    }

    /// The host side's MAC address.
    pub fn mac(&self) -> Result<[u8; 6], TapError> {
        ifreq::hwaddr(&self.name).map_err(self.configure_err("reading the MAC address"))
    }

    /// Give the host side the IPv4 address `addr`/`prefix_len` (as
    /// `ip addr add` would), e.g. for a routed or host-only link.
    pub fn set_ipv4(&self, addr: std::net::Ipv4Addr, prefix_len: u8) -> Result<(), TapError> {
        ifreq::set_ipv4(&self.name, addr, prefix_len)
            .map_err(self.configure_err("setting the IPv4 address"))
    }

    /// The interface's MTU: without segmentation offloads, no frame read
    /// from the TAP is longer than this plus an Ethernet header.
    pub fn mtu(&self) -> Result<u32, TapError> {
        ifreq::mtu(&self.name).map_err(self.configure_err("reading the MTU"))
    }

    /// The interface flags (IFF_UP, IFF_RUNNING, ...).
    pub fn link_flags(&self) -> Result<i32, TapError> {
        ifreq::flags(&self.name).map_err(self.configure_err("reading the link flags"))
    }

    fn configure_err(&self, what: &'static str) -> impl Fn(io::Error) -> TapError + '_ {
        move |source| TapError::Configure {
            name: self.name.clone(),
            what,
            source,
        }
    }
}

fn check_name(name: &str) -> Result<(), TapError> {
    let bad = |reason| TapError::BadName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > ifreq::MAX_NAME_LEN {
        return Err(bad("longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(bad("reserved"));
    }
    if name
        .bytes()
        .any(|b| b == 0 || b == b'/' || b == b':' || b.is_ascii_whitespace())
    {
        return Err(bad("contains NUL, '/', ':' or whitespace"));
    }
    Ok(())
}

/// Open /dev/net/tun and attach it to `name` with `flags`; returns the
/// descriptor and the interface name the kernel settled on.
/// Turn TUNSETIFF's bare errno into what went wrong with the interface
/// the user named: the kernel answers EINVAL both for a name that is not
/// a TUN/TAP at all and for a TAP whose kind or multi-queue setting
/// differs from the request, and EBUSY for a single-queue TAP that has its
/// reader.
fn explain_open_error(name: &str, named: bool, queues: usize, source: io::Error) -> TapError {
    let unusable = |reason: String| TapError::Unusable {
        name: name.to_string(),
        reason,
    };
    if named && source.raw_os_error() == Some(libc::EBUSY) {
        return unusable("the TAP is in use (a single-queue TAP has one reader)".into());
    }
    if named && source.raw_os_error() == Some(libc::EINVAL) && interface_exists(name) {
        let reason = match probe_tun_kind(name) {
            None => "it is not a TAP device (Vireo attaches only to TAPs: \
                     create one with `ip tuntap add NAME mode tap`, or leave tap= out \
                     to have one created)"
                .to_string(),
            Some((false, _)) => {
                "it is a TUN (layer 3) device, not a TAP (`ip tuntap add NAME mode tap`)".into()
            }
            Some((true, false)) if queues > 1 => format!(
                "queues={queues} needs a multi-queue TAP, and this one was created \
                 without `multi_queue`"
            ),
            Some((true, true)) if queues == 1 => {
                "the TAP was created with `multi_queue`; give queues=2 or more".into()
            }
            Some(_) => format!("the kernel refused it: {source}"),
        };
        return unusable(reason);
    }
    TapError::Open {
        name: name.to_string(),
        source,
    }
}

/// Whether `name` is a macvtap link in this network namespace.
fn is_macvtap(name: &str) -> bool {
    crate::link::Netlink::open()
        .and_then(|mut nl| nl.link(name))
        .is_ok_and(|l| l.is_some_and(|l| l.kind.as_deref() == Some("macvtap")))
}

/// Whether an interface called `name` exists in this network namespace.
fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads the NUL-terminated name only.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// What the TUN/TAP interface `name` is, found by attaching with each
/// combination the kernel checks (and letting go at once): (is a TAP,
/// is multi-queue). The kernel checks the kind and the queue mode first,
/// answering EINVAL; any other answer (success, or EBUSY from a held
/// single-queue TAP) means they matched. `None`: not a TUN/TAP.
fn probe_tun_kind(name: &str) -> Option<(bool, bool)> {
    [(true, false), (true, true), (false, false), (false, true)]
        .into_iter()
        .find(|&(tap, multi_queue)| {
            let mut flags = libc::IFF_NO_PI;
            flags |= if tap { libc::IFF_TAP } else { libc::IFF_TUN };
            if multi_queue {
                flags |= libc::IFF_MULTI_QUEUE;
            }
            !matches!(open_queue(name, flags), Err(e) if e.raw_os_error() == Some(libc::EINVAL))
        })
}

fn open_queue(name: &str, flags: libc::c_int) -> io::Result<(OwnedFd, String)> {
    // SAFETY: TUN_PATH is a NUL-terminated string; open returns a new
    // descriptor or -1.
    let raw = unsafe {
        libc::open(
            TUN_PATH.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just returned by open(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = ifreq::request(name);
    req.ifr_ifru.ifru_flags =
        libc::c_short::try_from(flags).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: TUNSETIFF takes a struct ifreq, reading the name and flags
    // and writing back the name it chose.
    unsafe { ifreq::ifreq_ioctl(&fd, libc::TUNSETIFF, &mut req)? };
    Ok((fd, ifreq::name_of(&req)))
}

fn set_offload_flags(fd: &OwnedFd, flags: libc::c_uint) -> io::Result<()> {
    // TUNSETOFFLOAD takes its argument by value, not through a pointer.
    let arg = libc::c_ulong::from(flags);
    // SAFETY: TUNSETOFFLOAD reads no memory: the flags are the argument.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, arg) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
