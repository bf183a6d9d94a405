//! `rng`: a virtio entropy device.

use crate::error::Error;
use crate::node::{Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

/// Where the entropy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RngBackend {
    /// `backend model='random'`: `/dev/urandom` or `/dev/random`.
    Random(String),
    /// `backend model='builtin'`: the host's getrandom().
    Builtin,
}

/// An `rng` device (always virtio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    /// The host source.
    pub backend: RngBackend,
    /// Hints kept for writing back (`rate`, `address`, `alias`).
    pub kept: Vec<RawElement>,
}

const RNG_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "rate",
        Unmodelled::Keep("the entropy rate is not limited yet"),
    ),
    (
        "address",
        Unmodelled::Keep("Vireo places devices on its PCI bus itself"),
    ),
    ("alias", Unmodelled::Keep("device aliases are not used")),
    ("driver", Unmodelled::Keep("back-end tuning is not applied")),
];

pub(crate) fn parse_rng(node: &Node<'_>, ctx: &mut Ctx) -> Result<Rng, Error> {
    node.check_attrs(ctx, &["model"]);
    let model = node.need("model")?;
    if model != "virtio" {
        return Err(node.refuse(format!("rng model '{model}' is not supported: use virtio")));
    }
    let mut backend = None;
    let mut kept = Vec::new();
    for child in node.children() {
        let c = child.node();
        if c.name() != "backend" {
            kept.push(c.unmodelled(ctx, RNG_UNMODELLED)?);
            continue;
        }
        c.once(&backend)?;
        c.check_attrs(ctx, &["model"]);
        backend = Some(match c.need("model")? {
            "random" => {
                let path = c.text()?;
                let path = if path.is_empty() {
                    "/dev/urandom".to_string()
                } else {
                    path
                };
                if path != "/dev/urandom" && path != "/dev/random" {
                    return Err(c.refuse(format!(
                        "rng source '{path}' is not supported: use /dev/urandom or /dev/random"
                    )));
                }
                RngBackend::Random(path)
            }
            "builtin" => RngBackend::Builtin,
            m => {
                return Err(c.refuse(format!(
                    "rng backend '{m}' is not supported: use random or builtin"
                )))
            }
        });
    }
    let backend = backend.ok_or_else(|| node.refuse("the rng has no <backend>"))?;
    Ok(Rng { backend, kept })
}

impl Rng {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("rng", &[("model", "virtio")]);
        match &self.backend {
            RngBackend::Random(p) => w.text("backend", &[("model", "random")], p),
            RngBackend::Builtin => w.empty("backend", &[("model", "builtin")]),
        }
        w.raws(&self.kept);
        w.close("rng");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn rng(xml: &str) -> Result<Rng, Error> {
        let el = read(xml).unwrap();
        parse_rng(
            &Node::root(&el, "/domain/devices/rng[1]"),
            &mut Ctx::default(),
        )
    }

    #[test]
    fn backends() {
        let r = rng("<rng model='virtio'><rate bytes='1024' period='1000'/><backend model='random'>/dev/random</backend></rng>").unwrap();
        assert_eq!(r.backend, RngBackend::Random("/dev/random".into()));
        assert_eq!(r.kept.len(), 1);
        let r = rng("<rng model='virtio'><backend model='random'/></rng>").unwrap();
        assert_eq!(r.backend, RngBackend::Random("/dev/urandom".into()));
        for bad in [
            "<rng model='virtio'><backend model='egd' type='tcp'/></rng>",
            "<rng model='virtio-transitional'><backend model='random'/></rng>",
            "<rng model='virtio'><backend model='random'>/dev/hwrng</backend></rng>",
            "<rng model='virtio'/>",
        ] {
            assert!(rng(bad).is_err(), "{bad}");
        }
    }
}
