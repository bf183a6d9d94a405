#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need,
# checks formatting and lints, builds the test guests and runs every test
# (unit tests and end-to-end runs on the real /dev/kvm).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: gcc/binutils build the test guests, iasl
# checks our ACPI tables, busybox and cpio make the Linux test's initramfs,
# qemu-utils checks our qcow2 images, iproute2 and ping drive the network
# tests.
need=()
command -v gcc >/dev/null || need+=(gcc)
command -v iasl >/dev/null || need+=(acpica-tools)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
# The network tests put TAPs in namespaces (ip) and ping the guest.
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
# Virtual networks: nft applies their NAT/forwarding rules, dnsmasq serves
# their DHCP and DNS.
command -v nft >/dev/null || need+=(nftables)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
# A DHCPv6 client for the IPv6 lease test (run in a namespace of its own).
command -v dhclient >/dev/null || need+=(isc-dhcp-client)
# Per-NIC bandwidth: tc sets the HTB qdiscs and the IFB redirect.
command -v tc >/dev/null || need+=(iproute2)
# Storage pools: fs pools make filesystems (mkfs.ext4/xfs/vfat, blkid),
# disk pools' tests read the GPT back with sgdisk.
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
command -v mkfs.vfat >/dev/null || need+=(dosfstools)
command -v sgdisk >/dev/null || need+=(gdisk)
command -v losetup >/dev/null || need+=(mount)
# The remote tests run a real sshd (in a namespace, on a port of their own).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# iSCSI: vireo loads libiscsi when a disk needs it (docs/run.md, network
# disk drivers); the tests run a tgtd target (tgtd, tgtadm) in a namespace
# they make.
[ -e /usr/lib/x86_64-linux-gnu/libiscsi.so.7 ] || need+=(libiscsi7)
command -v tgtd >/dev/null || need+=(tgt)
# NFS: vireo loads libnfs as it loads libiscsi; the tests run nfs-ganesha
# (VFS backend) with an rpcbind beside it, in a namespace they make.
[ -e /usr/lib/x86_64-linux-gnu/libnfs.so.13 ] || need+=(libnfs13)
command -v ganesha.nfsd >/dev/null || need+=(nfs-ganesha)
[ -e /usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so ] || need+=(nfs-ganesha-vfs)
command -v rpcbind >/dev/null || need+=(rpcbind)
# The API contract check makes a venv for schemathesis.
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v curl >/dev/null || need+=(curl)
# qemu-img and qemu-io are the oracle of the qcow2 interop tests. Installed
# with qemu-system-x86 so neither removes the other's (backported) version.
command -v qemu-img >/dev/null || need+=(qemu-system-x86 qemu-utils)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${need[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
fi

if [ ! -w /dev/kvm ]; then
    echo "error: /dev/kvm is missing or not writable; the end-to-end tests need it" >&2
    exit 1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
guests/build.sh target/guests
# The nested Linux tests (docs/testing.md) unpack Debian's QEMU 7.2 under
# target/nested/qemu and install only its libraries: no qemu-utils downgrade.
scripts/nested/fetch-qemu.sh target/nested/qemu

# A test that cannot run on this host (no root, no O_DIRECT, no apt for the
# nested Linux tests) records itself through
# testkit::skip; the summary counts it as skipped, not passed.
export VIREO_SKIP_LOG="$PWD/target/skipped-tests.txt"
: >"$VIREO_SKIP_LOG"
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee target/test-output.txt || status=$?
# The per-VM API against its own OpenAPI document (schemathesis, in target/).
scripts/api-contract.sh target/debug/vireo || status=$?
scripts/test-summary.sh target/test-output.txt "$VIREO_SKIP_LOG"
exit "$status"
