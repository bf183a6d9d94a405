//! The walk over the element tree: paths, attribute access, and the
//! accept / warn / refuse rule for elements a parser does not model.

use std::collections::HashMap;

use crate::error::{one_line, Error, Location, Warning};
use crate::raw::RawElement;
use crate::tree::Element;

/// An element being parsed, with its path.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a> {
    pub el: &'a Element,
    path: &'a str,
}

/// What a parser does with a child it does not model.
pub(crate) enum Unmodelled {
    /// Kept for writing back, with this warning.
    Keep(&'static str),
    /// Refused with this reason.
    Refuse(&'static str),
}

/// Warnings gathered during one parse.
#[derive(Default)]
pub(crate) struct Ctx {
    pub warnings: Vec<Warning>,
}

/// Read `xml` and hand its root element to `parse`: the one entry of
/// every document type. Returns what `parse` made and the warnings it
/// recorded.
pub(crate) fn parse_document<T>(
    xml: &str,
    parse: impl FnOnce(&Node, &mut Ctx) -> Result<T, crate::Error>,
) -> Result<(T, Vec<Warning>), crate::Error> {
    let root = crate::tree::read(xml)?;
    let path = format!("/{}", root.name);
    let node = Node::root(&root, &path);
    let mut ctx = Ctx::default();
    let value = parse(&node, &mut ctx)?;
    Ok((value, ctx.warnings))
}

/// A child node owns its path; this holds both.
pub(crate) struct Child<'a> {
    pub el: &'a Element,
    pub path: String,
}

impl<'a> Child<'a> {
    pub fn node(&self) -> Node<'_> {
        Node {
            el: self.el,
            path: &self.path,
        }
    }
}

impl<'a> Node<'a> {
    pub fn root(el: &'a Element, path: &'a str) -> Self {
        Node { el, path }
    }

    pub fn name(&self) -> &'a str {
        &self.el.name
    }

    pub fn location(&self) -> Location {
        Location {
            path: one_line(self.path.to_string()),
            line: self.el.line,
            column: self.el.column,
        }
    }

    /// An error at this element.
    pub fn refuse(&self, message: impl Into<String>) -> Error {
        Error::Refused {
            location: self.location(),
            message: one_line(message.into()),
        }
    }

    pub fn warn(&self, ctx: &mut Ctx, message: impl Into<String>) {
        ctx.warnings.push(Warning {
            location: self.location(),
            message: one_line(message.into()),
        });
    }

    pub fn attr(&self, name: &str) -> Option<&'a str> {
        self.el
            .attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required attribute.
    pub fn need(&self, name: &str) -> Result<&'a str, Error> {
        self.attr(name)
            .ok_or_else(|| self.refuse(format!("<{}> needs a {name}= attribute", self.name())))
    }

    /// Warns once for each attribute not in `known`: it is dropped.
    pub fn check_attrs(&self, ctx: &mut Ctx, known: &[&str]) {
        for (k, v) in &self.el.attrs {
            if !known.contains(&k.as_str()) {
                self.warn(ctx, format!("attribute {k}='{v}' is ignored"));
            }
        }
    }

    /// As [`Node::check_attrs`], for an element that holds nothing: an
    /// element inside it is refused, as it would otherwise pass unseen.
    pub fn leaf(&self, ctx: &mut Ctx, known: &[&str]) -> Result<(), Error> {
        self.check_attrs(ctx, known);
        if let Some(child) = self.children().first() {
            return Err(child.node().refuse(format!(
                "<{}> inside <{}> is not supported",
                child.el.name,
                self.name()
            )));
        }
        Ok(())
    }

    /// The element's text, trimmed; an element inside it is refused.
    pub fn text(&self) -> Result<String, Error> {
        Ok(self.raw_text()?.trim().to_string())
    }

    /// The element's text as written; an element inside it is refused.
    pub fn raw_text(&self) -> Result<String, Error> {
        if let Some(child) = self.children().first() {
            return Err(child.node().refuse(format!(
                "<{}> holds text only, not <{}>",
                self.name(),
                child.el.name
            )));
        }
        Ok(self.el.text())
    }

    /// Children with their paths. Siblings sharing a name are numbered
    /// when there is more than one of them, or always when `indexed`.
    pub fn children_indexed(&self, indexed: bool) -> Vec<Child<'a>> {
        // Linear in the number of children, however many share a name.
        let mut totals: HashMap<&str, usize> = HashMap::new();
        for el in self.el.children() {
            *totals.entry(el.name.as_str()).or_default() += 1;
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for el in self.el.children() {
            let n = seen.entry(el.name.as_str()).or_default();
            *n += 1;
            let path = if indexed || totals.get(el.name.as_str()).copied().unwrap_or(0) > 1 {
                format!("{}/{}[{}]", self.path, el.name, *n)
            } else {
                format!("{}/{}", self.path, el.name)
            };
            out.push(Child { el, path });
        }
        out
    }

    pub fn children(&self) -> Vec<Child<'a>> {
        self.children_indexed(false)
    }

    /// Applies the rule to a child no parser models: kept with a
    /// warning, or refused.
    pub fn unmodelled(
        &self,
        ctx: &mut Ctx,
        table: &[(&str, Unmodelled)],
    ) -> Result<RawElement, Error> {
        match table.iter().find(|(name, _)| *name == self.name()) {
            Some((_, Unmodelled::Keep(why))) => {
                self.warn(
                    ctx,
                    format!("<{}> is kept but not acted on: {why}", self.name()),
                );
                Ok(self.el.to_raw())
            }
            Some((_, Unmodelled::Refuse(why))) => {
                Err(self.refuse(format!("<{}> is not supported: {why}", self.name())))
            }
            None => Err(self.refuse(format!("<{}> is not supported", self.name()))),
        }
    }

    /// Refuses a second occurrence of a single-valued element.
    pub fn once<T>(&self, slot: &Option<T>) -> Result<(), Error> {
        if slot.is_some() {
            return Err(self.refuse(format!("<{}> appears more than once", self.name())));
        }
        Ok(())
    }
}

/// Parses a yes/no or on/off attribute value.
pub(crate) fn parse_switch(node: &Node<'_>, name: &str, value: &str) -> Result<bool, Error> {
    match value {
        "on" | "yes" => Ok(true),
        "off" | "no" => Ok(false),
        _ => Err(node.refuse(format!("{name}='{value}' must be on or off"))),
    }
}

/// Parses a decimal number, naming what it is on failure.
pub(crate) fn parse_number<T: std::str::FromStr>(
    node: &Node<'_>,
    what: &str,
    value: &str,
) -> Result<T, Error> {
    value
        .trim()
        .parse()
        .map_err(|_| node.refuse(format!("{what} '{value}' is not a valid number")))
}
