//! Secrets in the daemon (libvirt's secret driver): definitions and
//! values, kept on disk for persistent secrets (mode 0600, see
//! [`Store::open_secrets`]) and only in memory for ephemeral ones; and the
//! lookup that turns an `<auth>`'s `<secret>` into CHAP credentials for an
//! iSCSI pool or disk.
//!
//! A value never leaves this module except through `GET
//! /secrets/{secret}/value` (refused for a private secret and on the
//! read-only socket) and [`credentials`]: no log line, error message or
//! XML carries it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use virtxml::{ChapAuth, Secret, SecretRef, SecretUsageType, Uuid};

use super::failure::Failure;
use super::store::Store;
use super::Daemon;
use crate::api::{DefineResponse, SecretSummary};
use crate::storage::{Credentials, StorageError};

/// The largest value taken, in bytes (libvirt's limit is larger; a CHAP
/// secret is at most 255 bytes).
pub(crate) const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The longest CHAP secret handed to an initiator, in bytes.
const MAX_CHAP_SECRET: usize = 255;

/// A secret's value: zeroed when dropped, never printed.
pub(crate) struct Value(Vec<u8>);

impl Drop for Value {
    fn drop(&mut self) {
        for b in &mut self.0 {
            // SAFETY: a valid, aligned `&mut u8`; volatile so the zeroing
            // is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// One secret.
struct SecretEntry {
    def: Arc<Secret>,
    value: Option<Arc<Value>>,
}

/// The secrets, their store and the lock that serializes changes.
pub(crate) struct Secrets {
    store: Store,
    table: Mutex<BTreeMap<Uuid, SecretEntry>>,
    ops: tokio::sync::Mutex<()>,
}

fn not_found(key: &str) -> Failure {
    let by = if Uuid::parse(key).is_ok() {
        "uuid"
    } else {
        "usage"
    };
    Failure::not_found(format!(
        "Secret not found: no secret with matching {by} '{key}'"
    ))
}

fn summary(e: &SecretEntry) -> SecretSummary {
    let s = &e.def;
    SecretSummary {
        uuid: s.uuid.to_string(),
        usage_type: s.usage.as_ref().map(|u| u.kind.as_str().to_string()),
        usage_id: s.usage.as_ref().map(|u| u.id.clone()),
        description: s.description.clone(),
        ephemeral: s.ephemeral,
        private: s.private,
        has_value: e.value.is_some(),
    }
}

impl Secrets {
    /// Opens the secrets' store and reads the persistent secrets and
    /// their values. A file that does not parse is reported and skipped.
    pub fn open(state_dir: &Path) -> std::io::Result<Secrets> {
        let store = Store::open_secrets(state_dir)?;
        let mut table = BTreeMap::new();
        for (file_name, xml) in store.definitions()? {
            let def = match Secret::parse(&xml) {
                Ok(p) if p.secret.uuid.to_string() == file_name => p.secret,
                Ok(p) => {
                    tracing::error!(
                        "secret definition file '{file_name}' holds secret {}; skipped",
                        p.secret.uuid
                    );
                    continue;
                }
                Err(e) => {
                    tracing::error!(
                        "secret definition '{file_name}' does not parse ({e}); skipped"
                    );
                    continue;
                }
            };
            let value = match store.value(&file_name)? {
                None => None,
                Some(text) => match std::str::from_utf8(&text)
                    .map_err(|_| "not text".to_string())
                    .and_then(crate::base64::decode)
                {
                    Ok(bytes) => Some(Arc::new(Value(bytes))),
                    Err(why) => {
                        tracing::error!("the value of secret {file_name} does not read ({why}); the secret has no value");
                        None
                    }
                },
            };
            table.insert(
                def.uuid,
                SecretEntry {
                    def: Arc::new(def),
                    value,
                },
            );
        }
        Ok(Secrets {
            store,
            table: Mutex::new(table),
            ops: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Uuid, SecretEntry>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The UUID of the secret `key` names: its UUID, else its usage id
    /// (of any type; an id two types share is ambiguous).
    fn find(&self, key: &str) -> Result<Uuid, Failure> {
        let table = self.lock();
        if let Ok(u) = Uuid::parse(key) {
            if table.contains_key(&u) {
                return Ok(u);
            }
        }
        let hits: Vec<Uuid> = table
            .values()
            .filter(|e| e.def.usage.as_ref().is_some_and(|u| u.id == key))
            .map(|e| e.def.uuid)
            .collect();
        match hits.as_slice() {
            [one] => Ok(*one),
            [] => Err(not_found(key)),
            _ => Err(Failure::unprocessable(format!(
                "usage '{key}' names {} secrets of different types: give a UUID",
                hits.len()
            ))),
        }
    }
}

/// Runs store work off the async thread.
async fn blocking(
    d: &Arc<Daemon>,
    f: impl FnOnce(&Store) -> std::io::Result<()> + Send + 'static,
) -> Result<(), Failure> {
    let d = d.clone();
    tokio::task::spawn_blocking(move || f(&d.secrets.store))
        .await?
        .map_err(Failure::storage)
}

/// `GET /secrets`, by UUID.
pub(crate) fn list(d: &Daemon) -> Vec<SecretSummary> {
    d.secrets.lock().values().map(summary).collect()
}

/// `GET /secrets/{secret}`.
pub(crate) fn info(d: &Daemon, key: &str) -> Result<SecretSummary, Failure> {
    let uuid = d.secrets.find(key)?;
    let table = d.secrets.lock();
    table.get(&uuid).map(summary).ok_or_else(|| not_found(key))
}

/// `GET /secrets/{secret}/xml`: the definition (never the value).
pub(crate) fn xml(d: &Daemon, key: &str) -> Result<String, Failure> {
    let uuid = d.secrets.find(key)?;
    let table = d.secrets.lock();
    table
        .get(&uuid)
        .map(|e| e.def.to_xml())
        .ok_or_else(|| not_found(key))
}

/// `POST /secrets`: secret-define, a new secret or a changed definition
/// of one (its value stays).
pub(crate) async fn define(d: &Arc<Daemon>, xml: &str) -> Result<DefineResponse, Failure> {
    let _ops = d.secrets.ops.lock().await;
    let parsed = Secret::parse(xml).map_err(|e| Failure::unprocessable(e.to_string()))?;
    let def = parsed.secret;
    let (existing, value) = {
        let table = d.secrets.lock();
        if let Some(u) = &def.usage {
            let clash = table
                .values()
                .find(|e| e.def.uuid != def.uuid && e.def.usage.as_ref() == Some(u));
            if let Some(other) = clash {
                return Err(Failure::unprocessable(format!(
                    "a secret with UUID {} already defined for use with {}",
                    other.def.uuid, u.id
                )));
            }
        }
        match table.get(&def.uuid) {
            Some(e) => {
                // libvirt's rule: a secret keeps its usage.
                if e.def.usage != def.usage {
                    let was = e
                        .def
                        .usage
                        .as_ref()
                        .map_or("nothing".to_string(), |u| u.id.clone());
                    return Err(Failure::unprocessable(format!(
                        "a secret with UUID {} is already defined for use with {was}",
                        def.uuid
                    )));
                }
                if e.def.private && !def.private {
                    return Err(Failure::unprocessable(
                        "cannot change private flag on existing secret",
                    ));
                }
                (true, e.value.clone())
            }
            None => (false, None),
        }
    };
    let name = def.uuid.to_string();
    let text = def.to_xml();
    let ephemeral = def.ephemeral;
    let encoded = value.as_ref().map(|v| crate::base64::encode(&v.0));
    blocking(d, move |s| {
        if ephemeral {
            // A persistent secret made ephemeral leaves the disk.
            s.remove_value(&name)?;
            s.remove_definition(&name)
        } else {
            if let Some(v) = &encoded {
                s.save_value(&name, v.as_bytes())?;
            }
            s.save_definition(&name, &text)
        }
    })
    .await?;
    let uuid = def.uuid;
    d.secrets.lock().insert(
        uuid,
        SecretEntry {
            def: Arc::new(def),
            value,
        },
    );
    Ok(DefineResponse {
        name: uuid.to_string(),
        uuid: uuid.to_string(),
        warnings: parsed.warnings.iter().map(|w| w.to_string()).collect(),
        updated: existing,
    })
}

/// `DELETE /secrets/{secret}`: secret-undefine, with its value.
pub(crate) async fn undefine(d: &Arc<Daemon>, key: &str) -> Result<(), Failure> {
    let _ops = d.secrets.ops.lock().await;
    let uuid = d.secrets.find(key)?;
    let name = uuid.to_string();
    blocking(d, move |s| {
        s.remove_value(&name)?;
        s.remove_definition(&name)
    })
    .await?;
    d.secrets.lock().remove(&uuid);
    Ok(())
}

/// `PUT /secrets/{secret}/value`: secret-set-value, from base64.
pub(crate) async fn set_value(d: &Arc<Daemon>, key: &str, base64: &str) -> Result<(), Failure> {
    let bytes = crate::base64::decode(base64).map_err(|why| {
        Failure::bad_request(format!("the secret value is not valid base64: {why}"))
    })?;
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(Failure::unprocessable(format!(
            "the secret value is over {MAX_VALUE_BYTES} bytes"
        )));
    }
    let value = Arc::new(Value(bytes));
    let _ops = d.secrets.ops.lock().await;
    let uuid = d.secrets.find(key)?;
    let ephemeral = d
        .secrets
        .lock()
        .get(&uuid)
        .map(|e| e.def.ephemeral)
        .ok_or_else(|| not_found(key))?;
    if !ephemeral {
        // Saved in its canonical form.
        let name = uuid.to_string();
        let encoded = crate::base64::encode(&value.0);
        blocking(d, move |s| s.save_value(&name, encoded.as_bytes())).await?;
    }
    if let Some(e) = d.secrets.lock().get_mut(&uuid) {
        e.value = Some(value);
    }
    Ok(())
}

/// `GET /secrets/{secret}/value`: secret-get-value, in base64; refused
/// for a private secret.
pub(crate) fn get_value(d: &Daemon, key: &str) -> Result<String, Failure> {
    let uuid = d.secrets.find(key)?;
    let table = d.secrets.lock();
    let e = table.get(&uuid).ok_or_else(|| not_found(key))?;
    if e.def.private {
        return Err(Failure::conflict(
            "Invalid secret: secret is private: its value cannot be read back",
        ));
    }
    let v = e.value.as_ref().ok_or_else(|| no_value(&uuid))?;
    Ok(crate::base64::encode(&v.0))
}

fn no_value(uuid: &Uuid) -> Failure {
    Failure::not_found(format!(
        "Secret not found: secret '{uuid}' does not have a value"
    ))
}

/// The CHAP credentials an `<auth>` names: its user and the value of its
/// secret (an `iscsi` secret by usage, or any secret by UUID). `what`
/// names the pool or disk for the error line.
pub(crate) fn credentials(
    secrets: &Secrets,
    auth: &ChapAuth,
    what: &str,
) -> Result<Credentials, StorageError> {
    let table = secrets.lock();
    let entry = match &auth.secret {
        SecretRef::Uuid(u) => table.get(u),
        SecretRef::Usage(id) => table.values().find(|e| {
            e.def
                .usage
                .as_ref()
                .is_some_and(|u| u.kind == SecretUsageType::Iscsi && u.id == *id)
        }),
    };
    let entry = entry.ok_or_else(|| {
        StorageError::Invalid(format!(
            "{what}: CHAP secret not found: no iscsi secret with {} (define it with secret-define)",
            auth.secret
        ))
    })?;
    let value = entry.value.as_ref().ok_or_else(|| {
        StorageError::Invalid(format!(
            "{what}: CHAP secret {} has no value (set it with secret-set-value)",
            entry.def.uuid
        ))
    })?;
    if value.0.len() > MAX_CHAP_SECRET {
        return Err(StorageError::Invalid(format!(
            "{what}: the value of CHAP secret {} is over {MAX_CHAP_SECRET} bytes",
            entry.def.uuid
        )));
    }
    let secret = std::str::from_utf8(&value.0)
        .ok()
        .filter(|s| !s.is_empty() && !s.contains('\0'))
        .ok_or_else(|| {
            StorageError::Invalid(format!(
                "{what}: the value of CHAP secret {} is not text without NUL bytes, which CHAP needs",
                entry.def.uuid
            ))
        })?;
    Ok(Credentials {
        user: auth.username.clone(),
        secret: secret.to_string(),
    })
}

/// The CHAP credentials `disk` of domain `domain` logs in with, if it
/// has `<auth>` (its own, or its volume's pool's).
pub(crate) fn disk_credentials(
    d: &Daemon,
    domain: &str,
    disk: &virtxml::Disk,
) -> Result<Option<Credentials>, Failure> {
    disk.source
        .chap()
        .map(|a| {
            credentials(
                &d.secrets,
                a,
                &format!("domain '{domain}': disk {}", disk.target),
            )
        })
        .transpose()
        .map_err(super::pools::failure)
}

/// [`disk_credentials`] of each of `domain`'s disks that has any, by
/// target name: what the driver hands its VMM at start.
pub(crate) fn domain_credentials(
    d: &Daemon,
    domain: &virtxml::Domain,
) -> Result<BTreeMap<String, Credentials>, Failure> {
    let mut out = BTreeMap::new();
    for disk in &domain.devices.disks {
        if let Some(c) = disk_credentials(d, &domain.name, disk)? {
            out.insert(disk.target.clone(), c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets_with(defs: &[(&str, Option<&[u8]>)]) -> (tempfile::TempDir, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets::open(dir.path()).unwrap();
        for (xml, value) in defs {
            let def = Secret::parse(xml).unwrap().secret;
            s.lock().insert(
                def.uuid,
                SecretEntry {
                    def: Arc::new(def),
                    value: value.map(|v| Arc::new(Value(v.to_vec()))),
                },
            );
        }
        (dir, s)
    }

    #[test]
    fn chap_credentials_are_found_by_usage_or_uuid_and_each_failure_is_one_line() {
        let chap = "<secret><uuid>c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6</uuid>\
                    <usage type='iscsi'><target>san</target></usage></secret>";
        let ceph = "<secret><uuid>d4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6</uuid>\
                    <usage type='ceph'><name>san2</name></usage></secret>";
        let empty = "<secret><uuid>e4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6</uuid>\
                     <usage type='iscsi'><target>none</target></usage></secret>";
        let binary = "<secret><uuid>f4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6</uuid>\
                      <usage type='iscsi'><target>bin</target></usage></secret>";
        let (_dir, s) = secrets_with(&[
            (chap, Some(b"pw-1")),
            (ceph, Some(b"key")),
            (empty, None),
            (binary, Some(b"a\0b")),
        ]);
        let auth = |secret: SecretRef| ChapAuth {
            username: "u".into(),
            secret,
        };
        let by_usage = credentials(&s, &auth(SecretRef::Usage("san".into())), "pool 'p'").unwrap();
        assert_eq!(
            (by_usage.user.as_str(), by_usage.secret.as_str()),
            ("u", "pw-1")
        );
        assert!(!format!("{by_usage:?}").contains("pw-1"));
        let uuid = Uuid::parse("c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6").unwrap();
        assert_eq!(
            credentials(&s, &auth(SecretRef::Uuid(uuid)), "p").unwrap(),
            by_usage
        );
        for (r, says) in [
            (
                SecretRef::Usage("nobody".into()),
                "CHAP secret not found: no iscsi secret with usage 'nobody'",
            ),
            // A usage of another type is no CHAP secret.
            (
                SecretRef::Usage("san2".into()),
                "no iscsi secret with usage 'san2'",
            ),
            (SecretRef::Usage("none".into()), "has no value"),
            (SecretRef::Usage("bin".into()), "not text without NUL bytes"),
        ] {
            let e = credentials(&s, &auth(r), "pool 'p'")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("pool 'p': ") && e.contains(says), "{e}");
            assert!(
                !e.contains('\n') && !e.contains("pw-1") && !e.contains("key"),
                "{e}"
            );
        }
    }

    #[test]
    fn persistent_secrets_and_values_are_read_back_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets::open(dir.path()).unwrap();
        let def = Secret::parse(
            "<secret><uuid>c4dbe20b-b1a3-4ac1-b6e6-2ac97852ebb6</uuid><usage type='iscsi'><target>t</target></usage></secret>",
        )
        .unwrap()
        .secret;
        let name = def.uuid.to_string();
        s.store.save_definition(&name, &def.to_xml()).unwrap();
        s.store.save_value(&name, b"cGFzcw==").unwrap();
        let again = Secrets::open(dir.path()).unwrap();
        let table = again.lock();
        let e = &table[&def.uuid];
        assert_eq!(e.value.as_ref().unwrap().0, b"pass");
        for f in ["xml", "base64"] {
            let p = dir.path().join(format!("secret/secrets/{name}.{f}"));
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let mode = std::fs::metadata(dir.path().join("secret/secrets"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }
}
