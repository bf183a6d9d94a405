//! The `pool` element: a storage pool's type, where its storage comes
//! from (`source`) and where its volumes appear on the host (`target`).

use super::{check_path, parse_bytes, Permissions};
use crate::auth::{AuthPlace, ChapAuth};
use crate::error::Error;
use crate::node::{parse_number, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};
use crate::scalars;
use crate::uuid::Uuid;

/// The pool types of libvirt's storage drivers that Vireo's format
/// covers. Others (`scsi`, `mpath`, `rbd`, `gluster`, `zfs`, `vstorage`)
/// are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolType {
    /// Image files in a directory.
    Dir,
    /// A block device with a filesystem, mounted at the target path.
    Fs,
    /// An NFS export, mounted at the target path.
    Netfs,
    /// A partitioned block device; volumes are partitions.
    Disk,
    /// An LVM volume group; volumes are logical volumes.
    Logical,
    /// An iSCSI target's LUNs, through the kernel's initiator.
    Iscsi,
    /// An iSCSI target's LUNs, reached in user space.
    IscsiDirect,
}

impl PoolType {
    /// libvirt's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolType::Dir => "dir",
            PoolType::Fs => "fs",
            PoolType::Netfs => "netfs",
            PoolType::Disk => "disk",
            PoolType::Logical => "logical",
            PoolType::Iscsi => "iscsi",
            PoolType::IscsiDirect => "iscsi-direct",
        }
    }

    fn parse(s: &str) -> Option<PoolType> {
        Some(match s {
            "dir" => PoolType::Dir,
            "fs" => PoolType::Fs,
            "netfs" => PoolType::Netfs,
            "disk" => PoolType::Disk,
            "logical" => PoolType::Logical,
            "iscsi" => PoolType::Iscsi,
            "iscsi-direct" => PoolType::IscsiDirect,
            _ => return None,
        })
    }

    /// The `source/format` types this pool type takes (empty: none).
    fn formats(self) -> &'static [&'static str] {
        match self {
            PoolType::Fs => &["auto", "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat"],
            PoolType::Netfs => &["auto", "nfs"],
            PoolType::Disk => &["gpt"],
            PoolType::Logical => &["lvm2"],
            _ => &[],
        }
    }
}

/// A server a network pool reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceHost {
    /// Host name or address.
    pub name: String,
    /// Port, when not the protocol's.
    pub port: Option<u16>,
}

/// `source`: where the pool's storage is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolSource {
    /// `device path=`: the block device (`fs`, `disk`), the physical
    /// volumes (`logical`), or the target's IQN (`iscsi`, `iscsi-direct`).
    pub devices: Vec<String>,
    /// `dir path=`: the export's path on the server (`netfs`).
    pub dir: Option<String>,
    /// `host`: the server (`netfs`, `iscsi`, `iscsi-direct`).
    pub host: Option<SourceHost>,
    /// `format type=`: the filesystem, partition table or LVM format.
    pub format: Option<String>,
    /// `name`: the volume group (`logical`; the pool's name when absent).
    pub name: Option<String>,
    /// `initiator/iqn name=`: the initiator's IQN (`iscsi`,
    /// `iscsi-direct`, where it is required).
    pub initiator: Option<String>,
    /// `auth type='chap'`: the CHAP credentials (`iscsi`, `iscsi-direct`).
    pub auth: Option<ChapAuth>,
}

/// `target`: where the volumes appear on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolTarget {
    /// The directory (or device directory) holding the volumes.
    pub path: Option<String>,
    /// Mode and ownership of that directory.
    pub permissions: Permissions,
}

/// A storage pool definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Its type.
    pub kind: PoolType,
    /// Its name, unique on the host.
    pub name: String,
    /// Its UUID (generated when the document has none).
    pub uuid: Uuid,
    /// Where its storage is.
    pub source: PoolSource,
    /// Where its volumes appear.
    pub target: PoolTarget,
    /// Elements kept for writing back (`metadata`, `features`, `refresh`).
    pub kept: Vec<RawElement>,
}

/// A pool's figures as `pool-dumpxml` reports them, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolSpace {
    /// Total size.
    pub capacity: u64,
    /// Used.
    pub allocation: u64,
    /// Free for new volumes.
    pub available: u64,
}

/// A parsed pool and what was accepted without being acted on.
#[derive(Debug, Clone)]
pub struct ParsedPool {
    /// The definition.
    pub pool: Pool,
    /// One warning per element or attribute kept or dropped unused.
    pub warnings: Vec<crate::Warning>,
}

const POOL_UNMODELLED: &[(&str, Unmodelled)] = &[
    ("metadata", Unmodelled::Keep("it is for management tools")),
    (
        "features",
        Unmodelled::Keep("copy-on-write settings of the filesystem are left as they are"),
    ),
    (
        "refresh",
        Unmodelled::Keep("volumes report their real allocation"),
    ),
];

impl Pool {
    /// Parses a pool definition, with the rule of the domain XML: one
    /// line naming the element for what Vireo cannot honour, one warning
    /// each for what it keeps without acting on.
    pub fn parse(xml: &str) -> Result<ParsedPool, Error> {
        let (pool, warnings) = crate::node::parse_document(xml, parse_pool)?;
        Ok(ParsedPool { pool, warnings })
    }

    /// The volume group of a `logical` pool: `source/name`, else the
    /// pool's name, as libvirt has it.
    pub fn volume_group(&self) -> &str {
        self.source.name.as_deref().unwrap_or(&self.name)
    }

    /// Writes the definition back; `space`, when given, adds the figures
    /// `pool-dumpxml` shows for an active pool.
    pub fn to_xml(&self, space: Option<PoolSpace>) -> String {
        let mut w = XmlWriter::default();
        w.open("pool", &[("type", self.kind.as_str())]);
        w.text("name", &[], &self.name);
        w.text("uuid", &[], &self.uuid.to_string());
        let space = space.unwrap_or_default();
        for (name, value) in [
            ("capacity", space.capacity),
            ("allocation", space.allocation),
            ("available", space.available),
        ] {
            w.text(name, &[("unit", "bytes")], &value.to_string());
        }
        self.write_source(&mut w);
        if self.target.path.is_some() || self.target.permissions != Permissions::default() {
            w.open("target", &[]);
            if let Some(p) = &self.target.path {
                w.text("path", &[], p);
            }
            self.target.permissions.write(&mut w);
            w.close("target");
        }
        w.raws(&self.kept);
        w.close("pool");
        w.finish()
    }

    fn write_source(&self, w: &mut XmlWriter) {
        let s = &self.source;
        w.open("source", &[]);
        if let Some(h) = &s.host {
            match h.port {
                Some(p) => w.empty("host", &[("name", &h.name), ("port", &p.to_string())]),
                None => w.empty("host", &[("name", &h.name)]),
            }
        }
        for d in &s.devices {
            w.empty("device", &[("path", d)]);
        }
        if let Some(d) = &s.dir {
            w.empty("dir", &[("path", d)]);
        }
        if let Some(n) = &s.name {
            w.text("name", &[], n);
        }
        if let Some(f) = &s.format {
            w.empty("format", &[("type", f)]);
        }
        if let Some(i) = &s.initiator {
            w.open("initiator", &[]);
            w.empty("iqn", &[("name", i)]);
            w.close("initiator");
        }
        if let Some(a) = &s.auth {
            a.write(w, AuthPlace::Pool);
        }
        w.close("source");
    }
}

fn parse_pool(node: &Node<'_>, ctx: &mut Ctx) -> Result<Pool, Error> {
    if node.name() != "pool" {
        return Err(node.refuse(format!("the root element is <{}>, not <pool>", node.name())));
    }
    node.check_attrs(ctx, &["type"]);
    let type_name = node.need("type")?;
    let kind = PoolType::parse(type_name).ok_or_else(|| {
        node.refuse(format!(
            "pool type '{}' is not supported: use dir, fs, netfs, disk, logical, iscsi or iscsi-direct",
            type_name.escape_debug()
        ))
    })?;
    let mut name = None;
    let mut uuid = None;
    let mut source = None;
    let mut target = None;
    let mut kept = Vec::new();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "name" => {
                c.once(&name)?;
                c.check_attrs(ctx, &[]);
                let n = c.raw_text()?;
                scalars::validate_name(&n).map_err(|e| c.refuse(e))?;
                name = Some(n);
            }
            "uuid" => {
                c.once(&uuid)?;
                c.check_attrs(ctx, &[]);
                uuid = Some(Uuid::parse(&c.text()?).map_err(|e| c.refuse(e))?);
            }
            // What an active pool reports: state, dropped.
            "capacity" | "allocation" | "available" => {
                parse_bytes(&c, ctx)?;
            }
            "source" => {
                c.once(&source)?;
                source = Some(parse_source(&c, ctx, kind)?);
            }
            "target" => {
                c.once(&target)?;
                target = Some(parse_target(&c, ctx)?);
            }
            _ => kept.push(c.unmodelled(ctx, POOL_UNMODELLED)?),
        }
    }
    let name = name.ok_or_else(|| node.refuse("the pool has no <name>"))?;
    let source = source.unwrap_or_default();
    let target = target.unwrap_or_default();
    check_type(node, kind, &source, &target)?;
    let uuid = match uuid {
        Some(u) => u,
        None => Uuid::generate()?,
    };
    Ok(Pool {
        kind,
        name,
        uuid,
        source,
        target,
        kept,
    })
}

fn parse_source(node: &Node<'_>, ctx: &mut Ctx, kind: PoolType) -> Result<PoolSource, Error> {
    node.check_attrs(ctx, &[]);
    let mut s = PoolSource::default();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "device" => {
                c.check_attrs(ctx, &["path"]);
                let path = c.need("path")?;
                if kind == PoolType::Iscsi || kind == PoolType::IscsiDirect {
                    check_iqn(&c, "target IQN", path)?;
                } else {
                    check_path(&c, "device path", path)?;
                }
                // libvirt lists a disk's partitions (extents) here: state.
                for extent in c.children() {
                    let e = extent.node();
                    if e.name() != "freeExtent" {
                        return Err(
                            e.refuse(format!("<{}> inside <device> is not supported", e.name()))
                        );
                    }
                }
                if s.devices.iter().any(|d| d == path) {
                    return Err(c.refuse(format!("device '{path}' is listed twice")));
                }
                s.devices.push(path.to_string());
            }
            "dir" => {
                c.once(&s.dir)?;
                c.leaf(ctx, &["path"])?;
                let path = c.need("path")?;
                check_path(&c, "export path", path)?;
                s.dir = Some(path.to_string());
            }
            "host" => {
                c.once(&s.host)?;
                c.leaf(ctx, &["name", "port"])?;
                let name = c.need("name")?;
                check_host(&c, name)?;
                let port = match c.attr("port") {
                    Some(p) => match parse_number::<u16>(&c, "port", p)? {
                        0 => return Err(c.refuse("port 0 is not a port")),
                        p => Some(p),
                    },
                    None => None,
                };
                s.host = Some(SourceHost {
                    name: name.to_string(),
                    port,
                });
            }
            "format" => {
                c.once(&s.format)?;
                c.leaf(ctx, &["type"])?;
                let f = c.need("type")?;
                if !kind.formats().contains(&f) {
                    return Err(c.refuse(match kind.formats() {
                        [] => format!("a {} pool takes no source format", kind.as_str()),
                        ok => format!(
                            "format '{}' is not supported for a {} pool: use {}",
                            f.escape_debug(),
                            kind.as_str(),
                            ok.join(", ")
                        ),
                    }));
                }
                s.format = Some(f.to_string());
            }
            "name" => {
                c.once(&s.name)?;
                c.check_attrs(ctx, &[]);
                let n = c.text()?;
                if kind != PoolType::Logical {
                    return Err(c.refuse(format!(
                        "<name> in <source> names a volume group: a {} pool has none",
                        kind.as_str()
                    )));
                }
                check_vg_name(&c, &n)?;
                s.name = Some(n);
            }
            "initiator" => {
                c.once(&s.initiator)?;
                c.check_attrs(ctx, &[]);
                let mut iqn = None;
                for i in c.children() {
                    let i = i.node();
                    if i.name() != "iqn" {
                        return Err(i.refuse(format!(
                            "<{}> inside <initiator> is not supported",
                            i.name()
                        )));
                    }
                    i.once(&iqn)?;
                    i.leaf(ctx, &["name"])?;
                    let name = i.need("name")?;
                    check_iqn(&i, "initiator IQN", name)?;
                    iqn = Some(name.to_string());
                }
                s.initiator = Some(iqn.ok_or_else(|| c.refuse("<initiator> needs an <iqn>"))?);
            }
            "auth" => {
                c.once(&s.auth)?;
                match kind {
                    PoolType::IscsiDirect | PoolType::Iscsi => {}
                    _ => return Err(c.refuse(format!("a {} pool takes no <auth>", kind.as_str()))),
                }
                s.auth = Some(ChapAuth::parse(&c, ctx, AuthPlace::Pool)?);
            }
            "adapter" | "vendor" | "product" | "protocol" => {
                return Err(c.refuse(format!(
                    "<{}> is not supported for a {} pool",
                    c.name(),
                    kind.as_str()
                )))
            }
            other => return Err(c.refuse(format!("<{other}> inside <source> is not supported"))),
        }
    }
    Ok(s)
}

fn parse_target(node: &Node<'_>, ctx: &mut Ctx) -> Result<PoolTarget, Error> {
    node.check_attrs(ctx, &[]);
    let mut t = PoolTarget::default();
    let mut perms = None;
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "path" => {
                c.once(&t.path)?;
                c.check_attrs(ctx, &[]);
                let p = c.text()?;
                check_path(&c, "target path", &p)?;
                // libvirt writes the path without a trailing slash.
                let p = match p.trim_end_matches('/') {
                    "" => "/".to_string(),
                    trimmed => trimmed.to_string(),
                };
                t.path = Some(p);
            }
            "permissions" => {
                c.once(&perms)?;
                perms = Some(Permissions::parse(&c, ctx)?);
            }
            other => return Err(c.refuse(format!("<{other}> inside <target> is not supported"))),
        }
    }
    t.permissions = perms.unwrap_or_default();
    Ok(t)
}

/// What each type needs, and what it cannot take.
fn check_type(
    node: &Node<'_>,
    kind: PoolType,
    s: &PoolSource,
    t: &PoolTarget,
) -> Result<(), Error> {
    let need = |ok: bool, what: &str| -> Result<(), Error> {
        if ok {
            Ok(())
        } else {
            Err(node.refuse(format!("a {} pool needs {what}", kind.as_str())))
        }
    };
    let never = |present: bool, what: &str| -> Result<(), Error> {
        if present {
            Err(node.refuse(format!("a {} pool takes no {what}", kind.as_str())))
        } else {
            Ok(())
        }
    };
    let network = matches!(
        kind,
        PoolType::Netfs | PoolType::Iscsi | PoolType::IscsiDirect
    );
    never(!network && s.host.is_some(), "<source><host>")?;
    never(kind != PoolType::Netfs && s.dir.is_some(), "<source><dir>")?;
    never(
        !matches!(kind, PoolType::Iscsi | PoolType::IscsiDirect) && s.initiator.is_some(),
        "<source><initiator>",
    )?;
    match kind {
        PoolType::Dir => {
            never(!s.devices.is_empty(), "<source><device>")?;
            need(t.path.is_some(), "<target><path>")
        }
        PoolType::Fs | PoolType::Disk => {
            need(
                s.devices.len() == 1,
                "exactly one <source><device path='...'/>",
            )?;
            if kind == PoolType::Fs {
                need(t.path.is_some(), "<target><path> (where it is mounted)")?;
            }
            Ok(())
        }
        PoolType::Netfs => {
            need(s.host.is_some(), "<source><host name='...'/>")?;
            need(s.dir.is_some(), "<source><dir path='...'/> (the export)")?;
            never(!s.devices.is_empty(), "<source><device>")?;
            need(t.path.is_some(), "<target><path> (where it is mounted)")
        }
        PoolType::Logical => Ok(()),
        PoolType::Iscsi | PoolType::IscsiDirect => {
            need(s.host.is_some(), "<source><host name='...'/>")?;
            need(
                s.devices.len() == 1,
                "exactly one <source><device path='IQN'/> naming the target",
            )?;
            // Without <initiator> (virsh pool-define-as without
            // --source-initiator), Vireo logs in with its own default name.
            if kind == PoolType::IscsiDirect {
                never(t.path.is_some(), "<target>: its LUNs have no host path")?;
            }
            Ok(())
        }
    }
}

/// An iSCSI qualified name (`iqn.YYYY-MM.reversed.domain[:id]`) or EUI
/// name, as RFC 3720 shapes them: lowercase, no spaces or controls.
fn check_iqn(node: &Node<'_>, what: &str, iqn: &str) -> Result<(), Error> {
    let ok = (iqn.starts_with("iqn.") || iqn.starts_with("eui."))
        && iqn.len() <= 223
        && iqn
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(node.refuse(format!(
            "{what} '{}' is not an iSCSI name (iqn.YYYY-MM.domain[:name], lowercase)",
            iqn.escape_debug()
        )))
    }
}

/// A host name or address: letters, digits, `.`, `-`, `:` (IPv6), at
/// most 253 bytes.
fn check_host(node: &Node<'_>, host: &str) -> Result<(), Error> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(node.refuse(format!(
            "host '{}' is not a host name or address",
            host.escape_debug()
        )))
    }
}

/// LVM's rule for a volume group name: letters, digits and `+_.-`, not
/// starting with `-`, not `.` or `..`, at most 127 bytes.
fn check_vg_name(node: &Node<'_>, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 127
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(node.refuse(format!(
            "volume group name '{}' is not one LVM takes",
            name.escape_debug()
        )))
    }
}
