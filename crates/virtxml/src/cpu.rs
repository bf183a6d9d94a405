//! The `cpu` element: which CPU the guest sees, and its topology.

use crate::error::{Error, Location};
use crate::node::{parse_number, Ctx, Node, Unmodelled};
use crate::raw::{RawElement, XmlWriter};

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

/// The `cpu` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// The model.
    pub model: CpuModel,
    /// The topology, when given.
    pub topology: Option<CpuTopology>,
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
    (
        "numa",
        Unmodelled::Refuse("guest NUMA nodes come with memory placement"),
    ),
];

/// Parses `cpu`; also returns where the topology was, for checking it
/// against the vCPU count once that is known.
pub(crate) fn parse_cpu(node: &Node<'_>, ctx: &mut Ctx) -> Result<(Cpu, Option<Location>), Error> {
    node.check_attrs(ctx, &["mode"]);
    let mut model_name = None;
    let mut topology = None;
    let mut topology_at = None;
    let mut features = Vec::new();
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
            features,
            kept,
        },
        topology_at,
    ))
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
        w.close("cpu");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn cpu(xml: &str) -> Result<(Cpu, Option<Location>), Error> {
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
        assert!(check_topology(&c, at.clone(), 4).is_ok());
        let e = check_topology(&c, at, 2).unwrap_err().to_string();
        assert!(
            e.starts_with("/domain/cpu/topology (line 1, column 30): the topology"),
            "{e}"
        );
        assert!(cpu("<cpu><topology sockets='0' cores='1' threads='1'/></cpu>").is_err());
        assert!(cpu("<cpu><topology sockets='1' threads='1'/></cpu>").is_err());
    }
}
