//! Creating qcow2 images.

use std::path::Path;

use crate::file::HostFile;
use crate::{DiskImage, Error, FileId, ImageFormat, OpenOptions, Replacement, Result};

use super::header::{self, Header};
use super::Qcow2Disk;

/// What [`create`] makes.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Virtual size in bytes (rounded up to 512).
    pub size: u64,
    /// Cluster size: a power of two from 512 bytes to 2 MiB.
    pub cluster_size: u64,
    /// 2 (qemu's compat=0.10) or 3 (compat=1.1).
    pub version: u32,
    /// Backing file name, stored as given (relative to the image's directory).
    pub backing_file: Option<String>,
    /// Backing file format (probed when not given).
    pub backing_format: Option<ImageFormat>,
    /// qemu-img's `preallocation=metadata`: every cluster mapped at
    /// creation, its data left unwritten (reads as zeroes).
    pub preallocate_metadata: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            size: 0,
            cluster_size: 65536,
            version: 3,
            backing_file: None,
            backing_format: None,
            preallocate_metadata: false,
        }
    }
}

/// Create (or replace) a qcow2 image at `path`.
///
/// Nothing is written to an existing file: it is locked (so an image in
/// use is refused) and replaced only by a complete new image (see
/// [`Replacement`]). A backing chain that leads back to `path` is refused.
pub fn create(path: &Path, opts: &CreateOptions) -> Result<()> {
    check_options(opts)?;
    if let (Some(name), Some(target)) = (&opts.backing_file, FileId::of(path)) {
        let backing = super::chain::resolve(path, name);
        if let Some((p, _)) = super::chain::backing_chain(&backing)
            .into_iter()
            .find(|(_, id)| *id == target)
        {
            return Err(Error::Open {
                path: path.to_owned(),
                source: Box::new(Error::Refused(format!(
                    "the new image would be its own backing file (its backing chain reaches {})",
                    p.display()
                ))),
            });
        }
    }
    let new = Replacement::begin(path)?;
    format(new.temp_path(), opts).map_err(|e| match e {
        e @ Error::Open { .. } => e,
        e => Error::Open {
            path: path.to_owned(),
            source: Box::new(e),
        },
    })?;
    new.commit()
}

fn check_options(opts: &CreateOptions) -> Result<()> {
    let cs = opts.cluster_size;
    if !cs.is_power_of_two()
        || !(1u64 << header::MIN_CLUSTER_BITS..=1u64 << header::MAX_CLUSTER_BITS).contains(&cs)
    {
        return Err(Error::InvalidImage(format!(
            "cluster size {cs} must be a power of two between 512 and 2 MiB"
        )));
    }
    if opts.version != 2 && opts.version != 3 {
        return Err(Error::UnsupportedFeature(format!(
            "qcow2 version {}",
            opts.version
        )));
    }
    if opts.size > header::MAX_VIRTUAL_SIZE {
        return Err(Error::Refused(format!(
            "size {} is larger than a qcow2 image can be ({} bytes)",
            opts.size,
            header::MAX_VIRTUAL_SIZE
        )));
    }
    Ok(())
}

/// Write a new qcow2 image into `path`: an existing file this process
/// created for it (a [`Replacement`]'s temporary file). It is locked
/// before anything is written (refused if in use), then truncated.
///
/// The layout is QEMU's: the header in cluster 0, the refcount table in
/// cluster 1, the first refcount block in cluster 2, then the L1 table.
pub fn format(path: &Path, opts: &CreateOptions) -> Result<()> {
    check_options(opts)?;
    let cs = opts.cluster_size;
    let size = opts.size.div_ceil(512) * 512;
    let backing_format = match (&opts.backing_file, opts.backing_format) {
        (Some(name), None) => {
            let full = super::chain::resolve(path, name);
            Some(crate::probe(&full).map_err(|e| Error::Open {
                path: full,
                source: Box::new(e),
            })?)
        }
        (_, f) => f,
    };
    let cluster_bits = cs.trailing_zeros();
    let h = Header {
        version: opts.version,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits,
        size: 0,
        crypt_method: 0,
        l1_size: 0,
        l1_table_offset: 0,
        refcount_table_offset: cs,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: 4,
        header_length: if opts.version == 3 {
            header::V3_HEADER_LEN
        } else {
            header::V2_HEADER_LEN
        },
        compression_type: 0,
        backing_file: opts.backing_file.clone(),
        backing_format: opts
            .backing_file
            .as_ref()
            .and(backing_format.map(|f| f.name().to_string())),
        other_extensions: if opts.version == 3 {
            vec![Header::feature_table()]
        } else {
            Vec::new()
        },
    };
    let cs_us = usize::try_from(cs).map_err(|_| Error::InvalidImage("cluster size".into()))?;
    let mut image = h.encode()?;
    image.resize(3 * cs_us, 0);
    // Refcount table entry 0 -> the block in cluster 2.
    image[cs_us..cs_us + 8].copy_from_slice(&(2 * cs).to_be_bytes());
    // Clusters 0, 1 and 2 are in use: 16-bit refcounts of 1.
    for c in 0..3 {
        image[2 * cs_us + 2 * c + 1] = 1;
    }
    let options = OpenOptions {
        read_only: false,
        direct: false,
        format: Some(ImageFormat::Qcow2),
        ..OpenOptions::default()
    };
    // Lock first, then write: even here, nothing touches a file some
    // other process uses.
    let file = HostFile::open(path, false, false)?;
    file.set_len(0)?;
    file.write_all_at(&image, 0)?;
    let mut chain = crate::Chain::start(path, &file)?;
    let disk = Qcow2Disk::from_file(file, path, &options, &mut chain)?;
    disk.resize(size)?;
    if opts.preallocate_metadata {
        disk.preallocate_metadata()?;
    }
    disk.flush()
}
