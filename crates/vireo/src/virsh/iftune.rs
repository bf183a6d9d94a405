//! `domiftune`: a NIC's rate limits, read or changed.

use clap::Args;
use manager::api::{BandwidthRequest, InterfaceBandwidth, RateSpec};
use manager::client::Client;

use super::{Failure, Output};

/// `domiftune`.
#[derive(Debug, Args)]
pub struct DomiftuneArgs {
    /// Domain name, id or UUID.
    pub domain: String,
    /// The NIC: its host-side device (domiflist's Interface) or MAC.
    pub interface: String,
    /// Limits on traffic to the guest: average[,peak[,burst[,floor]]]
    /// (KiB/s, KiB/s, KiB, KiB/s); an average of 0 removes them.
    #[arg(long, value_name = "RATE")]
    pub inbound: Option<String>,
    /// Limits on traffic from the guest: average[,peak[,burst]].
    #[arg(long, value_name = "RATE")]
    pub outbound: Option<String>,
    #[command(flatten)]
    pub scope: super::tuning::Scope,
}

/// Parses virsh's `average[,peak[,burst[,floor]]]`; an empty field is unset.
pub fn parse_rate(what: &str, text: &str, max_fields: usize) -> Result<RateSpec, Failure> {
    let bad = || {
        Failure(format!(
            "{what} rate is malformed: '{}'",
            text.escape_debug()
        ))
    };
    let fields: Vec<&str> = text.split(',').collect();
    if fields.len() > max_fields {
        return Err(bad());
    }
    let mut nums = Vec::new();
    for f in &fields {
        let f = f.trim();
        nums.push(if f.is_empty() {
            None
        } else {
            Some(f.parse::<u64>().map_err(|_| bad())?)
        });
    }
    let average = nums.first().copied().flatten().ok_or_else(bad)?;
    let at = |i: usize| nums.get(i).copied().flatten();
    Ok(RateSpec {
        average,
        peak: at(1),
        burst: at(2),
        floor: at(3),
    })
}

fn lines(b: &InterfaceBandwidth) -> String {
    let v =
        |r: &Option<RateSpec>, f: fn(&RateSpec) -> Option<u64>| r.as_ref().and_then(f).unwrap_or(0);
    let rows = [
        ("inbound.average", v(&b.inbound, |r| Some(r.average))),
        ("inbound.peak", v(&b.inbound, |r| r.peak)),
        ("inbound.burst", v(&b.inbound, |r| r.burst)),
        ("inbound.floor", v(&b.inbound, |r| r.floor)),
        ("outbound.average", v(&b.outbound, |r| Some(r.average))),
        ("outbound.peak", v(&b.outbound, |r| r.peak)),
        ("outbound.burst", v(&b.outbound, |r| r.burst)),
    ];
    rows.iter()
        .map(|(k, n)| format!("{k:<15}: {n}\n"))
        .collect()
}

/// `domiftune`.
pub fn domiftune(c: &mut Client, a: &DomiftuneArgs) -> Result<Output, Failure> {
    a.scope.check()?;
    let inbound = a
        .inbound
        .as_deref()
        .map(|t| parse_rate("inbound", t, 4))
        .transpose()?;
    let outbound = a
        .outbound
        .as_deref()
        .map(|t| parse_rate("outbound", t, 3))
        .transpose()?;
    if inbound.is_none() && outbound.is_none() {
        let r = c.bandwidth(&a.domain, &a.interface, a.scope.read_config()?)?;
        return Ok(Output::text(lines(&r.value)));
    }
    c.set_bandwidth(
        &a.domain,
        &a.interface,
        &BandwidthRequest {
            inbound,
            outbound,
            live: a.scope.live,
            config: a.scope.config,
        },
    )?;
    Ok(Output::text(String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_virsh_writes_them() {
        let r = parse_rate("inbound", "1000,2000,,50", 4).unwrap();
        assert_eq!(
            (r.average, r.peak, r.burst, r.floor),
            (1000, Some(2000), None, Some(50))
        );
        assert_eq!(parse_rate("inbound", "0", 4).unwrap().average, 0);
        for bad in ["", ",5", "x", "1,2,3,4", "-1", "99999999999999999999999"] {
            let e = parse_rate("outbound", bad, 3).unwrap_err().0;
            assert!(e.starts_with("outbound rate is malformed"), "{bad}: {e}");
        }
    }

    #[test]
    fn values_print_as_virsh_prints_them() {
        let b = InterfaceBandwidth {
            inbound: Some(RateSpec {
                average: 1000,
                peak: Some(2000),
                burst: None,
                floor: None,
            }),
            outbound: None,
        };
        let text = lines(&b);
        assert!(text.starts_with("inbound.average: 1000\ninbound.peak   : 2000\n"));
        assert!(text.ends_with("outbound.average: 0\noutbound.peak  : 0\noutbound.burst : 0\n"));
    }
}
