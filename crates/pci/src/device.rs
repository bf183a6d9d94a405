//! What a PCI function implements to sit on the bus.

use vmm_sys_util::eventfd::EventFd;

use crate::config::BarRange;

/// Host-side registration of doorbells: a guest write to an address wakes
/// an eventfd inside KVM, without an exit to user space (ioeventfd).
pub trait IoEventRegistry: Send + Sync {
    /// Signal `fd` on any write to the MMIO address `addr`.
    fn register(&self, addr: u64, fd: &EventFd) -> std::io::Result<()>;
    /// Undo [`IoEventRegistry::register`].
    fn unregister(&self, addr: u64, fd: &EventFd) -> std::io::Result<()>;
}

/// A PCI function.
///
/// Configuration accesses arrive already decoded to this function; BAR
/// accesses arrive as (BAR index, offset into the BAR). The bus works out
/// which BARs are decoded from [`PciDevice::decoded_bars`] after every
/// configuration write.
pub trait PciDevice: Send {
    /// Read configuration dword `reg` (byte offset `reg * 4`).
    fn config_read(&mut self, reg: usize) -> u32;
    /// Write `data` (1, 2 or 4 bytes) at byte `offset` of configuration space.
    fn config_write(&mut self, offset: usize, data: &[u8]);
    /// The BARs currently decoded (memory space on), with their addresses.
    fn decoded_bars(&self) -> Vec<BarRange>;
    /// The guest moved, enabled or disabled BARs: `old` and `new` are the
    /// decoded BARs before and after (only BARs inside the bus's windows).
    fn bars_moved(&mut self, _old: &[BarRange], _new: &[BarRange]) {}
    /// Guest read of `data.len()` bytes at `offset` into BAR `bar`.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` into BAR `bar`.
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]);
}
