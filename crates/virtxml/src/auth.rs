//! `<auth>`: the CHAP credentials an iSCSI pool (`source/auth
//! type='chap'`) or network disk (`source/auth`, or `disk/auth`)
//! presents. The password is never in the XML: `<secret>` names a secret
//! object (by usage or UUID) whose value the daemon looks up.

use crate::error::Error;
use crate::node::{Ctx, Node};
use crate::raw::XmlWriter;
use crate::uuid::Uuid;

/// The longest CHAP user name taken, in bytes.
const MAX_USERNAME: usize = 255;

/// How `<secret>` names the secret holding the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `usage='NAME'`: the iscsi secret with that usage id.
    Usage(String),
    /// `uuid='...'`: the secret with that UUID.
    Uuid(Uuid),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Usage(u) => write!(f, "usage '{u}'"),
            SecretRef::Uuid(u) => write!(f, "uuid '{u}'"),
        }
    }
}

/// CHAP credentials: a user name and the secret holding its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapAuth {
    /// The CHAP user name.
    pub username: String,
    /// The secret holding the password.
    pub secret: SecretRef,
}

/// Where an `<auth>` element stands; the forms differ a little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthPlace {
    /// A pool's `source/auth type='chap'`, whose `<secret>` has no type.
    Pool,
    /// A disk's `auth`, whose `<secret>` has `type='iscsi'`.
    Disk,
}

/// A CHAP user name: printable, without `@`, `%`, `/`, `,` or spaces
/// (it goes into the VMM's `iscsi://USER@HOST/...` option).
fn check_username(node: &Node<'_>, user: &str) -> Result<(), Error> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USERNAME
        && user
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !"@%/,?#".contains(c));
    if ok {
        Ok(())
    } else {
        Err(node.refuse(format!(
            "username '{}' must be 1 to {MAX_USERNAME} bytes without spaces or any of @%/,?#",
            user.escape_debug()
        )))
    }
}

impl ChapAuth {
    /// Parses `<auth>` at `place`.
    pub(crate) fn parse(node: &Node<'_>, ctx: &mut Ctx, place: AuthPlace) -> Result<Self, Error> {
        match place {
            AuthPlace::Pool => {
                node.check_attrs(ctx, &["type", "username"]);
                let t = node.need("type")?;
                if t != "chap" {
                    return Err(node.refuse(format!(
                        "auth type '{}' is not supported: an iSCSI pool logs in with type='chap'",
                        t.escape_debug()
                    )));
                }
            }
            AuthPlace::Disk => node.check_attrs(ctx, &["username"]),
        }
        let username = node.need("username")?;
        check_username(node, username)?;
        let mut secret = None;
        for child in node.children() {
            let c = child.node();
            if c.name() != "secret" {
                return Err(c.refuse(format!(
                    "<{}> inside <auth> is not supported: it takes one <secret>",
                    c.name()
                )));
            }
            c.once(&secret)?;
            match place {
                AuthPlace::Pool => c.leaf(ctx, &["usage", "uuid"])?,
                AuthPlace::Disk => {
                    c.leaf(ctx, &["type", "usage", "uuid"])?;
                    if let Some(t) = c.attr("type").filter(|t| *t != "iscsi") {
                        return Err(c.refuse(format!(
                            "secret type '{}' is not supported: an iSCSI disk's secret has type='iscsi'",
                            t.escape_debug()
                        )));
                    }
                }
            }
            secret = Some(match (c.attr("usage"), c.attr("uuid")) {
                (Some(_), Some(_)) => {
                    return Err(c.refuse("<secret> names its secret by usage= or uuid=, not both"))
                }
                (Some(u), None) if !u.is_empty() && !u.chars().any(char::is_control) => {
                    SecretRef::Usage(u.to_string())
                }
                (None, Some(u)) => SecretRef::Uuid(Uuid::parse(u).map_err(|e| c.refuse(e))?),
                _ => return Err(c.refuse("<secret> needs usage='NAME' or uuid='UUID'")),
            });
        }
        let secret = secret.ok_or_else(|| {
            node.refuse("<auth> needs a <secret usage='NAME'/> or <secret uuid='UUID'/>")
        })?;
        Ok(ChapAuth {
            username: username.to_string(),
            secret,
        })
    }

    /// Writes `<auth>` at `place`.
    pub(crate) fn write(&self, w: &mut XmlWriter, place: AuthPlace) {
        match place {
            AuthPlace::Pool => w.open("auth", &[("type", "chap"), ("username", &self.username)]),
            AuthPlace::Disk => w.open("auth", &[("username", &self.username)]),
        }
        let uuid;
        let by = match &self.secret {
            SecretRef::Usage(u) => ("usage", u.as_str()),
            SecretRef::Uuid(u) => {
                uuid = u.to_string();
                ("uuid", uuid.as_str())
            }
        };
        match place {
            AuthPlace::Pool => w.empty("secret", &[by]),
            AuthPlace::Disk => w.empty("secret", &[("type", "iscsi"), by]),
        }
        w.close("auth");
    }
}
