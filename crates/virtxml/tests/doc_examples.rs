//! The example domains in docs/domain-xml.md parse, with no warnings, and
//! the refusal shown there is the one the parser gives; so the page cannot
//! drift from the parser.

use virtxml::Domain;

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/domain-xml.md"
    ))
    .unwrap()
}

/// The bodies of the page's ```xml blocks.
fn xml_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim()) {
            (None, "```xml") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(body), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn example_domains_parse_cleanly() {
    let blocks: Vec<String> = xml_blocks(&doc())
        .into_iter()
        .filter(|b| b.trim_start().starts_with("<domain"))
        .collect();
    assert!(!blocks.is_empty());
    for b in blocks {
        let parsed = Domain::parse(&b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }
}

#[test]
fn driver_example_selects_qemu() {
    let block = xml_blocks(&doc())
        .into_iter()
        .find(|b| b.trim_start().starts_with("<metadata"))
        .unwrap();
    let xml = format!(
        "<domain type='kvm'><name>q</name>{block}<memory>1024</memory><os><type>hvm</type><kernel>/k</kernel></os></domain>"
    );
    let d = Domain::parse(&xml).unwrap().domain;
    assert_eq!(d.driver, virtxml::driver::DriverKind::Qemu);
}

#[test]
fn refusal_example_is_what_the_parser_says() {
    let text = doc();
    let shown = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("/domain/devices/hostdev[1]"))
        .unwrap();
    // A document with the hostdev at line 14, column 5.
    let mut xml = String::from("<domain type='kvm'>\n  <name>h</name>\n  <memory>1024</memory>\n  <os>\n    <type>hvm</type>\n    <kernel>/k</kernel>\n  </os>\n  <devices>\n");
    for _ in 0..5 {
        xml.push_str("    <controller type='pci' model='pcie-root-port'/>\n");
    }
    xml.push_str("    <hostdev mode='subsystem' type='pci'/>\n  </devices>\n</domain>\n");
    assert_eq!(Domain::parse(&xml).unwrap_err().to_string(), shown);
}
