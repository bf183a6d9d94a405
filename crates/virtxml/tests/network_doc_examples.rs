//! The example networks in docs/network-xml.md parse (the stock default
//! and the other full examples without a warning, the portgroup example
//! with exactly one), and the refusal shown is the one the parser gives.

use virtxml::Network;

fn doc() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/network-xml.md"
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
fn example_networks_parse() {
    let blocks = xml_blocks(&doc());
    assert!(blocks.len() >= 5, "{blocks:?}");
    for b in blocks {
        assert!(b.trim_start().starts_with("<network>"), "{b}");
        let parsed = Network::parse(&b).unwrap_or_else(|e| panic!("{e}\n{b}"));
        let expected = usize::from(b.contains("<portgroup"));
        assert_eq!(
            parsed.warnings.len(),
            expected,
            "{:?}\n{b}",
            parsed.warnings
        );
        let again = Network::parse(&parsed.network.to_xml()).unwrap();
        assert_eq!(again.network, parsed.network);
    }
}

#[test]
fn stock_default_example_is_libvirts_fixture() {
    let block = xml_blocks(&doc()).into_iter().next().unwrap();
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/network-default.xml"
    ))
    .unwrap();
    assert_eq!(block, fixture);
}

#[test]
fn refusal_example_is_what_the_parser_says() {
    let text = doc();
    let shown = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("/network/ip/dhcp/range"))
        .unwrap();
    let default = xml_blocks(&text).into_iter().next().unwrap();
    let bad = default.replace("end='192.168.122.254'", "end='192.168.123.254'");
    assert_eq!(Network::parse(&bad).unwrap_err().to_string(), shown);
}
