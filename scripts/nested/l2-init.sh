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
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
    virtio_blk failover net_failover virtio_net virtio_console virtio-rng; do
    insmod "/modules/$m.ko" || echo "vireo-l2: insmod $m failed"
done
echo "vireo-l2: init reached, scenario $scenario"
# Let the drivers' probes (asynchronous for some) finish.
mdev -s 2>/dev/null
sleep 1

finish() {
    echo "vireo-l2: scenario $scenario done, $1"
    case "$1" in
    reboot) reboot -f ;;
    *) poweroff -f ;;
    esac
    echo "vireo-l2: $1 -f returned"
    sleep 1000000
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
    queues=$(arg vireo.queues)
    expect net-queues "rx=$queues tx=$queues" \
        "rx=$(ls /sys/class/net/eth0/queues | grep -c '^rx-') tx=$(ls /sys/class/net/eth0/queues | grep -c '^tx-')"
    # The traffic above took interrupts in both directions (which queue
    # pair carried it is the TAP's and XPS's choice).
    dev=$(basename "$(readlink /sys/class/net/eth0/device)")
    irqs=$(awk -v d="$dev-(in|out)put" '$NF ~ d { n = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; printf "%s=%d ", $NF, n }' /proc/interrupts)
    in=$(echo "$irqs" | tr ' ' '\n' | awk -F= '/input/ { n += $2 } END { print n + 0 }')
    out=$(echo "$irqs" | tr ' ' '\n' | awk -F= '/output/ { n += $2 } END { print n + 0 }')
    if [ "$in" -gt 0 ] && [ "$out" -gt 0 ]; then
        result net-irqs ok "$irqs"
    else
        result net-irqs fail "input $in, output $out: ${irqs:-no $dev vectors in /proc/interrupts}"
    fi
    finish poweroff
    ;;
console)
    if [ -c /dev/hvc0 ]; then
        echo "hello-from-l2-hvc0" >/dev/hvc0
        result hvc0 ok "wrote a line to /dev/hvc0"
    else
        result hvc0 fail "no /dev/hvc0: $(ls /dev | tr '\n' ' ')"
    fi
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
    finish poweroff
    ;;
*)
    result scenario fail "unknown scenario '$scenario'"
    finish poweroff
    ;;
esac
