//! Base64 (RFC 4648, standard alphabet, with padding): how secret values
//! travel through the API and the CLI, as libvirt's do. The `base64`
//! crate's engine; what this adds is libvirt's leniency about line breaks
//! and errors that never quote the text (it is a secret).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// `bytes` in base64.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The bytes `text` encodes; ASCII whitespace (line breaks) is skipped.
/// The error says what is wrong, never what the text was.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    let clean: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    // No offsets in the messages: they would count the text without its
    // line breaks, which is not what the user wrote.
    STANDARD.decode(&clean).map_err(|e| {
        match e {
            base64::DecodeError::InvalidByte(..) | base64::DecodeError::InvalidLastSymbol(..) => {
                "it holds a character outside base64's alphabet"
            }
            base64::DecodeError::InvalidLength(_) => "its length is not a multiple of 4",
            base64::DecodeError::InvalidPadding => "its padding is wrong",
        }
        .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        for (raw, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(raw.as_bytes()), b64);
            assert_eq!(decode(b64).unwrap(), raw.as_bytes());
        }
        assert_eq!(decode("Zm9v\nYmFy\n").unwrap(), b"foobar");
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(decode(&encode(&all)).unwrap(), all);
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in ["Zg=", "Z===", "Zm9v!mFy", "Zg==Zg==", "Zm9"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
