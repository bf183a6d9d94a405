//! The domain's scalar elements: name, memory sizes, vCPUs and the
//! lifecycle actions.

use crate::cpuset::CpuSet;
use crate::error::Error;
use crate::node::{parse_number, Ctx, Node};

/// Longest name accepted, in bytes (a file name under the state directory).
pub const MAX_NAME_BYTES: usize = 200;

/// Checks a domain name: not empty, no `/`, no control characters, and
/// short enough to be a file name.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.contains('/') {
        return Err(format!("name '{}' contains '/'", name.escape_debug()));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "name '{}' contains a control character",
            name.escape_debug()
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("the name is longer than {MAX_NAME_BYTES} bytes"));
    }
    Ok(())
}

/// The multiplier of a libvirt size unit, with libvirt's own rule (its
/// `virScaleInteger`): letters are matched ignoring case; `b`, `byte` and
/// `bytes` are 1; a prefix letter (`k`, `m`, `g`, `t`, `p`, `e`) alone or
/// followed by `iB` counts in powers of 1024, followed by `B` in powers
/// of 1000. So `KB` is 1000 bytes and `k`, `K` and `KiB` are 1024.
pub fn unit_multiplier(unit: &str) -> Option<u64> {
    let lower = unit.to_ascii_lowercase();
    if matches!(lower.as_str(), "b" | "byte" | "bytes") {
        return Some(1);
    }
    let mut chars = lower.chars();
    let exponent = match chars.next()? {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    let base: u64 = match chars.as_str() {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    base.checked_pow(exponent)
}

/// Parses a `memory` or `currentMemory` element into KiB, rounding a size
/// that is not a whole number of KiB up, as libvirt does.
pub(crate) fn parse_memory_kib(node: &Node<'_>, ctx: &mut Ctx) -> Result<u64, Error> {
    node.check_attrs(ctx, &["unit", "dumpCore"]);
    if node.attr("dumpCore").is_some() {
        node.warn(ctx, "dumpCore is a hint Vireo does not act on");
    }
    let unit = node.attr("unit").filter(|u| !u.is_empty()).unwrap_or("KiB");
    let multiplier =
        unit_multiplier(unit).ok_or_else(|| node.refuse(format!("unknown unit '{unit}'")))?;
    let value: u64 = parse_number(node, "size", &node.text()?)?;
    let bytes = value
        .checked_mul(multiplier)
        .ok_or_else(|| node.refuse(format!("{value} {unit} is too large")))?;
    let kib = bytes.div_ceil(1024);
    if kib == 0 {
        return Err(node.refuse("memory size is zero"));
    }
    Ok(kib)
}

/// Most vCPUs a domain may have (APIC IDs fit in 8 bits without interrupt
/// remapping).
pub const MAX_VCPUS: u32 = 255;

/// The `vcpu` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vcpu {
    /// Number of vCPUs the guest has.
    pub count: u32,
    /// The host CPUs the vCPUs (and, without `emulatorpin`, the other
    /// threads) may run on (`cpuset`).
    pub cpuset: Option<CpuSet>,
}

pub(crate) fn parse_vcpu(node: &Node<'_>, ctx: &mut Ctx) -> Result<Vcpu, Error> {
    node.check_attrs(ctx, &["placement", "current", "cpuset"]);
    let count: u32 = parse_number(node, "vcpu count", &node.text()?)?;
    if count == 0 || count > MAX_VCPUS {
        return Err(node.refuse(format!("vcpu count {count} is outside 1 to {MAX_VCPUS}")));
    }
    match node.attr("placement") {
        None | Some("static") => {}
        Some("auto") => {
            return Err(node.refuse(
                "placement='auto' is not supported: it asks numad for a placement and Vireo does not run numad",
            ))
        }
        Some(p) => return Err(node.refuse(format!("unknown placement '{p}'"))),
    }
    if let Some(current) = node.attr("current") {
        let current: u32 = parse_number(node, "current", current)?;
        if current != count {
            return Err(node.refuse(format!(
                "current='{current}' differs from the {count} vCPUs: Vireo has no vCPU hot-plug, so all vCPUs are online from the start"
            )));
        }
    }
    let cpuset = match node.attr("cpuset") {
        Some(s) => Some(CpuSet::parse(s).map_err(|e| node.refuse(format!("cpuset {e}")))?),
        None => None,
    };
    Ok(Vcpu { count, cpuset })
}

/// What to do when the guest powers off, reboots or crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleAction {
    /// End the domain.
    Destroy,
    /// Start it again.
    Restart,
    /// Keep the stopped VM's resources for inspection.
    Preserve,
    /// Restart under a new name (libvirt keeps this for Xen).
    RenameRestart,
    /// Dump the guest's memory, then destroy (on_crash only).
    CoredumpDestroy,
    /// Dump the guest's memory, then restart (on_crash only).
    CoredumpRestart,
}

impl LifecycleAction {
    /// The name in libvirt's XML.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleAction::Destroy => "destroy",
            LifecycleAction::Restart => "restart",
            LifecycleAction::Preserve => "preserve",
            LifecycleAction::RenameRestart => "rename-restart",
            LifecycleAction::CoredumpDestroy => "coredump-destroy",
            LifecycleAction::CoredumpRestart => "coredump-restart",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        [
            LifecycleAction::Destroy,
            LifecycleAction::Restart,
            LifecycleAction::Preserve,
            LifecycleAction::RenameRestart,
            LifecycleAction::CoredumpDestroy,
            LifecycleAction::CoredumpRestart,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// Parses `on_poweroff`, `on_reboot` or `on_crash`; coredump actions only
/// exist for `on_crash`, as in libvirt.
pub(crate) fn parse_action(node: &Node<'_>, ctx: &mut Ctx) -> Result<LifecycleAction, Error> {
    node.check_attrs(ctx, &[]);
    let text = node.text()?;
    let action = LifecycleAction::from_name(&text)
        .ok_or_else(|| node.refuse(format!("unknown action '{text}'")))?;
    if node.name() != "on_crash"
        && matches!(
            action,
            LifecycleAction::CoredumpDestroy | LifecycleAction::CoredumpRestart
        )
    {
        return Err(node.refuse(format!("{text} is only allowed in on_crash")));
    }
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::read;

    fn memory(xml: &str) -> Result<u64, Error> {
        let el = read(xml).unwrap();
        parse_memory_kib(&Node::root(&el, "/memory"), &mut Ctx::default())
    }

    #[test]
    fn memory_units_follow_libvirt() {
        assert_eq!(memory("<memory>1048576</memory>").unwrap(), 1 << 20);
        assert_eq!(memory("<memory unit='GiB'>1</memory>").unwrap(), 1 << 20);
        assert_eq!(memory("<memory unit='G'>1</memory>").unwrap(), 1 << 20);
        assert_eq!(memory("<memory unit='GB'>1</memory>").unwrap(), 976_563);
        assert_eq!(memory("<memory unit='KB'>1024</memory>").unwrap(), 1000);
        assert_eq!(memory("<memory unit='b'>1</memory>").unwrap(), 1);
        assert_eq!(memory("<memory unit='bytes'>2048</memory>").unwrap(), 2);
        assert_eq!(
            memory("<memory unit='MiB'>512</memory>").unwrap(),
            512 * 1024
        );
        assert_eq!(memory("<memory unit='T'>1</memory>").unwrap(), 1 << 30);
        // libvirt ignores case in units.
        assert_eq!(memory("<memory unit='kb'>1024</memory>").unwrap(), 1000);
        assert_eq!(memory("<memory unit='mib'>1</memory>").unwrap(), 1024);
        assert_eq!(memory("<memory unit='PiB'>1</memory>").unwrap(), 1 << 40);
        for bad in ["KiBs", "x", "Ki", "kibb"] {
            let e = memory(&format!("<memory unit='{bad}'>1</memory>")).unwrap_err();
            assert!(
                e.to_string().contains(&format!("unknown unit '{bad}'")),
                "{e}"
            );
        }
        assert!(memory("<memory unit='EiB'>100</memory>").is_err());
        assert!(memory("<memory>0</memory>").is_err());
        assert!(memory("<memory>-1</memory>").is_err());
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name("a\u{7f}").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    fn vcpu(xml: &str) -> Result<Vcpu, Error> {
        let el = read(xml).unwrap();
        parse_vcpu(&Node::root(&el, "/vcpu"), &mut Ctx::default())
    }

    #[test]
    fn vcpu_placement_and_current() {
        assert_eq!(vcpu("<vcpu placement='static'>2</vcpu>").unwrap().count, 2);
        assert!(vcpu("<vcpu current='2'>2</vcpu>").is_ok());
        let e = vcpu("<vcpu current='1'>2</vcpu>").unwrap_err().to_string();
        assert!(e.contains("no vCPU hot-plug"), "{e}");
        let e = vcpu("<vcpu placement='auto'>2</vcpu>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("numad"), "{e}");
        assert!(vcpu("<vcpu>0</vcpu>").is_err());
        assert!(vcpu("<vcpu>256</vcpu>").is_err());
        assert_eq!(
            vcpu("<vcpu cpuset='0-1'>2</vcpu>").unwrap().cpuset,
            Some(CpuSet::of([0, 1]))
        );
        assert!(vcpu("<vcpu cpuset='1-0'>2</vcpu>").is_err());
    }

    #[test]
    fn lifecycle_actions() {
        let el = read("<on_crash>coredump-restart</on_crash>").unwrap();
        let a = parse_action(&Node::root(&el, "/on_crash"), &mut Ctx::default()).unwrap();
        assert_eq!(a, LifecycleAction::CoredumpRestart);
        let el = read("<on_reboot>coredump-restart</on_reboot>").unwrap();
        assert!(parse_action(&Node::root(&el, "/on_reboot"), &mut Ctx::default()).is_err());
        let el = read("<on_poweroff>explode</on_poweroff>").unwrap();
        assert!(parse_action(&Node::root(&el, "/on_poweroff"), &mut Ctx::default()).is_err());
    }
}
