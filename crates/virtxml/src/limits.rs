//! Resource limits: `memtune` and `blkiotune` (and, in
//! [`crate::placement`], `cputune`'s shares and bandwidth).

use crate::error::Error;
use crate::node::{parse_number, Ctx, Node};
use crate::raw::XmlWriter;
use crate::scalars::unit_multiplier;

/// `memtune`, KiB each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemTune {
    /// `hard_limit`: the most memory the domain's processes may use.
    pub hard_limit_kib: Option<u64>,
    /// `soft_limit`: what it is pushed back to under host memory pressure.
    pub soft_limit_kib: Option<u64>,
    /// `swap_hard_limit`: memory plus swap.
    pub swap_hard_limit_kib: Option<u64>,
}

/// The largest limit accepted, KiB (libvirt's "unlimited" is this too).
pub const UNLIMITED_KIB: u64 = 9_007_199_254_740_991;

fn kib(c: &Node<'_>, ctx: &mut Ctx) -> Result<u64, Error> {
    c.check_attrs(ctx, &["unit"]);
    let unit = c.attr("unit").unwrap_or("KiB");
    let mult = unit_multiplier(unit).ok_or_else(|| c.refuse(format!("unknown unit '{unit}'")))?;
    let v: u64 = parse_number(c, c.name(), &c.text()?)?;
    let kib = v
        .checked_mul(mult)
        .ok_or_else(|| c.refuse(format!("{v} {unit} is too large")))?
        .div_ceil(1024);
    Ok(kib.min(UNLIMITED_KIB))
}

pub(crate) fn parse_memtune(node: &Node<'_>, ctx: &mut Ctx) -> Result<MemTune, Error> {
    node.check_attrs(ctx, &[]);
    let mut m = MemTune::default();
    for child in node.children() {
        let c = child.node();
        let slot = match c.name() {
            "hard_limit" => &mut m.hard_limit_kib,
            "soft_limit" => &mut m.soft_limit_kib,
            "swap_hard_limit" => &mut m.swap_hard_limit_kib,
            "min_guarantee" => {
                return Err(c.refuse("<min_guarantee> is not supported: it is VMware's"))
            }
            n => return Err(c.refuse(format!("<{n}> inside <memtune> is not supported"))),
        };
        c.once(slot)?;
        *slot = Some(kib(&c, ctx)?);
    }
    if let (Some(hard), Some(swap)) = (m.hard_limit_kib, m.swap_hard_limit_kib) {
        if swap < hard {
            return Err(node.refuse(format!(
                "swap_hard_limit ({swap} KiB) is below hard_limit ({hard} KiB): it counts memory and swap together"
            )));
        }
    }
    Ok(m)
}

impl MemTune {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("memtune", &[]);
        for (name, v) in [
            ("hard_limit", self.hard_limit_kib),
            ("soft_limit", self.soft_limit_kib),
            ("swap_hard_limit", self.swap_hard_limit_kib),
        ] {
            if let Some(v) = v {
                w.text(name, &[("unit", "KiB")], &v.to_string());
            }
        }
        w.close("memtune");
    }
}

/// One `blkiotune/device`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlkioDevice {
    /// The host block device (`/dev/sda`).
    pub path: String,
    /// Its weight, 100 to 1000.
    pub weight: Option<u64>,
    /// Bytes per second read.
    pub read_bytes_sec: Option<u64>,
    /// Bytes per second written.
    pub write_bytes_sec: Option<u64>,
    /// Read operations per second.
    pub read_iops_sec: Option<u64>,
    /// Write operations per second.
    pub write_iops_sec: Option<u64>,
}

/// `blkiotune`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlkioTune {
    /// The domain's weight, 100 to 1000.
    pub weight: Option<u64>,
    /// Per-device weights and throttles.
    pub devices: Vec<BlkioDevice>,
}

fn weight(c: &Node<'_>) -> Result<u64, Error> {
    let w: u64 = parse_number(c, "weight", &c.text()?)?;
    if !(100..=1000).contains(&w) {
        return Err(c.refuse(format!("weight {w} must be 100 to 1000")));
    }
    Ok(w)
}

pub(crate) fn parse_blkiotune(node: &Node<'_>, ctx: &mut Ctx) -> Result<BlkioTune, Error> {
    node.check_attrs(ctx, &[]);
    let mut t = BlkioTune::default();
    for child in node.children_indexed(true) {
        let c = child.node();
        match c.name() {
            "weight" => {
                c.once(&t.weight)?;
                c.check_attrs(ctx, &[]);
                t.weight = Some(weight(&c)?);
            }
            "device" => {
                c.check_attrs(ctx, &[]);
                let mut d = BlkioDevice::default();
                for f in c.children() {
                    let f = f.node();
                    f.check_attrs(ctx, &[]);
                    match f.name() {
                        "path" => {
                            let p = f.text()?;
                            if !p.starts_with('/') {
                                return Err(f.refuse(format!("device path '{p}' must be absolute")));
                            }
                            d.path = p;
                        }
                        "weight" => d.weight = Some(weight(&f)?),
                        n @ ("read_bytes_sec" | "write_bytes_sec" | "read_iops_sec"
                        | "write_iops_sec") => {
                            let v: u64 = parse_number(&f, n, &f.text()?)?;
                            let slot = match n {
                                "read_bytes_sec" => &mut d.read_bytes_sec,
                                "write_bytes_sec" => &mut d.write_bytes_sec,
                                "read_iops_sec" => &mut d.read_iops_sec,
                                _ => &mut d.write_iops_sec,
                            };
                            *slot = (v > 0).then_some(v);
                        }
                        n => {
                            return Err(f.refuse(format!("<{n}> inside <device> is not supported")))
                        }
                    }
                }
                if d.path.is_empty() {
                    return Err(c.refuse("the device has no <path>"));
                }
                if t.devices.iter().any(|o| o.path == d.path) {
                    return Err(c.refuse(format!("device {} is given twice", d.path)));
                }
                t.devices.push(d);
            }
            n => return Err(c.refuse(format!("<{n}> inside <blkiotune> is not supported"))),
        }
    }
    Ok(t)
}

impl BlkioTune {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        w.open("blkiotune", &[]);
        if let Some(v) = self.weight {
            w.text("weight", &[], &v.to_string());
        }
        for d in &self.devices {
            w.open("device", &[]);
            w.text("path", &[], &d.path);
            for (name, v) in [
                ("weight", d.weight),
                ("read_bytes_sec", d.read_bytes_sec),
                ("write_bytes_sec", d.write_bytes_sec),
                ("read_iops_sec", d.read_iops_sec),
                ("write_iops_sec", d.write_iops_sec),
            ] {
                if let Some(v) = v {
                    w.text(name, &[], &v.to_string());
                }
            }
            w.close("device");
        }
        w.close("blkiotune");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn parse<T>(xml: &str, f: fn(&Node<'_>, &mut Ctx) -> Result<T, Error>) -> Result<T, Error> {
        let el = read(xml).unwrap();
        f(&Node::root(&el, "/domain/x"), &mut Ctx::default())
    }

    #[test]
    fn memtune_units_and_refusals() {
        let m = parse(
            "<memtune><hard_limit unit='MiB'>64</hard_limit><swap_hard_limit unit='GiB'>1</swap_hard_limit></memtune>",
            parse_memtune,
        )
        .unwrap();
        assert_eq!(
            (m.hard_limit_kib, m.swap_hard_limit_kib),
            (Some(65536), Some(1 << 20))
        );
        for bad in [
            "<memtune><min_guarantee>1</min_guarantee></memtune>",
            "<memtune><hard_limit>2</hard_limit><swap_hard_limit>1</swap_hard_limit></memtune>",
            "<memtune><hard_limit>1</hard_limit><hard_limit>1</hard_limit></memtune>",
        ] {
            assert!(parse(bad, parse_memtune).is_err(), "{bad}");
        }
    }

    #[test]
    fn blkiotune_devices() {
        let t = parse(
            "<blkiotune><weight>800</weight><device><path>/dev/loop0</path><read_iops_sec>100</read_iops_sec></device></blkiotune>",
            parse_blkiotune,
        )
        .unwrap();
        assert_eq!(t.weight, Some(800));
        assert_eq!(t.devices[0].read_iops_sec, Some(100));
        for bad in [
            "<blkiotune><weight>5</weight></blkiotune>",
            "<blkiotune><device><read_iops_sec>1</read_iops_sec></device></blkiotune>",
            "<blkiotune><device><path>sda</path></device></blkiotune>",
        ] {
            assert!(parse(bad, parse_blkiotune).is_err(), "{bad}");
        }
    }
}
