//! `serial` and `console`: where the guest's UART or virtio console goes.

use crate::error::Error;
use crate::node::{parse_switch, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

/// How a unix socket back-end connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnixMode {
    /// Vireo listens on the path.
    Bind,
    /// Vireo connects to a listener at the path.
    Connect,
}

/// Where the characters go on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CharBackend {
    /// A pseudo-terminal (what `console` attaches to).
    Pty,
    /// Appended or written to a file.
    File {
        /// The file.
        path: String,
        /// `append='on'`: keep what the file holds.
        append: Option<bool>,
    },
    /// A unix socket.
    Unix {
        /// Listen or connect.
        mode: UnixMode,
        /// The socket's path.
        path: String,
    },
    /// Discarded; the guest reads nothing.
    Null,
}

/// Which guest device the characters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharTarget {
    /// The 16550 UART at COM1 (a `serial`, or a `console` of target type
    /// `serial`, which libvirt makes the same device as the first serial).
    Serial,
    /// A virtio console (`console` with target type `virtio`).
    Virtio,
}

/// A `serial` or `console` device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharDevice {
    /// Host side.
    pub backend: CharBackend,
    /// Guest side.
    pub target: CharTarget,
    /// Hints kept for writing back (`log`, `alias`, `address`).
    pub kept: Vec<RawElement>,
}

const CHAR_UNMODELLED: &[(&str, Unmodelled)] = &[
    ("alias", Unmodelled::Keep("device aliases are not used")),
    ("address", Unmodelled::Keep("Vireo places devices itself")),
    ("log", Unmodelled::Keep("output logging is not applied yet")),
    (
        "protocol",
        Unmodelled::Refuse("only pty, file, unix and null back-ends exist"),
    ),
];

pub(crate) fn parse_chardev(node: &Node<'_>, ctx: &mut Ctx) -> Result<CharDevice, Error> {
    node.check_attrs(ctx, &["type"]);
    let is_console = node.name() == "console";
    let kind = node.attr("type").unwrap_or("pty");
    if !matches!(kind, "pty" | "file" | "unix" | "null") {
        return Err(node.refuse(format!(
            "{} type '{kind}' is not supported: use pty, file, unix or null",
            node.name()
        )));
    }
    let mut source: Option<Node<'_>> = None;
    let mut target = None;
    let mut kept = Vec::new();
    let children = node.children();
    for child in &children {
        let c = child.node();
        match c.name() {
            "source" => {
                c.once(&source)?;
                source = Some(c);
            }
            "target" => {
                c.once(&target)?;
                c.check_attrs(ctx, &["type", "port"]);
                if let Some(port) = c.attr("port") {
                    if port != "0" {
                        return Err(c.refuse(format!(
                            "port {port} is not supported: Vireo's guest has one serial port (COM1, port 0)"
                        )));
                    }
                }
                let t = match (is_console, c.attr("type")) {
                    (false, None | Some("isa-serial")) | (true, None | Some("serial")) => {
                        CharTarget::Serial
                    }
                    (true, Some("virtio")) => CharTarget::Virtio,
                    (_, Some(t)) => {
                        return Err(c.refuse(format!(
                            "target type '{t}' is not supported: use {}",
                            if is_console {
                                "serial or virtio"
                            } else {
                                "isa-serial"
                            }
                        )))
                    }
                };
                for m in c.children() {
                    let m = m.node();
                    if m.name() != "model" || m.attr("name").is_some_and(|n| n != "isa-serial") {
                        return Err(m.refuse("only the isa-serial model is supported"));
                    }
                }
                target = Some(t);
            }
            _ => kept.push(c.unmodelled(ctx, CHAR_UNMODELLED)?),
        }
    }
    let backend = match kind {
        "pty" => {
            // A running domain's XML names the pty it got; that is state,
            // not configuration.
            if let Some(s) = source {
                s.leaf(ctx, &["path"])?;
            }
            CharBackend::Pty
        }
        "null" => {
            if let Some(s) = source {
                s.warn(ctx, "<source> is ignored: a null back-end has none");
            }
            CharBackend::Null
        }
        "file" => {
            let s = source.ok_or_else(|| node.refuse("a file back-end needs <source path=...>"))?;
            s.leaf(ctx, &["path", "append"])?;
            let append = match s.attr("append") {
                Some(v) => Some(parse_switch(&s, "append", v)?),
                None => None,
            };
            CharBackend::File {
                path: nonempty(&s, "path")?,
                append,
            }
        }
        _ => {
            let s = source
                .ok_or_else(|| node.refuse("a unix back-end needs <source mode=... path=...>"))?;
            s.leaf(ctx, &["path", "mode"])?;
            let mode = match s.attr("mode").unwrap_or("connect") {
                "bind" => UnixMode::Bind,
                "connect" => UnixMode::Connect,
                m => return Err(s.refuse(format!("unknown mode '{m}': use bind or connect"))),
            };
            CharBackend::Unix {
                mode,
                path: nonempty(&s, "path")?,
            }
        }
    };
    Ok(CharDevice {
        backend,
        target: target.unwrap_or(CharTarget::Serial),
        kept,
    })
}

fn nonempty(node: &Node<'_>, attr: &str) -> Result<String, Error> {
    let v = node.need(attr)?;
    if v.is_empty() {
        return Err(node.refuse(format!("{attr}= is empty")));
    }
    Ok(v.to_string())
}

impl CharDevice {
    /// Writes the device as `serial` or `console`.
    pub(crate) fn write(&self, w: &mut XmlWriter, element: &str) {
        let kind = match self.backend {
            CharBackend::Pty => "pty",
            CharBackend::File { .. } => "file",
            CharBackend::Unix { .. } => "unix",
            CharBackend::Null => "null",
        };
        w.open(element, &[("type", kind)]);
        match &self.backend {
            CharBackend::File { path, append } => {
                let mut attrs = vec![("path", path.as_str())];
                if let Some(a) = append {
                    attrs.push(("append", if *a { "on" } else { "off" }));
                }
                w.empty("source", &attrs);
            }
            CharBackend::Unix { mode, path } => {
                let mode = if *mode == UnixMode::Bind {
                    "bind"
                } else {
                    "connect"
                };
                w.empty("source", &[("mode", mode), ("path", path)]);
            }
            CharBackend::Pty | CharBackend::Null => {}
        }
        let target = match (element, self.target) {
            ("serial", _) => "isa-serial",
            (_, CharTarget::Serial) => "serial",
            (_, CharTarget::Virtio) => "virtio",
        };
        w.empty("target", &[("type", target), ("port", "0")]);
        w.raws(&self.kept);
        w.close(element);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn chardev(xml: &str) -> Result<CharDevice, Error> {
        let el = read(xml).unwrap();
        parse_chardev(
            &Node::root(&el, "/domain/devices/x[1]"),
            &mut Ctx::default(),
        )
    }

    #[test]
    fn backends() {
        let c = chardev("<serial type='pty'><target type='isa-serial' port='0'><model name='isa-serial'/></target></serial>").unwrap();
        assert_eq!(
            (c.backend, c.target),
            (CharBackend::Pty, CharTarget::Serial)
        );
        let c = chardev("<console type='file'><source path='/tmp/c.log' append='on'/><target type='virtio'/></console>").unwrap();
        assert_eq!(
            c.backend,
            CharBackend::File {
                path: "/tmp/c.log".into(),
                append: Some(true)
            }
        );
        assert_eq!(c.target, CharTarget::Virtio);
        let c = chardev("<serial type='unix'><source mode='bind' path='/run/s.sock'/></serial>")
            .unwrap();
        assert_eq!(
            c.backend,
            CharBackend::Unix {
                mode: UnixMode::Bind,
                path: "/run/s.sock".into()
            }
        );
        assert_eq!(
            chardev("<serial type='null'/>").unwrap().backend,
            CharBackend::Null
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "<serial type='tcp'><source mode='bind' host='::' service='4000'/></serial>",
            "<serial type='file'/>",
            "<serial type='unix'><source mode='bind'/></serial>",
            "<serial type='pty'><target port='1'/></serial>",
            "<serial type='pty'><target type='usb-serial'/></serial>",
            "<console type='pty'><target type='sclp'/></console>",
        ] {
            assert!(chardev(bad).is_err(), "{bad}");
        }
    }
}
