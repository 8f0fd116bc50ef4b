#!/usr/bin/env bash
# Kamailio plus N `verbhost serve` nodes on loopback, in the foreground (verbhost issue 9).
#
#   host/deploy/kamailio/run.sh [--nodes N] [--proxy-port P] [--node-port B] [--run-dir DIR]
#                               [--verbhost BIN] [-- SERVE-ARGS...]
#
#   --nodes N        verbhost nodes to start (default 2)
#   --proxy-port P   Kamailio's UDP port on 127.0.0.1; callers call this (default 5060)
#   --node-port B    node i listens for SIP on B + 10*(i-1) and serves its admin API on the
#                    port after it (default 5070: node-1 5070/5071, node-2 5080/5081)
#   --run-dir DIR    where the generated dispatcher list, the pid files, the control socket
#                    and the logs go (default /tmp/verbhost-kamailio); made absolute
#   --verbhost BIN   the verbhost binary (default: target/release/verbhost of this
#                    repository, built with cargo if it is missing)
#   SERVE-ARGS       given to every node's `verbhost serve` (--app, --call-hook, --plugins,
#                    --config, ...). Without --app, --call-hook or --config, every node runs
#                    DIR/app.json, a sip:refer to sip:carol@127.0.0.1 (written if missing).
#
# Files in DIR: dispatcher.list, kamailio.pid, kamailio.ctl (for kamcmd), node-I.pid,
# node-I.log (each node's log; also printed here prefixed with [node-I]). Kamailio's own log
# lines go to stderr as they are (they start with its process number, ` 0(1234) INFO:`); its
# stderr is not piped, because Kamailio waits for every child process at exit, a pipe's
# reader included.
# Ctrl-C (or SIGTERM) stops every process this script started: the nodes get SIGTERM and
# drain (see `verbhost serve`), Kamailio stops. The script also ends when Kamailio exits.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
nodes=2
proxy_port=5060
node_port=5070
run_dir=/tmp/verbhost-kamailio
verbhost="$repo/target/release/verbhost"
serve_args=()

die() { echo "run.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes="${2:?--nodes needs a number}"; shift 2 ;;
    --proxy-port) proxy_port="${2:?--proxy-port needs a port}"; shift 2 ;;
    --node-port) node_port="${2:?--node-port needs a port}"; shift 2 ;;
    --run-dir) run_dir="${2:?--run-dir needs a directory}"; shift 2 ;;
    --verbhost) verbhost="${2:?--verbhost needs a path}"; shift 2 ;;
    --) shift; serve_args=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
case "$nodes" in ''|*[!0-9]*) die "--nodes must be a number, not $nodes" ;; esac
[ "$nodes" -ge 1 ] && [ "$nodes" -le 50 ] || die "--nodes must be 1 to 50, not $nodes"
for port in "$proxy_port" "$node_port"; do
  case "$port" in ''|*[!0-9]*) die "ports must be numbers, not $port" ;; esac
done
[ $((node_port + 10 * nodes)) -le 65535 ] || die "--node-port $node_port leaves no room for $nodes nodes"
command -v kamailio >/dev/null || die "kamailio is not installed (Debian: apt-get install kamailio)"

mkdir -p "$run_dir"
run_dir="$(cd "$run_dir" && pwd)"
if [ ! -x "$verbhost" ]; then
  [ "$verbhost" = "$repo/target/release/verbhost" ] || die "no verbhost binary at $verbhost"
  echo "run.sh: building verbhost (cargo build --release -p verbhost)" >&2
  (cd "$repo" && cargo build --release -p verbhost)
fi

has_app=no
for arg in "${serve_args[@]+"${serve_args[@]}"}"; do
  case "$arg" in --app|--app=*|--call-hook|--call-hook=*|--config|--config=*) has_app=yes ;; esac
done
if [ "$has_app" = no ]; then
  [ -f "$run_dir/app.json" ] ||
    echo '[{"verb": "sip:refer", "referTo": "sip:carol@127.0.0.1"}]' > "$run_dir/app.json"
  serve_args+=(--app "$run_dir/app.json")
fi

# The dispatcher list for the nodes started here.
{
  echo "# written by $0: SET URI FLAGS PRIORITY ATTRS"
  for i in $(seq 1 "$nodes"); do
    echo "1 sip:127.0.0.1:$((node_port + 10 * (i - 1))) 0 0 duid=node-$i"
  done
} > "$run_dir/dispatcher.list"

pids=()
stop() {
  trap - INT TERM EXIT
  echo "run.sh: stopping ${#pids[@]} processes" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # Draining nodes finish their calls (up to their --drain-timeout); wait for every one.
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -f "$run_dir"/node-*.pid "$run_dir/kamailio.pid"
}
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

for i in $(seq 1 "$nodes"); do
  sip=$((node_port + 10 * (i - 1)))
  "$verbhost" serve --sip "127.0.0.1:$sip" --admin "127.0.0.1:$((sip + 1))" \
    "${serve_args[@]}" \
    2> >(tee "$run_dir/node-$i.log" | sed -u "s/^/[node-$i] /" >&2) &
  pids+=($!)
  echo $! > "$run_dir/node-$i.pid"
done

kamailio -DD -E -m 64 -M 8 -f "$here/kamailio.cfg" -P "$run_dir/kamailio.pid" \
  -A "LISTEN=udp:127.0.0.1:$proxy_port" \
  -A "DISPATCHER_LIST=\"$run_dir/dispatcher.list\"" \
  -A "CTL_SOCKET=\"unix:$run_dir/kamailio.ctl\"" &
kamailio_pid=$!
pids+=("$kamailio_pid")

# Ready when every node answers /health and Kamailio answers kamcmd (at most 30 s).
for _ in $(seq 1 300); do
  ready=yes
  for i in $(seq 1 "$nodes"); do
    curl -sf -o /dev/null "http://127.0.0.1:$((node_port + 10 * (i - 1) + 1))/health" || ready=no
  done
  kamcmd -s "unix:$run_dir/kamailio.ctl" core.version >/dev/null 2>&1 || ready=no
  kill -0 "$kamailio_pid" 2>/dev/null || die "kamailio exited; see its lines above"
  [ "$ready" = yes ] && break
  sleep 0.1
done
[ "$ready" = yes ] || die "the pool did not come up within 30 s"
echo "run.sh: ready: Kamailio on udp:127.0.0.1:$proxy_port, $nodes nodes (dispatcher list $run_dir/dispatcher.list)"
echo "run.sh: call it: sipp -sf $repo/tests/sipp/uac-transferee-accept.xml -i 127.0.0.1 -p 5090 -m 1 127.0.0.1:$proxy_port"
echo "run.sh: node states: kamcmd -s unix:$run_dir/kamailio.ctl dispatcher.list; Ctrl-C stops everything"
wait "$kamailio_pid" || true
