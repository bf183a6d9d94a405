//! Sizes as qemu-img reads and prints them.

/// Parse a size in the grammar every vireo command shares
/// ([`vmm::config::parse_size`]): `1024`, `64k`, `10M`, `1.5G`, `4GiB`;
/// binary units, bytes without one, as qemu-img takes them.
pub fn parse_size(text: &str) -> Result<u64, String> {
    vmm::config::parse_size(text, 0, "size", "64M, 1.5G, 10G")
}

/// `1 GiB`, `196 KiB`, `1.5 MiB`: qemu's three significant digits, in the
/// largest binary unit that keeps the number under 1000.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes as f64 / (1u64 << (10 * unit)) as f64 >= 1000.0 {
        unit += 1;
    }
    let v = bytes as f64 / (1u64 << (10 * unit)) as f64;
    // printf's %.3g: three significant digits.
    let decimals = if v == 0.0 || v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else if v >= 1.0 {
        2
    } else {
        3
    };
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_qemu_img() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999P").is_err());
        // The shared grammar: a fraction needs a unit, units may say iB.
        assert!(parse_size("1.5").is_err());
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
    }

    #[test]
    fn sizes_print_like_qemu_img() {
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size(200_704), "196 KiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1000), "0.977 KiB");
        assert_eq!(human_size(10 << 30), "10 GiB");
    }
}
