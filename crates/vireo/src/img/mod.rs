//! `vireo img`: create, inspect, check, convert, resize and snapshot disk
//! images, with the verbs, flags and output qemu-img users know.
//!
//! Exit codes as elsewhere in vireo: 0 on success, 2 when the input is
//! wrong (a bad size, a missing file, an unknown format), 1 when the work
//! itself failed (I/O errors). `check` uses qemu-img check's codes.

mod check;
mod convert;
mod create;
mod info;
pub(crate) mod size;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use block::ImageFormat;
use clap::{Args, Subcommand, ValueEnum};

/// Exit code for input errors.
const EXIT_USAGE: u8 = 2;
/// Exit code for failures.
const EXIT_FAILURE: u8 = 1;

/// `vireo img`.
#[derive(Debug, Args)]
pub struct ImgArgs {
    #[command(subcommand)]
    pub command: ImgCommand,
}

/// Output style of `info` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Text for people, as qemu-img prints it.
    Human,
    /// JSON with qemu-img's field names.
    Json,
}

/// The `vireo img` verbs.
#[derive(Debug, Subcommand)]
pub enum ImgCommand {
    /// Create an image (raw unless -f says otherwise).
    Create(CreateArgs),
    /// Show an image's format, sizes and format-specific details.
    Info(InfoArgs),
    /// Copy an image to another file, in another format if asked.
    Convert(ConvertArgs),
    /// Grow or shrink an image's virtual size.
    Resize(ResizeArgs),
    /// Check a qcow2 image's metadata (exit 0: clean, 1: check not completed,
    /// 2: errors, 3: leaks only, 63: the format has no checks).
    Check(CheckArgs),
    /// List, create, apply or delete a qcow2 image's internal snapshots.
    Snapshot(SnapshotArgs),
}

/// `vireo img check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Format of the image (probed when not given).
    #[arg(short = 'f', long = "format")]
    pub format: Option<ImageFormat>,
    /// human or json.
    #[arg(long = "output", value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// Repair: leaks (free leaked clusters) or all (also fix refcounts that are too low).
    #[arg(short = 'r', long = "repair")]
    pub repair: Option<RepairArg>,
    /// The image.
    pub file: PathBuf,
}

/// What `check -r` repairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RepairArg {
    /// Leaked clusters only.
    Leaks,
    /// Leaks and errors.
    All,
}

/// `vireo img snapshot`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["list", "create", "delete", "apply"])))]
pub struct SnapshotArgs {
    /// List the snapshots.
    #[arg(short = 'l', long = "list")]
    pub list: bool,
    /// Take a snapshot with this name.
    #[arg(short = 'c', long = "create", value_name = "NAME")]
    pub create: Option<String>,
    /// Delete the snapshot with this name or ID.
    #[arg(short = 'd', long = "delete", value_name = "NAME")]
    pub delete: Option<String>,
    /// Revert the image to the snapshot with this name or ID.
    #[arg(short = 'a', long = "apply", value_name = "NAME")]
    pub apply: Option<String>,
    /// The image.
    pub file: PathBuf,
}

/// `vireo img create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Format of the new image: raw or qcow2.
    #[arg(short = 'f', long = "format", default_value = "raw")]
    pub format: ImageFormat,
    /// Backing file of a qcow2 image (its size is the default size).
    #[arg(short = 'b', long = "backing")]
    pub backing: Option<String>,
    /// Format of the backing file (probed when not given).
    #[arg(short = 'F', long = "backing-format")]
    pub backing_format: Option<ImageFormat>,
    /// Format options, comma-separated: cluster_size=SIZE, compat=0.10|1.1.
    #[arg(short = 'o', long = "options")]
    pub options: Option<String>,
    /// Quiet: no "Formatting ..." line (qemu-img's -q).
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Path of the new image.
    pub file: PathBuf,
    /// Virtual size: bytes, or with a k, M, G, T or P suffix.
    pub size: Option<String>,
}

/// `vireo img info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format of the image (probed when not given).
    #[arg(short = 'f', long = "format")]
    pub format: Option<ImageFormat>,
    /// human or json.
    #[arg(long = "output", value_enum, default_value = "human")]
    pub output: OutputFormat,
    /// The image.
    pub file: PathBuf,
}

/// `vireo img convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Format of the source (probed when not given).
    #[arg(short = 'f', long = "format")]
    pub format: Option<ImageFormat>,
    /// Format of the destination.
    #[arg(short = 'O', long = "output-format", default_value = "raw")]
    pub output_format: ImageFormat,
    /// Format options of the destination (as for create).
    #[arg(short = 'o', long = "options")]
    pub options: Option<String>,
    /// Show a progress bar.
    #[arg(short = 'p', long = "progress")]
    pub progress: bool,
    /// Copy this internal snapshot (name or ID) instead of the active image.
    #[arg(short = 's', long = "snapshot")]
    pub snapshot: Option<String>,
    /// Source image.
    pub source: PathBuf,
    /// Destination image (created or overwritten).
    pub destination: PathBuf,
}

/// `vireo img resize`.
#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// Format of the image (probed when not given).
    #[arg(short = 'f', long = "format")]
    pub format: Option<ImageFormat>,
    /// Allow making the image smaller (data past the new end is lost).
    #[arg(long)]
    pub shrink: bool,
    /// The image.
    pub file: PathBuf,
    /// New size, or +SIZE / -SIZE relative to the current one.
    #[arg(allow_hyphen_values = true)]
    pub size: String,
}

/// An error of a `vireo img` verb, with the exit code it maps to.
#[derive(Debug)]
pub struct ImgError {
    /// One line: what failed and why.
    pub message: String,
    /// The process exit code.
    pub code: u8,
}

impl ImgError {
    /// Bad input: exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_USAGE,
        }
    }

    /// The work failed: exit code 1.
    pub fn failure(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }

    /// The same error, its message prefixed with the file it is about.
    pub fn about(self, path: &std::path::Path) -> Self {
        Self {
            message: format!("{}: {}", path.display(), self.message),
            code: self.code,
        }
    }

    /// A block-layer error on one line with its causes; a missing or
    /// malformed input file is bad input, anything else a failure.
    pub fn block(err: &block::Error) -> Self {
        let message = chain(err);
        let code = if is_input_error(err) {
            EXIT_USAGE
        } else {
            EXIT_FAILURE
        };
        Self { message, code }
    }
}

fn is_input_error(err: &block::Error) -> bool {
    match err {
        block::Error::Open { source, .. } => is_input_error(source),
        block::Error::InvalidImage(_)
        | block::Error::UnsupportedFeature(_)
        | block::Error::InUse(_)
        | block::Error::Refused(_)
        | block::Error::OutOfRange { .. } => true,
        block::Error::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::NotFound
                | std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::IsADirectory
        ),
        _ => false,
    }
}

/// The format of the image at `path` (an error names the path).
pub fn probe(path: &std::path::Path) -> Result<ImageFormat, ImgError> {
    block::probe(path).map_err(|e| {
        ImgError::block(&block::Error::Open {
            path: path.to_owned(),
            source: Box::new(e),
        })
    })
}

/// JSON as qemu-img prints it: four-space indents.
pub fn json_text(value: &serde_json::Value) -> Result<String, ImgError> {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    value
        .serialize(&mut ser)
        .map_err(|e| ImgError::failure(e.to_string()))?;
    String::from_utf8(out).map_err(|e| ImgError::failure(e.to_string()))
}

/// An error and its causes on one line.
fn chain(err: &dyn std::error::Error) -> String {
    vmm::error_chain(err)
}

/// Run one `vireo img` verb.
pub fn img_command(args: ImgArgs) -> ExitCode {
    let result = match args.command {
        ImgCommand::Create(a) => create::create_command(&a),
        ImgCommand::Info(a) => info::info_command(&a),
        ImgCommand::Convert(a) => convert::convert_command(&a),
        ImgCommand::Resize(a) => create::resize_command(&a),
        ImgCommand::Check(a) => check::check_command(&a),
        ImgCommand::Snapshot(a) => snapshot::snapshot_command(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vireo: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
