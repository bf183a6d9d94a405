//! Virtual networks in the daemon: their definitions, which are active,
//! starting and stopping them through [`crate::network`], finding them
//! again after a restart, keeping their dnsmasq running, and plugging
//! domains' `type='network'` interfaces into their bridges.
//!
//! Every change of a network is serialized by one lock
//! ([`Networks::ops`]): networks are few and their changes rare, and the
//! checks between them (overlapping subnets, bridge names) need the whole
//! set to stand still. The table's own mutex is held only for quick reads
//! and writes, never across host work or an `.await`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use netvirt::dnsmasq::Dnsmasq;
use virtxml::{Domain, InterfaceKind, Network, Uuid};

use super::failure::Failure;
use super::store::Store;
use super::Daemon;
use crate::api::{DefineResponse, DhcpLease, NetworkSummary};
use crate::network::host::{self, NetworkError, NetworkRecord};
use crate::network::plan::{self, Plan};

/// An active network.
pub(crate) struct LiveNet {
    /// The definition it runs with.
    pub network: Arc<Network>,
    /// What it made.
    pub record: NetworkRecord,
    /// Its DHCP/DNS server, when it has one.
    pub dnsmasq: Option<Dnsmasq>,
}

/// One network.
pub(crate) struct NetEntry {
    /// Its UUID.
    pub uuid: Uuid,
    /// The persistent definition; `None` for a transient network.
    pub config: Option<Arc<Network>>,
    /// Whether it starts with the daemon.
    pub autostart: bool,
    /// Set while it is active.
    pub live: Option<LiveNet>,
}

impl NetEntry {
    fn current(&self) -> Option<&Arc<Network>> {
        self.live
            .as_ref()
            .map(|l| &l.network)
            .or(self.config.as_ref())
    }

    fn summary(&self, name: &str) -> NetworkSummary {
        NetworkSummary {
            name: name.to_string(),
            uuid: self.uuid.to_string(),
            active: self.live.is_some(),
            persistent: self.config.is_some(),
            autostart: self.autostart,
            bridge: match &self.live {
                Some(l) => Some(l.record.bridge.clone()),
                None => self
                    .current()
                    .and_then(|n| n.bridge.as_ref())
                    .and_then(|b| b.name.clone()),
            },
        }
    }
}

/// The networks, their store and their lock.
pub(crate) struct Networks {
    /// `STATE/network`.
    pub store: Store,
    table: Mutex<BTreeMap<String, NetEntry>>,
    /// Serializes every change of every network.
    pub ops: tokio::sync::Mutex<()>,
}

/// How often a network's dnsmasq is checked on.
const SUPERVISE_EVERY: Duration = Duration::from_secs(2);

impl Networks {
    /// Opens the networks' store under the state directory.
    pub fn open(state_dir: &std::path::Path) -> std::io::Result<Networks> {
        Ok(Networks {
            store: Store::open_networks(state_dir)?,
            table: Mutex::default(),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    /// The table, for quick reads and writes.
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, NetEntry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bridge of the active network `name`, for a domain's interface.
    pub fn bridge_of(&self, name: &str) -> Result<String, Failure> {
        let table = self.lock();
        let entry = table
            .get(name)
            .ok_or_else(|| Failure::unprocessable(format!("network '{name}' does not exist")))?;
        entry
            .live
            .as_ref()
            .map(|l| l.record.bridge.clone())
            .ok_or_else(|| Failure::conflict(format!("network '{name}' is not active")))
    }
}

/// The network `key` names (its name, else its UUID).
fn find(table: &BTreeMap<String, NetEntry>, key: &str) -> Option<String> {
    if table.contains_key(key) {
        return Some(key.to_string());
    }
    let uuid = Uuid::parse(key).ok()?;
    table
        .iter()
        .find(|(_, e)| e.uuid == uuid)
        .map(|(n, _)| n.clone())
}

fn no_network(key: &str) -> Failure {
    Failure::not_found(format!(
        "Network not found: no network with matching name '{key}'"
    ))
}

fn lookup(d: &Daemon, key: &str) -> Result<String, Failure> {
    find(&d.networks.lock(), key).ok_or_else(|| no_network(key))
}

fn host_failure(e: NetworkError) -> Failure {
    match e {
        NetworkError::Host(m) => Failure::unprocessable(m),
        other => Failure::driver(other.to_string()),
    }
}

/// `GET /networks`.
pub(crate) fn list(d: &Daemon, active: bool, inactive: bool) -> Vec<NetworkSummary> {
    d.networks
        .lock()
        .iter()
        .filter(|(_, e)| if e.live.is_some() { active } else { inactive })
        .map(|(n, e)| e.summary(n))
        .collect()
}

/// `GET /networks/{net}`.
pub(crate) fn info(d: &Daemon, key: &str) -> Result<NetworkSummary, Failure> {
    let table = d.networks.lock();
    let name = find(&table, key).ok_or_else(|| no_network(key))?;
    Ok(table[&name].summary(&name))
}

/// `GET /networks/{net}/xml`.
pub(crate) fn xml(d: &Daemon, key: &str, inactive: bool) -> Result<String, Failure> {
    let table = d.networks.lock();
    let name = find(&table, key).ok_or_else(|| no_network(key))?;
    let entry = &table[&name];
    let net = if inactive {
        entry.config.as_ref().or(entry.current())
    } else {
        entry.current()
    };
    net.map(|n| n.to_xml()).ok_or_else(|| no_network(key))
}

/// Parses a definition off the async thread and fills in what the host
/// chooses (a bridge name, a MAC), avoiding the bridges of `d`'s other
/// networks and the host's interfaces.
async fn parse_and_complete(d: &Daemon, xml: &str) -> Result<(Network, Vec<String>), Failure> {
    let xml = xml.to_string();
    let (mut net, warnings, links) = tokio::task::spawn_blocking(move || {
        let parsed = Network::parse(&xml).map_err(|e| Failure::unprocessable(e.to_string()))?;
        // A failure to list links only loses the "not in use" check here;
        // start checks again.
        let links = netvirt::link::Netlink::open()
            .and_then(|mut nl| nl.links())
            .map(|l| l.into_iter().map(|l| l.name).collect::<Vec<_>>())
            .unwrap_or_default();
        Ok::<_, Failure>((
            parsed.network,
            parsed.warnings.iter().map(|w| w.to_string()).collect(),
            links,
        ))
    })
    .await??;
    let mut taken = links;
    {
        let table = d.networks.lock();
        for (other, e) in table.iter() {
            if *other == net.name {
                continue;
            }
            for n in [e.config.as_ref(), e.live.as_ref().map(|l| &l.network)]
                .into_iter()
                .flatten()
            {
                if let Some(b) = n.bridge.as_ref().and_then(|b| b.name.clone()) {
                    taken.push(b);
                }
            }
        }
        // A bridge name another network uses is refused, as libvirt does
        // (a bridge-mode network may share a host bridge with another).
        if let Some(b) = net.bridge.as_ref().and_then(|b| b.name.as_deref()) {
            let bridged =
                net.forward.as_ref().map(|f| f.mode) == Some(virtxml::ForwardMode::Bridge);
            if !bridged {
                for (other, e) in table.iter().filter(|(o, _)| **o != net.name) {
                    let uses = [e.config.as_ref(), e.live.as_ref().map(|l| &l.network)]
                        .into_iter()
                        .flatten()
                        .any(|n| n.bridge.as_ref().and_then(|x| x.name.as_deref()) == Some(b));
                    if uses {
                        return Err(Failure::unprocessable(format!(
                            "bridge name '{b}' is already in use by network '{other}'"
                        )));
                    }
                }
            }
        }
    }
    // The network's own bridge (when it is active) is no obstacle.
    if let Some(own) = d
        .networks
        .lock()
        .get(&net.name)
        .and_then(|e| e.live.as_ref())
    {
        taken.retain(|t| *t != own.record.bridge);
    }
    crate::network::complete(&mut net, &taken).map_err(Failure::unprocessable)?;
    Ok((net, warnings))
}

/// Refuses a second network with this name or UUID.
fn check_identity(
    table: &BTreeMap<String, NetEntry>,
    name: &str,
    uuid: Uuid,
) -> Result<bool, Failure> {
    if let Some(e) = table.get(name) {
        if e.uuid != uuid {
            return Err(Failure::unprocessable(format!(
                "network '{name}' already exists with uuid {}",
                e.uuid
            )));
        }
        return Ok(true);
    }
    if let Some((other, _)) = table.iter().find(|(_, e)| e.uuid == uuid) {
        return Err(Failure::unprocessable(format!(
            "network '{other}' is already defined with uuid {uuid}"
        )));
    }
    Ok(false)
}

/// `POST /networks`: net-define.
pub(crate) async fn define(d: &Arc<Daemon>, xml: &str) -> Result<DefineResponse, Failure> {
    let _ops = d.networks.ops.lock().await;
    let (net, warnings) = parse_and_complete(d, xml).await?;
    let (name, uuid) = (net.name.clone(), net.uuid);
    let existing = check_identity(&d.networks.lock(), &name, uuid)?;
    let text = net.to_xml();
    let (store_d, store_name) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || store_d.networks.store.save_definition(&store_name, &text))
        .await?
        .map_err(Failure::storage)?;
    let net = Arc::new(net);
    {
        let mut table = d.networks.lock();
        match table.get_mut(&name) {
            Some(e) => e.config = Some(net),
            None => {
                table.insert(
                    name.clone(),
                    NetEntry {
                        uuid,
                        config: Some(net),
                        autostart: false,
                        live: None,
                    },
                );
            }
        }
    }
    Ok(DefineResponse {
        name,
        uuid: uuid.to_string(),
        warnings,
        updated: existing,
    })
}

/// `POST /networks/create`: net-create, a transient network started now.
pub(crate) async fn create(d: &Arc<Daemon>, xml: &str) -> Result<DefineResponse, Failure> {
    let _ops = d.networks.ops.lock().await;
    let (net, warnings) = parse_and_complete(d, xml).await?;
    let (name, uuid) = (net.name.clone(), net.uuid);
    if check_identity(&d.networks.lock(), &name, uuid)? {
        return Err(Failure::unprocessable(format!(
            "network '{name}' already exists"
        )));
    }
    d.networks.lock().insert(
        name.clone(),
        NetEntry {
            uuid,
            config: None,
            autostart: false,
            live: None,
        },
    );
    if let Err(e) = start_locked(d, &name, Arc::new(net)).await {
        d.networks.lock().remove(&name);
        return Err(e);
    }
    Ok(DefineResponse {
        name,
        uuid: uuid.to_string(),
        warnings,
        updated: false,
    })
}

/// `DELETE /networks/{net}`: net-undefine. An active network lives on as
/// a transient one, as libvirt's does.
pub(crate) async fn undefine(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.networks.ops.lock().await;
    let name = lookup(d, key)?;
    if d.networks.lock()[&name].config.is_none() {
        return Err(Failure::conflict(format!(
            "network '{name}' is transient: there is no definition to undefine"
        )));
    }
    let (store_d, store_name) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || store_d.networks.store.remove_definition(&store_name))
        .await?
        .map_err(Failure::storage)?;
    let mut table = d.networks.lock();
    if let Some(e) = table.get_mut(&name) {
        e.config = None;
        e.autostart = false;
        if e.live.is_none() {
            table.remove(&name);
        }
    }
    Ok(())
}

/// `PUT /networks/{net}/autostart`.
pub(crate) async fn set_autostart(d: &Arc<Daemon>, key: &str, on: bool) -> Result<(), Failure> {
    let _ops = d.networks.ops.lock().await;
    let name = lookup(d, key)?;
    if d.networks.lock()[&name].config.is_none() {
        return Err(Failure::conflict(format!(
            "cannot set autostart for transient network '{name}'"
        )));
    }
    let (store_d, store_name) = (d.clone(), name.clone());
    tokio::task::spawn_blocking(move || store_d.networks.store.set_autostart(&store_name, on))
        .await?
        .map_err(Failure::storage)?;
    if let Some(e) = d.networks.lock().get_mut(&name) {
        e.autostart = on;
    }
    Ok(())
}

/// `POST /networks/{net}/start`.
pub(crate) async fn start(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.networks.ops.lock().await;
    let name = lookup(d, key)?;
    let net = {
        let table = d.networks.lock();
        let e = &table[&name];
        if e.live.is_some() {
            return Err(Failure::conflict(format!(
                "network '{name}' is already active"
            )));
        }
        e.config.clone().ok_or_else(|| no_network(key))?
    };
    start_locked(d, &name, net).await
}

/// Subnets of the active networks other than `name`, for the overlap
/// check.
fn active_subnets(d: &Daemon, name: &str) -> Vec<(String, std::net::IpAddr, u8)> {
    d.networks
        .lock()
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .filter_map(|(n, e)| e.live.as_ref().map(|l| (n, l)))
        .flat_map(|(n, l)| {
            l.network
                .ips
                .iter()
                .map(|ip| (n.clone(), ip.address, ip.prefix))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Starts `net` (the network `name`'s definition) with the ops lock held.
async fn start_locked(d: &Arc<Daemon>, name: &str, net: Arc<Network>) -> Result<(), Failure> {
    let dir = d.networks.store.private_dir(name);
    let plan = plan::plan(&net, &dir).map_err(|e| Failure::unprocessable(e.to_string()))?;
    let others = active_subnets(d, name);
    for ip in &net.ips {
        if let Some((other, a, p)) = others
            .iter()
            .find(|(_, a, p)| plan::overlaps((ip.address, ip.prefix), (*a, *p)))
        {
            return Err(Failure::unprocessable(format!(
                "network '{name}': subnet {}/{} overlaps {a}/{p} of active network '{other}'",
                ip.address, ip.prefix
            )));
        }
    }
    let xml = net.to_xml();
    let (start_d, start_name) = (d.clone(), name.to_string());
    let started = tokio::task::spawn_blocking(move || {
        check_host_overlap(&plan, &net)?;
        if plan.dnsmasq.is_some() {
            make_private_dir(&plan)?;
        }
        let started = host::start(&plan, &xml).map_err(host_failure)?;
        if let Err(e) = start_d
            .networks
            .store
            .save_record(&start_name, &started.record)
        {
            // Without its record a later daemon could not find what the
            // network made: take it down.
            let _ = host::stop(&start_name, &started.record, started.dnsmasq, &dir);
            return Err(Failure::storage(e));
        }
        Ok((net, started))
    })
    .await??;
    let (net, started) = started;
    if let Some(e) = d.networks.lock().get_mut(name) {
        e.live = Some(LiveNet {
            network: net,
            record: started.record,
            dnsmasq: started.dnsmasq,
        });
    }
    tracing::info!("network '{name}' started");
    Ok(())
}

/// Refuses a subnet that an address on a host interface already covers,
/// as libvirt does ("network is already in use by interface eth0").
fn check_host_overlap(plan: &Plan, net: &Network) -> Result<(), Failure> {
    if net.ips.is_empty() {
        return Ok(());
    }
    let used = host::host_subnets(&[plan.bridge.name()]).map_err(host_failure)?;
    for ip in &net.ips {
        if let Some((dev, a, p)) = used
            .iter()
            .find(|(_, a, p)| plan::overlaps((ip.address, ip.prefix), (*a, *p)))
        {
            return Err(Failure::unprocessable(format!(
                "network '{}': subnet {}/{} is already in use by interface {dev} ({a}/{p})",
                net.name, ip.address, ip.prefix
            )));
        }
    }
    Ok(())
}

fn make_private_dir(plan: &Plan) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(cfg) = &plan.dnsmasq else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.dir)
        .map_err(|e| Failure::internal(format!("{}: {e}", cfg.dir.display())))
}

/// The running domains plugged into the network `name`.
fn users(d: &Daemon, name: &str) -> Vec<String> {
    let table = d.registry.lock();
    table
        .domains
        .iter()
        .filter(|(_, e)| {
            e.live
                .as_ref()
                .is_some_and(|l| uses_network(&l.domain, name))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

fn uses_network(domain: &Domain, name: &str) -> bool {
    domain
        .devices
        .interfaces
        .iter()
        .any(|i| matches!(&i.kind, InterfaceKind::Network { network, .. } if network == name))
}

/// `POST /networks/{net}/destroy`.
pub(crate) async fn destroy(d: &Arc<Daemon>, key: &str, force: bool) -> Result<(), Failure> {
    let _ops = d.networks.ops.lock().await;
    let name = lookup(d, key)?;
    let users = users(d, &name);
    if !users.is_empty() && !force {
        return Err(Failure::conflict(format!(
            "network '{name}' is in use by running domain(s) {}: destroy them first, or use --force",
            users.join(", ")
        )));
    }
    let live = {
        let mut table = d.networks.lock();
        let e = table.get_mut(&name).ok_or_else(|| no_network(key))?;
        e.live
            .take()
            .ok_or_else(|| Failure::conflict(format!("network '{name}' is not active")))?
    };
    let dir = d.networks.store.private_dir(&name);
    let (stop_d, stop_name) = (d.clone(), name.clone());
    let result = tokio::task::spawn_blocking(move || {
        let stopped = host::stop(&stop_name, &live.record, live.dnsmasq, &dir);
        let removed = stop_d.networks.store.remove_record(&stop_name);
        stopped.map_err(host_failure)?;
        removed.map_err(Failure::storage)
    })
    .await?;
    {
        let mut table = d.networks.lock();
        if table.get(&name).is_some_and(|e| e.config.is_none()) {
            table.remove(&name);
        }
    }
    tracing::info!("network '{name}' destroyed");
    result
}

/// `GET /networks/{net}/leases`.
pub(crate) async fn leases(
    d: &Arc<Daemon>,
    key: &str,
    mac: Option<&str>,
) -> Result<Vec<DhcpLease>, Failure> {
    let name = lookup(d, key)?;
    let net = {
        let table = d.networks.lock();
        let e = table.get(&name).ok_or_else(|| no_network(key))?;
        e.live
            .as_ref()
            .map(|l| l.network.clone())
            .ok_or_else(|| Failure::conflict(format!("network '{name}' is not active")))?
    };
    let dir = d.networks.store.private_dir(&name);
    let leases = tokio::task::spawn_blocking(move || netvirt::dnsmasq::leases(&dir))
        .await?
        .map_err(|e| Failure::driver(e.to_string()))?;
    let want = match mac {
        Some(m) => Some(
            virtxml::MacAddress::parse(m)
                .map_err(|e| Failure::bad_request(format!("mac: {e}")))?
                .0,
        ),
        None => None,
    };
    Ok(leases
        .into_iter()
        .filter(|l| want.is_none_or(|w| w == l.mac))
        .map(|l| {
            let prefix = net
                .ips
                .iter()
                .find(|ip| ip.contains(l.ip))
                .map_or(if l.ip.is_ipv4() { 32 } else { 128 }, |ip| ip.prefix);
            DhcpLease {
                expiry: l.expiry,
                mac: virtxml::MacAddress(l.mac).to_string(),
                protocol: if l.ip.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
                address: l.ip.to_string(),
                prefix,
                hostname: l.hostname,
                client_id: l.client_id,
            }
        })
        .collect())
}

/// Gives each `type='network'` interface of `domain` its network's
/// bridge, for a start or an attach: the network must be active.
pub(crate) fn plug(d: &Daemon, domain: &Domain) -> Result<Domain, Failure> {
    let mut out = domain.clone();
    for iface in &mut out.devices.interfaces {
        plug_interface(d, &domain.name, iface)?;
    }
    Ok(out)
}

/// [`plug`] for one interface.
pub(crate) fn plug_interface(
    d: &Daemon,
    domain: &str,
    iface: &mut virtxml::Interface,
) -> Result<(), Failure> {
    if let InterfaceKind::Network { network, bridge } = &mut iface.kind {
        let b = d.networks.bridge_of(network).map_err(|e| Failure {
            status: e.status,
            message: format!("domain '{domain}': {}", e.message),
        })?;
        *bridge = Some(b);
    }
    Ok(())
}

/// Reads the networks' definitions and records, finds the active networks
/// again (a bridge that is gone means the network is: what is left of it
/// is removed), and restarts a dnsmasq that died with the daemon away.
pub(crate) async fn load(d: &Arc<Daemon>) -> std::io::Result<()> {
    let load_d = d.clone();
    let entries = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let s = &load_d.networks.store;
        let definitions = s.definitions()?;
        let autostart = s.autostart_names()?;
        let records: BTreeMap<String, NetworkRecord> = s.records()?;
        let mut entries = BTreeMap::new();
        for (file_name, xml) in definitions {
            match Network::parse(&xml) {
                Ok(p) if p.network.name == file_name => {
                    entries.insert(
                        file_name.clone(),
                        NetEntry {
                            uuid: p.network.uuid,
                            config: Some(Arc::new(p.network)),
                            autostart: autostart.contains(&file_name),
                            live: None,
                        },
                    );
                }
                Ok(p) => tracing::error!(
                    "network definition file of '{file_name}' names network '{}'; skipped",
                    p.network.name
                ),
                Err(e) => {
                    tracing::error!("network definition of '{file_name}' does not parse ({e}); skipped")
                }
            }
        }
        for (name, record) in records {
            let dir = s.private_dir(&name);
            let live_net = match Network::parse(&record.xml) {
                Ok(p) => p.network,
                Err(e) => {
                    tracing::error!("run record of network '{name}' does not parse ({e}); taking down what it names");
                    let _ = host::stop(&name, &record, None, &dir);
                    let _ = s.remove_record(&name);
                    continue;
                }
            };
            if !host::bridge_exists(&record).unwrap_or(false) {
                tracing::warn!(
                    "network '{name}' lost its bridge {} while the daemon was away; now inactive",
                    record.bridge
                );
                let _ = host::stop(&name, &record, None, &dir);
                let _ = s.remove_record(&name);
                continue;
            }
            let dnsmasq = if record.dnsmasq {
                adopt_or_restart(&name, &live_net, &dir)
            } else {
                None
            };
            let entry = entries.entry(name.clone()).or_insert_with(|| NetEntry {
                uuid: live_net.uuid,
                config: None,
                autostart: false,
                live: None,
            });
            tracing::info!("network '{name}' is active (bridge {})", record.bridge);
            entry.live = Some(LiveNet {
                network: Arc::new(live_net),
                record,
                dnsmasq,
            });
        }
        Ok(entries)
    })
    .await
    .map_err(std::io::Error::other)??;
    *d.networks.lock() = entries;
    Ok(())
}

/// The dnsmasq of an active network: the one running, else a new one.
fn adopt_or_restart(name: &str, net: &Network, dir: &std::path::Path) -> Option<Dnsmasq> {
    match Dnsmasq::adopt(dir) {
        Ok(Some(running)) => return Some(running),
        Ok(None) => {}
        Err(e) => tracing::warn!("network '{name}': {e}"),
    }
    let cfg = plan::plan(net, dir).ok()?.dnsmasq?;
    match Dnsmasq::start(&cfg) {
        Ok(started) => {
            tracing::warn!("network '{name}': dnsmasq was not running; restarted");
            Some(started)
        }
        Err(e) => {
            tracing::error!("network '{name}': cannot restart dnsmasq: {e}");
            None
        }
    }
}

/// Starts the networks marked autostart (before the domains, which may
/// be plugged into them).
pub(crate) async fn autostart(d: &Arc<Daemon>) {
    let names: Vec<String> = d
        .networks
        .lock()
        .iter()
        .filter(|(_, e)| e.autostart && e.live.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    for name in names {
        match start(d, &name).await {
            Ok(()) => tracing::info!("autostarted network '{name}'"),
            Err(e) if e.status.as_u16() == 409 => {}
            Err(e) => tracing::error!("autostart of network '{name}' failed: {}", e.message),
        }
    }
}

/// Keeps every active network's dnsmasq running: one that died is
/// started again, as libvirt's is.
pub(crate) async fn supervise(d: Arc<Daemon>) {
    let mut tick = tokio::time::interval(SUPERVISE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ops = d.networks.ops.lock().await;
        let dead: Vec<(String, Arc<Network>)> = d
            .networks
            .lock()
            .iter()
            .filter_map(|(n, e)| e.live.as_ref().map(|l| (n, l)))
            .filter(|(_, l)| l.record.dnsmasq && !l.dnsmasq.as_ref().is_some_and(Dnsmasq::alive))
            .map(|(n, l)| (n.clone(), l.network.clone()))
            .collect();
        for (name, net) in dead {
            let dir: PathBuf = d.networks.store.private_dir(&name);
            let restarted = tokio::task::spawn_blocking({
                let name = name.clone();
                move || {
                    let cfg = plan::plan(&net, &dir).ok()?.dnsmasq?;
                    match Dnsmasq::start(&cfg) {
                        Ok(started) => Some(started),
                        Err(e) => {
                            tracing::error!("network '{name}': cannot restart dnsmasq: {e}");
                            None
                        }
                    }
                }
            })
            .await
            .ok()
            .flatten();
            if let Some(started) = restarted {
                tracing::warn!("network '{name}': dnsmasq had ended; restarted");
                if let Some(l) = d
                    .networks
                    .lock()
                    .get_mut(&name)
                    .and_then(|e| e.live.as_mut())
                {
                    l.dnsmasq = Some(started);
                }
            }
        }
        super::port_policy::refresh(&d).await;
    }
}

/// `POST /networks/{net}/update`: net-update of `ip-dhcp-host`, on the
/// running network (dnsmasq reloads its hosts), its definition, or both.
pub(crate) async fn update(
    d: &Arc<Daemon>,
    key: &str,
    req: &crate::api::NetworkUpdateRequest,
) -> Result<(), Failure> {
    if req.section != "ip-dhcp-host" {
        return Err(Failure::unprocessable(format!(
            "net-update section '{}' is not supported: only ip-dhcp-host",
            req.section
        )));
    }
    let op = match req.command.as_str() {
        "add" | "add-last" | "add-first" => HostOp::Add,
        "delete" => HostOp::Delete,
        "modify" => HostOp::Modify,
        other => {
            return Err(Failure::unprocessable(format!(
                "net-update command '{other}' is not supported: use add, delete or modify"
            )))
        }
    };
    let _ops = d.networks.ops.lock().await;
    let name = lookup(d, key)?;
    let (config, live) = {
        let table = d.networks.lock();
        let e = table.get(&name).ok_or_else(|| no_network(key))?;
        (e.config.clone(), e.live.as_ref().map(|l| l.network.clone()))
    };
    // virsh's default (neither flag) is the network's current state.
    let (on_live, on_config) = match (req.live, req.config) {
        (false, false) => (live.is_some(), live.is_none()),
        flags => flags,
    };
    if on_live && live.is_none() {
        return Err(Failure::conflict(format!("network '{name}' is not active")));
    }
    if on_config && config.is_none() {
        return Err(Failure::conflict(format!(
            "network '{name}' is transient: it has no definition to change"
        )));
    }
    let new_live = match (&live, on_live) {
        (Some(n), true) => Some(change_hosts(n, &req.xml, op)?),
        _ => None,
    };
    let new_config = match (&config, on_config) {
        (Some(n), true) => Some(change_hosts(n, &req.xml, op)?),
        _ => None,
    };
    if let Some(net) = new_live {
        let dir = d.networks.store.private_dir(&name);
        let (record, dnsmasq_pid) = {
            let table = d.networks.lock();
            let l = table
                .get(&name)
                .and_then(|e| e.live.as_ref())
                .ok_or_else(|| Failure::conflict(format!("network '{name}' is not active")))?;
            (l.record.clone(), l.dnsmasq.is_some())
        };
        let mut record = record;
        record.xml = net.to_xml();
        let (u_d, u_name, u_net, u_record) = (d.clone(), name.clone(), net.clone(), record.clone());
        tokio::task::spawn_blocking(move || {
            u_d.networks
                .store
                .save_record(&u_name, &u_record)
                .map_err(Failure::storage)?;
            if dnsmasq_pid {
                if let Some(cfg) = plan::plan(&u_net, &dir).ok().and_then(|p| p.dnsmasq) {
                    let table = u_d.networks.lock();
                    if let Some(running) = table
                        .get(&u_name)
                        .and_then(|e| e.live.as_ref())
                        .and_then(|l| l.dnsmasq.as_ref())
                    {
                        running
                            .reload(&cfg)
                            .map_err(|e| Failure::driver(e.to_string()))?;
                    }
                }
            }
            Ok::<_, Failure>(())
        })
        .await??;
        if let Some(l) = d
            .networks
            .lock()
            .get_mut(&name)
            .and_then(|e| e.live.as_mut())
        {
            l.network = Arc::new(net);
            l.record = record;
        }
    }
    if let Some(net) = new_config {
        let text = net.to_xml();
        let (s_d, s_name) = (d.clone(), name.clone());
        tokio::task::spawn_blocking(move || s_d.networks.store.save_definition(&s_name, &text))
            .await?
            .map_err(Failure::storage)?;
        if let Some(e) = d.networks.lock().get_mut(&name) {
            e.config = Some(Arc::new(net));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostOp {
    Add,
    Delete,
    Modify,
}

/// `net` with the DHCP host `xml` added, deleted or modified in its IPv4
/// address's DHCP service.
fn change_hosts(net: &Network, xml: &str, op: HostOp) -> Result<Network, Failure> {
    let mut out = net.clone();
    let ip = out
        .ips
        .iter_mut()
        .find(|ip| !ip.is_ipv6() && ip.dhcp.is_some())
        .ok_or_else(|| {
            Failure::unprocessable(format!(
                "network '{}' has no IPv4 DHCP service to update",
                net.name
            ))
        })?;
    let host = parse_dhcp_host(xml, ip.address, ip.prefix)?;
    let dhcp = ip
        .dhcp
        .as_mut()
        .ok_or_else(|| Failure::internal("no dhcp"))?;
    let same_client = |h: &virtxml::DhcpHost| {
        (host.mac.is_some() && h.mac == host.mac) || (host.mac.is_none() && h.name == host.name)
    };
    match op {
        HostOp::Add => {
            if let Some(h) = dhcp.hosts.iter().find(|h| {
                same_client(h) || h.ip == host.ip || (host.name.is_some() && h.name == host.name)
            }) {
                return Err(Failure::unprocessable(format!(
                    "there is an existing dhcp host entry in network '{}' that matches \"{}\"",
                    net.name,
                    describe(h)
                )));
            }
            dhcp.hosts.push(host);
        }
        HostOp::Delete => {
            let before = dhcp.hosts.len();
            dhcp.hosts.retain(|h| !(same_client(h) && h.ip == host.ip));
            if dhcp.hosts.len() == before {
                return Err(Failure::unprocessable(format!(
                    "couldn't locate a matching dhcp host entry in network '{}'",
                    net.name
                )));
            }
        }
        HostOp::Modify => {
            let slot = dhcp
                .hosts
                .iter_mut()
                .find(|h| same_client(h))
                .ok_or_else(|| {
                    Failure::unprocessable(format!(
                        "couldn't locate an existing dhcp host entry with \"{}\" in network '{}'",
                        describe(&host),
                        net.name
                    ))
                })?;
            *slot = host;
        }
    }
    Ok(out)
}

fn describe(h: &virtxml::DhcpHost) -> String {
    match (&h.mac, &h.name) {
        (Some(m), _) => format!("mac='{m}'"),
        (None, Some(n)) => format!("name='{n}'"),
        (None, None) => format!("ip='{}'", h.ip),
    }
}

/// Reads one `<host .../>` element with the network model's own rules (the
/// address must be in the subnet): it is parsed inside a network that has
/// only that subnet, and anything the text adds beyond one host is refused.
fn parse_dhcp_host(
    xml: &str,
    address: std::net::IpAddr,
    prefix: u8,
) -> Result<virtxml::DhcpHost, Failure> {
    let text = xml.trim();
    if !text.starts_with("<host") {
        return Err(Failure::unprocessable(
            "net-update ip-dhcp-host needs one <host .../> element",
        ));
    }
    let doc = format!(
        "<network><name>update</name><bridge name='update0'/>\
         <ip address='{address}' prefix='{prefix}'><dhcp>{text}</dhcp></ip></network>"
    );
    let parsed = Network::parse(&doc)
        .map_err(|e| Failure::unprocessable(format!("net-update: {e}")))?
        .network;
    let only_one = parsed.ips.len() == 1
        && parsed.forward.is_none()
        && parsed.dns.is_none()
        && parsed.kept.is_empty();
    let dhcp = parsed.ips.into_iter().next().and_then(|ip| ip.dhcp);
    match dhcp {
        Some(mut d)
            if only_one && d.ranges.is_empty() && d.kept.is_empty() && d.hosts.len() == 1 =>
        {
            Ok(d.hosts.remove(0))
        }
        _ => Err(Failure::unprocessable(
            "net-update ip-dhcp-host needs exactly one <host .../> element",
        )),
    }
}
