//! The rule model and the classic-BPF programs made from it.
//!
//! A filter dispatches on the system call's number with a balanced binary
//! search (`JGE` at each node) rather than a linear chain of `JEQ`s: the
//! kernel runs the program on every call of every thread under it, and
//! since Linux 5.11 also once per system call number when the filter is
//! attached (`seccomp_cache_prepare` emulates it to find the calls it
//! allows whatever their arguments). With a chain both cost the chain's
//! length per call number (~1000 instructions for the launcher, ~0.4 ms to
//! attach here); with the search, its depth.
//!
//! Attaching a filter also converts and JIT-compiles it, at a cost that
//! grows with its length, so a search range that only returns has no
//! instruction of its own: its parent jumps to a `RET` shared by its
//! block, a pool placed after at most [`POOL_SPAN`] instructions (the
//! cBPF conditional offsets are 8-bit); jumps over longer code are `JA`s,
//! whose offset is 32-bit. That made the programs 28 % shorter (main 379
//! to 276 instructions, vCPU 212 to 151).

use std::collections::BTreeMap;

use libc::sock_filter;

/// How much of a 64-bit argument a [`Cond`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ArgLen {
    /// The low 32 bits only (the kernel reads the argument as an `int`).
    Dword,
    /// All 64 bits.
    Qword,
}

/// How a [`Cond`] compares its argument with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cmp {
    /// `arg == value`.
    Eq,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// One test of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cond {
    arg: u8,
    len: ArgLen,
    cmp: Cmp,
    value: u64,
}

impl Cond {
    /// Argument `arg` (0 to 5) compared as `len` by `cmp` with `value`.
    /// Returns `None` for an argument past the sixth.
    pub(crate) fn new(arg: u8, len: ArgLen, cmp: Cmp, value: u64) -> Option<Self> {
        (arg < 6).then_some(Self {
            arg,
            len,
            cmp,
            value,
        })
    }

    /// Whether the arguments `args` pass this test.
    #[cfg(test)]
    pub(crate) fn holds(&self, args: &[u64; 6]) -> bool {
        let width = match self.len {
            ArgLen::Dword => u64::from(u32::MAX),
            ArgLen::Qword => u64::MAX,
        };
        let arg = args[usize::from(self.arg)] & width;
        match self.cmp {
            Cmp::Eq => arg == self.value & width,
            Cmp::MaskedEq(mask) => arg & mask == self.value & width,
        }
    }
}

/// Conditions that must all hold; an empty rule is never made (an empty
/// list of rules allows a call whatever its arguments).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rule(Vec<Cond>);

impl Rule {
    /// A rule of `conds`; `None` if there are none.
    pub(crate) fn new(conds: Vec<Cond>) -> Option<Self> {
        (!conds.is_empty()).then_some(Self(conds))
    }

    /// Whether the arguments `args` pass every condition.
    #[cfg(test)]
    pub(crate) fn holds(&self, args: &[u64; 6]) -> bool {
        self.0.iter().all(|c| c.holds(args))
    }

    /// The conditions.
    #[cfg(test)]
    pub(crate) fn conds(&self) -> &[Cond] {
        &self.0
    }

    /// The same rule in seccompiler's terms.
    #[cfg(test)]
    pub(crate) fn to_seccompiler(&self) -> seccompiler::SeccompRule {
        use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition};
        let conds = self
            .0
            .iter()
            .map(|c| {
                let len = match c.len {
                    ArgLen::Dword => SeccompCmpArgLen::Dword,
                    ArgLen::Qword => SeccompCmpArgLen::Qword,
                };
                let op = match c.cmp {
                    Cmp::Eq => SeccompCmpOp::Eq,
                    Cmp::MaskedEq(m) => SeccompCmpOp::MaskedEq(m),
                };
                SeccompCondition::new(c.arg, len, op, c.value).unwrap()
            })
            .collect();
        seccompiler::SeccompRule::new(conds).unwrap()
    }
}

impl Cond {
    /// The argument and the values that pass or nearly pass this test.
    #[cfg(test)]
    pub(crate) fn samples(&self) -> (usize, Vec<u64>) {
        let mut v = vec![
            self.value,
            self.value ^ 1,
            self.value | 0xffff_ffff_0000_0000,
        ];
        if let Cmp::MaskedEq(mask) = self.cmp {
            v.extend([self.value | !mask, (self.value | !mask) ^ mask]);
        }
        v.push(self.value.wrapping_add(0x1_0000_0000));
        (usize::from(self.arg), v)
    }
}

/// System call number to the rules that allow it, any one of them
/// sufficing; an empty list allows the call whatever its arguments.
pub(crate) type Rules = BTreeMap<i64, Vec<Rule>>;

/// What a filter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The call goes ahead.
    Allow,
    /// SIGSYS to the thread.
    Trap,
    /// The call goes ahead and the kernel logs it.
    Log,
    /// The call fails with this errno.
    Errno(u16),
    /// The whole process is killed.
    KillProcess,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Self::Allow => libc::SECCOMP_RET_ALLOW,
            Self::Trap => libc::SECCOMP_RET_TRAP,
            Self::Log => libc::SECCOMP_RET_LOG,
            Self::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Self::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        }
    }
}

/// Why a program could not be made (a bug in the lists, never input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BuildError {
    /// A system call number outside 0..2^32.
    #[error("system call number {0} is out of range")]
    Number(i64),
    /// Past the kernel's limit of 4096 instructions.
    #[error("the program has {0} instructions, more than the kernel takes")]
    TooLong(usize),
    /// A rule too long for an 8-bit jump over it.
    #[error("a rule of system call {0} is too long")]
    RuleTooLong(i64),
}

/// The most instructions the kernel takes in a filter (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

// The cBPF encoding (linux/bpf_common.h): BPF_LD | BPF_W | BPF_ABS, ...
pub(crate) const LD_W_ABS: u16 = 0x20;
pub(crate) const ALU_AND_K: u16 = 0x04 | 0x50;
pub(crate) const JMP_JA: u16 = 0x05;
pub(crate) const JMP_JEQ_K: u16 = 0x05 | 0x10;
pub(crate) const JMP_JGE_K: u16 = 0x05 | 0x30;
pub(crate) const RET_K: u16 = 0x06;

/// `struct seccomp_data`'s offsets.
const NR: u32 = 0;
const ARCH: u32 = 4;
fn arg_low(arg: u8) -> u32 {
    16 + 8 * u32::from(arg)
}
fn arg_high(arg: u8) -> u32 {
    arg_low(arg) + 4
}

/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// Groups of argument values up to this size are compared one by one;
/// larger ones are searched.
const LINEAR_VALUES: usize = 8;

/// The high and low 32 bits of `v`.
fn split(v: u64) -> (u32, u32) {
    let b = v.to_le_bytes();
    (
        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    )
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// What a range of system call numbers leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf<'a> {
    Ret(u32),
    Args(i64, &'a [Rule]),
}

/// The program: calls in `rules` get `on_match` (when their arguments
/// pass), those in `fixed` their own action whatever their arguments (it
/// takes precedence over `rules`), every other call `on_mismatch`; a call
/// of another architecture kills the process.
pub(crate) fn program(
    rules: &Rules,
    fixed: &[(i64, Action)],
    on_match: Action,
    on_mismatch: Action,
) -> Result<Vec<sock_filter>, BuildError> {
    let mut leaves: BTreeMap<u32, Leaf<'_>> = BTreeMap::new();
    let number = |nr: i64| u32::try_from(nr).map_err(|_| BuildError::Number(nr));
    for (&nr, list) in rules {
        let leaf = if list.is_empty() {
            Leaf::Ret(on_match.ret())
        } else {
            Leaf::Args(nr, list)
        };
        leaves.insert(number(nr)?, leaf);
    }
    for &(nr, action) in fixed {
        leaves.insert(number(nr)?, Leaf::Ret(action.ret()));
    }
    // [start, next start) -> leaf, covering every u32; neighbours that
    // answer the same merge into one range.
    let mismatch = Leaf::Ret(on_mismatch.ret());
    let mut ranges: Vec<(u32, Leaf<'_>)> = vec![(0, mismatch)];
    fn push<'a>(ranges: &mut Vec<(u32, Leaf<'a>)>, start: u32, leaf: Leaf<'a>) {
        match ranges.last_mut() {
            Some(last) if last.1 == leaf && matches!(leaf, Leaf::Ret(_)) => {}
            Some(last) if last.0 == start => last.1 = leaf,
            _ => ranges.push((start, leaf)),
        }
    }
    for (&nr, &leaf) in &leaves {
        push(&mut ranges, nr, leaf);
        if let Some(next) = nr.checked_add(1) {
            if !leaves.contains_key(&next) {
                push(&mut ranges, next, mismatch);
            }
        }
    }
    let mut out = vec![
        stmt(LD_W_ABS, ARCH),
        jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(RET_K, Action::KillProcess.ret()),
        stmt(LD_W_ABS, NR),
    ];
    let tree = search(&ranges, &mut |out, nr, list| {
        arguments(out, nr, list, on_match.ret(), on_mismatch.ret())
    })?;
    match tree {
        Subtree::Ret(k) => out.push(stmt(RET_K, k)),
        Subtree::Code(block) => out.extend(block.flush()?),
    }
    if out.len() > MAX_INSNS {
        return Err(BuildError::TooLong(out.len()));
    }
    Ok(out)
}

/// A block of the call-number search whose returns are not all placed:
/// `refs` are the conditional jumps (index, whether `jt`) that go to a
/// shared `RET k` to be placed after the block (its pool).
#[derive(Default)]
struct Block {
    code: Vec<sock_filter>,
    refs: Vec<(usize, bool, u32)>,
}

/// Emits the argument checks of a call with rules (number, rules).
type ArgsCode<'a> = dyn FnMut(&mut Vec<sock_filter>, i64, &[Rule]) -> Result<(), BuildError> + 'a;

/// A subtree of the search: a return of its own, or code.
enum Subtree {
    Ret(u32),
    Code(Block),
}

/// Blocks longer than this get their pool placed at their end, so that
/// every jump to a pool stays within the 255 instructions a conditional
/// jump reaches (a pool holds a few distinct returns).
const POOL_SPAN: usize = 240;

impl Block {
    /// Place the pool: one `RET k` per distinct value the block's jumps
    /// go to, after its code (which ends in returns, so nothing falls
    /// into the pool).
    fn flush(mut self) -> Result<Vec<sock_filter>, BuildError> {
        let mut pool: Vec<u32> = self.refs.iter().map(|r| r.2).collect();
        pool.sort_unstable();
        pool.dedup();
        let base = self.code.len();
        for &k in &pool {
            self.code.push(stmt(RET_K, k));
        }
        for (at, jt, k) in self.refs {
            let slot = base + pool.iter().position(|&p| p == k).unwrap_or_default();
            let offset =
                u8::try_from(slot - at - 1).map_err(|_| BuildError::TooLong(self.code.len()))?;
            if jt {
                self.code[at].jt = offset;
            } else {
                self.code[at].jf = offset;
            }
        }
        Ok(self.code)
    }

    fn len(&self) -> usize {
        self.code.len()
    }

    /// Append `other`, its pending jumps with it.
    fn extend(&mut self, other: Block) {
        let shift = self.code.len();
        self.code.extend(other.code);
        self.refs.extend(
            other
                .refs
                .into_iter()
                .map(|(at, jt, k)| (at + shift, jt, k)),
        );
    }

    /// A block with every jump placed.
    fn placed(code: Vec<sock_filter>) -> Self {
        Self {
            code,
            refs: Vec::new(),
        }
    }
}

/// Binary search over `ranges` (sorted starts, the first 0) on the
/// accumulator, each range ending in its leaf's code. A range that only
/// returns costs no instruction of its own: its parent's `JGE` jumps to
/// a return shared with the other ranges of its block (the kernel's cost
/// of attaching a filter grows with its length; about two in five
/// instructions were such returns).
fn search(ranges: &[(u32, Leaf<'_>)], leaf_code: &mut ArgsCode<'_>) -> Result<Subtree, BuildError> {
    match ranges {
        [] => Ok(Subtree::Code(Block::default())),
        [(_, Leaf::Ret(k))] => Ok(Subtree::Ret(*k)),
        [(_, Leaf::Args(nr, rules))] => {
            let mut code = Vec::new();
            leaf_code(&mut code, *nr, rules)?;
            Ok(Subtree::Code(Block::placed(code)))
        }
        _ => {
            let mid = ranges.len() / 2;
            let pivot = ranges[mid].0;
            let lower = search(&ranges[..mid], leaf_code)?;
            let upper = search(&ranges[mid..], leaf_code)?;
            let mut block = Block::default();
            match (lower, upper) {
                (Subtree::Ret(a), Subtree::Ret(b)) => {
                    block.code.push(jump(JMP_JGE_K, pivot, 0, 0));
                    block.refs.extend([(0, true, b), (0, false, a)]);
                }
                (Subtree::Ret(a), Subtree::Code(upper)) => {
                    block.code.push(jump(JMP_JGE_K, pivot, 0, 0));
                    block.refs.push((0, false, a));
                    block.extend(upper);
                }
                (Subtree::Code(lower), Subtree::Ret(b)) => {
                    block.code.push(jump(JMP_JGE_K, pivot, 0, 0));
                    block.refs.push((0, true, b));
                    block.extend(lower);
                }
                (Subtree::Code(lower), Subtree::Code(upper)) => {
                    let big = lower.len() + upper.len() > POOL_SPAN;
                    let (lower, upper) = if big {
                        (Block::placed(lower.flush()?), Block::placed(upper.flush()?))
                    } else {
                        (lower, upper)
                    };
                    let mut code = Vec::new();
                    split_at(&mut code, pivot, Vec::new(), lower.len());
                    block.extend(Block::placed(code));
                    block.extend(lower);
                    block.extend(upper);
                }
            }
            if block.len() > POOL_SPAN {
                block = Block::placed(block.flush()?);
            }
            Ok(Subtree::Code(block))
        }
    }
}

/// `A >= pivot`: over the `over` instructions of the code for below the
/// pivot (`lower`, appended here; empty when the caller places it) to
/// what follows. The kernel's install cost grows with the program's
/// length, so the jump is the `JGE`'s own where it reaches (up to 255
/// instructions) and a `JA` only where it does not.
fn split_at(out: &mut Vec<sock_filter>, pivot: u32, lower: Vec<sock_filter>, over: usize) {
    match u8::try_from(over) {
        Ok(over) => out.push(jump(JMP_JGE_K, pivot, over, 0)),
        Err(_) => {
            out.push(jump(JMP_JGE_K, pivot, 0, 1));
            // `lower` is within the 4096 instructions a program can have.
            out.push(stmt(JMP_JA, u32::try_from(over).unwrap_or(u32::MAX)));
        }
    }
    out.extend(lower);
}

/// The argument checks of call `nr`: `on_match` if any rule holds, else
/// `on_mismatch`. The accumulator is free: every path ends in a return.
fn arguments(
    out: &mut Vec<sock_filter>,
    nr: i64,
    rules: &[Rule],
    on_match: u32,
    on_mismatch: u32,
) -> Result<(), BuildError> {
    // The common shape (ioctl requests, fcntl commands, socket families):
    // one argument, one of many values.
    let first = rules[0].0[0];
    let single_values = rules.iter().all(|r| {
        matches!(r.0[..], [c] if c.arg == first.arg && c.len == ArgLen::Dword && c.cmp == Cmp::Eq)
    });
    if single_values {
        let mut values: Vec<u32> = rules.iter().map(|r| split(r.0[0].value).1).collect();
        values.sort_unstable();
        values.dedup();
        out.push(stmt(LD_W_ABS, arg_low(first.arg)));
        return one_of(out, &values, on_match, on_mismatch);
    }
    let too_long = || BuildError::RuleTooLong(nr);
    for rule in rules {
        let mut fails = Vec::new();
        for c in &rule.0 {
            let (mask, value) = match c.cmp {
                Cmp::Eq => (None, c.value),
                Cmp::MaskedEq(mask) => (Some(mask), c.value),
            };
            let (mask_high, mask_low) = split(mask.unwrap_or(u64::MAX));
            let (value_high, value_low) = split(value);
            let mut halves = vec![(arg_low(c.arg), mask_low, value_low)];
            if c.len == ArgLen::Qword {
                halves.insert(0, (arg_high(c.arg), mask_high, value_high));
            }
            for (offset, mask_half, value_half) in halves {
                out.push(stmt(LD_W_ABS, offset));
                if mask.is_some() {
                    out.push(stmt(ALU_AND_K, mask_half));
                }
                fails.push(out.len());
                out.push(jump(JMP_JEQ_K, value_half, 0, 0));
            }
        }
        out.push(stmt(RET_K, on_match));
        let next = out.len();
        for f in fails {
            out[f].jf = u8::try_from(next - f - 1).map_err(|_| too_long())?;
        }
    }
    out.push(stmt(RET_K, on_mismatch));
    Ok(())
}

/// `on_match` if the accumulator is one of `values` (sorted, distinct),
/// else `on_mismatch`.
fn one_of(
    out: &mut Vec<sock_filter>,
    values: &[u32],
    on_match: u32,
    on_mismatch: u32,
) -> Result<(), BuildError> {
    if values.len() <= LINEAR_VALUES {
        // JEQ v1..vn (each to the match return), the mismatch, the match.
        let n = values.len();
        for (i, &v) in values.iter().enumerate() {
            let to_match = u8::try_from(n - i).map_err(|_| BuildError::TooLong(n))?;
            out.push(jump(JMP_JEQ_K, v, to_match, 0));
        }
        out.push(stmt(RET_K, on_mismatch));
        out.push(stmt(RET_K, on_match));
        return Ok(());
    }
    let mid = values.len() / 2;
    let mut lower = Vec::new();
    one_of(&mut lower, &values[..mid], on_match, on_mismatch)?;
    let over = lower.len();
    split_at(out, values[mid], lower, over);
    one_of(out, &values[mid..], on_match, on_mismatch)
}

/// Install `program` on the calling thread, with `flags` for seccomp(2).
pub(crate) fn install(program: &[sock_filter], flags: libc::c_ulong) -> std::io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fprog` points at `program`, which outlives the call; the
    // kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod interp {
    //! A classic-BPF interpreter for the instructions [`super::program`]
    //! emits, checking each jump stays inside the program.

    use super::*;

    /// Run `prog` on a call `nr` of architecture `arch` with `args`:
    /// the value returned, or why the program is broken.
    pub(crate) fn run(
        prog: &[sock_filter],
        arch: u32,
        nr: u32,
        args: &[u64; 6],
    ) -> Result<u32, String> {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        let mut a: u32 = 0;
        let mut pc = 0usize;
        for _ in 0..prog.len() {
            let insn = prog.get(pc).ok_or(format!("pc {pc} past the end"))?;
            let next = pc + 1;
            pc = match insn.code {
                LD_W_ABS => {
                    let k = insn.k as usize;
                    if k % 4 != 0 || k + 4 > data.len() {
                        return Err(format!("load at {k}"));
                    }
                    a = u32::from_le_bytes([data[k], data[k + 1], data[k + 2], data[k + 3]]);
                    next
                }
                ALU_AND_K => {
                    a &= insn.k;
                    next
                }
                JMP_JA => next + insn.k as usize,
                JMP_JEQ_K | JMP_JGE_K => {
                    let taken = if insn.code == JMP_JEQ_K {
                        a == insn.k
                    } else {
                        a >= insn.k
                    };
                    next + usize::from(if taken { insn.jt } else { insn.jf })
                }
                RET_K => return Ok(insn.k),
                code => return Err(format!("unknown instruction {code:#x} at {pc}")),
            };
            if pc >= prog.len() {
                return Err(format!("jump past the end to {pc}"));
            }
        }
        Err("no return (a backward jump?)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::interp::run;
    use super::*;

    const X86_64: u32 = AUDIT_ARCH_X86_64;

    fn cond(arg: u8, len: ArgLen, cmp: Cmp, value: u64) -> Cond {
        Cond::new(arg, len, cmp, value).unwrap()
    }

    #[test]
    fn another_architecture_kills_and_unknown_calls_mismatch() {
        let rules = Rules::from([(1, Vec::new())]);
        let p = program(&rules, &[], Action::Allow, Action::Trap).unwrap();
        assert_eq!(
            run(&p, 0x4000_0003, 1, &[0; 6]),
            Ok(libc::SECCOMP_RET_KILL_PROCESS)
        );
        assert_eq!(run(&p, X86_64, 1, &[0; 6]), Ok(libc::SECCOMP_RET_ALLOW));
        for nr in [0, 2, 0x4000_0001, u32::MAX] {
            assert_eq!(run(&p, X86_64, nr, &[0; 6]), Ok(libc::SECCOMP_RET_TRAP));
        }
    }

    #[test]
    fn every_number_gets_its_answer() {
        // Runs, gaps, the top number, fixed answers over rules; enough
        // ranges that some jumps need a `JA`.
        let mut rules = Rules::new();
        for nr in (0..1500).filter(|n| n % 3 != 1).chain([4_294_967_295]) {
            rules.insert(nr, Vec::new());
        }
        let p = program(
            &rules,
            &[(6, Action::Errno(38)), (7, Action::Errno(38))],
            Action::Allow,
            Action::Log,
        )
        .unwrap();
        assert!(p.iter().any(|i| i.code == JMP_JA), "no long jump made");
        for nr in (0..1600).chain([u32::MAX - 1, u32::MAX]) {
            let want = match nr {
                6 | 7 => libc::SECCOMP_RET_ERRNO | 38,
                n if (n < 1500 && n % 3 != 1) || n == u32::MAX => libc::SECCOMP_RET_ALLOW,
                _ => libc::SECCOMP_RET_LOG,
            };
            assert_eq!(run(&p, X86_64, nr, &[0; 6]), Ok(want), "{nr}");
        }
    }

    #[test]
    fn arguments_are_compared_as_told() {
        let rule = |c: Vec<Cond>| Rule::new(c).unwrap();
        let mut rules = Rules::new();
        // Many values of one argument: searched.
        rules.insert(
            16,
            (0..40u64)
                .map(|v| rule(vec![cond(1, ArgLen::Dword, Cmp::Eq, v * 7 + 0xae00)]))
                .collect(),
        );
        rules.insert(
            9,
            vec![rule(vec![cond(2, ArgLen::Dword, Cmp::MaskedEq(4), 0)])],
        );
        rules.insert(
            56,
            vec![rule(vec![cond(
                0,
                ArgLen::Qword,
                Cmp::MaskedEq(0x1_0001_0000),
                0x1_0000_0000,
            )])],
        );
        rules.insert(
            234,
            vec![
                rule(vec![
                    cond(0, ArgLen::Dword, Cmp::Eq, 77),
                    cond(2, ArgLen::Dword, Cmp::Eq, 6),
                ]),
                rule(vec![cond(2, ArgLen::Qword, Cmp::Eq, 0xffff_ffff_0000_0001)]),
            ],
        );
        let p = program(&rules, &[], Action::Allow, Action::Trap).unwrap();
        let mut samples: Vec<[u64; 6]> = vec![[0; 6], [u64::MAX; 6]];
        for v in (0xadf0..0xaf40).chain([4, 5, 6, 77, 0x1_0000_0000, 0x1_0001_0000]) {
            for arg in 0..6 {
                let mut a = [0u64; 6];
                a[arg] = v;
                samples.push(a);
                a[arg] = v | 0xdead_0000_0000_0000;
                samples.push(a);
            }
        }
        samples.push([77, 0, 6, 0, 0, 0]);
        samples.push([77, 0, 0xffff_ffff_0000_0006, 0, 0, 0]);
        samples.push([77, 0, 0xffff_ffff_0000_0001, 0, 0, 0]);
        samples.push([0, 0, 0xffff_fffe_0000_0001, 0, 0, 0]);
        for nr in 0..300u32 {
            for args in &samples {
                let allowed = rules
                    .get(&i64::from(nr))
                    .is_some_and(|r| r.is_empty() || r.iter().any(|r| r.holds(args)));
                let want = if allowed {
                    libc::SECCOMP_RET_ALLOW
                } else {
                    libc::SECCOMP_RET_TRAP
                };
                assert_eq!(run(&p, X86_64, nr, args), Ok(want), "{nr} {args:x?}");
            }
        }
    }
}
