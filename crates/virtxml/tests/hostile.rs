//! Hostile documents end in one error, quickly, without a panic.

use std::time::{Duration, Instant};

use virtxml::{Domain, Error, MAX_DOCUMENT_BYTES, MAX_ELEMENTS};

fn bounded(xml: &str) -> Result<(), Error> {
    let start = Instant::now();
    let r = Domain::parse(xml).map(|_| ());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    r
}

#[test]
fn ten_megabyte_document_is_refused_unread() {
    let xml = format!(
        "<domain type='kvm'><description>{}</description></domain>",
        "x".repeat(10 << 20)
    );
    assert!(matches!(bounded(&xml), Err(Error::TooLarge { .. })));
}

#[test]
fn deep_nesting_is_refused() {
    let n = 100_000;
    let xml = format!(
        "<domain type='kvm'><metadata>{}{}</metadata></domain>",
        "<a>".repeat(n),
        "</a>".repeat(n)
    );
    let xml = &xml[..xml.len().min(MAX_DOCUMENT_BYTES)];
    let e = bounded(xml).unwrap_err().to_string();
    assert!(e.contains("nest deeper"), "{e}");
}

#[test]
fn huge_attribute_and_many_elements_stay_bounded() {
    let big = "y".repeat(MAX_DOCUMENT_BYTES - 200);
    let xml = format!("<domain type='kvm' id='{big}'><name>a</name></domain>");
    assert!(bounded(&xml).is_err());
    let many = "<controller type='pci' model='pcie-root-port'/>".repeat(9_000);
    let xml = format!("<domain type='kvm'><name>a</name><memory>1024</memory><os><type>hvm</type><kernel>/k</kernel></os><devices>{many}</devices></domain>");
    assert!(xml.len() <= MAX_DOCUMENT_BYTES);
    bounded(&xml).unwrap();
    let disks: String = (0..2_400)
        .map(|i| {
            format!("<disk><driver type='raw'/><source file='/{i}'/><target dev='vd{i}'/></disk>")
        })
        .collect();
    let xml = format!("<domain type='kvm'><name>a</name><memory>1024</memory><os><type>hvm</type><kernel>/k</kernel></os><devices>{disks}</devices></domain>");
    assert!(xml.len() <= MAX_DOCUMENT_BYTES, "{}", xml.len());
    let start = Instant::now();
    let d = Domain::parse(&xml).unwrap().domain;
    assert_eq!(d.devices.disks.len(), 2_400);
    d.to_xml();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn entity_tricks_are_refused() {
    let billion = "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;\">]><domain type='kvm'><name>&lol2;</name></domain>";
    assert!(matches!(bounded(billion), Err(Error::Malformed { .. })));
    let external = "<!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><domain type='kvm'><name>&x;</name></domain>";
    assert!(matches!(bounded(external), Err(Error::Malformed { .. })));
}

#[test]
fn truncations_and_byte_noise_never_panic() {
    let full = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/domain-full.xml"
    ))
    .unwrap();
    let complete = full.trim_end().len();
    // Every cut before the root's end tag is finished is malformed.
    for end in (0..complete).filter(|&i| full.is_char_boundary(i)) {
        let e = Domain::parse(&full[..end]).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }
    // Characters that matter to XML put in place of others: whatever the
    // outcome, an error is one line.
    let mut refused = 0;
    for (i, _) in full.char_indices().step_by(7) {
        for c in ['<', '>', '&', '"', '\'', '/', '\u{0}', 'é'] {
            let mut s = full.clone();
            let width = full[i..].chars().next().map_or(1, char::len_utf8);
            s.replace_range(i..i + width, &c.to_string());
            if let Err(e) = Domain::parse(&s) {
                refused += 1;
                assert!(!e.to_string().contains('\n'), "{e}");
            }
        }
    }
    assert!(refused > 0);
}

#[test]
fn many_attributes_on_one_element_stay_bounded() {
    let attrs: String = (0..90_000).map(|i| format!(" a{i}=''")).collect();
    let xml = format!("<domain type='kvm'{attrs}><name>a</name></domain>");
    assert!(xml.len() <= MAX_DOCUMENT_BYTES, "{}", xml.len());
    let e = bounded(&xml).unwrap_err().to_string();
    assert!(e.contains("attributes"), "{e}");
}

#[test]
fn element_count_is_bounded() {
    let many = "<a/>".repeat(MAX_ELEMENTS);
    let xml = format!("<domain type='kvm'><metadata>{many}</metadata></domain>");
    let e = bounded(&xml).unwrap_err().to_string();
    assert!(
        e.contains(&format!("more than {MAX_ELEMENTS} elements")),
        "{e}"
    );
}
