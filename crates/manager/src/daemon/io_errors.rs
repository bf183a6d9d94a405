//! A running domain whose disks may stop the VM on an I/O error
//! (`error_policy='stop'` or `'enospace'`, `rerror_policy='stop'`): the
//! VMM pauses itself and holds the failed requests, and this watch makes
//! the domain `paused (ioerror)` with a `Suspended I/O Error` event, as
//! libvirt shows such a QEMU. `resume` then sends the held requests again.
//!
//! The VMM is asked (`Instance::io_error`) once a second; a domain with
//! no such disk is not asked at all.

use std::sync::Arc;
use std::time::Duration;

use virtxml::{DiskErrorPolicy, Domain, Uuid};

use super::ops::call;
use super::Daemon;
use crate::api::{DomainState, EventKind, StateReason};

/// How often a domain that can stop is asked.
const POLL: Duration = Duration::from_secs(1);

/// Whether a disk of `domain` may stop the VM.
pub(crate) fn may_stop(domain: &Domain) -> bool {
    let stops = |p: Option<DiskErrorPolicy>| {
        matches!(p, Some(DiskErrorPolicy::Stop | DiskErrorPolicy::Enospc))
    };
    domain
        .devices
        .disks
        .iter()
        .any(|d| stops(d.error_policy) || stops(d.rerror_policy))
}

/// Follows run `generation` of domain `name` until it ends.
pub(crate) fn watch(d: Arc<Daemon>, name: String, uuid: Uuid, generation: u64) {
    let runtime = d.runtime.clone();
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(POLL).await;
            let live = {
                let mut table = d.registry.lock();
                let Some(entry) = table.get_mut(&name, uuid) else {
                    return;
                };
                match entry.live.as_ref().filter(|l| l.generation == generation) {
                    None => return,
                    Some(l) if entry.state == DomainState::Running && may_stop(&l.domain) => {
                        l.instance.clone()
                    }
                    Some(_) => continue,
                }
            };
            let Ok(Some(why)) = call(live, |i| i.io_error()).await else {
                continue;
            };
            let paused = {
                let mut table = d.registry.lock();
                match table.get_mut(&name, uuid) {
                    Some(e)
                        if e.state == DomainState::Running
                            && e.live.as_ref().is_some_and(|l| l.generation == generation) =>
                    {
                        e.state = DomainState::Paused;
                        e.reason = StateReason::IoError;
                        true
                    }
                    _ => false,
                }
            };
            if paused {
                tracing::warn!("domain {name}: paused on an I/O error: {why}");
                d.events
                    .emit(&name, uuid, EventKind::Suspended, "I/O Error");
            }
        }
    });
}
