#!/bin/sh
# run.sh OUT SCENARIO[,SCENARIO...]
#
# One nested run: Vireo inside an L1 Linux under QEMU's emulator, booting L2
# Linux guests. Builds what is missing, each step cached:
#   - the static vireo (cargo, release, target x86_64-unknown-linux-gnu, so
#     it runs on L1's busybox root with no libc);
#   - Debian's cloud kernel and its modules (scripts/fetch-linux.sh) in
#     target/tmp/linux, and the busybox initramfs of tests/linux.rs
#     (scripts/make-initramfs.sh) there too;
#   - Debian's QEMU 7.2, unpacked, not installed (fetch-qemu.sh) in
#     target/nested/qemu;
#   - the L1 and L2 initramfs archives (make-roots.sh) in OUT;
# then boots L1 once with `vireo.scenarios=` and runs every scenario
# (l1-init.sh), the whole run bounded by VIREO_NESTED_TIMEOUT seconds
# (default 1500; an L1 silent for VIREO_NESTED_FREEZE seconds, default 100,
# has frozen under the emulator and is booted again, at most four boots)
# and each vireo run in L1 by VIREO_NESTED_SCENARIO_TIMEOUT
# (default 180); VIREO_NESTED_BLK_MIB (raw disk, default 256),
# VIREO_NESTED_QCOW2_MIB (default 256) and VIREO_NESTED_NET_MIB (default 100)
# size the bulk data checks; VIREO_NESTED_PIN=CPUS runs vireo in L1 under
# `taskset -c CPUS` and VIREO_NESTED_STRESS=1 makes L1's first two CPUs wake
# each other all along (both for hunting the 2-vCPU failures); VIREO_NESTED_ACCEL overrides QEMU's `-accel tcg` (for
# example `tcg,thread=single`), VIREO_NESTED_SMP L1's vCPU count (default 1:
# with 2, about one L2 boot in ten failed early, below vireo by the evidence
# so far; see docs/testing.md). Writes OUT/l1-console.log (everything L1 printed: the
# VIREO-* lines, every L2 console and vireo log), OUT/qemu-debug.log (QEMU's
# CPU state at each reset of L1 and the guest errors it saw: an L1 that
# resets ends QEMU, because of -no-reboot), OUT/qemu.rc and OUT/wall-seconds;
# a run where anything failed is also kept as OUT/failed-<epoch>.log. Exits 0 when the run happened (whatever its scenarios
# found), 77 with a `SKIP: reason` line on stderr when this host cannot run
# it, another code when building failed.
#
# Scenarios that need real tools in L1 (DEBIAN_SCENARIOS below, or every
# run with VIREO_NESTED_DEBIAN=1) also get L1's Debian root
# (make-debian-root.sh, cached in target/nested/debian) as a virtio disk
# that QEMU opens with snapshot=on; L1 chroots into it for them. When it
# cannot be built here, L1 boots without it and those scenarios report
# themselves skipped, with the reason; when building it failed, L1 boots
# without it and they fail, saying so. VIREO_NESTED_NUMA=N gives L1 N NUMA
# nodes (QEMU's -numa, L1's RAM split evenly, CPU c on node c mod N).
#
# By hand, with the consoles on the terminal as they come:
#     scripts/nested/run.sh target/nested/manual virtio-blk; less target/nested/manual/l1-console.log
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 OUT SCENARIO[,SCENARIO...]" >&2
    exit 2
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/scripts/nested"
mkdir -p "$1"
out=$(cd "$1" && pwd)
scenarios=$2

skip() {
    echo "SKIP: $*" >&2
    exit 77
}
[ "$(id -u)" = 0 ] || skip "not root: the nested run installs QEMU's libraries with apt-get"
[ "$(uname -m)" = x86_64 ] || skip "not an x86_64 host"
command -v apt-get >/dev/null 2>&1 || skip "no apt-get: Debian's QEMU and kernel come from apt"

step() {
    echo "nested: $*" >&2
}

cargo=${CARGO:-cargo}
target=x86_64-unknown-linux-gnu
step "building the static vireo"
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" "$cargo" build --release --locked \
    -q --no-default-features -p vireo --bin vireo --target $target)
vireo="$repo/target/$target/release/vireo"

linux="$repo/target/tmp/linux"
"$repo/scripts/fetch-linux.sh" "$linux" >&2
"$repo/scripts/make-initramfs.sh" "$linux" >&2
st=0
"$here/fetch-qemu.sh" "$repo/target/nested/qemu" >&2 || st=$?
[ "$st" != 77 ] || skip "cannot fetch Debian's QEMU (see above)"
[ "$st" = 0 ] || exit "$st"
"$here/make-roots.sh" "$out" "$linux" "$vireo" "$linux/initramfs.cpio.gz" >&2

# The scenarios that chroot into L1's Debian root.
DEBIAN_SCENARIOS="l1-tools net-nat pool-logical pool-netfs pool-iscsi"
want_debian=${VIREO_NESTED_DEBIAN:-}
for s in $DEBIAN_SCENARIOS; do
    case ",$scenarios," in *",$s,"*) want_debian=1 ;; esac
done
disk=
extra_cmdline=
if [ "$want_debian" = 1 ]; then
    step "building (or finding cached) L1's Debian root"
    st=0
    "$here/make-debian-root.sh" "$repo/target/nested/debian" "$linux" >&2 || st=$?
    if [ "$st" = 0 ]; then
        disk="-drive file=$repo/target/nested/debian/l1-debian.ext4,format=raw,if=virtio,snapshot=on"
        extra_cmdline=" vireo.debian=1"
    elif [ "$st" = 77 ]; then
        step "no Debian root for L1 (see above): its scenarios will be skipped"
    else
        # The other scenarios still run; these fail, saying so.
        step "building L1's Debian root failed (exit $st, see above): its scenarios will fail"
        extra_cmdline=" vireo.debian=failed-$st"
    fi
fi

mem=${VIREO_NESTED_MEM:-6G}
smp=${VIREO_NESTED_SMP:-1}
numa=
if [ -n "${VIREO_NESTED_NUMA:-}" ]; then
    nodes=$VIREO_NESTED_NUMA
    case "$mem" in
    *G) mem_mib=$((${mem%G} * 1024)) ;;
    *M) mem_mib=${mem%M} ;;
    *)
        echo "run.sh: VIREO_NESTED_MEM must end in G or M with VIREO_NESTED_NUMA, not '$mem'" >&2
        exit 2
        ;;
    esac
    case "$nodes" in
    '' | *[!0-9]* | 0 | 1)
        echo "run.sh: VIREO_NESTED_NUMA must be a node count of 2 or more, not '$nodes'" >&2
        exit 2
        ;;
    esac
    i=0
    while [ "$i" -lt "$nodes" ]; do
        size=$((mem_mib / nodes))
        [ "$i" != $((nodes - 1)) ] || size=$((mem_mib - size * (nodes - 1)))
        numa="$numa -object memory-backend-ram,id=node$i,size=${size}M -numa node,nodeid=$i,memdev=node$i"
        c=$i
        while [ "$c" -lt "$smp" ]; do
            numa="$numa,cpus=$c"
            c=$((c + nodes))
        done
        i=$((i + 1))
    done
    extra_cmdline="$extra_cmdline vireo.numa=$nodes"
fi

q="$repo/target/nested/qemu/root/usr"
timeout_s=${VIREO_NESTED_TIMEOUT:-1500}
per_run=${VIREO_NESTED_SCENARIO_TIMEOUT:-180}
blk_mib=${VIREO_NESTED_BLK_MIB:-256}
qcow2_mib=${VIREO_NESTED_QCOW2_MIB:-256}
net_mib=${VIREO_NESTED_NET_MIB:-100}
# L1 prints a heartbeat every 30 s: 100 s of silence is three missed.
freeze_s=${VIREO_NESTED_FREEZE:-100}
start=$(date +%s)
deadline=$((start + timeout_s))
rc=0
: >"$out/l1-console.log"
rm -f "$out"/l1-console.*.log

# boot_l1 SCENARIOS LOG: one L1 boot running SCENARIOS, its console in LOG;
# sets $rc (QEMU's status, 124 at the run's deadline) and $froze (1 when
# L1 printed nothing for $freeze_s seconds and QEMU was stopped: L1 prints
# a heartbeat every 30 s, so silence means the emulator stopped running
# it).
# -no-reboot and panic=-1: a panicking L1 ends QEMU instead of looping.
# L2s with more vCPUs than L1 has are fine: L1's KVM time-slices them.
# 6 GiB because vireo refuses guest RAM beyond its host's RAM and swap, and
# boot-4cpu-5g gives L2 5 GiB; QEMU only backs what L1 touches.
boot_l1() {
    QEMU_MODULE_DIR="$q/lib/x86_64-linux-gnu/qemu" \
        "$q/bin/qemu-system-x86_64" -L "$q/share/qemu" -L "$q/share/seabios" \
        -accel "${VIREO_NESTED_ACCEL:-tcg}" -cpu max -smp "$smp" -m "$mem" $numa $disk -display none -serial stdio -monitor "unix:$out/hmp.sock,server=on,wait=off" \
        -no-reboot -nic none -d cpu_reset,guest_errors -D "$out/qemu-debug.log" \
        -kernel "$linux/vmlinuz" -initrd "$out/l1.cpio" \
        -append "console=ttyS0 panic=-1 nokaslr vireo.scenarios=$1 vireo.timeout=$per_run vireo.blk_mib=$blk_mib vireo.qcow2_mib=$qcow2_mib vireo.net_mib=$net_mib${VIREO_NESTED_PIN:+ vireo.pin=$VIREO_NESTED_PIN}${VIREO_NESTED_STRESS:+ vireo.stress=$VIREO_NESTED_STRESS}$extra_cmdline" \
        </dev/null >"$2" 2>&1 &
    qpid=$!
    froze=
    quiet=0
    last=-1
    while kill -0 "$qpid" 2>/dev/null; do
        sleep 5
        size=$(stat -c %s "$2" 2>/dev/null || echo 0)
        if [ "$size" = "$last" ]; then
            quiet=$((quiet + 5))
        else
            quiet=0
            last=$size
        fi
        if [ "$quiet" -ge "$freeze_s" ]; then
            froze=1
            freeze_report "$qpid" >"$out/freeze-report" 2>&1
            kill "$qpid" 2>/dev/null
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            kill "$qpid" 2>/dev/null
            break
        fi
    done
    rc=0
    wait "$qpid" || rc=$?
    # After QEMU is gone: its stdout writes at its own offset in LOG.
    if [ -n "$froze" ]; then
        cat "$out/freeze-report" >>"$2"
    fi
    if [ "$(date +%s)" -ge "$deadline" ] && [ -z "$froze" ]; then
        rc=124
    fi
}

# freeze_report PID: what QEMU was doing when L1 went silent, printed
# as FREEZE| lines into L1's console log (so the test output and the kept
# failed-*.log carry it): each QEMU thread's CPU time over 5 s, its state
# and kernel stack (a TCG thread spinning at 100 % means the emulated CPU
# loops; all threads asleep means QEMU waits on itself), then L1's
# registers and the code at its RIP from QEMU's monitor, twice, 2 s
# apart. L1 boots with nokaslr, so an L1 kernel RIP (0xffffffff81...)
# names the same symbol in every run (the kernel package's System.map);
# while L1 runs an L2, QEMU shows L2's registers (a randomized RIP).
freeze_report() {
    {
        echo "QEMU pid $1, L1 silent for ${freeze_s}s"
        for t in /proc/$1/task/*; do
            echo "$(basename "$t") $(sed 's/.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f12,13)"
        done >"$out/freeze.cpu0"
        sleep 5
        for t in /proc/$1/task/*; do
            tid=$(basename "$t")
            # After the name (which may hold spaces): state, then utime and
            # stime as fields 12 and 13.
            set -- $(sed 's/.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f1,12,13) x 0 0
            before=$(sed -n "s/^$tid //p" "$out/freeze.cpu0")
            b_u=${before%% *}
            b_s=${before##* }
            echo "thread $tid $(cat "$t/comm" 2>/dev/null) state $1 cpu ticks in 5 s: user $(($2 - ${b_u:-0})) sys $(($3 - ${b_s:-0}))"
            sed 's/^/    /' "$t/stack" 2>/dev/null | head -n 12
        done
        python3 - "$out/hmp.sock" <<'PY' 2>&1
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
def ask(command):
    s.sendall(command.encode() + b"\n")
    time.sleep(0.5)
    text = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            text += chunk
            if text.rstrip().endswith(b"(qemu)"):
                break
    except socket.timeout:
        text += b"\n(no more from the monitor within 3 s)"
    # The monitor echoes each command with line-editing escapes; the
    # vector registers say nothing about a freeze.
    lines = text.decode(errors="replace").splitlines()
    keep = [l for l in lines if "\x1b" not in l and not l.startswith(("XMM", "YMM", "(qemu)"))]
    return "\n".join(keep)
ask("")
for round in range(2):
    for command in ("info registers", "x/12i $pc", "info pic"):
        print("(qemu) " + command)
        print(ask(command))
    time.sleep(2)
PY
    } | sed 's/\r$//; s/^/FREEZE| /'
}

# An L1 that froze is booted again for the scenario it froze in (twice at
# most: CI saw one scenario freeze L1 two boots in a row) and those after
# it; the console says so (VIREO-L1-FROZE), and the
# harness counts only a scenario's last attempt.
todo=$scenarios
retried=,
retried_twice=,
boots=0
while [ -n "$todo" ]; do
    boots=$((boots + 1))
    step "booting L1 for: $todo (boot $boots, $((deadline - $(date +%s)))s left of ${timeout_s}s)"
    part="$out/l1-console.$boots.log"
    boot_l1 "$todo" "$part"
    cat "$part" >>"$out/l1-console.log"
    [ -n "$froze" ] || break
    # The scenario that began and did not end, and those after it.
    at=$(sed -n 's/\r$//; s/^VIREO-SCENARIO-BEGIN //p' "$part" | tail -n 1)
    if [ -n "$at" ] && grep -q "^VIREO-SCENARIO-END $at " "$part"; then
        at=
    fi
    rest=
    seen=
    [ -n "$at" ] || seen=1
    for s in $(echo "$todo" | tr ',' ' '); do
        if [ "$s" = "$at" ]; then
            seen=1
            case "$retried_twice" in
            *",$s,"*) continue ;;
            esac
            case "$retried" in
            *",$s,"*) retried_twice="$retried_twice$s," ;;
            *) retried="$retried$s," ;;
            esac
        fi
        [ -n "$seen" ] || continue
        grep -q "^VIREO-SCENARIO-END $s " "$part" && continue
        rest="$rest${rest:+,}$s"
    done
    echo "VIREO-L1-FROZE ${at:-(between scenarios)}: L1 printed nothing for ${freeze_s}s under QEMU's emulator (boot $boots stopped); booting L1 again for: ${rest:-nothing}" |
        tee -a "$out/l1-console.log" >&2
    if [ "$boots" -ge 4 ] || [ "$(date +%s)" -ge "$deadline" ]; then
        break
    fi
    todo=$rest
done
end=$(date +%s)
# A failed or unfinished run's console is kept beside the next ones: a
# failure here is a bug to look into, and reruns must not erase it.
if [ "$rc" != 0 ] || ! grep -q '^VIREO-L1-DONE' "$out/l1-console.log" ||
    grep -q '^VIREO-L1-FROZE' "$out/l1-console.log" ||
    grep -q '^VIREO-RESULT [^ ]* [^ ]* fail' "$out/l1-console.log"; then
    cp "$out/l1-console.log" "$out/failed-$start.log"
    cp "$out/qemu-debug.log" "$out/failed-$start.qemu-debug.log" 2>/dev/null || true
    step "some scenario failed: console kept in $out/failed-$start.log"
fi
echo "$rc" >"$out/qemu.rc"
echo $((end - start)) >"$out/wall-seconds"
step "L1 ended with rc=$rc after $((end - start))s; console in $out/l1-console.log"
