//! `vireo img info`: what qemu-img info prints, in the same words.

use std::process::ExitCode;

use block::qcow2::{Qcow2Disk, Qcow2Info, Snapshot};
use block::{DiskImage, ImageFormat, OpenOptions};
use serde_json::{json, Map, Value};

use super::create::open_read_only;
use super::size::human_size;
use super::snapshot::{print_snapshot_table, snapshot_json};
use super::{ImgError, InfoArgs, OutputFormat};

pub fn info_command(args: &InfoArgs) -> Result<ExitCode, ImgError> {
    let format = match args.format {
        Some(f) => f,
        None => super::probe(&args.file)?,
    };
    let (disk, qcow2): (std::sync::Arc<dyn DiskImage>, Option<Qcow2Info>) = match format {
        ImageFormat::Raw => (open_read_only(&args.file, Some(format))?, None),
        ImageFormat::Qcow2 => {
            // The image itself first, as qemu-img info: a missing or
            // broken backing file must not hide it.
            let q = Qcow2Disk::open_without_backing(&args.file).map_err(|e| {
                ImgError::block(&block::Error::Open {
                    path: args.file.clone(),
                    source: Box::new(e),
                })
            })?;
            let info = q.info();
            (std::sync::Arc::new(q), Some(info))
        }
    };
    let actual = disk
        .host_allocated_bytes()
        .map_err(|e| ImgError::block(&e))?;
    let name = args.file.display().to_string();
    match args.output {
        OutputFormat::Json => {
            let mut j = Map::new();
            j.insert("virtual-size".into(), disk.size().into());
            j.insert("filename".into(), name.into());
            if let Some(q) = &qcow2 {
                j.insert(
                    "cluster-size".into(),
                    (1u64 << q.header.cluster_bits).into(),
                );
            }
            j.insert("format".into(), format.name().into());
            j.insert("actual-size".into(), actual.into());
            if let Some(q) = &qcow2 {
                if let Some(b) = &q.header.backing_file {
                    j.insert("backing-filename".into(), b.clone().into());
                    j.insert(
                        "full-backing-filename".into(),
                        full_backing(&args.file, b).into(),
                    );
                }
                if let Some(f) = &q.header.backing_format {
                    j.insert("backing-filename-format".into(), f.clone().into());
                }
                j.insert(
                    "format-specific".into(),
                    json!({ "type": "qcow2", "data": format_specific_json(q) }),
                );
            }
            let dirty = qcow2.as_ref().is_some_and(|q| {
                q.header.incompatible_features & block::qcow2::header::incompat::DIRTY != 0
            });
            j.insert("dirty-flag".into(), dirty.into());
            let snapshots = qcow2.as_ref().map_or(&[][..], |q| &q.snapshots[..]);
            print_json_streamed(snapshots, &j)?;
        }
        OutputFormat::Human => {
            println!("image: {name}");
            println!("file format: {format}");
            println!(
                "virtual size: {} ({} bytes)",
                human_size(disk.size()),
                disk.size()
            );
            println!("disk size: {}", human_size(actual));
            if let Some(q) = &qcow2 {
                println!("cluster_size: {}", 1u64 << q.header.cluster_bits);
                if let Some(b) = &q.header.backing_file {
                    println!("backing file: {b}");
                }
                if let Some(f) = &q.header.backing_format {
                    println!("backing file format: {f}");
                }
                if !q.snapshots.is_empty() {
                    println!("Snapshot list:");
                    print_snapshot_table(&q.snapshots);
                }
                println!("Format specific information:");
                let v3 = q.header.version >= 3;
                println!("    compat: {}", if v3 { "1.1" } else { "0.10" });
                println!("    compression type: zlib");
                if v3 {
                    println!("    lazy refcounts: {}", lazy(q));
                }
                println!("    refcount bits: {}", q.header.refcount_bits());
                if v3 {
                    println!("    corrupt: {}", corrupt(q));
                    println!("    extended l2: false");
                }
            }
        }
    }
    if let Some(q) = &qcow2 {
        if q.header.backing_file.is_some() {
            // Now say whether the chain behind it opens (exit 2 if not).
            block::open(
                &args.file,
                &OpenOptions {
                    read_only: true,
                    direct: false,
                    format: Some(format),
                    ..OpenOptions::default()
                },
            )
            .map_err(|e| {
                let inner = ImgError::block(&e);
                ImgError {
                    message: format!(
                        "{}: its backing chain cannot be opened: {}",
                        args.file.display(),
                        inner.message
                    ),
                    ..inner
                }
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The info document, "snapshots" first as qemu-img orders it. The
/// snapshot list is serialized one entry at a time straight to stdout:
/// an image may hold 65536 snapshots, too many to build as one value.
struct InfoDoc<'a> {
    snapshots: &'a [Snapshot],
    rest: &'a Map<String, Value>,
}

struct SnapshotList<'a>(&'a [Snapshot]);

impl serde::Serialize for SnapshotList<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_seq(self.0.iter().map(snapshot_json))
    }
}

impl serde::Serialize for InfoDoc<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = ser.serialize_map(None)?;
        if !self.snapshots.is_empty() {
            map.serialize_entry("snapshots", &SnapshotList(self.snapshots))?;
        }
        for (k, v) in self.rest {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

fn print_json_streamed(snapshots: &[Snapshot], rest: &Map<String, Value>) -> Result<(), ImgError> {
    use serde::Serialize as _;
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    InfoDoc { snapshots, rest }
        .serialize(&mut ser)
        .map_err(|e| ImgError::failure(e.to_string()))?;
    writeln!(out)
        .and_then(|()| out.flush())
        .map_err(|e| ImgError::failure(format!("stdout: {e}")))
}

fn lazy(q: &Qcow2Info) -> bool {
    q.header.compatible_features & block::qcow2::header::COMPAT_LAZY_REFCOUNTS != 0
}

fn corrupt(q: &Qcow2Info) -> bool {
    q.header.incompatible_features & block::qcow2::header::incompat::CORRUPT != 0
}

fn format_specific_json(q: &Qcow2Info) -> Value {
    if q.header.version >= 3 {
        json!({
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": lazy(q),
            "refcount-bits": q.header.refcount_bits(),
            "corrupt": corrupt(q),
            "extended-l2": false,
        })
    } else {
        json!({
            "compat": "0.10",
            "compression-type": "zlib",
            "refcount-bits": q.header.refcount_bits(),
        })
    }
}

fn full_backing(image: &std::path::Path, name: &str) -> String {
    let p = std::path::Path::new(name);
    if p.is_absolute() {
        return name.to_string();
    }
    let joined = image
        .parent()
        .unwrap_or_else(|| std::path::Path::new("."))
        .join(p);
    std::fs::canonicalize(&joined)
        .unwrap_or(joined)
        .display()
        .to_string()
}
