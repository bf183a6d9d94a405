//! What the daemon enforces on each NIC's TAP: the `filterref`
//! anti-spoofing filter ([`netvirt::port_filter`]) and the `bandwidth`
//! limits ([`netvirt::shaping`]), set when a domain starts or a NIC is
//! hot-plugged, taken down when it stops or the NIC is unplugged, and
//! changed by `domiftune`.
//!
//! A domain with either starts paused and is resumed once they are in
//! place, so its guest never runs with an open port. A filter without an
//! `IP` parameter allows the address the NIC's network leased to its MAC:
//! [`refresh`] runs with the networks' supervision and installs the
//! address once the lease appears (until then only DHCP passes), and
//! after a daemon restart puts every running port's rules back as they
//! should be.
//!
//! Everything here runs in the daemon's own network namespace, where the
//! drivers make the TAPs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};

use netvirt::port_filter::{self, Checks, PortFilter};
use netvirt::shaping::{self, PortShaping, Rate};
use virtxml::{Bandwidth, Domain, Interface, InterfaceKind, MacAddress, NetFilter, RateLimit};

use super::failure::Failure;
use super::Daemon;
use crate::api::{BandwidthRequest, InterfaceBandwidth, RateSpec};

/// The filter last installed on each TAP, so [`refresh`] only runs nft
/// when a port's allowed addresses changed. Its lock is held through
/// every change of the ports' rules: a refresh that read a domain as
/// running cannot then put back rules its stop has just removed.
static INSTALLED: Mutex<Option<HashMap<String, PortFilter>>> = Mutex::new(None);

type Installed = HashMap<String, PortFilter>;

fn with_ports<T>(f: impl FnOnce(&mut Installed) -> T) -> T {
    let mut guard = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(HashMap::new))
}

/// Whether any NIC of `domain` has a filter or limits.
pub(crate) fn needed(domain: &Domain) -> bool {
    domain
        .devices
        .interfaces
        .iter()
        .any(|i| i.filterref.is_some() || i.bandwidth.is_some())
}

fn checks(filter: NetFilter) -> Checks {
    match filter {
        NetFilter::CleanTraffic => Checks::CLEAN_TRAFFIC,
        NetFilter::NoMacSpoofing => Checks {
            mac: true,
            ..Checks::default()
        },
        // As libvirt's, it lets a DHCP client's broadcast from 0.0.0.0 out.
        NetFilter::NoIpSpoofing => Checks {
            ip: true,
            dhcp: true,
            ..Checks::default()
        },
        NetFilter::NoArpSpoofing => Checks {
            arp: true,
            ..Checks::default()
        },
        NetFilter::AllowDhcp => Checks {
            dhcp: true,
            ..Checks::default()
        },
    }
}

fn rate(r: &RateLimit) -> Rate {
    Rate {
        average_kib: r.average,
        peak_kib: r.peak,
        burst_kib: r.burst,
    }
}

fn shaping_of(b: Option<&Bandwidth>) -> PortShaping {
    PortShaping {
        inbound: b.and_then(|b| b.inbound.as_ref()).map(rate),
        outbound: b.and_then(|b| b.outbound.as_ref()).map(rate),
    }
}

/// The IPv4 addresses `network`'s dnsmasq leased to `mac` and that have
/// not expired.
fn leased(d: &Daemon, network: &str, mac: MacAddress) -> Vec<Ipv4Addr> {
    let dir = d.networks.store.private_dir(network);
    let Ok(leases) = netvirt::dnsmasq::leases(&dir) else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs());
    leases
        .into_iter()
        .filter(|l| l.mac == mac.0 && (l.expiry == 0 || l.expiry > now))
        .filter_map(|l| match l.ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// The filter `iface`'s TAP should have now, if it has a filterref and a TAP.
fn desired_filter(d: &Daemon, iface: &Interface) -> Option<PortFilter> {
    let f = iface.filterref.as_ref()?;
    let port = iface.target.clone()?;
    let ips = if !f.ips.is_empty() {
        f.ips.clone()
    } else if let InterfaceKind::Network { network, .. } = &iface.kind {
        leased(d, network, iface.mac)
    } else {
        Vec::new()
    };
    Some(PortFilter {
        port,
        mac: f.mac.unwrap_or(iface.mac).0,
        ips,
        checks: checks(f.filter),
    })
}

fn host_failure(domain: &str, port: &str, e: impl std::fmt::Display) -> Failure {
    Failure::driver(format!("domain '{domain}': port {port}: {e}"))
}

/// Installs `iface`'s filter and limits on its TAP (blocking).
fn apply_blocking(
    d: &Daemon,
    ports: &mut Installed,
    domain: &str,
    iface: &Interface,
) -> Result<(), Failure> {
    let Some(port) = iface.target.as_deref() else {
        if iface.filterref.is_some() || iface.bandwidth.is_some() {
            return Err(Failure::driver(format!(
                "domain '{domain}': interface {} has no TAP to filter or shape",
                iface.mac
            )));
        }
        return Ok(());
    };
    if let Some(f) = desired_filter(d, iface) {
        port_filter::apply(&f).map_err(|e| host_failure(domain, port, e))?;
        ports.insert(port.to_string(), f);
    }
    if iface.bandwidth.is_some() {
        shaping::apply(port, &shaping_of(iface.bandwidth.as_ref()))
            .map_err(|e| host_failure(domain, port, e))?;
    }
    Ok(())
}

/// Takes down what [`apply_blocking`] set on `iface`'s TAP (blocking);
/// failures are logged, as the TAP may be gone already.
fn remove_blocking(ports: &mut Installed, domain: &str, iface: &Interface) {
    let Some(port) = iface.target.as_deref() else {
        return;
    };
    if iface.filterref.is_some() {
        ports.remove(port);
        if let Err(e) = port_filter::remove(port) {
            tracing::warn!("domain '{domain}': port {port}: {e}");
        }
    }
    if iface.bandwidth.is_some() {
        if let Err(e) = shaping::remove(port) {
            tracing::warn!("domain '{domain}': port {port}: {e}");
        }
    }
}

/// After a start: every NIC of the live `domain` gets its filter and
/// limits. On a failure those already set are taken down again.
pub(crate) async fn on_start(d: &Arc<Daemon>, domain: Arc<Domain>) -> Result<(), Failure> {
    if !needed(&domain) {
        return Ok(());
    }
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        with_ports(|ports| {
            for (i, iface) in domain.devices.interfaces.iter().enumerate() {
                if let Err(e) = apply_blocking(&d, ports, &domain.name, iface) {
                    for done in &domain.devices.interfaces[..=i] {
                        remove_blocking(ports, &domain.name, done);
                    }
                    return Err(e);
                }
            }
            Ok(())
        })
    })
    .await?
}

/// After a stop: what [`on_start`] and hot-plugs set on the NICs of the
/// live `domain` is removed (their TAPs are gone or going).
pub(crate) async fn on_stop(domain: Arc<Domain>) {
    if !needed(&domain) {
        return;
    }
    let _ = tokio::task::spawn_blocking(move || {
        with_ports(|ports| {
            for iface in &domain.devices.interfaces {
                remove_blocking(ports, &domain.name, iface);
            }
        });
    })
    .await;
}

/// After a hot-plug of the NIC with `mac`: the driver's record names its
/// TAP. Sets its filter and limits; returns the TAP, for the live
/// definition.
pub(crate) async fn on_attach(
    d: &Arc<Daemon>,
    domain: &str,
    mut iface: Interface,
    record_xml: &str,
) -> Result<Option<String>, Failure> {
    let tap = Domain::parse(record_xml).ok().and_then(|p| {
        p.domain
            .devices
            .interfaces
            .into_iter()
            .find(|i| i.mac == iface.mac)
            .and_then(|i| i.target)
    });
    if iface.target.is_none() {
        iface.target.clone_from(&tap);
    }
    if iface.filterref.is_some() || iface.bandwidth.is_some() {
        let (d, domain) = (d.clone(), domain.to_string());
        tokio::task::spawn_blocking(move || {
            with_ports(|ports| {
                let applied = apply_blocking(&d, ports, &domain, &iface);
                if applied.is_err() {
                    remove_blocking(ports, &domain, &iface);
                }
                applied
            })
        })
        .await??;
    }
    Ok(tap)
}

/// After an unplug of `iface` (as the live definition had it), once the
/// live definition without it is in the table.
pub(crate) async fn on_detach(domain: &str, iface: Interface) {
    if iface.filterref.is_none() && iface.bandwidth.is_none() {
        return;
    }
    let domain = domain.to_string();
    let _ = tokio::task::spawn_blocking(move || {
        with_ports(|ports| remove_blocking(ports, &domain, &iface))
    })
    .await;
}

/// Brings every running port's filter up to date with its network's
/// leases (and back after a daemon restart). Called every few seconds.
pub(crate) async fn refresh(d: &Arc<Daemon>) {
    let d = d.clone();
    let _ = tokio::task::spawn_blocking(move || {
        with_ports(|ports| {
            // Read under the ports' lock: a domain that stopped (or a NIC
            // unplugged) before this is not seen, one that stops after
            // waits for this pass to end before its rules go.
            let domains: Vec<Arc<Domain>> = d
                .registry
                .lock()
                .domains
                .values()
                .filter_map(|e| e.live.as_ref())
                .filter(|l| !l.ended.load(std::sync::atomic::Ordering::SeqCst))
                .map(|l| l.domain.clone())
                .filter(|dom| dom.devices.interfaces.iter().any(|i| i.filterref.is_some()))
                .collect();
            for domain in domains {
                for iface in &domain.devices.interfaces {
                    refresh_port(&d, ports, &domain.name, iface);
                }
            }
        });
    })
    .await;
}

fn refresh_port(d: &Daemon, ports: &mut Installed, domain: &str, iface: &Interface) {
    let Some(want) = desired_filter(d, iface) else {
        return;
    };
    if ports.get(&want.port) == Some(&want) {
        return;
    }
    match port_filter::apply(&want) {
        Ok(()) => {
            tracing::info!(
                "domain '{domain}': port {} now allows {:?}",
                want.port,
                want.ips
            );
            ports.insert(want.port.clone(), want);
        }
        Err(e) => tracing::warn!("domain '{domain}': port {}: {e}", want.port),
    }
}

/// The NIC of `domain` that `key` names: its TAP or its MAC.
fn find<'a>(domain: &'a mut Domain, key: &str, name: &str) -> Result<&'a mut Interface, Failure> {
    let mac = MacAddress::parse(key).ok();
    domain
        .devices
        .interfaces
        .iter_mut()
        .find(|i| i.target.as_deref() == Some(key) || Some(i.mac) == mac)
        .ok_or_else(|| {
            Failure::not_found(format!(
                "domain '{name}' has no interface '{}'",
                key.escape_debug()
            ))
        })
}

/// `key` for looking up a NIC in the definition: a TAP name the running
/// domain has becomes that NIC's MAC, as a definition rarely names its TAP.
fn config_key(live: Option<&Domain>, key: &str) -> String {
    live.and_then(|l| {
        l.devices
            .interfaces
            .iter()
            .find(|i| i.target.as_deref() == Some(key))
    })
    .map_or_else(|| key.to_string(), |i| i.mac.to_string())
}

fn spec(r: &RateLimit) -> RateSpec {
    RateSpec {
        average: r.average,
        peak: r.peak,
        burst: r.burst,
        floor: r.floor,
    }
}

/// `GET /domains/{dom}/interfaces/{iface}/bandwidth`: from the running
/// domain, or its definition with `config` or when it is not running.
pub(crate) fn bandwidth(
    d: &Daemon,
    key: &str,
    iface: &str,
    config: bool,
) -> Result<InterfaceBandwidth, Failure> {
    let (name, uuid, _) = super::lifecycle::resolve(d, key)?;
    let domain = {
        let mut table = d.registry.lock();
        let entry = table
            .get_mut(&name, uuid)
            .ok_or_else(|| super::registry::no_domain(key))?;
        let live = entry.live.as_ref().map(|l| l.domain.clone());
        match (config, live) {
            (false, Some(l)) => (l, iface.to_string()),
            (_, live) => {
                let key = config_key(live.as_deref(), iface);
                let def = entry.config.clone().ok_or_else(|| {
                    Failure::conflict(format!(
                        "domain '{name}' is transient: it has no definition"
                    ))
                })?;
                (def, key)
            }
        }
    };
    let (domain, iface) = domain;
    let mut domain = (*domain).clone();
    let nic = find(&mut domain, &iface, &name)?;
    let b = nic.bandwidth.clone().unwrap_or_default();
    Ok(InterfaceBandwidth {
        inbound: b.inbound.as_ref().map(spec),
        outbound: b.outbound.as_ref().map(spec),
    })
}

/// One direction of a request as XML limits: `None` for average 0
/// (remove), checked as the domain XML would be.
fn limit(what: &str, r: &RateSpec) -> Result<Option<RateLimit>, Failure> {
    if r.average == 0 {
        return Ok(None);
    }
    let bad = |m: String| Err(Failure::bad_request(format!("{what}: {m}")));
    let max = virtxml::MAX_RATE_KIB;
    for (n, v) in [
        ("average", Some(r.average)),
        ("peak", r.peak),
        ("burst", r.burst),
        ("floor", r.floor),
    ] {
        if v.is_some_and(|v| v > max) {
            return bad(format!("{n} {} is over the maximum {max}", v.unwrap_or(0)));
        }
    }
    // 0 for an optional field means "not set", as virsh's positional list.
    let opt = |v: Option<u64>| v.filter(|&v| v != 0);
    let peak = opt(r.peak);
    if peak.is_some_and(|p| p < r.average) {
        return bad(format!(
            "peak {} is below average {}",
            peak.unwrap_or(0),
            r.average
        ));
    }
    Ok(Some(RateLimit {
        average: r.average,
        peak,
        burst: opt(r.burst),
        floor: opt(r.floor),
    }))
}

/// `bw` with the request's directions replaced.
fn merged(bw: Option<&Bandwidth>, req: &BandwidthRequest) -> Result<Option<Bandwidth>, Failure> {
    let mut b = bw.cloned().unwrap_or_default();
    if let Some(r) = &req.inbound {
        b.inbound = limit("inbound", r)?;
    }
    if let Some(r) = &req.outbound {
        b.outbound = limit("outbound", r)?;
    }
    Ok((!b.is_empty()).then_some(b))
}

/// `PUT /domains/{dom}/interfaces/{iface}/bandwidth`: new limits on the
/// running NIC (reshaped at once), its definition, or both.
pub(crate) async fn set_bandwidth(
    d: &Arc<Daemon>,
    key: &str,
    iface: &str,
    req: &BandwidthRequest,
) -> Result<(), Failure> {
    if req.inbound.is_none() && req.outbound.is_none() {
        return Err(Failure::bad_request(
            "give inbound or outbound limits to change",
        ));
    }
    let (s, do_live, do_config) = super::devices::subject(d, key, req.live, req.config).await?;
    let name = s.held.name.clone();
    // Both are checked before anything changes.
    let live_change = match (&s.live, do_live) {
        (Some(l), true) => {
            let mut new = (*l.domain).clone();
            let nic = find(&mut new, iface, &name)?;
            nic.bandwidth = merged(nic.bandwidth.as_ref(), req)?;
            let port = nic.target.clone().ok_or_else(|| {
                Failure::driver(format!(
                    "domain '{name}': interface {iface} has no TAP to shape"
                ))
            })?;
            let shape = shaping_of(nic.bandwidth.as_ref());
            Some((new, port, shape, l.record.clone()))
        }
        _ => None,
    };
    let config_change = match (&s.config, do_config) {
        (Some(c), true) => {
            let mut new = (**c).clone();
            let key = config_key(s.live.as_ref().map(|l| &*l.domain), iface);
            let nic = find(&mut new, &key, &name)?;
            nic.bandwidth = merged(nic.bandwidth.as_ref(), req)?;
            Some(new)
        }
        _ => None,
    };
    if let Some((new, port, shape, record)) = live_change {
        let (n, p) = (name.clone(), port.clone());
        tokio::task::spawn_blocking(move || {
            if shape == PortShaping::default() {
                shaping::remove(&p)
            } else {
                shaping::apply(&p, &shape)
            }
            .map_err(|e| host_failure(&n, &p, e))
        })
        .await??;
        super::devices::commit_live(d, &s, new, record).await?;
    }
    if let Some(new) = config_change {
        super::devices::commit_config(d, &s, new).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(inbound: Option<RateSpec>, outbound: Option<RateSpec>) -> BandwidthRequest {
        BandwidthRequest {
            inbound,
            outbound,
            live: false,
            config: false,
        }
    }

    fn r(average: u64, peak: Option<u64>) -> RateSpec {
        RateSpec {
            average,
            peak,
            burst: None,
            floor: None,
        }
    }

    #[test]
    fn domiftune_merges_directions_and_zero_removes() {
        let b = merged(None, &req(Some(r(100, Some(200))), None))
            .unwrap()
            .unwrap();
        assert_eq!(b.inbound.unwrap().peak, Some(200));
        assert_eq!(b.outbound, None);
        let b = merged(Some(&b), &req(None, Some(r(50, None))))
            .unwrap()
            .unwrap();
        assert_eq!(b.inbound.unwrap().average, 100);
        assert_eq!(b.outbound.unwrap().average, 50);
        let b = merged(Some(&b), &req(Some(r(0, None)), None))
            .unwrap()
            .unwrap();
        assert_eq!(b.inbound, None);
        assert_eq!(
            merged(Some(&b), &req(None, Some(r(0, None)))).unwrap(),
            None
        );
    }

    #[test]
    fn bad_rates_are_one_line_each() {
        for bad in [r(10, Some(5)), r(u64::MAX, None)] {
            let e = merged(None, &req(Some(bad), None)).unwrap_err();
            assert_eq!(e.status.as_u16(), 400);
            assert!(e.message.starts_with("inbound: "), "{}", e.message);
        }
    }

    #[test]
    fn filters_map_to_their_checks() {
        assert_eq!(checks(NetFilter::CleanTraffic), Checks::CLEAN_TRAFFIC);
        assert!(checks(NetFilter::NoArpSpoofing).arp);
        assert!(!checks(NetFilter::NoArpSpoofing).ip);
        assert!(checks(NetFilter::AllowDhcp).dhcp);
    }
}
