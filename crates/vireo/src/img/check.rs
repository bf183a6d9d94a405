//! `vireo img check`: qemu-img check's report and exit codes (0 clean,
//! 1 the check could not run, 2 errors found, 3 only leaked clusters,
//! 63 a format without checks). After a repair the image is checked
//! again and the exit code says what is left.

use std::process::ExitCode;

use block::qcow2::{CheckReport, Qcow2Disk, RepairMode};
use block::{ImageFormat, OpenOptions};
use serde_json::{Map, Value};

use super::{CheckArgs, ImgError, OutputFormat, RepairArg};

/// qemu-img check's exit codes.
const EXIT_NOT_COMPLETED: u8 = 1;
const EXIT_CORRUPT: u8 = 2;
const EXIT_LEAKS: u8 = 3;
const EXIT_NO_CHECK: u8 = 63;

/// The check could not run (the image would not open, or reading its
/// metadata failed): exit 1, as qemu-img.
fn not_completed(path: &std::path::Path, e: block::Error) -> ImgError {
    let mut err = ImgError::block(&block::Error::Open {
        path: path.to_owned(),
        source: Box::new(e),
    });
    err.code = EXIT_NOT_COMPLETED;
    err
}

pub fn check_command(args: &CheckArgs) -> Result<ExitCode, ImgError> {
    let format = match args.format {
        Some(f) => f,
        None => super::probe(&args.file).map_err(|mut e| {
            e.code = EXIT_NOT_COMPLETED;
            e
        })?,
    };
    if format != ImageFormat::Qcow2 {
        let mut e = ImgError::usage(format!(
            "{}: {format} images have no metadata to check (this image format does not support checks)",
            args.file.display()
        ));
        e.code = EXIT_NO_CHECK;
        return Err(e);
    }
    let mode = match args.repair {
        None => RepairMode::None,
        Some(RepairArg::Leaks) => RepairMode::Leaks,
        Some(RepairArg::All) => RepairMode::All,
    };
    let disk = if mode == RepairMode::None {
        Qcow2Disk::open(
            &args.file,
            &OpenOptions {
                read_only: true,
                direct: false,
                format: Some(format),
                ..OpenOptions::default()
            },
        )
    } else {
        Qcow2Disk::open_for_repair(&args.file)
    }
    .map_err(|e| not_completed(&args.file, e))?;
    let report = disk.check(mode).map_err(|e| not_completed(&args.file, e))?;
    // After a repair, check again and report what is left, as qemu-img
    // does: its exit code comes from this second look.
    let left = if mode == RepairMode::None {
        None
    } else {
        Some(
            disk.check(RepairMode::None)
                .map_err(|e| not_completed(&args.file, e))?,
        )
    };
    match args.output {
        OutputFormat::Human => print_human(&report, left.as_ref()),
        OutputFormat::Json => print_json(&report, left.as_ref(), &args.file.display().to_string())?,
    }
    let last = left.as_ref().unwrap_or(&report);
    let code = if last.corruptions > 0 {
        EXIT_CORRUPT
    } else if last.leaks > 0 {
        EXIT_LEAKS
    } else {
        0
    };
    Ok(ExitCode::from(code))
}

fn print_human(first: &CheckReport, left: Option<&CheckReport>) {
    for m in &first.messages {
        eprintln!("{m}");
    }
    if first.corruptions_fixed + first.leaks_fixed > 0 {
        println!(
            "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n",
            first.leaks_fixed, first.corruptions_fixed
        );
    }
    let r = match left {
        Some(l) => {
            println!("Double checking the fixed image now...");
            for m in &l.messages {
                eprintln!("{m}");
            }
            l
        }
        None => first,
    };
    if r.corruptions == 0 && r.leaks == 0 {
        println!("No errors were found on the image.");
    } else {
        if r.corruptions > 0 {
            println!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.",
                r.corruptions
            );
        }
        if r.leaks > 0 {
            println!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.",
                r.leaks
            );
        }
    }
    if r.total_clusters > 0 && r.allocated_clusters > 0 {
        let pct = |n: u64, d: u64| 100.0 * n as f64 / d.max(1) as f64;
        println!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
            r.allocated_clusters,
            r.total_clusters,
            pct(r.allocated_clusters, r.total_clusters),
            pct(r.fragmented_clusters, r.allocated_clusters),
            pct(r.compressed_clusters, r.allocated_clusters)
        );
    }
    println!("Image end offset: {}", r.image_end_offset);
}

fn print_json(first: &CheckReport, left: Option<&CheckReport>, name: &str) -> Result<(), ImgError> {
    let r = left.unwrap_or(first);
    let mut j = Map::new();
    j.insert("image-end-offset".into(), r.image_end_offset.into());
    j.insert("total-clusters".into(), r.total_clusters.into());
    j.insert("check-errors".into(), 0.into());
    if r.leaks > 0 {
        j.insert("leaks".into(), r.leaks.into());
    }
    if r.corruptions > 0 {
        j.insert("corruptions".into(), r.corruptions.into());
    }
    if first.leaks_fixed > 0 {
        j.insert("leaks-fixed".into(), first.leaks_fixed.into());
    }
    if first.corruptions_fixed > 0 {
        j.insert("corruptions-fixed".into(), first.corruptions_fixed.into());
    }
    j.insert("allocated-clusters".into(), r.allocated_clusters.into());
    j.insert("fragmented-clusters".into(), r.fragmented_clusters.into());
    j.insert("compressed-clusters".into(), r.compressed_clusters.into());
    j.insert("filename".into(), name.into());
    j.insert("format".into(), "qcow2".into());
    let text = super::json_text(&Value::Object(j))?;
    println!("{text}");
    Ok(())
}
