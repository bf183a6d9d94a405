//! `vireo img info`: what qemu-img info prints, in the same words.

use std::process::ExitCode;

use block::qcow2::{Qcow2Disk, Qcow2Info};
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
            let q = Qcow2Disk::open(
                &args.file,
                &OpenOptions {
                    read_only: true,
                    direct: false,
                    format: Some(format),
                    ..OpenOptions::default()
                },
            )
            .map_err(|e| {
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
            if let Some(q) = &qcow2 {
                if !q.snapshots.is_empty() {
                    j.insert(
                        "snapshots".into(),
                        Value::Array(q.snapshots.iter().map(snapshot_json).collect()),
                    );
                }
            }
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
            let text = super::json_text(&Value::Object(j))?;
            println!("{text}");
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
    Ok(ExitCode::SUCCESS)
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
