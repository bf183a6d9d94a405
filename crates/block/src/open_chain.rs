//! The images of one backing chain while it opens: loop and depth
//! checks, and the one warning about probed backing formats.

use std::path::{Path, PathBuf};

use crate::image_file::ImageFile;
use crate::{Error, Result};

/// Deepest backing chain followed before giving up (a bomb).
const MAX_BACKING_DEPTH: u32 = 32;

/// What names one file whatever path or URL reached it: what a loop in a
/// chain is recognised by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKey {
    /// A host file: its device and inode.
    Host {
        /// `st_dev`.
        dev: u64,
        /// `st_ino`.
        ino: u64,
    },
    /// A file on a server, by its URL without arguments (libnfs gives no
    /// inode number; a link between two names on the export is not seen,
    /// and the depth limit ends such a loop).
    Remote(String),
}

/// The images of one chain opened so far, from the top down: what loop
/// and depth checks look at.
#[derive(Debug)]
pub struct Chain {
    /// The image the caller asked for.
    top: PathBuf,
    /// Identity and path of each image, top first.
    images: Vec<(FileKey, PathBuf)>,
    /// Images whose backing file's format had to be probed, with that
    /// backing file: reported once, when the whole chain has opened.
    probed_backing: Vec<(PathBuf, PathBuf)>,
}

impl Chain {
    /// A chain whose top image is `file`, opened from `path`.
    pub(crate) fn start<F: ImageFile>(path: &Path, file: &F) -> Result<Self> {
        Ok(Self {
            top: path.to_owned(),
            images: vec![(file.key()?, path.to_owned())],
            probed_backing: Vec::new(),
        })
    }

    pub(crate) fn empty(path: &Path) -> Self {
        Self {
            top: path.to_owned(),
            images: Vec::new(),
            probed_backing: Vec::new(),
        }
    }

    /// Add `file`, opened from `path`, unless it is already in the chain.
    pub(crate) fn enter<F: ImageFile>(&mut self, path: &Path, file: &F) -> Result<()> {
        self.enter_key(path, file.key()?)
    }

    /// Add the file whose identity is `id`, named `path`, unless it is
    /// already in the chain (for files whose identity is known before
    /// they are opened: a remote file's URL).
    pub(crate) fn enter_key(&mut self, path: &Path, id: FileKey) -> Result<()> {
        if self.images.iter().any(|(seen, _)| *seen == id) {
            let image = self
                .images
                .last()
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            return Err(Error::BackingLoop {
                image,
                names: path.to_owned(),
            });
        }
        self.images.push((id, path.to_owned()));
        Ok(())
    }

    /// `image` records no format for its backing file `backing`, which is
    /// probed.
    pub(crate) fn note_probed_backing(&mut self, image: &Path, backing: &Path) {
        self.probed_backing
            .push((image.to_owned(), backing.to_owned()));
    }

    /// Log, once for the whole chain, which backing formats were probed.
    /// Called when the chain has opened: an open that fails says only why
    /// (one line), and a long chain does not log a line per image.
    pub(crate) fn warn_probed_backing(&self) {
        let Some((image, backing)) = self.probed_backing.first() else {
            return;
        };
        let others = match self.probed_backing.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more below it in the chain)"),
        };
        tracing::warn!(
            "{} does not record the format of its backing file {}{others}; it was probed \
             (qemu-img rebase -u -F FORMAT sets it)",
            image.display(),
            backing.display()
        );
    }

    /// Images entered so far.
    pub(crate) fn len(&self) -> usize {
        self.images.len()
    }

    /// Refuse to open one more image when the chain is as deep as
    /// Vireo follows (a chain bomb).
    pub(crate) fn check_depth(&self) -> Result<()> {
        if self.images.len() > MAX_BACKING_DEPTH as usize {
            return Err(Error::BackingTooDeep {
                top: self.top.clone(),
                max: MAX_BACKING_DEPTH,
            });
        }
        Ok(())
    }
}
