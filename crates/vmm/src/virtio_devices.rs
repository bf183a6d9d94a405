//! Creating the virtio devices a configuration asks for: opening disk
//! images, TAPs and console backends, and naming each device.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{CacheMode, DiskConfig, NetConfig};
use crate::error::{Error, Result};
use crate::io_stops::IoStops;
use crate::machine::PreparedVm;
use crate::pci_devices::{DeviceDescription, DeviceSource, PciDevices};

/// Open `disk`'s image with its options (format probed unless given,
/// image locked). Each image a VM uses is opened once, here, and kept
/// open (so locked) until the VM no longer has it: see [`PreparedVm`].
pub(crate) fn open_disk(disk: &DiskConfig) -> Result<Arc<dyn block::DiskImage>> {
    let options = block::OpenOptions {
        read_only: disk.readonly,
        direct: disk.cache == CacheMode::None,
        format: disk.format,
        ..block::OpenOptions::default()
    };
    let opened = match &disk.passed {
        Some(passed) => std::os::fd::AsFd::as_fd(passed)
            .try_clone_to_owned()
            .map_err(|e| block::Error::Open {
                path: disk.path.clone(),
                source: Box::new(block::Error::Io {
                    op: "dup",
                    source: e,
                }),
            })
            .and_then(|fd| block::open_file(std::fs::File::from(fd), &disk.path, &options)),
        None => block::open_with_secret(
            &disk.path,
            &options,
            disk.chap_secret.as_ref().map(|s| s.expose()),
        ),
    };
    let image = opened.map_err(|source| Error::Disk {
        path: disk.path.clone(),
        source,
    })?;
    // A network disk (iSCSI LUN, NFS file) is always raw and never probed.
    if disk.format.is_none() && !block::is_network(&disk.path) {
        let found = image.format();
        let raw_rule = if found == block::ImageFormat::Raw {
            "; the guest may not write an image header into its sector 0"
        } else {
            ""
        };
        tracing::warn!(
            "disk {}: format not given, probed as {found}{raw_rule}; probing trusts the image's contents, so pass format={found} (docs/security.md)",
            disk.path.display()
        );
    }
    Ok(image)
}

/// Put the configured virtio devices on the PCI bus, the disks on the
/// images `prepared` holds open.
pub(crate) fn add_virtio_devices(
    prepared: &PreparedVm,
    pci: &mut PciDevices,
    stops: Option<&Arc<IoStops>>,
) -> Result<()> {
    let config = prepared.config();
    for (i, (disk, image)) in prepared.disks().enumerate() {
        let id = disk.id.clone().unwrap_or_else(|| format!("disk{i}"));
        let io_cpus = config.io_cpus(disk);
        pci.add_virtio(disk_device(&id, disk, image.clone(), stops, io_cpus))?;
    }
    for (i, net) in config.nets.iter().enumerate() {
        let id = net.id.clone().unwrap_or_else(|| format!("net{i}"));
        pci.add_virtio(net_device(&id, net)?)?;
    }
    for (i, console) in config.consoles.iter().enumerate() {
        let device = crate::console_backend::create_console(console)?;
        let mut details = BTreeMap::new();
        details.insert("backend".to_string(), format!("{console:?}"));
        pci.add_virtio(NewDevice {
            device: Box::new(device),
            description: DeviceDescription::new(&format!("console{i}"), "virtio-console", details),
        })?;
    }
    if config.rng {
        pci.add_virtio(NewDevice {
            device: Box::new(virtio::rng::Rng::new()),
            description: DeviceDescription::new("rng", "virtio-rng", BTreeMap::new()),
        })?;
    }
    if let Some(balloon) = &config.balloon {
        pci.add_virtio(balloon_device(balloon, config.memory)?)?;
    }
    Ok(())
}

/// The balloon `balloon` asks for, in a VM of `memory` bytes.
fn balloon_device(balloon: &crate::balloon::BalloonConfig, memory: u64) -> Result<NewDevice> {
    let config = crate::balloon::device_config(balloon, memory)
        .map_err(|e| Error::InvalidConfig(format!("--balloon: {e}")))?;
    let device =
        virtio::balloon::Balloon::new(config).map_err(|e| Error::Host("balloon eventfd", e))?;
    let mut details = BTreeMap::new();
    details.insert(
        "deflate_on_oom".to_string(),
        balloon.deflate_on_oom.to_string(),
    );
    details.insert(
        "free_page_reporting".to_string(),
        balloon.free_page_reporting.to_string(),
    );
    let mut description = DeviceDescription::new("balloon", "virtio-balloon", details);
    description.balloon = Some(device.control());
    Ok(NewDevice {
        device: Box::new(device),
        description,
    })
}

/// A device ready for the PCI bus, and what the API says about it.
pub(crate) struct NewDevice {
    /// The device.
    pub device: Box<dyn virtio::VirtioDevice>,
    /// Its name, kind and facts.
    pub description: DeviceDescription,
}

/// A virtio-blk device called `id` over `image`, the open image `disk`
/// names, its threads on `io_cpus` when given (its I/O thread's pin).
/// Without `stops` (no one to resume the VM), a `stop` error policy
/// reports instead.
pub(crate) fn disk_device(
    id: &str,
    disk: &DiskConfig,
    image: Arc<dyn block::DiskImage>,
    stops: Option<&Arc<IoStops>>,
    io_cpus: Option<Arc<[usize]>>,
) -> NewDevice {
    let mut device = virtio::block::Block::new(virtio::block::BlockConfig {
        disk: image.clone(),
        serial: disk.serial.clone().unwrap_or_else(|| format!("vireo-{id}")),
        queues: disk.queues,
        io_workers: 0,
        error_policy: virtio::block::ErrorPolicy {
            write: disk.werror,
            read: disk.rerror,
        },
        on_stop: stops.map(|s| s.notifier(id)),
        limits: disk.limits,
    });
    device.set_io_cpus(io_cpus);
    let mut details = BTreeMap::new();
    details.insert("path".to_string(), disk.path.display().to_string());
    details.insert("format".to_string(), image.format().name().to_string());
    details.insert("size_bytes".to_string(), image.size().to_string());
    details.insert("readonly".to_string(), disk.readonly.to_string());
    let mut description = DeviceDescription::new(id, "virtio-blk", details);
    description.disk = Some(image);
    description.source = Some(DeviceSource::Disk(DiskConfig {
        id: Some(id.to_string()),
        ..disk.clone()
    }));
    NewDevice {
        device: Box::new(device),
        description,
    }
}

/// A virtio-net device on the TAP `net` names, called `id`. (`_config`
/// is no longer needed: a MAC left unset no longer derives from the
/// kernel's path, see [`crate::config::default_mac`].)
pub(crate) fn net_device(id: &str, net: &NetConfig) -> Result<NewDevice> {
    let (device, tap, mac) = create_net(id, net)?;
    let mut details = BTreeMap::new();
    details.insert("tap".to_string(), tap);
    details.insert("mac".to_string(), mac);
    let mut description = DeviceDescription::new(id, "virtio-net", details);
    description.source = Some(DeviceSource::Net(NetConfig {
        id: Some(id.to_string()),
        ..net.clone()
    }));
    Ok(NewDevice {
        device: Box::new(device),
        description,
    })
}

/// The card, its TAP's name and its MAC as text.
fn create_net(what: &str, net: &NetConfig) -> Result<(virtio::net::Net, String, String)> {
    let held: Vec<_> = net.held.iter().map(std::os::fd::AsFd::as_fd).collect();
    let tap = match (&net.passed, net.fd) {
        _ if !held.is_empty() => netvirt::Tap::from_fds(&held),
        (Some(passed), _) => netvirt::Tap::from_fd(std::os::fd::AsFd::as_fd(passed)),
        (None, Some(fd)) => inherited_tap(fd),
        (None, None) => netvirt::Tap::open(net.tap.as_deref(), usize::from(net.queues)),
    }
    .map_err(|e| Error::Net(format!("{what}: {e}")))?;
    let mac = net.mac.unwrap_or_else(|| crate::config::default_mac(what));
    let (tap_name, mac_text) = (tap.name().to_string(), virtio::net::format_mac(&mac));
    tracing::info!("{what}: TAP {tap_name} MAC {mac_text}");
    let device = virtio::net::Net::new(virtio::net::NetConfig {
        tap,
        mac,
        queue_pairs: net.queues,
        mtu: None,
    })
    .map_err(|e| Error::Net(format!("{what}: {e}")))?;
    Ok((device, tap_name, mac_text))
}

/// Open now the TAP of each card that names one (or asks for a new one),
/// every queue, and keep them as descriptors the card's every boot takes:
/// a VMM that enters a jail opens its TAPs before it can no longer reach
/// `/dev/net/tun` or make one.
pub fn hold_taps(nets: &mut [NetConfig]) -> Result<()> {
    for (i, net) in nets.iter_mut().enumerate() {
        if net.fd.is_some() || net.passed.is_some() || !net.held.is_empty() {
            continue;
        }
        let what = net.id.clone().unwrap_or_else(|| format!("net{i}"));
        let tap = netvirt::Tap::open(net.tap.as_deref(), usize::from(net.queues))
            .map_err(|e| Error::Net(format!("{what}: {e}")))?;
        net.held = tap
            .clone_queues()
            .map_err(|e| Error::Net(format!("{what}: {e}")))?
            .into_iter()
            .map(crate::passed_fd::PassedFd::new)
            .collect();
    }
    Ok(())
}

/// Checks each `fd=N` card's descriptor while it can only be one the
/// process inherited: called before the VMM opens anything of its own, so
/// that a number naming the VMM's own descriptors later (the KVM fd,
/// another card's TAP queue) is refused now instead of being taken over
/// at boot. Two cards cannot share one descriptor.
pub fn check_inherited_taps(nets: &[NetConfig]) -> Result<()> {
    let mut seen = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        let Some(fd) = net.fd else { continue };
        let what = net.id.clone().unwrap_or_else(|| format!("net{i}"));
        if seen.contains(&fd) {
            return Err(Error::Net(format!(
                "{what}: descriptor {fd} is already another card's TAP"
            )));
        }
        seen.push(fd);
        inherited_tap(fd).map_err(|e| Error::Net(format!("{what}: {e}")))?;
    }
    Ok(())
}

/// The TAP behind descriptor `fd`, inherited from whoever started this
/// process (`--net fd=N`). Each boot takes its own duplicate, so the
/// inherited descriptor stays open across reboots.
fn inherited_tap(fd: i32) -> std::result::Result<netvirt::Tap, netvirt::TapError> {
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with
    // EBADF when nothing is open at that number.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(netvirt::TapError::Open {
            name: format!("descriptor {fd}"),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the descriptor is open (checked above) and stays open for
    // the borrow: this process never closes a descriptor it inherited.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    netvirt::Tap::from_fd(borrowed)
}
