//! `vireo img create` and `vireo img resize`.

use std::process::ExitCode;

use block::{DiskImage, ImageFormat, OpenOptions, Replacement};

use super::size::parse_size;
use super::{CreateArgs, ImgError, ResizeArgs};

/// Format options given with `-o`.
#[derive(Debug, Default)]
pub struct FormatOptions {
    /// qcow2 cluster size in bytes.
    pub cluster_size: Option<u64>,
    /// qcow2 compat level: "0.10" (version 2) or "1.1" (version 3).
    pub compat: Option<String>,
    /// `preallocation`: `off`, or for qcow2 `metadata` (every cluster
    /// mapped at creation, its data unwritten). qemu-img's `falloc` and
    /// `full` are refused.
    pub preallocation: Option<String>,
}

/// Parse `-o key=value,key=value`.
pub fn parse_options(text: Option<&str>) -> Result<FormatOptions, ImgError> {
    let mut out = FormatOptions::default();
    let Some(text) = text else {
        return Ok(out);
    };
    for item in text.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| ImgError::usage(format!("invalid option '{item}' (key=value)")))?;
        match key {
            "cluster_size" => {
                out.cluster_size = Some(parse_size(value).map_err(ImgError::usage)?);
            }
            "compat" => match value {
                "0.10" | "v2" | "1.1" | "v3" => out.compat = Some(value.to_string()),
                _ => {
                    return Err(ImgError::usage(format!(
                        "invalid compat level '{value}' (0.10 or 1.1)"
                    )))
                }
            },
            "preallocation" => match value {
                "off" | "metadata" => out.preallocation = Some(value.to_string()),
                "falloc" | "full" => {
                    return Err(ImgError::usage(format!(
                        "preallocation '{value}' is not supported (off or metadata)"
                    )))
                }
                _ => {
                    return Err(ImgError::usage(format!(
                        "Parameter 'preallocation' does not accept value '{value}'"
                    )))
                }
            },
            _ => return Err(ImgError::usage(format!("unknown option '{key}'"))),
        }
    }
    Ok(out)
}

pub fn create_command(args: &CreateArgs) -> Result<ExitCode, ImgError> {
    let opts = parse_options(args.options.as_deref())?;
    let size = match &args.size {
        Some(s) => Some(parse_size(s).map_err(ImgError::usage)?),
        None => None,
    };
    match args.format {
        ImageFormat::Raw => {
            if args.backing.is_some() {
                return Err(ImgError::usage("raw images cannot have a backing file"));
            }
            if opts.cluster_size.is_some() || opts.compat.is_some() {
                return Err(ImgError::usage("raw images take no format options"));
            }
            if opts.preallocation.as_deref() == Some("metadata") {
                return Err(ImgError::usage(
                    "preallocation 'metadata' is for qcow2 images (a raw image has no metadata)",
                ));
            }
            let size = size.ok_or_else(|| ImgError::usage("image size is required"))?;
            check_size(ImageFormat::Raw, size).map_err(|e| e.about(&args.file))?;
            let new = Replacement::begin(&args.file).map_err(|e| ImgError::block(&e))?;
            create_raw(new.temp_path(), &args.file, size)?;
            new.commit().map_err(|e| ImgError::block(&e))?;
            if !args.quiet {
                let mut line = format!("Formatting '{}', fmt=raw size={size}", args.file.display());
                if let Some(p) = &opts.preallocation {
                    line.push_str(&format!(" preallocation={p}"));
                }
                println!("{line}");
            }
        }
        ImageFormat::Qcow2 => {
            let size = match (size, &args.backing) {
                (Some(s), _) => s,
                (None, Some(b)) => backing_size(&args.file, b, args.backing_format)?,
                (None, None) => return Err(ImgError::usage("image size is required")),
            };
            check_size(ImageFormat::Qcow2, size).map_err(|e| e.about(&args.file))?;
            let options = qcow2_options(&opts, size)?;
            let options = block::qcow2::CreateOptions {
                backing_file: args.backing.clone(),
                backing_format: args.backing_format,
                ..options
            };
            block::qcow2::create(&args.file, &options).map_err(|e| ImgError::block(&e))?;
            let preallocation = opts
                .preallocation
                .as_ref()
                .map(|p| format!(" preallocation={p}"))
                .unwrap_or_default();
            let mut line = format!(
                "Formatting '{}', fmt=qcow2 cluster_size={} extended_l2=off{preallocation} compression_type=zlib size={}",
                args.file.display(),
                options.cluster_size,
                options.size.div_ceil(512) * 512
            );
            if let Some(b) = &args.backing {
                line.push_str(&format!(" backing_file={b}"));
                if let Some(f) = args.backing_format {
                    line.push_str(&format!(" backing_fmt={f}"));
                }
            }
            line.push_str(" lazy_refcounts=off refcount_bits=16");
            if !args.quiet {
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// qcow2 creation options from `-o`.
pub fn qcow2_options(
    opts: &FormatOptions,
    size: u64,
) -> Result<block::qcow2::CreateOptions, ImgError> {
    let version = match opts.compat.as_deref() {
        Some("0.10") | Some("v2") => 2,
        _ => 3,
    };
    let cluster_size = opts.cluster_size.unwrap_or(65536);
    if !cluster_size.is_power_of_two() || !(512..=2 << 20).contains(&cluster_size) {
        return Err(ImgError::usage(format!(
            "cluster size {cluster_size} must be a power of two between 512 and 2M"
        )));
    }
    Ok(block::qcow2::CreateOptions {
        size,
        cluster_size,
        version,
        preallocate_metadata: opts.preallocation.as_deref() == Some("metadata"),
        ..Default::default()
    })
}

/// The virtual size of a backing file named relative to the new image.
fn backing_size(
    image: &std::path::Path,
    backing: &str,
    format: Option<ImageFormat>,
) -> Result<u64, ImgError> {
    let p = std::path::Path::new(backing);
    let full = if p.is_absolute() {
        p.to_owned()
    } else {
        image
            .parent()
            .unwrap_or_else(|| std::path::Path::new("."))
            .join(p)
    };
    Ok(open_read_only(&full, format)?.size())
}

/// Largest virtual size of each format: a raw file's length is an
/// `off_t`; qcow2 offsets must fit in 62 bits (QEMU's limits).
pub fn max_size(format: ImageFormat) -> u64 {
    match format {
        ImageFormat::Raw => i64::MAX as u64,
        ImageFormat::Qcow2 => block::qcow2::header::MAX_VIRTUAL_SIZE,
    }
}

/// Refuse a size the format cannot hold, naming both.
pub fn check_size(format: ImageFormat, size: u64) -> Result<(), ImgError> {
    let max = max_size(format);
    if size > max {
        return Err(ImgError::usage(format!(
            "size {size} is too large for a {format} image (at most {max} bytes)"
        )));
    }
    Ok(())
}

/// Make `temp` (a [`block::Replacement`]'s new, empty file) a sparse raw
/// image of `size` bytes; errors name `target`, the file the user named.
pub fn create_raw(
    temp: &std::path::Path,
    target: &std::path::Path,
    size: u64,
) -> Result<(), ImgError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(temp)
        .map_err(|e| ImgError::usage(format!("{}: {e}", target.display())))?;
    file.set_len(size).map_err(|e| {
        ImgError::usage(format!(
            "{}: cannot make a file of {size} bytes: {e}",
            target.display()
        ))
    })?;
    file.sync_all()
        .map_err(|e| ImgError::failure(format!("{}: {e}", target.display())))
}

pub fn resize_command(args: &ResizeArgs) -> Result<ExitCode, ImgError> {
    let disk = block::open(
        &args.file,
        &OpenOptions {
            read_only: false,
            direct: false,
            format: args.format,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| ImgError::block(&e))?;
    let current = disk.size();
    let new_size = relative_size(&args.size, current)?;
    check_size(disk.format(), new_size).map_err(|e| e.about(&args.file))?;
    if new_size < current && !args.shrink {
        return Err(ImgError::usage(
            "use --shrink to make an image smaller (data past the new end is lost)",
        ));
    }
    disk.resize(new_size).map_err(|e| ImgError::block(&e))?;
    disk.flush().map_err(|e| ImgError::block(&e))?;
    println!("Image resized.");
    Ok(ExitCode::SUCCESS)
}

/// `SIZE`, `+SIZE` or `-SIZE` against `current`.
fn relative_size(text: &str, current: u64) -> Result<u64, ImgError> {
    let bad = |m: String| ImgError::usage(m);
    if let Some(rest) = text.strip_prefix('+') {
        let d = parse_size(rest).map_err(bad)?;
        current
            .checked_add(d)
            .ok_or_else(|| ImgError::usage(format!("size {current} + {d} is too large")))
    } else if let Some(rest) = text.strip_prefix('-') {
        let d = parse_size(rest).map_err(bad)?;
        current.checked_sub(d).ok_or_else(|| {
            ImgError::usage(format!("cannot shrink a {current}-byte image by {d} bytes"))
        })
    } else {
        parse_size(text).map_err(bad)
    }
}

/// Open an image read-only for inspection.
pub fn open_read_only(
    path: &std::path::Path,
    format: Option<ImageFormat>,
) -> Result<std::sync::Arc<dyn DiskImage>, ImgError> {
    block::open(
        path,
        &OpenOptions {
            read_only: true,
            direct: false,
            format,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| ImgError::block(&e))
}
