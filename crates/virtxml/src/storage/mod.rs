//! libvirt's storage XML: storage pools ([`pool`]) and the volumes in
//! them ([`volume`]), with the same accept / warn / refuse rule as the
//! domain XML (see `docs/storage-xml.md`).
//!
//! What both share lives here: sizes with libvirt's units, and the
//! `permissions` element. The figures libvirt writes into a pool or volume
//! it reports (`allocation`, `capacity`, `available`, `key`, a volume's
//! `target/path`) are state, not configuration: they are accepted and
//! dropped without a warning, so that what `pool-dumpxml` or `vol-dumpxml`
//! printed can be defined again as it is.

pub mod pool;
pub mod volume;

use crate::error::Error;
use crate::node::{parse_number, Ctx, Node};
use crate::raw::XmlWriter;
use crate::scalars::unit_multiplier;

/// A size in bytes from an element with libvirt's optional `unit=`
/// (bytes when absent).
pub(crate) fn parse_bytes(node: &Node<'_>, ctx: &mut Ctx) -> Result<u64, Error> {
    node.leaf(ctx, &["unit"])?;
    let unit = node.attr("unit").filter(|u| !u.is_empty()).unwrap_or("B");
    let multiplier =
        unit_multiplier(unit).ok_or_else(|| node.refuse(format!("unknown unit '{unit}'")))?;
    let value: u64 = parse_number(node, "size", &node.text()?)?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| node.refuse(format!("{value} {unit} is more than 2^64 bytes")))
}

/// `permissions`: the mode, owner and group a pool's directory or a new
/// volume gets. libvirt's SELinux `label` is refused: Vireo sets none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    /// File mode bits (at most 0o7777).
    pub mode: Option<u32>,
    /// Owner uid.
    pub owner: Option<u32>,
    /// Group gid.
    pub group: Option<u32>,
}

impl Permissions {
    pub(crate) fn parse(node: &Node<'_>, ctx: &mut Ctx) -> Result<Permissions, Error> {
        node.check_attrs(ctx, &[]);
        let mut p = Permissions::default();
        for child in node.children() {
            let c = child.node();
            match c.name() {
                "mode" => {
                    c.once(&p.mode)?;
                    c.check_attrs(ctx, &[]);
                    let text = c.text()?;
                    let mode = u32::from_str_radix(&text, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            c.refuse(format!("mode '{text}' is not an octal mode up to 7777"))
                        })?;
                    p.mode = Some(mode);
                }
                "owner" | "group" => {
                    let slot = if c.name() == "owner" {
                        &mut p.owner
                    } else {
                        &mut p.group
                    };
                    c.once(slot)?;
                    c.check_attrs(ctx, &[]);
                    let text = c.text()?;
                    // libvirt writes -1 for "leave as it is".
                    if text != "-1" {
                        *slot = Some(parse_number(&c, c.name(), &text)?);
                    }
                }
                "label" => {
                    return Err(c.refuse(
                        "<label> is not supported: Vireo sets no security labels on storage",
                    ))
                }
                other => {
                    return Err(c.refuse(format!("<{other}> inside <permissions> is not supported")))
                }
            }
        }
        Ok(p)
    }

    pub(crate) fn write(&self, w: &mut XmlWriter) {
        if *self == Permissions::default() {
            return;
        }
        w.open("permissions", &[]);
        if let Some(m) = self.mode {
            w.text("mode", &[], &format!("{m:04o}"));
        }
        if let Some(o) = self.owner {
            w.text("owner", &[], &o.to_string());
        }
        if let Some(g) = self.group {
            w.text("group", &[], &g.to_string());
        }
        w.close("permissions");
    }
}

/// Checks a volume or pool path: absolute, no `..` component, no control
/// characters (it becomes a file name and a command argument).
pub(crate) fn check_path(node: &Node<'_>, what: &str, path: &str) -> Result<(), Error> {
    if !path.starts_with('/') {
        return Err(node.refuse(format!("{what} '{}' is not absolute", path.escape_debug())));
    }
    if path.chars().any(char::is_control) {
        return Err(node.refuse(format!(
            "{what} '{}' contains a control character",
            path.escape_debug()
        )));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(node.refuse(format!(
            "{what} '{}' has a '..' component",
            path.escape_debug()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
