//! The example interfaces in docs/interface-xml.md parse without a
//! warning and write back to themselves, and the refusal shown is the one
//! the parser gives.

use virtxml::HostInterface;

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/interface-xml.md"
    ))
    .unwrap()
}

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
fn example_interfaces_parse_and_write_back() {
    let blocks = xml_blocks(&doc());
    assert_eq!(blocks.len(), 4, "{blocks:?}");
    for b in blocks {
        let parsed = HostInterface::parse(&b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        assert!(parsed.warnings.is_empty(), "{:?}\n{b}", parsed.warnings);
        // The examples are written in the normalised form.
        assert_eq!(parsed.interface.to_xml(), b);
    }
}

#[test]
fn refusal_example_is_what_the_parser_says() {
    let shown = doc()
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("/interface/protocol/dhcp"))
        .unwrap()
        .to_string();
    let bad = "<interface type='ethernet' name='eth0'>\n  <protocol family='ipv4'>\n    <dhcp/>\n  </protocol>\n</interface>\n";
    assert_eq!(HostInterface::parse(bad).unwrap_err().to_string(), shown);
}
