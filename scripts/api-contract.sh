#!/usr/bin/env bash
# The per-VM API against its own contract: schemathesis (from PyPI, in a
# venv under target/) drives `vireo run --api-socket` through the OpenAPI
# document the VM serves at GET /openapi, and fails on any 5xx, any request
# the document allows that the API rejects with 400, any request the
# document forbids that the API accepts, and any answer the document does
# not describe. Fixed seed, bounded examples: a few minutes at most.
#
# The VM runs unconfigured (no kernel): every body is still parsed and
# checked, and nothing on the host changes (no TAP is created, no image
# opened for writing). Statuses a well-formed request may get: 2xx; 404 (no
# such device); 409 (not in a state for it); 422 (the values are well
# formed but cannot be carried out here: a file that does not exist, a
# host limit).
#
# Usage: scripts/api-contract.sh [path/to/vireo]   (default: target/debug/vireo)
# Env:   API_CONTRACT_EXAMPLES (per operation, default 60), API_CONTRACT_SEED
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
vireo=${1:-$root/target/debug/vireo}
examples=${API_CONTRACT_EXAMPLES:-60}
seed=${API_CONTRACT_SEED:-9}
venv=$root/target/schemathesis-venv
work=$(mktemp -d "${TMPDIR:-/tmp}/vireo-api-contract.XXXXXX")
vm_pid= bridge_pid=
cleanup() {
    [ -n "$bridge_pid" ] && kill "$bridge_pid" 2>/dev/null || true
    [ -n "$vm_pid" ] && kill "$vm_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

[ -x "$vireo" ] || { echo "api-contract: no vireo binary at $vireo (cargo build -p vireo)" >&2; exit 2; }
if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "api-contract: installing schemathesis into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'schemathesis>=4,<5'
fi

sock=$work/api.sock
"$vireo" run --api-socket "$sock" --serial off >"$work/vm.log" 2>&1 &
vm_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "api-contract: the VM's socket never appeared" >&2; cat "$work/vm.log" >&2; exit 1; }

# A loopback TCP port relayed to the unix socket (socat is not assumed).
"$venv/bin/python" - "$sock" "$work/port" <<'PY' &
import socket, sys, threading
sock_path, port_file = sys.argv[1], sys.argv[2]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(64)
open(port_file + ".tmp", "w").write(str(server.getsockname()[1]))
import os; os.rename(port_file + ".tmp", port_file)
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
    client.close(); upstream.close()
while True:
    c, _ = server.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
bridge_pid=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.05; done
port=$(cat "$work/port")
url=http://127.0.0.1:$port

cat >"$work/schemathesis.toml" <<TOML
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "409", "422"]
[checks.negative_data_rejection]
expected-statuses = ["400", "404", "405", "409", "411", "413", "415"]
TOML

# The document the VM serves, not the one in the tree.
"$venv/bin/python" -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" \
    "$url/openapi" >"$work/openapi.json"

cd "$work"
status=0
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$work/openapi.json" \
    --url "$url" \
    --checks all \
    --exclude-checks ignored_auth,use_after_free,ensure_resource_availability,object_level_authorization \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 40 \
    --no-color \
    --warnings off \
    || status=$?
kill -0 "$vm_pid" 2>/dev/null || { echo "api-contract: the VM died during the run" >&2; cat "$work/vm.log" >&2; exit 1; }
exit $status
