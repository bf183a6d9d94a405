//! `disk`: a virtio-blk disk backed by a file, a block device, a volume
//! of a storage pool, an iSCSI LUN or a file on an NFS export
//! (`type='network'`, in `network_disk`).

use crate::auth::{AuthPlace, ChapAuth};
use crate::error::Error;
use crate::node::{parse_number, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

pub use super::network_disk::{NetworkProtocol, NetworkSource, ISCSI_PORT};

/// Where a disk's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSource {
    /// `type='file'`, `source file=`.
    File(String),
    /// `type='block'`, `source dev=`.
    Block(String),
    /// `type='volume'`, `source pool= volume=`: found in the pool when the
    /// domain starts or the disk is plugged.
    Volume(VolumeSource),
    /// `type='network'`, `source protocol='iscsi' name='IQN/LUN'` or
    /// `protocol='nfs' name='EXPORT/PATH'` with one `host`: a LUN or a
    /// file the VMM reaches itself (no kernel initiator or client).
    Network(NetworkSource),
}

/// A disk that is a storage pool's volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSource {
    /// The pool's name.
    pub pool: String,
    /// The volume's name in the pool.
    pub volume: String,
    /// Where the volume is on the host, once the daemon looked it up; not
    /// written out (libvirt's definitions name only the pool and volume).
    pub resolved: Option<ResolvedVolume>,
}

/// The host side of a volume, as its pool reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVolume {
    /// Its path (a file, or a device node).
    pub path: String,
    /// Whether the path is a block device rather than a file.
    pub block: bool,
    /// The CHAP credentials of the volume's pool (an `iscsi-direct`
    /// pool with `<auth>`).
    pub auth: Option<crate::auth::ChapAuth>,
}

impl DiskSource {
    /// Where the disk's data is: a file or device's path, a volume's once
    /// resolved (`None` before), a network disk's `iscsi://` or `nfs://`
    /// URL.
    pub fn host_path(&self) -> Option<&str> {
        match self {
            DiskSource::File(p) | DiskSource::Block(p) => Some(p),
            DiskSource::Volume(v) => v.resolved.as_ref().map(|r| r.path.as_str()),
            DiskSource::Network(n) => Some(&n.url),
        }
    }

    /// The CHAP credentials the VMM logs in with: a network disk's
    /// `<auth>`, or a resolved volume's pool's.
    pub fn chap(&self) -> Option<&crate::auth::ChapAuth> {
        match self {
            DiskSource::Network(n) => n.auth.as_ref(),
            DiskSource::Volume(v) => v.resolved.as_ref().and_then(|r| r.auth.as_ref()),
            DiskSource::File(_) | DiskSource::Block(_) => None,
        }
    }

    /// Whether the host path is a block device (a resolved volume's says).
    pub fn is_block(&self) -> bool {
        match self {
            DiskSource::File(_) | DiskSource::Network(_) => false,
            DiskSource::Block(_) => true,
            DiskSource::Volume(v) => v.resolved.as_ref().is_some_and(|r| r.block),
        }
    }

    /// Whether the data is on the network (a network disk, or a volume of
    /// an `iscsi-direct` pool): [`DiskSource::host_path`] is then an
    /// `iscsi://` or `nfs://` URL, not a path.
    pub fn is_network(&self) -> bool {
        self.host_path()
            .is_some_and(|p| p.starts_with("iscsi://") || p.starts_with("nfs://"))
    }

    /// The source as `domblklist` shows it: the host path, or `pool/volume`
    /// for a volume not resolved yet.
    pub fn describe(&self) -> String {
        match (self, self.host_path()) {
            (_, Some(p)) => p.to_string(),
            (DiskSource::Volume(v), None) => format!("{}/{}", v.pool, v.volume),
            _ => String::new(),
        }
    }

    /// libvirt's `type=` for the source.
    pub fn kind(&self) -> &'static str {
        match self {
            DiskSource::File(_) => "file",
            DiskSource::Block(_) => "block",
            DiskSource::Volume(_) => "volume",
            DiskSource::Network(_) => "network",
        }
    }
}

/// The image format, always stated: Vireo never probes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    /// Raw.
    Raw,
    /// qcow2.
    Qcow2,
}

/// Host caching (`driver cache=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskCache {
    /// O_DIRECT, bypassing the host page cache; flushes honoured.
    None,
    /// Through the host page cache; flushes honoured.
    Writeback,
    /// Accepted as writeback: Vireo honours flushes even so.
    Unsafe,
}

/// What the guest's discard requests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskDiscard {
    /// Passed down (punching holes).
    Unmap,
    /// Dropped.
    Ignore,
}

/// The I/O mode asked for (`driver io=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskIo {
    /// Linux native AIO (QEMU); Vireo uses io_uring for all.
    Native,
    /// A thread pool (QEMU).
    Threads,
    /// io_uring.
    IoUring,
}

/// What a failed request does (`driver error_policy=`, `rerror_policy=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskErrorPolicy {
    /// The guest gets the error.
    Report,
    /// The guest is told the request succeeded.
    Ignore,
    /// The VM pauses until resumed; the request is then sent again.
    Stop,
    /// Stop when the host is out of space, report the rest (writes only).
    Enospc,
}

impl DiskErrorPolicy {
    /// The name in libvirt's XML (and QEMU's and the VMM's `werror=`).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskErrorPolicy::Report => "report",
            DiskErrorPolicy::Ignore => "ignore",
            DiskErrorPolicy::Stop => "stop",
            DiskErrorPolicy::Enospc => "enospc",
        }
    }
}

/// `iotune`: a disk's I/O limits, per second (0 or absent: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoTune {
    /// `total_bytes_sec`.
    pub total_bytes_sec: Option<u64>,
    /// `read_bytes_sec`.
    pub read_bytes_sec: Option<u64>,
    /// `write_bytes_sec`.
    pub write_bytes_sec: Option<u64>,
    /// `total_iops_sec`.
    pub total_iops_sec: Option<u64>,
    /// `read_iops_sec`.
    pub read_iops_sec: Option<u64>,
    /// `write_iops_sec`.
    pub write_iops_sec: Option<u64>,
}

impl IoTune {
    fn slot(&mut self, name: &str) -> Option<&mut Option<u64>> {
        Some(match name {
            "total_bytes_sec" => &mut self.total_bytes_sec,
            "read_bytes_sec" => &mut self.read_bytes_sec,
            "write_bytes_sec" => &mut self.write_bytes_sec,
            "total_iops_sec" => &mut self.total_iops_sec,
            "read_iops_sec" => &mut self.read_iops_sec,
            "write_iops_sec" => &mut self.write_iops_sec,
            _ => return None,
        })
    }

    fn values(&self) -> [(&'static str, Option<u64>); 6] {
        [
            ("total_bytes_sec", self.total_bytes_sec),
            ("read_bytes_sec", self.read_bytes_sec),
            ("write_bytes_sec", self.write_bytes_sec),
            ("total_iops_sec", self.total_iops_sec),
            ("read_iops_sec", self.read_iops_sec),
            ("write_iops_sec", self.write_iops_sec),
        ]
    }
}

fn parse_iotune(node: &Node<'_>, ctx: &mut Ctx) -> Result<IoTune, Error> {
    node.check_attrs(ctx, &[]);
    let mut t = IoTune::default();
    for child in node.children() {
        let c = child.node();
        c.check_attrs(ctx, &[]);
        let name = c.name().to_string();
        let Some(slot) = t.slot(&name) else {
            if name.ends_with("_max")
                || name.ends_with("_max_length")
                || name == "size_iops_sec"
                || name == "group_name"
            {
                c.warn(
                    ctx,
                    format!("<{name}> is kept out: bursts are one second of each limit"),
                );
                continue;
            }
            return Err(c.refuse(format!("<{name}> inside <iotune> is not supported")));
        };
        if slot.is_some() {
            return Err(c.refuse(format!("<{name}> appears more than once")));
        }
        let v: u64 = parse_number(&c, &name, &c.text()?)?;
        *slot = (v > 0).then_some(v);
    }
    let both = |total: Option<u64>, one: Option<u64>| total.is_some() && one.is_some();
    if both(t.total_bytes_sec, t.read_bytes_sec.or(t.write_bytes_sec))
        || both(t.total_iops_sec, t.read_iops_sec.or(t.write_iops_sec))
    {
        return Err(node.refuse(
            "a total_* limit and a read_*/write_* limit of the same kind cannot both be set",
        ));
    }
    Ok(t)
}

/// A `disk` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The backing file or device.
    pub source: DiskSource,
    /// The image format.
    pub format: DiskFormat,
    /// Host caching; `None` for the driver's default.
    pub cache: Option<DiskCache>,
    /// Discard handling; `None` for the driver's default.
    pub discard: Option<DiskDiscard>,
    /// I/O mode; `None` for the driver's default.
    pub io: Option<DiskIo>,
    /// What a failed write (and, without `rerror_policy`, read) does;
    /// `None` reports it.
    pub error_policy: Option<DiskErrorPolicy>,
    /// What a failed read does; `None` follows `error_policy`.
    pub rerror_policy: Option<DiskErrorPolicy>,
    /// I/O limits.
    pub iotune: Option<IoTune>,
    /// The I/O thread (`driver iothread=`, an id of the domain's
    /// `iothreads`) whose pin the disk's threads take.
    pub iothread: Option<u32>,
    /// The target name (`vda`), unique in the domain.
    pub target: String,
    /// The guest may not write.
    pub readonly: bool,
    /// The serial the guest reads (at most 20 bytes, virtio-blk's limit).
    pub serial: Option<String>,
    /// Hints kept for writing back (`boot`, `address`, `alias`, `iotune`).
    pub kept: Vec<RawElement>,
}

/// Longest disk serial: virtio-blk's ID string.
pub const MAX_SERIAL_BYTES: usize = 20;

const DISK_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "boot",
        Unmodelled::Keep("the kernel is booted directly, so there is no boot order"),
    ),
    (
        "address",
        Unmodelled::Keep("Vireo places devices on its PCI bus itself"),
    ),
    ("alias", Unmodelled::Keep("device aliases are not used")),
    (
        "backingStore",
        Unmodelled::Keep("the backing chain is read from the image"),
    ),
    (
        "shareable",
        Unmodelled::Refuse("images are locked against a second writer"),
    ),
    (
        "transient",
        Unmodelled::Refuse("transient disks are not supported"),
    ),
    (
        "encryption",
        Unmodelled::Refuse("encrypted images are not supported"),
    ),
    (
        "blockio",
        Unmodelled::Refuse("the block sizes are the image's"),
    ),
    (
        "geometry",
        Unmodelled::Refuse("virtio disks have no geometry"),
    ),
];

pub(crate) fn parse_disk(node: &Node<'_>, ctx: &mut Ctx) -> Result<Disk, Error> {
    node.check_attrs(ctx, &["type", "device"]);
    let kind = node.attr("type").unwrap_or("file");
    if !matches!(kind, "file" | "block" | "volume" | "network") {
        return Err(node.refuse(format!(
            "disk type '{kind}' is not supported: use file, block, volume or network (iSCSI)"
        )));
    }
    let device = node.attr("device").unwrap_or("disk");
    if device != "disk" {
        return Err(node.refuse(format!(
            "device='{device}' is not supported: Vireo has virtio disks only"
        )));
    }
    let mut driver = None;
    let mut source = None;
    let mut target = None;
    let mut readonly = false;
    let mut serial = None;
    let mut iotune = None;
    let mut auth = None;
    let mut kept = Vec::new();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            // libvirt's older place for a network disk's credentials.
            "auth" => {
                c.once(&auth)?;
                if kind != "network" {
                    return Err(c.refuse(format!(
                        "<auth> is for network (iSCSI) disks, not a {kind} disk"
                    )));
                }
                auth = Some(ChapAuth::parse(&c, ctx, AuthPlace::Disk)?);
            }
            "driver" => {
                c.once(&driver)?;
                driver = Some(parse_driver(&c, ctx)?);
            }
            "iotune" => {
                c.once(&iotune)?;
                iotune = Some(parse_iotune(&c, ctx)?);
            }
            "source" => {
                c.once(&source)?;
                if kind == "volume" {
                    source = Some(parse_volume_source(&c, ctx)?);
                    continue;
                }
                if kind == "network" {
                    source = Some(DiskSource::Network(NetworkSource::parse(&c, ctx)?));
                    continue;
                }
                let (attr, wrap): (&str, fn(String) -> DiskSource) = if kind == "file" {
                    ("file", DiskSource::File)
                } else {
                    ("dev", DiskSource::Block)
                };
                c.leaf(ctx, &[attr])?;
                let path = c.need(attr)?;
                if path.is_empty() {
                    return Err(c.refuse(format!("{attr}= is empty")));
                }
                source = Some(wrap(path.to_string()));
            }
            "target" => {
                c.once(&target)?;
                c.leaf(ctx, &["dev", "bus"])?;
                let dev = c.need("dev")?;
                let bus = match c.attr("bus") {
                    Some(bus) => bus,
                    // libvirt derives the bus from the name's prefix.
                    None if dev.starts_with("vd") => "virtio",
                    None => "(implied by the name)",
                };
                if bus != "virtio" {
                    return Err(c.refuse(format!(
                        "disk bus {bus} for '{dev}' is not supported: Vireo's disks are on the virtio bus (bus='virtio', names vda, vdb, ...)"
                    )));
                }
                if dev.is_empty() || dev.contains('/') || dev.chars().any(char::is_control) {
                    return Err(c.refuse(format!(
                        "target dev '{}' is not a device name",
                        dev.escape_debug()
                    )));
                }
                target = Some(dev.to_string());
            }
            "readonly" => {
                c.leaf(ctx, &[])?;
                readonly = true;
            }
            "serial" => {
                c.once(&serial)?;
                c.check_attrs(ctx, &[]);
                let s = c.text()?;
                if s.len() > MAX_SERIAL_BYTES
                    || !s.chars().all(|ch| ch.is_ascii_graphic() || ch == ' ')
                {
                    return Err(c.refuse(format!(
                        "serial '{}' must be at most {MAX_SERIAL_BYTES} printable ASCII characters",
                        s.escape_debug()
                    )));
                }
                serial = Some(s);
            }
            _ => kept.push(c.unmodelled(ctx, DISK_UNMODELLED)?),
        }
    }
    let mut source = source.ok_or_else(|| node.refuse("the disk has no <source>"))?;
    if let Some(a) = auth {
        match &mut source {
            DiskSource::Network(n) if n.protocol == NetworkProtocol::Iscsi && n.auth.is_none() => {
                n.auth = Some(a);
            }
            DiskSource::Network(n) if n.protocol == NetworkProtocol::Iscsi => {
                return Err(
                    node.refuse("the disk has <auth> both in <disk> and in <source>: give it once")
                )
            }
            _ => {
                return Err(
                    node.refuse("<auth> is for iSCSI network disks (source protocol='iscsi')")
                )
            }
        }
    }
    let target = target.ok_or_else(|| node.refuse("the disk has no <target dev=...>"))?;
    let Some(driver) = driver.filter(|d| d.format.is_some()) else {
        return Err(node.refuse(
            "the disk has no <driver type=...>: Vireo never probes an image's format; state it, as <driver name='qemu' type='raw'/> or type='qcow2'",
        ));
    };
    Ok(Disk {
        source,
        format: driver.format.unwrap_or(DiskFormat::Raw),
        cache: driver.cache,
        discard: driver.discard,
        io: driver.io,
        error_policy: driver.error_policy,
        rerror_policy: driver.rerror_policy,
        iotune,
        iothread: driver.iothread,
        target,
        readonly,
        serial,
        kept,
    })
}

/// `source pool= volume=` of a `type='volume'` disk.
fn parse_volume_source(c: &Node<'_>, ctx: &mut Ctx) -> Result<DiskSource, Error> {
    c.leaf(ctx, &["pool", "volume", "mode"])?;
    if let Some(mode) = c.attr("mode") {
        return Err(c.refuse(format!(
            "mode='{mode}' is for iSCSI pools' volumes, which Vireo does not run as disks: leave it out"
        )));
    }
    let mut names = [("pool", ""), ("volume", "")];
    for (attr, value) in &mut names {
        let v = c.need(attr)?;
        if v.is_empty() || v.contains('/') || v.chars().any(char::is_control) {
            return Err(c.refuse(format!(
                "{attr}='{}' is not a {attr} name",
                v.escape_debug()
            )));
        }
        *value = v;
    }
    Ok(DiskSource::Volume(VolumeSource {
        pool: names[0].1.to_string(),
        volume: names[1].1.to_string(),
        resolved: None,
    }))
}

struct Driver {
    format: Option<DiskFormat>,
    cache: Option<DiskCache>,
    discard: Option<DiskDiscard>,
    io: Option<DiskIo>,
    error_policy: Option<DiskErrorPolicy>,
    rerror_policy: Option<DiskErrorPolicy>,
    iothread: Option<u32>,
}

fn parse_driver(c: &Node<'_>, ctx: &mut Ctx) -> Result<Driver, Error> {
    c.leaf(
        ctx,
        &[
            "name",
            "type",
            "cache",
            "discard",
            "io",
            "error_policy",
            "rerror_policy",
            "iothread",
        ],
    )?;
    let iothread =
        match c.attr("iothread") {
            None => None,
            Some(v) => Some(v.parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(|| {
                c.refuse(format!("iothread='{v}' is not an I/O thread id (1 up)"))
            })?),
        };
    if let Some(name) = c.attr("name") {
        if name != "qemu" {
            return Err(c.refuse(format!("driver name '{name}' is not supported: use qemu")));
        }
    }
    let format = match c.attr("type") {
        None => None,
        Some("raw") => Some(DiskFormat::Raw),
        Some("qcow2") => Some(DiskFormat::Qcow2),
        Some(t) => {
            return Err(c.refuse(format!(
                "image format '{t}' is not supported: use raw or qcow2"
            )))
        }
    };
    let cache = match c.attr("cache") {
        None | Some("default") => None,
        Some("none") => Some(DiskCache::None),
        Some("writeback") => Some(DiskCache::Writeback),
        Some("unsafe") => {
            c.warn(ctx, "cache='unsafe' runs as writeback: Vireo still honours the guest's flushes");
            Some(DiskCache::Unsafe)
        }
        Some(m @ ("writethrough" | "directsync")) => {
            return Err(c.refuse(format!(
                "cache='{m}' is not supported: the guest would believe every write durable without flushing; use none or writeback"
            )))
        }
        Some(m) => return Err(c.refuse(format!("unknown cache mode '{m}'"))),
    };
    let discard = match c.attr("discard") {
        None => None,
        Some("unmap") => Some(DiskDiscard::Unmap),
        Some("ignore") => Some(DiskDiscard::Ignore),
        Some(d) => return Err(c.refuse(format!("unknown discard mode '{d}'"))),
    };
    let io = match c.attr("io") {
        None | Some("default") => None,
        Some("native") => Some(DiskIo::Native),
        Some("threads") => Some(DiskIo::Threads),
        Some("io_uring") => Some(DiskIo::IoUring),
        Some(i) => return Err(c.refuse(format!("unknown io mode '{i}'"))),
    };
    let policy = |attr: &str, enospc: bool| -> Result<Option<DiskErrorPolicy>, Error> {
        Ok(match c.attr(attr) {
            None | Some("default") => None,
            Some("report") => Some(DiskErrorPolicy::Report),
            Some("ignore") => Some(DiskErrorPolicy::Ignore),
            Some("stop") => Some(DiskErrorPolicy::Stop),
            Some("enospace" | "enospc") if enospc => Some(DiskErrorPolicy::Enospc),
            Some(p) => {
                let allowed = if enospc {
                    "stop, report, ignore or enospace"
                } else {
                    "stop, report or ignore"
                };
                return Err(c.refuse(format!("{attr}='{p}' must be {allowed}")));
            }
        })
    };
    Ok(Driver {
        format,
        cache,
        discard,
        io,
        error_policy: policy("error_policy", true)?,
        rerror_policy: policy("rerror_policy", false)?,
        iothread,
    })
}

impl Disk {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("disk", &[("type", self.source.kind()), ("device", "disk")]);
        let mut driver = vec![
            ("name", "qemu"),
            (
                "type",
                match self.format {
                    DiskFormat::Raw => "raw",
                    DiskFormat::Qcow2 => "qcow2",
                },
            ),
        ];
        if let Some(cache) = self.cache {
            driver.push((
                "cache",
                match cache {
                    DiskCache::None => "none",
                    DiskCache::Writeback => "writeback",
                    DiskCache::Unsafe => "unsafe",
                },
            ));
        }
        if let Some(d) = self.discard {
            driver.push((
                "discard",
                if d == DiskDiscard::Unmap {
                    "unmap"
                } else {
                    "ignore"
                },
            ));
        }
        if let Some(io) = self.io {
            driver.push((
                "io",
                match io {
                    DiskIo::Native => "native",
                    DiskIo::Threads => "threads",
                    DiskIo::IoUring => "io_uring",
                },
            ));
        }
        // libvirt's own spelling of ENOSPC is `enospace`.
        let name = |p: DiskErrorPolicy| match p {
            DiskErrorPolicy::Enospc => "enospace",
            p => p.as_str(),
        };
        if let Some(p) = self.error_policy {
            driver.push(("error_policy", name(p)));
        }
        if let Some(p) = self.rerror_policy {
            driver.push(("rerror_policy", name(p)));
        }
        let iothread = self.iothread.map(|n| n.to_string());
        if let Some(n) = &iothread {
            driver.push(("iothread", n));
        }
        w.empty("driver", &driver);
        match &self.source {
            DiskSource::File(p) => w.empty("source", &[("file", p)]),
            DiskSource::Block(p) => w.empty("source", &[("dev", p)]),
            DiskSource::Volume(v) => w.empty("source", &[("pool", &v.pool), ("volume", &v.volume)]),
            DiskSource::Network(n) => n.write(w),
        }
        w.empty("target", &[("dev", &self.target), ("bus", "virtio")]);
        if let Some(t) = &self.iotune {
            w.open("iotune", &[]);
            for (name, v) in t.values() {
                if let Some(v) = v {
                    w.text(name, &[], &v.to_string());
                }
            }
            w.close("iotune");
        }
        if self.readonly {
            w.empty("readonly", &[]);
        }
        if let Some(s) = &self.serial {
            w.text("serial", &[], s);
        }
        w.raws(&self.kept);
        w.close("disk");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn disk(xml: &str) -> Result<Disk, Error> {
        let el = read(xml).unwrap();
        parse_disk(
            &Node::root(&el, "/domain/devices/disk[1]"),
            &mut Ctx::default(),
        )
    }

    #[test]
    fn file_and_block_disks() {
        let d = disk("<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none' \
             discard='unmap' io='io_uring'/><source file='/a.qcow2'/><target dev='vda' bus='virtio'/>\
             <readonly/><serial>S1</serial><boot order='1'/></disk>")
        .unwrap();
        assert_eq!(d.source, DiskSource::File("/a.qcow2".into()));
        assert_eq!(d.format, DiskFormat::Qcow2);
        assert_eq!(d.cache, Some(DiskCache::None));
        assert_eq!(d.discard, Some(DiskDiscard::Unmap));
        assert_eq!(d.io, Some(DiskIo::IoUring));
        assert!(d.readonly);
        assert_eq!(d.serial.as_deref(), Some("S1"));
        assert_eq!(d.kept.len(), 1);
        let d = disk("<disk type='block'><driver type='raw'/><source dev='/dev/sdb'/><target dev='vdb'/></disk>")
            .unwrap();
        assert_eq!(d.source, DiskSource::Block("/dev/sdb".into()));
    }

    #[test]
    fn volume_disks_name_a_pool_and_a_volume() {
        let d = disk(
            "<disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>\
             <source pool='images' volume='a.qcow2'/><target dev='vda' bus='virtio'/></disk>",
        )
        .unwrap();
        let DiskSource::Volume(v) = &d.source else {
            panic!("{:?}", d.source)
        };
        assert_eq!((v.pool.as_str(), v.volume.as_str()), ("images", "a.qcow2"));
        assert_eq!(d.source.host_path(), None);
        assert_eq!(d.source.describe(), "images/a.qcow2");
        let mut w = XmlWriter::default();
        d.write(&mut w);
        let xml = w.finish();
        assert!(
            xml.contains("<source pool='images' volume='a.qcow2'/>"),
            "{xml}"
        );
        for bad in [
            "<disk type='volume'><driver type='raw'/><source pool='p'/><target dev='vda'/></disk>",
            "<disk type='volume'><driver type='raw'/><source pool='p' volume='a/b'/><target dev='vda'/></disk>",
            "<disk type='volume'><driver type='raw'/><source pool='' volume='v'/><target dev='vda'/></disk>",
            "<disk type='volume'><driver type='raw'/><source pool='p' volume='v' mode='host'/><target dev='vda'/></disk>",
            "<disk type='volume'><source pool='p' volume='v'/><target dev='vda'/></disk>",
        ] {
            assert!(disk(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let e = disk("<disk type='file'><driver name='qemu'/><source file='/a'/><target dev='vda' bus='virtio'/></disk>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("never probes an image's format"), "{e}");
        let e = disk("<disk type='file'>\n  <driver type='raw'/><source file='/a'/>\n  <target dev='sda' bus='sata'/></disk>")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/domain/devices/disk[1]/target (line 3, column 3): disk bus sata"),
            "{e}"
        );
        for bad in [
            "<disk device='cdrom'><driver type='raw'/><source file='/a'/><target dev='vda'/></disk>",
            "<disk type='network'><driver type='raw'/><target dev='vda'/></disk>",
            "<disk type='nvme'><driver type='raw'/><source file='/a'/><target dev='vda'/></disk>",
            "<disk><driver type='vmdk'/><source file='/a'/><target dev='vda'/></disk>",
            "<disk><driver type='raw' cache='writethrough'/><source file='/a'/><target dev='vda'/></disk>",
            "<disk><driver type='raw'/><target dev='vda'/></disk>",
            "<disk><driver type='raw'/><source file='/a'/><target dev='hda'/></disk>",
            "<disk><driver type='raw'/><source file='/a'/><target dev='vda'/><shareable/></disk>",
            "<disk><driver type='raw'/><source file='/a'/><target dev='vda'/><serial>012345678901234567890</serial></disk>",
        ] {
            assert!(disk(bad).is_err(), "{bad}");
        }
    }
}
