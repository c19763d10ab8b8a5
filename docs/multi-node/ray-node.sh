#!/usr/bin/env bash
# ray-node.sh: start one node of a multi-machine Ray cluster inside an imagematrix image (README.md beside it).
#
#   ray-node.sh head   [RAY START OPTION...] [-- COMMAND...]
#   ray-node.sh worker [RAY START OPTION...]
#
# head:   starts the Ray head on the IP of the NIC named by NCCL_SOCKET_IFNAME. With a COMMAND (`vllm serve ...`)
#         it waits until RAY_NODES nodes have joined, then runs it; without one it keeps the node up.
# worker: waits until the head's port answers, joins it (`ray start --address`), keeps the node up.
#
# Environment:
#   NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME  the NIC that connects the machines (required; must exist here)
#   RAY_HEAD_ADDRESS   head IP:port (required on a worker)
#   RAY_PORT           the head's port (default 6379)
#   RAY_NODES          nodes the head waits for before it runs COMMAND (default 2)
#   RAY_HEAD_WAIT      seconds a worker waits for the head's port to answer (default 300)
#   RAY_NODES_WAIT     seconds the head waits for RAY_NODES nodes (default 900)
#
# Ray, NCCL, Gloo and vLLM then all use the same NIC: Ray's node IP is that NIC's address, and VLLM_HOST_IP is set
# to it unless given. A failure prints `ray-node: error: WHAT` and `ray-node: fix: HOW` and exits 2 (configuration)
# or 1 (runtime). SIGTERM (docker stop) stops Ray cleanly.
set -uo pipefail

PY=${PYTHON:-python3}
ROLE=${1:-}
shift || true

say() { printf 'ray-node: %s\n' "$*"; }
die() {  # die CODE WHAT FIX
    printf 'ray-node: error: %s\nray-node: fix: %s\n' "$2" "$3" >&2
    exit "$1"
}

case "$ROLE" in
    head | worker) ;;
    *) die 2 "unknown role '${ROLE}'" "run \`ray-node.sh head [RAY START OPTION...] [-- COMMAND...]\` or \`ray-node.sh worker [RAY START OPTION...]\`" ;;
esac

RAY_OPTS=()
COMMAND=()
while (($#)); do
    if [[ $1 == -- ]]; then
        shift
        COMMAND=("$@")
        break
    fi
    RAY_OPTS+=("$1")
    shift
done
[[ $ROLE == head || ${#COMMAND[@]} -eq 0 ]] || die 2 "a worker takes no COMMAND (${COMMAND[*]})" "run the command on the head: \`ray-node.sh head -- COMMAND...\`"

# --- the NIC -------------------------------------------------------------------------------------------------

# "name ipv4" for every network interface here ("-" when it has no IPv4 address).
ALL_NICS=$("$PY" - <<'EOF'
import fcntl
import socket
import struct

for _, name in socket.if_nameindex():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:  # SIOCGIFADDR
            ip = socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))[20:24])
        except OSError:
            ip = "-"
    print(name, ip)
EOF
) || die 1 "cannot list the network interfaces with $PY" "run this script inside an imagematrix image (it needs Python 3)"

nic_list() { awk '$1 != "lo" { printf "%s%s (%s)", sep, $1, ($2 == "-" ? "no IPv4" : $2); sep = ", " }' <<<"$ALL_NICS"; }
has_nic() { awk -v n="$1" '$1 == n { found = 1 } END { exit !found }' <<<"$ALL_NICS"; }
nic_ip() { awk -v n="$1" '$1 == n { print $2 }' <<<"$ALL_NICS"; }

# The first interface NCCL_SOCKET_IFNAME selects: a comma-separated list of prefixes, `=name` for an exact name.
nccl_nic() {
    local item exact name
    local -a items
    IFS=, read -ra items <<<"$1"
    for item in "${items[@]}"; do
        exact=0
        if [[ $item == =* ]]; then exact=1; item=${item#=}; fi
        [[ -n $item ]] || continue
        while read -r name _; do
            if [[ $name == "$item" ]] || { ((exact == 0)) && [[ $name == "$item"* ]]; }; then
                echo "$name"
                return 0
            fi
        done <<<"$ALL_NICS"
    done
    return 1
}

NIC_FIX="set NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME to the NIC that connects the machines; this machine has: $(nic_list) (with the compose recipe: NIC=<name> in this machine's .env; a container sees the host's NICs only with host networking)"
for var in NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME; do
    [[ -n ${!var:-} ]] || die 2 "$var is not set" "$NIC_FIX"
done
[[ $NCCL_SOCKET_IFNAME != ^* ]] || die 2 "NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME only excludes interfaces, so the NIC Ray should use is unknown" "name the NIC instead: $NIC_FIX"
NIC=$(nccl_nic "$NCCL_SOCKET_IFNAME") || die 2 "no network interface here matches NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME" "$NIC_FIX"
IFS=, read -ra GLOO_NICS <<<"$GLOO_SOCKET_IFNAME"
for gloo in "${GLOO_NICS[@]}"; do
    has_nic "$gloo" || die 2 "GLOO_SOCKET_IFNAME=$GLOO_SOCKET_IFNAME names $gloo, which is not a network interface here" "$NIC_FIX"
done
NODE_IP=$(nic_ip "$NIC")
[[ -n $NODE_IP && $NODE_IP != - ]] || die 2 "the NIC $NIC (from NCCL_SOCKET_IFNAME) has no IPv4 address" "bring $NIC up with an address, or $NIC_FIX"
export VLLM_HOST_IP=${VLLM_HOST_IP:-$NODE_IP}

# --- Ray -----------------------------------------------------------------------------------------------------

RAY_VERSION=$("$PY" -c 'import importlib.metadata as m; print(m.version("ray"))' 2>/dev/null) \
    || die 1 "Ray is not installed for $PY" "use an imagematrix image (every row's lock pins ray)"
PY_VERSION=$("$PY" -c 'import platform; print(platform.python_version())')
command -v ray >/dev/null || die 1 "the ray command is not on PATH" "use an imagematrix image (/opt/venv/bin is on its PATH)"
VERSION_FIX="run the same image (a row-id tag or a digest, not an alias such as vllm0.7.2 that moves between rows) on every machine: \`ray --version\` and \`python --version\` must print the same on all nodes"

explain_failure() {  # explain_failure RC OUTPUT [HEAD ADDRESS]
    local rc=$1 out=$2 address=${3:-} line
    line=$(grep -i -m1 'version mismatch' <<<"$out")
    if [[ -n $line ]]; then
        die 1 "Ray version mismatch: this node runs ray $RAY_VERSION (Python $PY_VERSION), the cluster another: $line" "$VERSION_FIX"
    fi
    if [[ -n $address ]] && grep -qiE 'gcs|timed out|deadline' <<<"$out"; then
        die 1 "this node (ray $RAY_VERSION, Python $PY_VERSION) reached the head at $address over TCP, but the head's GCS did not answer it ($(grep -iE -m1 'gcs|timed out|deadline' <<<"$out")); most often the head runs another Ray or Python version" "$VERSION_FIX; when they match, check that no firewall blocks the other TCP ports between the machines (Ray's node manager, object manager and worker ports, not only $address)"
    fi
    if grep -qi 'address already in use' <<<"$out"; then
        die 1 "a port Ray needs is taken on this machine: $(grep -i -m1 'address already in use' <<<"$out")" "stop what uses it (another Ray: \`ray stop\`), or move the head with RAY_PORT"
    fi
    die 1 "ray start failed with exit code $rc: $(grep -v '^\s*$' <<<"$out" | tail -n 1)" "read Ray's messages above; this node: ray $RAY_VERSION, Python $PY_VERSION, $NIC $NODE_IP"
}

raylet_alive() {
    local stat comm state
    for stat in /proc/[0-9]*/stat; do
        read -r _ comm state _ <"$stat" 2>/dev/null || continue
        [[ $comm == "(raylet)" && $state != Z ]] && return 0
    done
    return 1
}

keep_up() {  # until docker stop (SIGTERM) or the raylet dies
    trap 'say "stopping Ray"; ray stop >/dev/null 2>&1; exit 0' TERM INT
    while raylet_alive; do
        sleep 5 &
        wait $!
    done
    die 1 "the raylet on this node exited" "read /tmp/ray/session_latest/logs/raylet.out and raylet.err in this container; a worker's raylet also exits when it loses the head for a minute (check the head and the network)"
}

nodes_alive() {  # nodes `ray status` lists as active
    ray status 2>/dev/null | awk '/^Active:/ { on = 1; next } /^[A-Za-z]/ { on = 0 } on && /node_/ { n++ } END { print n + 0 }'
}

say "$ROLE: ray $RAY_VERSION (Python $PY_VERSION), NIC $NIC ($NODE_IP), NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME=$GLOO_SOCKET_IFNAME"

if [[ $ROLE == worker ]]; then
    ADDRESS=${RAY_HEAD_ADDRESS:-}
    [[ -n $ADDRESS ]] || die 2 "RAY_HEAD_ADDRESS is not set" "set it to the head's IP on the shared NIC and its port, e.g. RAY_HEAD_ADDRESS=10.0.0.1:6379 (the compose recipe builds it from HEAD_IP and RAY_PORT)"
    [[ $ADDRESS == *:* ]] || ADDRESS="$ADDRESS:${RAY_PORT:-6379}"
    WAIT=${RAY_HEAD_WAIT:-300}
    say "waiting up to ${WAIT} s for the Ray head at $ADDRESS"
    if ! problem=$("$PY" - "$ADDRESS" "$WAIT" <<'EOF'
import socket
import sys
import time

host, _, port = sys.argv[1].rpartition(":")
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        sys.exit(0)
    except socket.gaierror as exc:
        problem = f"the name {host} does not resolve ({exc.strerror})"
    except ConnectionRefusedError:
        problem = f"nothing listens on port {port} of {host} (connection refused)"
    except OSError as exc:
        problem = f"{type(exc).__name__}: {exc.strerror or exc} (no route, or a firewall drops the packets)"
    if time.monotonic() >= deadline:
        print(problem)
        sys.exit(1)
    time.sleep(1)
EOF
    ); then
        die 1 "this worker ($NIC $NODE_IP) cannot reach the Ray head at $ADDRESS within ${WAIT} s: $problem" "check that the head is running (its logs say 'ray-node: head'), that RAY_HEAD_ADDRESS / ray start --address names the head's IP on the NIC both machines share and its port (RAY_PORT, default 6379), that both machines are on the same network through that NIC (NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME here; ping the head from this machine), and that no firewall blocks TCP between them"
    fi
    say "joining the Ray head at $ADDRESS"
    out=$(ray start --address "$ADDRESS" --node-ip-address "$NODE_IP" "${RAY_OPTS[@]}" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    ((rc == 0)) || explain_failure "$rc" "$out" "$ADDRESS"
    say "worker up: joined $ADDRESS as $NODE_IP"
    keep_up
fi

# head
PORT=${RAY_PORT:-6379}
if [[ -n ${RAY_HEAD_ADDRESS:-} ]]; then
    head_host=${RAY_HEAD_ADDRESS%:*}
    if [[ $head_host =~ ^[0-9.]+$ && $head_host != "$NODE_IP" ]]; then
        say "warning: RAY_HEAD_ADDRESS=$RAY_HEAD_ADDRESS, but this head's IP on $NIC is $NODE_IP: workers will look for the head at $head_host"
    fi
fi
out=$(ray start --head --port "$PORT" --node-ip-address "$NODE_IP" "${RAY_OPTS[@]}" 2>&1)
rc=$?
printf '%s\n' "$out"
((rc == 0)) || explain_failure "$rc" "$out"
say "head up: $NODE_IP:$PORT"
((${#COMMAND[@]})) || keep_up

WANT=${RAY_NODES:-2}
WAIT=${RAY_NODES_WAIT:-900}
trap 'say "stopping Ray"; ray stop >/dev/null 2>&1; exit 143' TERM INT
deadline=$((SECONDS + WAIT))
seen=-1
while :; do
    n=$(nodes_alive)
    if ((n != seen)); then
        say "$n of $WANT nodes joined"
        seen=$n
    fi
    ((n >= WANT)) && break
    if ((SECONDS >= deadline)); then
        ray stop >/dev/null 2>&1
        die 1 "only $n of $WANT nodes joined the head at $NODE_IP:$PORT within ${WAIT} s" "start the worker on every other machine (RAY_NODES=$WANT counts the head), and read its logs: it names the address it tried and why it failed"
    fi
    sleep 3 &
    wait $!
done
say "running: ${COMMAND[*]}"
"${COMMAND[@]}" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
done
ray stop >/dev/null 2>&1
exit "$rc"
