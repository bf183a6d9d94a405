//! Which driver runs a domain, chosen in the domain's `metadata` under
//! Vireo's own XML namespace (libvirt's place for application data):
//!
//! ```xml
//! <metadata>
//!   <vireo:driver xmlns:vireo='urn:x-vireo:domain:1' name='qemu'/>
//! </metadata>
//! ```
//!
//! `emulator` does not choose: libvirt tools always name QEMU there, and
//! such definitions run on Vireo's own VMM unless they ask otherwise.

use crate::error::Error;
use crate::node::{Ctx, Node};
use crate::raw::{RawContent, RawElement};

/// Vireo's metadata namespace.
pub const VIREO_NAMESPACE: &str = "urn:x-vireo:domain:1";

/// The driver that runs a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverKind {
    /// Vireo's own VMM.
    #[default]
    Vireo,
    /// QEMU (`qemu-system-x86_64`, driven over QMP).
    Qemu,
}

/// Whether `el` is `<P:driver xmlns:P='urn:x-vireo:domain:1'>` (or the
/// same with a default namespace).
fn is_driver_element(name: &str, attrs: &[(String, String)]) -> bool {
    let (prefix, local) = match name.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, name),
    };
    let decl = match prefix {
        Some(p) => format!("xmlns:{p}"),
        None => "xmlns".to_string(),
    };
    local == "driver"
        && attrs
            .iter()
            .any(|(k, v)| *k == decl && v == VIREO_NAMESPACE)
}

/// Reads `metadata`: takes Vireo's driver choice out of it and returns
/// the rest to keep. Warns about the rest only if there is any.
pub(crate) fn parse_metadata(
    node: &Node<'_>,
    ctx: &mut Ctx,
) -> Result<(RawElement, Option<DriverKind>), Error> {
    node.check_attrs(ctx, &[]);
    let mut kept = node.el.to_raw();
    let mut driver = None;
    for child in node.children() {
        let c = child.node();
        if !is_driver_element(c.name(), &c.el.attrs) {
            continue;
        }
        c.once(&driver)?;
        let known: Vec<&str> =
            c.el.attrs
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| k.starts_with("xmlns"))
                .chain(["name"])
                .collect();
        c.leaf(ctx, &known)?;
        driver = Some(match c.need("name")? {
            "vireo" => DriverKind::Vireo,
            "qemu" => DriverKind::Qemu,
            other => {
                return Err(c.refuse(format!(
                    "driver '{other}' is not supported: use vireo or qemu"
                )))
            }
        });
    }
    kept.content.retain(|content| match content {
        RawContent::Element(e) => !is_driver_element(&e.name, &e.attributes),
        RawContent::Text(_) => true,
    });
    if !kept.content.is_empty() {
        node.warn(
            ctx,
            "<metadata> is kept but not acted on: it belongs to the applications that wrote it",
        );
    }
    Ok((kept, driver))
}

/// The metadata element to write: the kept one (or a new one) with the
/// driver choice added when it is not the default.
pub(crate) fn metadata_to_write(
    kept: Option<&RawElement>,
    driver: DriverKind,
) -> Option<RawElement> {
    let mut metadata = kept.cloned();
    if driver == DriverKind::Qemu {
        let m = metadata.get_or_insert_with(|| RawElement {
            name: "metadata".into(),
            attributes: Vec::new(),
            content: Vec::new(),
        });
        m.content.push(RawContent::Element(RawElement {
            name: "vireo:driver".into(),
            attributes: vec![
                ("xmlns:vireo".into(), VIREO_NAMESPACE.into()),
                ("name".into(), "qemu".into()),
            ],
            content: Vec::new(),
        }));
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Domain;

    fn domain(metadata: &str) -> Result<crate::Parsed, Error> {
        Domain::parse(&format!(
            "<domain type='kvm'><name>d</name>{metadata}<memory>1024</memory>\
             <os><type>hvm</type><kernel>/k</kernel></os>\
             <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices></domain>"
        ))
    }

    #[test]
    fn emulator_alone_keeps_vireo() {
        assert_eq!(domain("").unwrap().domain.driver, DriverKind::Vireo);
    }

    #[test]
    fn metadata_element_selects_qemu_and_round_trips() {
        let p = domain(
            "<metadata><v:driver xmlns:v='urn:x-vireo:domain:1' name='qemu'/><o:x xmlns:o='urn:o'/></metadata>",
        )
        .unwrap();
        assert_eq!(p.domain.driver, DriverKind::Qemu);
        let metadata_warnings = p
            .warnings
            .iter()
            .filter(|w| w.location.path == "/domain/metadata")
            .count();
        assert_eq!(metadata_warnings, 1, "the other application's data warns");
        let again = Domain::parse(&p.domain.to_xml()).unwrap().domain;
        assert_eq!(again, p.domain);

        // Only Vireo's element: nothing else to warn about.
        let p = domain("<metadata><driver xmlns='urn:x-vireo:domain:1' name='qemu'/></metadata>")
            .unwrap();
        assert_eq!(p.domain.driver, DriverKind::Qemu);
        assert!(p
            .warnings
            .iter()
            .all(|w| w.location.path != "/domain/metadata"));

        // Set in the model, written out, read back.
        let mut d = domain("").unwrap().domain;
        d.driver = DriverKind::Qemu;
        assert_eq!(
            Domain::parse(&d.to_xml()).unwrap().domain.driver,
            DriverKind::Qemu
        );
    }

    #[test]
    fn other_namespaces_and_bad_names() {
        let p = domain("<metadata><v:driver xmlns:v='urn:other' name='qemu'/></metadata>").unwrap();
        assert_eq!(p.domain.driver, DriverKind::Vireo);
        let e =
            domain("<metadata><v:driver xmlns:v='urn:x-vireo:domain:1' name='xen'/></metadata>")
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("/domain/metadata/v:driver"), "{e}");
    }
}
