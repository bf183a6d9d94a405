//! The daemon's state directory: definitions, autostart marks, run
//! records and VMM logs.
//!
//! ```text
//! STATE/daemon.lock          flock'ed while a daemon uses the directory
//! STATE/domains/NAME.xml     persistent definitions
//! STATE/autostart/NAME.on    present when NAME starts with the daemon
//! STATE/run/NAME.json        the RunRecord of an active domain
//! STATE/run/NAME.starting    a start in progress (its run directory)
//! STATE/log/NAME.log         the VMM's stderr, appended across runs
//! ```
//!
//! Every file is written whole or not at all: a temporary file (`.tmp`
//! suffix) in the same directory, fsync, rename over the target, fsync of
//! the directory. A daemon killed at any instant leaves either the old or
//! the new file, plus perhaps a temporary one, which the next daemon
//! removes.
//!
//! Run records and start markers skip the two fsyncs: they describe VMM
//! processes, which a host crash (the only thing that loses the page
//! cache) ends too, and the rename alone makes them whole against a
//! daemon killed at any instant. That keeps four disk flushes out of
//! every start and destroy. A name never contains `/` (the XML model refuses it), so
//! `NAME.xml` is always a file in its directory.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::driver::RunRecord;

const TEMP_SUFFIX: &str = ".tmp";

/// What a start in progress leaves behind, so that a daemon killed during
/// [`crate::driver::Driver::start`] can find the VMM it may have spawned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StartMarker {
    /// The domain's numeric id for that start.
    pub id: u32,
    /// The run directory the driver was given: every VMM of that start has
    /// it in its command line.
    pub run_dir: PathBuf,
}

/// How far a write goes before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Whole against a daemon crash (rename), not flushed to disk.
    Renamed,
    /// Whole and on disk (fsync of the file and of its directory).
    Flushed,
}

/// The state directory's layout and its atomic writes.
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
    /// The directory of definitions: `domains`, or `networks` in the
    /// networks' store.
    definitions: &'static str,
    temp_counter: AtomicU64,
}

impl Store {
    /// Opens (creating, mode 0700) the state directory and its
    /// subdirectories, and removes temporary files a killed daemon left.
    pub fn open(root: &Path) -> io::Result<Store> {
        Store::open_for(root, "domains")
    }

    /// The networks' store under the state directory `root`:
    /// `STATE/network/networks/NAME.xml`, `STATE/network/autostart/NAME.on`,
    /// `STATE/network/run/NAME.json` (what an active network made) and
    /// `STATE/network/log`. A network's private directory (dnsmasq's
    /// files) is [`Store::private_dir`].
    pub fn open_networks(root: &Path) -> io::Result<Store> {
        Store::open_for(&root.join("network"), "networks")
    }

    /// The storage pools' store: `STATE/storage/pools/NAME.xml`, their
    /// autostart marks and the run records of active pools.
    pub fn open_pools(root: &Path) -> io::Result<Store> {
        Store::open_for(&root.join("storage"), "pools")
    }

    /// The host interfaces' store: `STATE/interface/interfaces/NAME.xml`
    /// and `STATE/interface/run/NAME.json` (what a start made, to undo).
    pub fn open_interfaces(root: &Path) -> io::Result<Store> {
        Store::open_for(&root.join("interface"), "interfaces")
    }

    /// The secrets' store: `STATE/secret/secrets/UUID.xml` (persistent
    /// definitions) and `STATE/secret/secrets/UUID.base64` (their values),
    /// both mode 0600 in directories of mode 0700.
    pub fn open_secrets(root: &Path) -> io::Result<Store> {
        Store::open_for(&root.join("secret"), "secrets")
    }

    fn open_for(root: &Path, definitions: &'static str) -> io::Result<Store> {
        let store = Store {
            root: root.to_path_buf(),
            definitions,
            temp_counter: AtomicU64::new(0),
        };
        for dir in [
            store.root.clone(),
            store.domains_dir(),
            store.autostart_dir(),
            store.run_dir(),
            store.log_dir(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| with_path(e, &dir))?;
            remove_temporaries(&dir)?;
        }
        Ok(store)
    }

    fn domains_dir(&self) -> PathBuf {
        self.root.join(self.definitions)
    }

    /// A per-object directory of its own, under `STATE/.../private/NAME`
    /// (created by whoever needs it).
    pub fn private_dir(&self, name: &str) -> PathBuf {
        self.root.join("private").join(name)
    }

    fn autostart_dir(&self) -> PathBuf {
        self.root.join("autostart")
    }

    fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// Where a domain's VMM log goes.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }

    fn definition_path(&self, name: &str) -> PathBuf {
        self.domains_dir().join(format!("{name}.xml"))
    }

    fn autostart_path(&self, name: &str) -> PathBuf {
        self.autostart_dir().join(format!("{name}.on"))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.json"))
    }

    fn marker_path(&self, name: &str) -> PathBuf {
        self.run_dir().join(format!("{name}.starting"))
    }

    /// Writes `bytes` to `path` atomically, and durably when `durable`.
    fn write_atomic(&self, path: &Path, bytes: &[u8], durable: Durability) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Unique per write: two writers of one file (which the per-domain
        // lock prevents anyway) would not share a temporary file.
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(
            ".{file_name}.{}.{n}{TEMP_SUFFIX}",
            std::process::id()
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            f.write_all(bytes)?;
            if durable == Durability::Flushed {
                f.sync_all()?;
            }
            drop(f);
            fs::rename(&temp, path)?;
            if durable == Durability::Flushed {
                sync_dir(dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result.map_err(|e| with_path(e, path))
    }

    /// Removes `path` (absent is fine), durably when `durable`.
    fn remove(&self, path: &Path, durable: Durability) -> io::Result<()> {
        match fs::remove_file(path) {
            Ok(()) if durable == Durability::Flushed => {
                sync_dir(path.parent().unwrap_or(Path::new(".")))
            }
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(with_path(e, path)),
        }
    }

    /// Saves a persistent definition.
    pub fn save_definition(&self, name: &str, xml: &str) -> io::Result<()> {
        self.write_atomic(
            &self.definition_path(name),
            xml.as_bytes(),
            Durability::Flushed,
        )
    }

    /// Removes a persistent definition and its autostart mark.
    pub fn remove_definition(&self, name: &str) -> io::Result<()> {
        self.remove(&self.autostart_path(name), Durability::Flushed)?;
        self.remove(&self.definition_path(name), Durability::Flushed)
    }

    fn value_path(&self, name: &str) -> PathBuf {
        self.domains_dir().join(format!("{name}.base64"))
    }

    /// Saves an object's private value beside its definition
    /// (`NAME.base64`, mode 0600, written whole and flushed).
    pub fn save_value(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.write_atomic(&self.value_path(name), bytes, Durability::Flushed)
    }

    /// An object's private value, if one is saved.
    pub fn value(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.value_path(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(with_path(e, &self.value_path(name))),
        }
    }

    /// Removes an object's private value (absent is fine).
    pub fn remove_value(&self, name: &str) -> io::Result<()> {
        self.remove(&self.value_path(name), Durability::Flushed)
    }

    /// Sets or clears the autostart mark.
    pub fn set_autostart(&self, name: &str, enabled: bool) -> io::Result<()> {
        let path = self.autostart_path(name);
        if enabled {
            self.write_atomic(&path, b"", Durability::Flushed)
        } else {
            self.remove(&path, Durability::Flushed)
        }
    }

    /// Saves an active object's run record.
    pub fn save_record<R: Serialize>(&self, name: &str, record: &R) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        self.write_atomic(&self.record_path(name), &json, Durability::Renamed)
    }

    /// Removes a run record (the domain is no longer active).
    pub fn remove_record(&self, name: &str) -> io::Result<()> {
        self.remove(&self.record_path(name), Durability::Renamed)
    }

    /// Notes a start in progress.
    pub fn save_marker(&self, name: &str, marker: &StartMarker) -> io::Result<()> {
        let json = serde_json::to_vec(marker).map_err(io::Error::other)?;
        self.write_atomic(&self.marker_path(name), &json, Durability::Renamed)
    }

    /// Removes the note of a finished start.
    pub fn remove_marker(&self, name: &str) -> io::Result<()> {
        self.remove(&self.marker_path(name), Durability::Renamed)
    }

    /// Every persistent definition, by name, as text. A file that cannot be
    /// read is reported and skipped (it stays on disk for the operator).
    pub fn definitions(&self) -> io::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (name, path) in entries_with_suffix(&self.domains_dir(), ".xml")? {
            match fs::read_to_string(&path) {
                Ok(xml) => {
                    out.insert(name, xml);
                }
                Err(e) => tracing::error!("cannot read {}: {e}; skipped", path.display()),
            }
        }
        Ok(out)
    }

    /// The names marked autostart.
    pub fn autostart_names(&self) -> io::Result<Vec<String>> {
        Ok(entries_with_suffix(&self.autostart_dir(), ".on")?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Every run record, by domain name. A record that does not parse is
    /// reported and removed: a daemon's crash cannot make one (records are
    /// renamed into place), a host crash can, and then its VMM is gone.
    pub fn records<R: DeserializeOwned>(&self) -> io::Result<BTreeMap<String, R>> {
        let mut out = BTreeMap::new();
        for (name, path) in entries_with_suffix(&self.run_dir(), ".json")? {
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(record) => {
                    out.insert(name, record);
                }
                Err(e) => {
                    tracing::error!("cannot read run record {}: {e}; removed", path.display());
                    let _ = self.remove(&path, Durability::Renamed);
                }
            }
        }
        Ok(out)
    }

    /// Every start marker, by domain name.
    pub fn markers(&self) -> io::Result<BTreeMap<String, StartMarker>> {
        let mut out = BTreeMap::new();
        for (name, path) in entries_with_suffix(&self.run_dir(), ".starting")? {
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(marker) => {
                    out.insert(name, marker);
                }
                Err(e) => {
                    tracing::error!("cannot read start marker {}: {e}", path.display());
                    let _ = self.remove(&path, Durability::Renamed);
                }
            }
        }
        Ok(out)
    }
}

/// `(name, path)` of the files in `dir` whose names end in `suffix`,
/// temporary and hidden files aside.
fn entries_with_suffix(dir: &Path, suffix: &str) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let entry = entry?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        if file_name.ends_with(TEMP_SUFFIX) || !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(name) = file_name.strip_suffix(suffix) {
            if !name.is_empty() {
                out.push((name.to_string(), entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes what an interrupted [`Store::write_atomic`] left in `dir`.
fn remove_temporaries(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
            tracing::info!("removing {}, left by an interrupted write", name);
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u32) -> RunRecord {
        RunRecord {
            driver: "vireo".into(),
            pid: 42,
            start_time: 7,
            id,
            xml: "<domain/>".into(),
            extra: serde_json::json!({"api": "/x"}),
        }
    }

    #[test]
    fn definitions_records_and_marks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_definition("a", "<a/>").unwrap();
        store.save_definition("b.xml", "<b/>").unwrap();
        store.save_definition("a", "<a2/>").unwrap();
        let defs = store.definitions().unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs["a"], "<a2/>");
        assert_eq!(defs["b.xml"], "<b/>");

        store.set_autostart("a", true).unwrap();
        assert_eq!(store.autostart_names().unwrap(), vec!["a".to_string()]);
        store.remove_definition("a").unwrap();
        assert!(store.autostart_names().unwrap().is_empty());
        assert_eq!(store.definitions().unwrap().len(), 1);

        store.save_record("b.xml", &record(3)).unwrap();
        assert_eq!(store.records::<RunRecord>().unwrap()["b.xml"], record(3));
        let marker = StartMarker {
            id: 4,
            run_dir: "/r/4".into(),
        };
        store.save_marker("b.xml", &marker).unwrap();
        assert_eq!(store.markers().unwrap()["b.xml"], marker);
        store.remove_marker("b.xml").unwrap();
        store.remove_record("b.xml").unwrap();
        store.remove_record("b.xml").unwrap();
        assert!(store.records::<RunRecord>().unwrap().is_empty());
        assert!(store.markers().unwrap().is_empty());
    }

    #[test]
    fn leftover_temporaries_are_removed_and_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_definition("a", "<a/>").unwrap();
        let temp = dir.path().join("domains/.b.xml.1.0.tmp");
        fs::write(&temp, "<half").unwrap();
        assert_eq!(store.definitions().unwrap().len(), 1);
        let _again = Store::open(dir.path()).unwrap();
        assert!(!temp.exists());
        // Nothing else is left beside the definition.
        let files: Vec<_> = fs::read_dir(dir.path().join("domains"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, vec![std::ffi::OsString::from("a.xml")]);
    }

    #[test]
    fn a_corrupt_record_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join("run/x.json"), "{").unwrap();
        store.save_record("y", &record(1)).unwrap();
        let records = store.records::<RunRecord>().unwrap();
        assert_eq!(records.keys().collect::<Vec<_>>(), vec!["y"]);
        assert!(!dir.path().join("run/x.json").exists());
    }
}
