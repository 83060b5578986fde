#!/usr/bin/env bash
# Starts and stops the local stack as plain processes on loopback:
#   deploy/stack.sh up       build, start local-s3, key-vault, blob-gateway; wait until ready
#   deploy/stack.sh up-fleet the fleet instead: local-s3, a 3-member etcd cluster, 3 key-vault
#                            replicas on the etcd store (one fleet identity), blob-gateway
#   deploy/stack.sh down     stop exactly the processes `up` or `up-fleet` started
#   deploy/stack.sh status   show what runs
# State (S3 data, the account authority's key, dev TLS certificates, pid
# files, logs) lives under $E2EB_STATE_DIR. Every gRPC hop is TLS with the dev
# CA in $E2EB_STATE_DIR/tls; the services get only the authority's public key.
# E2EB_VAULT_SEALING=pkcs11 seals the vault secrets with a key inside a
# SoftHSM2 token under $E2EB_STATE_DIR/softhsm instead of a key file.
set -euo pipefail

cd "$(dirname "$0")/.."
STATE_DIR=${E2EB_STATE_DIR:-.state}
PROFILE_DIR=${E2EB_TARGET_DIR:-target/debug}
LOCAL_S3_PORT=${LOCAL_S3_PORT:-9000}
BLOB_GATEWAY_PORT=${BLOB_GATEWAY_PORT:-50061}
KEY_VAULT_PORT=${KEY_VAULT_PORT:-50062}
# Prometheus metrics (plain HTTP on loopback): gateway, vault (the fleet's
# replicas take this port and the next two).
BLOB_GATEWAY_METRICS_PORT=${BLOB_GATEWAY_METRICS_PORT:-9161}
KEY_VAULT_METRICS_PORT=${KEY_VAULT_METRICS_PORT:-9162}
STARTUP_SECS=${E2EB_STARTUP_SECS:-60}

export LOCAL_S3_LISTEN=127.0.0.1:$LOCAL_S3_PORT
export LOCAL_S3_DATA_DIR=$STATE_DIR/s3
export S3_ENDPOINT=${S3_ENDPOINT:-http://127.0.0.1:$LOCAL_S3_PORT}
export BLOB_GATEWAY_LISTEN=127.0.0.1:$BLOB_GATEWAY_PORT
# The account authority's key (only mint-token and the simulator read it)
# and its public half (all the services get).
export E2EB_AUTHORITY_KEY_FILE=${E2EB_AUTHORITY_KEY_FILE:-$STATE_DIR/authority/token.key}
export E2EB_TOKEN_PUBLIC_KEY_FILE=${E2EB_TOKEN_PUBLIC_KEY_FILE:-${E2EB_AUTHORITY_KEY_FILE%.*}.pub}
# Dev certificates: a CA and one certificate per service. Point the services'
# --tls-cert/--tls-key and clients' E2EB_TLS_CA_FILE elsewhere for real ones.
TLS_DIR=${E2EB_TLS_DIR:-$STATE_DIR/tls}
export E2EB_TLS_CA_FILE=${E2EB_TLS_CA_FILE:-$TLS_DIR/ca.pem}
export KEY_VAULT_LISTEN=127.0.0.1:$KEY_VAULT_PORT
export KEY_VAULT_DB=${KEY_VAULT_DB:-$STATE_DIR/vault/vault.db}
export KEY_VAULT_SEALING_KEY_FILE=${KEY_VAULT_SEALING_KEY_FILE:-$STATE_DIR/vault/sealing.key}
export KEY_VAULT_FINGERPRINT_FILE=${KEY_VAULT_FINGERPRINT_FILE:-$STATE_DIR/vault/fingerprint}

VAULT_SEALING=${E2EB_VAULT_SEALING:-file}

# The fleet (`up-fleet`): etcd members' client ports (each peer port is one
# more), and the vault replicas' ports.
ETCD_PORTS=(${E2EB_ETCD_PORTS:-2379 2479 2579})
KEY_VAULT_FLEET_PORTS=(${E2EB_KEY_VAULT_FLEET_PORTS:-50062 50063 50064})

PIDS=$STATE_DIR/pids
LOGS=$STATE_DIR/logs
# Start order of both layouts; `down` stops in reverse whatever runs.
SERVICES=(local-s3 etcd-1 etcd-2 etcd-3 key-vault key-vault-1 key-vault-2 key-vault-3 blob-gateway)

alive() { # name -> 0 if the recorded pid is alive (right after start it may
  # still be the forked shell, before exec)
  [[ -f $PIDS/$1.pid ]] && kill -0 "$(<"$PIDS/$1.pid")" 2>/dev/null
}

program() { # name -> the program it runs: replicas are NAME-N
  echo "${1%-[0-9]}"
}

running() { # name -> 0 if the recorded pid is alive and is that program
  local pidfile=$PIDS/$1.pid pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' </proc/"$pid"/cmdline | grep -q "$(program "$1")"
}

start() { # name args...
  local name=$1; shift
  if running "$name"; then
    echo "  $name already running (pid $(<"$PIDS/$name.pid"))"
    return
  fi
  local binary=$PROFILE_DIR/$(program "$name")
  [[ $name == etcd-* ]] && binary=$(command -v etcd)
  nohup "$binary" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

wait_tcp() { # name port
  local deadline=$((SECONDS + STARTUP_SECS))
  until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do
    alive "$1" || { echo "$1 exited; see $LOGS/$1.log" >&2; tail -5 "$LOGS/$1.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "$1 not answering on port $2 after ${STARTUP_SECS}s" >&2; exit 1; }
    sleep 0.1
  done
}

wait_grpc() { # name port service (over TLS, trusting $E2EB_TLS_CA_FILE)
  "$PROFILE_DIR/health-probe" --endpoint "https://127.0.0.1:$2" --service "$3" --wait-secs "$STARTUP_SECS" \
    || { echo "$1 not healthy; see $LOGS/$1.log" >&2; tail -5 "$LOGS/$1.log" >&2; exit 1; }
}

wait_etcd() { # name port: its /health says true (needs a majority)
  local deadline=$((SECONDS + STARTUP_SECS)) answer
  while :; do
    answer=$( (exec 3<>"/dev/tcp/127.0.0.1/$2" &&
      printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3 && timeout 2 cat <&3) 2>/dev/null || true)
    [[ $answer == *'"health":"true"'* ]] && return
    alive "$1" || { echo "$1 exited; see $LOGS/$1.log" >&2; tail -5 "$LOGS/$1.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "$1 not healthy on port $2 after ${STARTUP_SECS}s" >&2; exit 1; }
    sleep 0.2
  done
}

random_pin() { # 32 hex digits
  od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

# A SoftHSM2 token for the vault's sealing key, made once: its own
# configuration and token directory, random user and SO PINs in files
# (mode 0600), and the key generated inside the token by
# `key-vault pkcs11-init` (which leaves an existing key alone).
setup_softhsm() {
  command -v softhsm2-util >/dev/null || { echo "softhsm2-util is missing: run make deps" >&2; exit 1; }
  local dir=$STATE_DIR/softhsm
  (umask 077 && mkdir -p "$dir/tokens")
  dir=$(cd "$dir" && pwd)
  export SOFTHSM2_CONF=$dir/softhsm2.conf
  export KEY_VAULT_SEALING=pkcs11
  export KEY_VAULT_PKCS11_TOKEN_LABEL=${KEY_VAULT_PKCS11_TOKEN_LABEL:-e2eb-vault}
  export KEY_VAULT_PKCS11_PIN_FILE=$dir/user.pin
  if [[ ! -f $SOFTHSM2_CONF ]]; then
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
      "$dir/tokens" >"$SOFTHSM2_CONF"
  fi
  local slots
  slots=$(softhsm2-util --show-slots)
  if ! grep -Eq "^ *Label: +$KEY_VAULT_PKCS11_TOKEN_LABEL *\$" <<<"$slots"; then
    (umask 077 && random_pin >"$dir/so.pin" && random_pin >"$KEY_VAULT_PKCS11_PIN_FILE")
    # softhsm2-util reads PINs only from a terminal; `script` gives it one,
    # so the PINs go through a pipe, never argv, and its echo is dropped.
    printf '%s\n' "$(<"$dir/so.pin")" "$(<"$dir/so.pin")" \
      "$(<"$KEY_VAULT_PKCS11_PIN_FILE")" "$(<"$KEY_VAULT_PKCS11_PIN_FILE")" |
      script -qec "softhsm2-util --init-token --free --label $KEY_VAULT_PKCS11_TOKEN_LABEL" /dev/null >/dev/null ||
      { echo "softhsm2-util could not initialise the token in $dir/tokens" >&2; exit 1; }
  fi
  "$PROFILE_DIR/key-vault" pkcs11-init
}

prepare() { # what both layouts need before any service starts
  if [[ -z ${E2EB_SKIP_BUILD:-} ]]; then
    cargo build --workspace --bins
  fi
  mkdir -p "$PIDS" "$LOGS" "$LOCAL_S3_DATA_DIR" "$(dirname "$KEY_VAULT_DB")"
  case $VAULT_SEALING in
    file) ;;
    pkcs11) setup_softhsm ;;
    *) echo "E2EB_VAULT_SEALING must be file or pkcs11, not $VAULT_SEALING" >&2; exit 2 ;;
  esac
  "$PROFILE_DIR/mint-token" --init >/dev/null
  "$PROFILE_DIR/dev-certs" --dir "$TLS_DIR" --service key-vault --service blob-gateway
}

single_vault_guard() { # the two layouts share ports: one at a time
  local name
  for name in "$@"; do
    if running "$name"; then
      echo "$name runs: this is the other layout; run \`make down\` first" >&2
      exit 1
    fi
  done
}

up() {
  single_vault_guard etcd-1 key-vault-1
  prepare
  start local-s3
  wait_tcp local-s3 "$LOCAL_S3_PORT"
  start key-vault --tls-cert "$TLS_DIR/key-vault.pem" --tls-key "$TLS_DIR/key-vault.key" \
    --metrics-listen "127.0.0.1:$KEY_VAULT_METRICS_PORT"
  wait_grpc key-vault "$KEY_VAULT_PORT" e2ebackup.vault.v2.KeyVault
  start_gateway
  echo "stack is up (state and logs in $STATE_DIR):"
  print_common
  echo "  key vault     https://127.0.0.1:$KEY_VAULT_PORT  (gRPC over TLS; pinned fingerprint $(cat "$KEY_VAULT_FINGERPRINT_FILE" 2>/dev/null))"
  echo "  metrics       http://127.0.0.1:$BLOB_GATEWAY_METRICS_PORT/metrics (gateway)  http://127.0.0.1:$KEY_VAULT_METRICS_PORT/metrics (vault)"
  print_sealing
}

# The fleet: 3 etcd members (Raft majority), 3 vault replicas on them that
# share one identity (the first creates and seals the vault secrets in etcd
# with the one sealing key; the others unseal them), one gateway (several
# gateways need the conditional-write commit path, built separately).
up_fleet() {
  single_vault_guard key-vault
  prepare
  start local-s3
  wait_tcp local-s3 "$LOCAL_S3_PORT"
  local i cluster="" clients=() port
  for i in 0 1 2; do
    cluster+="${cluster:+,}etcd-$((i + 1))=http://127.0.0.1:$((ETCD_PORTS[i] + 1))"
    clients+=("http://127.0.0.1:${ETCD_PORTS[i]}")
  done
  for i in 0 1 2; do
    port=${ETCD_PORTS[i]}
    mkdir -p "$STATE_DIR/etcd"
    start "etcd-$((i + 1))" --name "etcd-$((i + 1))" --data-dir "$STATE_DIR/etcd/etcd-$((i + 1))" \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token e2eb-fleet
  done
  for i in 0 1 2; do wait_etcd "etcd-$((i + 1))" "${ETCD_PORTS[i]}"; done
  export KEY_VAULT_STORE=etcd
  KEY_VAULT_ETCD_ENDPOINTS=$(IFS=,; echo "${clients[*]}")
  export KEY_VAULT_ETCD_ENDPOINTS
  local vaults=()
  for i in 0 1 2; do
    port=${KEY_VAULT_FLEET_PORTS[i]}
    KEY_VAULT_LISTEN=127.0.0.1:$port start "key-vault-$((i + 1))" \
      --tls-cert "$TLS_DIR/key-vault.pem" --tls-key "$TLS_DIR/key-vault.key" \
      --metrics-listen "127.0.0.1:$((KEY_VAULT_METRICS_PORT + i))"
    # One at a time: the first creates the fleet's secrets.
    wait_grpc "key-vault-$((i + 1))" "$port" e2ebackup.vault.v2.KeyVault
    vaults+=("https://127.0.0.1:$port")
  done
  start_gateway
  local vault_endpoints
  vault_endpoints=$(IFS=,; echo "${vaults[*]}")
  printf 'export KEY_VAULT_ENDPOINT=%s\nexport BLOB_GATEWAY_ENDPOINT=%s\n' \
    "$vault_endpoints" "https://127.0.0.1:$BLOB_GATEWAY_PORT" >"$STATE_DIR/fleet.env"
  echo "fleet is up (state and logs in $STATE_DIR):"
  print_common
  echo "  etcd          $KEY_VAULT_ETCD_ENDPOINTS  (3 members, data $STATE_DIR/etcd)"
  echo "  key vault     $vault_endpoints"
  echo "                (3 replicas on etcd, one identity; pinned fingerprint $(cat "$KEY_VAULT_FINGERPRINT_FILE" 2>/dev/null))"
  echo "  metrics       http://127.0.0.1:$BLOB_GATEWAY_METRICS_PORT/metrics (gateway)  http://127.0.0.1:$KEY_VAULT_METRICS_PORT-$((KEY_VAULT_METRICS_PORT + 2))/metrics (vaults)"
  echo "  clients       source $STATE_DIR/fleet.env  (device-sim then fails over between the replicas)"
  echo "  note          one blob gateway: several need the multi-gateway commit path (in progress)"
  print_sealing
}

start_gateway() {
  start blob-gateway --tls-cert "$TLS_DIR/blob-gateway.pem" --tls-key "$TLS_DIR/blob-gateway.key" \
    --metrics-listen "127.0.0.1:$BLOB_GATEWAY_METRICS_PORT"
  wait_grpc blob-gateway "$BLOB_GATEWAY_PORT" e2ebackup.storage.v2.BlobGateway
}

print_common() {
  echo "  local S3      http://127.0.0.1:$LOCAL_S3_PORT  (bucket e2e-backups, data $LOCAL_S3_DATA_DIR)"
  echo "  blob gateway  https://127.0.0.1:$BLOB_GATEWAY_PORT  (gRPC over TLS, health + reflection)"
  echo "  TLS CA        $E2EB_TLS_CA_FILE  (clients trust it)"
  echo "  authority     $E2EB_AUTHORITY_KEY_FILE  (mint: $PROFILE_DIR/mint-token --account NAME --audience blob-gateway|key-vault)"
}

print_sealing() {
  if [[ $VAULT_SEALING == pkcs11 ]]; then
    echo "  vault sealing PKCS#11 key in SoftHSM2 token $KEY_VAULT_PKCS11_TOKEN_LABEL ($SOFTHSM2_CONF)"
  else
    echo "  vault sealing key file $KEY_VAULT_SEALING_KEY_FILE"
  fi
}

down() {
  local i name pid
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    name=${SERVICES[i]}
    if running "$name"; then
      pid=$(<"$PIDS/$name.pid")
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
      echo "  stopped $name (pid $pid)"
    fi
    rm -f "$PIDS/$name.pid"
  done
}

status() {
  local name
  for name in "${SERVICES[@]}"; do
    if running "$name"; then echo "  $name running (pid $(<"$PIDS/$name.pid"))"
    elif [[ $name != *-[0-9] ]]; then echo "  $name stopped"; fi
  done
}

case ${1:-} in
  up) up ;;
  up-fleet) up_fleet ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|up-fleet|down|status" >&2; exit 2 ;;
esac
