//! The CMOS real-time clock and NVRAM (MC146818 compatible).
//!
//! Mapping: ports `0x70` (index, offset [`INDEX_OFFSET`]) and `0x71` (data,
//! offset [`DATA_OFFSET`]), one range of [`CMOS_RANGE_LEN`] bytes at `0x70`.
//! Bit 7 of the index (the NMI mask on a PC) is ignored.
//!
//! The clock registers always show the host's current UTC time, encoded as
//! status register B asks (BCD or binary, 24- or 12-hour); guest writes to
//! them are ignored, as is the SET bit, so the guest clock cannot drift from
//! the host's. Status A never shows an update in progress, C reports no
//! interrupt, D reports valid RAM and time. Every other byte of the 128 is
//! plain NVRAM, pre-filled with the memory sizes firmware and Linux read
//! (the same encoding QEMU uses).

use crate::bus::BusDevice;

/// Offset of the index port (`0x70`).
pub const INDEX_OFFSET: u64 = 0;
/// Offset of the data port (`0x71`).
pub const DATA_OFFSET: u64 = 1;
/// Length of the port range starting at `0x70`.
pub const CMOS_RANGE_LEN: u64 = 2;

const NVRAM_SIZE: usize = 128;
const INDEX_MASK: u8 = 0x7f;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Status A: update in progress (always clear here).
const STATUS_A_UIP: u8 = 0x80;
/// Status A after reset: 32.768 kHz time base, 1.024 kHz periodic rate.
const STATUS_A_DEFAULT: u8 = 0x26;
/// Status B: hours in 24-hour format.
const STATUS_B_24H: u8 = 0x02;
/// Status B: data mode binary (clear: BCD).
const STATUS_B_BINARY: u8 = 0x04;
/// Status D: valid RAM and time.
const STATUS_D_VRT: u8 = 0x80;
/// Hour register bit 7 in 12-hour mode: PM.
const HOUR_PM: u8 = 0x80;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// A calendar time as the RTC shows it (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtcTime {
    /// 0..=59 (a leap second shows as 59).
    pub second: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=23.
    pub hour: u8,
    /// 1..=7, Sunday is 1.
    pub weekday: u8,
    /// 1..=31.
    pub day: u8,
    /// 1..=12.
    pub month: u8,
    /// Full year, e.g. 2025.
    pub year: u16,
}

impl RtcTime {
    /// The host's current UTC time, or the Unix epoch if the host clock is
    /// out of range (which a guest can survive, unlike a panic).
    pub fn now() -> Self {
        Self::host_now().unwrap_or(Self {
            second: 0,
            minute: 0,
            hour: 0,
            weekday: 5,
            day: 1,
            month: 1,
            year: 1970,
        })
    }

    fn host_now() -> Option<Self> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        Self::from_unix_seconds(secs)
    }

    /// The UTC calendar time `secs` seconds after the Unix epoch.
    ///
    /// Computed here rather than with the C library's `gmtime_r`, which
    /// reads `/etc/localtime` the first time it runs: the vCPU thread that
    /// reads the RTC may not open files under its seccomp filter.
    fn from_unix_seconds(secs: u64) -> Option<Self> {
        let days = i64::try_from(secs / 86_400).ok()?;
        let rem = secs % 86_400;
        // Days to a proleptic Gregorian date, counting eras of 400 years
        // from 0000-03-01 so that the leap day ends each year.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let small = |v: u64| u8::try_from(v).ok();
        Some(Self {
            second: small(rem % 60)?,
            minute: small(rem / 60 % 60)?,
            hour: small(rem / 3_600)?,
            // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
            weekday: u8::try_from((days + 4) % 7).ok()? + 1,
            day: u8::try_from(day).ok()?,
            month: u8::try_from(month).ok()?,
            year: u16::try_from(year).ok()?,
        })
    }
}

/// Guest memory sizes, as the CMOS reports them to firmware and the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CmosMemory {
    /// Bytes of RAM from address 0 up to the MMIO hole (or the end of RAM).
    pub below_4g: u64,
    /// Bytes of RAM from 4 GiB up.
    pub above_4g: u64,
}

/// The CMOS RTC / NVRAM device.
#[derive(Debug)]
pub struct Cmos {
    index: u8,
    nvram: [u8; NVRAM_SIZE],
    clock: fn() -> RtcTime,
}

fn le16(value: u64) -> [u8; 2] {
    let v = u16::try_from(value).unwrap_or(u16::MAX).to_le_bytes();
    [v[0], v[1]]
}

impl Cmos {
    /// A CMOS reporting `memory` and the host's UTC time.
    pub fn new(memory: CmosMemory) -> Self {
        Self::with_clock(memory, RtcTime::now)
    }

    /// A CMOS whose clock reads `clock` (tests, or a fixed guest time).
    pub fn with_clock(memory: CmosMemory, clock: fn() -> RtcTime) -> Self {
        let mut nvram = [0u8; NVRAM_SIZE];
        nvram[usize::from(REG_STATUS_A)] = STATUS_A_DEFAULT;
        nvram[usize::from(REG_STATUS_B)] = STATUS_B_24H;
        nvram[usize::from(REG_STATUS_D)] = STATUS_D_VRT;

        // Base memory in KiB (at most 640).
        let base = (memory.below_4g / KIB).min(640);
        nvram[0x15..=0x16].copy_from_slice(&le16(base));
        // Extended memory above 1 MiB in KiB, at most 65535, twice.
        let extended = memory.below_4g.saturating_sub(MIB) / KIB;
        nvram[0x17..=0x18].copy_from_slice(&le16(extended));
        nvram[0x30..=0x31].copy_from_slice(&le16(extended));
        // Memory between 16 MiB and the hole, in 64 KiB units.
        let above_16m = memory.below_4g.saturating_sub(16 * MIB) / (64 * KIB);
        nvram[0x34..=0x35].copy_from_slice(&le16(above_16m));
        // Memory above 4 GiB, in 64 KiB units, three bytes.
        let high = (memory.above_4g / (64 * KIB)).min(0xff_ffff).to_le_bytes();
        nvram[0x5b..=0x5d].copy_from_slice(&high[..3]);

        Self {
            index: 0,
            nvram,
            clock,
        }
    }

    fn encode(&self, value: u8) -> u8 {
        if self.nvram[usize::from(REG_STATUS_B)] & STATUS_B_BINARY != 0 {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.nvram[usize::from(REG_STATUS_B)] & STATUS_B_24H != 0 {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { HOUR_PM } else { 0 };
        let twelve = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(twelve) | pm
    }

    fn read_register(&self, index: u8) -> u8 {
        let time = || (self.clock)();
        match index {
            REG_SECONDS => self.encode(time().second),
            REG_MINUTES => self.encode(time().minute),
            REG_HOURS => self.encode_hour(time().hour),
            REG_WEEKDAY => self.encode(time().weekday),
            REG_DAY => self.encode(time().day),
            REG_MONTH => self.encode(time().month),
            REG_YEAR => self.encode(u8::try_from(time().year % 100).unwrap_or(0)),
            REG_CENTURY => self.encode(u8::try_from(time().year / 100).unwrap_or(0)),
            REG_STATUS_A => self.nvram[usize::from(index)] & !STATUS_A_UIP,
            REG_STATUS_C => 0,
            REG_STATUS_D => STATUS_D_VRT,
            _ => self.nvram[usize::from(index)],
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        match index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                tracing::debug!("cmos: ignored write {value:#x} to clock register {index:#x}");
            }
            REG_STATUS_C | REG_STATUS_D => {}
            REG_STATUS_A => self.nvram[usize::from(index)] = value & !STATUS_A_UIP,
            _ => self.nvram[usize::from(index)] = value,
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            DATA_OFFSET => self.read_register(self.index),
            // The index port is write-only.
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match offset {
            INDEX_OFFSET => self.index = value & INDEX_MASK,
            DATA_OFFSET => self.write_register(self.index, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(c: &mut Cmos, index: u8) -> u8 {
        c.write(INDEX_OFFSET, &[index]);
        let mut b = [0u8];
        c.read(DATA_OFFSET, &mut b);
        b[0]
    }

    fn wr(c: &mut Cmos, index: u8, value: u8) {
        c.write(INDEX_OFFSET, &[index]);
        c.write(DATA_OFFSET, &[value]);
    }

    fn from_bcd(v: u8) -> u8 {
        (v >> 4) * 10 + (v & 0xf)
    }

    /// Seconds since the epoch from the RTC's fields (UTC, proleptic
    /// Gregorian): days-from-civil, as in Howard Hinnant's algorithm.
    fn epoch_seconds(y: i64, m: i64, d: i64, h: i64, mi: i64, s: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146097 + doe - 719468;
        days * 86400 + h * 3600 + mi * 60 + s
    }

    fn host_secs() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn read_epoch(c: &mut Cmos, decode: fn(u8) -> u8) -> i64 {
        let year = i64::from(decode(rd(c, REG_CENTURY))) * 100 + i64::from(decode(rd(c, REG_YEAR)));
        epoch_seconds(
            year,
            i64::from(decode(rd(c, REG_MONTH))),
            i64::from(decode(rd(c, REG_DAY))),
            i64::from(decode(rd(c, REG_HOURS))),
            i64::from(decode(rd(c, REG_MINUTES))),
            i64::from(decode(rd(c, REG_SECONDS))),
        )
    }

    #[test]
    fn bcd_time_matches_host_utc() {
        let mut c = Cmos::new(CmosMemory::default());
        assert_eq!(rd(&mut c, REG_STATUS_B), STATUS_B_24H);
        let t = read_epoch(&mut c, from_bcd);
        assert!((t - host_secs()).abs() <= 2, "rtc {t} host {}", host_secs());
        // Weekday: 1970-01-01 was a Thursday (5 with Sunday = 1).
        let wday = from_bcd(rd(&mut c, REG_WEEKDAY));
        let days = host_secs().div_euclid(86400);
        assert_eq!(i64::from(wday), (days + 4).rem_euclid(7) + 1);
    }

    #[test]
    fn binary_mode_matches_host_utc() {
        let mut c = Cmos::new(CmosMemory::default());
        wr(&mut c, REG_STATUS_B, STATUS_B_24H | STATUS_B_BINARY);
        let t = read_epoch(&mut c, |v| v);
        assert!((t - host_secs()).abs() <= 2);
    }

    fn afternoon() -> RtcTime {
        RtcTime {
            second: 59,
            minute: 7,
            hour: 23,
            weekday: 3,
            day: 31,
            month: 12,
            year: 2099,
        }
    }

    fn just_after_midnight() -> RtcTime {
        RtcTime {
            hour: 0,
            ..afternoon()
        }
    }

    #[test]
    fn calendar_fields_from_unix_seconds() {
        let at = |secs| RtcTime::from_unix_seconds(secs).unwrap();
        let fields = |t: RtcTime| {
            (
                t.year, t.month, t.day, t.weekday, t.hour, t.minute, t.second,
            )
        };
        assert_eq!(fields(at(0)), (1970, 1, 1, 5, 0, 0, 0));
        // 2000-02-29 00:00:00, a Tuesday.
        assert_eq!(fields(at(951_782_400)), (2000, 2, 29, 3, 0, 0, 0));
        // 2024-02-29 23:59:59, a Thursday.
        assert_eq!(fields(at(1_709_251_199)), (2024, 2, 29, 5, 23, 59, 59));
        // 2100-03-01 12:34:56 (2100 is no leap year), a Monday.
        assert_eq!(fields(at(4_107_587_696)), (2100, 3, 1, 2, 12, 34, 56));
    }

    #[test]
    fn encodes_fixed_time_in_every_mode() {
        let mut c = Cmos::with_clock(CmosMemory::default(), afternoon);
        assert_eq!(rd(&mut c, REG_SECONDS), 0x59);
        assert_eq!(rd(&mut c, REG_HOURS), 0x23);
        assert_eq!(rd(&mut c, REG_DAY), 0x31);
        assert_eq!(rd(&mut c, REG_YEAR), 0x99);
        assert_eq!(rd(&mut c, REG_CENTURY), 0x20);
        wr(&mut c, REG_STATUS_B, 0); // BCD, 12-hour
        assert_eq!(rd(&mut c, REG_HOURS), 0x11 | HOUR_PM);
        wr(&mut c, REG_STATUS_B, STATUS_B_BINARY); // binary, 12-hour
        assert_eq!(rd(&mut c, REG_HOURS), 11 | HOUR_PM);
        assert_eq!(rd(&mut c, REG_SECONDS), 59);
        assert_eq!(rd(&mut c, REG_CENTURY), 20);

        let mut c = Cmos::with_clock(CmosMemory::default(), just_after_midnight);
        wr(&mut c, REG_STATUS_B, 0);
        assert_eq!(rd(&mut c, REG_HOURS), 0x12);
    }

    #[test]
    fn status_registers_and_nmi_bit() {
        let mut c = Cmos::with_clock(CmosMemory::default(), afternoon);
        wr(&mut c, REG_STATUS_A, 0xa6);
        assert_eq!(rd(&mut c, REG_STATUS_A) & STATUS_A_UIP, 0);
        assert_eq!(rd(&mut c, REG_STATUS_C), 0);
        assert_eq!(rd(&mut c, REG_STATUS_D), STATUS_D_VRT);
        // NMI-disable bit set on the index still selects the register.
        assert_eq!(rd(&mut c, 0x80 | REG_STATUS_D), STATUS_D_VRT);
        // Clock writes are ignored.
        wr(&mut c, REG_SECONDS, 0x00);
        assert_eq!(rd(&mut c, REG_SECONDS), 0x59);
    }

    #[test]
    fn nvram_reads_back() {
        let mut c = Cmos::new(CmosMemory::default());
        for i in 0x40..0x5au8 {
            wr(&mut c, i, i ^ 0xa5);
        }
        for i in 0x40..0x5au8 {
            assert_eq!(rd(&mut c, i), i ^ 0xa5);
        }
        wr(&mut c, 0xff, 0x42); // index 0x7f
        assert_eq!(rd(&mut c, 0x7f), 0x42);
    }

    #[test]
    fn reports_memory_like_qemu() {
        let mut c = Cmos::new(CmosMemory {
            below_4g: 3 * 1024 * MIB,
            above_4g: 5 * 1024 * MIB,
        });
        let rd16 = |c: &mut Cmos, lo: u8| u16::from_le_bytes([rd(c, lo), rd(c, lo + 1)]);
        assert_eq!(rd16(&mut c, 0x15), 640);
        assert_eq!(rd16(&mut c, 0x17), 65535);
        assert_eq!(rd16(&mut c, 0x30), 65535);
        assert_eq!(
            u64::from(rd16(&mut c, 0x34)),
            (3 * 1024 - 16) * MIB / (64 * KIB)
        );
        let high = u32::from_le_bytes([rd(&mut c, 0x5b), rd(&mut c, 0x5c), rd(&mut c, 0x5d), 0]);
        assert_eq!(u64::from(high), 5 * 1024 * MIB / (64 * KIB));

        let mut small = Cmos::new(CmosMemory {
            below_4g: 8 * MIB,
            above_4g: 0,
        });
        assert_eq!(rd16(&mut small, 0x17), 7 * 1024);
        assert_eq!(rd16(&mut small, 0x34), 0);
        assert_eq!(rd(&mut small, 0x5b), 0);
    }
}
