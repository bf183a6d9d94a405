//! Domain UUIDs: parsed in libvirt's forms, written dashed.

use std::fmt;

use crate::error::Error;

/// A domain's UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A random (version 4) UUID.
    pub fn generate() -> Result<Uuid, Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(Uuid(b))
    }

    /// Parses 32 hex digits, dashed (`8-4-4-4-12`) or not. As libvirt
    /// does, a dash may stand between any two bytes and surrounding
    /// whitespace is ignored. The reason is returned on failure.
    pub fn parse(s: &str) -> Result<Uuid, String> {
        let mut bytes = [0u8; 16];
        let mut digits = s.trim().chars().peekable();
        for (i, byte) in bytes.iter_mut().enumerate() {
            if i > 0 && digits.peek() == Some(&'-') {
                digits.next();
            }
            let hi = digits.next().and_then(|c| c.to_digit(16));
            let lo = digits.next().and_then(|c| c.to_digit(16));
            match (hi, lo) {
                // Both are below 16, so the byte fits.
                (Some(h), Some(l)) => *byte = u8::try_from(h * 16 + l).unwrap_or(0),
                _ => return Err(format!("'{s}' is not a UUID (32 hexadecimal digits)")),
            }
        }
        if digits.next().is_some() {
            return Err(format!("'{s}' is not a UUID (32 hexadecimal digits)"));
        }
        Ok(Uuid(bytes))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_and_undashed_forms() {
        let a = Uuid::parse("6cb1ce31-3a48-4bf2-ae46-f04010761b37").unwrap();
        let b = Uuid::parse("6CB1CE313A484BF2AE46F04010761B37").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "6cb1ce31-3a48-4bf2-ae46-f04010761b37");
        assert!(Uuid::parse("6cb1ce31-3a48-4bf2-ae46-f04010761b3").is_err());
        assert!(Uuid::parse("6cb1ce31-3a48-4bf2-ae46-f04010761b377").is_err());
        assert!(Uuid::parse("zz").is_err());
        assert!(Uuid::parse("").is_err());
    }

    #[test]
    fn generated_uuids_are_version_4_and_differ() {
        let a = Uuid::generate().unwrap();
        assert_eq!(a.0[6] >> 4, 4);
        assert_ne!(a, Uuid::generate().unwrap());
        assert_eq!(Uuid::parse(&a.to_string()).unwrap(), a);
    }
}
