#!/usr/bin/env bash
# Runs a fleet against the stack `make up` started and shows which process
# did the work: CPU seconds of local-s3, key-vault and blob-gateway (from
# /proc/<pid>/stat before and after) and of the simulator, with its peak
# resident memory (from /usr/bin/time -v).
#   deploy/fleet-bench.sh [device-sim fleet options...]
# Passwords are stretched with the fast test KSF here: on real phones each
# phone pays its own Argon2id; one simulator paying for thousands would hide
# the stack's costs.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE_DIR=${E2EB_STATE_DIR:-.state}
PROFILE_DIR=${E2EB_TARGET_DIR:-target/debug}
SERVICES=(local-s3 key-vault blob-gateway)
TICK=$(getconf CLK_TCK)

cpu_ticks() { # pid -> utime + stime in clock ticks
  local stat
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) } # fields after "(comm) "; utime and stime are 12th and 13th
  read -r -a fields <<<"$stat"
  echo $((fields[11] + fields[12]))
}

declare -A pid before
for name in "${SERVICES[@]}"; do
  [[ -f $STATE_DIR/pids/$name.pid ]] || { echo "$name is not running; run make up" >&2; exit 1; }
  pid[$name]=$(<"$STATE_DIR/pids/$name.pid")
  before[$name]=$(cpu_ticks "${pid[$name]}")
done

timing=$(mktemp)
trap 'rm -f "$timing"' EXIT
start=$(date +%s%N)
status=0
/usr/bin/time -v -o "$timing" "$PROFILE_DIR/device-sim" fleet --insecure-fast-ksf --no-progress "$@" || status=$?
wall=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')

echo
echo "CPU seconds over $wall s of wall time ($(nproc) cores):"
row() { # name cpu-seconds [note]
  awk -v n="$1" -v s="$2" -v w="$wall" -v note="${3:-}" \
    'BEGIN { printf "  %-14s %8.2f s  %6.1f %% of one core  %s\n", n, s, 100 * s / w, note }'
}
for name in "${SERVICES[@]}"; do
  after=$(cpu_ticks "${pid[$name]}")
  row "$name" "$(awk -v t="$((after - before[$name]))" -v k="$TICK" 'BEGIN { print t / k }')"
done
user=$(awk -F': ' '/User time/ {print $2}' "$timing")
sys=$(awk -F': ' '/System time/ {print $2}' "$timing")
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$timing")
row device-sim "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" "(user $user, sys $sys)"
echo "device-sim peak resident memory: $((rss / 1024)) MiB"
exit $status
