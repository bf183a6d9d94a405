//! The `domain` element: the definition as a whole.

use crate::cpu::{self, Cpu};
use crate::cpuset::CpuSet;
use crate::devices::{self, Devices};
use crate::driver::{self, DriverKind};
use crate::error::{Error, Warning};
use crate::limits::{self, BlkioTune, MemTune};
use crate::node::{Ctx, Node, Unmodelled};
use crate::os::{self, Features, Os};
use crate::placement::{self, CpuTune, MemoryBacking, NumaTune};
use crate::raw::{RawElement, XmlWriter};
use crate::scalars::{self, LifecycleAction, Vcpu};
use crate::uuid::Uuid;

/// A domain definition: the subset of libvirt's domain XML Vireo honours,
/// plus the elements it keeps without acting on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The name, unique on the host.
    pub name: String,
    /// The UUID (generated when the document has none).
    pub uuid: Uuid,
    /// A one-line title.
    pub title: Option<String>,
    /// A free-form description.
    pub description: Option<String>,
    /// Guest memory, KiB.
    pub memory_kib: u64,
    /// Memory the guest starts with, KiB (`currentMemory`; at most
    /// `memory_kib`). Without a balloon it is the same as `memory_kib`
    /// unless the document says otherwise.
    pub current_memory_kib: Option<u64>,
    /// The vCPUs.
    pub vcpu: Vcpu,
    /// `memoryBacking`: what kind of host memory backs the guest.
    pub memory_backing: Option<MemoryBacking>,
    /// `cputune`: vCPU, emulator and I/O thread pinning.
    pub cputune: Option<CpuTune>,
    /// The I/O threads' ids (`iothreads`, `iothreadids`), ascending; disks
    /// name them in `driver iothread=`.
    pub iothreads: Vec<u32>,
    /// `numatune`: host NUMA nodes for guest memory.
    pub numatune: Option<NumaTune>,
    /// `memtune`: memory limits of the domain's cgroup.
    pub memtune: Option<MemTune>,
    /// `blkiotune`: block I/O weight and throttles of its cgroup.
    pub blkiotune: Option<BlkioTune>,
    /// How the guest boots.
    pub os: Os,
    /// The `features` element, when present.
    pub features: Option<Features>,
    /// The `cpu` element, when present.
    pub cpu: Option<Cpu>,
    /// When the guest powers off (default destroy).
    pub on_poweroff: LifecycleAction,
    /// When the guest reboots (default restart).
    pub on_reboot: LifecycleAction,
    /// When the guest crashes (default destroy).
    pub on_crash: LifecycleAction,
    /// The driver that runs the domain (from Vireo's metadata element;
    /// see [`crate::driver`]).
    pub driver: DriverKind,
    /// The devices.
    pub devices: Devices,
    /// Top-level elements kept for writing back (`metadata`, `pm`,
    /// `clock`, ...).
    pub kept: Vec<RawElement>,
}

/// A parsed definition and what was accepted without being acted on.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The definition.
    pub domain: Domain,
    /// One warning per element or attribute kept or dropped unused.
    pub warnings: Vec<Warning>,
}

const DOMAIN_UNMODELLED: &[(&str, Unmodelled)] = &[
    (
        "pm",
        Unmodelled::Keep("Vireo's guest has no suspend-to-memory or -disk"),
    ),
    (
        "resource",
        Unmodelled::Keep("resource partitions are not applied"),
    ),
    (
        "seclabel",
        Unmodelled::Keep("security labels are not applied"),
    ),
    (
        "on_lockfailure",
        Unmodelled::Keep("lock managers come with storage pools"),
    ),
    ("perf", Unmodelled::Keep("perf events are not collected")),
    (
        "maxMemory",
        Unmodelled::Refuse("memory hot-plug is not supported"),
    ),
    (
        "vcpus",
        Unmodelled::Refuse("per-vCPU settings are not supported"),
    ),
    (
        "sysinfo",
        Unmodelled::Refuse("Vireo provides no SMBIOS tables"),
    ),
    (
        "bootloader",
        Unmodelled::Refuse("host-side boot loaders are not supported"),
    ),
    (
        "bootloader_args",
        Unmodelled::Refuse("host-side boot loaders are not supported"),
    ),
    (
        "genid",
        Unmodelled::Refuse("Vireo has no VM generation ID device"),
    ),
    ("idmap", Unmodelled::Refuse("ID maps are for containers")),
    (
        "keywrap",
        Unmodelled::Refuse("Vireo has no s390 key wrapping"),
    ),
    (
        "launchSecurity",
        Unmodelled::Refuse("confidential guests are not supported"),
    ),
    (
        "throttlegroups",
        Unmodelled::Refuse("throttle groups are not supported"),
    ),
];

impl Domain {
    /// Parses a domain definition. Fails on malformed XML (with line and
    /// column) and on anything Vireo cannot honour that the guest would
    /// notice (naming the element, its path and position); accepts with
    /// one warning each what only states a default or a hint.
    pub fn parse(xml: &str) -> Result<Parsed, Error> {
        let (domain, warnings) = crate::node::parse_document(xml, parse_domain)?;
        Ok(Parsed { domain, warnings })
    }

    /// Writes the definition back as libvirt domain XML, kept elements
    /// included.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::default();
        w.open("domain", &[("type", "kvm")]);
        w.text("name", &[], &self.name);
        w.text("uuid", &[], &self.uuid.to_string());
        if let Some(t) = &self.title {
            w.text("title", &[], t);
        }
        if let Some(d) = &self.description {
            w.text("description", &[], d);
        }
        // libvirt writes metadata here, before the resources.
        let (metadata, rest): (Vec<RawElement>, Vec<RawElement>) = self
            .kept
            .iter()
            .cloned()
            .partition(|e| e.name == "metadata");
        if let Some(m) = driver::metadata_to_write(metadata.first(), self.driver) {
            w.raw(&m);
        }
        w.text("memory", &[("unit", "KiB")], &self.memory_kib.to_string());
        if let Some(c) = self.current_memory_kib {
            w.text("currentMemory", &[("unit", "KiB")], &c.to_string());
        }
        if let Some(t) = &self.blkiotune {
            t.write(&mut w);
        }
        if let Some(t) = &self.memtune {
            t.write(&mut w);
        }
        if let Some(m) = &self.memory_backing {
            m.write(&mut w);
        }
        let cpuset = self.vcpu.cpuset.as_ref().map(ToString::to_string);
        let mut vcpu_attrs = vec![("placement", "static")];
        if let Some(set) = &cpuset {
            vcpu_attrs.push(("cpuset", set));
        }
        w.text("vcpu", &vcpu_attrs, &self.vcpu.count.to_string());
        if !self.iothreads.is_empty() {
            w.text("iothreads", &[], &self.iothreads.len().to_string());
            // The ids are written out unless they are 1..=N, which the
            // count alone says.
            if !self.iothreads.iter().zip(1u32..).all(|(&a, b)| a == b) {
                w.open("iothreadids", &[]);
                for id in &self.iothreads {
                    w.empty("iothread", &[("id", &id.to_string())]);
                }
                w.close("iothreadids");
            }
        }
        if let Some(t) = &self.cputune {
            t.write(&mut w);
        }
        if let Some(t) = &self.numatune {
            t.write(&mut w);
        }
        self.os.write(&mut w);
        if let Some(f) = &self.features {
            f.write(&mut w);
        }
        if let Some(c) = &self.cpu {
            c.write(&mut w);
        }
        w.text("on_poweroff", &[], self.on_poweroff.as_str());
        w.text("on_reboot", &[], self.on_reboot.as_str());
        w.text("on_crash", &[], self.on_crash.as_str());
        w.raws(&rest);
        self.devices.write(&mut w);
        w.close("domain");
        w.finish()
    }
}

fn parse_domain(node: &Node<'_>, ctx: &mut Ctx) -> Result<Domain, Error> {
    if node.name() != "domain" {
        return Err(node.refuse(format!(
            "the root element is <{}>, not <domain>",
            node.name()
        )));
    }
    node.check_attrs(ctx, &["type", "id"]);
    match node.attr("type") {
        Some("kvm") => {}
        Some(t) => {
            return Err(node.refuse(format!(
                "domain type '{t}' is not supported: Vireo runs kvm domains"
            )))
        }
        None => return Err(node.refuse("<domain> needs type='kvm'")),
    }
    if node.attr("id").is_some() {
        node.warn(ctx, "id= is a running domain's number and is ignored");
    }

    let mut name = None;
    let mut uuid = None;
    let mut title = None;
    let mut description = None;
    let mut memory = None;
    let mut current = None;
    let mut vcpu = None;
    let mut memory_backing = None;
    let mut cputune = None;
    let mut iothreads_count = None;
    let mut iothread_ids: Option<Vec<u32>> = None;
    let mut numatune = None;
    let mut memtune = None;
    let mut blkiotune = None;
    let mut os = None;
    let mut features = None;
    let mut cpu = None;
    let mut actions: [Option<LifecycleAction>; 3] = [None; 3];
    let mut devices = None;
    let mut kept = Vec::new();
    let mut metadata_seen = None;
    let mut driver = DriverKind::Vireo;
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
            "title" => {
                c.once(&title)?;
                c.check_attrs(ctx, &[]);
                let t = c.raw_text()?;
                if t.contains('\n') {
                    return Err(c.refuse("the title must be one line"));
                }
                title = Some(t);
            }
            "description" => {
                c.once(&description)?;
                c.check_attrs(ctx, &[]);
                description = Some(c.raw_text()?);
            }
            "memory" => {
                c.once(&memory)?;
                memory = Some(scalars::parse_memory_kib(&c, ctx)?);
            }
            "currentMemory" => {
                c.once(&current)?;
                current = Some((scalars::parse_memory_kib(&c, ctx)?, c.location()));
            }
            "vcpu" => {
                c.once(&vcpu)?;
                vcpu = Some(scalars::parse_vcpu(&c, ctx)?);
            }
            "memtune" => {
                c.once(&memtune)?;
                memtune = Some(limits::parse_memtune(&c, ctx)?);
            }
            "blkiotune" => {
                c.once(&blkiotune)?;
                blkiotune = Some(limits::parse_blkiotune(&c, ctx)?);
            }
            "memoryBacking" => {
                c.once(&memory_backing)?;
                memory_backing = Some(placement::parse_memory_backing(&c, ctx)?);
            }
            "iothreads" => {
                c.once(&iothreads_count)?;
                c.check_attrs(ctx, &[]);
                let n: u32 = crate::node::parse_number(&c, "iothreads", &c.text()?)?;
                if n > MAX_IOTHREADS {
                    return Err(c.refuse(format!(
                        "{n} I/O threads is more than the {MAX_IOTHREADS} Vireo allows"
                    )));
                }
                iothreads_count = Some(n);
            }
            "iothreadids" => {
                c.once(&iothread_ids)?;
                c.check_attrs(ctx, &[]);
                let mut ids = Vec::new();
                for child in c.children() {
                    let t = child.node();
                    if t.name() != "iothread" {
                        return Err(t.refuse("iothreadids holds only <iothread id=...> elements"));
                    }
                    t.leaf(ctx, &["id"])?;
                    // Bounded before the duplicate check below, which is
                    // quadratic in the list an untrusted file may make long.
                    if ids.len() >= MAX_IOTHREADS as usize {
                        return Err(t.refuse(format!(
                            "iothreadids lists more than the {MAX_IOTHREADS} I/O threads Vireo allows"
                        )));
                    }
                    let id: u32 = crate::node::parse_number(&t, "id", t.need("id")?)?;
                    if id == 0 || ids.contains(&id) {
                        return Err(t.refuse(format!("I/O thread id {id} is 0 or given twice")));
                    }
                    ids.push(id);
                }
                iothread_ids = Some(ids);
            }
            "cputune" => {
                c.once(&cputune)?;
                cputune = Some((placement::parse_cputune(&c, ctx)?, c.location()));
            }
            "numatune" => {
                c.once(&numatune)?;
                numatune = Some((placement::parse_numatune(&c, ctx)?, c.location()));
            }
            "os" => {
                c.once(&os)?;
                os = Some(os::parse_os(&c, ctx)?);
            }
            "features" => {
                c.once(&features)?;
                features = Some(os::parse_features(&c, ctx)?);
            }
            "cpu" => {
                c.once(&cpu)?;
                cpu = Some(cpu::parse_cpu(&c, ctx)?);
            }
            "on_poweroff" | "on_reboot" | "on_crash" => {
                let i = match c.name() {
                    "on_poweroff" => 0,
                    "on_reboot" => 1,
                    _ => 2,
                };
                c.once(&actions[i])?;
                actions[i] = Some(scalars::parse_action(&c, ctx)?);
            }
            "devices" => {
                c.once(&devices)?;
                devices = Some(devices::parse_devices(&c, ctx)?);
            }
            "clock" => kept.push(parse_clock(&c, ctx)?),
            "metadata" => {
                c.once(&metadata_seen)?;
                let (raw, choice) = driver::parse_metadata(&c, ctx)?;
                metadata_seen = Some(());
                driver = choice.unwrap_or_default();
                kept.push(raw);
            }
            _ => kept.push(c.unmodelled(ctx, DOMAIN_UNMODELLED)?),
        }
    }

    let name = name.ok_or_else(|| node.refuse("the domain has no <name>"))?;
    let mut memory_kib = memory.ok_or_else(|| node.refuse("the domain has no <memory>"))?;
    let vcpu = match vcpu {
        Some(v) => v,
        None => Vcpu {
            count: 1,
            cpuset: None,
        },
    };
    let os = os.ok_or_else(|| {
        node.refuse("the domain has no <os>: Vireo boots a kernel given in <os><kernel>")
    })?;
    let cpu = match cpu {
        Some((cpu, at)) => {
            cpu::check_topology(&cpu, at.topology.clone(), vcpu.count)?;
            let cells_kib = cpu::check_numa(&cpu, at.numa.clone(), vcpu.count)?;
            if let Some(location) = at.numa.filter(|_| cells_kib != memory_kib) {
                // libvirt too makes the cells' sum the domain's memory.
                ctx.warnings.push(Warning {
                    location,
                    message: format!(
                        "the NUMA cells hold {cells_kib} KiB and <memory> says {memory_kib} KiB: memory is set to the cells' sum, as libvirt does"
                    ),
                });
                memory_kib = cells_kib;
            }
            Some(cpu)
        }
        None => None,
    };
    let cells = cpu.as_ref().map_or(0, |c| c.numa.len());
    let iothreads = iothread_list(iothreads_count, iothread_ids.unwrap_or_default())
        .map_err(|e| node.refuse(e))?;
    let cputune = match cputune {
        Some((t, location)) => {
            if let Some((id, _)) = t.iothreadpins.iter().find(|(i, _)| !iothreads.contains(i)) {
                return Err(Error::Refused {
                    location,
                    message: format!(
                        "iothreadpin names I/O thread {id}, which <iothreads> does not define"
                    ),
                });
            }
            if let Some((v, _)) = t.vcpupins.iter().find(|(v, _)| *v >= vcpu.count) {
                return Err(Error::Refused {
                    location,
                    message: format!(
                        "vcpupin names vCPU {v}, but the domain has {} vCPUs",
                        vcpu.count
                    ),
                });
            }
            Some(t)
        }
        None => None,
    };
    let numatune = match numatune {
        Some((t, location)) => {
            if let Some((cell, _)) = t.memnodes.iter().find(|(c, _)| *c as usize >= cells) {
                return Err(Error::Refused {
                    location,
                    message: format!(
                        "memnode names guest NUMA cell {cell}, but <cpu><numa> defines {cells} cells"
                    ),
                });
            }
            Some(t)
        }
        None => None,
    };
    if let Some(pages) = memory_backing.as_ref().and_then(|m| m.hugepages.as_ref()) {
        for p in pages {
            if let Some(n) = p.nodeset.as_ref().and_then(CpuSet::max) {
                if n as usize >= cells.max(1) {
                    return Err(node.refuse(format!(
                        "a huge page size is given for guest NUMA cell {n}, which does not exist"
                    )));
                }
            }
        }
    }
    let current_memory_kib = match current {
        Some((kib, location)) if kib > memory_kib => {
            ctx.warnings.push(Warning {
                location,
                message: format!(
                    "currentMemory ({kib} KiB) is above memory ({memory_kib} KiB) and is lowered to it, as libvirt does"
                ),
            });
            Some(memory_kib)
        }
        Some((kib, _)) => Some(kib),
        None => None,
    };
    let devices = devices.unwrap_or_default();
    if let Some(d) = devices
        .disks
        .iter()
        .find(|d| d.iothread.is_some_and(|i| !iothreads.contains(&i)))
    {
        return Err(node.refuse(format!(
            "disk {} names I/O thread {}, which <iothreads> does not define",
            d.target,
            d.iothread.unwrap_or_default()
        )));
    }
    let uuid = match uuid {
        Some(u) => u,
        None => Uuid::generate()?,
    };
    Ok(Domain {
        name,
        uuid,
        title,
        description,
        memory_kib,
        current_memory_kib,
        vcpu,
        memory_backing,
        cputune,
        iothreads,
        numatune,
        memtune,
        blkiotune,
        os,
        features,
        cpu,
        on_poweroff: actions[0].unwrap_or(LifecycleAction::Destroy),
        on_reboot: actions[1].unwrap_or(LifecycleAction::Restart),
        on_crash: actions[2].unwrap_or(LifecycleAction::Destroy),
        driver,
        devices,
        kept,
    })
}

/// Most I/O threads a domain may define.
const MAX_IOTHREADS: u32 = 64;

/// The I/O thread ids: those `iothreadids` lists, and as many more as
/// `iothreads` counts beyond them, numbered from 1 and skipping the
/// listed ones, as libvirt fills them.
fn iothread_list(count: Option<u32>, mut ids: Vec<u32>) -> Result<Vec<u32>, String> {
    let count = count.unwrap_or(0);
    if ids.len() > count as usize {
        return Err(format!(
            "iothreadids lists {} I/O threads but <iothreads> is {count}",
            ids.len()
        ));
    }
    let mut next = 1;
    while ids.len() < count as usize {
        if !ids.contains(&next) {
            ids.push(next);
        }
        next += 1;
    }
    ids.sort_unstable();
    Ok(ids)
}

/// `clock`: the RTC in UTC is what Vireo's guest has; timers only state
/// tick policies, except an HPET, which the guest would look for.
fn parse_clock(node: &Node<'_>, ctx: &mut Ctx) -> Result<RawElement, Error> {
    match node.attr("offset").unwrap_or("utc") {
        "utc" => {}
        o => {
            return Err(node.refuse(format!(
                "clock offset '{o}' is not supported: Vireo's guest clock is in UTC"
            )))
        }
    }
    for t in node.children() {
        let t = t.node();
        if t.name() == "timer" && t.attr("name") == Some("hpet") && t.attr("present") != Some("no")
        {
            return Err(t.refuse(
                "an HPET is not supported: Vireo's guest has none (present='no' is accepted)",
            ));
        }
    }
    node.warn(
        ctx,
        "<clock> is kept but not acted on: it states the UTC clock Vireo's guest has",
    );
    Ok(node.el.to_raw())
}
