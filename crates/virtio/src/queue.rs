//! Draining a virtqueue safely: the loop every device's worker runs when
//! its queue is kicked, with the checks the ring itself needs.

use std::cell::Cell;
use std::num::Wrapping;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use crate::device::GuestMemory;

/// The ring itself is broken (not one request): only a reset can help.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The driver's available index ran more than a ring's worth ahead.
    #[error("available index {avail} is {ahead} entries ahead of the device (ring size {size})")]
    AvailIndex {
        /// The driver's index.
        avail: u16,
        /// How far ahead of our position it is.
        ahead: u16,
        /// Queue size.
        size: u16,
    },
    /// Reading or writing the ring structures in guest memory failed.
    #[error("ring access failed: {0}")]
    Access(#[from] virtio_queue::Error),
}

/// A popped request: its chain, for the device to parse.
pub type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// Check the driver's available index before trusting it.
fn check_avail(queue: &Queue, mem: &GuestMemory) -> Result<(), RingError> {
    let avail = queue.avail_idx(mem, Ordering::Acquire)?;
    let ahead = (avail - Wrapping(queue.next_avail())).0;
    if ahead > queue.size() {
        return Err(RingError::AvailIndex {
            avail: avail.0,
            ahead,
            size: queue.size(),
        });
    }
    Ok(())
}

/// The loop [`drain`] and [`drain_polling`] share: check the available
/// index, then serve and publish every chain now available. Returns
/// whether any was served.
fn serve_available<F>(
    queue: &mut Queue,
    mem: &GuestMemory,
    handle: &mut F,
) -> Result<bool, RingError>
where
    F: FnMut(Chain<'_>) -> u32,
{
    check_avail(queue, mem)?;
    let mut used = false;
    while let Some(chain) = queue.iter(mem)?.next() {
        let head = chain.head_index();
        let len = handle(chain);
        queue.add_used(mem, head, len)?;
        used = true;
    }
    Ok(used)
}

/// Serve every available request with `handle`, which returns how many
/// bytes it wrote into the chain; publish each as used. With EVENT_IDX,
/// keeps going until the driver has nothing more, so no kick is lost.
/// Returns whether the driver wants an interrupt.
pub fn drain<F>(queue: &mut Queue, mem: &GuestMemory, mut handle: F) -> Result<bool, RingError>
where
    F: FnMut(Chain<'_>) -> u32,
{
    let mut used = false;
    loop {
        queue.disable_notification(mem)?;
        used |= serve_available(queue, mem, &mut handle)?;
        if !queue.enable_notification(mem)? {
            break;
        }
    }
    Ok(used && queue.needs_notification(mem)?)
}

/// Like [`drain`], for queues the driver tends to refill at once (a
/// transmit queue): after each batch the driver is interrupted if it wants
/// to be, then the ring is watched for `budget` before notifications are
/// re-armed, so a driver streaming requests rarely needs to kick.
pub fn drain_polling<F, N>(
    queue: &mut Queue,
    mem: &GuestMemory,
    budget: Duration,
    mut notify: N,
    mut handle: F,
) -> Result<(), RingError>
where
    F: FnMut(Chain<'_>) -> u32,
    N: FnMut(),
{
    loop {
        queue.disable_notification(mem)?;
        let used = serve_available(queue, mem, &mut handle)?;
        if used && queue.needs_notification(mem)? {
            notify();
        }
        if poll_avail(queue, mem, budget)? {
            continue;
        }
        if !queue.enable_notification(mem)? {
            return Ok(());
        }
    }
}

/// Pop available chains one at a time, for devices that may stop early
/// (a receive queue with no packet to place): `next` returns None when
/// the ring has nothing available.
pub fn pop<'a>(queue: &mut Queue, mem: &'a GuestMemory) -> Result<Option<Chain<'a>>, RingError> {
    check_avail(queue, mem)?;
    Ok(queue.iter(mem)?.next())
}

/// How long a worker keeps watching a ring that ran dry before it re-arms
/// notifications and sleeps. A driver that queues its next request within
/// this time saves a notification, which is a VM exit (tens of
/// microseconds where KVM emulates the access); QEMU's iothreads and
/// vhost's busy loop poll for the same reason.
pub const POLL_BUDGET: Duration = Duration::from_micros(50);

/// Host CPUs the VM's vCPUs may run on, one bit each (CPUs 0 to 63);
/// all bits when any of them may run anywhere or it is not known.
static VCPU_CPUS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Tells the device workers where the vCPUs may run (`None`: anywhere, or
/// not known), so that none polls a ring on a CPU a vCPU needs (see
/// [`poll_budget`]). The VMM calls it at boot and whenever it pins a vCPU.
pub fn set_vcpu_cpus(cpus: Option<&[usize]>) {
    let bits = cpus.map_or(u64::MAX, |cpus| {
        cpus.iter().fold(0u64, |bits, &c| {
            bits | 1u64
                .checked_shl(u32::try_from(c).unwrap_or(u32::MAX))
                .unwrap_or(u64::MAX)
        })
    });
    VCPU_CPUS.store(bits, Ordering::Relaxed);
}

/// How long the calling worker polls a ring that ran dry: [`POLL_BUDGET`],
/// or nothing when the thread may run on one CPU only and a vCPU may run
/// there too. The poll would then only keep that vCPU, which is what
/// refills the ring, off the CPU for its whole length: `bench/network.py`
/// pins each VMM to one CPU, and 50 µs of polling after each doorbell
/// held its TCP throughput to about 0.6 of what it is without. A worker
/// pinned apart from the vCPUs (`--emulator-pin`) or free to move polls
/// as before. The thread's affinity is asked again after a second, since
/// the daemon may pin threads again at any time.
pub fn poll_budget() -> Duration {
    thread_local! {
        /// When the affinity was last asked, and the one CPU it allowed.
        static ONLY_CPU: Cell<Option<(Instant, Option<usize>)>> = const { Cell::new(None) };
    }
    let only = ONLY_CPU.with(|cell| match cell.get() {
        Some((at, only)) if at.elapsed() < Duration::from_secs(1) => only,
        _ => {
            let only = only_allowed_cpu();
            cell.set(Some((Instant::now(), only)));
            only
        }
    });
    let shared = only.is_some_and(|c| {
        let bit = 1u64.checked_shl(u32::try_from(c).unwrap_or(u32::MAX));
        bit.is_none_or(|bit| VCPU_CPUS.load(Ordering::Relaxed) & bit != 0)
    });
    if shared {
        Duration::ZERO
    } else {
        POLL_BUDGET
    }
}

/// The CPU the calling thread is pinned to, if it may run on one only.
fn only_allowed_cpu() -> Option<usize> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes
    // into `set`; tid 0 is the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return None;
    }
    // SAFETY: `set` was filled in by the kernel.
    if unsafe { libc::CPU_COUNT(&set) } != 1 {
        return None;
    }
    (0..libc::CPU_SETSIZE as usize).find(|&c| {
        // SAFETY: as above; every index is below CPU_SETSIZE.
        unsafe { libc::CPU_ISSET(c, &set) }
    })
}

/// Spin until the driver makes more buffers available or `budget` passes;
/// true if there are more. Leaves notifications as they were.
pub fn poll_avail(queue: &Queue, mem: &GuestMemory, budget: Duration) -> Result<bool, RingError> {
    let start = Instant::now();
    loop {
        let avail = queue.avail_idx(mem, Ordering::Acquire)?;
        if avail.0 != queue.next_avail() {
            return Ok(true);
        }
        if start.elapsed() >= budget {
            return Ok(false);
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use vm_memory::{Bytes, GuestAddress};

    use super::*;

    const MEM_END: u64 = 0x1_0000;
    const SIZE: u16 = 16;

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x1_0000)]).unwrap()
    }

    /// A ready queue with its rings at the given addresses.
    fn queue(desc: u64, avail: u64, used: u64) -> Queue {
        let mut q = Queue::new(SIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(desc)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(avail)).unwrap();
        q.try_set_used_ring_address(GuestAddress(used)).unwrap();
        q.set_ready(true);
        q
    }

    /// Offer `heads` (each a one-descriptor chain of `len` bytes at
    /// 0x8000) in the available ring at `avail`, with `idx` as the index.
    fn offer(mem: &GuestMemory, desc: u64, avail: u64, heads: &[u16], idx: u16) {
        for (i, &h) in heads.iter().enumerate() {
            let d = RawDescriptor::from(Descriptor::new(0x8000, 64, 0, 0));
            mem.write_obj(d, GuestAddress(desc + 16 * u64::from(h)))
                .unwrap();
            let slot = avail + 4 + 2 * u64::try_from(i).unwrap();
            mem.write_obj(h, GuestAddress(slot)).unwrap();
        }
        mem.write_obj(idx, GuestAddress(avail + 2)).unwrap();
    }

    fn used_idx(mem: &GuestMemory, used: u64) -> u16 {
        mem.read_obj(GuestAddress(used + 2)).unwrap()
    }

    #[test]
    fn drain_serves_every_chain_and_publishes_lengths() {
        let mem = memory();
        let mut q = queue(0x1000, 0x2000, 0x3000);
        offer(&mem, 0x1000, 0x2000, &[3, 5], 2);
        let mut seen = Vec::new();
        let notify = drain(&mut q, &mem, |c| {
            seen.push(c.head_index());
            u32::from(c.head_index()) * 10
        })
        .unwrap();
        assert!(notify);
        assert_eq!(seen, vec![3, 5]);
        assert_eq!(used_idx(&mem, 0x3000), 2);
        let elem = |i: u64| -> (u32, u32) {
            let at = 0x3000 + 4 + 8 * i;
            (
                mem.read_obj(GuestAddress(at)).unwrap(),
                mem.read_obj(GuestAddress(at + 4)).unwrap(),
            )
        };
        assert_eq!((elem(0), elem(1)), ((3, 30), (5, 50)));
        // Nothing more: nothing served, no interrupt wanted.
        assert!(!drain(&mut q, &mem, |_| panic!("no chain is available")).unwrap());
    }

    #[test]
    fn an_avail_index_more_than_a_ring_ahead_is_refused() {
        let mem = memory();
        let mut q = queue(0x1000, 0x2000, 0x3000);
        offer(&mem, 0x1000, 0x2000, &[0], SIZE + 1);
        let e = drain(&mut q, &mem, |_| panic!("nothing may be served")).unwrap_err();
        assert!(matches!(
            e,
            RingError::AvailIndex {
                avail: 17,
                ahead: 17,
                size: SIZE
            }
        ));
        assert!(matches!(
            pop(&mut q, &mem),
            Err(RingError::AvailIndex { ahead: 17, .. })
        ));
        // Behind us (wrapped around) is just as far ahead.
        offer(&mem, 0x1000, 0x2000, &[0], u16::MAX);
        assert!(matches!(
            pop(&mut q, &mem),
            Err(RingError::AvailIndex {
                ahead: u16::MAX,
                ..
            })
        ));
        assert_eq!(used_idx(&mem, 0x3000), 0);
        // Exactly a ring's worth is allowed.
        offer(&mem, 0x1000, 0x2000, &[0], SIZE);
        assert!(pop(&mut q, &mem).unwrap().is_some());
    }

    #[test]
    fn rings_at_the_very_end_of_memory_work() {
        let mem = memory();
        // The available ring (6 + 2 * 16 bytes) ends on the last byte.
        let avail = MEM_END - 38;
        let (desc, used) = (MEM_END - 0x200, MEM_END - 0x100);
        let mut q = queue(desc, avail, used);
        assert!(q.is_valid(&mem));
        offer(&mem, desc, avail, &[SIZE - 1], 1);
        let mut n = 0;
        drain(&mut q, &mem, |c| {
            assert_eq!(c.head_index(), SIZE - 1);
            n += 1;
            0
        })
        .unwrap();
        assert_eq!((n, used_idx(&mem, used)), (1, 1));
    }

    #[test]
    fn rings_outside_memory_are_errors_not_panics() {
        let mem = memory();
        // Used ring past the end: the request is taken, publishing fails.
        let mut q = queue(0x1000, 0x2000, MEM_END - 8);
        offer(&mem, 0x1000, 0x2000, &[0], 1);
        let mut served = 0;
        let e = drain(&mut q, &mem, |_| {
            served += 1;
            1
        })
        .unwrap_err();
        assert!(matches!(e, RingError::Access(_)), "{e}");
        assert_eq!(served, 1);
        // Available ring entirely outside memory.
        let mut q = queue(0x1000, MEM_END + 0x1000, 0x3000);
        assert!(matches!(pop(&mut q, &mem), Err(RingError::Access(_))));
        assert!(matches!(
            drain(&mut q, &mem, |_| 0),
            Err(RingError::Access(_))
        ));
        // At the top of the address space.
        let mut q = queue(0x1000, u64::MAX - 1, 0x3000);
        assert!(matches!(pop(&mut q, &mem), Err(RingError::Access(_))));
    }

    #[test]
    fn a_descriptor_table_outside_memory_yields_empty_chains() {
        let mem = memory();
        let mut q = queue(MEM_END, 0x2000, 0x3000);
        offer(&mem, 0, 0x2000, &[0], 1);
        let chain = pop(&mut q, &mem).unwrap().unwrap();
        assert_eq!(chain.count(), 0);
    }

    /// A worker pinned to the one CPU a vCPU may use does not poll; pinned
    /// elsewhere, or free to move, it does. (Each case on a new thread:
    /// the answer is kept per thread.)
    #[test]
    fn a_worker_pinned_where_a_vcpu_runs_does_not_poll() {
        fn budget_on(cpu: Option<usize>) -> Duration {
            std::thread::spawn(move || {
                if let Some(cpu) = cpu {
                    // SAFETY: an all-zero cpu_set_t is a valid empty set;
                    // cpu is below CPU_SETSIZE; tid 0 is this thread.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(cpu, &mut set);
                        assert_eq!(
                            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                            0
                        );
                    }
                }
                poll_budget()
            })
            .join()
            .unwrap()
        }
        let Some(cpu) = only_allowed_cpu().or_else(|| {
            // The test thread may use several CPUs: pick the one it is on.
            // SAFETY: sched_getcpu has no preconditions.
            usize::try_from(unsafe { libc::sched_getcpu() }).ok()
        }) else {
            return;
        };
        set_vcpu_cpus(Some(&[cpu]));
        assert_eq!(budget_on(Some(cpu)), Duration::ZERO);
        set_vcpu_cpus(Some(&[cpu + 1]));
        assert_eq!(budget_on(Some(cpu)), POLL_BUDGET);
        set_vcpu_cpus(None);
        assert_eq!(budget_on(Some(cpu)), Duration::ZERO);
        if only_allowed_cpu().is_none() {
            assert_eq!(budget_on(None), POLL_BUDGET);
        }
    }
}
