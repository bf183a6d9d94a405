//! `event`: domain lifecycle events as they happen, one line each in
//! virsh's words (`event 'lifecycle' for domain 'web': Started Booted`),
//! or the daemon's JSON lines with `--json`.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use manager::api::Event;
use manager::client::{Client, StreamEnd};

use super::{print_out, Failure, Output};

/// `event`.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// Only this domain's events (name, id or UUID).
    #[arg(long)]
    pub domain: Option<String>,
    /// The event type; lifecycle is the only one.
    #[arg(long = "event", value_name = "TYPE")]
    pub kind: Option<String>,
    /// Every event type (lifecycle).
    #[arg(long)]
    pub all: bool,
    /// Keep printing until interrupted or --timeout, rather than one event.
    #[arg(long = "loop")]
    pub repeat: bool,
    /// Stop after this many seconds (at most a year).
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(..=manager::client::MAX_TIMEOUT_SECS)
    )]
    pub timeout: Option<u64>,
    /// List the event types.
    #[arg(long)]
    pub list: bool,
    /// Prefix each line with the time.
    #[arg(long)]
    pub timestamp: bool,
    /// Print the daemon's JSON, one object per line.
    #[arg(long)]
    pub json: bool,
}

/// One event as virsh prints it.
pub fn format_event(e: &Event, timestamp: bool) -> String {
    let mut line = String::new();
    if timestamp {
        line.push_str(&format_time(e.timestamp));
        line.push_str(": ");
    }
    let _ = write!(
        line,
        "event 'lifecycle' for domain '{}': {} {}",
        e.domain,
        e.event.virsh_name(),
        e.detail
    );
    line
}

/// `2026-11-28 01:23:45.678+0000`, virsh's `--timestamp` form, in UTC.
fn format_time(t: f64) -> String {
    let ms_total = if t.is_finite() && t > 0.0 {
        // Whole milliseconds since the epoch fit an i64 for any real date.
        #[allow(clippy::cast_possible_truncation)]
        let ms = (t * 1000.0) as i64;
        ms
    } else {
        0
    };
    let secs = ms_total.div_euclid(1000);
    let ms = ms_total.rem_euclid(1000);
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}+0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `event`.
pub fn event(c: &mut Client, a: &EventArgs) -> Result<Output, Failure> {
    if a.list {
        return Ok(Output::line("lifecycle"));
    }
    if let Some(kind) = a.kind.as_deref().filter(|k| *k != "lifecycle") {
        return Err(Failure(format!(
            "unknown event type '{kind}': Vireo has lifecycle events"
        )));
    }
    let until = a
        .timeout
        .map(|s| manager::client::deadline_after(Duration::from_secs(s)));
    catch_interrupt();
    let mut count = 0u64;
    let interrupted = || INTERRUPTED.load(Ordering::Relaxed);
    let end = c.events(a.domain.as_deref(), until, &interrupted, |e, json| {
        count += 1;
        if a.json {
            print_out(&format!("{json}\n"));
        } else {
            print_out(&format!("{}\n", format_event(&e, a.timestamp)));
        }
        if a.repeat && !INTERRUPTED.load(Ordering::Relaxed) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    })?;
    let interrupted = INTERRUPTED.load(Ordering::Relaxed) || end == StreamEnd::Interrupted;
    if end == StreamEnd::Closed && !interrupted {
        return Err(Failure("the vireo daemon ended the event stream".into()));
    }
    if a.json {
        return Ok(Output {
            text: String::new(),
            json: true,
        });
    }
    let mut out = String::new();
    if interrupted {
        out.push_str("event loop interrupted\n");
    } else if end == StreamEnd::TimedOut {
        out.push_str("event loop timed out\n");
    }
    let _ = writeln!(out, "events received: {count}");
    Ok(Output::text(out))
}

/// Set by the first SIGINT while events are awaited.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Ctrl-C ends the wait with virsh's summary rather than killing the
/// process: the handler interrupts the wait (no SA_RESTART). It is reset
/// once caught, so a second Ctrl-C kills as usual.
fn catch_interrupt() {
    // SAFETY: an all-zero sigaction is valid (empty mask, no flags); the
    // handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use manager::api::EventKind;

    #[test]
    fn virsh_lines() {
        let e = Event {
            timestamp: 1_795_830_058.249,
            domain: "web 1".into(),
            uuid: "u".into(),
            event: EventKind::Started,
            detail: "Booted".into(),
        };
        assert_eq!(
            format_event(&e, false),
            "event 'lifecycle' for domain 'web 1': Started Booted"
        );
        assert_eq!(
            format_event(&e, true),
            "2026-11-28 01:40:58.249+0000: event 'lifecycle' for domain 'web 1': Started Booted"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(format_time(0.0), "1970-01-01 00:00:00.000+0000");
        assert_eq!(format_time(951_782_400.5), "2000-02-29 00:00:00.500+0000");
        assert_eq!(format_time(f64::NAN), "1970-01-01 00:00:00.000+0000");
    }
}
