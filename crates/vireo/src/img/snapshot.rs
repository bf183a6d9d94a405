//! `vireo img snapshot`: list, create, apply and delete internal snapshots.

use std::process::ExitCode;

use block::qcow2::{Qcow2Disk, Snapshot};
use block::{ImageFormat, OpenOptions};
use serde_json::{json, Value};

use super::size::human_size;
use super::{ImgError, SnapshotArgs};

pub fn snapshot_command(args: &SnapshotArgs) -> Result<ExitCode, ImgError> {
    let format = super::probe(&args.file)?;
    if format != ImageFormat::Qcow2 {
        return Err(ImgError::usage(format!(
            "{}: {format} images have no internal snapshots",
            args.file.display()
        )));
    }
    let disk = Qcow2Disk::open(
        &args.file,
        &OpenOptions {
            read_only: args.list,
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
    if args.list {
        let snaps = disk.snapshots();
        if !snaps.is_empty() {
            println!("Snapshot list:");
            print_snapshot_table(&snaps);
        }
    } else {
        let (verb, name, r) = if let Some(name) = &args.create {
            ("create", name, disk.create_snapshot(name).map(drop))
        } else if let Some(name) = &args.apply {
            ("apply", name, disk.apply_snapshot(name))
        } else if let Some(name) = &args.delete {
            ("delete", name, disk.delete_snapshot(name))
        } else {
            return Ok(ExitCode::SUCCESS);
        };
        // The cause decides the exit code (a missing or duplicate name is
        // bad input: 2); the message names the image and what was asked.
        r.map_err(|e| {
            let inner = ImgError::block(&e);
            ImgError {
                message: format!(
                    "{}: could not {verb} snapshot '{name}': {}",
                    args.file.display(),
                    inner.message
                ),
                ..inner
            }
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The table qemu-img prints under "Snapshot list:".
pub fn print_snapshot_table(snaps: &[Snapshot]) {
    println!(
        "{:<9} {:<17} {:>7}{:>20}{:>13}{:>11}",
        "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT"
    );
    for s in snaps {
        println!(
            "{:<9} {:<17} {:>7}{:>20}{:>13}{:>11}",
            s.id,
            s.name,
            human_size(s.vm_state_size),
            local_time(s.date_sec),
            vm_clock(s.vm_clock_nsec),
            0
        );
    }
}

/// A snapshot as qemu-img info --output json shows it.
pub fn snapshot_json(s: &Snapshot) -> Value {
    json!({
        "icount": 0,
        "vm-clock-nsec": s.vm_clock_nsec % 1_000_000_000,
        "name": s.name,
        "date-sec": s.date_sec,
        "date-nsec": s.date_nsec,
        "vm-clock-sec": s.vm_clock_nsec / 1_000_000_000,
        "id": s.id,
        "vm-state-size": s.vm_state_size,
    })
}

fn vm_clock(nsec: u64) -> String {
    let ms = nsec / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `YYYY-MM-DD HH:MM:SS` in local time, as qemu-img prints dates.
fn local_time(sec: u32) -> String {
    let t = libc::time_t::from(sec);
    // SAFETY: tm is plain data; localtime_r fills it from t.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return sec.to_string();
    }
    format!(
        " {:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}
