//! Elements kept verbatim, and the writer that turns models back into XML.

/// An element Vireo does not act on but keeps, so that writing the
/// definition back (`dumpxml`) gives what the user wrote. Whitespace-only
/// text between elements is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawElement {
    /// The element's name as written, namespace prefix included.
    pub name: String,
    /// Attributes in document order, values unescaped.
    pub attributes: Vec<(String, String)>,
    /// Child elements and text, in document order.
    pub content: Vec<RawContent>,
}

/// One piece of a kept element's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawContent {
    /// A child element.
    Element(RawElement),
    /// Text, unescaped.
    Text(String),
}

/// Builds an indented XML document.
#[derive(Default)]
pub(crate) struct XmlWriter {
    out: String,
    depth: usize,
}

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
}

/// `s` escaped for an XML attribute value or element text (the attribute
/// rules are the stricter, so one function serves both): for code outside
/// this crate that writes XML of its own, such as libvirt's capabilities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_attr(s, &mut out);
    out
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // A literal newline or tab in an attribute reads back as a space.
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            _ => out.push(c),
        }
    }
}

impl XmlWriter {
    fn indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    fn tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("='");
            escape_attr(v, &mut self.out);
            self.out.push('\'');
        }
    }

    /// `<name attrs>` on a line of its own; children follow.
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.tag(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    /// `</name>`.
    pub fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.indent();
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// `<name attrs/>`.
    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        self.tag(name, attrs);
        self.out.push_str("/>\n");
    }

    /// `<name attrs>text</name>`.
    pub fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.indent();
        self.tag(name, attrs);
        self.out.push('>');
        escape_text(text, &mut self.out);
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    /// A kept element, on one line as it was read (minus whitespace).
    pub fn raw(&mut self, element: &RawElement) {
        self.indent();
        self.raw_inline(element);
        self.out.push('\n');
    }

    /// Every kept element of a list.
    pub fn raws(&mut self, elements: &[RawElement]) {
        for e in elements {
            self.raw(e);
        }
    }

    fn raw_inline(&mut self, element: &RawElement) {
        let attrs: Vec<(&str, &str)> = element
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.tag(&element.name, &attrs);
        if element.content.is_empty() {
            self.out.push_str("/>");
            return;
        }
        self.out.push('>');
        for c in &element.content {
            match c {
                RawContent::Element(e) => self.raw_inline(e),
                RawContent::Text(t) => escape_text(t, &mut self.out),
            }
        }
        self.out.push_str("</");
        self.out.push_str(&element.name);
        self.out.push('>');
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_elements_are_written_as_read() {
        let root = crate::tree::read(
            "<m><x:a xmlns:x='urn:x' v='&lt;&quot;&#10;'>t &amp; u<b/></x:a></m>",
        )
        .unwrap();
        let raw = root.to_raw();
        let mut w = XmlWriter::default();
        w.raw(&raw);
        let again = crate::tree::read(&w.finish()).unwrap().to_raw();
        assert_eq!(raw, again);
        assert_eq!(raw.content.len(), 1);
    }
}
