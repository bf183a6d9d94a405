#!/bin/busybox sh
# /init of the L1 guest: Debian's kernel under QEMU's emulator, with AMD SVM.
#
# Loads kvm-amd, then for each scenario in `vireo.scenarios=a,b,c` (kernel
# command line) runs the static vireo on an L2 Linux guest and prints, on
# this console (QEMU's stdout, read by crates/vireo/tests/nested.rs):
#     VIREO-SCENARIO-BEGIN <scenario>
#     L2| <each line of the L2 serial console, as it comes>
#     LOG| <each line of vireo's stderr, at -vv>
#     HANG| <where vireo's threads and the guest were, if it hit the timeout>
#     VIREO-RESULT <scenario> <check> ok|fail <evidence>   (from L2 and from here)
#     VIREO-SKIP <scenario> <why it cannot run in this L1>
#     VIREO-SCENARIO-END <scenario> rc=<vireo's exit code>
# and powers off. Every vireo run is bounded by `vireo.timeout=` seconds
# (default 180); a run that hits it ends with rc=124, HANG| lines and a
# `timeout` check that fails: a hang is a bug to look at, so the evidence is
# kept.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp
ip link set lo up

arg() {
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1"=*) echo "${w#*=}"; return ;; esac
    done
}

l1_start=$(cut -d' ' -f1 /proc/uptime)
echo "vireo-l1: init reached at ${l1_start}s"
for m in irqbypass kvm kvm-amd tun; do
    insmod "/modules/$m.ko" || echo "vireo-l1: insmod $m failed"
done
mdev -s 2>/dev/null
# The kvm_exit tracepoint for hang reports, enabled now with the ring buffer
# off: enabling it while an L2 runs patches L1's kernel text, and that made
# the running L2 triple-fault in 2 of 3 tries here (docs/testing.md).
tr=/sys/kernel/tracing
mount -t tracefs tracefs $tr 2>/dev/null
echo 0 >$tr/tracing_on 2>/dev/null
echo 1 >$tr/events/kvm/kvm_exit/enable 2>/dev/null
# L2's Linux probes the PMU by writing a counter MSR (check_hw_exists);
# L1's KVM has no PMU to give it (QEMU's emulated CPU has none) and answers
# with a #GP ("Unhandled WRMSR(0xc0010007)" in L1's log, every L2 boot).
# Two of the early-boot L2 triple faults seen in full runs came right after
# that line; ignoring unhandled MSRs, as many KVM hosts are set up to,
# takes that #GP out of every boot. Other such triple faults came earlier
# in boot (numa-guest-4 while Linux read the SRAT), so this is at most one
# trigger of a flake whose cause is not known (docs/testing.md).
echo Y >/sys/module/kvm/parameters/ignore_msrs 2>/dev/null
echo N >/sys/module/kvm/parameters/report_ignored_msrs 2>/dev/null
echo "vireo-l1: cpu flags svm=$(grep -cw svm /proc/cpuinfo) npt=$(grep -cw npt /proc/cpuinfo) ignore_msrs=$(cat /sys/module/kvm/parameters/ignore_msrs 2>/dev/null)"
echo "vireo-l1: $(grep MemTotal /proc/meminfo | tr -s ' ')"
l1_error=
if [ ! -c /dev/kvm ]; then
    l1_error="no /dev/kvm in L1 after insmod kvm-amd (svm in cpuinfo: $(grep -cw svm /proc/cpuinfo))"
fi

timeout_s=$(arg vireo.timeout)
[ -n "$timeout_s" ] || timeout_s=180
# MiB moved by the bulk checks: virtio-blk on raw and on qcow2 (through
# the page cache and again with O_DIRECT) and virtio-net (each way).
BLK_MIB=$(arg vireo.blk_mib)
[ -n "$BLK_MIB" ] || BLK_MIB=256
NET_MIB=$(arg vireo.net_mib)
[ -n "$NET_MIB" ] || NET_MIB=100
QCOW2_MIB=$(arg vireo.qcow2_mib)
[ -n "$QCOW2_MIB" ] || QCOW2_MIB=256
# `vireo.pin=CPUS` runs every vireo under `taskset -c CPUS` (for telling
# apart, with several L1 vCPUs, failures that need vireo's threads to
# move between L1 CPUs).
PIN=
[ -z "$(arg vireo.pin)" ] || PIN="taskset -c $(arg vireo.pin)"
# `vireo.stress=1` (with 2 L1 vCPUs): L1's CPUs wake each other all the
# time while the scenarios run (nested-tool pingpong), for the same hunt.
if [ "$(arg vireo.stress)" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    nested-tool pingpong 0 1 100000 &
    echo "vireo-l1: CPU 0 and CPU 1 wake each other (nested-tool pingpong)"
fi
L2_KERNEL=/l2/vmlinuz
L2_VMLINUX=/l2/vmlinux
L2_INITRD=/l2/initramfs.cpio.gz
L2_CMDLINE="console=ttyS0 reboot=k panic=1"

# Seconds since L1's boot, with hundredths.
now() {
    cut -d' ' -f1 /proc/uptime
}

# wait_line NAME LINE SECONDS: waits until the L2 console of run NAME has
# the line LINE (whole line); 1 when SECONDS pass first.
wait_line() {
    n=0
    while ! tr -d '\r' 2>/dev/null <"/tmp/$1.console" | grep -qxF "$2"; do
        n=$((n + 1))
        [ $n -le $(($3 * 5)) ] || return 1
        sleep 0.2
    done
}

# answer SOCKET TAG: the line L2's sync_l1 waits for, over the console port.
answer() {
    echo "$2" | nested-tool unix-chat "$1" 1 >/dev/null
}

# value NAME KEY: what L2 printed as `VIREO-VALUE NAME KEY VALUE`.
value() {
    sed -n "s/\r$//; s/^VIREO-VALUE $1 $2 //p" "/tmp/$1.console" | head -n 1
}

# json_field FIELD: the value of "FIELD" in the JSON on stdin (strings
# without quotes; the last one when there are several).
json_field() {
    sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" | head -n 1
}

# l1_result SCENARIO CHECK ok|fail EVIDENCE...
l1_result() {
    echo "VIREO-RESULT $*"
}

# verb CHECK VIREO-ARGS...: `v VIREO-ARGS...` (the scenario's own function
# reaching its daemon), one VIREO-RESULT for $name's CHECK with its output;
# its exit status is returned.
verb() {
    check=$1
    shift
    out=$(v "$@" 2>&1)
    st=$?
    if [ $st = 0 ]; then
        l1_result $name "$check" ok "vireo $*: $(echo "$out" | tr '\n' ' ')"
    else
        l1_result $name "$check" fail "vireo $* exited $st: $(echo "$out" | tr '\n' ' ')"
    fi
    return $st
}

# vireo_run SCENARIO VIREO-ARGS...: runs vireo with the console and log kept
# in /tmp/$SCENARIO.{console,log}, bounded by the timeout; sets $rc.
vireo_run() {
    name=$1
    shift
    rm -f "/tmp/$name.hang"
    t0=$(cut -d' ' -f1 /proc/uptime)
    # The L2 console streams out as it comes (kept if L1 itself dies
    # mid-run); vireo's log follows when it ends. A watchdog stops vireo
    # at the timeout, after recording where it hung.
    {
        $PIN /bin/vireo -vv run "$@" 2>"/tmp/$name.log" </dev/null &
        vpid=$!
        (
            sleep "$timeout_s"
            if kill -0 $vpid 2>/dev/null; then
                hang_report $vpid
                kill $vpid
                sleep 10
                kill -9 $vpid 2>/dev/null
            fi
        ) >"/tmp/$name.hang" 2>&1 </dev/null &
        wpid=$!
        wait $vpid
        echo $? >"/tmp/$name.rc"
        kill $wpid 2>/dev/null
    } | tee "/tmp/$name.console" | sed 's/\r$//; s/^/L2| /'
    rc=$(cat "/tmp/$name.rc")
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "vireo-l1: $name: vireo exited rc=$rc after $(awk "BEGIN{print $t1-$t0}")s (L1 time)"
    # vireo stops in order (exit 0) on SIGTERM: the watchdog's report is
    # what says it was a timeout.
    if [ -s "/tmp/$name.hang" ]; then
        echo "vireo-l1: $name: stopped by the ${timeout_s}s watchdog (exit status $rc)"
        rc=124
    fi
}

# hang_report PID: where vireo's threads are (kernel stacks: a vCPU thread
# in kvm_vcpu_block is halted, one in vcpu_run is running the guest, one in
# futex_wait is blocked in vireo) and, from KVM's kvm_exit tracepoint, the
# guest RIPs of 2 s of exits.
hang_report() {
    echo "vireo pid $1 still running at the timeout"
    for t in /proc/$1/task/*; do
        echo "thread $(basename "$t") $(cat "$t/comm") state $(cut -d' ' -f3 "$t/stat")"
        sed 's/^/    /' "$t/stack" 2>/dev/null
    done
    if [ "$(cat $tr/events/kvm/kvm_exit/enable 2>/dev/null)" = 1 ]; then
        : >$tr/trace
        echo 1 >$tr/tracing_on
        sleep 2
        echo 0 >$tr/tracing_on
        echo "kvm_exit events in 2 s: $(grep -c kvm_exit $tr/trace)"
        grep kvm_exit $tr/trace | tail -n 40
    else
        echo "no kvm_exit tracepoint"
    fi
}

# emit SCENARIO: vireo's log and L2's result lines.
emit() {
    sed 's/^/LOG| /' "/tmp/$1.log"
    # L2 prints its results on its console; repeat them unprefixed.
    sed -n 's/\r$//; /^VIREO-RESULT /p' "/tmp/$1.console"
    if [ "$rc" = 124 ]; then
        sed 's/^/HANG| /' "/tmp/$1.hang"
        l1_result "$1" timeout fail "vireo still running after ${timeout_s}s: stopped (HANG| lines)"
    fi
}

# exit_check SCENARIO WANT: the check that vireo ended with WANT.
exit_check() {
    if [ "$rc" = "$2" ]; then
        l1_result "$1" vireo-exit ok "rc=$rc"
    else
        l1_result "$1" vireo-exit fail "rc=$rc, want $2"
    fi
}

# boot_with NAME CPUS MEM_MIB KERNEL CMDLINE-EXTRA [VIREO-ARGS...]: the L2
# boot checks with that many vCPUs and MiB of RAM.
boot_with() {
    name=$1 cpus=$2 mem=$3 kernel=$4 extra=$5
    shift 5
    vireo_run "$name" --kernel "$kernel" --initrd $L2_INITRD --cpus "$cpus" --memory "${mem}M" "$@" \
        --cmdline "$L2_CMDLINE vireo.scenario=boot vireo.name=$name vireo.cpus=$cpus vireo.mem_mib=$mem $extra"
    emit "$name"
    exit_check "$name" 0
}

# The flags of TEMPLATE_FLAGS L1's CPU has, comma-separated: what the host
# template must pass on to L2 (and `minimal` hides).
TEMPLATE_FLAGS="xsave avx cx16"
host_flags() {
    flags=" $(grep -m 1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    out=
    for f in $TEMPLATE_FLAGS; do
        case "$flags" in *" $f "*) out="$out,$f" ;; esac
    done
    echo "${out#,}"
}

scenario_poweroff() {
    vireo_run poweroff --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M \
        --cmdline "$L2_CMDLINE vireo.scenario=poweroff"
    emit poweroff
    exit_check poweroff 0
}

scenario_reboot() {
    vireo_run reboot --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M \
        --cmdline "$L2_CMDLINE vireo.scenario=reboot"
    emit reboot
    exit_check reboot 0
    boots=$(grep -c 'vireo-l2: init reached' /tmp/reboot.console)
    if [ "$boots" = 1 ]; then
        l1_result reboot one-boot ok "without --reboot, vireo exited at the reset"
    else
        l1_result reboot one-boot fail "$boots boots"
    fi
    # L2's command line says reboot=k: Linux resets through the keyboard
    # controller, whose pulse vireo logs.
    if grep -q 'i8042: guest pulsed the reset line' /tmp/reboot.log; then
        l1_result reboot i8042-reset ok "vireo's i8042 saw the reset pulse (reboot=k)"
    else
        l1_result reboot i8042-reset fail "no i8042 reset pulse in vireo's log"
    fi
}

scenario_reboot_again() {
    dd if=/dev/zero of=/tmp/flag.raw bs=1M count=1 2>/dev/null
    vireo_run reboot-again --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M --reboot \
        --disk path=/tmp/flag.raw,format=raw \
        --cmdline "$L2_CMDLINE vireo.scenario=reboot-again"
    emit reboot-again
    exit_check reboot-again 0
    boots=$(grep -c 'vireo-l2: init reached' /tmp/reboot-again.console)
    if [ "$boots" = 2 ]; then
        l1_result reboot-again two-boots ok "2 boots"
    else
        l1_result reboot-again two-boots fail "$boots boots"
    fi
}

# blk_counters_helper NAME: in the background (pid in $helper), answers
# L2's `VIREO-SYNC counters` after saving the disk counters from the API
# in /tmp/NAME.counters.
blk_counters_helper() {
    rm -f "/tmp/$1.counters"
    (
        wait_line "$1" "VIREO-SYNC counters" "$timeout_s" || exit 0
        vireo vm --socket "/tmp/$1.sock" --json counters >"/tmp/$1.counters" 2>&1
        answer "/tmp/$1.con" counters
    ) &
    helper=$!
}

# covered HOLES FROM_MIB TO_MIB: whether one of nested-tool's `hole S E`
# lines covers FROM_MIB..TO_MIB.
covered() {
    echo "$1" | awk -v a=$(($2 * 1048576)) -v b=$(($3 * 1048576)) \
        '$1 == "hole" && $2 <= a && $3 >= b { found = 1 } END { exit !found }'
}

# blk_bulk_host NAME RAW MIB: l2-init.sh's blk_bulk regions, as L1 finds
# them in RAW (the image, or the qcow2 converted to raw), and the counters
# read while L2 ran.
blk_bulk_host() {
    name=$1 raw=$2 bulk=$3
    l2=$(value "$name" pattern-bulk-sha256)
    for what in cached:64 direct:$((64 + bulk)); do
        l1=$(dd if="$raw" bs=1M skip="${what#*:}" count="$bulk" 2>/dev/null | sha256sum | cut -d' ' -f1)
        if [ -n "$l2" ] && [ "$l2" = "$l1" ]; then
            l1_result "$name" "${what%:*}-host" ok "$bulk MiB at ${what#*:} MiB in the image: sha256 $l1, as L2 wrote"
        else
            l1_result "$name" "${what%:*}-host" fail "L2 wrote sha256 '$l2', the image holds $l1 at ${what#*:} MiB"
        fi
    done
    zeros=$(value "$name" zeros16-sha256)
    bad=
    for at in 16 32 48; do
        got=$(dd if="$raw" bs=1M skip=$at count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
        [ -n "$zeros" ] && [ "$got" = "$zeros" ] || bad="$bad $at-$((at + 16))MiB:$got"
    done
    if [ -z "$bad" ]; then
        l1_result "$name" zeroed-host ok "the discarded and write-zeroed 16-64 MiB read as zeroes in the image"
    else
        l1_result "$name" zeroed-host fail "not zero in the image:$bad (zeroes: $zeros)"
    fi
    c=$(sed -n 's/.*"disk0":{\([^}]*\)}.*/\1/p' "/tmp/$name.counters" 2>/dev/null)
    flushes=$(echo "$c" | json_field flushes)
    discards=$(echo "$c" | json_field discards)
    if [ "${flushes:-0}" -gt 0 ] && [ "${discards:-0}" -gt 0 ]; then
        l1_result "$name" flush-discard-counters ok "$c"
    else
        l1_result "$name" flush-discard-counters fail "want flushes and discards > 0 on disk0: ${c:-no counters (L2 never asked)}"
    fi
}

# virtio_blk_with NAME CPUS QUEUES: a raw read-write disk with a serial and
# QUEUES queues, and a read-only one, in an L2 with CPUS vCPUs (Linux gives
# a disk at most one queue per CPU).
virtio_blk_with() {
    name=$1 cpus=$2 queues=$3 bulk=$4
    dd if=/dev/zero of=/tmp/vda.raw bs=1M count=16 2>/dev/null
    dd if=/dev/urandom of=/tmp/vdb.raw bs=1M count=1 2>/dev/null
    vdb_before=$(sha256sum /tmp/vdb.raw | cut -d' ' -f1)
    set --
    if [ "$bulk" -gt 0 ]; then
        truncate -s $((64 + 2 * bulk))M /tmp/vda.raw
        blk_counters_helper "$name"
        set -- --api-socket "/tmp/$name.sock" --console "unix:/tmp/$name.con"
    fi
    vireo_run "$name" --kernel $L2_KERNEL --initrd $L2_INITRD --cpus "$cpus" --memory $((256 + 2 * bulk))M \
        --disk "path=/tmp/vda.raw,format=raw,serial=vireo-nested-1,queues=$queues" \
        --disk path=/tmp/vdb.raw,format=raw,readonly=on "$@" \
        --cmdline "$L2_CMDLINE vireo.scenario=virtio-blk vireo.name=$name vireo.serial=vireo-nested-1 vireo.queues=$queues vireo.bulk_mib=$bulk"
    emit "$name"
    exit_check "$name" 0
    if [ "$bulk" -gt 0 ]; then
        kill "$helper" 2>/dev/null
        blk_bulk_host "$name" /tmp/vda.raw "$bulk"
        holes=$(nested-tool holes /tmp/vda.raw 2>&1)
        if covered "$holes" 16 48; then
            l1_result "$name" discard-holes ok "the discarded and write-zeroed (unmap) 16-48 MiB is a hole in the raw file: $(echo "$holes" | tr '\n' ' ')"
        else
            l1_result "$name" discard-holes fail "16-48 MiB not a hole: $(echo "$holes" | tr '\n' ' ')"
        fi
    fi
    l2_sum=$(sed -n 's/\r$//; s/^VIREO-VALUE [^ ]* pattern-sha256 //p' "/tmp/$name.console")
    l1_sum=$(head -c 8388608 /tmp/vda.raw | sha256sum | cut -d' ' -f1)
    if [ -n "$l2_sum" ] && [ "$l2_sum" = "$l1_sum" ]; then
        l1_result "$name" host-file ok "the host file holds the pattern, sha256 $l1_sum"
    else
        l1_result "$name" host-file fail "L2 wrote sha256 '$l2_sum', the host file has $l1_sum"
    fi
    vdb_after=$(sha256sum /tmp/vdb.raw | cut -d' ' -f1)
    if [ "$vdb_before" = "$vdb_after" ]; then
        l1_result "$name" ro-host-file ok "the read-only image is unchanged"
    else
        l1_result "$name" ro-host-file fail "the read-only image changed"
    fi
    rm -f /tmp/vda.raw /tmp/vdb.raw
}

# A qcow2 disk made by `vireo img` in L1: L2 writes 8 MiB through it, L1
# converts it to raw and finds them, and its metadata checks clean; a
# read-only qcow2 reads back the marker L1 put in it.
scenario_virtio_blk_qcow2() {
    name=virtio-blk-qcow2 bulk=$QCOW2_MIB
    /bin/vireo img create -f qcow2 /tmp/vda.qcow2 $((64 + 2 * bulk))M >/dev/null
    dd if=/dev/zero of=/tmp/marker.raw bs=1M count=1 2>/dev/null
    printf 'vireo-nested-marker' | dd of=/tmp/marker.raw conv=notrunc 2>/dev/null
    /bin/vireo img convert -O qcow2 /tmp/marker.raw /tmp/vdb.qcow2 >/dev/null
    vdb_before=$(sha256sum /tmp/vdb.qcow2 | cut -d' ' -f1)
    blk_counters_helper $name
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --memory $((256 + 2 * bulk))M \
        --disk path=/tmp/vda.qcow2,format=qcow2,serial=vireo-qcow2 \
        --disk path=/tmp/vdb.qcow2,format=qcow2,readonly=on \
        --api-socket /tmp/$name.sock --console unix:/tmp/$name.con \
        --cmdline "$L2_CMDLINE vireo.scenario=virtio-blk vireo.name=$name vireo.serial=vireo-qcow2 vireo.queues=1 vireo.marker=vireo-nested-marker vireo.bulk_mib=$bulk"
    emit $name
    exit_check $name 0
    kill "$helper" 2>/dev/null
    l2_sum=$(sed -n 's/\r$//; s/^VIREO-VALUE [^ ]* pattern-sha256 //p' "/tmp/$name.console")
    /bin/vireo img convert -O raw /tmp/vda.qcow2 /tmp/vda.raw >/tmp/convert.out 2>&1
    l1_sum=$(head -c 8388608 /tmp/vda.raw | sha256sum | cut -d' ' -f1)
    if [ -n "$l2_sum" ] && [ "$l2_sum" = "$l1_sum" ]; then
        l1_result $name host-file ok "the qcow2 image, converted to raw, holds the pattern, sha256 $l1_sum"
    else
        l1_result $name host-file fail "L2 wrote sha256 '$l2_sum', the converted image has $l1_sum: $(tr '\n' ' ' </tmp/convert.out)"
    fi
    if /bin/vireo img check /tmp/vda.qcow2 >/tmp/check.out 2>&1; then
        l1_result $name qcow2-check ok "$(tr '\n' ' ' </tmp/check.out)"
    else
        l1_result $name qcow2-check fail "exit $?: $(tr '\n' ' ' </tmp/check.out)"
    fi
    if [ "$bulk" -gt 0 ]; then
        blk_bulk_host $name /tmp/vda.raw "$bulk"
        # Written: 8 MiB of pattern, 48 MiB at 16-64 MiB, 2 x bulk. Freed:
        # at least the 16 MiB discarded; the 16 MiB write-zeroed with unmap
        # may be too.
        alloc=$(($(stat -c %b /tmp/vda.qcow2) * 512 / 1048576))
        most=$((8 + 48 + 2 * bulk - 16 + 2))
        if [ "$alloc" -le "$most" ]; then
            l1_result $name clusters-freed ok "the image file holds $alloc MiB after $((8 + 48 + 2 * bulk)) MiB written and 32 MiB discarded or write-zeroed with unmap (at most $most MiB allowed)"
        else
            l1_result $name clusters-freed fail "the image file holds $alloc MiB, more than $most MiB: the discard freed nothing"
        fi
    fi
    if [ "$vdb_before" = "$(sha256sum /tmp/vdb.qcow2 | cut -d' ' -f1)" ]; then
        l1_result $name ro-host-file ok "the read-only image is unchanged"
    else
        l1_result $name ro-host-file fail "the read-only image changed"
    fi
    rm -f /tmp/vda.qcow2 /tmp/vda.raw /tmp/vdb.qcow2 /tmp/marker.raw
}

scenario_virtio_net() {
    tap=vtap0
    rm -f /tmp/net-rx*.bin /tmp/net-rx*.end /tmp/net-word.sent /tmp/net-tx.took
    dd if=/dev/urandom of=/tmp/net-tx.bin bs=1M count="$NET_MIB" 2>/dev/null
    tx_sum=$(sha256sum /tmp/net-tx.bin | cut -d' ' -f1)
    (
        # vireo creates the TAP; address it once it exists, then ping L2
        # until it answers and tell L2 over TCP.
        i=0
        while [ ! -e /sys/class/net/$tap ] && [ $i -lt 600 ]; do
            sleep 0.2
            i=$((i + 1))
        done
        ip addr add 169.254.10.1/24 dev $tap
        ip link set $tap up
        i=0
        until ping -c 1 -W 2 169.254.10.2 >/tmp/l1ping.out 2>&1; do
            i=$((i + 1))
            [ $i -lt 60 ] || break
        done
        if ping -c 3 -W 5 169.254.10.2 >/tmp/l1ping.out 2>&1; then
            echo ok >/tmp/l1ping.verdict
            # The bulk flows' listeners are up before L2 hears from us.
            # busybox nc half-closes at the end of its stdin, and the
            # sender then stops: stdin is a FIFO this nc holds open itself.
            rm -f /tmp/net-hold.fifo
            mkfifo /tmp/net-hold.fifo
            for c in 0 1; do
                (
                    timeout 300 nc -l -p $((7778 + c)) <>/tmp/net-hold.fifo >/tmp/net-rx$c.bin
                    now >/tmp/net-rx$c.end
                ) &
            done
            # Both listening (state 0A in /proc/net/tcp) before L2 may send.
            i=0
            while [ "$(grep -cE ':1E6[23] 00000000:0000 0A' /proc/net/tcp)" != 2 ] && [ $i -lt 100 ]; do
                sleep 0.1
                i=$((i + 1))
            done
            i=0
            until echo l1-pinged-l2 | nc -w 10 169.254.10.2 7777 2>/dev/null; do
                i=$((i + 1))
                [ $i -lt 30 ] || break
                sleep 1
            done
            now >/tmp/net-word.sent
            wait
            # L2 listens once its sends are done; retry until it does.
            i=0
            t0=$(now)
            until nc -w 30 169.254.10.2 7780 </tmp/net-tx.bin 2>/dev/null; do
                i=$((i + 1))
                [ $i -lt 60 ] || break
                sleep 1
            done
            echo "$i retries, $(awk "BEGIN{print $(now)-$t0}") s" >/tmp/net-tx.took
        else
            echo fail >/tmp/l1ping.verdict
        fi
    ) &
    helper=$!
    # 2 queue pairs need 2 vCPUs: virtio_net uses at most one per CPU.
    vireo_run virtio-net --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M --cpus 2 \
        --net tap=$tap,mac=52:54:00:12:34:56,queues=2 \
        --cmdline "$L2_CMDLINE vireo.scenario=virtio-net vireo.mac=52:54:00:12:34:56 vireo.queues=2 vireo.ip=169.254.10.2 vireo.peer=169.254.10.1 vireo.bulk_mib=$NET_MIB"
    kill $helper 2>/dev/null
    wait $helper 2>/dev/null
    emit virtio-net
    exit_check virtio-net 0
    for c in 0 1; do
        l2=$(value virtio-net tx-sha256)
        l1=$(sha256sum /tmp/net-rx$c.bin 2>/dev/null | cut -d' ' -f1)
        size=$(stat -c %s /tmp/net-rx$c.bin 2>/dev/null)
        if [ -n "$l2" ] && [ "$l2" = "$l1" ] && [ "$size" = $((NET_MIB / 2 * 1048576)) ]; then
            l1_result virtio-net tcp-to-l1-$c ok "$size bytes from L2's CPU $c arrived whole, $(awk "BEGIN{print $(cat /tmp/net-rx$c.end) - $(cat /tmp/net-word.sent)}") s after L1 sent its word: sha256 $l1"
        else
            l1_result virtio-net tcp-to-l1-$c fail "L2 sent sha256 '$l2', L1 received $size bytes, sha256 '$l1'"
        fi
        rm -f /tmp/net-rx$c.bin
    done
    l2=$(value virtio-net rx-sha256)
    if [ -n "$l2" ] && [ "$l2" = "$tx_sum" ]; then
        l1_result virtio-net tcp-from-l1-bulk ok "$NET_MIB MiB from L1 arrived whole ($(cat /tmp/net-tx.took 2>/dev/null)): sha256 $tx_sum"
    else
        l1_result virtio-net tcp-from-l1-bulk fail "L1 sent sha256 $tx_sum, L2 received '$l2' ($(cat /tmp/net-tx.took 2>/dev/null))"
    fi
    rm -f /tmp/net-tx.bin
    l1_result virtio-net ping-from-l1 "$(cat /tmp/l1ping.verdict 2>/dev/null || echo fail)" \
        "$(tr '\n' '|' </tmp/l1ping.out 2>/dev/null)"
}

scenario_console() {
    rm -f /tmp/hvc.out /tmp/console.sock /tmp/console.from-l2
    # 1500 random bytes as one line of hex, sent into the socket once L2
    # reads every port; what L2 writes to that port comes back meanwhile.
    line=$(dd if=/dev/urandom bs=1500 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    sent=$(printf '%s' "$line" | sha256sum | cut -d' ' -f1)
    (
        wait_line console "VIREO-READY console-in" 150 || exit 0
        echo "$line" | nested-tool unix-chat /tmp/console.sock 10 >/tmp/console.from-l2 2>&1
    ) &
    helper=$!
    vireo_run console --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M \
        --console file:/tmp/hvc.out --console unix:/tmp/console.sock \
        --cmdline "$L2_CMDLINE vireo.scenario=console"
    kill $helper 2>/dev/null
    wait $helper 2>/dev/null
    emit console
    exit_check console 0
    # The port to the file and the port on the socket each got the line
    # L2 wrote to it (naming its hvc).
    f=$(grep -o 'hello-from-l2-hvc[0-9]' /tmp/hvc.out 2>/dev/null | head -n 1)
    u=$(grep -o 'hello-from-l2-hvc[0-9]' /tmp/console.from-l2 2>/dev/null | head -n 1)
    if [ -n "$f" ] && [ -n "$u" ] && [ "$f" != "$u" ]; then
        l1_result console host-file ok "the file got '$f', the socket got '$u'"
    else
        l1_result console host-file fail "file: '$(head -c 200 /tmp/hvc.out 2>&1 | tr '\n' '|')', socket: '$(head -c 200 /tmp/console.from-l2 2>&1 | tr '\n' '|')'"
    fi
    got=$(value console hvc-in-sha256)
    if [ "$got" = "$sent" ]; then
        l1_result console host-to-guest ok "the ${#line}-byte line L1 wrote into the socket reached L2's hvc whole: sha256 $sent"
    else
        l1_result console host-to-guest fail "L1 sent sha256 $sent, L2 read '$got'"
    fi
}

scenario_rng() {
    vireo_run rng --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M --rng \
        --cmdline "$L2_CMDLINE vireo.scenario=rng"
    emit rng
    exit_check rng 0
}

# rss_kib PID: the resident memory of process PID, in KiB.
rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

# balloon_field API FIELD: FIELD of GET /vm/balloon.
balloon_field() {
    vireo vm --socket "$1" --json balloon-stats 2>/dev/null | json_field "$2"
}

# wait_actual API KIB SECONDS: until GET /vm/balloon's actual_kib is KIB;
# 1 when SECONDS pass first.
wait_actual() {
    n=0
    while [ "$(balloon_field "$1" actual_kib)" != "$2" ]; do
        n=$((n + 1))
        [ $n -le $(($3 * 2)) ] || return 1
        sleep 0.5
    done
}

# The balloon with Linux's virtio_balloon (l2-init.sh's balloon): after L2
# touched its free memory, a target 192 MiB below its 512 MiB; vireo's
# RSS must fall by at least 90 % of that, the statistics arrive every
# stats period, and the deflate gives it all back (actual, MemTotal, and
# RSS once L2 touches the memory again).
scenario_balloon() {
    name=balloon api=/tmp/balloon.sock con=/tmp/balloon.con
    rm -f /tmp/balloon.*
    (
        wait_line $name "VIREO-SYNC touched" 300 || exit 0
        vpid=$(pidof vireo)
        rss0=$(rss_kib $vpid)
        t0=$(now)
        vireo vm --socket $api balloon 320M >/tmp/balloon.set 2>&1 ||
            echo "vireo vm balloon 320M: $(cat /tmp/balloon.set)" >>/tmp/balloon.err
        if wait_actual $api 327680 100; then
            t1=$(now)
            # RSS follows the releases at once; one more second for the
            # last batch's madvise to land.
            sleep 1
            echo "rss0=$rss0 rss1=$(rss_kib $vpid) secs=$(awk "BEGIN{print $t1-$t0}")" >/tmp/balloon.inflate
        else
            echo "actual never reached 327680 KiB: $(vireo vm --socket $api --json balloon-stats 2>&1)" >>/tmp/balloon.err
        fi
        # Two statistics updates, a period (2 s) apart.
        first=$(balloon_field $api last_update)
        n=0
        while [ "$(balloon_field $api last_update)" = "$first" ] && [ $n -lt 30 ]; do
            n=$((n + 1))
            sleep 1
        done
        vireo vm --socket $api balloon-stats >/tmp/balloon.stats 2>&1
        echo "first_update=$first" >>/tmp/balloon.stats
        vireo vm --socket $api counters >/tmp/balloon.counters 2>&1
        answer $con touched
        wait_line $name "VIREO-SYNC deflate" 120 || exit 0
        vireo vm --socket $api balloon 512M >>/tmp/balloon.set 2>&1 ||
            echo "vireo vm balloon 512M: $(cat /tmp/balloon.set)" >>/tmp/balloon.err
        wait_actual $api 524288 100 ||
            echo "actual never came back to 524288 KiB: $(vireo vm --socket $api --json balloon-stats 2>&1)" >>/tmp/balloon.err
        answer $con deflate
        wait_line $name "VIREO-SYNC refilled" 300 || exit 0
        echo "rss2=$(rss_kib $vpid)" >>/tmp/balloon.inflate
        answer $con refilled
    ) &
    helper=$!
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --memory 512M \
        --balloon stats-period=2 --api-socket $api --console unix:$con \
        --cmdline "$L2_CMDLINE vireo.scenario=balloon"
    kill $helper 2>/dev/null
    wait $helper 2>/dev/null
    emit $name
    exit_check $name 0
    if [ -s /tmp/balloon.err ]; then
        l1_result $name l1-steps fail "$(tr '\n' ';' </tmp/balloon.err)"
    else
        l1_result $name l1-steps ok "vireo vm balloon 320M, then 512M: actual followed both"
    fi
    m=$(tr '\n' ' ' </tmp/balloon.inflate 2>/dev/null)
    rss0=$(echo "$m" | sed -n 's/.*rss0=\([0-9]*\).*/\1/p')
    rss1=$(echo "$m" | sed -n 's/.*rss1=\([0-9]*\).*/\1/p')
    rss2=$(echo "$m" | sed -n 's/.*rss2=\([0-9]*\).*/\1/p')
    # 90 % of the 192 MiB balloon.
    want=$((196608 * 9 / 10))
    if [ -n "$rss1" ] && [ $((rss0 - rss1)) -ge $want ]; then
        l1_result $name rss-inflate ok "vireo's RSS $rss0 -> $rss1 KiB (-$((rss0 - rss1)) KiB, at least $want wanted) for a 192 MiB balloon; $m"
    else
        l1_result $name rss-inflate fail "vireo's RSS: $m; want a drop of at least $want KiB; counters: $(tr '\n' ' ' </tmp/balloon.counters 2>/dev/null)"
    fi
    if [ -n "$rss2" ] && [ -n "$rss1" ] && [ $((rss2 - rss1)) -ge $want ]; then
        l1_result $name rss-deflate ok "after the deflate and L2's refill, RSS $rss1 -> $rss2 KiB"
    else
        l1_result $name rss-deflate fail "RSS after the refill: $m"
    fi
    st=$(tr '\n' ' ' </tmp/balloon.stats 2>/dev/null)
    first=$(echo "$st" | sed -n 's/.*first_update=\([0-9]*\).*/\1/p')
    last=$(echo "$st" | sed -n 's/.*last_update \([0-9]*\).*/\1/p')
    case "$st" in
    *"available "*"unused "*"usable "*)
        if [ -n "$first" ] && [ -n "$last" ] && [ "$last" -gt "$first" ]; then
            l1_result $name stats ok "two updates ($first, $last): $st"
        else
            l1_result $name stats fail "no second update after $first: $st"
        fi
        ;;
    *) l1_result $name stats fail "vireo vm balloon-stats: $st" ;;
    esac
    c=$(tr '\n' ' ' </tmp/balloon.counters 2>/dev/null | tr -s ' ')
    # Balloon compaction may move pages (one more inflate and a deflate
    # each): at least the 49152 pages of 192 MiB.
    inflated=$(echo "$c" | sed -n 's/.*balloon inflated_pages \([0-9]*\).*/\1/p')
    if [ "${inflated:-0}" -ge 49152 ]; then
        l1_result $name counters ok "$c"
    else
        l1_result $name counters fail "want at least 49152 inflated pages: $c"
    fi
}

# Free page reporting with Linux's virtio_balloon (l2-init.sh's
# balloon-fpr): L2 fills most of its memory, then deletes the file; Linux
# reports the freed pages and vireo's RSS must fall by at least 80 % of
# what was freed within 30 s.
scenario_balloon_fpr() {
    name=balloon-fpr api=/tmp/balloon-fpr.sock con=/tmp/balloon-fpr.con
    rm -f /tmp/balloon-fpr.*
    (
        wait_line $name "VIREO-SYNC filled" 300 || exit 0
        vpid=$(pidof vireo)
        rss0=$(rss_kib $vpid)
        answer $con filled
        wait_line $name "VIREO-SYNC freed" 120 || exit 0
        t0=$(now)
        freed=$(value $name freed-mib)
        want=$((${freed:-0} * 1024 * 8 / 10))
        # Watched until 90 % of it is back (or 30 s pass), so the evidence
        # says how much came back; 80 % is what the check asks (Linux
        # reports whole 2 MiB blocks only; 98 % came back in 3 s here).
        most=$((${freed:-0} * 1024 * 9 / 10))
        n=0
        while [ $((rss0 - $(rss_kib $vpid))) -lt $most ] && [ $n -lt 60 ]; do
            n=$((n + 1))
            sleep 0.5
        done
        echo "rss0=$rss0 rss1=$(rss_kib $vpid) want=$want freed_mib=$freed secs=$(awk "BEGIN{print $(now)-$t0}")" >/tmp/balloon-fpr.rss
        vireo vm --socket $api counters >/tmp/balloon-fpr.counters 2>&1
        answer $con freed
        wait_line $name "VIREO-SYNC inflate" 60 || exit 0
        vireo vm --socket $api balloon 256M >/tmp/balloon-fpr.set 2>&1
        if wait_actual $api 262144 100; then
            echo "inflated=yes" >/tmp/balloon-fpr.oom
        else
            echo "inflated=no $(cat /tmp/balloon-fpr.set) $(vireo vm --socket $api --json balloon-stats 2>&1)" >/tmp/balloon-fpr.oom
        fi
        answer $con inflate
        wait_line $name "VIREO-SYNC oom" 240 || exit 0
        echo "actual_kib=$(balloon_field $api actual_kib)" >>/tmp/balloon-fpr.oom
        vireo vm --socket $api counters >>/tmp/balloon-fpr.oom 2>&1
        answer $con oom
    ) &
    helper=$!
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --memory 512M \
        --balloon free-page-reporting=on,deflate-on-oom=on --api-socket $api --console unix:$con \
        --cmdline "$L2_CMDLINE vireo.scenario=balloon-fpr"
    kill $helper 2>/dev/null
    wait $helper 2>/dev/null
    emit $name
    exit_check $name 0
    m=$(cat /tmp/balloon-fpr.rss 2>/dev/null)
    rss0=$(echo "$m" | sed -n 's/.*rss0=\([0-9]*\).*/\1/p')
    rss1=$(echo "$m" | sed -n 's/.*rss1=\([0-9]*\).*/\1/p')
    want=$(echo "$m" | sed -n 's/.*want=\([0-9]*\).*/\1/p')
    c=$(tr '\n' ' ' </tmp/balloon-fpr.counters 2>/dev/null | tr -s ' ')
    if [ -n "$rss1" ] && [ "${want:-0}" -gt 0 ] && [ $((rss0 - rss1)) -ge "$want" ]; then
        l1_result $name rss-reported ok "vireo's RSS $rss0 -> $rss1 KiB after L2 freed its file ($m); $c"
    else
        l1_result $name rss-reported fail "vireo's RSS: $m; counters: $c"
    fi
    # Linux's OOM notifier deflated: the balloon holds less than the 256
    # MiB it was inflated to, so the guest's memory (actual) is above 256.
    o=$(tr '\n' ' ' </tmp/balloon-fpr.oom 2>/dev/null | tr -s ' ')
    actual=$(echo "$o" | sed -n 's/.*actual_kib=\([0-9]*\).*/\1/p')
    case "$o" in
    inflated=yes*)
        if [ "${actual:-0}" -gt 262144 ]; then
            l1_result $name oom-deflate ok "inflated to a 256 MiB target; after L2's tmpfs write past its free memory, actual $actual KiB: $o"
        else
            l1_result $name oom-deflate fail "actual ${actual:-none} KiB after the write, want above 262144: $o"
        fi
        ;;
    *) l1_result $name oom-deflate fail "the balloon never reached a 256 MiB target: $o" ;;
    esac
}

# Pause and resume, then the ACPI power button, through the API while L2's
# ticker and timers run (l2-init.sh's power-api).
scenario_power_api() {
    name=power-api api=/tmp/power-api.sock con=/tmp/power-api.con
    rm -f /tmp/power-api.*
    (
        wait_line $name "VIREO-SYNC pause" 150 || exit 0
        t0=$(now)
        vireo vm --socket $api pause >/tmp/power-api.pause 2>&1
        echo $? >>/tmp/power-api.pause
        sleep 1
        ticks1=$(grep -c 'vireo-l2: tick' /tmp/$name.console)
        state=$(vireo vm --socket $api --json info 2>&1 | json_field state)
        refused=$(vireo vm --socket $api shutdown 2>&1)
        echo "shutdown-rc=$? $refused" >/tmp/power-api.refused
        sleep 4
        ticks2=$(grep -c 'vireo-l2: tick' /tmp/$name.console)
        vireo vm --socket $api resume >/tmp/power-api.resume 2>&1
        echo $? >>/tmp/power-api.resume
        t1=$(now)
        echo "state=$state ticks1=$ticks1 ticks2=$ticks2 paused_for=$(awk "BEGIN{print $t1-$t0}")" >/tmp/power-api.paused
        answer $con pause
        sleep 2
        echo "ticks3=$(grep -c 'vireo-l2: tick' /tmp/$name.console)" >>/tmp/power-api.paused
        wait_line $name "VIREO-READY power-button" 150 || exit 0
        vireo vm --socket $api shutdown >/tmp/power-api.button 2>&1
        echo "rc=$? at $(now)" >>/tmp/power-api.button
    ) &
    helper=$!
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M --cpus 2 \
        --api-socket $api --console unix:$con \
        --cmdline "$L2_CMDLINE vireo.scenario=power-api"
    ended=$(now)
    kill $helper 2>/dev/null
    wait $helper 2>/dev/null
    emit $name
    exit_check $name 0
    p=$(cat /tmp/power-api.paused 2>/dev/null | tr '\n' ' ')
    case "$p" in
    *state=paused*) l1_result $name api-paused ok "$p" ;;
    *) l1_result $name api-paused fail "GET /vm while paused: $p; pause: $(tr '\n' ' ' </tmp/power-api.pause 2>&1)" ;;
    esac
    t1=$(echo "$p" | sed -n 's/.*ticks1=\([0-9]*\).*/\1/p')
    t2=$(echo "$p" | sed -n 's/.*ticks2=\([0-9]*\).*/\1/p')
    t3=$(echo "$p" | sed -n 's/.*ticks3=\([0-9]*\).*/\1/p')
    if [ -n "$t1" ] && [ "$t1" = "$t2" ] && [ -n "$t3" ] && [ "$t3" -gt "$t2" ]; then
        l1_result $name guest-held ok "no tick in 4 s while paused ($t1 ticks), $((t3 - t2)) in the 2 s after resume"
    else
        l1_result $name guest-held fail "ticks: 1 s into the pause $t1, 5 s in $t2, 2 s after resume $t3"
    fi
    case "$(cat /tmp/power-api.refused 2>/dev/null)" in
    shutdown-rc=0*) l1_result $name shutdown-while-paused fail "the power button was pressed on a paused VM: $(cat /tmp/power-api.refused)" ;;
    shutdown-rc=*paused*) l1_result $name shutdown-while-paused ok "$(cat /tmp/power-api.refused)" ;;
    *) l1_result $name shutdown-while-paused fail "$(cat /tmp/power-api.refused 2>&1)" ;;
    esac
    b=$(tr '\n' ' ' </tmp/power-api.button 2>/dev/null)
    case "$b" in
    *"rc=0 "*) l1_result $name api-shutdown ok "vireo vm shutdown answered; vireo exited at $ended s ($b)" ;;
    *) l1_result $name api-shutdown fail "vireo vm shutdown: '$b'" ;;
    esac
}

# Ten rounds of hot-plug through the API (l2-init.sh's hotplug): a raw disk
# L1 marks per round and a NIC on a TAP vireo creates; after them, vireo's
# open files and L1's network links are as before the first.
scenario_hotplug() {
    name=hotplug api=/tmp/hotplug.sock con=/tmp/hotplug.con rounds=10
    rm -f /tmp/hotplug.*
    dd if=/dev/zero of=/tmp/hotplug.raw bs=1M count=4 2>/dev/null
    (
        wait_line $name "VIREO-SYNC plug-1" 150 || exit 0
        vpid=$(pidof vireo)
        fd0=$(ls /proc/$vpid/fd | wc -l)
        links0=$(ls /sys/class/net | wc -l)
        echo "before: pid $vpid fds $fd0 links $links0" >/tmp/hotplug.leak
        i=1
        while [ $i -le $rounds ]; do
            wait_line $name "VIREO-SYNC plug-$i" 120 || { echo "round $i: no plug request" >>/tmp/hotplug.err; exit 0; }
            printf "round-$i" | dd of=/tmp/hotplug.raw bs=16 count=1 conv=sync,notrunc 2>/dev/null
            vireo vm --socket $api add-disk --id hd$i "path=/tmp/hotplug.raw,format=raw" >>/tmp/hotplug.api.out 2>&1 ||
                echo "round $i: add-disk failed" >>/tmp/hotplug.err
            vireo vm --socket $api add-net --id hn$i >>/tmp/hotplug.api.out 2>&1 ||
                echo "round $i: add-net failed" >>/tmp/hotplug.err
            answer $con plug-$i
            wait_line $name "VIREO-SYNC unplug-$i" 120 || { echo "round $i: no unplug request" >>/tmp/hotplug.err; exit 0; }
            got=$(dd if=/tmp/hotplug.raw bs=4096 skip=1 count=1 2>/dev/null | tr -d '\0')
            [ "$got" = "l2-round-$i" ] || echo "round $i: the disk file holds '$got' at 4096, not l2-round-$i" >>/tmp/hotplug.err
            vireo vm --socket $api remove-device hd$i >>/tmp/hotplug.api.out 2>&1 ||
                echo "round $i: remove-device hd$i failed" >>/tmp/hotplug.err
            vireo vm --socket $api remove-device hn$i >>/tmp/hotplug.api.out 2>&1 ||
                echo "round $i: remove-device hn$i failed" >>/tmp/hotplug.err
            answer $con unplug-$i
            n=0
            while vireo vm --socket $api --json info 2>/dev/null | grep -qE "\"(hd|hn)$i\""; do
                n=$((n + 1))
                [ $n -lt 120 ] || { echo "round $i: hd$i/hn$i still listed 60 s after removal" >>/tmp/hotplug.err; break; }
                sleep 0.5
            done
            i=$((i + 1))
        done
        wait_line $name "VIREO-SYNC done" 120 || { echo "no done request after the rounds" >>/tmp/hotplug.err; exit 0; }
        echo "after: fds $(ls /proc/$vpid/fd | wc -l) links $(ls /sys/class/net | wc -l)" >>/tmp/hotplug.leak
        ls -l /proc/$vpid/fd >/tmp/hotplug.fds 2>&1
        echo "$rounds" >/tmp/hotplug.done
        answer $con done
    ) &
    helper=$!
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M \
        --api-socket $api --console unix:$con \
        --cmdline "$L2_CMDLINE vireo.scenario=hotplug vireo.rounds=$rounds"
    kill $helper 2>/dev/null
    wait $helper 2>/dev/null
    emit $name
    exit_check $name 0
    if [ -s /tmp/hotplug.err ] || [ ! -s /tmp/hotplug.done ]; then
        l1_result $name l1-rounds fail "$(tr '\n' ';' </tmp/hotplug.err 2>/dev/null) $([ -s /tmp/hotplug.done ] || echo 'the rounds never finished')"
    else
        l1_result $name l1-rounds ok "$rounds rounds of add-disk, add-net, L2's write found in the file, remove-device x2, both gone from GET /vm"
    fi
    leak=$(tr '\n' ' ' </tmp/hotplug.leak 2>/dev/null)
    fd0=$(echo "$leak" | sed -n 's/.*before: pid [0-9]* fds \([0-9]*\) .*/\1/p')
    fd1=$(echo "$leak" | sed -n 's/.*after: fds \([0-9]*\) .*/\1/p')
    l0=$(echo "$leak" | sed -n 's/.*before: .* links \([0-9]*\) .*after.*/\1/p')
    l1=$(echo "$leak" | sed -n 's/.*after: fds [0-9]* links \([0-9]*\).*/\1/p')
    if [ -n "$fd0" ] && [ "$fd0" = "$fd1" ] && [ -n "$l0" ] && [ "$l0" = "$l1" ]; then
        l1_result $name no-leak ok "$leak"
    else
        l1_result $name no-leak fail "$leak; fds after: $(tr '\n' '|' </tmp/hotplug.fds 2>/dev/null)"
    fi
}

# The old test of crates/vireo/tests/linux.rs, unchanged: its initramfs,
# 512 MiB and 2 vCPUs, vireo's default command line; linux.rs checks the
# console and the exit code itself.
scenario_linux_test() {
    vireo_run linux-test --kernel $L2_KERNEL --initrd /l2/linux-test.cpio.gz \
        --memory 512M --cpus 2
    emit linux-test
}

# issue 11's proof with a stock Linux guest: `vireo daemon` in L1 runs
# an L2 domain defined from libvirt XML, and the virsh-like verbs drive it
# (l2-init.sh's daemon): `console` both ways and Ctrl-] detaching,
# `attach-disk`/`detach-disk --live` seen by Linux, `shutdown` handled by
# the guest's power button, the state and the events that follow. One L2
# boot; every wait is bounded.
scenario_daemon() {
    name=daemon dom=l2-linux sock=/run/vd.sock
    rm -rf /tmp/vd /tmp/daemon.* /tmp/x.img
    mkdir -p /run
    v() {
        /bin/vireo -c "vireo+unix:///system?socket=$sock" "$@"
    }
    # verb CHECK VIREO-ARGS...: runs the verb, one VIREO-RESULT with its
    # output; the verb's exit status is returned.
    /bin/vireo daemon --state-dir /tmp/vd --socket $sock --log /tmp/daemon.dlog </dev/null >/tmp/daemon.dout 2>&1 &
    dpid=$!
    n=0
    while [ ! -S $sock ] && [ $n -lt 100 ] && kill -0 $dpid 2>/dev/null; do
        sleep 0.2
        n=$((n + 1))
    done
    if ! verb daemon-up list --all; then
        sed 's/^/LOG| daemon: /' /tmp/daemon.dout /tmp/daemon.dlog 2>/dev/null
        kill $dpid 2>/dev/null
        return
    fi
    # All domains' events: `--domain` looks the domain up first (as virsh
    # does), and it is not defined yet.
    v event --loop >/tmp/daemon.events 2>&1 &
    epid=$!
    # Subscribed before the define (a process start is slow here).
    sleep 2
    # The boot disk carries a marker L2 reads at boot; the one attached
    # later another.
    marker=vireo-daemon-boot-disk hp_marker=vireo-daemon-hotplug-disk
    dd if=/dev/zero of=/tmp/daemon.vda.raw bs=1M count=4 2>/dev/null
    printf $marker | dd of=/tmp/daemon.vda.raw conv=notrunc 2>/dev/null
    dd if=/dev/zero of=/tmp/x.img bs=1M count=4 2>/dev/null
    printf $hp_marker | dd of=/tmp/x.img conv=notrunc 2>/dev/null
    cat >/tmp/daemon.xml <<EOF
<domain type='kvm'>
  <name>$dom</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>$L2_KERNEL</kernel>
    <initrd>$L2_INITRD</initrd>
    <cmdline>$L2_CMDLINE vireo.scenario=daemon vireo.marker=$marker vireo.hp_marker=$hp_marker</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/tmp/daemon.vda.raw'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'/>
    <memballoon model='virtio'><stats period='2'/></memballoon>
  </devices>
</domain>
EOF
    verb define define /tmp/daemon.xml || return
    t0=$(now)
    verb start start $dom || return
    state=$(v domstate $dom --reason 2>&1 | head -n 1)
    case "$state" in
    "running (booted)") l1_result $name domstate-running ok "$state" ;;
    *) l1_result $name domstate-running fail "domstate --reason: '$state'" ;;
    esac
    # The daemon jails the VMM (docs/security.md): the domain's pid is its
    # keeper, whose one child runs the VM under a uid of its own, with no
    # capability, no_new_privs and a seccomp filter on every thread.
    keeper=$(cat /proc/$dpid/task/*/children 2>/dev/null | awk '{ print $1 }')
    vmm=$(cat /proc/$keeper/task/$keeper/children 2>/dev/null | awk '{ print $1 }')
    conf=$(cat /proc/$vmm/task/*/status 2>/dev/null | grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' | sort -u | tr -s '\t' ' ' | tr '\n' ';')
    case "$conf" in
    "CapEff: 0000000000000000;NoNewPrivs: 1;Seccomp: 2;Uid: "[1-9]*)
        l1_result $name jailed ok "VMM pid $vmm (keeper $keeper): $conf root: $(ls /proc/$vmm/root 2>&1 | tr '\n' ' ')" ;;
    *) l1_result $name jailed fail "VMM pid ${vmm:-none} (keeper ${keeper:-none}): '$conf'" ;;
    esac
    # One console client from the start to the Ctrl-] (its input a FIFO
    # held open on fd 4), then another to the end; both append to
    # /tmp/daemon.console, which wait_line reads.
    mkfifo /tmp/daemon.in1 /tmp/daemon.in2
    (
        v console $dom </tmp/daemon.in1 >/tmp/daemon.console 2>&1
        echo $? >/tmp/daemon.con1.rc
    ) &
    exec 4>/tmp/daemon.in1
    word=$(dd if=/dev/urandom bs=6 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    if wait_line $name "VIREO-READY console" 150; then
        echo "ping-$word" >&4
        want="VIREO-PONG $(echo "$word" | rev)"
        if wait_line $name "$want" 60; then
            l1_result $name console-answer ok "typed 'ping-$word' into vireo console, the guest answered '$want' at $(awk "BEGIN{print $(now)-$t0}") s"
        else
            l1_result $name console-answer fail "typed 'ping-$word', no '$want' within 60 s"
        fi
    else
        l1_result $name console-answer fail "no VIREO-READY console within 150 s of start"
    fi
    # Ctrl-] (0x1d) ends the first client with 0; the domain runs on.
    printf '\035' >&4
    n=0
    while [ ! -s /tmp/daemon.con1.rc ] && [ $n -lt 50 ]; do
        sleep 0.2
        n=$((n + 1))
    done
    exec 4>&-
    rc1=$(cat /tmp/daemon.con1.rc 2>/dev/null)
    state=$(v domstate $dom 2>&1 | head -n 1)
    if [ "$rc1" = 0 ] && [ "$state" = running ]; then
        l1_result $name console-detach ok "Ctrl-] ended vireo console with 0; domstate: $state"
    else
        l1_result $name console-detach fail "vireo console after Ctrl-]: exit '${rc1:-still running after 10 s}', domstate '$state'"
    fi
    (
        v console $dom </tmp/daemon.in2 >>/tmp/daemon.console 2>&1
        echo $? >/tmp/daemon.con2.rc
    ) &
    exec 4>/tmp/daemon.in2
    if wait_line $name "VIREO-READY attach" 150; then
        # The balloon: Linux's statistics reach dommemstat, and setmem
        # makes the guest give 32 MiB back (`actual` follows).
        n=0
        while ! v dommemstat $dom 2>/dev/null | grep -q '^unused ' && [ $n -lt 40 ]; do
            sleep 0.5
            n=$((n + 1))
        done
        stats=$(v dommemstat $dom 2>&1 | tr '\n' ' ')
        case "$stats" in
        *"unused "*"available "*"rss "*) l1_result $name dommemstat ok "$stats" ;;
        *) l1_result $name dommemstat fail "no guest statistics within 20 s: $stats" ;;
        esac
        verb setmem setmem $dom 224M --live
        n=0
        while [ "$(v dommemstat $dom 2>/dev/null | awk '$1=="actual"{print $2}')" != 229376 ] && [ $n -lt 60 ]; do
            sleep 0.5
            n=$((n + 1))
        done
        actual=$(v dommemstat $dom 2>/dev/null | awk '$1=="actual"{print $2}')
        if [ "$actual" = 229376 ]; then
            l1_result $name setmem-actual ok "setmem 224M: the guest's balloon reports actual $actual KiB"
        else
            l1_result $name setmem-actual fail "setmem 224M: actual '$actual' KiB after 30 s, not 229376"
        fi
        verb attach-disk attach-disk $dom /tmp/x.img vdb --subdriver raw --live
        list=$(v domblklist $dom 2>&1 | tr -s ' \n' ' ')
        case "$list" in
        *"vdb /tmp/x.img"*) l1_result $name domblklist-attached ok "$list" ;;
        *) l1_result $name domblklist-attached fail "no vdb /tmp/x.img in: $list" ;;
        esac
    else
        l1_result $name attach-disk fail "no VIREO-READY attach within 150 s"
    fi
    if wait_line $name "VIREO-READY detach" 150; then
        verb detach-disk detach-disk $dom vdb --live
    else
        l1_result $name detach-disk fail "no VIREO-READY detach within 150 s"
    fi
    if wait_line $name "VIREO-READY power-button" 150; then
        verb shutdown shutdown $dom
        n=0
        while [ "$(v domstate $dom 2>&1 | head -n 1)" != "shut off" ] && [ $n -lt 300 ]; do
            sleep 0.5
            n=$((n + 1))
        done
        state=$(v domstate $dom --reason 2>&1 | head -n 1)
        if [ "$state" = "shut off (shutdown)" ]; then
            l1_result $name domstate-shutoff ok "$state, $(awk "BEGIN{print $(now)-$t0}") s after start"
        else
            l1_result $name domstate-shutoff fail "domstate --reason after 150 s: '$state'"
        fi
    else
        l1_result $name shutdown fail "no VIREO-READY power-button within 150 s"
    fi
    # The second console ends by itself when the domain stops.
    n=0
    while [ ! -s /tmp/daemon.con2.rc ] && [ $n -lt 50 ]; do
        sleep 0.2
        n=$((n + 1))
    done
    exec 4>&-
    if [ "$(cat /tmp/daemon.con2.rc 2>/dev/null)" = 0 ]; then
        l1_result $name console-ends ok "the second vireo console ended with 0 when the domain stopped"
    else
        l1_result $name console-ends fail "the second vireo console: exit '$(cat /tmp/daemon.con2.rc 2>/dev/null)' (empty: still running 10 s after)"
    fi
    sleep 1
    kill $epid 2>/dev/null
    wait $epid 2>/dev/null
    ev=$(tr '\n' '|' </tmp/daemon.events)
    case "$ev" in
    *"'$dom': Defined"*"'$dom': Started Booted"*"'$dom': Stopped Shutdown"*) l1_result $name events ok "$ev" ;;
    *) l1_result $name events fail "want Defined, Started Booted, Stopped Shutdown in order: $ev" ;;
    esac
    sed 's/\r$//; s/^/L2| /' /tmp/daemon.console
    for f in $(find /tmp/vd -name '*.log'); do
        sed "s#^#LOG| $f: #" "$f"
    done
    sed 's/^/LOG| daemon: /' /tmp/daemon.dout /tmp/daemon.dlog 2>/dev/null
    # L2's results; the second console's replay repeats some of them.
    sed -n 's/\r$//; /^VIREO-RESULT /p' /tmp/daemon.console | awk '!seen[$0]++'
    kill $dpid 2>/dev/null
    wait $dpid 2>/dev/null
    rc=0
}

# L1's Debian root (make-debian-root.sh), for the scenarios that need real
# tools: run.sh attaches it as a virtio disk and says `vireo.debian=1`.
# deb_mount SCENARIO mounts it at /deb once, with L1's /proc, /sys, /dev,
# /tmp and /l2 bound in, a tmpfs /run, the static vireo at
# /usr/local/bin/vireo, and the kernel's module loader pointed at the
# Debian modprobe (its /lib/modules holds the kernel's modules, depmod
# run), so that nft, ip and the daemon get their modules loaded on demand.
# When L1 has no such disk it prints `VIREO-SKIP SCENARIO reason`; when
# run.sh failed to build it (`vireo.debian=failed-CODE`), or the disk is
# there and cannot be mounted, a failed check. 0 when mounted.
deb_mounted=
deb_mount() {
    [ -z "$deb_mounted" ] || return 0
    deb_arg=$(arg vireo.debian)
    case "$deb_arg" in
    failed-*)
        l1_result "$1" debian-root fail "run.sh could not build L1's Debian root (make-debian-root.sh exited ${deb_arg#failed-}; its output is in run.sh's stderr, its log in target/nested/debian/make-debian-root.log)"
        return 1
        ;;
    esac
    if [ "$deb_arg" != 1 ]; then
        echo "VIREO-SKIP $1 L1 has no Debian root: run.sh attaches it only for its DEBIAN_SCENARIOS, and only when make-debian-root.sh can build it here (root, apt, debootstrap; see run.sh's output)"
        return 1
    fi
    for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
        insmod "/modules/$m.ko" || echo "vireo-l1: insmod $m failed"
    done
    n=0
    while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do
        sleep 0.2
        n=$((n + 1))
    done
    mkdir -p /deb
    if ! mount -t ext4 /dev/vda /deb 2>/tmp/deb-mount.err; then
        l1_result "$1" debian-root fail "cannot mount L1's Debian root from /dev/vda: $(tr '\n' ' ' </tmp/deb-mount.err) (block devices: $(ls /sys/block | tr '\n' ' '))"
        return 1
    fi
    # What a full system's /dev has beyond devtmpfs (nft reads its rules
    # from /dev/stdin).
    ln -sf /proc/self/fd /dev/fd
    ln -sf /proc/self/fd/0 /dev/stdin
    ln -sf /proc/self/fd/1 /dev/stdout
    ln -sf /proc/self/fd/2 /dev/stderr
    mkdir -p /dev/pts /dev/shm
    mount -t devpts devpts /dev/pts
    for d in proc sys dev dev/pts tmp l2; do
        mount -o bind /$d /deb/$d
    done
    mount -t tmpfs tmpfs /deb/run
    cp /bin/vireo /deb/usr/local/bin/vireo
    printf '#!/bin/sh\nexec /bin/chroot /deb /sbin/modprobe "$@"\n' >/bin/deb-modprobe
    chmod 755 /bin/deb-modprobe
    echo /bin/deb-modprobe >/proc/sys/kernel/modprobe
    deb_mounted=1
    echo "vireo-l1: Debian root mounted: $(deb cat /etc/debian_version), $(df -m /deb | awk 'NR == 2 { print $3 }') MiB used"
}

# deb CMD...: CMD in L1's Debian root, with a clean environment.
deb() {
    chroot /deb /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LC_ALL=C "$@"
}

# QEMU's -numa (run.sh's VIREO_NESTED_NUMA=N, `vireo.numa=N` here): L1's
# kernel sees N nodes in /sys/devices/system/node, each with memory, and
# the CPUs run.sh put on them.
scenario_numa() {
    name=numa
    want=$(arg vireo.numa)
    if [ -z "$want" ]; then
        echo "VIREO-SKIP $name L1 was booted without NUMA nodes (run.sh adds QEMU's -numa options only with VIREO_NESTED_NUMA=N)"
        return
    fi
    sys=/sys/devices/system/node
    nodes=$(ls -d $sys/node[0-9]* 2>/dev/null | wc -l)
    online=$(cat $sys/online 2>/dev/null)
    if [ "$nodes" = "$want" ]; then
        l1_result $name node-count ok "$nodes nodes in $sys (online: $online), as QEMU's -numa gave"
    else
        l1_result $name node-count fail "want $want nodes in $sys, found $nodes ($(ls $sys 2>&1 | tr '\n' ' '))"
    fi
    per=
    bad=
    for d in $sys/node[0-9]*; do
        kb=$(sed -n 's/.*MemTotal: *\([0-9]*\) kB/\1/p' "$d/meminfo")
        per="$per $(basename "$d"): ${kb:-?} kB, cpus '$(cat "$d/cpulist")';"
        [ "${kb:-0}" -gt 0 ] || bad="$bad $(basename "$d")"
    done
    if [ -z "$bad" ] && [ "$nodes" -gt 0 ]; then
        l1_result $name node-memory ok "every node has memory:$per"
    else
        l1_result $name node-memory fail "nodes without memory:${bad:- none at all};$per"
    fi
    # The kernel's own account: NUMA set up from the firmware's SRAT.
    srat=$(dmesg | grep -E 'SRAT|NUMA: ' | head -n 16 | tr '\n' '|')
    case "$srat" in
    *"SRAT: Node 1"* | *"NODE_DATA(1)"* | *"Initmem setup node 1"*) l1_result $name srat ok "$srat" ;;
    *) l1_result $name srat fail "no node 1 in the kernel's NUMA setup lines: $srat $(dmesg | grep -i numa | head -n 4 | tr '\n' '|')" ;;
    esac
    rc=0
}

# issue 14: a stock Linux L2 with guest NUMA cells (vireo's SRAT and SLIT)
# reports its nodes: CPUs, memory and distances (l2-init.sh's numa).
# 2 cells, one per socket, a distance given one way; 4 cells with an
# asymmetric pair given both ways.
scenario_numa_guest_2() {
    name=numa-guest-2
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --cpus 2 --memory 1024M \
        --cpu-topology sockets=2,cores=1,threads=1 \
        --numa cell=0,memory=384M,cpus=0 --numa cell=1,memory=640M,cpus=1 \
        --numa-distance src=0,dst=1,value=21 \
        --cmdline "$L2_CMDLINE vireo.scenario=numa vireo.name=$name vireo.nodes=2 vireo.node0.cpus=0 vireo.node0.mib=384 vireo.node0.dist=10,21 vireo.node1.cpus=1 vireo.node1.mib=640 vireo.node1.dist=21,10"
    emit $name
    exit_check $name 0
}

scenario_numa_guest_4() {
    name=numa-guest-4
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --cpus 4 --memory 1024M \
        --cpu-topology sockets=4,cores=1,threads=1 \
        --numa cell=0,memory=256M,cpus=0 --numa cell=1,memory=256M,cpus=1 \
        --numa cell=2,memory=256M,cpus=2 --numa cell=3,memory=256M,cpus=3 \
        --numa-distance src=0,dst=1,value=15 --numa-distance src=1,dst=0,value=25 \
        --numa-distance src=2,dst=3,value=30 \
        --cmdline "$L2_CMDLINE vireo.scenario=numa vireo.name=$name vireo.nodes=4 vireo.node0.cpus=0 vireo.node0.mib=256 vireo.node0.dist=10,15,20,20 vireo.node1.cpus=1 vireo.node1.mib=256 vireo.node1.dist=25,10,20,20 vireo.node2.cpus=2 vireo.node2.mib=256 vireo.node2.dist=20,20,10,30 vireo.node3.cpus=3 vireo.node3.mib=256 vireo.node3.dist=20,20,30,10"
    emit $name
    exit_check $name 0
}

# numa_sample PID OUT: what the host says of vireo's placement now: its
# maps and numa_maps, and per thread its name, allowed CPUs and the CPU it
# last ran on (field 39 of stat; the name has no spaces here).
numa_sample() {
    cat /proc/$1/maps >$2.maps.new 2>/dev/null &&
        cat /proc/$1/numa_maps >$2.numa.new 2>/dev/null || return
    for t in /proc/$1/task/*; do
        echo "$(cat $t/comm) $(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' $t/status) $(cut -d' ' -f39 $t/stat)"
    done >$2.tasks.new 2>/dev/null
    # A sample taken while vireo tears the VM down (its vCPU threads
    # exiting or joined, the process not gone yet) says nothing of the
    # run: a thread read half (one that ended between the listing and its
    # status) or fewer vCPUs than the last kept sample mean the teardown
    # has begun, and the last whole sample is kept.
    awk 'NF != 3 { bad = 1 } END { exit bad }' $2.tasks.new || return
    n=$(grep -c '^vcpu' $2.tasks.new)
    [ "$n" -gt 0 ] || return
    [ ! -s $2.tasks ] || [ "$n" -ge "$(grep -c '^vcpu' $2.tasks)" ] || return
    mv $2.maps.new $2.maps
    mv $2.numa.new $2.numa
    mv $2.tasks.new $2.tasks
}

# numa_policy_of OUT BYTES: the numa_maps line of the mapping of exactly
# BYTES (each guest cell is the only mapping of its size).
numa_policy_of() {
    while read -r range rest; do
        s=${range%-*} e=${range#*-}
        if [ $((0x$e - 0x$s)) = "$2" ]; then
            grep "^$s " $1.numa
            return
        fi
    done <$1.maps
}

# In an L1 with two NUMA nodes (the `numa` boot): cell 0 bound to host
# node 0 and cell 1 to host node 1 (strict), vCPU i pinned to L1 CPU i
# (mod L1's CPUs), the emulator on CPU 0. L2 writes 160 MiB from a CPU of
# each of its nodes and holds; L1 samples vireo's numa_maps and threads
# every second while it runs and checks the last sample: each cell's
# mapping is bound to its node and its pages are there (N0=/N1= counts),
# and each thread runs where it was pinned.
scenario_numa_bind() {
    name=numa-bind
    if [ -z "$(arg vireo.numa)" ]; then
        echo "VIREO-SKIP $name L1 was booted without NUMA nodes (run.sh adds QEMU's -numa options only with VIREO_NESTED_NUMA=N)"
        return
    fi
    ncpu=$(nproc)
    c1=$((1 % ncpu))
    out=/tmp/numa-bind.sample
    rm -f $out.*
    (
        while :; do
            p=$(pidof vireo)
            [ -z "$p" ] || numa_sample "$p" $out
            sleep 1
        done
    ) </dev/null >/dev/null 2>&1 &
    sampler=$!
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --cpus 2 --memory 1024M \
        --cpu-topology sockets=2,cores=1,threads=1 \
        --numa cell=0,memory=384M,cpus=0,host-nodes=0,policy=strict \
        --numa cell=1,memory=640M,cpus=1,host-nodes=1,policy=strict \
        --vcpu-pin 0:0 --vcpu-pin 1:$c1 --emulator-pin 0 \
        --cmdline "$L2_CMDLINE vireo.scenario=numa vireo.name=$name vireo.nodes=2 vireo.node0.cpus=0 vireo.node0.mib=384 vireo.node0.dist=10,20 vireo.node1.cpus=1 vireo.node1.mib=640 vireo.node1.dist=20,10 vireo.touch=160 vireo.hold=6"
    kill $sampler 2>/dev/null
    emit $name
    exit_check $name 0
    if [ ! -s $out.numa ]; then
        l1_result $name numa-maps fail "no sample of vireo's numa_maps was taken"
        return
    fi
    grep -q VIREO-NUMA-TOUCHED /tmp/$name.console ||
        l1_result $name touched fail "L2 never said it had written its memory"
    # At least 64 MiB (16384 pages) of each cell on its node, none elsewhere.
    # Cell 0's mapping is 382 MiB: the first 2 MiB of guest RAM stay out of
    # the THP advice, a mapping of their own.
    for cell in "0 400556032" "1 671088640"; do
        set -- $cell
        line=$(numa_policy_of $out $2)
        pages=$(echo "$line" | sed -n "s/.* N$1=\([0-9]*\).*/\1/p")
        other=$(echo "$line" | grep -o "N[0-9]*=" | grep -v "^N$1=")
        case "$line" in
        *" bind:$1 "*)
            if [ "${pages:-0}" -ge 16384 ] && [ -z "$other" ]; then
                l1_result $name cell$1-on-node$1 ok "$line"
            else
                l1_result $name cell$1-on-node$1 fail "want 16384+ pages on N$1 and none elsewhere: ${line:-no mapping of $2 bytes}"
            fi
            ;;
        *) l1_result $name cell$1-on-node$1 fail "not bound to node $1: ${line:-no mapping of $2 bytes in $(tr '\n' ' ' <$out.maps | cut -c1-600)}" ;;
        esac
    done
    tasks=$(tr '\n' '|' <$out.tasks)
    for want in "vcpu0 0 0" "vcpu1 $c1 $c1" "vireo 0 0"; do
        set -- $want
        got=$(grep "^$1 " $out.tasks | head -n 1)
        if [ "$got" = "$want" ]; then
            l1_result $name pin-$1 ok "name, allowed CPUs, last CPU: $got (all: $tasks)"
        else
            l1_result $name pin-$1 fail "want '$want', got '$got' (all: $tasks)"
        fi
    done
}

# issue 12 with a stock Linux guest: `vireo daemon`, in a network
# namespace of L1's Debian root, runs a NAT network (libvirt network XML,
# 192.0.2.0/24, DHCP by the daemon's dnsmasq, a dns/host entry) and an L2
# domain with a NIC on it. L2's /init (l2-init.sh's dhcp) brings eth0 up
# with busybox udhcpc and reports the address it got, resolves the
# dns/host name through the network's dnsmasq, pings a server in the
# "upstream" namespace and talks TCP to it with busybox nc. L1 checks
# `net-dhcp-leases` and `domifaddr` list that address for the NIC's MAC,
# that the upstream server saw the masqueraded address (198.51.100.1, not
# L2's), and that net-destroy leaves no bridge, nftables table or dnsmasq.
# In the same L2 boot, 802.1Q: L2 tags its own frames (eth0.10, then
# eth0.20) and reaches only the peer on its VLAN.
#     vhost ns:    vireo daemon, virbr (192.0.2.1/24), up0 198.51.100.1/24,
#                  vp10 and vp20 ports of virbr
#     upstream ns: up1 198.51.100.2/24, nc -l 7777
#     vlanID ns:   eth0 (peer of vpID), eth0.ID (VLAN ID) 203.0.113.ID/24
scenario_net_nat() {
    name=net-nat dom=l2-dhcp net=nat0 mac=52:54:00:c0:00:02 sock=/tmp/vn.sock
    rm -rf /tmp/vn /tmp/vn.* /tmp/net-nat.*
    v() {
        deb vireo -c "vireo+unix:///system?socket=$sock" "$@"
    }
    t0=$(now)
    deb ip netns add vhost
    deb ip netns add upstream
    deb ip -n vhost link set lo up
    deb ip -n upstream link set lo up
    deb ip -n vhost link add up0 type veth peer name up1 netns upstream
    deb ip -n vhost addr add 198.51.100.1/24 dev up0
    deb ip -n vhost link set up0 up
    deb ip -n upstream addr add 198.51.100.2/24 dev up1
    deb ip -n upstream link set up1 up
    # The upstream server: answers one connection, and its -v line names
    # the peer address it saw.
    (deb ip netns exec upstream sh -c 'echo vireo-upstream-reply | timeout 400 nc -l -n -N -v 198.51.100.2 7777' \
        >/tmp/net-nat.up-got 2>/tmp/net-nat.up-err) &
    uppid=$!
    deb ip netns exec vhost vireo daemon --state-dir /tmp/vn --socket $sock --log /tmp/vn.dlog \
        </dev/null >/tmp/vn.dout 2>&1 &
    dpid=$!
    n=0
    while [ ! -S $sock ] && [ $n -lt 150 ] && kill -0 $dpid 2>/dev/null; do
        sleep 0.2
        n=$((n + 1))
    done
    if ! verb daemon-up list --all; then
        sed 's/^/LOG| daemon: /' /tmp/vn.dout /tmp/vn.dlog 2>/dev/null
        kill $dpid $uppid 2>/dev/null
        deb ip netns del vhost
        deb ip netns del upstream
        rc=0
        return
    fi
    echo "vireo-l1: $name: namespaces and daemon up at $(awk "BEGIN{print $(now)-$t0}") s"
    cat >/tmp/net-nat.net.xml <<EOF
<network>
  <name>$net</name>
  <forward mode='nat'/>
  <ip address='192.0.2.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.0.2.100' end='192.0.2.150'/>
    </dhcp>
  </ip>
  <ip family='ipv6' address='2001:db8:c0::1' prefix='64'>
    <dhcp>
      <range start='2001:db8:c0::100' end='2001:db8:c0::1ff'/>
    </dhcp>
  </ip>
  <dns>
    <host ip='192.0.2.7'><hostname>seven.example</hostname></host>
  </dns>
</network>
EOF
    word=$(dd if=/dev/urandom bs=6 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    cat >/tmp/net-nat.dom.xml <<EOF
<domain type='kvm'>
  <name>$dom</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>$L2_KERNEL</kernel>
    <initrd>$L2_INITRD</initrd>
    <cmdline>$L2_CMDLINE vireo.scenario=dhcp vireo.name=$name vireo.subnet=192.0.2 vireo.range=100-150 vireo.upstream=198.51.100.2 vireo.word=$word vireo.dns_name=seven.example vireo.dns_ip=192.0.2.7 vireo.gw6=2001:db8:c0::1 vireo.vlan_net=203.0.113</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <interface type='network'>
      <source network='$net'/>
      <mac address='$mac'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'/>
  </devices>
</domain>
EOF
    if verb net-define net-define /tmp/net-nat.net.xml && verb net-start net-start $net &&
        verb define define /tmp/net-nat.dom.xml; then
        bridge=$(v net-info $net 2>&1 | sed -n 's/^Bridge: *//p')
        echo "vireo-l1: $name: network $net on bridge '$bridge': $(deb ip -n vhost -o addr show dev "$bridge" 2>&1 | tr -s ' ' | tr '\n' ' ')"
        echo "vireo-l1: $name: nftables in vhost: $(deb ip netns exec vhost nft list tables 2>&1 | tr '\n' ' ')"
        # VLAN peers: namespace vlanID joined by veth to the network's
        # bridge, with a VLAN device for ID on it (203.0.113.ID/24): L2
        # tags its own frames (eth0.ID) and reaches only its VLAN's peer.
        for id in 10 20; do
            deb ip netns add vlan$id
            deb ip -n vlan$id link set lo up
            deb ip -n vhost link add vp$id type veth peer name eth0 netns vlan$id
            deb ip -n vhost link set vp$id master "$bridge" up
            deb ip -n vlan$id link add link eth0 name eth0.$id type vlan id $id
            deb ip -n vlan$id addr add 203.0.113.$id/24 dev eth0.$id
            deb ip -n vlan$id link set eth0 up
            deb ip -n vlan$id link set eth0.$id up
        done
        echo "vireo-l1: $name: VLAN peers: $(deb ip -n vlan10 -o addr show dev eth0.10 | tr -s ' ') / $(deb ip -n vlan20 -o addr show dev eth0.20 | tr -s ' ')"
        # The console client's input: a FIFO this shell holds open.
        mkfifo /tmp/net-nat.in
        exec 5<>/tmp/net-nat.in
        if verb start start $dom; then
            (v console $dom </tmp/net-nat.in >/tmp/net-nat.console 2>&1) &
            cpid=$!
            if wait_line $name "VIREO-READY upstream" 240; then
                ip=$(value $name dhcp-ip)
                leases=$(v net-dhcp-leases $net 2>&1)
                case "$leases" in
                *"$mac"*"$ip/24"*) l1_result $name net-dhcp-leases ok "$(echo "$leases" | tr -s ' \n' ' ')" ;;
                *) l1_result $name net-dhcp-leases fail "want $mac with $ip/24 (the address L2 got) in: $(echo "$leases" | tr -s ' \n' ' ')" ;;
                esac
                addrs=$(v domifaddr $dom 2>&1)
                case "$addrs" in
                *"$mac"*"$ip/24"*) l1_result $name domifaddr ok "$(echo "$addrs" | tr -s ' \n' ' ')" ;;
                *) l1_result $name domifaddr fail "want $mac with $ip/24 in: $(echo "$addrs" | tr -s ' \n' ' ')" ;;
                esac
                # The DHCPv6 lease (dnsmasq knows the MAC from the
                # client's link-layer DUID), from the IPv6 range.
                ip6=$(value $name dhcp6-ip)
                case "$ip6" in
                2001:db8:c0::1[0-9a-f][0-9a-f])
                    row=$(echo "$leases" | grep -F " $ip6/64 ")
                    case "$row" in
                    *"$mac"*ipv6*) l1_result $name net-dhcp-leases-v6 ok "$(echo "$row" | tr -s ' ')" ;;
                    *) l1_result $name net-dhcp-leases-v6 fail "want a row with $mac, ipv6 and $ip6/64 in: $(echo "$leases" | tr -s ' \n' ' ')" ;;
                    esac
                    ;;
                *) l1_result $name net-dhcp-leases-v6 fail "L2's DHCPv6 address '$ip6' is not in 2001:db8:c0::100-1ff" ;;
                esac
            else
                l1_result $name l2-ready fail "no VIREO-READY upstream on L2's console within 240 s of start"
            fi
            verb destroy destroy $dom
            kill $cpid 2>/dev/null
        fi
        exec 5>&-
        # The upstream server saw the network's NAT address, not L2's.
        sleep 1
        kill $uppid 2>/dev/null
        got=$(tr -d '\r' </tmp/net-nat.up-got)
        peer=$(tr '\n' ' ' </tmp/net-nat.up-err)
        case "$peer" in
        *"198.51.100.1 "*)
            if [ "$got" = "$word" ]; then
                l1_result $name upstream-nat ok "the upstream server received '$got' from L2 with the masqueraded address: $peer"
            else
                l1_result $name upstream-nat fail "the upstream server got '$got', want '$word' ($peer)"
            fi
            ;;
        *) l1_result $name upstream-nat fail "the upstream server saw no connection from 198.51.100.1 (the NAT address): '$peer', got '$got'" ;;
        esac
        verb net-destroy net-destroy $net
        left=
        [ -z "$bridge" ] || ! deb ip -n vhost link show dev "$bridge" >/dev/null 2>&1 || left="$left bridge $bridge;"
        tables=$(deb ip netns exec vhost nft list tables 2>&1)
        case "$tables" in *vireo*) left="$left nft: $tables;" ;; esac
        dm=$(deb pgrep -a dnsmasq)
        [ -z "$dm" ] || left="$left dnsmasq: $dm;"
        if [ -z "$left" ]; then
            l1_result $name net-destroy-clean ok "no bridge, vireo nftables table or dnsmasq left in vhost (links: $(deb ip -n vhost -o link show | cut -d: -f2 | tr -d ' ' | tr '\n' ' '))"
        else
            l1_result $name net-destroy-clean fail "left after net-destroy:$left"
        fi
    fi
    sed 's/\r$//; s/^/L2| /' /tmp/net-nat.console 2>/dev/null
    for f in $(find /tmp/vn -name '*.log' -o -name dnsmasq.err); do
        sed "s#^#LOG| $f: #" "$f"
    done
    sed 's/^/LOG| daemon: /' /tmp/vn.dout /tmp/vn.dlog 2>/dev/null
    sed -n 's/\r$//; /^VIREO-RESULT /p' /tmp/net-nat.console 2>/dev/null | awk '!seen[$0]++'
    kill $dpid $uppid 2>/dev/null
    wait $dpid 2>/dev/null
    deb ip netns del vhost
    deb ip netns del upstream
    deb ip netns del vlan10 2>/dev/null
    deb ip netns del vlan20 2>/dev/null
    echo "vireo-l1: $name: done at $(awk "BEGIN{print $(now)-$t0}") s"
    rc=0
}

# pool_guest SCENARIO POOL VOLUME SECTORS PATH: an L2 domain of the
# daemon `v` talks to, with `<disk type='volume'>` on POOL's VOLUME (raw,
# SECTORS long); L1 puts a marker at the start of PATH (where the volume's
# data is, seen from L1) and after the guest has powered off finds the
# word it wrote at 1 MiB. While the domain runs, vol-delete is refused.
pool_guest() {
    pg_name=$1 pg_pool=$2 pg_vol=$3 pg_sectors=$4 pg_path=$5 pg_dom=l2-vol
    marker=vireo-l1-vol-$(date +%s)
    word=l2-wrote-$(dd if=/dev/urandom bs=6 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    cat >/tmp/$pg_name.dom.xml <<EOF
<domain type='kvm'>
  <name>$pg_dom</name>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>$L2_KERNEL</kernel>
    <initrd>$L2_INITRD</initrd>
    <cmdline>$L2_CMDLINE vireo.scenario=volume vireo.name=$pg_name vireo.marker=$marker vireo.word=$word vireo.sectors=$pg_sectors</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='volume' device='disk'>
      <driver name='qemu' type='raw'/>
      <source pool='$pg_pool' volume='$pg_vol'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'/>
  </devices>
</domain>
EOF
    printf '%s' "$marker" | dd of="$pg_path" conv=fsync,notrunc 2>/dev/null
    mkfifo /tmp/$pg_name.in
    exec 5<>/tmp/$pg_name.in
    if verb define define /tmp/$pg_name.dom.xml && verb start start $pg_dom; then
        (v console $pg_dom </tmp/$pg_name.in >/tmp/$pg_name.console 2>&1) &
        pg_cpid=$!
        if out=$(v vol-delete $pg_vol --pool $pg_pool 2>&1); then
            l1_result $pg_name vol-delete-in-use fail "vol-delete of the running domain's volume succeeded: $out"
        else
            l1_result $pg_name vol-delete-in-use ok "refused: $out"
        fi
        n=0
        while [ "$(v domstate $pg_dom 2>/dev/null | head -n 1)" = running ] && [ $n -lt 1200 ]; do
            sleep 0.2
            n=$((n + 1))
        done
        kill $pg_cpid 2>/dev/null
        state=$(v domstate $pg_dom 2>&1 | head -n 1)
        if [ "$state" = "shut off" ]; then
            l1_result $pg_name l2-done ok "the domain powered off ($(v domstate $pg_dom --reason 2>&1 | head -n 1))"
        else
            l1_result $pg_name l2-done fail "the domain is '$state' 240 s after start"
            v destroy $pg_dom >/dev/null 2>&1
        fi
        got=$(dd if="$pg_path" bs=512 skip=2048 count=1 2>/dev/null | tr -d '\0')
        if [ "$got" = "$word" ]; then
            l1_result $pg_name l2-write-on-volume ok "$pg_path holds '$got' at 1 MiB, as L2 wrote"
        else
            l1_result $pg_name l2-write-on-volume fail "$pg_path holds '$got' at 1 MiB, want '$word'"
        fi
    fi
    exec 5>&-
    verb undefine undefine $pg_dom
    sed 's/\r$//; s/^/L2| /' /tmp/$pg_name.console 2>/dev/null
    sed -n 's/\r$//; /^VIREO-RESULT /p' /tmp/$pg_name.console 2>/dev/null | awk '!seen[$0]++'
}

# issue 13's `logical` pool with a stock Linux guest: `vireo daemon` in
# L1 (whose kernel has device-mapper) builds a volume group on a loop
# device through Debian's lvm2, makes a logical volume, and an L2 domain
# with `<disk type='volume'>` on it reads L1's marker and writes its own,
# which L1 then finds on the LV. Then resize, delete and pool-delete, with
# LVM's own reports as the oracle; nothing of the pool is left.
scenario_pool_logical() {
    name=pool-logical pool=vgp sock=/tmp/vl.sock
    rm -rf /tmp/vl /tmp/vl.* /tmp/pool-logical.* /tmp/lvmp
    v() {
        deb env LVM_SYSTEM_DIR=/tmp/lvmp vireo -c "vireo+unix:///system?socket=$sock" "$@"
    }
    lvmq() {
        deb env LVM_SYSTEM_DIR=/tmp/lvmp LVM_SUPPRESS_FD_WARNINGS=1 lvm "$@" 2>&1
    }
    # No udev in L1: LVM makes its device nodes itself.
    mkdir -p /tmp/lvmp
    cat >/tmp/lvmp/lvm.conf <<EOF
devices {
    use_devicesfile = 0
    obtain_device_list_from_udev = 0
    filter = [ "a|^/dev/loop|", "r|.*|" ]
}
activation {
    udev_sync = 0
    udev_rules = 0
}
EOF
    deb modprobe -a loop dm-mod
    dd if=/dev/zero of=/tmp/pool-logical.img bs=1M count=0 seek=256 2>/dev/null
    loopdev=$(deb losetup -f --show /tmp/pool-logical.img 2>&1)
    case "$loopdev" in
    /dev/loop*) ;;
    *)
        l1_result $name loop-device fail "losetup: $loopdev"
        rc=0
        return
        ;;
    esac
    deb env LVM_SYSTEM_DIR=/tmp/lvmp vireo daemon --state-dir /tmp/vl --socket $sock --log /tmp/vl.dlog \
        </dev/null >/tmp/vl.dout 2>&1 &
    dpid=$!
    n=0
    while [ ! -S $sock ] && [ $n -lt 150 ] && kill -0 $dpid 2>/dev/null; do
        sleep 0.2
        n=$((n + 1))
    done
    cat >/tmp/pool-logical.pool.xml <<EOF
<pool type='logical'>
  <name>$pool</name>
  <source>
    <device path='$loopdev'/>
    <name>$pool</name>
    <format type='lvm2'/>
  </source>
  <target><path>/dev/$pool</path></target>
</pool>
EOF
    if verb daemon-up list --all && verb pool-define pool-define /tmp/pool-logical.pool.xml &&
        verb pool-build pool-build $pool && verb pool-start pool-start $pool &&
        verb vol-create-as vol-create-as $pool lv0 32M; then
        lvs=$(lvmq lvs --noheadings --units b --nosuffix -o lv_name,lv_size $pool | tr -s ' ')
        case "$lvs" in
        *"lv0 33554432"*) l1_result $name lvs ok "lvs: $lvs; vgs: $(lvmq vgs --noheadings -o vg_name,pv_count,vg_size $pool | tr -s ' ')" ;;
        *) l1_result $name lvs fail "lvs does not show lv0 of 32 MiB: '$lvs'" ;;
        esac
        listed=$(v vol-list $pool --details 2>&1)
        case "$listed" in
        *"lv0"*"/dev/$pool/lv0"*"block"*) l1_result $name vol-list ok "$(echo "$listed" | tr -s ' \n' ' ')" ;;
        *) l1_result $name vol-list fail "$(echo "$listed" | tr -s ' \n' ' ')" ;;
        esac
        pool_guest $name $pool lv0 65536 /dev/$pool/lv0
        if out=$(v vol-resize lv0 16M --pool $pool 2>&1); then
            l1_result $name shrink-refused fail "vol-resize to 16M without --shrink succeeded: $out"
        else
            l1_result $name shrink-refused ok "refused: $out"
        fi
        verb vol-resize vol-resize lv0 64M --pool $pool
        size=$(lvmq lvs --noheadings --units b --nosuffix -o lv_size $pool/lv0 | tr -d ' ')
        if [ "$size" = 67108864 ]; then
            l1_result $name lv-resized ok "lvs: lv0 is $size bytes"
        else
            l1_result $name lv-resized fail "lvs: lv0 is '$size' bytes, want 67108864"
        fi
        verb pool-info pool-info $pool
        verb vol-delete vol-delete lv0 --pool $pool
        verb pool-destroy pool-destroy $pool
        verb pool-delete pool-delete $pool
        verb pool-undefine pool-undefine $pool
        left="$(lvmq vgs --noheadings -o vg_name | tr -d ' ')$(lvmq pvs --noheadings -o pv_name | tr -d ' ')"
        if [ -z "$left" ]; then
            l1_result $name pool-gone ok "no volume group or physical volume left; device-mapper: $(deb dmsetup ls 2>&1 | tr '\n' ' ')"
        else
            l1_result $name pool-gone fail "left after pool-delete: '$left'"
        fi
    fi
    sed 's/^/LOG| daemon: /' /tmp/vl.dout /tmp/vl.dlog 2>/dev/null
    for f in $(find /tmp/vl -name '*.log'); do
        sed "s#^#LOG| $f: #" "$f"
    done
    kill $dpid 2>/dev/null
    wait $dpid 2>/dev/null
    lvmq vgchange -an $pool >/dev/null
    case "$loopdev" in /dev/loop*) deb losetup -d "$loopdev" ;; esac
    rm -f /tmp/pool-logical.img
    rc=0
}

# netfs_two_hosts (inside scenario_pool_netfs, after pool_guest): a second
# daemon ("host-b", its own state dir, socket and mount point) defines the
# same NFS pool and sees the same volume; while host-a's domain runs on it,
# host-b's start of the same definition is refused by the volume's lease,
# naming the holder; once host-a's guest has powered off, host-b's starts.
netfs_two_hosts() {
    sock2=/tmp/vf2.sock
    rm -rf /tmp/vf2 /tmp/vf2.*
    v2() {
        deb vireo -c "vireo+unix:///system?socket=$sock2" "$@"
    }
    deb vireo daemon --state-dir /tmp/vf2 --socket $sock2 --host-id host-b --log /tmp/vf2.dlog </dev/null >/tmp/vf2.dout 2>&1 &
    dpid2=$!
    n=0
    while [ ! -S $sock2 ] && [ $n -lt 150 ] && kill -0 $dpid2 2>/dev/null; do
        sleep 0.2
        n=$((n + 1))
    done
    out=$(v2 pool-define-as $pool netfs --source-host 127.0.0.1 --source-path $export --source-format nfs --target $mnt-b 2>&1 &&
        v2 pool-build $pool 2>&1 && v2 pool-start $pool 2>&1 && v2 vol-list $pool 2>&1)
    case "$out" in
    *"v1"*"$mnt-b/v1"*) l1_result $name host-b-sees-volume ok "$(echo "$out" | tr -s ' \n' ' ')" ;;
    *) l1_result $name host-b-sees-volume fail "$(echo "$out" | tr -s ' \n' ' ')" ;;
    esac
    sed "s#$mnt/#$mnt-b/#g" /tmp/$name.dom.xml >/tmp/$name.dom-b.xml
    v2 define /tmp/$name.dom-b.xml >/dev/null 2>&1
    if verb host-a-start define /tmp/$name.dom.xml && verb host-a-start start l2-vol; then
        if out=$(v2 start l2-vol 2>&1); then
            l1_result $name lease-refuses fail "host-b started l2-vol while host-a runs it: $out"
        else
            case "$out" in
            *"host-a"*) l1_result $name lease-refuses ok "host-b: $out" ;;
            *) l1_result $name lease-refuses fail "refused without naming host-a: $out" ;;
            esac
        fi
        n=0
        while [ "$(v domstate l2-vol 2>/dev/null | head -n 1)" = running ] && [ $n -lt 1200 ]; do
            sleep 0.2
            n=$((n + 1))
        done
        if out=$(v2 start l2-vol 2>&1); then
            l1_result $name lease-released ok "host-a's guest powered off; host-b: $out"
            n=0
            while [ "$(v2 domstate l2-vol 2>/dev/null | head -n 1)" = running ] && [ $n -lt 1200 ]; do
                sleep 0.2
                n=$((n + 1))
            done
        else
            l1_result $name lease-released fail "host-b still refused after host-a's guest ended ($(v domstate l2-vol 2>&1 | head -n 1)): $out"
        fi
    fi
    v2 destroy l2-vol >/dev/null 2>&1
    v destroy l2-vol >/dev/null 2>&1
    v2 undefine l2-vol >/dev/null 2>&1
    v undefine l2-vol >/dev/null 2>&1
    v2 pool-destroy $pool >/dev/null 2>&1
    v2 pool-delete $pool >/dev/null 2>&1
    v2 pool-undefine $pool >/dev/null 2>&1
    kill $dpid2 2>/dev/null
    wait $dpid2 2>/dev/null
}

# issue 13's `netfs` pool with a stock Linux guest: L1's kernel NFS server
# (nfs-kernel-server in the Debian root) exports a directory; `vireo
# daemon` in L1 mounts it through the kernel's client as a netfs pool,
# makes a raw volume on it, and an L2 domain with `<disk type='volume'>`
# reads L1's marker and writes a word that L1 then finds in the exported
# directory itself (the server's side). pool-destroy unmounts; a restart
# of the pool finds the volume again; nothing is left mounted at the end.
scenario_pool_netfs() {
    name=pool-netfs pool=nfsp sock=/tmp/vf.sock export=/srv/vireo-nfs mnt=/tmp/nfs-pool nfsd_up=
    rm -rf /tmp/vf /tmp/vf.* /tmp/pool-netfs.* $mnt
    v() {
        deb vireo -c "vireo+unix:///system?socket=$sock" "$@"
    }
    # The server: nfsd's filesystem, rpcbind, the export, mountd, nfsd.
    : >/tmp/pool-netfs.server
    deb modprobe -a nfsd nfs nfsv4 >>/tmp/pool-netfs.server 2>&1
    mkdir -p /deb$export
    chmod 777 /deb$export
    echo "$export 127.0.0.1(rw,sync,no_root_squash,no_subtree_check,insecure)" >/deb/etc/exports
    deb mount -t nfsd nfsd /proc/fs/nfsd >>/tmp/pool-netfs.server 2>&1
    deb rpcbind -w >>/tmp/pool-netfs.server 2>&1
    deb exportfs -ra >>/tmp/pool-netfs.server 2>&1
    deb rpc.mountd >>/tmp/pool-netfs.server 2>&1
    # NFSv4 holds new opens through a grace period after nfsd starts (90 s
    # by default): 10 s, and the scenario waits it out.
    if deb rpc.nfsd --grace-time 10 --lease-time 10 4 >>/tmp/pool-netfs.server 2>&1 &&
        deb exportfs -v 2>&1 | grep -q "$export"; then
        nfsd_up=$(now)
        l1_result $name nfs-server ok "exported: $(deb exportfs -v 2>&1 | tr -s ' \t\n' ' ')"
    else
        l1_result $name nfs-server fail "$(tr '\n' ' ' </tmp/pool-netfs.server) exportfs: $(deb exportfs -v 2>&1 | tr '\n' ' ')"
    fi
    while [ -n "${nfsd_up:-}" ] && awk -v a="$nfsd_up" -v b="$(now)" 'BEGIN { exit !(b - a < 11) }'; do
        sleep 0.5
    done
    deb vireo daemon --state-dir /tmp/vf --socket $sock --host-id host-a --log /tmp/vf.dlog </dev/null >/tmp/vf.dout 2>&1 &
    dpid=$!
    n=0
    while [ ! -S $sock ] && [ $n -lt 150 ] && kill -0 $dpid 2>/dev/null; do
        sleep 0.2
        n=$((n + 1))
    done
    if verb daemon-up list --all &&
        verb pool-define-as pool-define-as $pool netfs --source-host 127.0.0.1 --source-path $export --source-format nfs --target $mnt &&
        verb pool-build pool-build $pool && verb pool-start pool-start $pool; then
        m=$(deb cat /proc/mounts | awk -v t="$mnt" '$2 == t { print $1, $3 }')
        case "$m" in
        "127.0.0.1:$export nfs"*) l1_result $name mounted ok "/proc/mounts: $m on $mnt" ;;
        *) l1_result $name mounted fail "/proc/mounts has '$m' on $mnt" ;;
        esac
        if verb vol-create-as vol-create-as $pool v1 32M --format raw; then
            size=$(stat -c %s /deb$export/v1 2>&1)
            if [ "$size" = 33554432 ]; then
                l1_result $name server-file ok "the server's $export/v1 is $size bytes"
            else
                l1_result $name server-file fail "the server's $export/v1: '$size'"
            fi
            pool_guest $name $pool v1 65536 /deb$export/v1
            netfs_two_hosts
        fi
        # An export the server does not have: pool-start fails in one line
        # and leaves nothing mounted.
        v pool-define-as nfsbad netfs --source-host 127.0.0.1 --source-path /srv/no-such-export \
            --source-format nfs --target $mnt-bad >/dev/null 2>&1
        if out=$(v pool-start nfsbad 2>&1); then
            l1_result $name bad-export fail "pool-start of a missing export succeeded: $out"
        else
            lines=$(printf '%s\n' "$out" | grep -c .)
            m=$(deb cat /proc/mounts | awk -v t="$mnt-bad" '$2 == t')
            if [ "$lines" = 1 ] && [ -z "$m" ]; then
                l1_result $name bad-export ok "one line, nothing mounted: $out"
            else
                l1_result $name bad-export fail "$lines lines, mounted: '$m': $out"
            fi
        fi
        v pool-undefine nfsbad >/dev/null 2>&1
        verb pool-destroy pool-destroy $pool
        m=$(deb cat /proc/mounts | awk -v t="$mnt" '$2 == t')
        if [ -z "$m" ]; then
            l1_result $name unmounted ok "nothing mounted on $mnt after pool-destroy"
        else
            l1_result $name unmounted fail "still mounted: $m"
        fi
        verb pool-start-again pool-start $pool
        listed=$(v vol-list $pool 2>&1)
        case "$listed" in
        *"v1"*"$mnt/v1"*) l1_result $name vol-list-again ok "$(echo "$listed" | tr -s ' \n' ' ')" ;;
        *) l1_result $name vol-list-again fail "$(echo "$listed" | tr -s ' \n' ' ')" ;;
        esac
        verb vol-delete vol-delete v1 --pool $pool
        if [ -e /deb$export/v1 ]; then
            l1_result $name server-file-gone fail "the server's $export/v1 is still there"
        else
            l1_result $name server-file-gone ok "the server's $export/v1 is gone"
        fi
        verb pool-destroy-again pool-destroy $pool
        verb pool-delete pool-delete $pool
        verb pool-undefine pool-undefine $pool
        if [ -e $mnt ] || deb cat /proc/mounts | awk -v t="$mnt" '$2 == t { f = 1 } END { exit !f }'; then
            l1_result $name pool-gone fail "$mnt is still there or mounted"
        else
            l1_result $name pool-gone ok "$mnt unmounted and removed"
        fi
    fi
    sed 's/^/LOG| daemon: /' /tmp/vf.dout /tmp/vf.dlog 2>/dev/null
    sed 's/^/LOG| daemon host-b: /' /tmp/vf2.dout /tmp/vf2.dlog 2>/dev/null
    for f in $(find /tmp/vf -name '*.log'); do
        sed "s#^#LOG| $f: #" "$f"
    done
    kill $dpid 2>/dev/null
    wait $dpid 2>/dev/null
    umount $mnt 2>/dev/null
    deb rpc.nfsd 0 >/dev/null 2>&1
    deb exportfs -ua >/dev/null 2>&1
    deb pkill rpc.mountd
    deb pkill rpcbind
    umount /deb/proc/fs/nfsd 2>/dev/null
    rm -rf /deb$export
    rc=0
}

# issue 13's `iscsi` pool with a stock Linux guest: tgtd in L1 serves a
# target with one file-backed LUN; `vireo daemon` logs in through L1's
# kernel initiator (open-iscsi's iscsiadm and iscsid) as an iscsi pool;
# the LUN shows as volume unit:0:0:1 (a SCSI disk of L1); an L2 domain with
# `<disk type='volume'>` on it reads L1's marker and writes a word that L1
# then finds in the LUN's backing file on the target's side. pool-destroy
# logs out: no session is left.
scenario_pool_iscsi() {
    name=pool-iscsi pool=isp sock=/tmp/vi.sock iqn=iqn.2026-11.org.vireo:l1-target lunfile=/tmp/pool-iscsi.lun1
    rm -rf /tmp/vi /tmp/vi.* /tmp/pool-iscsi.*
    v() {
        deb vireo -c "vireo+unix:///system?socket=$sock" "$@"
    }
    : >/tmp/pool-iscsi.setup
    deb modprobe -a iscsi_tcp sd_mod >>/tmp/pool-iscsi.setup 2>&1
    dd if=/dev/zero of=$lunfile bs=1M count=0 seek=64 2>/dev/null
    # The target: tgtd with one LUN, open to every initiator.
    mkdir -p /deb/run/tgtd /deb/var/run
    deb tgtd >>/tmp/pool-iscsi.setup 2>&1
    n=0
    while ! deb tgtadm --lld iscsi --op show --mode target >/dev/null 2>&1 && [ $n -lt 50 ]; do
        sleep 0.2
        n=$((n + 1))
    done
    deb tgtadm --lld iscsi --op new --mode target --tid 1 -T $iqn >>/tmp/pool-iscsi.setup 2>&1
    deb tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b $lunfile >>/tmp/pool-iscsi.setup 2>&1
    deb tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL >>/tmp/pool-iscsi.setup 2>&1
    # The initiator's daemon, with a name of its own. iscsiadm keeps its
    # records under /etc/iscsi and locks them in /run/lock/iscsi (L1's
    # /run is a fresh tmpfs, with no lock directory).
    mkdir -p /deb/etc/iscsi/nodes /deb/etc/iscsi/send_targets /deb/etc/iscsi/ifaces /deb/run/lock/iscsi
    echo "InitiatorName=iqn.2026-11.org.vireo:l1-initiator" >/deb/etc/iscsi/initiatorname.iscsi
    deb iscsid >>/tmp/pool-iscsi.setup 2>&1
    sleep 0.5
    shown=$(deb tgtadm --lld iscsi --op show --mode target 2>&1)
    case "$shown" in
    *"$iqn"*"LUN: 1"*) l1_result $name target ok "tgtd serves $iqn with LUN 1 ($lunfile, 64 MiB); iscsid: $(deb pgrep -x iscsid | tr '\n' ' ')" ;;
    *) l1_result $name target fail "$(echo "$shown" | tr '\n' ' ') setup: $(tr '\n' ' ' </tmp/pool-iscsi.setup)" ;;
    esac
    deb vireo daemon --state-dir /tmp/vi --socket $sock --log /tmp/vi.dlog </dev/null >/tmp/vi.dout 2>&1 &
    dpid=$!
    n=0
    while [ ! -S $sock ] && [ $n -lt 150 ] && kill -0 $dpid 2>/dev/null; do
        sleep 0.2
        n=$((n + 1))
    done
    if verb daemon-up list --all &&
        verb pool-define-as pool-define-as $pool iscsi --source-host 127.0.0.1 --source-dev $iqn --target /dev/disk/by-path &&
        verb pool-start pool-start $pool; then
        sessions=$(ls /sys/class/iscsi_session 2>&1 | tr '\n' ' ')
        case "$sessions" in
        session*) l1_result $name session ok "the kernel's sessions: $sessions (target $(cat /sys/class/iscsi_session/session*/targetname 2>&1))" ;;
        *) l1_result $name session fail "no kernel iSCSI session: '$sessions'" ;;
        esac
        listed=$(v vol-list $pool --details 2>&1)
        case "$listed" in
        *"unit:0:0:1"*"/dev/sd"*"block"*"64.00 MiB"*) l1_result $name vol-list ok "$(echo "$listed" | tr -s ' \n' ' ')" ;;
        *) l1_result $name vol-list fail "$(echo "$listed" | tr -s ' \n' ' ')" ;;
        esac
        if out=$(v vol-create-as $pool new 1M 2>&1); then
            l1_result $name vol-create-refused fail "vol-create-as on an iscsi pool succeeded: $out"
        else
            l1_result $name vol-create-refused ok "refused: $out"
        fi
        pool_guest $name $pool unit:0:0:1 131072 $lunfile
        verb pool-destroy pool-destroy $pool
        n=0
        while [ -n "$(ls /sys/class/iscsi_session 2>/dev/null)" ] && [ $n -lt 50 ]; do
            sleep 0.2
            n=$((n + 1))
        done
        left=$(ls /sys/class/iscsi_session 2>/dev/null | tr '\n' ' ')
        if [ -z "$left" ]; then
            l1_result $name logged-out ok "no kernel iSCSI session after pool-destroy"
        else
            l1_result $name logged-out fail "sessions left: $left"
        fi
        verb pool-undefine pool-undefine $pool
    fi
    sed 's/^/LOG| daemon: /' /tmp/vi.dout /tmp/vi.dlog 2>/dev/null
    for f in $(find /tmp/vi -name '*.log'); do
        sed "s#^#LOG| $f: #" "$f"
    done
    kill $dpid 2>/dev/null
    wait $dpid 2>/dev/null
    deb iscsiadm -m node -u >/dev/null 2>&1
    deb pkill -x iscsid
    deb tgtadm --op delete --mode system >/dev/null 2>&1 || deb pkill -x tgtd
    rm -f $lunfile
    rc=0
}

# L1's Debian root at work, with no L2: its tools are there and run, and
# L1's kernel, through the Debian modprobe, does what this host's lacks
# (device-mapper under LVM, bonding, 802.1Q, the NFS server, the iSCSI
# initiator). The later issues' scenarios (storage pools, host interfaces)
# build on these.
scenario_l1_tools() {
    name=l1-tools
    missing=
    for t in ip nft dnsmasq sshd tgtd tgtadm lvm dmsetup exportfs rpc.nfsd iscsiadm busybox ps modprobe losetup; do
        deb sh -c "command -v $t" >/dev/null 2>&1 || missing="$missing $t"
    done
    versions="$(deb ip -V 2>&1); $(deb nft --version 2>&1); $(deb dnsmasq --version 2>&1 | head -n 1); $(deb lvm version 2>&1 | head -n 1 | tr -s ' '); $(deb ssh -V 2>&1); $(deb iscsiadm --version 2>&1)"
    if [ -z "$missing" ]; then
        l1_result $name tools ok "$versions"
    else
        l1_result $name tools fail "missing in L1's Debian root:$missing ($versions)"
    fi
    mods="loop dm_mod bonding 8021q nfsd iscsi_tcp"
    out=$(deb modprobe -a loop dm-mod bonding 8021q nfsd iscsi_tcp 2>&1)
    absent=
    for m in $mods; do
        grep -q "^$m " /proc/modules || absent="$absent $m"
    done
    if [ -z "$absent" ]; then
        l1_result $name modules ok "the Debian modprobe loaded $mods; nfsd filesystem: $(grep -c nfsd /proc/filesystems), iSCSI transports: $(ls /sys/class/iscsi_transport 2>&1 | tr '\n' ' ')"
    else
        l1_result $name modules fail "not loaded:$absent ($out)"
    fi
    # LVM on a loop device: a volume group and a logical volume, activated
    # through device-mapper, written and read back. No udev in L1: LVM
    # makes its device nodes itself.
    mkdir -p /tmp/lvm
    cat >/tmp/lvm/lvm.conf <<EOF
devices {
    use_devicesfile = 0
    obtain_device_list_from_udev = 0
    filter = [ "a|^/dev/loop|", "r|.*|" ]
}
activation {
    udev_sync = 0
    udev_rules = 0
}
EOF
    rm -f /tmp/pv.img
    dd if=/dev/zero of=/tmp/pv.img bs=1M count=0 seek=64 2>/dev/null
    lvm() {
        deb env LVM_SYSTEM_DIR=/tmp/lvm lvm "$@" >>/tmp/lvm.log 2>&1
    }
    : >/tmp/lvm.log
    loopdev=$(deb losetup -f --show /tmp/pv.img 2>>/tmp/lvm.log)
    marker=vireo-l1-lvm-$(date +%s)
    got=
    if [ -n "$loopdev" ] && lvm pvcreate -y "$loopdev" && lvm vgcreate vgl1 "$loopdev" &&
        lvm lvcreate -y -L 8M -n lv0 vgl1; then
        printf '%s' "$marker" | dd of=/dev/mapper/vgl1-lv0 conv=fsync 2>>/tmp/lvm.log
        got=$(dd if=/dev/mapper/vgl1-lv0 bs=${#marker} count=1 2>/dev/null)
        table=$(deb dmsetup table 2>&1 | tr '\n' ' ')
    fi
    if [ -n "$got" ] && [ "$got" = "$marker" ]; then
        l1_result $name lvm ok "pvcreate, vgcreate and lvcreate on $loopdev; /dev/mapper/vgl1-lv0 ($table) read back '$got'"
    else
        l1_result $name lvm fail "no LV read back '$marker' (got '$got'): $(tr '\n' ' ' </tmp/lvm.log)"
    fi
    lvm vgchange -an vgl1
    lvm vgremove -f vgl1
    [ -z "$loopdev" ] || deb losetup -d "$loopdev"
    rm -f /tmp/pv.img
    # A bond and a VLAN device, in a namespace of their own.
    deb ip netns add tools
    deb ip -n tools link add bond0 type bond mode active-backup 2>/tmp/tools.err
    deb ip -n tools link add t0 type veth peer name t1 2>>/tmp/tools.err
    deb ip -n tools link set t0 master bond0 2>>/tmp/tools.err
    deb ip -n tools link add link bond0 name bond0.42 type vlan id 42 2>>/tmp/tools.err
    links=$(deb ip -n tools -d -o link show 2>&1)
    case "$links" in
    *"bond0.42@bond0"*"vlan protocol 802.1Q id 42"*)
        case "$links" in
        *"bond mode active-backup"*) l1_result $name bond-vlan ok "$(echo "$links" | grep -o 'bond0[^:]*: .*\(bond mode [a-z-]*\|id 42\)' | tr -s ' ' | cut -c1-300 | tr '\n' '|')" ;;
        *) l1_result $name bond-vlan fail "no active-backup bond0: $(echo "$links" | tr -s ' ' | tr '\n' '|') $(tr '\n' ' ' </tmp/tools.err)" ;;
        esac
        ;;
    *) l1_result $name bond-vlan fail "no VLAN 42 on bond0: $(echo "$links" | tr -s ' ' | tr '\n' '|') $(tr '\n' ' ' </tmp/tools.err)" ;;
    esac
    deb ip netns del tools
    # sshd's configuration test (host keys made when the package was
    # configured).
    mkdir -p /deb/run/sshd
    if out=$(deb /usr/sbin/sshd -t 2>&1); then
        l1_result $name sshd-config ok "sshd -t passed; host keys: $(ls /deb/etc/ssh | grep -c '_key$')"
    else
        l1_result $name sshd-config fail "sshd -t: $(echo "$out" | tr '\n' ' ')"
    fi
    rc=0
}

# A heartbeat every 30 s of L1 time (run.sh takes 100 s of silence for a
# frozen L1): when the whole run hits QEMU's timeout, the last of these says whether L1 still ran, how full its
# memory was and which processes were running or stuck (state R or D).
(
    while sleep 30; do
        busy=$(ps -o pid,stat,comm 2>/dev/null | awk '$2 ~ /^[RD]/ && $3 != "ps" && $3 != "awk" { printf "%s:%s:%s ", $1, $2, $3 }')
        echo "vireo-l1: heartbeat up $(cut -d' ' -f1 /proc/uptime)s, load $(cut -d' ' -f1-3 /proc/loadavg), $(grep MemAvailable /proc/meminfo | tr -s ' '), busy: ${busy:-none}"
    done
) </dev/null &

for s in $(arg vireo.scenarios | tr ',' ' '); do
    echo "VIREO-SCENARIO-BEGIN $s"
    rc=none
    s_start=$(now)
    if [ -n "$l1_error" ]; then
        echo "VIREO-RESULT $s l1-kvm fail $l1_error"
    else
        case "$s" in
        boot) boot_with boot 2 512 $L2_KERNEL "vireo.flags_present=$(host_flags)" ;;
        # The uncompressed vmlinux through its PVH note, with the minimal
        # CPU template.
        boot-1cpu) boot_with boot-1cpu 1 256 $L2_VMLINUX \
            "vireo.pvh=1 vireo.flags_absent=xsave,avx,avx2,cx16,tsc_deadline_timer" --cpu-template minimal ;;
        # 5 GiB: RAM on both sides of the 3-4 GiB hole (vireo maps guest
        # RAM lazily; run.sh gives L1 6 GiB, vireo refuses more than its host has).
        boot-4cpu-5g) boot_with boot-4cpu-5g 4 5120 $L2_KERNEL "vireo.flags_present=$(host_flags)" ;;
        poweroff) scenario_poweroff ;;
        reboot) scenario_reboot ;;
        reboot-again) scenario_reboot_again ;;
        virtio-blk) virtio_blk_with virtio-blk 2 2 "$BLK_MIB" ;;
        virtio-blk-mq4) virtio_blk_with virtio-blk-mq4 4 4 0 ;;
        virtio-blk-qcow2) scenario_virtio_blk_qcow2 ;;
        virtio-net) scenario_virtio_net ;;
        console) scenario_console ;;
        rng) scenario_rng ;;
        power-api) scenario_power_api ;;
        balloon) scenario_balloon ;;
        balloon-fpr) scenario_balloon_fpr ;;
        hotplug) scenario_hotplug ;;
        linux-test) scenario_linux_test ;;
        daemon) scenario_daemon ;;
        numa) scenario_numa ;;
        numa-guest-2) scenario_numa_guest_2 ;;
        numa-guest-4) scenario_numa_guest_4 ;;
        numa-bind) scenario_numa_bind ;;
        net-nat) if deb_mount net-nat; then scenario_net_nat; fi ;;
        l1-tools) if deb_mount l1-tools; then scenario_l1_tools; fi ;;
        pool-logical) if deb_mount pool-logical; then scenario_pool_logical; fi ;;
        pool-netfs) if deb_mount pool-netfs; then scenario_pool_netfs; fi ;;
        pool-iscsi) if deb_mount pool-iscsi; then scenario_pool_iscsi; fi ;;
        *) echo "VIREO-RESULT $s scenario fail unknown scenario" ;;
        esac
    fi
    echo "vireo-l1: scenario $s took $(awk "BEGIN{print $(now)-$s_start}") s of L1 time, checks included"
    echo "VIREO-SCENARIO-END $s rc=$rc"
done
l1_end=$(cut -d' ' -f1 /proc/uptime)
echo "VIREO-L1-DONE uptime=${l1_end}s"
poweroff -f
