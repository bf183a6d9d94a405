//! libvirt's secret XML (`virsh secret-define`): a secret's UUID, whether
//! it is kept on disk (`ephemeral`) and whether its value may be read back
//! (`private`), a description, and what it is for (`usage`). The value
//! itself is never part of the XML.
//!
//! Every usage type libvirt knows is accepted as an object (`volume`,
//! `ceph`, `iscsi`, `tls`, `vtpm`); only `iscsi` secrets are used by
//! Vireo (CHAP for iSCSI pools and disks).

use crate::error::Error;
use crate::node::{parse_switch, Ctx, Node};
use crate::raw::XmlWriter;
use crate::uuid::Uuid;

/// The longest usage id or description taken, in bytes.
const MAX_TEXT: usize = 1024;

/// What a secret is for: libvirt's usage types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretUsageType {
    /// A volume's encryption passphrase (`<volume>PATH</volume>`).
    Volume,
    /// A Ceph client key (`<name>`).
    Ceph,
    /// An iSCSI CHAP password (`<target>`).
    Iscsi,
    /// A TLS key's passphrase (`<name>`).
    Tls,
    /// A virtual TPM's state key (`<name>`).
    Vtpm,
}

impl SecretUsageType {
    /// libvirt's name of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretUsageType::Volume => "volume",
            SecretUsageType::Ceph => "ceph",
            SecretUsageType::Iscsi => "iscsi",
            SecretUsageType::Tls => "tls",
            SecretUsageType::Vtpm => "vtpm",
        }
    }

    /// Parses libvirt's name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "volume" => SecretUsageType::Volume,
            "ceph" => SecretUsageType::Ceph,
            "iscsi" => SecretUsageType::Iscsi,
            "tls" => SecretUsageType::Tls,
            "vtpm" => SecretUsageType::Vtpm,
            _ => return None,
        })
    }

    /// The element inside `<usage>` that holds the usage id.
    fn element(self) -> &'static str {
        match self {
            SecretUsageType::Volume => "volume",
            SecretUsageType::Iscsi => "target",
            SecretUsageType::Ceph | SecretUsageType::Tls | SecretUsageType::Vtpm => "name",
        }
    }
}

/// A secret's usage: its type and its id (a volume path, a name, an
/// iSCSI usage name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretUsage {
    /// The type.
    pub kind: SecretUsageType,
    /// The id, unique among secrets of this type.
    pub id: String,
}

impl std::fmt::Display for SecretUsage {
    /// As `virsh secret-list` shows it: `iscsi NAME`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.id)
    }
}

/// A secret's definition (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Its UUID (generated when the document has none).
    pub uuid: Uuid,
    /// Kept only in memory, never on disk.
    pub ephemeral: bool,
    /// Its value may not be read back through the API.
    pub private: bool,
    /// Free text.
    pub description: Option<String>,
    /// What it is for; `None` for a secret without usage.
    pub usage: Option<SecretUsage>,
}

/// A parsed secret and what was accepted without being acted on.
#[derive(Debug, Clone)]
pub struct ParsedSecret {
    /// The definition.
    pub secret: Secret,
    /// One warning per attribute dropped unused.
    pub warnings: Vec<crate::Warning>,
}

impl Secret {
    /// Parses a secret definition with the rule of the other formats.
    pub fn parse(xml: &str) -> Result<ParsedSecret, Error> {
        let (secret, warnings) = crate::node::parse_document(xml, parse_secret)?;
        Ok(ParsedSecret { secret, warnings })
    }

    /// Writes the definition back, as `virsh secret-dumpxml` shows it.
    pub fn to_xml(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut w = XmlWriter::default();
        w.open(
            "secret",
            &[
                ("ephemeral", yes_no(self.ephemeral)),
                ("private", yes_no(self.private)),
            ],
        );
        w.text("uuid", &[], &self.uuid.to_string());
        if let Some(d) = &self.description {
            w.text("description", &[], d);
        }
        if let Some(u) = &self.usage {
            w.open("usage", &[("type", u.kind.as_str())]);
            w.text(u.kind.element(), &[], &u.id);
            w.close("usage");
        }
        w.close("secret");
        w.finish()
    }
}

fn check_text(node: &Node<'_>, what: &str, text: &str) -> Result<(), Error> {
    if text.is_empty() {
        return Err(node.refuse(format!("the {what} is empty")));
    }
    if text.len() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(node.refuse(format!(
            "the {what} must be at most {MAX_TEXT} bytes of text on one line"
        )));
    }
    Ok(())
}

fn parse_secret(node: &Node<'_>, ctx: &mut Ctx) -> Result<Secret, Error> {
    if node.name() != "secret" {
        return Err(node.refuse(format!(
            "the root element is <{}>, not <secret>",
            node.name()
        )));
    }
    node.check_attrs(ctx, &["ephemeral", "private"]);
    let switch = |name: &str| -> Result<bool, Error> {
        node.attr(name)
            .map(|v| parse_switch(node, name, v))
            .transpose()
            .map(|b| b.unwrap_or(false))
    };
    let ephemeral = switch("ephemeral")?;
    let private = switch("private")?;
    let mut uuid = None;
    let mut description = None;
    let mut usage = None;
    for child in node.children() {
        let c = child.node();
        match c.name() {
            "uuid" => {
                c.once(&uuid)?;
                c.check_attrs(ctx, &[]);
                uuid = Some(Uuid::parse(&c.text()?).map_err(|e| c.refuse(e))?);
            }
            "description" => {
                c.once(&description)?;
                c.check_attrs(ctx, &[]);
                let d = c.text()?;
                check_text(&c, "description", &d)?;
                description = Some(d);
            }
            "usage" => {
                c.once(&usage)?;
                usage = Some(parse_usage(&c, ctx)?);
            }
            other => return Err(c.refuse(format!("<{other}> inside <secret> is not supported"))),
        }
    }
    let uuid = match uuid {
        Some(u) => u,
        None => Uuid::generate()?,
    };
    Ok(Secret {
        uuid,
        ephemeral,
        private,
        description,
        usage,
    })
}

fn parse_usage(node: &Node<'_>, ctx: &mut Ctx) -> Result<SecretUsage, Error> {
    node.check_attrs(ctx, &["type"]);
    let t = node.need("type")?;
    let kind = SecretUsageType::parse(t).ok_or_else(|| {
        node.refuse(format!(
            "usage type '{}' is not one libvirt knows: use volume, ceph, iscsi, tls or vtpm",
            t.escape_debug()
        ))
    })?;
    let mut id = None;
    for child in node.children() {
        let c = child.node();
        if c.name() != kind.element() {
            return Err(c.refuse(format!(
                "<{}> inside a {} usage is not supported: it takes <{}>",
                c.name(),
                kind.as_str(),
                kind.element()
            )));
        }
        c.once(&id)?;
        c.check_attrs(ctx, &[]);
        let text = c.text()?;
        check_text(&c, &format!("{} usage id", kind.as_str()), &text)?;
        id = Some(text);
    }
    let id = id.ok_or_else(|| {
        node.refuse(format!(
            "a {} usage needs <{}>",
            kind.as_str(),
            kind.element()
        ))
    })?;
    Ok(SecretUsage { kind, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(xml: &str) -> String {
        match Secret::parse(xml) {
            Ok(s) => panic!("accepted: {xml}\n{:?}", s.secret),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn libvirts_examples_round_trip() {
        let xml = "<secret ephemeral='no' private='yes'>\n  <uuid>c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6</uuid>\n  <description>CHAP for the SAN</description>\n  <usage type='iscsi'>\n    <target>libvirtiscsi</target>\n  </usage>\n</secret>\n";
        let p = Secret::parse(xml).unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let s = p.secret;
        assert!(s.private && !s.ephemeral);
        assert_eq!(
            s.usage,
            Some(SecretUsage {
                kind: SecretUsageType::Iscsi,
                id: "libvirtiscsi".into()
            })
        );
        assert_eq!(s.to_xml(), xml);
        for (t, el) in [
            ("volume", "volume"),
            ("ceph", "name"),
            ("tls", "name"),
            ("vtpm", "name"),
        ] {
            let xml = format!("<secret><usage type='{t}'><{el}>x/y</{el}></usage></secret>");
            let s = Secret::parse(&xml).unwrap().secret;
            assert_eq!(s.usage.as_ref().unwrap().kind.as_str(), t);
            assert_eq!(s.usage.as_ref().unwrap().to_string(), format!("{t} x/y"));
            assert_eq!(Secret::parse(&s.to_xml()).unwrap().secret, s);
        }
    }

    #[test]
    fn a_uuid_is_made_when_absent_and_defaults_are_no() {
        let a = Secret::parse("<secret/>").unwrap().secret;
        let b = Secret::parse("<secret/>").unwrap().secret;
        assert_ne!(a.uuid, b.uuid);
        assert!(!a.ephemeral && !a.private && a.usage.is_none());
        assert!(a
            .to_xml()
            .starts_with("<secret ephemeral='no' private='no'>"));
    }

    #[test]
    fn unknown_attributes_warn() {
        let p = Secret::parse(
            "<secret foo='1'><usage type='iscsi' x='y'><target>t</target></usage></secret>",
        )
        .unwrap();
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    }

    #[test]
    fn what_cannot_be_a_secret_is_refused() {
        for (xml, says) in [
            ("<pool/>", "not <secret>"),
            ("<secret ephemeral='maybe'/>", "ephemeral='maybe'"),
            ("<secret><uuid>nope</uuid></secret>", "not a UUID"),
            ("<secret><usage type='iscsi'/></secret>", "needs <target>"),
            ("<secret><usage type='iscsi'><name>x</name></usage></secret>", "takes <target>"),
            ("<secret><usage type='nope'><name>x</name></usage></secret>", "usage type 'nope'"),
            ("<secret><usage><name>x</name></usage></secret>", "type="),
            ("<secret><usage type='iscsi'><target> </target></usage></secret>", "empty"),
            ("<secret><value>cGFzcw==</value></secret>", "<value>"),
            ("<secret><uuid>c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6</uuid><uuid>c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6</uuid></secret>", "more than once"),
        ] {
            let e = refused(xml);
            assert!(e.contains(says), "{xml}: {e}");
        }
    }
}
