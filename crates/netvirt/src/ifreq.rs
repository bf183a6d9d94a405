//! Interface requests (`struct ifreq`) and the ioctls that take them:
//! the one place this crate fills C structures by hand.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The longest interface name Linux accepts (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// A zeroed request naming interface `name`. The caller has checked that
/// `name` fits and holds no NUL.
pub fn request(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (arrays, integers, a union of such
    // and a pointer nobody dereferences here); all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME_LEN)) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    req
}

/// The interface name the kernel left in `req` (it fills in the name it
/// chose when asked for a `%d` pattern).
pub fn name_of(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| c.to_ne_bytes()[0])
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Issue `op` on `fd` with `req` as its argument.
///
/// # Safety
/// `op` must be an ioctl whose argument is a `struct ifreq` (or a smaller
/// integer read from its start), so the kernel reads and writes only
/// within `req`.
pub unsafe fn ifreq_ioctl(
    fd: &impl AsRawFd,
    op: libc::Ioctl,
    req: &mut libc::ifreq,
) -> io::Result<()> {
    // SAFETY: the caller promises `op` takes a struct ifreq; `req` is a
    // live, exclusively borrowed one for the duration of the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), op, std::ptr::from_mut(req)) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A datagram socket for interface ioctls (SIOCGIFFLAGS and friends), in
/// the calling thread's network namespace.
pub fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call with constant arguments; it returns a
    // new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bring interface `name` up (IFF_UP), keeping its other flags.
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = request(name);
    // SAFETY: SIOCGIFFLAGS takes a struct ifreq and fills ifru_flags.
    unsafe { ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)? };
    // SAFETY: the kernel just wrote ifru_flags, the union member read here.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
    if flags & up != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | up;
    // SAFETY: SIOCSIFFLAGS takes a struct ifreq and reads ifru_flags.
    unsafe { ifreq_ioctl(&sock, libc::SIOCSIFFLAGS, &mut req) }
}

/// The flags (IFF_*) of interface `name`.
pub fn flags(name: &str) -> io::Result<i32> {
    let sock = control_socket()?;
    let mut req = request(name);
    // SAFETY: SIOCGIFFLAGS takes a struct ifreq and fills ifru_flags.
    unsafe { ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)? };
    // SAFETY: the kernel just wrote ifru_flags, the union member read here.
    Ok(i32::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff)
}

/// The hardware (MAC) address of interface `name`.
pub fn hwaddr(name: &str) -> io::Result<[u8; 6]> {
    let sock = control_socket()?;
    let mut req = request(name);
    // SAFETY: SIOCGIFHWADDR takes a struct ifreq and fills ifru_hwaddr.
    unsafe { ifreq_ioctl(&sock, libc::SIOCGIFHWADDR, &mut req)? };
    // SAFETY: the kernel just wrote ifru_hwaddr, the union member read here.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data.iter()) {
        *dst = src.to_ne_bytes()[0];
    }
    Ok(mac)
}

fn sockaddr_v4(addr: std::net::Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2);
    // struct sockaddr_in: family, then the port (left 0), then the address.
    for (dst, src) in sa.sa_data[2..6].iter_mut().zip(addr.octets()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    sa
}

/// Give interface `name` the IPv4 address `addr`/`prefix_len`.
pub fn set_ipv4(name: &str, addr: std::net::Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    if prefix_len > 32 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let sock = control_socket()?;
    let mut req = request(name);
    req.ifr_ifru.ifru_addr = sockaddr_v4(addr);
    // SAFETY: SIOCSIFADDR takes a struct ifreq and reads ifru_addr.
    unsafe { ifreq_ioctl(&sock, libc::SIOCSIFADDR, &mut req)? };
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let mut req = request(name);
    req.ifr_ifru.ifru_netmask = sockaddr_v4(std::net::Ipv4Addr::from(mask));
    // SAFETY: SIOCSIFNETMASK takes a struct ifreq and reads ifru_netmask.
    unsafe { ifreq_ioctl(&sock, libc::SIOCSIFNETMASK, &mut req) }
}

/// The MTU of interface `name`.
pub fn mtu(name: &str) -> io::Result<u32> {
    let sock = control_socket()?;
    let mut req = request(name);
    // SAFETY: SIOCGIFMTU takes a struct ifreq and fills ifru_mtu.
    unsafe { ifreq_ioctl(&sock, libc::SIOCGIFMTU, &mut req)? };
    // SAFETY: the kernel just wrote ifru_mtu, the union member read here.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}
