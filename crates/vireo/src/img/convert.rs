//! `vireo img convert`: copy an image's contents into a new image,
//! skipping what reads as zeroes so the destination stays sparse.

use std::process::ExitCode;

use std::path::Path;

use block::copy::CopyError;
use block::{DiskImage, ImageFormat, OpenOptions, Replacement};

use super::create::{check_size, create_raw, open_read_only, parse_options, qcow2_options};
use super::{ConvertArgs, ImgError};

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
            // qemu-img convert's default for its output: the file under
            // its temporary name is thrown away if anything fails, and is
            // synced once below.
            unsafe_cache: true,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| ImgError::block(&e))?;
    copy(src.as_ref(), dst.as_ref(), args.progress).map_err(|e| match e {
        CopyError::Source(e) => about(&args.source, e),
        CopyError::Destination(e) => about(&args.destination, e),
    })?;
    drop(dst);
    std::fs::File::open(temp)
        .and_then(|f| f.sync_all())
        .map_err(|e| {
            about(
                &args.destination,
                block::Error::Io {
                    op: "fsync",
                    source: e,
                },
            )
        })?;
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

/// A block error as one line naming the file it is about.
fn about(path: &Path, e: block::Error) -> ImgError {
    ImgError::block(&block::Error::Open {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// Copies `src` into `dst` (which reads as zeroes), with a progress bar
/// when asked for.
fn copy(src: &dyn DiskImage, dst: &dyn DiskImage, progress: bool) -> Result<(), CopyError> {
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(src.size());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "    ({percent:>3}.00/100%) [{bar:40}] {bytes}/{total_bytes}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    block::copy::copy(src, dst, &mut |done| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    })?;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(())
}
