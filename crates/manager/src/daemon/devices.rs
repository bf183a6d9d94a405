//! Disks and NICs: `domblklist`, `domiflist`, attach and detach, on the
//! running domain (`live`), its definition (`config`), or both.

use std::sync::Arc;

use virtxml::{Domain, InterfaceKind, MacAddress};

use super::failure::Failure;
use super::lifecycle::not_running;
use super::ops::{call, hold, Held};
use super::registry::{disk_paths, driver_name, no_domain};
use super::Daemon;
use crate::api::{DeviceRequest, DiskRow, InterfaceRow};
use crate::driver::{Plugged, RunRecord, Unplug};

/// Which device family a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `disk`.
    Disk,
    /// `interface`.
    Interface,
}

impl Family {
    fn element(self) -> &'static str {
        match self {
            Family::Disk => "disk",
            Family::Interface => "interface",
        }
    }
}

/// `domblklist` rows of a definition.
pub(crate) fn disk_rows(domain: &Domain) -> Vec<DiskRow> {
    domain
        .devices
        .disks
        .iter()
        .map(|d| DiskRow {
            target: d.target.clone(),
            source: d.source.describe(),
            kind: d.source.kind().to_string(),
            device: "disk".to_string(),
        })
        .collect()
}

/// `domiflist` rows of a definition.
pub(crate) fn interface_rows(domain: &Domain) -> Vec<InterfaceRow> {
    domain
        .devices
        .interfaces
        .iter()
        .map(|i| {
            let (kind, source) = match &i.kind {
                InterfaceKind::Ethernet => ("ethernet", "-".to_string()),
                InterfaceKind::Bridge(b) => ("bridge", b.clone()),
                InterfaceKind::Network { network, .. } => ("network", network.clone()),
                InterfaceKind::Direct { dev, .. } => ("direct", dev.clone()),
            };
            InterfaceRow {
                interface: i.target.clone().unwrap_or_else(|| "-".to_string()),
                kind: kind.to_string(),
                source,
                model: "virtio".to_string(),
                mac: i.mac.to_string(),
            }
        })
        .collect()
}

/// `domain` with the device `xml` added: the whole definition is parsed
/// again, so every rule of a definition (unique targets, known elements)
/// holds, and it must differ from `domain` by that one device only.
fn with_device(domain: &Domain, family: Family, xml: &str) -> Result<Domain, Failure> {
    let text = domain.to_xml();
    let at = text
        .rfind("</devices>")
        .ok_or_else(|| Failure::internal("the definition has no <devices> element"))?;
    let combined = format!("{}{}\n{}", &text[..at], xml.trim(), &text[at..]);
    let new = Domain::parse(&combined)
        .map_err(|e| Failure::unprocessable(e.to_string()))?
        .domain;
    let mut without = new.clone();
    // The running definition's volumes carry the paths found for them,
    // which its XML does not: compare without them, and keep them.
    let mut plain = domain.clone();
    for disk in &mut plain.devices.disks {
        if let virtxml::DiskSource::Volume(v) = &mut disk.source {
            v.resolved = None;
        }
    }
    let mut new = new;
    super::disk_volumes::carry_resolved(domain, &mut new);
    let added = match family {
        Family::Disk => {
            let n = domain.devices.disks.len();
            (without.devices.disks.len() == n + 1).then(|| without.devices.disks.truncate(n))
        }
        Family::Interface => {
            let n = domain.devices.interfaces.len();
            (without.devices.interfaces.len() == n + 1)
                .then(|| without.devices.interfaces.truncate(n))
        }
    };
    if added.is_none() || without != plain {
        return Err(Failure::unprocessable(format!(
            "the device XML must be one <{}> element",
            family.element()
        )));
    }
    Ok(new)
}

/// [`with_device`] off the async thread (the whole definition is parsed),
/// then checked by the domain's driver as `define` checks a definition:
/// no definition the driver refuses is saved.
async fn parse_with_device(
    d: &Daemon,
    domain: &Arc<Domain>,
    family: Family,
    xml: &str,
) -> Result<Domain, Failure> {
    let (domain, xml) = (domain.clone(), xml.to_string());
    let driver = d.driver(driver_name(domain.driver));
    tokio::task::spawn_blocking(move || {
        let new = with_device(&domain, family, &xml)?;
        // Without its driver the domain cannot start either way; its
        // start says so.
        if let Some(driver) = driver {
            driver.validate(&new)?;
        }
        Ok(new)
    })
    .await?
}

/// Which of live and config a request changes: virsh's rule, where
/// neither means the running domain if it runs, else its definition.
fn targets(live: bool, config: bool, active: bool) -> (bool, bool) {
    if !live && !config {
        (active, !active)
    } else {
        (live, config)
    }
}

/// What a device change works on: the held domain's current state.
pub(super) struct Subject {
    pub(super) held: Held,
    pub(super) live: Option<super::registry::Live>,
    pub(super) config: Option<Arc<Domain>>,
}

pub(super) async fn subject(
    d: &Arc<Daemon>,
    key: &str,
    live: bool,
    config: bool,
) -> Result<(Subject, bool, bool), Failure> {
    let held = hold(d, key).await?;
    let (live_now, config_now) = {
        let table = d.registry.lock();
        let entry = table
            .domains
            .get(&held.name)
            .ok_or_else(|| no_domain(key))?;
        (entry.live.clone(), entry.config.clone())
    };
    let (do_live, do_config) = targets(live, config, live_now.is_some());
    if do_live && live_now.is_none() {
        return Err(not_running(&held.name));
    }
    if do_config && config_now.is_none() {
        return Err(Failure::conflict(format!(
            "domain '{}' is transient: it has no definition to change",
            held.name
        )));
    }
    Ok((
        Subject {
            held,
            live: live_now,
            config: config_now,
        },
        do_live,
        do_config,
    ))
}

/// Saves the new live definition of `s` in its run record and the table.
/// `record` is the instance's own after the change (its driver data may
/// have changed too: a TAP made for a bridge NIC).
pub(super) async fn commit_live(
    d: &Arc<Daemon>,
    s: &Subject,
    domain: Domain,
    mut record: RunRecord,
) -> Result<(), Failure> {
    let Some(live) = &s.live else {
        return Err(not_running(&s.held.name));
    };
    record.xml = domain.to_xml();
    let domain = Arc::new(domain);
    let disks = disk_paths(&domain).await;
    let (store_d, name, saved) = (d.clone(), s.held.name.clone(), record.clone());
    let ended = live.ended.clone();
    tokio::task::spawn_blocking(move || {
        store_d.store.save_record(&name, &saved)?;
        // The VMM ended meanwhile and its record was (or is about to be)
        // removed: this write must not bring it back.
        if ended.load(std::sync::atomic::Ordering::SeqCst) {
            store_d.store.remove_record(&name)?;
        }
        std::io::Result::Ok(())
    })
    .await?
    .map_err(Failure::storage)?;
    let mut table = d.registry.lock();
    if let Some(entry) = table.get_mut(&s.held.name, s.held.uuid) {
        if let Some(l) = entry
            .live
            .as_mut()
            .filter(|l| l.generation == live.generation)
        {
            l.domain = domain;
            l.record = record;
            l.disks = disks;
        }
    }
    Ok(())
}

/// Saves the new persistent definition of `s`.
pub(super) async fn commit_config(
    d: &Arc<Daemon>,
    s: &Subject,
    domain: Domain,
) -> Result<(), Failure> {
    let text = domain.to_xml();
    let (store_d, name) = (d.clone(), s.held.name.clone());
    tokio::task::spawn_blocking(move || store_d.store.save_definition(&name, &text))
        .await?
        .map_err(Failure::storage)?;
    if let Some(entry) = d.registry.lock().get_mut(&s.held.name, s.held.uuid) {
        entry.config = Some(Arc::new(domain));
    }
    Ok(())
}

/// `POST /domains/{dom}/disks` and `/interfaces`.
pub(crate) async fn attach(
    d: &Arc<Daemon>,
    key: &str,
    family: Family,
    req: &DeviceRequest,
) -> Result<(), Failure> {
    let (s, do_live, do_config) = subject(d, key, req.live, req.config).await?;
    // Both new definitions are checked before anything changes.
    let new_live = match (&s.live, do_live) {
        (Some(l), true) => Some(parse_with_device(d, &l.domain, family, &req.xml).await?),
        _ => None,
    };
    let new_config = match (&s.config, do_config) {
        (Some(c), true) => Some(parse_with_device(d, c, family, &req.xml).await?),
        _ => None,
    };
    if let (Some(mut new), Some(live)) = (new_live, &s.live) {
        let instance = live.instance.clone();
        let record = match family {
            Family::Disk => {
                let Some(mut disk) = new.devices.disks.pop() else {
                    return Err(Failure::internal("the new disk is missing"));
                };
                let (rd, rn) = (d.clone(), s.held.name.clone());
                let disk = tokio::task::spawn_blocking(move || {
                    super::disk_volumes::resolve_disk(&rd, &rn, &mut disk).map(|()| disk)
                })
                .await??;
                let chap = super::secrets::disk_credentials(d, &s.held.name, &disk)?;
                new.devices.disks.push(disk.clone());
                let paths = disk_paths(&Arc::new(new.clone())).await;
                let mine = paths.last().cloned().into_iter().collect::<Vec<_>>();
                if let Some((other, path)) = d.registry.lock().disk_conflict(&s.held.name, &mine) {
                    return Err(Failure::conflict(format!(
                        "disk {} is in use by running domain '{other}'",
                        path.display()
                    )));
                }
                super::leases::take_for(d, &s.held.name, s.held.uuid, mine).await?;
                let attached = call(instance, move |i| {
                    i.attach_disk(&disk, chap.as_ref())?;
                    Ok(i.record())
                })
                .await;
                match attached {
                    Ok(record) => record,
                    Err(e) => {
                        super::leases::settle(d, &s.held.name, s.held.uuid).await;
                        return Err(e);
                    }
                }
            }
            Family::Interface => {
                let Some(iface) = new.devices.interfaces.last_mut() else {
                    return Err(Failure::internal("the new interface is missing"));
                };
                super::networks::plug_interface(d, &s.held.name, iface)?;
                let plugged = iface.clone();
                let record = call(instance.clone(), move |i| {
                    i.attach_interface(&plugged)?;
                    Ok(i.record())
                })
                .await?;
                let ported =
                    super::port_policy::on_attach(d, &s.held.name, iface.clone(), &record.xml)
                        .await;
                let tap = match ported {
                    Ok(tap) => tap,
                    Err(e) => {
                        // A NIC its filter or limits could not be set on
                        // does not stay.
                        let mac = iface.mac;
                        let _ = call(instance, move |i| i.detach_interface(&mac)).await;
                        return Err(e);
                    }
                };
                if iface.target.is_none() {
                    iface.target = tap;
                }
                record
            }
        };
        let committed = commit_live(d, &s, new, record).await;
        // A disk that failed to commit is not in the live disks: its
        // lease goes; a committed one stays.
        super::leases::settle(d, &s.held.name, s.held.uuid).await;
        committed?;
    }
    if let Some(new) = new_config {
        commit_config(d, &s, new).await?;
    }
    Ok(())
}

/// `DELETE /domains/{dom}/disks/{target}` and `/interfaces/{mac}`.
pub(crate) async fn detach(
    d: &Arc<Daemon>,
    key: &str,
    family: Family,
    id: &str,
    live: bool,
    config: bool,
) -> Result<(), Failure> {
    let mac = match family {
        // No NIC can have what is not a (unicast) MAC address.
        Family::Interface => Some(MacAddress::parse(id).map_err(|e| {
            Failure::not_found(format!(
                "domain '{}' has no such interface: {e}",
                key.escape_debug()
            ))
        })?),
        Family::Disk => None,
    };
    let (s, do_live, do_config) = subject(d, key, live, config).await?;
    let without = |domain: &Domain| -> Result<Domain, Failure> {
        let mut new = domain.clone();
        let found = match mac {
            Some(mac) => {
                let n = new.devices.interfaces.len();
                new.devices.interfaces.retain(|i| i.mac != mac);
                n != new.devices.interfaces.len()
            }
            None => {
                let n = new.devices.disks.len();
                new.devices.disks.retain(|disk| disk.target != id);
                n != new.devices.disks.len()
            }
        };
        if !found {
            return Err(Failure::not_found(format!(
                "domain '{}' has no {} '{}'",
                s.held.name,
                family.element(),
                id.escape_debug()
            )));
        }
        Ok(new)
    };
    let new_live = match (&s.live, do_live) {
        (Some(l), true) => Some(without(&l.domain)?),
        _ => None,
    };
    let new_config = match (&s.config, do_config) {
        (Some(c), true) => Some(without(c)?),
        _ => None,
    };
    if let (Some(new), Some(live)) = (new_live, &s.live) {
        let instance = live.instance.clone();
        let device = match mac {
            Some(mac) => Plugged::Interface(mac),
            None => Plugged::Disk(id.to_string()),
        };
        let asked = device.clone();
        let (unplug, record) = call(instance, move |i| {
            let unplug = match &asked {
                Plugged::Interface(mac) => i.detach_interface(mac)?,
                Plugged::Disk(target) => i.detach_disk(target)?,
            };
            Ok((unplug, i.record()))
        })
        .await?;
        match unplug {
            Unplug::Done => {
                let gone = mac
                    .and_then(|m| live.domain.devices.interfaces.iter().find(|i| i.mac == m))
                    .cloned();
                let committed = commit_live(d, &s, new, record).await;
                super::leases::settle(d, &s.held.name, s.held.uuid).await;
                if let Some(iface) = gone {
                    super::port_policy::on_detach(&s.held.name, iface).await;
                }
                committed?;
            }
            // The guest still has it: so does the live XML, until it lets go.
            Unplug::Pending => {
                tracing::info!(
                    "domain {}: the guest has not released {} '{id}' yet",
                    s.held.name,
                    family.element()
                );
                watch_unplug(d.clone(), &s, live.generation, device);
            }
        }
    }
    if let Some(new) = new_config {
        commit_config(d, &s, new).await?;
    }
    Ok(())
}

/// How often a pending unplug is checked on.
const UNPLUG_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Follows a pending unplug of `device` from `s`'s run `generation`: once
/// the guest releases it, the live definition loses it. Ends with that
/// run.
fn watch_unplug(d: Arc<Daemon>, s: &Subject, generation: u64, device: Plugged) {
    let (name, uuid) = (s.held.name.clone(), s.held.uuid);
    let instance = move |d: &Daemon| {
        let mut table = d.registry.lock();
        table
            .get_mut(&name, uuid)
            .and_then(|e| e.live.as_ref())
            .filter(|l| l.generation == generation)
            .cloned()
    };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UNPLUG_POLL).await;
            let Some(live) = instance(&d) else { return };
            let asked = device.clone();
            match call(live.instance.clone(), move |i| i.unplug_finished(&asked)).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!("following an unplug: {}", e.message);
                    return;
                }
            }
        }
        let Some(live) = instance(&d) else { return };
        let Ok(held) = hold(&d, &live.domain.name).await else {
            return;
        };
        // Read again under the domain's lock: the run may have changed.
        let Some(live) = instance(&d) else { return };
        let mut new = (*live.domain).clone();
        let gone = match &device {
            Plugged::Interface(mac) => new
                .devices
                .interfaces
                .iter()
                .find(|i| i.mac == *mac)
                .cloned(),
            Plugged::Disk(_) => None,
        };
        let before = (new.devices.disks.len(), new.devices.interfaces.len());
        match &device {
            Plugged::Disk(t) => new.devices.disks.retain(|disk| disk.target != *t),
            Plugged::Interface(mac) => new.devices.interfaces.retain(|i| i.mac != *mac),
        }
        if before == (new.devices.disks.len(), new.devices.interfaces.len()) {
            return;
        }
        let Ok(record) = call(live.instance.clone(), |i| Ok(i.record())).await else {
            return;
        };
        let s = Subject {
            held,
            live: Some(live),
            config: None,
        };
        if let Err(e) = commit_live(&d, &s, new, record).await {
            tracing::warn!("domain {}: saving an unplug: {}", s.held.name, e.message);
        }
        super::leases::settle(&d, &s.held.name, s.held.uuid).await;
        // The card's port filter and shaping go with it.
        if let Some(iface) = gone {
            super::port_policy::on_detach(&s.held.name, iface).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> Domain {
        Domain::parse(
            "<domain type='kvm'><name>a</name><memory>1024</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os><devices>\
             <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/img/a'/><target dev='vda' bus='virtio'/></disk>\
             </devices></domain>",
        )
        .unwrap()
        .domain
    }

    const DISK_B: &str = "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
                          <source file='/img/b'/><target dev='vdb' bus='virtio'/></disk>";

    #[test]
    fn one_device_is_added_and_nothing_else() {
        let d = domain();
        let new = with_device(&d, Family::Disk, DISK_B).unwrap();
        assert_eq!(new.devices.disks.len(), 2);
        assert_eq!(new.devices.disks[1].target, "vdb");
        assert_eq!(disk_rows(&new)[1].source, "/img/b");

        // The same target twice, two disks, an interface given as a disk,
        // and an attempt to smuggle in another element all fail.
        let dup = DISK_B.replace("vdb", "vda");
        assert!(with_device(&d, Family::Disk, &dup).is_err());
        let two = format!("{DISK_B}{}", DISK_B.replace("vdb", "vdc"));
        assert!(with_device(&d, Family::Disk, &two).is_err());
        let nic =
            "<interface type='ethernet'><target dev='tap0'/><model type='virtio'/></interface>";
        assert!(with_device(&d, Family::Disk, nic).is_err());
        let new = with_device(&d, Family::Interface, nic).unwrap();
        assert_eq!(interface_rows(&new)[0].interface, "tap0");
        let smuggle = format!("{DISK_B}</devices><on_crash>restart</on_crash><devices>");
        let e = with_device(&d, Family::Disk, &smuggle).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
    }

    #[test]
    fn virsh_default_targets() {
        assert_eq!(targets(false, false, true), (true, false));
        assert_eq!(targets(false, false, false), (false, true));
        assert_eq!(targets(true, true, false), (true, true));
    }
}
