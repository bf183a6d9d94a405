#!/bin/busybox sh
# /init of the L2 guest (Debian's kernel booted by vireo inside L1).
#
# Loads the virtio modules, runs the scenario named by `vireo.scenario=` on
# the kernel command line and prints one machine-readable line per check:
#     VIREO-RESULT <scenario> <check> ok|fail <evidence>
# then ends the way the scenario says (most: `poweroff -f`). Expected values
# come from the command line too (`vireo.cpus=`, `vireo.mem_mib=`, ...), so
# the L1 runner that starts vireo decides what is checked. Nothing here is
# quiet: the whole console is evidence for the test that reads it.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp && mount -t tmpfs tmpfs /tmp

# The value of `NAME=` on the kernel command line, empty if absent.
arg() {
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1"=*) echo "${w#*=}"; return ;; esac
    done
}

scenario=$(arg vireo.scenario)
[ -n "$scenario" ] || scenario=none
# The name results are reported under (one scenario, several variants).
name=$(arg vireo.name)
[ -n "$name" ] || name=$scenario

# result CHECK ok|fail EVIDENCE...
result() {
    check=$1 verdict=$2
    shift 2
    echo "VIREO-RESULT $name $check $verdict $*"
}

# expect CHECK WANT GOT: ok when the two strings are equal.
expect() {
    if [ "$2" = "$3" ]; then result "$1" ok "$3"; else result "$1" fail "want $2, got $3"; fi
}

# Debian builds virtio as modules; this order satisfies their dependencies
# (there is no modules.dep in the initramfs, so insmod, not modprobe).
# evdev and button: the ACPI power button as an input device for acpid.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
    virtio_blk failover net_failover virtio_net virtio_console virtio-rng evdev button; do
    insmod "/modules/$m.ko" || echo "vireo-l2: insmod $m failed"
done
echo "vireo-l2: init reached, scenario $scenario"
# Let the drivers' probes (asynchronous for some) finish.
mdev -s 2>/dev/null
sleep 1

# sync_l1 TAG: tell L1 (a `VIREO-SYNC TAG` line on the serial console) and
# wait, at most 120 s, for L1 to answer TAG on /dev/hvc0 (the scenario's
# `--console unix:` port, held open on fd 3 by open_hvc0). L1 acts on the
# VM through vireo's API in between (pause, hot-plug, ...).
sync_l1() {
    echo "VIREO-SYNC $1"
    got=
    read -t 120 -r got <&3
    got=$(echo "$got" | tr -d '\r')
    if [ "$got" = "$1" ]; then
        return 0
    fi
    result "sync-$1" fail "L1 answered '$got' on /dev/hvc0 (empty: nothing within 120 s)"
    return 1
}

# open_hvc0: /dev/hvc0 as fd 3, without echo, for sync_l1.
open_hvc0() {
    if [ ! -c /dev/hvc0 ]; then
        result hvc0 fail "no /dev/hvc0 for talking to L1"
        finish poweroff
    fi
    exec 3</dev/hvc0
    stty -echo <&3
}

# Seconds since boot, with hundredths.
now() {
    cut -d' ' -f1 /proc/uptime
}

# elapsed T0: seconds since T0 (a `now`).
elapsed() {
    awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'
}

# vectors_took_irqs CHECK PATTERN: every /proc/interrupts vector whose name
# matches PATTERN (an awk regex) took at least one interrupt.
vectors_took_irqs() {
    irqs=$(awk -v d="$2" '$NF ~ d { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; printf "%s=%d ", $NF, n }' /proc/interrupts)
    case "$irqs" in
    "" | *"=0 "*) result "$1" fail "${irqs:-no vector matching $2 in /proc/interrupts}" ;;
    *) result "$1" ok "$irqs" ;;
    esac
}

finish() {
    echo "vireo-l2: scenario $scenario done, $1"
    case "$1" in
    reboot) reboot -f ;;
    *) poweroff -f ;;
    esac
    echo "vireo-l2: $1 -f returned"
    sleep 1000000
}

# blk_bulk MIB: on /dev/vda (at least 64 + 2 * MIB MiB): 16 MiB at 16 MiB
# discarded, 16 MiB at 32 MiB write-zeroed with unmap allowed (and no
# fallback to writing zero pages), 16 MiB at 48 MiB write-zeroed without
# unmap; MIB MiB at 64 MiB written through the page cache and synced
# (flush), the same MIB MiB after it written with O_DIRECT. L1 checks the
# same regions in the image. /tmp must hold MIB MiB.
blk_bulk() {
    mib=1048576
    bulk=$1
    q=/sys/block/vda/queue
    result blk-limits ok "write_cache '$(cat $q/write_cache)', discard_max_bytes $(cat $q/discard_max_bytes), write_zeroes_max_bytes $(cat $q/write_zeroes_max_bytes)"
    # What the emulator costs here, to read the timings below by: 8 MiB
    # from /dev/urandom, 8 MiB through sha256sum, 8 MiB from the disk.
    t0=$(now)
    dd if=/dev/urandom of=/dev/null bs=1M count=8 2>/dev/null
    t1=$(now)
    dd if=/dev/zero bs=1M count=8 2>/dev/null | sha256sum >/dev/null
    t2=$(now)
    dd if=/dev/vda of=/dev/null bs=1M count=8 iflag=direct 2>/dev/null
    t3=$(now)
    result l2-speed ok "8 MiB: urandom $(awk "BEGIN{print $t1-$t0}") s, sha256 $(awk "BEGIN{print $t2-$t1}") s, O_DIRECT read $(awk "BEGIN{print $t3-$t2}") s"
    dd if=/dev/urandom of=/dev/vda bs=1M seek=16 count=48 oflag=direct 2>/dev/null
    zeros=$(dd if=/dev/zero bs=1M count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
    if blkdiscard -o $((16 * mib)) -l $((16 * mib)) /dev/vda 2>/tmp/e; then
        result discard ok "blkdiscard of 16 MiB at 16 MiB"
    else
        result discard fail "$(tr '\n' ' ' </tmp/e)"
    fi
    if nested-tool fallocate punch /dev/vda $((32 * mib)) $((16 * mib)) 2>/tmp/e; then
        expect write-zeroes-unmap "$zeros" "$(dd if=/dev/vda bs=1M skip=32 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
    else
        result write-zeroes-unmap fail "fallocate punch-hole on /dev/vda: $(tr '\n' ' ' </tmp/e)"
    fi
    if nested-tool fallocate zero /dev/vda $((48 * mib)) $((16 * mib)) 2>/tmp/e; then
        expect write-zeroes "$zeros" "$(dd if=/dev/vda bs=1M skip=48 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
    else
        result write-zeroes fail "fallocate zero-range on /dev/vda: $(tr '\n' ' ' </tmp/e)"
    fi
    # One pattern of MIB MiB from /dev/urandom, checksummed once, written
    # twice: through the page cache and synced (a flush), and past it with
    # O_DIRECT. (Piping urandom through tee into sha256sum and dd instead
    # ran at 0.5 MiB/s here: each 4 KiB through three pipes costs context
    # switches, which are slow in a nested guest under the emulator.) L1
    # checksums both regions in the image; L2 reads back the first 16 MiB
    # of each with O_DIRECT.
    t0=$(now)
    dd if=/dev/urandom of=/tmp/pattern.bin bs=1M count="$bulk" 2>/dev/null
    sum=$(sha256sum /tmp/pattern.bin | cut -d' ' -f1)
    head16=$(dd if=/tmp/pattern.bin bs=1M count=16 2>/dev/null | sha256sum | cut -d' ' -f1)
    echo "vireo-l2: $bulk MiB pattern made and checksummed in $(elapsed "$t0") s"
    echo "VIREO-VALUE $name pattern-bulk-sha256 $sum"
    t0=$(now)
    if dd if=/tmp/pattern.bin of=/dev/vda bs=1M seek=64 2>/tmp/e && sync; then
        back=$(dd if=/dev/vda bs=1M skip=64 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
        if [ "$back" = "$head16" ]; then
            result cached-write ok "$bulk MiB (sha256 $sum) written through the page cache and synced in $(elapsed "$t0") s; its first 16 MiB read back with O_DIRECT"
        else
            result cached-write fail "the first 16 MiB read back as sha256 $back, written $head16"
        fi
    else
        result cached-write fail "$(tr '\n' ' ' </tmp/e)"
    fi
    t0=$(now)
    if dd if=/tmp/pattern.bin of=/dev/vda bs=1M seek=$((64 + bulk)) oflag=direct 2>/tmp/e; then
        back=$(dd if=/dev/vda bs=1M skip=$((64 + bulk)) count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
        if [ "$back" = "$head16" ]; then
            result direct-write ok "$bulk MiB written with O_DIRECT in $(elapsed "$t0") s; its first 16 MiB read back"
        else
            result direct-write fail "the first 16 MiB read back as sha256 $back, written $head16"
        fi
    else
        result direct-write fail "$(tr '\n' ' ' </tmp/e)"
    fi
    rm -f /tmp/pattern.bin
    echo "VIREO-VALUE $name zeros16-sha256 $zeros"
    # L1 reads the device counters through the API while the VM runs.
    open_hvc0
    sync_l1 counters
}

# TCP segments retransmitted so far (RetransSegs in /proc/net/snmp).
retrans() {
    awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RetransSegs") c = i; h = 1 } else print $c }' /proc/net/snmp
}

# net_bulk MIB PEER: MIB MiB to PEER (L1) over TCP, as two flows of the
# same MIB/2 MiB of random data sent from CPU 0 and CPU 1 (so both transmit
# queues carry one and, through the TAP's flow steering, both receive
# queues get its ACKs), then MIB MiB from L1; busybox nc at both ends,
# sha256 on both ends (L1 compares). The data is a file in /tmp first:
# piping /dev/urandom through tee into nc ran at 0.5 MiB/s here.
net_bulk() {
    half=$(($1 / 2))
    dd if=/dev/urandom of=/tmp/tx.bin bs=1M count=$half 2>/dev/null
    echo "VIREO-VALUE $name tx-sha256 $(sha256sum /tmp/tx.bin | cut -d' ' -f1)"
    t0=$(now)
    r0=$(retrans)
    for c in 0 1; do
        {
            taskset -c $c nc -w 30 "$2" $((7778 + c)) </tmp/tx.bin
            echo $? >/tmp/tx$c.rc
            elapsed "$t0" >/tmp/tx$c.took
        } &
    done
    wait
    took=$(elapsed "$t0")
    rm -f /tmp/tx.bin
    if [ "$(cat /tmp/tx0.rc /tmp/tx1.rc)" = "$(printf '0\n0')" ]; then
        result tcp-send ok "2 x $half MiB sent to L1 at once in $took s (flows done at $(cat /tmp/tx0.took) s and $(cat /tmp/tx1.took) s, $(($(retrans) - r0)) TCP segments retransmitted; L1 compares sizes and sums)"
    else
        result tcp-send fail "nc exit codes $(cat /tmp/tx0.rc /tmp/tx1.rc | tr '\n' ' ')after $took s"
    fi
    t0=$(now)
    sum=$(timeout 300 nc -l -p 7780 | sha256sum | cut -d' ' -f1)
    echo "VIREO-VALUE $name rx-sha256 $sum"
    result tcp-receive ok "received from L1 in $(elapsed "$t0") s, sha256 $sum, $(($(retrans) - r0)) TCP segments retransmitted in all (L1 compares)"
}

case "$scenario" in
boot)
    expect nproc "$(arg vireo.cpus)" "$(nproc)"
    apic_ids=$(grep '^apicid' /proc/cpuinfo | sort -u | wc -l)
    expect apic-ids "$(arg vireo.cpus)" "$apic_ids"
    mem_kib=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
    want_kib=$(($(arg vireo.mem_mib) * 1024))
    # The kernel keeps its image, page structs and reserved ranges out of
    # MemTotal: more than 3/4 of the RAM given, never more than all of it.
    if [ "$mem_kib" -le "$want_kib" ] && [ "$mem_kib" -gt $((want_kib * 3 / 4)) ]; then
        result memtotal ok "$mem_kib kB of $want_kib kB"
    else
        result memtotal fail "$mem_kib kB, given $want_kib kB"
    fi
    if [ "$(arg vireo.mem_mib)" -gt 3072 ]; then
        # System RAM that starts at or above 4 GiB (9+ hex digits).
        high=$(grep -E '^[0-9a-f]{9,}-[0-9a-f]+ : System RAM' /proc/iomem | tr '\n' ' ')
        if [ -n "$high" ]; then
            result ram-above-4g ok "$high"
        else
            result ram-above-4g fail "no System RAM above 4 GiB: $(grep 'System RAM' /proc/iomem | tr '\n' ' ')"
        fi
    fi
    acpi_bad=$(dmesg | grep -iE 'ACPI.*(error|warning|exception)|ACPI BIOS' | tr '\n' '|')
    if [ -z "$acpi_bad" ]; then
        result acpi-clean ok "$(dmesg | grep -c ACPI) ACPI lines, none an error or warning"
    else
        result acpi-clean fail "$acpi_bad"
    fi
    # Linux must neither poll for an i8042 it was told of nor fail its
    # probe: the FADT no longer announces one (it only resets).
    i8042_bad=$(dmesg | grep -E 'probe of i8042 failed|Keylock active' | tr '\n' '|')
    if [ -z "$i8042_bad" ]; then
        result i8042-clean ok "$(dmesg | grep -c i8042) i8042 lines, no probe failure or keylock"
    else
        result i8042-clean fail "$i8042_bad"
    fi
    rtc_bad=$(dmesg | grep -E 'rtc_cmos.*(probe|failed)' | grep -E 'failed|error' | tr '\n' '|')
    if [ -z "$rtc_bad" ]; then
        result rtc-clean ok "$(dmesg | grep rtc_cmos | tr '\n' '|')"
    else
        result rtc-clean fail "$rtc_bad"
    fi
    # rtc_cmos bound through the DSDT's PNP0B00: the clock reads.
    rtc_date=$(cat /sys/class/rtc/rtc0/date 2>&1)
    case "$rtc_date" in
    20[0-9][0-9]-[01][0-9]-[0-3][0-9]) result rtc-date ok "$rtc_date $(cat /sys/class/rtc/rtc0/time 2>&1)" ;;
    *) result rtc-date fail "/sys/class/rtc/rtc0/date: $rtc_date" ;;
    esac
    # The console UART's interrupt comes through an I/O APIC pin (Vireo's
    # own with the default split irqchip) and counts: L2's output so far
    # went through the tty, which waits for that interrupt.
    serial=$(awk '$NF == "ttyS0" { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; print n, $0 }' /proc/interrupts)
    case "$serial" in
    0* | "") result serial-irq fail "${serial:-no ttyS0 line in /proc/interrupts}" ;;
    *IO-APIC*) result serial-irq ok "$serial" ;;
    *) result serial-irq fail "not on the IO-APIC: $serial" ;;
    esac
    # The CPU template: flags L1 expects present (what the host template
    # passes through) and absent (what `minimal` hides), comma-separated.
    flags=" $(grep -m 1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    bad=
    for f in $(arg vireo.flags_present | tr ',' ' '); do
        case "$flags" in *" $f "*) ;; *) bad="$bad missing:$f" ;; esac
    done
    for f in $(arg vireo.flags_absent | tr ',' ' '); do
        case "$flags" in *" $f "*) bad="$bad present:$f" ;; esac
    done
    if [ -z "$bad" ]; then
        result cpu-flags ok "present: $(arg vireo.flags_present); absent: $(arg vireo.flags_absent)"
    else
        result cpu-flags fail "$bad in:$flags"
    fi
    # Linux's PVH entry writes type_of_loader 0xb0 into the boot_params
    # it builds (0x90 under Xen); a bzImage boot keeps the loader's.
    if [ "$(arg vireo.pvh)" = 1 ]; then
        loader=$(dd if=/sys/kernel/boot_params/data bs=1 skip=$((0x210)) count=1 2>/dev/null | od -An -tx1 | tr -d ' ')
        expect pvh-entry b0 "$loader"
    fi
    finish poweroff
    ;;
numa)
    # The guest NUMA nodes vireo's SRAT and SLIT described: per node its
    # CPUs, memory and distances, against `vireo.nodes=N` and
    # `vireo.nodeI.cpus=`, `.mib=`, `.dist=` (a comma-separated row).
    sys=/sys/devices/system/node
    n=$(arg vireo.nodes)
    expect node-count "$n" "$(ls -d $sys/node[0-9]* 2>/dev/null | wc -l)"
    i=0
    while [ "$i" -lt "$n" ]; do
        d=$sys/node$i
        expect node$i-cpulist "$(arg vireo.node$i.cpus)" "$(cat $d/cpulist 2>&1)"
        expect node$i-distance "$(arg vireo.node$i.dist | tr , ' ')" "$(cat $d/distance 2>&1)"
        kb=$(sed -n 's/.*MemTotal: *\([0-9]*\) kB/\1/p' $d/meminfo 2>/dev/null)
        want=$(($(arg vireo.node$i.mib) * 1024))
        # The kernel's image, page structs and reserved ranges are not in
        # MemTotal: more than half the cell, never more than all of it.
        if [ "${kb:-0}" -le "$want" ] && [ "${kb:-0}" -gt $((want / 2)) ]; then
            result node$i-memtotal ok "$kb kB of $want kB"
        else
            result node$i-memtotal fail "${kb:-no} kB, the cell has $want kB"
        fi
        i=$((i + 1))
    done
    result numa-dmesg ok "$(dmesg | grep -E 'SRAT|NUMA|Initmem setup node' | head -n 12 | tr '\n' '|')"
    # `vireo.touch=MIB`: write that much into tmpfs from the first CPU of
    # each node (the kernel allocates on the writer's node), then hold
    # `vireo.hold=` seconds so L1 sees where the host put the pages.
    touch=$(arg vireo.touch)
    if [ -n "$touch" ]; then
        i=0
        while [ "$i" -lt "$n" ]; do
            cpu=$(cut -d, -f1 $sys/node$i/cpulist | cut -d- -f1)
            if taskset -c "$cpu" dd if=/dev/zero of=/tmp/touch$i bs=1M count="$touch" 2>/tmp/dd.err; then
                result touch-node$i ok "$touch MiB written from CPU $cpu; node$i $(grep -E 'MemFree' $sys/node$i/meminfo | tr -s ' ')"
            else
                result touch-node$i fail "$(tr '\n' ' ' </tmp/dd.err)"
            fi
            i=$((i + 1))
        done
        echo "VIREO-NUMA-TOUCHED"
        sleep "$(arg vireo.hold)"
    fi
    finish poweroff
    ;;
poweroff)
    result reached ok "init ran"
    finish poweroff
    ;;
reboot)
    # Without --reboot vireo exits on the reset: one boot only.
    result reached ok "init ran"
    finish reboot
    ;;
reboot-again)
    # With --reboot: /dev/vda's first byte counts the boots. The first boot
    # sets it and resets; the second sees it and powers off.
    mark=$(dd if=/dev/vda bs=1 count=1 2>/dev/null)
    if [ "$mark" = 1 ]; then
        result second-boot ok "the mark written before the reset was on the disk"
        finish poweroff
    fi
    printf 1 | dd of=/dev/vda bs=1 count=1 conv=notrunc 2>/dev/null
    sync
    result first-boot ok "mark written"
    finish reboot
    ;;
virtio-blk)
    # vda: raw, read-write, serial and queues from the command line; vdb:
    # read-only.
    expect vda-serial "$(arg vireo.serial)" "$(cat /sys/block/vda/serial 2>&1)"
    expect vda-mq "$(arg vireo.queues)" "$(ls /sys/block/vda/mq 2>/dev/null | wc -l)"
    dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 2>/dev/null
    sum=$(sha256sum /tmp/pattern | cut -d' ' -f1)
    if dd if=/tmp/pattern of=/dev/vda bs=1M 2>/tmp/dd.err && sync; then
        result write ok "8 MiB written and synced, sha256 $sum"
    else
        result write fail "$(cat /tmp/dd.err | tr '\n' '|')"
    fi
    echo 3 >/proc/sys/vm/drop_caches
    back=$(dd if=/dev/vda bs=1M count=8 2>/dev/null | sha256sum | cut -d' ' -f1)
    expect readback "$sum" "$back"
    echo "VIREO-VALUE $name pattern-sha256 $sum"
    # Every request queue's MSI-X vector takes interrupts: read from each
    # CPU (blk-mq maps each CPU to a queue), then count per vector.
    dev=$(basename "$(readlink /sys/block/vda/device)")
    c=0
    while [ $c -lt "$(nproc)" ]; do
        taskset -c $c dd if=/dev/vda of=/dev/null bs=4096 count=8 skip=$((c * 64)) iflag=direct 2>/dev/null
        c=$((c + 1))
    done
    irqs=$(awk -v d="$dev-req" '$NF ~ d { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; printf "%s=%d ", $NF, n }' /proc/interrupts)
    case "$irqs" in
    "" | *"=0 "*) result queue-irqs fail "$dev: ${irqs:-no $dev-req vectors in /proc/interrupts}" ;;
    *) result queue-irqs ok "$irqs" ;;
    esac
    expect vdb-ro 1 "$(cat /sys/block/vdb/ro 2>&1)"
    marker=$(arg vireo.marker)
    if [ -n "$marker" ]; then
        expect vdb-marker "$marker" "$(dd if=/dev/vdb bs=${#marker} count=1 2>/dev/null)"
    fi
    if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct 2>/tmp/ro.err; then
        result vdb-write-refused fail "a write to the read-only disk succeeded"
    else
        result vdb-write-refused ok "$(tr '\n' ' ' </tmp/ro.err)"
    fi
    bulk=$(arg vireo.bulk_mib)
    if [ -n "$bulk" ] && [ "$bulk" -gt 0 ]; then
        blk_bulk "$bulk"
    fi
    finish poweroff
    ;;
virtio-net)
    mac=$(cat /sys/class/net/eth0/address 2>&1)
    expect mac "$(arg vireo.mac)" "$mac"
    ip addr add "$(arg vireo.ip)/24" dev eth0
    ip link set eth0 up
    if ping -c 3 -W 5 "$(arg vireo.peer)" >/tmp/ping.out 2>&1; then
        result ping ok "$(grep 'packets transmitted' /tmp/ping.out)"
    else
        result ping fail "$(tr '\n' '|' </tmp/ping.out)"
    fi
    # L1 pings us and then says so over TCP; wait for that word.
    word=$(timeout 120 nc -l -p 7777 2>&1)
    expect tcp-from-l1 l1-pinged-l2 "$word"
    bulk=$(arg vireo.bulk_mib)
    if [ -n "$bulk" ] && [ "$bulk" -gt 0 ]; then
        net_bulk "$bulk" "$(arg vireo.peer)"
    fi
    # The features Linux's virtio_net negotiated: /sys/bus/virtio/devices/
    # */features has one 0/1 character per bit, bit 0 first.
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device")" = 0x0001 ] && feats=$(cat "$d/features")
    done
    missing= have=
    for b in 0:CSUM 1:GUEST_CSUM 5:MAC 7:GUEST_TSO4 8:GUEST_TSO6 9:GUEST_ECN 11:HOST_TSO4 \
        12:HOST_TSO6 13:HOST_ECN 15:MRG_RXBUF 16:STATUS 17:CTRL_VQ 22:MQ 28:INDIRECT_DESC \
        29:EVENT_IDX 32:VERSION_1; do
        if [ "$(echo "$feats" | cut -c$((${b%%:*} + 1)))" = 1 ]; then
            have="$have ${b#*:}"
        else
            missing="$missing ${b#*:}"
        fi
    done
    for b in 10:GUEST_UFO 14:HOST_UFO; do
        [ "$(echo "$feats" | cut -c$((${b%%:*} + 1)))" = 1 ] && have="$have ${b#*:}"
    done
    if [ -n "$feats" ] && [ -z "$missing" ]; then
        result net-features ok "negotiated$have ($feats)"
    else
        result net-features fail "missing$missing; negotiated$have (${feats:-no virtio net device in /sys/bus/virtio/devices})"
    fi
    queues=$(arg vireo.queues)
    expect net-queues "rx=$queues tx=$queues" \
        "rx=$(ls /sys/class/net/eth0/queues | grep -c '^rx-') tx=$(ls /sys/class/net/eth0/queues | grep -c '^tx-')"
    # Every queue's vector took interrupts (the bulk flows ran on both
    # queue pairs); without the bulk part, both directions in total.
    dev=$(basename "$(readlink /sys/class/net/eth0/device)")
    if [ -n "$bulk" ] && [ "$bulk" -gt 0 ]; then
        vectors_took_irqs net-irqs "$dev-(in|out)put"
    else
        irqs=$(awk -v d="$dev-(in|out)put" '$NF ~ d { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; printf "%s=%d ", $NF, n }' /proc/interrupts)
        in=$(echo "$irqs" | tr ' ' '\n' | awk -F= '/input/ { n += $2 } END { print n + 0 }')
        out=$(echo "$irqs" | tr ' ' '\n' | awk -F= '/output/ { n += $2 } END { print n + 0 }')
        if [ "$in" -gt 0 ] && [ "$out" -gt 0 ]; then
            result net-irqs ok "$irqs"
        else
            result net-irqs fail "input $in, output $out: ${irqs:-no $dev vectors in /proc/interrupts}"
        fi
    fi
    finish poweroff
    ;;
console)
    # Two ports: one to a host file, one on a unix socket L1 talks through.
    # Which hvc is which is the probe order's business: L2 writes a line
    # naming each to each, and reads a line L1 sends from any.
    # devtmpfs has hvc0-7 whatever is there; only real ports open.
    ports=
    for p in $(ls /dev | grep '^hvc[0-9]'); do
        (: </dev/$p) 2>/dev/null && ports="$ports$p "
    done
    expect hvc-ports "hvc0 hvc1 " "$ports"
    for p in $ports; do
        stty -echo </dev/$p
        echo "hello-from-l2-$p" >/dev/$p
        (timeout 90 head -n 1 /dev/$p >/tmp/$p.in) &
    done
    result hvc-write ok "wrote a line to each of: $ports"
    sleep 1
    echo "VIREO-READY console-in"
    n=0
    got=
    while [ -z "$got" ] && [ $n -lt 450 ]; do
        for p in $ports; do
            [ -s /tmp/$p.in ] && got=$p
        done
        sleep 0.2
        n=$((n + 1))
    done
    if [ -n "$got" ]; then
        line=$(tr -d '\r\n' </tmp/$got.in)
        echo "VIREO-VALUE $name hvc-in-sha256 $(printf '%s' "$line" | sha256sum | cut -d' ' -f1)"
        result hvc-read ok "/dev/$got gave a line of ${#line} bytes (L1 compares its sha256)"
        # Again, for a client that connected after the first lines.
        for p in $ports; do
            echo "hello-from-l2-$p" >/dev/$p
        done
    else
        result hvc-read fail "no line from L1 on $ports within 90 s"
    fi
    # Every vector of a queue that carried traffic took interrupts: each
    # port is its own device (one port, no control queues), each wrote a
    # line (output), and the port L1 wrote to read one (input). The
    # `file:` port never has input, so one input vector stays at zero.
    cdevs=$(ls /sys/bus/virtio/drivers/virtio_console 2>/dev/null | grep '^virtio' | tr '\n' '|')
    cdevs=${cdevs%|}
    vectors_took_irqs console-irqs "^(${cdevs:-no-virtio-console})-output\$"
    inputs=$(awk -v d="^(${cdevs:-no-virtio-console})-input\$" '$NF ~ d { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; printf "%s=%d ", $NF, n }' /proc/interrupts)
    case "$inputs" in
    *"="[1-9]*) result console-input-irqs ok "$inputs" ;;
    *) result console-input-irqs fail "no input vector of ${cdevs:-virtio_console} took an interrupt: '${inputs}'" ;;
    esac
    finish poweroff
    ;;
rng)
    avail=$(cat /sys/devices/virtual/misc/hw_random/rng_available 2>&1)
    case "$avail" in
    *virtio_rng*) result rng-available ok "$avail" ;;
    *) result rng-available fail "$avail" ;;
    esac
    a=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    b=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
    if [ ${#a} -eq 64 ] && [ "$a" != "$b" ]; then
        result hwrng-read ok "$a $b"
    else
        result hwrng-read fail "two 32-byte reads: '$a' '$b'"
    fi
    # virtio_rng's one queue ("input") took the device's interrupts.
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device")" = 0x0004 ] && rng=$(basename "$d")
    done
    vectors_took_irqs rng-irqs "^${rng:-no-virtio-rng}-input"
    finish poweroff
    ;;
balloon | balloon-fpr)
    # Linux's own virtio_balloon, driven by L1 through vireo's API
    # (l1-init.sh's scenario_balloon and scenario_balloon_fpr). Free memory
    # is touched first (a tmpfs file as large as it leaves room for,
    # written and deleted), so what the balloon takes is memory the host
    # had backed.
    open_hvc0
    insmod /modules/virtio_balloon.ko || result insmod fail "insmod virtio_balloon failed"
    sleep 1
    bd=
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device")" = 0x0005 ] && bd=$d
    done
    if [ -n "$bd" ] && [ -e "$bd/driver" ]; then
        result driver-bound ok "$(basename "$bd") bound to $(basename "$(readlink "$bd/driver")"), features $(cat "$bd/features")"
    else
        result driver-bound fail "no virtio device 0x0005 with a driver: ${bd:-none}"
    fi
    # feature BIT: 1 when the negotiated feature string has BIT set.
    feature() {
        cut -c$(($1 + 1)) "$bd/features" 2>/dev/null
    }
    memtotal() {
        awk '/^MemTotal:/ { print $2 }' /proc/meminfo
    }
    mkdir -p /fill
    mount -t tmpfs -o size=100% tmpfs /fill
    # fill: write /fill/big, as large as MemFree less 64 MiB; sets $fill.
    fill() {
        fill=$(awk '/^MemFree:/ { print int($2 / 1024) - 64 }' /proc/meminfo)
        dd if=/dev/zero of=/fill/big bs=1M count=$fill 2>/tmp/dd.err
    }
    if [ "$scenario" = balloon ]; then
        # Statistics on; deflate-on-OOM off, so Linux takes the ballooned
        # pages off MemTotal.
        expect stats-feature 1 "$(feature 1)"
        expect no-deflate-on-oom 0 "$(feature 2)"
        if fill; then
            rm /fill/big
            result touched ok "$fill MiB written to tmpfs and deleted; MemFree now $(awk '/^MemFree:/ { print $2 }' /proc/meminfo) KiB"
        else
            result touched fail "dd of $fill MiB: $(cat /tmp/dd.err)"
        fi
        mt0=$(memtotal)
        # L1 sets a target 192 MiB below the memory and answers once
        # actual reached it.
        sync_l1 touched || finish poweroff
        mt1=$(memtotal)
        drop=$((mt0 - mt1))
        if [ "$drop" -ge $((196608 - 1024)) ] && [ "$drop" -le 196608 ]; then
            result memtotal-inflated ok "MemTotal $mt0 -> $mt1 KiB (-$drop KiB for a 192 MiB balloon)"
        else
            result memtotal-inflated fail "MemTotal $mt0 -> $mt1 KiB (-$drop KiB), want -196608"
        fi
        # L1 sets the target back to the whole memory and answers once
        # actual is back there.
        sync_l1 deflate || finish poweroff
        expect memtotal-deflated "$mt0" "$(memtotal)"
        # The pages given back are the guest's to use again.
        if fill; then
            result refill ok "$fill MiB written to tmpfs after the deflate"
        else
            result refill fail "dd of $fill MiB: $(cat /tmp/dd.err)"
        fi
        sync_l1 refilled || finish poweroff
        rm -f /fill/big
    else
        expect reporting-feature 1 "$(feature 5)"
        expect deflate-on-oom-feature 1 "$(feature 2)"
        if fill; then
            result filled ok "$fill MiB written to tmpfs"
        else
            result filled fail "dd of $fill MiB: $(cat /tmp/dd.err)"
        fi
        sync_l1 filled || finish poweroff
        rm /fill/big
        echo "VIREO-VALUE $name freed-mib $fill"
        result freed ok "deleted the $fill MiB file at $(now) s"
        # L1 watches vireo's RSS fall as Linux reports the free pages.
        sync_l1 freed || finish poweroff
        # Deflate on OOM: L1 sets a target of 256 MiB and answers once the
        # balloon holds the other 256. Then L2 writes 96 MiB more to tmpfs
        # than is free: with no swap, Linux finds them only by taking
        # pages back from the balloon (its OOM notifier, before the OOM
        # killer), so the write completes and nothing is killed.
        sync_l1 inflate || finish poweroff
        free=$(awk '/^MemFree:/ { print int($2 / 1024) }' /proc/meminfo)
        want=$((free + 96))
        if dd if=/dev/zero of=/fill/big bs=1M count=$want 2>/tmp/dd.err; then
            result oom-fill ok "$want MiB written to tmpfs with $free MiB free; MemFree now $(awk '/^MemFree:/ { print $2 }' /proc/meminfo) KiB"
        else
            result oom-fill fail "dd of $want MiB with $free MiB free: $(tail -n 1 /tmp/dd.err)"
        fi
        # L1 reads the balloon's actual size and its counters.
        sync_l1 oom || finish poweroff
        rm -f /fill/big
    fi
    finish poweroff
    ;;
power-api)
    # Pause and resume through L1's API calls, then the ACPI power button.
    open_hvc0
    buttons=
    for e in /sys/class/input/event*; do
        [ "$(cat "$e/device/name" 2>/dev/null)" = "Power Button" ] &&
            buttons="$buttons /dev/$(basename "$e")($(cat "$e/device/phys" 2>/dev/null))"
    done
    if [ -n "$buttons" ]; then
        result button-input ok "Linux's button driver made$buttons"
    else
        result button-input fail "no 'Power Button' input device: $(cat /sys/class/input/*/device/name 2>/dev/null | tr '\n' ',')"
    fi
    # A ticker L1 watches (no tick while paused) and a 5 s sleep that spans
    # the pause.
    (while :; do
        echo "vireo-l2: tick $(now)"
        sleep 0.5
    done) &
    ticker=$!
    t0=$(now)
    d0=$(date +%s)
    sleep 5 &
    sleeper=$!
    if sync_l1 pause; then
        if wait $sleeper; then
            result sleep-spans-pause ok "a 5 s sleep started before the pause ended $(elapsed "$t0") s later (uptime)"
        else
            result sleep-spans-pause fail "the sleep ended with $?"
        fi
        t1=$(now)
        d1=$(date +%s)
        if awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b > a) }' && [ "$d1" -ge "$d0" ]; then
            result clock-forward ok "uptime $t0 -> $t1, date +%s $d0 -> $d1"
        else
            result clock-forward fail "uptime $t0 -> $t1, date +%s $d0 -> $d1"
        fi
        t2=$(now)
        sleep 1
        took=$(elapsed "$t2")
        if awk -v t="$took" 'BEGIN { exit !(t >= 0.99 && t < 5) }'; then
            result timer-after-resume ok "sleep 1 took $took s of uptime"
        else
            result timer-after-resume fail "sleep 1 took $took s of uptime"
        fi
        bad=$(dmesg | grep -iE 'soft lockup|rcu.*stall|clocksource.*unstable|hung_task|workqueue lockup' | tr '\n' '|')
        if [ -z "$bad" ]; then
            result clock-clean ok "no lockup, stall or unstable clocksource in dmesg"
        else
            result clock-clean fail "$bad"
        fi
    fi
    kill $ticker 2>/dev/null
    # busybox acpid reads every /dev/input/event* and runs
    # /etc/acpi/PWRF/00000080 for the power button's KEY_POWER.
    mkdir -p /etc/acpi/PWRF
    cat >/etc/acpi/PWRF/00000080 <<EOS
#!/bin/sh
echo "VIREO-RESULT $name power-button ok acpid got KEY_POWER from the ACPI power button and ran its handler"
poweroff -f
EOS
    chmod 755 /etc/acpi/PWRF/00000080
    acpid -d -c /etc/acpi &
    sleep 1
    echo "VIREO-READY power-button"
    sleep 120
    result power-button fail "no power button event within 120 s"
    finish poweroff
    ;;
hotplug)
    # Ten rounds: L1 hot-plugs a disk and a NIC, Linux finds them (ACPI PCI
    # hot-plug), uses them, and ejects them when L1 asks.
    open_hvc0
    rounds=$(arg vireo.rounds)
    pci0=$(ls /sys/bus/pci/devices | wc -l)
    ok_rounds=0
    i=1
    while [ "$i" -le "$rounds" ]; do
        sync_l1 plug-$i || break
        disk= nic=
        n=0
        while [ $n -lt 300 ]; do
            disk=$(ls /sys/block | grep '^vd' | head -n 1)
            nic=$(ls /sys/class/net | grep '^eth' | head -n 1)
            [ -n "$disk" ] && [ -n "$nic" ] && break
            sleep 0.2
            n=$((n + 1))
        done
        if [ -z "$disk" ] || [ -z "$nic" ]; then
            result round-$i fail "after 60 s: disk '${disk}', NIC '${nic}'; pci: $(ls /sys/bus/pci/devices | tr '\n' ' ')"
            break
        fi
        mark=$(dd if=/dev/$disk bs=16 count=1 2>/dev/null | tr -d '\0')
        printf "l2-round-$i" | dd of=/dev/$disk bs=4096 seek=1 conv=sync,notrunc oflag=direct 2>/tmp/hp.err
        wrote=$?
        ip link set "$nic" up
        n=0
        while [ "$(cat /sys/class/net/$nic/carrier 2>/dev/null)" != 1 ] && [ $n -lt 50 ]; do
            sleep 0.2
            n=$((n + 1))
        done
        carrier=$(cat /sys/class/net/$nic/carrier 2>/dev/null)
        pci1=$(ls /sys/bus/pci/devices | wc -l)
        echo "vireo-l2: round $i: /dev/$disk read '$mark', write rc $wrote, $nic carrier '$carrier', $pci1 PCI devices"
        if [ "$mark" != "round-$i" ] || [ "$wrote" != 0 ] || [ "$carrier" != 1 ] || [ "$pci1" != $((pci0 + 2)) ]; then
            result round-$i fail "/dev/$disk read '$mark' (want round-$i), write rc $wrote $(tr '\n' ' ' </tmp/hp.err), $nic carrier '$carrier', $pci1 PCI devices (want $((pci0 + 2)))"
            break
        fi
        sync_l1 unplug-$i || break
        n=0
        # The disk and the NIC go before their PCI functions do: wait for
        # all three.
        while { [ -e /sys/block/$disk ] || [ -e /sys/class/net/$nic ] ||
            [ "$(ls /sys/bus/pci/devices | wc -l)" != "$pci0" ]; } && [ $n -lt 300 ]; do
            sleep 0.2
            n=$((n + 1))
        done
        pci2=$(ls /sys/bus/pci/devices | wc -l)
        if [ -e /sys/block/$disk ] || [ -e /sys/class/net/$nic ] || [ "$pci2" != "$pci0" ]; then
            result round-$i fail "60 s after the eject request: /sys/block/$disk $([ -e /sys/block/$disk ] && echo present || echo gone), $nic $([ -e /sys/class/net/$nic ] && echo present || echo gone), $pci2 PCI devices (want $pci0)"
            break
        fi
        ok_rounds=$i
        i=$((i + 1))
    done
    if [ "$ok_rounds" = "$rounds" ]; then
        result rounds ok "$rounds rounds: disk and NIC appeared, were used and were ejected"
    else
        result rounds fail "$ok_rounds of $rounds rounds"
    fi
    expect pci-count "$pci0" "$(ls /sys/bus/pci/devices | wc -l)"
    # L1 counts vireo's open files while the VM still runs.
    sync_l1 done
    finish poweroff
    ;;
volume)
    # A domain's `<disk type='volume'>` (l1-init.sh's pool-* scenarios):
    # /dev/vda is the pool's volume; it reads L1's marker, has the
    # volume's size, and takes a write L1 then finds on the volume.
    marker=$(arg vireo.marker)
    word=$(arg vireo.word)
    got=$(dd if=/dev/vda bs=${#marker} count=1 2>/dev/null)
    expect vol-marker "$marker" "$got"
    expect vol-sectors "$(arg vireo.sectors)" "$(cat /sys/block/vda/size 2>&1)"
    if printf '%s' "$word" | dd of=/dev/vda bs=512 seek=2048 conv=fsync 2>/tmp/vol.err; then
        result vol-write ok "wrote '$word' at 1 MiB of /dev/vda and synced"
    else
        result vol-write fail "$(tr '\n' ' ' </tmp/vol.err)"
    fi
    finish poweroff
    ;;
daemon)
    # A domain of `vireo daemon` in L1 (l1-init.sh's scenario_daemon): its
    # serial console is ttyS0, reached by `vireo console`; L1 drives the
    # rest through the virsh-like verbs and waits for the VIREO-READY lines.
    # Its memballoon (setmem, dommemstat) is Linux's own driver's.
    insmod /modules/virtio_balloon.ko 2>/dev/null
    disks0=$(ls /sys/block | grep '^vd' | tr '\n' ' ')
    marker=$(arg vireo.marker)
    got=$(dd if=/dev/vda bs=${#marker} count=1 2>/dev/null)
    if [ "$disks0" = "vda " ] && [ "$got" = "$marker" ]; then
        result boot-disk ok "/dev/vda (the XML's raw disk) reads L1's marker '$got'"
    else
        result boot-disk fail "disks: '$disks0', /dev/vda starts with '$got', want '$marker'"
    fi
    # The power button's handler, armed now (as power-api's) so that a
    # `vireo shutdown` is handled whenever it comes.
    buttons=$(grep -l '^Power Button$' /sys/class/input/event*/device/name 2>/dev/null | wc -l)
    if [ "$buttons" -gt 0 ]; then
        result button-input ok "$buttons 'Power Button' input device(s)"
    else
        result button-input fail "no 'Power Button' input device: $(cat /sys/class/input/*/device/name 2>/dev/null | tr '\n' ',')"
    fi
    mkdir -p /etc/acpi/PWRF
    cat >/etc/acpi/PWRF/00000080 <<EOS
#!/bin/sh
echo "VIREO-RESULT $name power-button ok acpid got KEY_POWER from the ACPI power button and ran its handler"
poweroff -f
EOS
    chmod 755 /etc/acpi/PWRF/00000080
    acpid -d -c /etc/acpi &
    # Console: L1 types `ping-WORD` into `vireo console`; the answer
    # `VIREO-PONG WORD-reversed` shows this shell read and acted on it.
    stty -echo </dev/ttyS0
    echo "VIREO-READY console"
    line=
    read -t 150 -r line </dev/ttyS0
    line=$(echo "$line" | tr -d '\r')
    case "$line" in
    ping-*)
        word=${line#ping-}
        echo "VIREO-PONG $(echo "$word" | rev)"
        result console-read ok "read '$line' from ttyS0"
        ;;
    *) result console-read fail "read '$line' from ttyS0 (want ping-...; empty: nothing within 150 s)" ;;
    esac
    # Live attach: a new virtio disk appears and reads L1's marker.
    echo "VIREO-READY attach"
    new=
    n=0
    while [ -z "$new" ] && [ $n -lt 750 ]; do
        new=$(ls /sys/block | grep '^vd' | grep -vx vda | head -n 1)
        [ -n "$new" ] || sleep 0.2
        n=$((n + 1))
    done
    if [ -n "$new" ]; then
        hp=$(arg vireo.hp_marker)
        got=$(dd if=/dev/$new bs=${#hp} count=1 2>/dev/null)
        if [ "$got" = "$hp" ]; then
            result disk-attached ok "/dev/$new appeared ($(cat /sys/block/$new/size) sectors, on $(basename "$(readlink /sys/block/$new/device)")) and reads L1's marker '$got'"
        else
            result disk-attached fail "/dev/$new appeared but reads '$got', want '$hp'"
        fi
        echo "VIREO-READY detach"
        n=0
        while [ -e /sys/block/$new ] && [ $n -lt 750 ]; do
            sleep 0.2
            n=$((n + 1))
        done
        if [ -e /sys/block/$new ]; then
            result disk-detached fail "/sys/block/$new still there 150 s after VIREO-READY detach"
        else
            result disk-detached ok "/dev/$new ejected: gone from /sys/block ($(ls /sys/block | grep '^vd' | tr '\n' ' ')left)"
        fi
    else
        result disk-attached fail "no new vd* in /sys/block within 150 s: $(ls /sys/block | tr '\n' ' ')"
    fi
    echo "VIREO-READY power-button"
    sleep 150
    result power-button fail "no power button event within 150 s"
    finish poweroff
    ;;
dhcp)
    # issue 12: a domain of `vireo daemon` on a NAT network (l1-init.sh's
    # net-nat). eth0 gets its address from the network's dnsmasq through
    # busybox udhcpc; the dns/host name resolves through it; the upstream
    # server answers a ping and a TCP exchange through the NAT; an IPv6
    # address comes by DHCPv6. L1 reads the addresses from the VIREO-VALUE
    # lines and checks the daemon's leases.
    subnet=$(arg vireo.subnet) range=$(arg vireo.range) up=$(arg vireo.upstream) word=$(arg vireo.word)
    nic=$(ls /sys/class/net | grep '^eth' | head -n 1)
    if [ -z "$nic" ]; then
        result dhcp-address fail "no eth* interface: $(ls /sys/class/net | tr '\n' ' ')"
        echo "VIREO-READY upstream"
        sleep 1000000
    fi
    mkdir -p /etc /usr/share/udhcpc
    # udhcpc's hook: configures the lease it got, as Debian's default
    # script does (address, default route, resolv.conf). Only IPv4 is
    # flushed: the link-local IPv6 address is what DHCPv6 sends from.
    cat >/tmp/udhcpc.sh <<'EOF'
#!/bin/sh
case "$1" in
bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -z "$router" ] || ip route replace default via "${router%% *}" dev "$interface"
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "$ip $mask ${router%% *} ${dns%% *} $serverid $lease" >/tmp/lease
    ;;
esac
EOF
    chmod 755 /tmp/udhcpc.sh
    ip link set "$nic" up
    t0=$(now)
    udhcpc -i "$nic" -f -q -n -t 20 -T 3 -s /tmp/udhcpc.sh >/tmp/udhcpc.log 2>&1
    st=$?
    sed 's/^/vireo-l2: udhcpc: /' /tmp/udhcpc.log
    if [ $st = 0 ] && [ -s /tmp/lease ]; then
        read -r ip mask router dns server lease </tmp/lease
        echo "VIREO-VALUE $name dhcp-ip $ip"
        last=${ip##*.}
        if [ "${ip%.*}" = "$subnet" ] && [ "$last" -ge "${range%-*}" ] && [ "$last" -le "${range#*-}" ]; then
            result dhcp-address ok "udhcpc on $nic ($(cat /sys/class/net/$nic/address)) got $ip/$mask from server $server in $(elapsed "$t0") s: router $router, DNS $dns, lease $lease s; $(ip -o -4 addr show dev "$nic" | tr -s ' ')"
        else
            result dhcp-address fail "got $ip/$mask from $server, want $subnet.$range"
        fi
        # The network's dns/host entry, through the DNS server DHCP gave.
        names=$(nslookup "$(arg vireo.dns_name)" 2>&1 | tr '\n' ' ')
        case "$names" in
        *"$(arg vireo.dns_ip)"*) result dns-host ok "nslookup $(arg vireo.dns_name) (resolv.conf: $(cat /etc/resolv.conf | tr '\n' ' ')): $names" ;;
        *) result dns-host fail "want $(arg vireo.dns_ip): $names" ;;
        esac
        pinged=$(ping -c 3 -W 5 "$up" 2>&1)
        case "$pinged" in
        *" 3 packets received"*) result ping-upstream ok "$(echo "$pinged" | tail -n 2 | tr '\n' ' ')" ;;
        *) result ping-upstream fail "$(echo "$pinged" | tr '\n' ' '); routes: $(ip route | tr '\n' ' ')" ;;
        esac
        reply=$(echo "$word" | timeout 60 nc -w 30 "$up" 7777 2>&1)
        if [ "$reply" = vireo-upstream-reply ]; then
            result tcp-upstream ok "sent '$word' to $up:7777 with busybox nc, the server answered '$reply'"
        else
            result tcp-upstream fail "sent '$word' to $up:7777, the answer was '$reply'"
        fi
    else
        result dhcp-address fail "udhcpc exited $st after $(elapsed "$t0") s: $(tr '\n' ' ' </tmp/udhcpc.log)"
    fi
    # DHCPv6 from the same dnsmasq (the network's IPv6 <ip> with its
    # range): nested-tool's client, as busybox has no udhcpc6. The address
    # is configured and the network's own IPv6 address answers a ping from
    # it.
    gw6=$(arg vireo.gw6)
    if [ -n "$gw6" ]; then
        t0=$(now)
        if got6=$(nested-tool dhcp6 "$nic" 60 2>/tmp/dhcp6.err); then
            echo "VIREO-VALUE $name dhcp6-ip $got6"
            if ip -6 addr add "$got6/64" dev "$nic" 2>/tmp/dhcp6.err; then
                result dhcp6-address ok "nested-tool dhcp6 on $nic got $got6 in $(elapsed "$t0") s; $(ip -o -6 addr show dev "$nic" | tr -s ' ' | tr '\n' ' ')"
            else
                result dhcp6-address fail "got $got6, but ip -6 addr add: $(tr '\n' ' ' </tmp/dhcp6.err)"
            fi
            # From the new address, once duplicate address detection
            # has let it be used.
            n=0
            while ip -6 addr show dev "$nic" | grep -q tentative && [ $n -lt 50 ]; do
                sleep 0.1
                n=$((n + 1))
            done
            pinged=$(ping -6 -c 3 -W 5 -I "$got6" "$gw6" 2>&1)
            case "$pinged" in
            *" 3 packets received"*) result ping6-gateway ok "$(echo "$pinged" | tail -n 2 | tr '\n' ' ')" ;;
            *) result ping6-gateway fail "ping -6 $gw6: $(echo "$pinged" | tr '\n' ' '); routes: $(ip -6 route | tr '\n' ' ')" ;;
            esac
        else
            result dhcp6-address fail "after $(elapsed "$t0") s: $(tr '\n' ' ' </tmp/dhcp6.err)"
        fi
    fi
    # 802.1Q over vireo's NIC: eth0.10 reaches L1's peer on VLAN 10 (with
    # full-size frames: 1500 bytes of IP in a 1518-byte tagged frame) and
    # not the one on VLAN 20; eth0.20, the same address, the other way.
    vlan_net=$(arg vireo.vlan_net)
    if [ -n "$vlan_net" ]; then
        for m in llc stp garp mrp 8021q; do
            insmod "/modules/$m.ko" || echo "vireo-l2: insmod $m failed"
        done
        for id in 10 20; do
            other=$((30 - id))
            dev=$nic.$id
            ip link add link "$nic" name "$dev" type vlan id $id 2>/tmp/e ||
                vconfig add "$nic" $id 2>>/tmp/e
            ip addr add "$vlan_net.2/24" dev "$dev" && ip link set "$dev" up
            if [ ! -e /sys/class/net/$dev ]; then
                result vlan-$id fail "no $dev: $(tr '\n' ' ' </tmp/e)"
                continue
            fi
            pinged=$(ping -c 3 -W 5 "$vlan_net.$id" 2>&1)
            case "$pinged" in
            *" 3 packets received"*) result vlan-$id ok "$dev ($(cat /proc/net/vlan/$dev 2>/dev/null | head -n 1 | tr -s ' ')): ping $vlan_net.$id, L1's peer on VLAN $id: $(echo "$pinged" | tail -n 2 | tr '\n' ' ')" ;;
            *) result vlan-$id fail "$dev: ping $vlan_net.$id: $(echo "$pinged" | tr '\n' ' ')" ;;
            esac
            big=$(ping -c 2 -W 5 -s 1472 "$vlan_net.$id" 2>&1)
            case "$big" in
            *" 2 packets received"*) result vlan-$id-full-size ok "1500-byte IP packets (1518-byte tagged frames) both ways: $(echo "$big" | tail -n 2 | tr '\n' ' ')" ;;
            *) result vlan-$id-full-size fail "ping -s 1472 on $dev: $(echo "$big" | tr '\n' ' ')" ;;
            esac
            crossed=$(ping -c 2 -W 3 "$vlan_net.$other" 2>&1)
            case "$crossed" in
            *" 0 packets received"*) result vlan-$id-isolated ok "$vlan_net.$other (on VLAN $other) does not answer on $dev: $(echo "$crossed" | tail -n 2 | tr '\n' ' ')" ;;
            *) result vlan-$id-isolated fail "$vlan_net.$other (on VLAN $other) answered on $dev: $(echo "$crossed" | tr '\n' ' ')" ;;
            esac
            ip link del "$dev"
        done
    fi
    # L1 checks the leases while the domain runs, then destroys it.
    echo "VIREO-READY upstream"
    sleep 1000000
    ;;
*)
    result scenario fail "unknown scenario '$scenario'"
    finish poweroff
    ;;
esac
