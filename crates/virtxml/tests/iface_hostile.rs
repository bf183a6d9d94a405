//! Hostile interface documents end in one error, or parse, quickly and
//! without a panic: nesting is bounded by the format (a bridge's port
//! cannot be a bridge, a bond's slave only Ethernet), member and address
//! counts are capped, and the duplicate checks stay cheap at the caps.

use std::time::{Duration, Instant};

use virtxml::iface::kinds::MAX_MEMBERS;
use virtxml::iface::protocol::MAX_ADDRESSES;
use virtxml::{Error, HostInterface, MAX_DOCUMENT_BYTES};

fn bounded(xml: &str) -> Result<usize, Error> {
    assert!(xml.len() <= MAX_DOCUMENT_BYTES, "{}", xml.len());
    let start = Instant::now();
    let r = HostInterface::parse(xml).map(|p| p.interface.all().len());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    r
}

#[test]
fn oversized_and_deep_documents_are_refused() {
    let xml = format!(
        "<interface type='ethernet' name='e'><description>{}</description></interface>",
        "x".repeat(2 << 20)
    );
    assert!(matches!(
        HostInterface::parse(&xml),
        Err(Error::TooLarge { .. })
    ));
    let deep = format!(
        "<interface type='bridge' name='b'><bridge>{}{}</bridge></interface>",
        "<interface type='bond' name='x'><bond>".repeat(100),
        "</bond></interface>".repeat(100)
    );
    let e = bounded(&deep).unwrap_err().to_string();
    assert!(e.contains("nest deeper"), "{e}");
    // Within the depth limit, a bond in a bond is refused at once.
    let nested = format!(
        "<interface type='bridge' name='b'><bridge>{}{}</bridge></interface>",
        "<interface type='bond' name='x'><bond>".repeat(10),
        "</bond></interface>".repeat(10)
    );
    let e = bounded(&nested).unwrap_err().to_string();
    assert!(e.contains("must be type='ethernet'"), "{e}");
}

#[test]
fn the_largest_accepted_trees_stay_fast() {
    // A bridge of 64 bonds of 64 slaves each: 4,161 interfaces.
    let bonds: String = (0..MAX_MEMBERS)
        .map(|b| {
            let slaves: String = (0..MAX_MEMBERS)
                .map(|s| format!("<interface type='ethernet' name='e{b}s{s}'/>"))
                .collect();
            format!("<interface type='bond' name='bond{b}'><bond>{slaves}</bond></interface>")
        })
        .collect();
    let xml = format!("<interface type='bridge' name='br'><bridge>{bonds}</bridge></interface>");
    assert_eq!(bounded(&xml).unwrap(), 1 + MAX_MEMBERS * (MAX_MEMBERS + 1));
    // The same with the last slave repeating the first: one line.
    let xml = xml.replace("e63s63", "e0s0");
    let e = bounded(&xml).unwrap_err().to_string();
    assert!(e.contains("'e0s0' is a member more than once"), "{e}");
    assert!(!e.contains('\n'), "{e}");

    let ips: String = (0..=MAX_ADDRESSES)
        .map(|i| format!("<ip address='192.0.2.{i}' prefix='24'/>"))
        .collect();
    let xml = format!(
        "<interface type='ethernet' name='e'><protocol family='ipv4'>{ips}</protocol></interface>"
    );
    let e = bounded(&xml).unwrap_err().to_string();
    assert!(e.contains(&format!("at most {MAX_ADDRESSES} <ip>")), "{e}");
}

#[test]
fn control_characters_stay_on_one_line() {
    for xml in [
        "<interface type='ethernet' name='a&#10;b'/>",
        "<interface type='bri&#10;dge' name='b'/>",
        "<interface type='vlan' name='v'><vlan tag='1&#10;2'><interface name='e'/></vlan></interface>",
        "<interface type='bond' name='b'><bond mode='x&#13;y'><interface type='ethernet' name='e'/></bond></interface>",
        "<interface type='bridge' name='b'><bridge delay='x&#10;'/></interface>",
    ] {
        let e = HostInterface::parse(xml).unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.contains('\r'), "{e}");
        assert!(e.starts_with("/interface"), "{e}");
    }
}
