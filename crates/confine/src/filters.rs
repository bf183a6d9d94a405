//! The allow lists: for each [`ThreadKind`], the system calls (and, where
//! a call's arguments say what it does, the arguments) its threads make.
//!
//! Derived from what the threads really call: `scripts/seccomp-audit.sh`
//! runs a VM under `strace -f` and lists the calls per thread name, and
//! the end-to-end tests run with these filters in `kill` mode, so a call
//! missing here fails a test with the thread and the call named.
//!
//! To let a thread kind make a new call, add it to that kind's function
//! below (one place per kind); new KVM ioctls go in [`kvm_vm_runtime`]
//! (VM-fd ioctls the vCPU, API and main threads make while the guest runs)
//! or [`kvm_build`] (building a VM) and their numbers in `kvm_ioctls.rs`.

pub(crate) use crate::bpf::Rules;
use crate::bpf::{ArgLen as Len, Cmp as Op, Cond, Rule};
use libc::c_ulong;

use crate::kvm_ioctls as kvm;
use crate::ThreadKind;

/// The rules a thread of `kind` runs under.
pub(crate) fn rules(kind: ThreadKind) -> Rules {
    let mut r = Rules::new();
    add(&mut r, kind);
    distinct(&mut r);
    r
}

/// Add what a thread of `kind` may call to `r` (a union: a call either
/// allows unconditionally stays so).
fn add(r: &mut Rules, kind: ThreadKind) {
    common(r);
    match kind {
        ThreadKind::Main => main_thread(r),
        ThreadKind::Launcher => {
            // It starts every other thread (which inherits this filter
            // before installing its own), so it allows what all of them
            // need: the union of every kind (VirtioOther's is a union of
            // others already). Built in one map: ~0.1 ms less at start
            // than merging each kind's.
            for other in ThreadKind::ALL {
                if !matches!(other, ThreadKind::Launcher | ThreadKind::VirtioOther) {
                    add(r, other);
                }
            }
            spawn_threads(r);
        }
        ThreadKind::Vcpu => vcpu(r),
        ThreadKind::VirtioBlk => virtio_blk(r),
        ThreadKind::VirtioNet => virtio_net(r),
        ThreadKind::VirtioConsole => virtio_console(r),
        ThreadKind::VirtioRng => event_loop(r),
        ThreadKind::VirtioBalloon => virtio_balloon(r),
        ThreadKind::VirtioOther => {
            for k in [
                ThreadKind::VirtioBlk,
                ThreadKind::VirtioNet,
                ThreadKind::VirtioConsole,
                ThreadKind::VirtioBalloon,
            ] {
                add(r, k);
            }
        }
        ThreadKind::DiskIo => disk_io(r),
        ThreadKind::Api => api(r),
        ThreadKind::SerialInput => serial_input(r),
        ThreadKind::Prealloc => prealloc(r),
    }
}

/// Each call's rules sorted, once each: [`add_rule`] only appends, as a
/// check for duplicates on every addition made the launcher's list (the
/// union of all) slow to build at every start.
fn distinct(r: &mut Rules) {
    for list in r.values_mut() {
        list.sort_unstable();
        list.dedup();
    }
}

/// Calls a thread of `kind` makes that fail with EACCES instead of
/// stopping the VM (a second filter; its own list must allow them, as
/// seccomp's most severe answer wins): the C library's optional side
/// trips, which it does without.
pub(crate) fn refused(kind: ThreadKind) -> Rules {
    let mut r = Rules::new();
    if matches!(kind, ThreadKind::DiskIo | ThreadKind::VirtioBlk) {
        // The resolver's nscd and rtnetlink sockets (see `iscsi`).
        allow_values(
            &mut r,
            libc::SYS_socket,
            0,
            Len::Dword,
            &[libc::AF_UNIX as u64, libc::AF_NETLINK as u64],
        );
        // libnfs's look-ups of /etc/services (see `nfs`): these threads
        // open no file, so every open is answered EACCES.
        allow(&mut r, &[libc::SYS_openat]);
    }
    distinct(&mut r);
    r
}

/// Allow `nr` when `rule` holds, unless it is allowed whatever its
/// arguments already.
fn add_rule(r: &mut Rules, nr: libc::c_long, rule: Rule) {
    match r.get_mut(&nr) {
        Some(existing) if existing.is_empty() => {}
        Some(existing) => existing.push(rule),
        None => {
            r.insert(nr, vec![rule]);
        }
    }
}

/// Allow each of `calls` whatever its arguments.
fn allow(r: &mut Rules, calls: &[libc::c_long]) {
    for &nr in calls {
        r.insert(nr, Vec::new());
    }
}

/// Allow `nr` when argument `arg` (compared as `len`) passes `op` against
/// `value`, in addition to what is already allowed for it.
fn allow_if(r: &mut Rules, nr: libc::c_long, arg: u8, len: Len, op: Op, value: u64) {
    let rule = Cond::new(arg, len, op, value)
        .and_then(|c| Rule::new(vec![c]))
        .expect("a one-condition rule is always valid");
    add_rule(r, nr, rule);
}

/// Allow `nr` when argument `arg` is one of `values`.
fn allow_values(r: &mut Rules, nr: libc::c_long, arg: u8, len: Len, values: &[u64]) {
    for &v in values {
        allow_if(r, nr, arg, len, Op::Eq, v);
    }
}

/// Allow ioctl(2) with one of `requests`. Compared on 32 bits: the kernel
/// takes the request as an `unsigned int`.
fn ioctls(r: &mut Rules, requests: &[c_ulong]) {
    let values: Vec<u64> = requests.to_vec();
    allow_values(r, libc::SYS_ioctl, 1, Len::Dword, &values);
}

/// Every thread: what the C library and Rust's runtime do on their own
/// (memory allocation, locks, thread start and exit, the stack-overflow
/// guard, hash seeds, time), logging to stderr, and the SIGSYS report.
fn common(r: &mut Rules) {
    allow(
        r,
        &[
            libc::SYS_brk,
            libc::SYS_munmap,
            libc::SYS_mremap,
            libc::SYS_futex,
            libc::SYS_sched_yield,
            libc::SYS_sched_getaffinity,
            libc::SYS_getrandom,
            libc::SYS_clock_gettime,
            libc::SYS_clock_nanosleep,
            libc::SYS_nanosleep,
            libc::SYS_gettid,
            libc::SYS_getpid,
            libc::SYS_rt_sigreturn,
            libc::SYS_rt_sigprocmask,
            libc::SYS_sigaltstack,
            libc::SYS_restart_syscall,
            libc::SYS_exit,
            libc::SYS_exit_group,
            libc::SYS_write,
            libc::SYS_close,
            libc::SYS_set_robust_list,
            libc::SYS_rseq,
        ],
    );
    // Memory may be mapped and protected, never made executable: no
    // thread of the VMM generates or loads code at run time.
    for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
        allow_if(
            r,
            nr,
            2,
            Len::Dword,
            Op::MaskedEq(libc::PROT_EXEC as u64),
            0,
        );
    }
    // The C library gives a finished thread's stack back with
    // MADV_DONTNEED.
    allow_values(
        r,
        libc::SYS_madvise,
        2,
        Len::Dword,
        &[libc::MADV_DONTNEED as u64],
    );
    // Descriptor flags: O_CLOEXEC duplicates (eventfd clones), reading
    // and setting O_NONBLOCK.
    allow_values(
        r,
        libc::SYS_fcntl,
        1,
        Len::Dword,
        &[
            libc::F_GETFD as u64,
            libc::F_SETFD as u64,
            libc::F_GETFL as u64,
            libc::F_SETFL as u64,
            libc::F_DUPFD_CLOEXEC as u64,
        ],
    );
    // A panic aborts with raise(SIGABRT), which is tgkill on itself.
    signal_own_threads(r, libc::SIGABRT);
    // Naming a thread (the C library and std do it for themselves).
    allow_values(
        r,
        libc::SYS_prctl,
        0,
        Len::Dword,
        &[libc::PR_SET_NAME as u64, libc::PR_GET_NAME as u64],
    );
}

/// Allow tgkill(2) of `signal` to this process's own threads only.
fn signal_own_threads(r: &mut Rules, signal: libc::c_int) {
    let rule = [
        Cond::new(0, Len::Dword, Op::Eq, u64::from(std::process::id())),
        Cond::new(2, Len::Dword, Op::Eq, u64::from(signal.unsigned_abs())),
    ]
    .into_iter()
    .collect::<Option<Vec<_>>>()
    .and_then(Rule::new)
    .expect("a fixed rule is valid");
    add_rule(r, libc::SYS_tgkill, rule);
}

/// Kicking vCPU threads out of `KVM_RUN`: the kick signal (the first
/// real-time signal, `hypervisor::kick_signal`) to a thread of this
/// process.
fn kick_vcpus(r: &mut Rules) {
    signal_own_threads(r, libc::SIGRTMIN());
}

/// Creating threads: clone with CLONE_THREAD only, so never a new
/// process. (clone3 passes its flags in memory a filter cannot read; it
/// fails with ENOSYS instead, and the C library falls back to clone.)
fn spawn_threads(r: &mut Rules) {
    let thread = libc::CLONE_THREAD as u64;
    allow_if(
        r,
        libc::SYS_clone,
        0,
        Len::Qword,
        Op::MaskedEq(thread),
        thread,
    );
    allow(r, &[libc::SYS_clone3]);
    // A new thread installs its own filter (which can only narrow what it
    // inherited) under its spawner's.
    allow_values(
        r,
        libc::SYS_prctl,
        0,
        Len::Dword,
        &[libc::PR_SET_NO_NEW_PRIVS as u64],
    );
    allow_values(
        r,
        libc::SYS_seccomp,
        0,
        Len::Dword,
        &[libc::SECCOMP_SET_MODE_FILTER as u64],
    );
}

/// Event loops: a device worker's epoll over its eventfds.
fn event_loop(r: &mut Rules) {
    allow(
        r,
        &[
            libc::SYS_read,
            libc::SYS_epoll_wait,
            libc::SYS_epoll_pwait,
            libc::SYS_epoll_ctl,
            libc::SYS_poll,
            libc::SYS_ppoll,
        ],
    );
}

/// Reading and writing files the VMM already holds open (disk images,
/// logs): no opening of new ones.
fn file_io(r: &mut Rules) {
    allow(
        r,
        &[
            libc::SYS_read,
            libc::SYS_pread64,
            libc::SYS_pwrite64,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_preadv,
            libc::SYS_pwritev,
            libc::SYS_preadv2,
            libc::SYS_pwritev2,
            libc::SYS_lseek,
            libc::SYS_fsync,
            libc::SYS_fdatasync,
            libc::SYS_fallocate,
            libc::SYS_ftruncate,
            libc::SYS_fstat,
            libc::SYS_newfstatat,
            libc::SYS_statx,
        ],
    );
    // Block devices as disks: discard and write-zeroes, sizes.
    ioctls(
        r,
        &[BLKDISCARD, BLKZEROOUT, BLKGETSIZE64, BLKSSZGET, BLKPBSZGET],
    );
}

/// Block-device ioctls (`linux/fs.h`).
const BLKSSZGET: c_ulong = 0x1268;
const BLKPBSZGET: c_ulong = 0x127b;
const BLKDISCARD: c_ulong = 0x1277;
const BLKZEROOUT: c_ulong = 0x127f;
const BLKGETSIZE64: c_ulong = 0x8008_1272;

/// An iSCSI session (libiscsi): TCP to the target, its own poll loop with
/// a deadline, and a reconnect when the target drops the connection.
///
/// A reconnect resolves the portal with getaddrinfo, which first asks
/// nscd (a unix socket) and rtnetlink (which address families the host
/// has). Those sockets are allowed here so that [`refused`] can answer
/// them with EACCES on the I/O threads: the C library then does without
/// both, and no thread that moves guest data holds a netlink socket.
fn iscsi(r: &mut Rules) {
    allow_values(
        r,
        libc::SYS_socket,
        0,
        Len::Dword,
        &[libc::AF_UNIX as u64, libc::AF_NETLINK as u64],
    );
    allow_values(
        r,
        libc::SYS_socket,
        0,
        Len::Dword,
        &[libc::AF_INET as u64, libc::AF_INET6 as u64],
    );
    allow(
        r,
        &[
            libc::SYS_connect,
            libc::SYS_poll,
            libc::SYS_ppoll,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_getsockname,
            libc::SYS_getpeername,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_read,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_uname,
            libc::SYS_getuid,
        ],
    );
    // FIONREAD: how much a socket holds.
    ioctls(r, &[libc::FIONREAD]);
}

/// An NFS file (libnfs), on top of what an iSCSI session needs ([`iscsi`]:
/// TCP, its own poll loop, the resolver's side trips on a reconnect):
/// what libnfs adds on a reconnect: asking the portmapper for the MOUNT and NFS ports
/// (more connections), binding a reserved source port when run as root
/// (servers may insist on one), and its AUTH_SYS credentials (user,
/// group, host name, process ID for the first transaction ID).
///
/// Before binding a low source port libnfs asks `getservbyport` whether
/// a well-known service owns it, and the C library opens /etc/services
/// to answer: `openat` is allowed here only so that [`refused`] can
/// answer it with EACCES on the I/O threads (the port then counts as
/// free).
fn nfs(r: &mut Rules) {
    allow(r, &[libc::SYS_openat]);
    allow(
        r,
        &[
            libc::SYS_bind,
            libc::SYS_fcntl,
            libc::SYS_shutdown,
            libc::SYS_getgid,
            libc::SYS_getegid,
            libc::SYS_geteuid,
            libc::SYS_getgroups,
            libc::SYS_getpid,
        ],
    );
}

/// TAP ioctls a running VM uses: queue attach and detach as the guest
/// enables queue pairs, offloads and the vnet header as its driver
/// negotiates them.
fn tap_runtime(r: &mut Rules) {
    ioctls(
        r,
        &[
            libc::TUNSETQUEUE as c_ulong,
            libc::TUNSETOFFLOAD as c_ulong,
            libc::TUNSETVNETHDRSZ as c_ulong,
            libc::TUNGETIFF as c_ulong,
            libc::TUNGETVNETHDRSZ as c_ulong,
        ],
    );
}

/// An AF_INET datagram socket, only to name a link in interface ioctls
/// (no address is ever bound or connected through it).
fn link_control_socket(r: &mut Rules) {
    let rule = [
        Cond::new(0, Len::Dword, Op::Eq, libc::AF_INET as u64),
        Cond::new(1, Len::Dword, Op::MaskedEq(0xf), libc::SOCK_DGRAM as u64),
    ]
    .into_iter()
    .collect::<Option<Vec<_>>>()
    .and_then(Rule::new)
    .expect("a fixed rule is valid");
    add_rule(r, libc::SYS_socket, rule);
    ioctls(r, &[libc::SIOCGIFMTU, libc::SIOCGIFFLAGS]);
}

/// Opening TAPs (by name, or made for the VM) and reading or setting
/// their link's flags, address and MTU through an AF_INET control socket.
fn tap_setup(r: &mut Rules) {
    tap_runtime(r);
    ioctls(
        r,
        &[
            libc::TUNSETIFF as c_ulong,
            libc::TUNGETFEATURES as c_ulong,
            libc::TUNSETPERSIST as c_ulong,
            libc::SIOCGIFFLAGS,
            libc::SIOCSIFFLAGS,
            libc::SIOCGIFHWADDR,
            libc::SIOCGIFMTU,
            libc::SIOCSIFMTU,
            libc::SIOCGIFINDEX,
            libc::SIOCSIFADDR,
            libc::SIOCSIFNETMASK,
        ],
    );
    allow_values(r, libc::SYS_socket, 0, Len::Dword, &[libc::AF_INET as u64]);
    // Explaining why a named interface cannot be opened (what kind of
    // link it is) asks rtnetlink.
    let rule = [
        Cond::new(0, Len::Dword, Op::Eq, libc::AF_NETLINK as u64),
        Cond::new(2, Len::Dword, Op::Eq, libc::NETLINK_ROUTE as u64),
    ]
    .into_iter()
    .collect::<Option<Vec<_>>>()
    .and_then(Rule::new)
    .expect("a fixed rule is valid");
    add_rule(r, libc::SYS_socket, rule);
    allow(
        r,
        &[
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_bind,
            libc::SYS_getsockname,
        ],
    );
}

/// VM-fd ioctls made while a guest runs: doorbells and interrupt routes
/// as the guest programs BARs and MSI-X, and interrupt injection.
fn kvm_vm_runtime(r: &mut Rules) {
    ioctls(
        r,
        &[
            kvm::KVM_IOEVENTFD(),
            kvm::KVM_IRQFD(),
            kvm::KVM_SET_GSI_ROUTING(),
            kvm::KVM_SIGNAL_MSI(),
            kvm::KVM_IRQ_LINE(),
            kvm::KVM_SET_USER_MEMORY_REGION(),
        ],
    );
}

/// What building a VM takes: /dev/kvm, the VM, its vCPUs' setup.
fn kvm_build(r: &mut Rules) {
    ioctls(
        r,
        &[
            kvm::KVM_GET_API_VERSION(),
            kvm::KVM_CREATE_VM(),
            kvm::KVM_GET_MSR_INDEX_LIST(),
            kvm::KVM_CHECK_EXTENSION(),
            kvm::KVM_GET_VCPU_MMAP_SIZE(),
            kvm::KVM_GET_SUPPORTED_CPUID(),
            kvm::KVM_CREATE_VCPU(),
            kvm::KVM_SET_TSS_ADDR(),
            kvm::KVM_CREATE_IRQCHIP(),
            kvm::KVM_CREATE_PIT2(),
            kvm::KVM_REINJECT_CONTROL(),
            kvm::KVM_ENABLE_CAP(),
            kvm::KVM_GET_REGS(),
            kvm::KVM_SET_REGS(),
            kvm::KVM_GET_SREGS(),
            kvm::KVM_SET_SREGS(),
            kvm::KVM_SET_MSRS(),
            kvm::KVM_SET_FPU(),
            kvm::KVM_GET_LAPIC(),
            kvm::KVM_SET_LAPIC(),
            kvm::KVM_SET_CPUID2(),
            kvm::KVM_SET_MP_STATE(),
            kvm::KVM_SET_XCRS(),
        ],
    );
    kvm_vm_runtime(r);
}

/// Terminal ioctls: the serial console on a terminal or a pseudo-terminal.
fn tty(r: &mut Rules) {
    ioctls(
        r,
        &[
            libc::TCGETS,
            libc::TCSETS,
            libc::TCSETSW,
            libc::TCSETSF,
            libc::TIOCGWINSZ,
            libc::TIOCGPTN as c_ulong,
            libc::TIOCSPTLCK as c_ulong,
            libc::TIOCGPGRP,
            libc::FIONBIO,
        ],
    );
}

/// Opening and managing files by name: kernels, images, sockets' paths,
/// the exit status file, /proc.
fn open_files(r: &mut Rules) {
    allow(
        r,
        &[
            libc::SYS_openat,
            libc::SYS_open,
            libc::SYS_readlink,
            libc::SYS_readlinkat,
            libc::SYS_access,
            libc::SYS_faccessat,
            libc::SYS_faccessat2,
            libc::SYS_getdents64,
            libc::SYS_statfs,
            libc::SYS_fstatfs,
            libc::SYS_flock,
            libc::SYS_unlink,
            libc::SYS_unlinkat,
            libc::SYS_rename,
            libc::SYS_renameat,
            libc::SYS_renameat2,
            libc::SYS_link,
            libc::SYS_linkat,
            libc::SYS_mkdir,
            libc::SYS_mkdirat,
            libc::SYS_rmdir,
            libc::SYS_chmod,
            libc::SYS_fchmod,
            libc::SYS_fchmodat,
            libc::SYS_getcwd,
            libc::SYS_dup,
            libc::SYS_dup2,
            libc::SYS_dup3,
            libc::SYS_pipe2,
            libc::SYS_memfd_create,
            libc::SYS_eventfd2,
            libc::SYS_epoll_create1,
        ],
    );
    // Byte-range locks on images (F_OFD_*), besides the common fcntls.
    allow_values(
        r,
        libc::SYS_fcntl,
        1,
        Len::Dword,
        &[
            libc::F_OFD_GETLK as u64,
            libc::F_OFD_SETLK as u64,
            libc::F_OFD_SETLKW as u64,
            libc::F_GETLK as u64,
            libc::F_SETLK as u64,
            libc::F_ADD_SEALS as u64,
        ],
    );
    file_io(r);
}

/// Unix sockets: the API socket, console sockets (listening, or
/// connecting to a peer's), descriptors passed in with SCM_RIGHTS.
fn unix_sockets(r: &mut Rules) {
    allow_values(r, libc::SYS_socket, 0, Len::Dword, &[libc::AF_UNIX as u64]);
    allow(
        r,
        &[
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_accept4,
            libc::SYS_shutdown,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_sendmsg,
            libc::SYS_recvmsg,
            libc::SYS_poll,
            libc::SYS_ppoll,
        ],
    );
}

/// The main thread builds each VM (and builds it again after a reset),
/// serves the console's and API's sockets' creation, waits for the VM to
/// stop, and writes the exit status. It is the broadest list after the
/// launcher's, and its thread parses no guest data.
fn main_thread(r: &mut Rules) {
    open_files(r);
    unix_sockets(r);
    event_loop(r);
    kvm_build(r);
    tty(r);
    tap_setup(r);
    // No iSCSI here: the command line's LUNs are logged in to before the
    // filters go on, a client's on its API thread, and their I/O runs on
    // the disk's own threads.
    allow(
        r,
        &[
            libc::SYS_rt_sigaction,
            libc::SYS_sysinfo,
            libc::SYS_prlimit64,
            libc::SYS_getrlimit,
            libc::SYS_uname,
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_get_mempolicy,
            libc::SYS_sched_setaffinity,
            libc::SYS_getuid,
            libc::SYS_geteuid,
            libc::SYS_getgid,
            libc::SYS_getegid,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_register,
            libc::SYS_io_uring_enter,
            // Guest memory: advice on huge pages, populating, merging.
            libc::SYS_madvise,
            // `--memory-backend lock=on`.
            libc::SYS_mlock,
        ],
    );
    // Kicking vCPU threads out of KVM_RUN to stop them, and pre-faulting
    // guest memory with scoped threads (which install the narrower
    // prealloc filter).
    kick_vcpus(r);
    spawn_threads(r);
}

/// A vCPU thread runs the guest and handles its port and MMIO exits on
/// the buses. Those exits program the devices: the guest's driver
/// starting a device activates it on this thread (eventfds, an epoll, an
/// io_uring; its worker threads come from the launcher), programming
/// BARs and MSI-X registers doorbells and routes with KVM.
fn vcpu(r: &mut Rules) {
    ioctls(
        r,
        &[
            kvm::KVM_RUN(),
            // Describing a crashed guest: registers, the code at RIP.
            kvm::KVM_GET_REGS(),
            kvm::KVM_GET_SREGS(),
            kvm::KVM_TRANSLATE(),
            kvm::KVM_GET_LAPIC(),
        ],
    );
    kvm_vm_runtime(r);
    tap_runtime(r);
    // Taking its own pin (--vcpu-pin) before the guest runs: itself only.
    allow_values(r, libc::SYS_sched_setaffinity, 0, Len::Dword, &[0]);
    // virtio-net's activation reads its TAP's MTU.
    link_control_socket(r);
    event_loop(r);
    allow(
        r,
        &[
            libc::SYS_eventfd2,
            libc::SYS_epoll_create1,
            // The balloon's statistics timer, and the kind of memory
            // each region is (how pages go back).
            libc::SYS_timerfd_create,
            libc::SYS_timerfd_settime,
            libc::SYS_fstatfs,
            libc::SYS_fstat,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_register,
            libc::SYS_io_uring_enter,
            // Console output to a file or a socket client.
            libc::SYS_writev,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
        ],
    );
    // A device reset by the guest joins its worker; the API's pause
    // kicks; nothing here signals another thread.
}

/// virtio-blk's worker: parses the guest's requests and hands them to the
/// disk (io_uring, or the I/O threads); formats whose metadata it
/// updates itself (qcow2) write there too.
fn virtio_blk(r: &mut Rules) {
    event_loop(r);
    file_io(r);
    iscsi(r);
    nfs(r);
    // The I/O limits' timer (`iops=`, `bps=`) is armed here.
    allow(r, &[libc::SYS_io_uring_enter, libc::SYS_timerfd_settime]);
}

/// Disk I/O threads: reads, writes, flushes, discards on open images;
/// iSCSI LUNs through their session, NFS files through their connection.
fn disk_io(r: &mut Rules) {
    file_io(r);
    iscsi(r);
    nfs(r);
}

/// virtio-net's queue workers: frames between the guest and its TAP.
fn virtio_net(r: &mut Rules) {
    event_loop(r);
    tap_runtime(r);
    allow(r, &[libc::SYS_readv, libc::SYS_writev]);
}

/// virtio-console's worker: ports on a pseudo-terminal, a file or a
/// socket whose clients come and go.
fn virtio_console(r: &mut Rules) {
    event_loop(r);
    tty(r);
    allow(
        r,
        &[
            libc::SYS_accept4,
            libc::SYS_readv,
            libc::SYS_writev,
            libc::SYS_sendto,
            libc::SYS_recvfrom,
            libc::SYS_shutdown,
        ],
    );
}

/// The balloon's worker gives guest pages back to the host, and asks
/// for statistics on a timer.
fn virtio_balloon(r: &mut Rules) {
    event_loop(r);
    allow(
        r,
        &[
            libc::SYS_madvise,
            libc::SYS_fallocate,
            libc::SYS_timerfd_settime,
            libc::SYS_timerfd_gettime,
        ],
    );
}

/// The API's accept thread and one thread per connection: HTTP over the
/// unix socket, descriptors passed in (TAPs), and the controller's
/// actions: configuring and booting (opening images, iSCSI logins),
/// hot-plug (routes and doorbells with KVM), pausing (kicking vCPUs),
/// placement of vCPU threads.
fn api(r: &mut Rules) {
    unix_sockets(r);
    open_files(r);
    event_loop(r);
    kvm_vm_runtime(r);
    tap_setup(r);
    iscsi(r);
    nfs(r);
    // Pausing kicks the vCPUs.
    kick_vcpus(r);
    allow(
        r,
        &[
            libc::SYS_sched_setaffinity,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_register,
            libc::SYS_io_uring_enter,
            libc::SYS_sysinfo,
        ],
    );
}

/// The serial input thread: host bytes to the guest's UART, from the
/// terminal or from the clients of a listening console socket, which it
/// accepts (and hangs up on when another takes over).
fn serial_input(r: &mut Rules) {
    event_loop(r);
    tty(r);
    allow(
        r,
        &[
            libc::SYS_accept4,
            libc::SYS_shutdown,
            libc::SYS_recvfrom,
            libc::SYS_sendto,
            libc::SYS_getsockopt,
            libc::SYS_setsockopt,
        ],
    );
}

/// Threads that fault guest memory in before boot.
fn prealloc(r: &mut Rules) {
    allow_values(r, libc::SYS_madvise, 2, Len::Dword, &[MADV_POPULATE_WRITE]);
}

/// `MADV_POPULATE_WRITE` (Linux 5.14).
const MADV_POPULATE_WRITE: u64 = 23;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_allows_what_every_kind_allows() {
        let launcher = rules(ThreadKind::Launcher);
        for kind in ThreadKind::ALL {
            for (nr, kind_rules) in rules(kind) {
                let l = launcher
                    .get(&nr)
                    .unwrap_or_else(|| panic!("{kind:?}: call {nr} missing from the launcher"));
                assert!(
                    l.is_empty() || kind_rules.iter().all(|k| l.contains(k)),
                    "{kind:?}: call {nr} is narrower in the launcher"
                );
            }
        }
    }

    #[test]
    fn no_thread_but_the_spawners_may_clone_and_none_may_exec() {
        for kind in ThreadKind::ALL {
            let r = rules(kind);
            assert!(!r.contains_key(&libc::SYS_execve), "{kind:?}");
            assert!(!r.contains_key(&libc::SYS_fork), "{kind:?}");
            assert!(!r.contains_key(&libc::SYS_ptrace), "{kind:?}");
            let spawns = matches!(kind, ThreadKind::Main | ThreadKind::Launcher);
            assert_eq!(r.contains_key(&libc::SYS_clone), spawns, "{kind:?}");
            // Signals only to this process's threads; ioctls only by
            // request; sockets only of listed families.
            for nr in [libc::SYS_tgkill, libc::SYS_ioctl, libc::SYS_socket] {
                assert!(
                    r.get(&nr).is_none_or(|rules| !rules.is_empty()),
                    "{kind:?}: call {nr} is allowed whatever its arguments"
                );
            }
            for nr in [
                libc::SYS_kill,
                libc::SYS_tkill,
                libc::SYS_mount,
                libc::SYS_setuid,
            ] {
                assert!(!r.contains_key(&nr), "{kind:?}: call {nr}");
            }
        }
    }
}
