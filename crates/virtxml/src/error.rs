//! What parsing reports: the one error that stops it, and the warnings
//! that do not.

use std::fmt;

/// Where in a document an element is: its path (`/domain/devices/disk[2]`)
/// and the line and column (1-based, in characters) of its `<`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The element's path from the root, sibling elements of one name
    /// numbered from 1 where more than one can appear.
    pub path: String,
    /// Line of the element's start tag, from 1.
    pub line: u32,
    /// Column of the element's start tag, from 1.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (line {}, column {})",
            self.path, self.line, self.column
        )
    }
}

/// Something in the document that Vireo accepts without acting on it (a
/// hint, a default, a device that needs nothing from Vireo). Shown to the
/// user as one line; the element itself is kept for writing back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The element the warning is about.
    pub location: Location,
    /// What is not acted on, and why.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Why a document was not accepted. Each variant displays as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not well-formed XML.
    #[error("malformed XML at line {line}, column {column}: {message}")]
    Malformed {
        /// Line of the fault, from 1.
        line: u32,
        /// Column of the fault, from 1.
        column: u32,
        /// What the XML reader found wrong.
        message: String,
    },
    /// The document is longer than [`crate::MAX_DOCUMENT_BYTES`].
    #[error("the document is {size} bytes, more than the {limit} accepted")]
    TooLarge {
        /// The document's length in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Well-formed XML that Vireo cannot honour, or that is invalid as a
    /// libvirt definition (a bad name, an unknown unit, a missing element).
    #[error("{location}: {message}")]
    Refused {
        /// The element at fault.
        location: Location,
        /// What is wrong, naming the attribute or value where it is one.
        message: String,
    },
    /// The system's random source failed while generating a UUID or MAC.
    #[error("cannot generate a random identifier: {0}")]
    Random(String),
}

/// Escapes control characters (a newline in an attribute value quoted in a
/// message), so every error and warning stays one line.
pub(crate) fn one_line(message: String) -> String {
    if !message.chars().any(char::is_control) {
        return message;
    }
    message
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
