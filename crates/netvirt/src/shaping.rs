//! Rate limits on a guest NIC's port (libvirt's `<bandwidth>`), with tc.
//!
//! Traffic *to* the guest leaves the host through the TAP: an HTB qdisc
//! at the TAP's root shapes it. Traffic *from* the guest arrives on the
//! TAP's ingress, where Linux can only police (drop), not queue; so, as
//! is usual for ingress shaping, an ingress qdisc with a match-all u32
//! filter and a mirred action redirects it to an IFB device of the port's
//! own, whose root HTB shapes it before it continues into the bridge.
//! (The `matchall` classifier would do for u32, and the `police` action
//! for the IFB, but kernels without them exist; this host is one.)
//!
//! The IFB is created and deleted through rtnetlink ([`crate::link`]).
//! Qdiscs, classes and filters are set by running iproute2's `tc` with an
//! argument vector (never a shell): tc's netlink messages for HTB, u32
//! and mirred carry rate tables and nested action attributes whose
//! layout tc computes from the kernel's clock and packet scheduler
//! settings (`/proc/net/psched`), and reproducing that here would copy a
//! large, version-sensitive part of tc for no gain. Every value passed is
//! a number or a checked interface name.

use std::process::{Command, Stdio};

use crate::link::{valid_name, LinkError, Netlink};

/// Longest tc error message carried, so a runaway stderr stays one line.
const MAX_MESSAGE: usize = 512;

/// One direction's limits, in libvirt's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Long-term rate, KiB/s (at least 1).
    pub average_kib: u64,
    /// Rate allowed while the burst lasts, KiB/s; the average when absent.
    pub peak_kib: Option<u64>,
    /// Bytes that may go at the peak rate, KiB; tc's minimum when absent.
    pub burst_kib: Option<u64>,
}

/// Both directions' limits for one port. `inbound` is traffic to the
/// guest, `outbound` from it (libvirt's naming, the guest's point of view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortShaping {
    /// Limits on traffic to the guest.
    pub inbound: Option<Rate>,
    /// Limits on traffic from the guest.
    pub outbound: Option<Rate>,
}

/// Why shaping could not be set or removed.
#[derive(Debug, thiserror::Error)]
pub enum ShapingError {
    /// The `tc` binary is missing.
    #[error("tc not found: install the Debian package iproute2")]
    NotInstalled,
    /// `tc` could not be run.
    #[error("running tc: {0}")]
    Spawn(std::io::Error),
    /// `tc` refused; the command and its message.
    #[error("tc {command}: {message}")]
    Failed {
        /// The arguments given to tc.
        command: String,
        /// tc's stderr, one bounded line.
        message: String,
    },
    /// A rate or name is out of range; nothing was changed.
    #[error("invalid shaping: {0}")]
    Invalid(String),
    /// The IFB device could not be made or removed.
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// The IFB device that carries `port`'s guest-sent traffic: a fixed
/// prefix and a hash of the port name, so it fits IFNAMSIZ whatever the
/// port is called and is found again from the name alone.
pub fn ifb_name(port: &str) -> String {
    // FNV-1a, 32 bits.
    let mut h: u32 = 0x811c_9dc5;
    for b in port.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("vifb{h:08x}")
}

/// Highest rate or burst accepted, KiB(/s): as libvirt's XML allows here.
const MAX_KIB: u64 = u32::MAX as u64;

fn check(rate: &Rate, what: &str) -> Result<(), ShapingError> {
    let bad = |m: String| Err(ShapingError::Invalid(format!("{what}: {m}")));
    for (name, v) in [
        ("average", Some(rate.average_kib)),
        ("peak", rate.peak_kib),
        ("burst", rate.burst_kib),
    ] {
        match v {
            Some(0) => return bad(format!("{name} must be at least 1")),
            Some(v) if v > MAX_KIB => return bad(format!("{name} {v} is over {MAX_KIB}")),
            _ => {}
        }
    }
    if rate.peak_kib.is_some_and(|p| p < rate.average_kib) {
        return bad("peak is below average".into());
    }
    Ok(())
}

/// The HTB class arguments for `rate`: rates in bit/s (tc's unambiguous
/// unit) and the burst in bytes.
fn class_args(dev: &str, rate: &Rate) -> Vec<String> {
    let bits = |kib: u64| format!("{}bit", kib * 1024 * 8);
    let bytes_per_s = rate.average_kib * 1024;
    // HTB's default quantum (rate / 10) draws a warning above 200000
    // bytes; an explicit one within HTB's advised bounds keeps tc quiet.
    let quantum = (bytes_per_s / 10).clamp(1514, 200_000);
    let mut a: Vec<String> = [
        "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(bits(rate.average_kib));
    a.push("ceil".into());
    a.push(bits(rate.peak_kib.unwrap_or(rate.average_kib)));
    if let Some(b) = rate.burst_kib {
        a.push("burst".into());
        a.push((b * 1024).to_string());
        a.push("cburst".into());
        a.push((b * 1024).to_string());
    }
    a.push("quantum".into());
    a.push(quantum.to_string());
    a
}

/// Run tc with `args`; a refusal becomes [`ShapingError::Failed`].
fn tc(args: &[String]) -> Result<(), ShapingError> {
    let out = Command::new("tc")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ShapingError::NotInstalled,
            _ => ShapingError::Spawn(e),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let mut message = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if message.is_empty() {
        message = format!("exited with {}", out.status);
    }
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    Err(ShapingError::Failed {
        command: args.join(" "),
        message,
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// HTB with one class for all traffic at the root of `dev`.
fn htb(dev: &str, rate: &Rate) -> Result<(), ShapingError> {
    tc(&strings(&[
        "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "1",
    ]))?;
    tc(&class_args(dev, rate))?;
    // The class's default queue is as long as the device's transmit queue,
    // 32 packets on an IFB: less than one 64 KiB TCP window, so a sender
    // would see drops at every window and stall on retransmission timers.
    // A FIFO of 1000 packets (a TAP's own default) holds the windows
    // guests use; pfifo is built into every kernel with tc, where SFQ,
    // which libvirt puts here, is a module this host lacks.
    tc(&strings(&[
        "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "2:", "pfifo", "limit", "1000",
    ]))
}

/// Set `port`'s limits, replacing any it had (both directions go first,
/// so a direction no longer limited is left unlimited). On a failure what
/// was set is taken down again.
pub fn apply(port: &str, shaping: &PortShaping) -> Result<(), ShapingError> {
    valid_name(port)?;
    if let Some(r) = &shaping.inbound {
        check(r, "inbound")?;
    }
    if let Some(r) = &shaping.outbound {
        check(r, "outbound")?;
    }
    let mut nl = Netlink::open()?;
    if nl.index(port)?.is_none() {
        return Err(ShapingError::Invalid(format!("no such interface {port:?}")));
    }
    remove_with(&mut nl, port)?;
    let mut set = || -> Result<(), ShapingError> {
        if let Some(r) = &shaping.inbound {
            htb(port, r)?;
        }
        if let Some(r) = &shaping.outbound {
            let ifb = ifb_name(port);
            nl.create_ifb(&ifb)?;
            nl.set_up(&ifb, true)?;
            htb(&ifb, r)?;
            tc(&strings(&[
                "qdisc", "add", "dev", port, "handle", "ffff:", "ingress",
            ]))?;
            tc(&strings(&[
                "filter", "add", "dev", port, "parent", "ffff:", "protocol", "all", "prio", "1",
                "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev",
                &ifb,
            ]))?;
        }
        Ok(())
    };
    let result = set();
    if result.is_err() {
        if let Ok(mut nl) = Netlink::open() {
            let _ = remove_with(&mut nl, port);
        }
    }
    result
}

/// Remove every limit of `port` and its IFB device; Ok when there were
/// none, and when the port itself is gone (its qdiscs went with it).
pub fn remove(port: &str) -> Result<(), ShapingError> {
    valid_name(port)?;
    let mut nl = Netlink::open()?;
    remove_with(&mut nl, port)
}

fn remove_with(nl: &mut Netlink, port: &str) -> Result<(), ShapingError> {
    if nl.index(port)?.is_some() {
        for (kind, args) in [
            ("root", ["qdisc", "del", "dev", port, "root"]),
            ("ingress", ["qdisc", "del", "dev", port, "ingress"]),
        ] {
            match tc(&strings(&args)) {
                Ok(()) => {}
                // Nothing of that kind to delete (the kernel's or tc's wording).
                Err(ShapingError::Failed { message, .. })
                    if message.contains("No such file")
                        || message.contains("handle of zero")
                        || message.contains("Invalid handle")
                        || message.contains("Cannot find") =>
                {
                    tracing::trace!("no {kind} qdisc on {port}");
                }
                Err(e) => return Err(e),
            }
        }
    }
    match nl.delete(&ifb_name(port)) {
        Ok(()) | Err(LinkError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifb_names_fit_and_differ() {
        let a = ifb_name("vnet0");
        assert_eq!(a.len(), 12);
        assert_ne!(a, ifb_name("vnet1"));
        assert_eq!(a, ifb_name("vnet0"));
        assert!(valid_name(&ifb_name("a-fifteen-bytes")).is_ok());
    }

    #[test]
    fn classes_are_in_bits_and_bytes() {
        let r = Rate {
            average_kib: 1000,
            peak_kib: Some(2000),
            burst_kib: Some(64),
        };
        let a = class_args("vnet0", &r).join(" ");
        assert!(a.contains("rate 8192000bit ceil 16384000bit"), "{a}");
        assert!(a.contains("burst 65536 cburst 65536"), "{a}");
        assert!(a.contains("quantum 102400"), "{a}");
        let small = Rate {
            average_kib: 1,
            peak_kib: None,
            burst_kib: None,
        };
        let a = class_args("vnet0", &small).join(" ");
        assert!(a.contains("ceil 8192bit quantum 1514"), "{a}");
    }

    #[test]
    fn bad_rates_are_refused_before_anything_runs() {
        let r = |average_kib, peak_kib| Rate {
            average_kib,
            peak_kib,
            burst_kib: None,
        };
        assert!(check(&r(0, None), "x").is_err());
        assert!(check(&r(10, Some(5)), "x").is_err());
        assert!(check(&r(MAX_KIB + 1, None), "x").is_err());
        assert!(check(&r(MAX_KIB, Some(MAX_KIB)), "x").is_ok());
        let bad = PortShaping {
            inbound: Some(r(0, None)),
            outbound: None,
        };
        assert!(apply("vnet0", &bad)
            .unwrap_err()
            .to_string()
            .contains("inbound"));
        assert!(apply("a/b", &PortShaping::default()).is_err());
    }
}
