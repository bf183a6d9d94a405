//! Reading a document into a plain element tree with positions, under
//! limits that bound the work any input can cause.
//!
//! quick-xml does the tokenizing. It never expands entities beyond XML's
//! five predefined ones and character references, so there is no entity
//! bomb; a `<!DOCTYPE` is refused outright as no libvirt document has one.

use std::cell::Cell;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::error::Error;
use crate::raw::{RawContent, RawElement};

/// Largest document accepted, in bytes. libvirt's own definitions are a
/// few KiB; metadata from management tools may be larger, never this big.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Deepest element nesting accepted. Real definitions nest about six
/// deep; the limit keeps recursive walks of hostile input shallow.
pub const MAX_DEPTH: usize = 64;

/// Most attributes one element may have; libvirt's elements have a few.
pub const MAX_ATTRIBUTES: usize = 256;

/// Most elements one document may hold. A definition has a few hundred at
/// most; the limit keeps the tree of a 1 MiB document of empty elements
/// (about 250,000 of them) from costing tens of MiB.
pub const MAX_ELEMENTS: usize = 10_000;

/// An element as read, with where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub content: Vec<Content>,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone)]
pub(crate) enum Content {
    Element(Element),
    Text(String),
}

impl Element {
    /// Child elements, in document order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.content.iter().filter_map(|c| match c {
            Content::Element(e) => Some(e),
            Content::Text(_) => None,
        })
    }

    /// The element's own text (CDATA included), concatenated.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.content {
            if let Content::Text(t) = c {
                out.push_str(t);
            }
        }
        out
    }

    /// The element as kept for writing back: positions dropped.
    pub fn to_raw(&self) -> RawElement {
        RawElement {
            name: self.name.clone(),
            attributes: self.attrs.clone(),
            content: self
                .content
                .iter()
                .map(|c| match c {
                    Content::Element(e) => RawContent::Element(e.to_raw()),
                    Content::Text(t) => RawContent::Text(t.clone()),
                })
                .collect(),
        }
    }
}

/// Byte offsets of line starts, to turn offsets into line and column.
/// Offsets are asked for mostly in increasing order, so the last answer
/// is remembered and the next column counted on from it: a document that
/// is one long line costs linear time, not quadratic.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
    /// (offset, line, column) of the last answer.
    last: Cell<(usize, usize, usize)>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex {
            text,
            starts,
            last: Cell::new((0, 1, 0)),
        }
    }

    fn position(&self, offset: u64) -> (u32, u32) {
        let offset = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let (last_offset, last_line, last_column) = self.last.get();
        let (from, base) = if last_line == line && last_offset <= offset {
            (last_offset, last_column)
        } else {
            (start, 0)
        };
        let column = base
            + self
                .text
                .get(from..offset)
                .map_or(offset - from, |s| s.chars().count());
        self.last.set((offset, line, column));
        (
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(column + 1).unwrap_or(u32::MAX),
        )
    }
}

fn malformed(index: &LineIndex<'_>, offset: u64, message: impl Into<String>) -> Error {
    let (line, column) = index.position(offset);
    Error::Malformed {
        line,
        column,
        message: crate::error::one_line(message.into()),
    }
}

/// Parses `text` into its root element. Comments and processing
/// instructions are dropped, as is text that is only whitespace.
pub(crate) fn read(text: &str) -> Result<Element, Error> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge {
            size: text.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let index = LineIndex::new(text);
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    config.trim_text(false);

    // Open elements, innermost last; the root ends up in `root`.
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let start = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| malformed(&index, reader.error_position(), e.to_string()))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                if root.is_some() {
                    return Err(malformed(&index, start, "content after the root element"));
                }
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(malformed(
                        &index,
                        start,
                        format!("the document has more than {MAX_ELEMENTS} elements"),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(malformed(
                        &index,
                        start,
                        format!("elements nest deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let name = std::str::from_utf8(e.name().as_ref())
                    .map_err(|err| malformed(&index, start, err.to_string()))?
                    .to_string();
                let mut attrs = Vec::new();
                for (i, attr) in e.attributes().with_checks(true).enumerate() {
                    // The duplicate check costs the square of the count.
                    if i >= MAX_ATTRIBUTES {
                        return Err(malformed(
                            &index,
                            start,
                            format!("an element has more than {MAX_ATTRIBUTES} attributes"),
                        ));
                    }
                    let attr = attr.map_err(|err| malformed(&index, start, err.to_string()))?;
                    let key = std::str::from_utf8(attr.key.as_ref())
                        .map_err(|err| malformed(&index, start, err.to_string()))?
                        .to_string();
                    let value = attr
                        .unescape_value()
                        .map_err(|err| malformed(&index, start, err.to_string()))?
                        .into_owned();
                    attrs.push((key, value));
                }
                let (line, column) = index.position(start);
                let element = Element {
                    name,
                    attrs,
                    content: Vec::new(),
                    line,
                    column,
                };
                if empty {
                    close(element, &mut stack, &mut root);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                // check_end_names has matched it to the open element.
                if let Some(element) = stack.pop() {
                    close(element, &mut stack, &mut root);
                }
            }
            Event::Text(t) => {
                let s = t
                    .unescape()
                    .map_err(|err| malformed(&index, start, err.to_string()))?;
                add_text(&mut stack, &s, &index, start)?;
            }
            Event::CData(c) => {
                let s = std::str::from_utf8(&c)
                    .map_err(|err| malformed(&index, start, err.to_string()))?
                    .to_string();
                add_text(&mut stack, &s, &index, start)?;
            }
            Event::DocType(_) => {
                return Err(malformed(
                    &index,
                    start,
                    "DOCTYPE declarations are not accepted",
                ))
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(Error::Malformed {
            line: open.line,
            column: open.column,
            message: crate::error::one_line(format!("element <{}> is never closed", open.name)),
        });
    }
    root.ok_or_else(|| malformed(&index, 0, "the document has no root element"))
}

fn close(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.content.push(Content::Element(element)),
        None => *root = Some(element),
    }
}

fn add_text(
    stack: &mut [Element],
    text: &str,
    index: &LineIndex<'_>,
    at: u64,
) -> Result<(), Error> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let Some(parent) = stack.last_mut() else {
        return Err(malformed(index, at, "text outside the root element"));
    };
    if let Some(Content::Text(prev)) = parent.content.last_mut() {
        prev.push_str(text);
    } else {
        parent.content.push(Content::Text(text.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_line_and_column() {
        let root = read("<a>\n  <b x='1'/>\n\t<c>t&amp;u</c></a>").unwrap();
        let b = root.children().next().unwrap();
        assert_eq!((b.line, b.column), (2, 3));
        let c = root.children().nth(1).unwrap();
        assert_eq!((c.line, c.column), (3, 2));
        assert_eq!(c.text(), "t&u");
    }

    #[test]
    fn malformed_input_names_line_and_column() {
        let err = read("<a>\n  <b></c>\n</a>").unwrap_err();
        let Error::Malformed { line, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(line, 2);
        assert!(matches!(read("<a>"), Err(Error::Malformed { .. })));
        assert!(matches!(read(""), Err(Error::Malformed { .. })));
        assert!(matches!(read("<a/><b/>"), Err(Error::Malformed { .. })));
        assert!(matches!(
            read("<a x='1' x='2'/>"),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn entities_are_not_expanded() {
        let doc = "<!DOCTYPE a [<!ENTITY e \"boom\">]><a>&e;</a>";
        assert!(matches!(read(doc), Err(Error::Malformed { .. })));
        assert!(matches!(read("<a>&e;</a>"), Err(Error::Malformed { .. })));
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert!(matches!(read(&deep), Err(Error::Malformed { .. })));
        let ok = "<a>".repeat(MAX_DEPTH) + &"</a>".repeat(MAX_DEPTH);
        assert!(read(&ok).is_ok());
        let big = format!("<a>{}</a>", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(matches!(read(&big), Err(Error::TooLarge { .. })));
    }
}
