#!/usr/bin/env bash
# Makes what the container stack mounts read-only, once, under one state
# directory (default .state/containers):
#   authority/token.key, token.pub  the account authority (mint-token --init);
#                                   only the simulator gets the secret key
#   tls/ca.pem, tls/<host>.pem|key  a dev CA and one certificate per
#                                   container host name (dev-certs; each names
#                                   the host, localhost and 127.0.0.1)
#   vault/sealing.key               the key sealing the vault secrets, shared
#                                   by every vault replica (64 hex digits)
# The containers run as uid 10001: run as root, the files are given to that
# uid (keys stay mode 0600); run as another user, they are made readable by
# all (development material only).
#   deploy/compose/secrets.sh [STATE_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE=${1:-${E2EB_CONTAINER_STATE:-.state/containers}}
BIN_DIR=${E2EB_TARGET_DIR:-target/debug}
HOSTS=(key-vault-1 key-vault-2 key-vault-3 blob-gateway-1 blob-gateway-2)
APP_UID=10001

mkdir -p "$STATE/vault"
"$BIN_DIR/mint-token" --init --authority-key-file "$STATE/authority/token.key" >/dev/null
services=()
for host in "${HOSTS[@]}"; do services+=(--service "$host"); done
"$BIN_DIR/dev-certs" --dir "$STATE/tls" "${services[@]}"
if [[ ! -s $STATE/vault/sealing.key ]]; then
  (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/vault/sealing.key")
fi
if [[ $(id -u) == 0 ]]; then
  chown -R "$APP_UID:$APP_UID" "$STATE/authority" "$STATE/tls" "$STATE/vault"
else
  chmod -R a+rX "$STATE/authority" "$STATE/tls" "$STATE/vault"
fi
echo "container secrets in $STATE (CA $STATE/tls/ca.pem)"
