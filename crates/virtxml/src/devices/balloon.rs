//! `memballoon`: the virtio balloon, through which the host takes back
//! memory the guest does not use.

use crate::error::Error;
use crate::node::{parse_number, parse_switch, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

/// The most seconds between statistics updates accepted (a day).
pub const MAX_STATS_PERIOD: u32 = 86_400;

/// A `memballoon` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemBalloon {
    /// `model='virtio'` (true) or `model='none'` (false: no balloon).
    pub virtio: bool,
    /// `autodeflate`: the guest may deflate when it runs out of memory.
    pub autodeflate: Option<bool>,
    /// `freePageReporting`: the guest reports pages it freed.
    pub free_page_reporting: Option<bool>,
    /// `stats period`: seconds between statistics updates (0: none).
    pub stats_period: Option<u32>,
    /// `address`, `alias`, `driver`: kept for writing back.
    pub kept: Vec<RawElement>,
}

const BALLOON_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "address",
        Unmodelled::Keep("Vireo places devices on its PCI bus itself"),
    ),
    ("alias", Unmodelled::Keep("device aliases are not used")),
    (
        "driver",
        Unmodelled::Keep("virtqueue options are not applied"),
    ),
];

pub(crate) fn parse_balloon(node: &Node<'_>, ctx: &mut Ctx) -> Result<MemBalloon, Error> {
    node.check_attrs(ctx, &["model", "autodeflate", "freePageReporting"]);
    let virtio = match node.need("model")? {
        "virtio" => true,
        m @ ("virtio-transitional" | "virtio-non-transitional") => {
            node.warn(
                ctx,
                format!("model '{m}' is the modern virtio balloon in Vireo (its PCI devices are virtio 1.0)"),
            );
            true
        }
        "none" => false,
        m => {
            return Err(node.refuse(format!(
                "memballoon model '{m}' is not supported: use virtio or none"
            )))
        }
    };
    let switch = |name: &str| -> Result<Option<bool>, Error> {
        node.attr(name)
            .map(|v| parse_switch(node, name, v))
            .transpose()
    };
    let autodeflate = switch("autodeflate")?;
    let free_page_reporting = switch("freePageReporting")?;
    let mut stats_period = None;
    let mut kept = Vec::new();
    for child in node.children() {
        let c = child.node();
        if c.name() != "stats" {
            kept.push(c.unmodelled(ctx, BALLOON_UNMODELLED)?);
            continue;
        }
        c.once(&stats_period)?;
        c.leaf(ctx, &["period"])?;
        let p: u32 = parse_number(&c, "period", c.need("period")?)?;
        if p > MAX_STATS_PERIOD {
            return Err(c.refuse(format!(
                "a statistics period of {p} s is above {MAX_STATS_PERIOD} s"
            )));
        }
        stats_period = Some(p);
    }
    if !virtio && (autodeflate.is_some() || free_page_reporting.is_some() || stats_period.is_some())
    {
        return Err(node.refuse("model='none' has no balloon to set options on"));
    }
    Ok(MemBalloon {
        virtio,
        autodeflate,
        free_page_reporting,
        stats_period,
        kept,
    })
}

impl MemBalloon {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let on = |b: bool| if b { "on" } else { "off" };
        let mut attrs = vec![("model", if self.virtio { "virtio" } else { "none" })];
        if let Some(a) = self.autodeflate {
            attrs.push(("autodeflate", on(a)));
        }
        if let Some(f) = self.free_page_reporting {
            attrs.push(("freePageReporting", on(f)));
        }
        if self.stats_period.is_none() && self.kept.is_empty() {
            w.empty("memballoon", &attrs);
            return;
        }
        w.open("memballoon", &attrs);
        if let Some(p) = self.stats_period {
            w.empty("stats", &[("period", &p.to_string())]);
        }
        w.raws(&self.kept);
        w.close("memballoon");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn balloon(xml: &str) -> Result<MemBalloon, Error> {
        let el = read(xml).unwrap();
        parse_balloon(
            &Node::root(&el, "/domain/devices/memballoon"),
            &mut Ctx::default(),
        )
    }

    #[test]
    fn options_round_trip() {
        let b = balloon(
            "<memballoon model='virtio' autodeflate='on' freePageReporting='on'><stats period='10'/>\
             <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></memballoon>",
        )
        .unwrap();
        assert!(b.virtio);
        assert_eq!(
            (b.autodeflate, b.free_page_reporting),
            (Some(true), Some(true))
        );
        assert_eq!((b.stats_period, b.kept.len()), (Some(10), 1));
        let mut w = XmlWriter::default();
        b.write(&mut w);
        assert_eq!(balloon(&w.finish()).unwrap(), b);
        assert!(!balloon("<memballoon model='none'/>").unwrap().virtio);
    }

    #[test]
    fn refusals() {
        for bad in [
            "<memballoon model='xen'/>",
            "<memballoon/>",
            "<memballoon model='none'><stats period='5'/></memballoon>",
            "<memballoon model='virtio'><stats period='-1'/></memballoon>",
            "<memballoon model='virtio'><stats period='100000'/></memballoon>",
            "<memballoon model='virtio' autodeflate='maybe'/>",
        ] {
            assert!(balloon(bad).is_err(), "{bad}");
        }
    }
}
