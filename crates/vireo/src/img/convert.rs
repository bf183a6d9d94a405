//! `vireo img convert`: copy an image's contents into a new image,
//! skipping what reads as zeroes so the destination stays sparse.

use std::process::ExitCode;

use std::path::Path;

use block::{DiskImage, ImageFormat, OpenOptions, Replacement};

use super::create::{check_size, create_raw, open_read_only, parse_options, qcow2_options};
use super::{ConvertArgs, ImgError};

/// Bytes copied per step.
const CHUNK: u64 = 2 << 20;

pub fn convert_command(args: &ConvertArgs) -> Result<ExitCode, ImgError> {
    refuse_own_input(&args.source, &args.destination)?;
    let src: std::sync::Arc<dyn DiskImage> = match &args.snapshot {
        None => open_read_only(&args.source, args.format)?,
        Some(name) => std::sync::Arc::new(
            block::qcow2::Qcow2Disk::open_snapshot(&args.source, name, false).map_err(|e| {
                ImgError::block(&block::Error::Open {
                    path: args.source.clone(),
                    source: Box::new(e),
                })
            })?,
        ),
    };
    let opts = parse_options(args.options.as_deref())?;
    let size = src.size();
    check_size(args.output_format, size).map_err(|e| e.about(&args.destination))?;
    let qcow2 = match args.output_format {
        ImageFormat::Raw => {
            if opts.cluster_size.is_some() || opts.compat.is_some() {
                return Err(ImgError::usage("raw images take no format options"));
            }
            if opts.preallocation.as_deref() == Some("metadata") {
                return Err(ImgError::usage(
                    "preallocation 'metadata' is for qcow2 images (a raw image has no metadata)",
                ));
            }
            None
        }
        ImageFormat::Qcow2 => Some(qcow2_options(&opts, size)?),
    };
    // Every check has passed: lock the destination (refused if in use)
    // and build the copy beside it; the old file stays as it was until
    // the copy is complete.
    let new = Replacement::begin(&args.destination).map_err(|e| ImgError::block(&e))?;
    let temp = new.temp_path();
    match &qcow2 {
        None => create_raw(temp, &args.destination, size)?,
        Some(options) => block::qcow2::format(temp, options).map_err(|e| {
            ImgError::block(&block::Error::Open {
                path: args.destination.clone(),
                source: Box::new(e),
            })
        })?,
    }
    let dst = block::open(
        temp,
        &OpenOptions {
            read_only: false,
            direct: false,
            format: Some(args.output_format),
            ..OpenOptions::default()
        },
    )
    .map_err(|e| ImgError::block(&e))?;
    copy(src.as_ref(), dst.as_ref(), args.progress).map_err(|e| match e {
        Side::Source(e) => about(&args.source, e),
        Side::Destination(e) => about(&args.destination, e),
    })?;
    drop(dst);
    new.commit().map_err(|e| ImgError::block(&e))?;
    Ok(ExitCode::SUCCESS)
}

/// Refuse a destination that is the source or any file in its backing
/// chain (by device and inode, so other names for the same file count).
fn refuse_own_input(source: &Path, destination: &Path) -> Result<(), ImgError> {
    let Some(dst) = block::FileId::of(destination) else {
        return Ok(());
    };
    let chain = block::qcow2::backing_chain(source);
    if let Some((i, (p, _))) = chain.iter().enumerate().find(|(_, (_, id))| *id == dst) {
        let what = if i == 0 {
            "the source image itself".to_string()
        } else {
            format!("{} in the source's backing chain", p.display())
        };
        return Err(ImgError::usage(format!(
            "{}: the destination is {what}; convert never writes over its own input",
            destination.display()
        )));
    }
    Ok(())
}

/// Which image a copy error came from.
#[derive(Debug)]
pub enum Side {
    /// Reading the source failed.
    Source(block::Error),
    /// Writing the destination failed.
    Destination(block::Error),
}

/// A block error as one line naming the file it is about.
fn about(path: &Path, e: block::Error) -> ImgError {
    ImgError::block(&block::Error::Open {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// Write the runs of `data` that are not all zeroes, in 64 KiB blocks,
/// so zeroes in the source stay unallocated in the copy.
fn write_nonzero(dst: &dyn DiskImage, offset: u64, data: &[u8]) -> Result<(), Side> {
    const BLOCK: usize = 64 * 1024;
    let mut start: Option<usize> = None;
    let mut at = 0usize;
    while at <= data.len() {
        let end = (at + BLOCK).min(data.len());
        let zero = at == data.len() || data[at..end].iter().all(|&b| b == 0);
        match (zero, start) {
            (false, None) => start = Some(at),
            (true, Some(s)) => {
                dst.write_at(offset + s as u64, &data[s..at])
                    .map_err(Side::Destination)?;
                start = None;
            }
            _ => {}
        }
        if at == data.len() {
            break;
        }
        at = end;
    }
    Ok(())
}

/// Copy every non-zero chunk of `src` into `dst` (which reads as zeroes).
pub fn copy(src: &dyn DiskImage, dst: &dyn DiskImage, progress: bool) -> Result<(), Side> {
    let size = src.size();
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "    ({percent:>3}.00/100%) [{bar:40}] {bytes}/{total_bytes}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut buf = vec![0u8; usize::try_from(CHUNK).unwrap_or(1 << 20)];
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(CHUNK);
        // Ranges known to read as zeroes need no copy: the new image
        // reads as zeroes already.
        if let Ok(Some((false, zero))) = src.allocation(offset, n) {
            if zero >= n {
                offset += n;
                if let Some(b) = &bar {
                    b.set_position(offset);
                }
                continue;
            }
        }
        let n_us = usize::try_from(n).unwrap_or(0);
        let chunk = &mut buf[..n_us];
        src.read_at(offset, chunk).map_err(Side::Source)?;
        write_nonzero(dst, offset, chunk)?;
        offset += n;
        if let Some(b) = &bar {
            b.set_position(offset);
        }
    }
    dst.flush().map_err(Side::Destination)?;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(())
}
