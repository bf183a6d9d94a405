//! `vireo img check`: qemu-img check's report and exit codes (0 clean,
//! 2 errors found, 3 only leaked clusters, 1 the check could not run).

use std::process::ExitCode;

use block::qcow2::{CheckReport, Qcow2Disk, RepairMode};
use block::{ImageFormat, OpenOptions};
use serde_json::{Map, Value};

use super::{CheckArgs, ImgError, OutputFormat, RepairArg};

pub fn check_command(args: &CheckArgs) -> Result<ExitCode, ImgError> {
    let format = match args.format {
        Some(f) => f,
        None => super::probe(&args.file)?,
    };
    if format != ImageFormat::Qcow2 {
        return Err(ImgError::usage(format!(
            "{}: {format} images have no metadata to check",
            args.file.display()
        )));
    }
    let mode = match args.repair {
        None => RepairMode::None,
        Some(RepairArg::Leaks) => RepairMode::Leaks,
        Some(RepairArg::All) => RepairMode::All,
    };
    let disk = Qcow2Disk::open(
        &args.file,
        &OpenOptions {
            read_only: mode == RepairMode::None,
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
    let report = disk
        .check(mode)
        .map_err(|e| ImgError::failure(e.to_string()))?;
    match args.output {
        OutputFormat::Human => print_human(&report),
        OutputFormat::Json => print_json(&report, &args.file.display().to_string())?,
    }
    let code = if report.corruptions > 0 {
        2
    } else if report.leaks > 0 {
        3
    } else {
        0
    };
    Ok(ExitCode::from(code))
}

fn print_human(r: &CheckReport) {
    for m in &r.messages {
        eprintln!("{m}");
    }
    if r.corruptions == 0 && r.leaks == 0 {
        if r.corruptions_fixed + r.leaks_fixed > 0 {
            println!(
                "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n",
                r.leaks_fixed, r.corruptions_fixed
            );
        }
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

fn print_json(r: &CheckReport, name: &str) -> Result<(), ImgError> {
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
    if r.leaks_fixed > 0 {
        j.insert("leaks-fixed".into(), r.leaks_fixed.into());
    }
    if r.corruptions_fixed > 0 {
        j.insert("corruptions-fixed".into(), r.corruptions_fixed.into());
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
