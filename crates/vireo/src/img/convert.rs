//! `vireo img convert`: copy an image's contents into a new image,
//! skipping what reads as zeroes so the destination stays sparse.

use std::process::ExitCode;

use block::{DiskImage, ImageFormat, OpenOptions};

use super::create::{create_raw, open_read_only, parse_options};
use super::{ConvertArgs, ImgError};

/// Bytes copied per step.
const CHUNK: u64 = 2 << 20;

pub fn convert_command(args: &ConvertArgs) -> Result<ExitCode, ImgError> {
    let src = open_read_only(&args.source, args.format)?;
    let opts = parse_options(args.options.as_deref())?;
    let size = src.size();
    match args.output_format {
        ImageFormat::Raw => create_raw(&args.destination, size)?,
        ImageFormat::Qcow2 => {
            let _ = opts;
            return Err(ImgError::failure(
                "creating qcow2 images is not implemented yet",
            ));
        }
    }
    let dst = block::open(
        &args.destination,
        &OpenOptions {
            read_only: false,
            direct: false,
            format: Some(args.output_format),
        },
    )
    .map_err(|e| ImgError::block(&e))?;
    copy(src.as_ref(), dst.as_ref(), args.progress)?;
    Ok(ExitCode::SUCCESS)
}

/// Copy every non-zero chunk of `src` into `dst` (which reads as zeroes).
pub fn copy(src: &dyn DiskImage, dst: &dyn DiskImage, progress: bool) -> Result<(), ImgError> {
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
        // Holes (in the source image and its backing chain) need no copy.
        if let Ok(Some((false, hole))) = src.allocation(offset, n) {
            if hole >= n && !has_backing_data(src, offset, n) {
                offset += n;
                if let Some(b) = &bar {
                    b.set_position(offset);
                }
                continue;
            }
        }
        let n_us = usize::try_from(n).unwrap_or(0);
        let chunk = &mut buf[..n_us];
        src.read_at(offset, chunk)
            .map_err(|e| ImgError::block(&e))?;
        if chunk.iter().any(|&b| b != 0) {
            dst.write_at(offset, chunk)
                .map_err(|e| ImgError::block(&e))?;
        }
        offset += n;
        if let Some(b) = &bar {
            b.set_position(offset);
        }
    }
    dst.flush().map_err(|e| ImgError::block(&e))?;
    if let Some(b) = bar {
        b.finish();
    }
    Ok(())
}

/// Whether the hole at `offset` may show a backing file's data. Holes of
/// images without a backing file read as zeroes.
fn has_backing_data(src: &dyn DiskImage, _offset: u64, _len: u64) -> bool {
    src.format() != ImageFormat::Raw
}
