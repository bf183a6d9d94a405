//! Hostile network documents end in one error, or parse, quickly and
//! without a panic: the duplicate and overlap checks stay near-linear.

use std::time::{Duration, Instant};

use virtxml::network::MAX_IPS;
use virtxml::{Error, Network, MAX_DOCUMENT_BYTES};

fn bounded(xml: &str) -> Result<usize, Error> {
    assert!(xml.len() <= MAX_DOCUMENT_BYTES, "{}", xml.len());
    let start = Instant::now();
    let r = Network::parse(xml).map(|p| p.network.ips.len());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    r
}

#[test]
fn oversized_and_deep_documents_are_refused() {
    let xml = format!("<network><name>{}</name></network>", "x".repeat(10 << 20));
    let start = Instant::now();
    assert!(matches!(Network::parse(&xml), Err(Error::TooLarge { .. })));
    assert!(start.elapsed() < Duration::from_secs(2));
    let deep = format!(
        "<network><metadata>{}{}</metadata></network>",
        "<a>".repeat(5_000),
        "</a>".repeat(5_000)
    );
    let e = bounded(&deep).unwrap_err().to_string();
    assert!(e.contains("nest deeper"), "{e}");
}

#[test]
fn thousands_of_dhcp_hosts_and_ranges_stay_fast() {
    // 9,000 distinct hosts in a /16: accepted.
    let hosts: String = (0..9_000u32)
        .map(|i| {
            format!(
                "<host mac='52:54:00:00:{:02x}:{:02x}' ip='10.1.{}.{}'/>",
                i >> 8,
                i & 0xff,
                2 + i / 250,
                1 + i % 250
            )
        })
        .collect();
    let xml = format!("<network><name>n</name><ip address='10.1.0.1' prefix='16'><dhcp>{hosts}</dhcp></ip></network>");
    assert_eq!(bounded(&xml).unwrap(), 1);
    // The same with the last one repeating the first's address: one line.
    let xml = xml.replace(
        "</dhcp>",
        "<host mac='52:54:00:ff:ff:ff' ip='10.1.2.1'/></dhcp>",
    );
    let e = bounded(&xml).unwrap_err().to_string();
    assert!(e.contains("/network/ip/dhcp/host[9001]"), "{e}");
    assert!(e.contains("given to another host already"), "{e}");

    let ranges: String = (0..9_000u32)
        .map(|i| {
            format!(
                "<range start='10.2.{0}.{1}' end='10.2.{0}.{1}'/>",
                i / 250,
                1 + i % 250
            )
        })
        .collect();
    let xml = format!("<network><name>n</name><ip address='10.2.255.1' prefix='16'><dhcp>{ranges}<range start='10.2.0.1' end='10.2.30.1'/></dhcp></ip></network>");
    let e = bounded(&xml).unwrap_err().to_string();
    assert!(e.contains("range[9001]") && e.contains("overlaps"), "{e}");
}

#[test]
fn many_ip_elements_are_capped() {
    let ips: String = (0..=MAX_IPS)
        .map(|i| format!("<ip address='10.{i}.0.1' prefix='16'/>"))
        .collect();
    let xml = format!("<network><name>n</name>{ips}</network>");
    let e = bounded(&xml).unwrap_err().to_string();
    assert!(e.contains(&format!("at most {MAX_IPS} <ip>")), "{e}");
    let ips: String = (0..MAX_IPS)
        .map(|i| format!("<ip address='10.{i}.0.1' prefix='16'/>"))
        .collect();
    let xml = format!("<network><name>n</name>{ips}</network>");
    assert_eq!(bounded(&xml).unwrap(), MAX_IPS);
}

#[test]
fn control_characters_stay_on_one_line() {
    let e = Network::parse("<network><name>a&#10;b/c</name></network>")
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "{e}");
    let e = Network::parse("<network><name>n</name><bridge name='a&#10;b'/></network>")
        .unwrap_err()
        .to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.starts_with("/network/bridge (line 1, column 24)"), "{e}");
}
