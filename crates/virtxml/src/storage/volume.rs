//! The `volume` element: a volume's name, size and image format, and for
//! a qcow2 overlay the volume it is backed by.

use super::{check_path, parse_bytes, Permissions};
use crate::error::Error;
use crate::node::{Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

/// Longest volume name, in bytes (a file name).
pub const MAX_VOLUME_NAME_BYTES: usize = 255;

/// The image formats a volume can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFormat {
    /// Raw bytes.
    Raw,
    /// QEMU's qcow2.
    Qcow2,
}

impl VolumeFormat {
    /// libvirt's name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeFormat::Raw => "raw",
            VolumeFormat::Qcow2 => "qcow2",
        }
    }

    /// Parses `raw` or `qcow2`; anything else is `None`.
    pub fn parse(s: &str) -> Option<VolumeFormat> {
        match s {
            "raw" => Some(VolumeFormat::Raw),
            "qcow2" => Some(VolumeFormat::Qcow2),
            _ => None,
        }
    }
}

/// `backingStore`: the volume a qcow2 overlay reads what it has not
/// written from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingStore {
    /// The backing volume's path.
    pub path: String,
    /// Its format, always stated: a backing file's format is never probed.
    pub format: VolumeFormat,
}

/// A volume definition, as `vol-create` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its name in the pool (a file name for a `dir` pool).
    pub name: String,
    /// The size the guest sees, in bytes.
    pub capacity: u64,
    /// How much to allocate up front, in bytes (`None`: the pool's
    /// default, sparse where it can be).
    pub allocation: Option<u64>,
    /// The image format (`None`: the pool's, raw for files).
    pub format: Option<VolumeFormat>,
    /// Mode and ownership of the new volume.
    pub permissions: Permissions,
    /// qcow2's compatibility level: `0.10` or `1.1`.
    pub compat: Option<String>,
    /// The volume this one is an overlay on.
    pub backing: Option<BackingStore>,
    /// Elements kept for writing back.
    pub kept: Vec<RawElement>,
}

/// What `vol-dumpxml` reports of an existing volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeState {
    /// `file` or `block`.
    pub kind: &'static str,
    /// Its key (libvirt: the path, for files).
    pub key: String,
    /// Its path on the host.
    pub path: String,
    /// Bytes allocated on the host.
    pub allocation: u64,
    /// Bytes the file or device takes on the host (its length).
    pub physical: u64,
}

/// A parsed volume and what was accepted without being acted on.
#[derive(Debug, Clone)]
pub struct ParsedVolume {
    /// The definition.
    pub volume: Volume,
    /// One warning per element or attribute kept or dropped unused.
    pub warnings: Vec<crate::Warning>,
}

const VOLUME_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "encryption",
        Unmodelled::Refuse("encrypted volumes are not supported"),
    ),
    ("source", Unmodelled::Keep("a volume's extents are state")),
];

impl Volume {
    /// Parses a volume definition with the domain XML's rule.
    pub fn parse(xml: &str) -> Result<ParsedVolume, Error> {
        let (volume, warnings) = crate::node::parse_document(xml, parse_volume)?;
        Ok(ParsedVolume { volume, warnings })
    }

    /// Writes the volume as `vol-dumpxml` shows it: the definition with
    /// the state of the volume as it is.
    pub fn to_xml(&self, state: &VolumeState) -> String {
        let mut w = XmlWriter::default();
        w.open("volume", &[("type", state.kind)]);
        w.text("name", &[], &self.name);
        w.text("key", &[], &state.key);
        w.text("capacity", &[("unit", "bytes")], &self.capacity.to_string());
        w.text(
            "allocation",
            &[("unit", "bytes")],
            &state.allocation.to_string(),
        );
        w.text(
            "physical",
            &[("unit", "bytes")],
            &state.physical.to_string(),
        );
        w.open("target", &[]);
        w.text("path", &[], &state.path);
        if let Some(f) = self.format {
            w.empty("format", &[("type", f.as_str())]);
        }
        self.permissions.write(&mut w);
        if let Some(c) = &self.compat {
            w.text("compat", &[], c);
        }
        w.close("target");
        if let Some(b) = &self.backing {
            w.open("backingStore", &[]);
            w.text("path", &[], &b.path);
            w.empty("format", &[("type", b.format.as_str())]);
            w.close("backingStore");
        }
        w.raws(&self.kept);
        w.close("volume");
        w.finish()
    }
}

/// A volume name: a file name (no `/`, not `.` or `..`, no control
/// characters), at most [`MAX_VOLUME_NAME_BYTES`].
pub fn validate_volume_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("'{name}' is not a volume name"));
    }
    if name.contains('/') {
        return Err(format!(
            "volume name '{}' contains '/'",
            name.escape_debug()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "volume name '{}' contains a control character",
            name.escape_debug()
        ));
    }
    if name.len() > MAX_VOLUME_NAME_BYTES {
        return Err(format!(
            "the volume name is longer than {MAX_VOLUME_NAME_BYTES} bytes"
        ));
    }
    Ok(())
}

fn parse_volume(node: &Node<'_>, ctx: &mut Ctx) -> Result<Volume, Error> {
    if node.name() != "volume" {
        return Err(node.refuse(format!(
            "the root element is <{}>, not <volume>",
            node.name()
        )));
    }
    node.check_attrs(ctx, &["type"]);
    if let Some(t) = node.attr("type") {
        if t != "file" && t != "block" {
            return Err(node.refuse(format!(
                "volume type '{}' is not supported: use file or block",
                t.escape_debug()
            )));
        }
    }
    let mut name = None;
    let mut capacity = None;
    let mut allocation = None;
    let mut target = None;
    let mut backing = None;
    let mut kept = Vec::new();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "name" => {
                c.once(&name)?;
                c.check_attrs(ctx, &[]);
                let n = c.raw_text()?;
                validate_volume_name(&n).map_err(|e| c.refuse(e))?;
                name = Some(n);
            }
            "capacity" => {
                c.once(&capacity)?;
                capacity = Some(parse_bytes(&c, ctx)?);
            }
            "allocation" => {
                c.once(&allocation)?;
                allocation = Some(parse_bytes(&c, ctx)?);
            }
            // State libvirt reports: dropped.
            "key" => {
                c.check_attrs(ctx, &[]);
                c.text()?;
            }
            "physical" => {
                parse_bytes(&c, ctx)?;
            }
            "target" => {
                c.once(&target)?;
                target = Some(parse_target(&c, ctx)?);
            }
            "backingStore" => {
                c.once(&backing)?;
                backing = Some(parse_backing(&c, ctx)?);
            }
            _ => kept.push(c.unmodelled(ctx, VOLUME_UNMODELLED)?),
        }
    }
    let name = name.ok_or_else(|| node.refuse("the volume has no <name>"))?;
    let capacity = capacity.ok_or_else(|| node.refuse("the volume has no <capacity>"))?;
    if capacity == 0 && backing.is_none() {
        return Err(node.refuse("the volume's capacity is zero"));
    }
    let (format, permissions, compat) = target.unwrap_or_default();
    if let Some(a) = allocation {
        if a > capacity {
            return Err(node.refuse(format!(
                "allocation {a} is more than the capacity {capacity}"
            )));
        }
    }
    if format != Some(VolumeFormat::Qcow2) {
        if compat.is_some() {
            return Err(node.refuse("<compat> is for qcow2 volumes"));
        }
        if backing.is_some() {
            return Err(node.refuse(
                "<backingStore> needs <target><format type='qcow2'/>: only a qcow2 volume is an overlay",
            ));
        }
    }
    Ok(Volume {
        name,
        capacity,
        allocation,
        format,
        permissions,
        compat,
        backing,
        kept,
    })
}

type Target = (Option<VolumeFormat>, Permissions, Option<String>);

fn parse_target(node: &Node<'_>, ctx: &mut Ctx) -> Result<Target, Error> {
    node.check_attrs(ctx, &[]);
    let mut format = None;
    let mut perms = None;
    let mut compat = None;
    for child in node.children() {
        let c = child.node();
        match c.name() {
            // Where libvirt put it: state; a new volume's path is the pool's.
            "path" => {
                c.check_attrs(ctx, &[]);
                c.text()?;
            }
            "format" => {
                c.once(&format)?;
                format = Some(parse_format(&c, ctx)?);
            }
            "permissions" => {
                c.once(&perms)?;
                perms = Some(Permissions::parse(&c, ctx)?);
            }
            "compat" => {
                c.once(&compat)?;
                c.check_attrs(ctx, &[]);
                let v = c.text()?;
                if v != "0.10" && v != "1.1" {
                    return Err(c.refuse(format!(
                        "compat '{}' is not a qcow2 level: use 0.10 or 1.1",
                        v.escape_debug()
                    )));
                }
                compat = Some(v);
            }
            "features" | "nocow" | "timestamps" => {
                c.warn(
                    ctx,
                    format!("<{}> is not acted on: the image is made plainly", c.name()),
                );
            }
            other => return Err(c.refuse(format!("<{other}> inside <target> is not supported"))),
        }
    }
    Ok((format, perms.unwrap_or_default(), compat))
}

fn parse_format(node: &Node<'_>, ctx: &mut Ctx) -> Result<VolumeFormat, Error> {
    node.leaf(ctx, &["type"])?;
    let t = node.need("type")?;
    VolumeFormat::parse(t).ok_or_else(|| {
        node.refuse(format!(
            "image format '{}' is not supported: use raw or qcow2",
            t.escape_debug()
        ))
    })
}

fn parse_backing(node: &Node<'_>, ctx: &mut Ctx) -> Result<BackingStore, Error> {
    node.check_attrs(ctx, &[]);
    let mut path = None;
    let mut format = None;
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "path" => {
                c.once(&path)?;
                c.check_attrs(ctx, &[]);
                let p = c.text()?;
                check_path(&c, "backing path", &p)?;
                path = Some(p);
            }
            "format" => {
                c.once(&format)?;
                format = Some(parse_format(&c, ctx)?);
            }
            "permissions" | "timestamps" => {}
            other => {
                return Err(c.refuse(format!("<{other}> inside <backingStore> is not supported")))
            }
        }
    }
    Ok(BackingStore {
        path: path.ok_or_else(|| node.refuse("<backingStore> needs a <path>"))?,
        format: format.ok_or_else(|| {
            node.refuse("<backingStore> needs <format type='raw|qcow2'/>: a backing file's format is never probed")
        })?,
    })
}
