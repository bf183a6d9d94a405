//! Storage verbs that move a volume's data: vol-create-from, vol-clone,
//! vol-wipe, vol-upload and vol-download. Messages as virsh 9's; upload
//! and download show a progress bar on stderr when it is a terminal.

use std::fs::File;
use std::io::{IsTerminal as _, Seek, SeekFrom, Write as _};
use std::path::PathBuf;

use clap::Args;
use manager::client::{Client, UploadError};

use super::lifecycle::read_file;
use super::pool::locate;
use super::{Failure, Output};

/// `vol-create-from POOL FILE VOL`.
#[derive(Debug, Args)]
pub struct VolCreateFromArgs {
    /// The pool the new volume goes in (name or UUID).
    pub pool: String,
    /// The new volume's libvirt XML.
    pub file: PathBuf,
    /// The input volume: its name (with --inputpool) or path.
    pub vol: String,
    /// The input volume's pool.
    #[arg(long)]
    pub inputpool: Option<String>,
    /// Share the input's blocks (a copy-on-write clone) or fail: raw to raw, on one filesystem that has reflinks.
    #[arg(long)]
    pub reflink: bool,
    /// Map every cluster of the new qcow2 volume before the data is copied (qemu-img's preallocation=metadata).
    #[arg(long)]
    pub prealloc_metadata: bool,
    /// Print the daemon's JSON for the new volume.
    #[arg(long)]
    pub json: bool,
}

/// `vol-clone VOL NEWNAME`.
#[derive(Debug, Args)]
pub struct VolCloneArgs {
    /// The volume: its name (with --pool) or path.
    pub vol: String,
    /// The clone's name, in the same pool.
    pub newname: String,
    /// The volume's pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Share the volume's blocks (a copy-on-write clone) or fail: raw volumes, on a filesystem that has reflinks.
    #[arg(long)]
    pub reflink: bool,
    /// Map every cluster of the qcow2 clone before the data is copied (qemu-img's preallocation=metadata).
    #[arg(long)]
    pub prealloc_metadata: bool,
    /// Print the daemon's JSON for the new volume.
    #[arg(long)]
    pub json: bool,
}

/// `vol-wipe VOL`.
#[derive(Debug, Args)]
pub struct VolWipeArgs {
    /// The volume: its name (with --pool) or path.
    pub vol: String,
    /// Its pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// The wipe algorithm, by libvirt's names: zero (the default), nnsa,
    /// dod, bsi, gutmann, schneier, pfitzner7, pfitzner33, random, trim.
    #[arg(long)]
    pub algorithm: Option<String>,
    /// Print the daemon's JSON for the wiped volume.
    #[arg(long)]
    pub json: bool,
}

/// `vol-upload VOL FILE` and `vol-download VOL FILE`.
#[derive(Debug, Args)]
pub struct VolTransferArgs {
    /// The volume: its name (with --pool) or path.
    pub vol: String,
    /// The local file to read (upload) or write (download).
    pub file: PathBuf,
    /// The volume's pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// The first byte of the volume's file, in bytes.
    #[arg(long)]
    pub offset: Option<String>,
    /// How many bytes (0 or none: all of the file, or to the volume's end).
    #[arg(long)]
    pub length: Option<String>,
    /// Keep holes: an upload's blocks of zeroes become holes in a file volume; a download always keeps the volume's holes.
    #[arg(long)]
    pub sparse: bool,
    /// Print what was moved as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A byte count option as virsh reads it, with virsh's message.
fn bytes_option(name: &str, text: Option<&str>) -> Result<u64, Failure> {
    let Some(text) = text else { return Ok(0) };
    text.trim().parse::<u64>().map_err(|_| {
        Failure(format!(
            "Numeric value '{text}' for <{name}> option is malformed or out of range"
        ))
    })
}

/// `--reflink` and `--prealloc-metadata` as the daemon takes them.
fn copy_options(reflink: bool, prealloc_metadata: bool) -> manager::storage::CopyOptions {
    manager::storage::CopyOptions {
        reflink,
        prealloc_metadata,
    }
}

/// `vol-create-from POOL FILE VOL [--inputpool POOL] [--reflink] [--prealloc-metadata]`.
pub fn create_from(c: &mut Client, a: &VolCreateFromArgs) -> Result<Output, Failure> {
    let xml = read_file(&a.file)?;
    let (in_pool, in_name) = locate(c, &a.vol, a.inputpool.as_deref())?;
    let r = c
        .vol_copy(
            &in_pool,
            &in_name,
            &a.pool,
            &xml,
            copy_options(a.reflink, a.prealloc_metadata),
        )
        .map_err(|e| {
            Failure(format!(
                "Failed to create vol from {}: {e}",
                a.file.display()
            ))
        })?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::line(format!(
        "Vol {} created from input vol {in_name}",
        r.value.name
    )))
}

/// `vol-clone VOL NEWNAME [--pool POOL] [--reflink]`: a copy in the same pool with
/// the same format; an overlay's copy stands alone (flattened).
pub fn clone(c: &mut Client, a: &VolCloneArgs) -> Result<Output, Failure> {
    let (pool, name) = locate(c, &a.vol, a.pool.as_deref())?;
    let orig = c.vol_info(&pool, &name)?.value;
    let esc = super::devices::attr;
    let xml = format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{}</capacity>\n  <target>\n    <format type='{}'/>\n  </target>\n</volume>\n",
        esc(&a.newname),
        orig.capacity,
        esc(&orig.format)
    );
    let r = c
        .vol_copy(
            &pool,
            &name,
            &pool,
            &xml,
            copy_options(a.reflink, a.prealloc_metadata),
        )
        .map_err(|e| Failure(format!("Failed to clone vol from {name}: {e}")))?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::line(format!(
        "Vol {} cloned from {name}",
        r.value.name
    )))
}

/// `vol-wipe VOL [--pool POOL] [--algorithm ALGORITHM]`.
pub fn wipe(c: &mut Client, a: &VolWipeArgs) -> Result<Output, Failure> {
    let (pool, name) = locate(c, &a.vol, a.pool.as_deref())?;
    let r = c
        .vol_wipe(&pool, &name, a.algorithm.as_deref())
        .map_err(|e| Failure(format!("Failed to wipe vol {}: {e}", a.vol)))?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::line(format!("Vol {} wiped", a.vol)))
}

/// A progress bar of `total` bytes on stderr, only when it is a terminal.
fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

fn transfer_failure(what: &str, vol: &str, e: UploadError) -> Failure {
    match e {
        UploadError::Local(e) => Failure(format!(
            "cannot {what} volume {vol}: {}",
            manager::client::io_cause(&e)
        )),
        UploadError::Client(e) => Failure(format!("cannot {what} volume {vol}: {e}")),
    }
}

/// `vol-upload VOL FILE [--pool POOL] [--offset N] [--length N]`: the
/// file's bytes (its first `--length`) into the volume from `--offset`.
pub fn upload(c: &mut Client, a: &VolTransferArgs) -> Result<Output, Failure> {
    let offset = bytes_option("offset", a.offset.as_deref())?;
    let length = bytes_option("length", a.length.as_deref())?;
    let mut file = File::open(&a.file).map_err(|e| {
        Failure(format!(
            "cannot read {}: {}",
            a.file.display(),
            manager::client::io_cause(&e)
        ))
    })?;
    let meta = file.metadata().map_err(|e| {
        Failure(format!(
            "cannot read {}: {}",
            a.file.display(),
            manager::client::io_cause(&e)
        ))
    })?;
    if meta.is_dir() {
        return Err(Failure(format!(
            "cannot read {}: it is a directory",
            a.file.display()
        )));
    }
    let size = meta.len();
    // The volume is looked up first: a wrong name, or a transport that
    // fails, is reported before the file is read.
    let (pool, name) = locate(c, &a.vol, a.pool.as_deref())?;
    c.vol_info(&pool, &name)?;
    let total = if length == 0 { size } else { length.min(size) };
    let bar = progress_bar(total);
    let range = manager::client::UploadRange {
        offset,
        length: total,
        sparse: a.sparse,
    };
    let result = c.vol_upload(&pool, &name, range, &mut file, &mut |n| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let r = result.map_err(|e| transfer_failure("upload to", &a.vol, e))?;
    if a.json {
        return Ok(Output::json(r.json));
    }
    Ok(Output::text(""))
}

/// Writes downloaded pieces into the file, seeking over blocks of zeroes
/// so the copy of a sparse volume is sparse too.
struct SparseWriter {
    file: File,
    at: u64,
}

impl SparseWriter {
    const GRAIN: usize = 64 << 10;

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        for block in data.chunks(Self::GRAIN) {
            if block.iter().all(|&b| b == 0) {
                self.file.seek(SeekFrom::Current(block.len() as i64))?;
            } else {
                self.file.write_all(block)?;
            }
            self.at += block.len() as u64;
        }
        Ok(())
    }

    /// Fixes the length (a trailing hole is not written). Not synced,
    /// as virsh does not: the page cache holds what a reader needs.
    fn finish(self) -> std::io::Result<()> {
        self.file.set_len(self.at)
    }
}

/// `vol-download VOL FILE [--pool POOL] [--offset N] [--length N]`.
pub fn download(c: &mut Client, a: &VolTransferArgs) -> Result<Output, Failure> {
    let offset = bytes_option("offset", a.offset.as_deref())?;
    let length = bytes_option("length", a.length.as_deref())?;
    let (pool, name) = locate(c, &a.vol, a.pool.as_deref())?;
    let info = c.vol_info(&pool, &name)?.value;
    let total = if length == 0 {
        info.physical.saturating_sub(offset)
    } else {
        length
    };
    let created = !a.file.exists();
    let file = File::create(&a.file).map_err(|e| {
        Failure(format!(
            "cannot create {}: {}",
            a.file.display(),
            manager::client::io_cause(&e)
        ))
    })?;
    let mut out = SparseWriter { file, at: 0 };
    let bar = progress_bar(total);
    let result = c.vol_download(&pool, &name, offset, length, &mut |piece| {
        out.write(piece)?;
        if let Some(b) = &bar {
            b.set_position(out.at);
        }
        Ok(())
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let bytes = match result.and_then(|n| out.finish().map(|()| n).map_err(UploadError::Local)) {
        Ok(n) => n,
        Err(e) => {
            // As virsh: a file made for this download does not outlive it.
            if created {
                let _ = std::fs::remove_file(&a.file);
            }
            return Err(transfer_failure("download from", &a.vol, e));
        }
    };
    if a.json {
        return Ok(Output::json(format!("{{\"bytes\":{bytes}}}")));
    }
    Ok(Output::text(""))
}
