//! MSI-X: the vector table and pending-bit array a function exposes in a
//! BAR, the capability that enables it, and delivery through KVM.
//!
//! Each vector is backed by an irqfd bound to its own GSI; the GSI's route
//! (the MSI address and data the guest wrote) is kept in KVM's routing table
//! through [`MsiRoutes`]. Masking is decided here, in user space: a masked
//! vector's interrupt sets its pending bit instead of firing, and unmasking
//! fires it then.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// MSI-X capability ID.
pub const MSIX_CAP_ID: u8 = 0x11;
/// Bytes per table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Most vectors one function may have (the table-size field is 11 bits).
pub const MAX_MSIX_VECTORS: u16 = 2048;
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const ENTRY_VECTOR_MASKED: u32 = 1;

/// Where interrupts go: the host side of MSI routing (KVM's GSI table).
pub trait MsiRoutes: Send + Sync {
    /// Route `gsi` to the MSI message `address`/`data`.
    fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> std::io::Result<()>;
    /// Remove `gsi`'s route, so its irqfd raises nothing.
    fn clear_route(&self, gsi: u32) -> std::io::Result<()>;
}

/// One vector's host side: the GSI it owns and the irqfd that raises it.
pub struct MsixVector {
    /// GSI reserved for this vector.
    pub gsi: u32,
    /// irqfd registered with KVM for `gsi`.
    pub irqfd: EventFd,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TableEntry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl TableEntry {
    fn masked(&self) -> bool {
        self.control & ENTRY_VECTOR_MASKED != 0
    }
    fn address(&self) -> u64 {
        u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo)
    }
    /// The entry as the guest sees it in the table.
    fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0u8; 16];
        for (i, w) in [self.addr_lo, self.addr_hi, self.data, self.control]
            .iter()
            .enumerate()
        {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        bytes
    }
    fn from_bytes(bytes: &[u8; 16]) -> Self {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Self {
            addr_lo: word(0),
            addr_hi: word(4),
            data: word(8),
            // Only the mask bit of vector control is defined.
            control: word(12) & ENTRY_VECTOR_MASKED,
        }
    }
}

/// A function's MSI-X state, shared by its register handlers (vCPU threads)
/// and the device thread that raises interrupts.
pub struct Msix {
    table: Vec<TableEntry>,
    pending: Vec<u64>,
    vectors: Vec<MsixVector>,
    routes: Arc<dyn MsiRoutes>,
    enabled: bool,
    function_masked: bool,
}

impl Msix {
    /// MSI-X over `vectors` (one per table entry), all masked, disabled.
    pub fn new(vectors: Vec<MsixVector>, routes: Arc<dyn MsiRoutes>) -> Self {
        let n = vectors.len();
        Self {
            table: vec![
                TableEntry {
                    control: ENTRY_VECTOR_MASKED,
                    ..Default::default()
                };
                n
            ],
            pending: vec![0; n.div_ceil(64)],
            vectors,
            routes,
            enabled: false,
            function_masked: false,
        }
    }

    /// Number of vectors.
    pub fn num_vectors(&self) -> u16 {
        u16::try_from(self.vectors.len()).unwrap_or(MAX_MSIX_VECTORS)
    }

    /// Bytes the table takes in its BAR.
    pub fn table_size(&self) -> u64 {
        self.vectors.len() as u64 * MSIX_ENTRY_SIZE
    }

    /// Bytes the pending-bit array takes in its BAR.
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    /// The capability body (after ID and next pointer) for a table and PBA
    /// at the given BAR offsets, and its writable mask.
    pub fn capability(&self, bar: u8, table_offset: u32, pba_offset: u32) -> ([u8; 10], [u8; 10]) {
        let control = self.num_vectors().saturating_sub(1);
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&control.to_le_bytes());
        body[2..6].copy_from_slice(&(table_offset | u32::from(bar & 7)).to_le_bytes());
        body[6..10].copy_from_slice(&(pba_offset | u32::from(bar & 7)).to_le_bytes());
        let mut writable = [0u8; 10];
        writable[1] = 0xc0; // enable and function mask
        (body, writable)
    }

    /// Whether MSI-X is enabled by the guest.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The guest wrote the capability's message control register.
    pub fn set_control(&mut self, control: u16) {
        let was_active = self.enabled && !self.function_masked;
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        let active = self.enabled && !self.function_masked;
        if active && !was_active {
            for v in 0..self.table.len() {
                self.sync_route(v);
                self.fire_if_pending(v);
            }
        }
    }

    /// Guest read of the table.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((entry, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let bytes = self.table[entry].to_bytes();
        data.copy_from_slice(&bytes[field..field + data.len()]);
    }

    /// Guest write of the table: 4- or 8-byte aligned accesses within one
    /// entry; anything else is ignored, as the spec allows.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        let Some((entry, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let old = self.table[entry];
        let mut bytes = old.to_bytes();
        bytes[field..field + data.len()].copy_from_slice(data);
        let new = TableEntry::from_bytes(&bytes);
        self.table[entry] = new;
        // The route holds only the message; (un)masking is decided here and
        // need not push KVM's whole routing table again.
        if (new.address(), new.data) != (old.address(), old.data) {
            self.sync_route(entry);
        }
        if old.masked() && !new.masked() {
            self.fire_if_pending(entry);
        }
    }

    fn locate(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        if !(len == 4 || len == 8)
            || !offset.is_multiple_of(len as u64)
            || offset >= self.table_size()
        {
            return None;
        }
        let entry = usize::try_from(offset / MSIX_ENTRY_SIZE).ok()?;
        let field = usize::try_from(offset % MSIX_ENTRY_SIZE).ok()?;
        Some((entry, field))
    }

    /// Guest read of the pending-bit array (writes to it are ignored).
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for (i, b) in data.iter_mut().enumerate() {
            let Some(byte) = offset.checked_add(i as u64) else {
                return;
            };
            let Ok(word) = usize::try_from(byte / 8) else {
                return;
            };
            if let Some(w) = self.pending.get(word) {
                *b = w.to_le_bytes()[usize::try_from(byte % 8).unwrap_or(0)];
            }
        }
    }

    /// Raise `vector`, or mark it pending while it is masked. Returns
    /// whether the guest was interrupted. A vector number out of range, or
    /// MSI-X disabled, raises nothing.
    pub fn trigger(&mut self, vector: u16) -> bool {
        let v = usize::from(vector);
        if !self.enabled || v >= self.table.len() {
            return false;
        }
        if self.function_masked || self.table[v].masked() {
            self.pending[v / 64] |= 1 << (v % 64);
            return false;
        }
        self.fire(v)
    }

    fn fire(&self, v: usize) -> bool {
        match self.vectors[v].irqfd.write(1) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("MSI-X vector {v}: irqfd write failed: {e}");
                false
            }
        }
    }

    fn fire_if_pending(&mut self, v: usize) {
        let bit = 1u64 << (v % 64);
        if self.pending[v / 64] & bit != 0
            && self.enabled
            && !self.function_masked
            && !self.table[v].masked()
        {
            self.pending[v / 64] &= !bit;
            self.fire(v);
        }
    }

    /// Keep KVM's route for vector `v` equal to its table entry.
    fn sync_route(&self, v: usize) {
        let entry = self.table[v];
        let gsi = self.vectors[v].gsi;
        let result = if self.enabled {
            self.routes.set_msi_route(gsi, entry.address(), entry.data)
        } else {
            self.routes.clear_route(gsi)
        };
        if let Err(e) = result {
            tracing::warn!("MSI-X vector {v}: updating the route of GSI {gsi} failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    type Route = (u32, Option<(u64, u32)>);

    #[derive(Default)]
    struct Recorded(Mutex<Vec<Route>>);

    impl MsiRoutes for Recorded {
        fn set_msi_route(&self, gsi: u32, address: u64, data: u32) -> std::io::Result<()> {
            self.0.lock().unwrap().push((gsi, Some((address, data))));
            Ok(())
        }
        fn clear_route(&self, gsi: u32) -> std::io::Result<()> {
            self.0.lock().unwrap().push((gsi, None));
            Ok(())
        }
    }

    fn msix(n: u32) -> (Msix, Arc<Recorded>) {
        let routes = Arc::new(Recorded::default());
        let vectors = (0..n)
            .map(|i| MsixVector {
                gsi: 24 + i,
                irqfd: EventFd::new(libc_nonblock()).unwrap(),
            })
            .collect();
        (Msix::new(vectors, routes.clone()), routes)
    }

    fn libc_nonblock() -> i32 {
        0o4000 // EFD_NONBLOCK
    }

    fn program(m: &mut Msix, v: u64, addr: u64, data: u32) {
        let addr = addr.to_le_bytes();
        m.table_write(v * 16, &addr[..4]);
        m.table_write(v * 16 + 4, &addr[4..]);
        m.table_write(v * 16 + 8, &data.to_le_bytes());
        m.table_write(v * 16 + 12, &0u32.to_le_bytes());
    }

    #[test]
    fn disabled_msix_raises_nothing() {
        let (mut m, _) = msix(2);
        program(&mut m, 0, 0xfee0_0000, 0x41);
        assert!(!m.trigger(0));
        assert!(m.vectors[0].irqfd.read().is_err());
    }

    #[test]
    fn enabled_vector_fires_and_routes() {
        let (mut m, routes) = msix(2);
        m.set_control(CONTROL_ENABLE);
        program(&mut m, 1, 0xfee0_0000, 0x41);
        assert!(m.trigger(1));
        assert_eq!(m.vectors[1].irqfd.read().unwrap(), 1);
        let last = *routes.0.lock().unwrap().last().unwrap();
        assert_eq!(last, (25, Some((0xfee0_0000, 0x41))));
    }

    #[test]
    fn masked_vector_is_pending_until_unmasked() {
        let (mut m, _) = msix(2);
        m.set_control(CONTROL_ENABLE);
        program(&mut m, 0, 0xfee0_0000, 0x41);
        m.table_write(12, &1u32.to_le_bytes());
        assert!(!m.trigger(0));
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 1);
        assert!(m.vectors[0].irqfd.read().is_err());
        m.table_write(12, &0u32.to_le_bytes());
        assert_eq!(m.vectors[0].irqfd.read().unwrap(), 1);
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0);
    }

    #[test]
    fn masking_alone_does_not_reroute() {
        let (mut m, routes) = msix(1);
        m.set_control(CONTROL_ENABLE);
        program(&mut m, 0, 0xfee0_0000, 0x41);
        let pushed = routes.0.lock().unwrap().len();
        m.table_write(12, &1u32.to_le_bytes());
        m.table_write(12, &0u32.to_le_bytes());
        assert_eq!(routes.0.lock().unwrap().len(), pushed);
        let mut d = [0u8; 8];
        m.table_read(8, &mut d);
        assert_eq!(d, [0x41, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn function_mask_holds_every_vector() {
        let (mut m, _) = msix(1);
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        program(&mut m, 0, 0xfee0_0000, 0x41);
        assert!(!m.trigger(0));
        m.set_control(CONTROL_ENABLE);
        assert_eq!(m.vectors[0].irqfd.read().unwrap(), 1);
    }

    #[test]
    fn wild_accesses_are_ignored() {
        let (mut m, _) = msix(1);
        m.table_write(3, &[1, 2, 3, 4]);
        m.table_write(16, &[1, 2, 3, 4]);
        m.table_write(u64::MAX - 3, &[1, 2, 3, 4]);
        m.table_write(0, &[1]);
        let mut d = [0u8; 4];
        m.table_read(u64::MAX - 3, &mut d);
        assert_eq!(d, [0; 4]);
        m.table_read(12, &mut d);
        assert_eq!(u32::from_le_bytes(d), ENTRY_VECTOR_MASKED);
        assert!(!m.trigger(7));
        let mut p = [0u8; 8];
        m.pba_read(u64::MAX - 2, &mut p);
    }
}
