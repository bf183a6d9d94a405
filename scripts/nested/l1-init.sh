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
echo "vireo-l1: cpu flags svm=$(grep -cw svm /proc/cpuinfo) npt=$(grep -cw npt /proc/cpuinfo)"
echo "vireo-l1: $(grep MemTotal /proc/meminfo | tr -s ' ')"
l1_error=
if [ ! -c /dev/kvm ]; then
    l1_error="no /dev/kvm in L1 after insmod kvm-amd (svm in cpuinfo: $(grep -cw svm /proc/cpuinfo))"
fi

timeout_s=$(arg vireo.timeout)
[ -n "$timeout_s" ] || timeout_s=180
L2_KERNEL=/l2/vmlinuz
L2_INITRD=/l2/initramfs.cpio.gz
L2_CMDLINE="console=ttyS0 reboot=k panic=1"

# l1_result SCENARIO CHECK ok|fail EVIDENCE...
l1_result() {
    echo "VIREO-RESULT $*"
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
        /bin/vireo -vv run "$@" 2>"/tmp/$name.log" </dev/null &
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

# boot_with NAME CPUS MEM_MIB: the L2 boot checks with that many vCPUs and
# MiB of RAM.
boot_with() {
    vireo_run "$1" --kernel $L2_KERNEL --initrd $L2_INITRD --cpus "$2" --memory "$3M" \
        --cmdline "$L2_CMDLINE vireo.scenario=boot vireo.name=$1 vireo.cpus=$2 vireo.mem_mib=$3"
    emit "$1"
    exit_check "$1" 0
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
}

scenario_reboot_again() {
    dd if=/dev/zero of=/tmp/flag.raw bs=1M count=1 2>/dev/null
    vireo_run reboot-again --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M --reboot \
        --disk path=/tmp/flag.raw \
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

# virtio_blk_with NAME CPUS QUEUES: a raw read-write disk with a serial and
# QUEUES queues, and a read-only one, in an L2 with CPUS vCPUs (Linux gives
# a disk at most one queue per CPU).
virtio_blk_with() {
    name=$1 cpus=$2 queues=$3
    dd if=/dev/zero of=/tmp/vda.raw bs=1M count=16 2>/dev/null
    dd if=/dev/urandom of=/tmp/vdb.raw bs=1M count=1 2>/dev/null
    vdb_before=$(sha256sum /tmp/vdb.raw | cut -d' ' -f1)
    vireo_run "$name" --kernel $L2_KERNEL --initrd $L2_INITRD --cpus "$cpus" --memory 256M \
        --disk "path=/tmp/vda.raw,serial=vireo-nested-1,queues=$queues" \
        --disk path=/tmp/vdb.raw,readonly=on \
        --cmdline "$L2_CMDLINE vireo.scenario=virtio-blk vireo.name=$name vireo.serial=vireo-nested-1 vireo.queues=$queues"
    emit "$name"
    exit_check "$name" 0
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
    name=virtio-blk-qcow2
    /bin/vireo img create -f qcow2 /tmp/vda.qcow2 16M >/dev/null
    dd if=/dev/zero of=/tmp/marker.raw bs=1M count=1 2>/dev/null
    printf 'vireo-nested-marker' | dd of=/tmp/marker.raw conv=notrunc 2>/dev/null
    /bin/vireo img convert -O qcow2 /tmp/marker.raw /tmp/vdb.qcow2 >/dev/null
    vdb_before=$(sha256sum /tmp/vdb.qcow2 | cut -d' ' -f1)
    vireo_run $name --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M \
        --disk path=/tmp/vda.qcow2,serial=vireo-qcow2 \
        --disk path=/tmp/vdb.qcow2,readonly=on \
        --cmdline "$L2_CMDLINE vireo.scenario=virtio-blk vireo.name=$name vireo.serial=vireo-qcow2 vireo.queues=1 vireo.marker=vireo-nested-marker"
    emit $name
    exit_check $name 0
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
    if [ "$vdb_before" = "$(sha256sum /tmp/vdb.qcow2 | cut -d' ' -f1)" ]; then
        l1_result $name ro-host-file ok "the read-only image is unchanged"
    else
        l1_result $name ro-host-file fail "the read-only image changed"
    fi
    rm -f /tmp/vda.qcow2 /tmp/vda.raw /tmp/vdb.qcow2 /tmp/marker.raw
}

scenario_virtio_net() {
    tap=vtap0
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
            i=0
            until echo l1-pinged-l2 | nc -w 10 169.254.10.2 7777 2>/dev/null; do
                i=$((i + 1))
                [ $i -lt 30 ] || break
                sleep 1
            done
        else
            echo fail >/tmp/l1ping.verdict
        fi
    ) &
    helper=$!
    # 2 queue pairs need 2 vCPUs: virtio_net uses at most one per CPU.
    vireo_run virtio-net --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M --cpus 2 \
        --net tap=$tap,mac=52:54:00:12:34:56,queues=2 \
        --cmdline "$L2_CMDLINE vireo.scenario=virtio-net vireo.mac=52:54:00:12:34:56 vireo.queues=2 vireo.ip=169.254.10.2 vireo.peer=169.254.10.1"
    kill $helper 2>/dev/null
    wait $helper 2>/dev/null
    emit virtio-net
    exit_check virtio-net 0
    l1_result virtio-net ping-from-l1 "$(cat /tmp/l1ping.verdict 2>/dev/null || echo fail)" \
        "$(tr '\n' '|' </tmp/l1ping.out 2>/dev/null)"
}

scenario_console() {
    rm -f /tmp/hvc0.out
    vireo_run console --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M \
        --console file:/tmp/hvc0.out \
        --cmdline "$L2_CMDLINE vireo.scenario=console"
    emit console
    exit_check console 0
    if grep -q hello-from-l2-hvc0 /tmp/hvc0.out 2>/dev/null; then
        l1_result console host-file ok "the line L2 wrote to /dev/hvc0 is in the host file"
    else
        l1_result console host-file fail "host file: '$(head -c 200 /tmp/hvc0.out 2>&1 | tr '\n' '|')'"
    fi
}

scenario_rng() {
    vireo_run rng --kernel $L2_KERNEL --initrd $L2_INITRD --memory 256M --rng \
        --cmdline "$L2_CMDLINE vireo.scenario=rng"
    emit rng
    exit_check rng 0
}

# The old test of crates/vireo/tests/linux.rs, unchanged: its initramfs,
# 512 MiB and 2 vCPUs, vireo's default command line; linux.rs checks the
# console and the exit code itself.
scenario_linux_test() {
    vireo_run linux-test --kernel $L2_KERNEL --initrd /l2/linux-test.cpio.gz \
        --memory 512M --cpus 2
    emit linux-test
}

for s in $(arg vireo.scenarios | tr ',' ' '); do
    echo "VIREO-SCENARIO-BEGIN $s"
    rc=none
    if [ -n "$l1_error" ]; then
        echo "VIREO-RESULT $s l1-kvm fail $l1_error"
    else
        case "$s" in
        boot) boot_with boot 2 512 ;;
        boot-1cpu) boot_with boot-1cpu 1 256 ;;
        # 5 GiB: RAM on both sides of the 3-4 GiB hole (vireo maps guest
        # RAM lazily; run.sh gives L1 6 GiB, vireo refuses more than its host has).
        boot-4cpu-5g) boot_with boot-4cpu-5g 4 5120 ;;
        poweroff) scenario_poweroff ;;
        reboot) scenario_reboot ;;
        reboot-again) scenario_reboot_again ;;
        virtio-blk) virtio_blk_with virtio-blk 2 2 ;;
        virtio-blk-mq4) virtio_blk_with virtio-blk-mq4 4 4 ;;
        virtio-blk-qcow2) scenario_virtio_blk_qcow2 ;;
        virtio-net) scenario_virtio_net ;;
        console) scenario_console ;;
        rng) scenario_rng ;;
        linux-test) scenario_linux_test ;;
        *) echo "VIREO-RESULT $s scenario fail unknown scenario" ;;
        esac
    fi
    echo "VIREO-SCENARIO-END $s rc=$rc"
done
l1_end=$(cut -d' ' -f1 /proc/uptime)
echo "VIREO-L1-DONE uptime=${l1_end}s"
poweroff -f
