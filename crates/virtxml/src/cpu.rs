//! The `cpu` element: which CPU the guest sees, and its topology.

use crate::cpuset::CpuSet;
use crate::error::{Error, Location};
use crate::node::{parse_number, parse_switch, Ctx, Node, Unmodelled};
use crate::placement::MemoryAccess;
use crate::raw::{RawElement, XmlWriter};
use crate::scalars::unit_multiplier;

/// The CPU model a domain asks for; the driver maps it to a CPU template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuModel {
    /// The host's CPU as it is (`host-passthrough`).
    HostPassthrough,
    /// A named model close to the host's (`host-model`).
    HostModel,
    /// A named model (`custom`), such as `Skylake-Client-IBRS`; `None`
    /// when only features or a topology are given.
    Custom(Option<String>),
}

/// How a CPU feature is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeaturePolicy {
    /// Offered even if the host lacks it.
    Force,
    /// Offered; the domain fails if the host lacks it.
    Require,
    /// Offered if the host has it.
    Optional,
    /// Hidden.
    Disable,
    /// Hidden; the domain fails if the host has it.
    Forbid,
}

impl FeaturePolicy {
    /// The name in libvirt's XML.
    pub fn as_str(self) -> &'static str {
        match self {
            FeaturePolicy::Force => "force",
            FeaturePolicy::Require => "require",
            FeaturePolicy::Optional => "optional",
            FeaturePolicy::Disable => "disable",
            FeaturePolicy::Forbid => "forbid",
        }
    }
}

/// One `cpu/feature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeature {
    /// The policy.
    pub policy: FeaturePolicy,
    /// The feature's name (`vmx`, `avx2`).
    pub name: String,
}

/// The guest's CPU topology; the product is the vCPU count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// Sockets.
    pub sockets: u32,
    /// Dies per socket.
    pub dies: u32,
    /// Cores per die.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
}

impl CpuTopology {
    /// The number of vCPUs this topology describes, if it fits in a u32.
    pub fn vcpus(&self) -> Option<u32> {
        self.sockets
            .checked_mul(self.dies)?
            .checked_mul(self.cores)?
            .checked_mul(self.threads)
    }
}

/// One guest NUMA cell (`cpu/numa/cell`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaCell {
    /// The cell's number: cells are numbered 0 to n-1.
    pub id: u32,
    /// Its vCPUs.
    pub cpus: CpuSet,
    /// Its memory, KiB.
    pub memory_kib: u64,
    /// `memAccess`: shared or private mapping of this cell's memory.
    pub mem_access: Option<MemoryAccess>,
    /// `discard`: kept for writing back.
    pub discard: Option<bool>,
    /// `distances/sibling`: (cell, distance), as written.
    pub distances: Vec<(u32, u32)>,
}

/// The `cpu` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// The model.
    pub model: CpuModel,
    /// The topology, when given.
    pub topology: Option<CpuTopology>,
    /// Guest NUMA cells (`numa`); empty when the guest has no NUMA.
    pub numa: Vec<NumaCell>,
    /// Features added or removed.
    pub features: Vec<CpuFeature>,
    /// Hints kept for writing back (`vendor`, `cache`).
    pub kept: Vec<RawElement>,
}

const CPU_UNMODELLED: &[(&str, Unmodelled)] = &[
    ("vendor", Unmodelled::Keep("the vendor follows the model")),
    (
        "cache",
        Unmodelled::Keep("the cache description follows the model"),
    ),
];

/// Where the parts of `cpu` checked against the vCPU count were.
pub(crate) struct CpuLocations {
    pub(crate) topology: Option<Location>,
    pub(crate) numa: Option<Location>,
}

/// Parses `cpu`; also returns where the topology and NUMA cells were,
/// for checking them against the vCPU count once that is known.
pub(crate) fn parse_cpu(node: &Node<'_>, ctx: &mut Ctx) -> Result<(Cpu, CpuLocations), Error> {
    node.check_attrs(ctx, &["mode"]);
    let mut model_name = None;
    let mut topology = None;
    let mut topology_at = None;
    let mut features = Vec::new();
    let mut numa = None;
    let mut numa_at = None;
    let mut kept = Vec::new();
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "model" => {
                c.once(&model_name)?;
                c.check_attrs(ctx, &["fallback"]);
                model_name = Some(c.text()?);
            }
            "topology" => {
                c.once(&topology)?;
                c.leaf(ctx, &["sockets", "dies", "cores", "threads", "clusters"])?;
                let get = |name: &str| -> Result<u32, Error> {
                    let v: u32 = match c.attr(name) {
                        Some(v) => parse_number(&c, name, v)?,
                        None if name == "dies" || name == "clusters" => 1,
                        None => {
                            return Err(c.refuse(format!("<topology> needs a {name}= attribute")))
                        }
                    };
                    if v == 0 {
                        return Err(c.refuse(format!("{name}='0' must be at least 1")));
                    }
                    Ok(v)
                };
                if get("clusters")? != 1 {
                    return Err(c.refuse("clusters other than 1 are not supported on x86_64"));
                }
                topology = Some(CpuTopology {
                    sockets: get("sockets")?,
                    dies: get("dies")?,
                    cores: get("cores")?,
                    threads: get("threads")?,
                });
                topology_at = Some(c.location());
            }
            "numa" => {
                c.once(&numa)?;
                numa = Some(parse_numa(&c, ctx)?);
                numa_at = Some(c.location());
            }
            "feature" => {
                c.leaf(ctx, &["policy", "name"])?;
                let name = c.need("name")?.to_string();
                let policy = match c.attr("policy").unwrap_or("require") {
                    "force" => FeaturePolicy::Force,
                    "require" => FeaturePolicy::Require,
                    "optional" => FeaturePolicy::Optional,
                    "disable" => FeaturePolicy::Disable,
                    "forbid" => FeaturePolicy::Forbid,
                    p => return Err(c.refuse(format!("unknown feature policy '{p}'"))),
                };
                features.push(CpuFeature { policy, name });
            }
            _ => kept.push(c.unmodelled(ctx, CPU_UNMODELLED)?),
        }
    }
    let model = match node.attr("mode").unwrap_or("custom") {
        "host-passthrough" => CpuModel::HostPassthrough,
        "host-model" => CpuModel::HostModel,
        "custom" => CpuModel::Custom(model_name.take().filter(|m| !m.is_empty())),
        m => {
            return Err(node.refuse(format!(
                "cpu mode '{m}' is not supported: use host-passthrough, host-model or custom"
            )))
        }
    };
    if let Some(name) = model_name {
        node.warn(ctx, format!("model '{name}' is ignored in this cpu mode"));
    }
    Ok((
        Cpu {
            model,
            topology,
            numa: numa.unwrap_or_default(),
            features,
            kept,
        },
        CpuLocations {
            topology: topology_at,
            numa: numa_at,
        },
    ))
}

/// The largest distance a `sibling` may give (the ACPI SLIT's 255 means
/// "unreachable").
pub const MAX_DISTANCE: u32 = 254;

fn parse_numa(node: &Node<'_>, ctx: &mut Ctx) -> Result<Vec<NumaCell>, Error> {
    node.check_attrs(ctx, &[]);
    let mut cells: Vec<NumaCell> = Vec::new();
    for child in node.children_indexed(true) {
        let c = child.node();
        if c.name() != "cell" {
            return Err(c.refuse(format!("<{}> inside <numa> is not supported", c.name())));
        }
        c.check_attrs(
            ctx,
            &["id", "cpus", "memory", "unit", "memAccess", "discard"],
        );
        let id: u32 = match c.attr("id") {
            Some(v) => parse_number(&c, "id", v)?,
            // libvirt numbers cells without an id in document order.
            None => u32::try_from(cells.len()).unwrap_or(u32::MAX),
        };
        if id as usize != cells.len() {
            return Err(c.refuse(format!(
                "cell id {id} out of order: cells are numbered 0 to n-1 in document order"
            )));
        }
        let cpus =
            match c.attr("cpus") {
                Some(v) => CpuSet::parse(v).map_err(|e| c.refuse(format!("cpus {e}")))?,
                None => return Err(c.refuse(
                    "a cell without cpus= (memory only) is not supported: give each cell its vCPUs",
                )),
            };
        let unit = c.attr("unit").unwrap_or("KiB");
        let mult =
            unit_multiplier(unit).ok_or_else(|| c.refuse(format!("unknown unit '{unit}'")))?;
        let size: u64 = parse_number(&c, "memory", c.need("memory")?)?;
        let memory_kib = size
            .checked_mul(mult)
            .ok_or_else(|| c.refuse(format!("{size} {unit} is too large")))?
            .div_ceil(1024);
        if memory_kib == 0 {
            return Err(c.refuse("the cell's memory is zero"));
        }
        let mem_access = match c.attr("memAccess") {
            Some(v) => Some(MemoryAccess::parse(&c, "memAccess", v)?),
            None => None,
        };
        let discard = match c.attr("discard") {
            Some(v) => {
                c.warn(ctx, "discard= is kept but not acted on");
                Some(parse_switch(&c, "discard", v)?)
            }
            None => None,
        };
        let mut distances = Vec::new();
        let mut seen_distances = false;
        for d in c.children() {
            let d = d.node();
            if d.name() != "distances" || seen_distances {
                return Err(d.refuse(format!(
                    "<{}> inside <cell> is not supported here",
                    d.name()
                )));
            }
            seen_distances = true;
            d.check_attrs(ctx, &[]);
            for s in d.children_indexed(true) {
                let s = s.node();
                if s.name() != "sibling" {
                    return Err(s.refuse(format!("<{}> inside <distances>", s.name())));
                }
                s.leaf(ctx, &["id", "value"])?;
                let to: u32 = parse_number(&s, "id", s.need("id")?)?;
                let value: u32 = parse_number(&s, "value", s.need("value")?)?;
                if distances.iter().any(|(t, _)| *t == to) {
                    return Err(s.refuse(format!("the distance to cell {to} is given twice")));
                }
                let ok = if to == id {
                    value == 10
                } else {
                    (11..=MAX_DISTANCE).contains(&value)
                };
                if !ok {
                    return Err(s.refuse(format!(
                        "distance {value} from cell {id} to cell {to}: a cell is 10 from itself and 11 to {MAX_DISTANCE} from others"
                    )));
                }
                distances.push((to, value));
            }
        }
        cells.push(NumaCell {
            id,
            cpus,
            memory_kib,
            mem_access,
            discard,
            distances,
        });
    }
    if cells.is_empty() {
        return Err(node.refuse("<numa> has no <cell>"));
    }
    Ok(cells)
}

impl NumaCell {
    fn write(&self, w: &mut XmlWriter) {
        let (id, cpus, mem) = (
            self.id.to_string(),
            self.cpus.to_string(),
            self.memory_kib.to_string(),
        );
        let mut attrs = vec![
            ("id", id.as_str()),
            ("cpus", cpus.as_str()),
            ("memory", mem.as_str()),
            ("unit", "KiB"),
        ];
        if let Some(a) = self.mem_access {
            attrs.push(("memAccess", a.as_str()));
        }
        if let Some(d) = self.discard {
            attrs.push(("discard", if d { "yes" } else { "no" }));
        }
        if self.distances.is_empty() {
            w.empty("cell", &attrs);
            return;
        }
        w.open("cell", &attrs);
        w.open("distances", &[]);
        for (to, value) in &self.distances {
            let (to, value) = (to.to_string(), value.to_string());
            w.empty("sibling", &[("id", &to), ("value", &value)]);
        }
        w.close("distances");
        w.close("cell");
    }
}

impl Cpu {
    /// The distance from cell `from` to cell `to`: as written, else as
    /// written the other way, else 10 to itself and 20 to others (the
    /// defaults libvirt and the ACPI spec use).
    pub fn distance(&self, from: u32, to: u32) -> u32 {
        let given = |a: u32, b: u32| {
            self.numa
                .get(a as usize)
                .and_then(|c| c.distances.iter().find(|(t, _)| *t == b))
                .map(|(_, v)| *v)
        };
        given(from, to)
            .or_else(|| given(to, from))
            .unwrap_or(if from == to { 10 } else { 20 })
    }
}

/// Checks the NUMA cells against the vCPUs and memory: every vCPU in
/// exactly one cell, sibling ids naming cells. Returns the cells'
/// memory total, KiB.
pub(crate) fn check_numa(cpu: &Cpu, at: Option<Location>, vcpus: u32) -> Result<u64, Error> {
    let Some(location) = at else {
        return Ok(0);
    };
    let refuse = |message: String| Error::Refused {
        location: location.clone(),
        message,
    };
    let mut owner: Vec<Option<u32>> = vec![None; vcpus as usize];
    let mut total: u64 = 0;
    for cell in &cpu.numa {
        for v in cell.cpus.iter() {
            let Some(slot) = owner.get_mut(v as usize) else {
                return Err(refuse(format!(
                    "cell {} names vCPU {v}, but the domain has {vcpus} vCPUs",
                    cell.id
                )));
            };
            if let Some(other) = slot.replace(cell.id) {
                return Err(refuse(format!(
                    "vCPU {v} is in cell {other} and cell {}",
                    cell.id
                )));
            }
        }
        for (to, _) in &cell.distances {
            if *to as usize >= cpu.numa.len() {
                return Err(refuse(format!(
                    "cell {} gives a distance to cell {to}, which does not exist",
                    cell.id
                )));
            }
        }
        total = total.saturating_add(cell.memory_kib);
    }
    if let Some(v) = owner.iter().position(Option::is_none) {
        return Err(refuse(format!("vCPU {v} is in no NUMA cell")));
    }
    Ok(total)
}

/// Refuses a topology whose product is not the vCPU count.
pub(crate) fn check_topology(cpu: &Cpu, at: Option<Location>, vcpus: u32) -> Result<(), Error> {
    let (Some(t), Some(location)) = (cpu.topology, at) else {
        return Ok(());
    };
    if t.vcpus() != Some(vcpus) {
        return Err(Error::Refused {
            location,
            message: format!(
                "the topology (sockets {} × dies {} × cores {} × threads {}) does not give the {vcpus} vCPUs of <vcpu>",
                t.sockets, t.dies, t.cores, t.threads
            ),
        });
    }
    Ok(())
}

impl Cpu {
    pub(crate) fn write(&self, w: &mut XmlWriter) {
        let mode = match self.model {
            CpuModel::HostPassthrough => "host-passthrough",
            CpuModel::HostModel => "host-model",
            CpuModel::Custom(_) => "custom",
        };
        w.open("cpu", &[("mode", mode)]);
        if let CpuModel::Custom(Some(name)) = &self.model {
            w.text("model", &[], name);
        }
        if let Some(t) = self.topology {
            let (s, d, c, th) = (
                t.sockets.to_string(),
                t.dies.to_string(),
                t.cores.to_string(),
                t.threads.to_string(),
            );
            w.empty(
                "topology",
                &[
                    ("sockets", &s),
                    ("dies", &d),
                    ("cores", &c),
                    ("threads", &th),
                ],
            );
        }
        for f in &self.features {
            w.empty(
                "feature",
                &[("policy", f.policy.as_str()), ("name", &f.name)],
            );
        }
        w.raws(&self.kept);
        if !self.numa.is_empty() {
            w.open("numa", &[]);
            for cell in &self.numa {
                cell.write(w);
            }
            w.close("numa");
        }
        w.close("cpu");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn cpu(xml: &str) -> Result<(Cpu, CpuLocations), Error> {
        let el = read(xml).unwrap();
        parse_cpu(&Node::root(&el, "/domain/cpu"), &mut Ctx::default())
    }

    #[test]
    fn modes_map_to_models() {
        assert_eq!(
            cpu("<cpu mode='host-passthrough'/>").unwrap().0.model,
            CpuModel::HostPassthrough
        );
        assert_eq!(
            cpu("<cpu mode='host-model'/>").unwrap().0.model,
            CpuModel::HostModel
        );
        let (c, _) = cpu(
            "<cpu match='exact'><model fallback='allow'>Skylake-Client</model>\
                          <feature policy='disable' name='vmx'/><vendor>Intel</vendor></cpu>",
        )
        .unwrap();
        assert_eq!(c.model, CpuModel::Custom(Some("Skylake-Client".into())));
        assert_eq!(c.features[0].policy, FeaturePolicy::Disable);
        assert_eq!(c.kept.len(), 1);
        assert!(cpu("<cpu mode='maximum'/>").is_err());
        assert!(cpu("<cpu><numa/></cpu>").is_err());
    }

    #[test]
    fn topology_must_give_the_vcpu_count() {
        let (c, at) =
            cpu("<cpu mode='host-passthrough'><topology sockets='1' cores='2' threads='2'/></cpu>")
                .unwrap();
        assert_eq!(c.topology.unwrap().dies, 1);
        assert!(check_topology(&c, at.topology.clone(), 4).is_ok());
        let e = check_topology(&c, at.topology, 2).unwrap_err().to_string();
        assert!(
            e.starts_with("/domain/cpu/topology (line 1, column 30): the topology"),
            "{e}"
        );
        assert!(cpu("<cpu><topology sockets='0' cores='1' threads='1'/></cpu>").is_err());
        assert!(cpu("<cpu><topology sockets='1' threads='1'/></cpu>").is_err());
    }

    #[test]
    fn numa_cells_cover_the_vcpus_once() {
        let two = "<cpu><numa><cell id='0' cpus='0-1' memory='512' unit='MiB'><distances><sibling id='0' value='10'/><sibling id='1' value='21'/></distances></cell>\
                   <cell id='1' cpus='2-3' memory='524288'/></numa></cpu>";
        let (c, at) = cpu(two).unwrap();
        assert_eq!(c.numa.len(), 2);
        assert_eq!(c.numa[0].memory_kib, 524_288);
        assert_eq!(check_numa(&c, at.numa.clone(), 4).unwrap(), 1_048_576);
        // The distance given one way holds both ways; the rest default.
        assert_eq!(
            (c.distance(0, 1), c.distance(1, 0), c.distance(1, 1)),
            (21, 21, 10)
        );
        for (vcpus, why) in [(3, "has 3 vCPUs"), (5, "vCPU 4 is in no NUMA cell")] {
            let e = check_numa(&c, at.numa.clone(), vcpus)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{e}");
        }
        let overlap =
            "<cpu><numa><cell cpus='0-1' memory='1'/><cell cpus='1' memory='1'/></numa></cpu>";
        let (c, at) = cpu(overlap).unwrap();
        let e = check_numa(&c, at.numa, 2).unwrap_err().to_string();
        assert!(e.contains("vCPU 1 is in cell 0 and cell 1"), "{e}");
        let far = "<cpu><numa><cell cpus='0' memory='1'><distances><sibling id='3' value='20'/></distances></cell></numa></cpu>";
        let (c, at) = cpu(far).unwrap();
        assert!(check_numa(&c, at.numa, 1).is_err());
        for bad in [
            "<cpu><numa><cell id='1' cpus='0' memory='1'/></numa></cpu>",
            "<cpu><numa><cell id='0' memory='1'/></numa></cpu>",
            "<cpu><numa><cell id='0' cpus='0' memory='0'/></numa></cpu>",
            "<cpu><numa><cell id='0' cpus='0' memory='1'><distances><sibling id='0' value='20'/></distances></cell></numa></cpu>",
            "<cpu><numa><cell id='0' cpus='0' memory='1'><distances><sibling id='1' value='255'/></distances></cell></numa></cpu>",
            "<cpu><numa><cell id='0' cpus='0' memory='1' memAccess='both'/></numa></cpu>",
        ] {
            assert!(cpu(bad).is_err(), "{bad}");
        }
    }
}
