#!/usr/bin/env bash
# The per-VM API against its own contract: schemathesis (from PyPI, in a
# venv under target/) drives `vireo run --api-socket` through the OpenAPI
# document the VM serves at GET /openapi, and fails on any 5xx, any request
# the document allows that the API rejects with 400, any request the
# document forbids that the API accepts, and any answer the document does
# not describe. Fixed seed, bounded examples: well under a minute per pass.
#
# Two passes, each against a fresh VM:
#   unconfigured  no kernel: every operation, every body parsed and checked;
#                 nothing on the host changes.
#   running       the idle test guest with a balloon: pause, resume, reset,
#                 counters, the balloon and the disk operations act on a
#                 live VM. Power-off and the
#                 power button (they end it) and add-net (it would create
#                 TAPs in this network namespace) are left out.
# Statuses a well-formed request may get: 2xx; 404 (no such device); 409
# (not in a state for it); 422 (well formed but impossible here: a file that
# does not exist, a host limit).
#
# Usage: scripts/api-contract.sh [path/to/vireo]   (default: target/debug/vireo)
# Needs target/guests/idle.elf (guests/build.sh target/guests).
# Env:   API_CONTRACT_EXAMPLES (per operation, default 60), API_CONTRACT_SEED
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
vireo=${1:-$root/target/debug/vireo}
idle=$root/target/guests/idle.elf
examples=${API_CONTRACT_EXAMPLES:-60}
seed=${API_CONTRACT_SEED:-9}
venv=$root/target/schemathesis-venv
work=$(mktemp -d "${TMPDIR:-/tmp}/vireo-api-contract.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

[ -x "$vireo" ] || { echo "api-contract: no vireo binary at $vireo (cargo build -p vireo)" >&2; exit 2; }
[ -f "$idle" ] || { echo "api-contract: no $idle (guests/build.sh target/guests)" >&2; exit 2; }
if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "api-contract: installing schemathesis into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'schemathesis>=4,<5'
fi

cat >"$work/schemathesis.toml" <<'TOML'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "409", "422"]
[checks.negative_data_rejection]
expected-statuses = ["400", "404", "405", "409", "411", "413", "415"]
TOML

# A loopback TCP port relayed to a unix socket (socat is not assumed).
cat >"$work/bridge.py" <<'PY'
import os, socket, sys, threading
sock_path, port_file = sys.argv[1], sys.argv[2]
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(64)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.getsockname()[1]))
os.rename(port_file + ".tmp", port_file)
def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
def serve(client):
    upstream = socket.socket(socket.AF_UNIX)
    try:
        upstream.connect(sock_path)
    except OSError:
        client.close()
        return
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    pump(upstream, client)
    client.close()
    upstream.close()
while True:
    c, _ = server.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY

# check NAME [vireo run flags...] -- [schemathesis flags...]
check() {
    local name=$1
    shift
    local vm_args=() st_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do vm_args+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    st_args=("$@")
    local dir=$work/$name
    mkdir -p "$dir"
    local sock=$dir/api.sock
    "$vireo" run --api-socket "$sock" --serial off "${vm_args[@]}" >"$dir/vm.log" 2>&1 &
    local vm_pid=$!
    pids+=("$vm_pid")
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    [ -S "$sock" ] || { echo "api-contract: $name: the VM's socket never appeared" >&2; cat "$dir/vm.log" >&2; return 1; }
    "$venv/bin/python" "$work/bridge.py" "$sock" "$dir/port" &
    pids+=("$!")
    for _ in $(seq 100); do [ -s "$dir/port" ] && break; sleep 0.05; done
    local url=http://127.0.0.1:$(cat "$dir/port")
    # The document the VM serves, not the one in the tree.
    "$venv/bin/python" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "$url/openapi" >"$dir/openapi.json"
    echo "api-contract: $name"
    local status=0
    (cd "$dir" && "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$dir/openapi.json" \
        --url "$url" \
        --checks all \
        --exclude-checks ignored_auth,use_after_free,ensure_resource_availability,object_level_authorization \
        --max-examples "$examples" \
        --seed "$seed" \
        --workers 1 \
        --request-timeout 40 \
        --no-color \
        --warnings off \
        "${st_args[@]}") || status=$?
    if ! kill -0 "$vm_pid" 2>/dev/null; then
        echo "api-contract: $name: the VM died during the run" >&2
        cat "$dir/vm.log" >&2
        return 1
    fi
    return $status
}

status=0
check unconfigured || status=1
check running --kernel "$idle" --balloon -- \
    --exclude-path /vm/power-off --exclude-path /vm/shutdown --exclude-path /vm/add-net || status=1
[ $status -eq 0 ] && echo "api-contract: no issues found" || echo "api-contract: FAILED" >&2
exit $status
