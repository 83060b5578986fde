#!/usr/bin/env bash
# The container stack of compose.local.yaml, as project `e2eb` (E2EB_COMPOSE_PROJECT):
#   deploy/compose/containers.sh up      secrets, compose up, wait until every
#                                        container is healthy, print endpoints
#   deploy/compose/containers.sh fleet [ARGS]  device-sim fleet in a container
#   deploy/compose/containers.sh down    remove containers, network and volumes,
#                                        and check that none is left
#   deploy/compose/containers.sh check   validate both compose files offline
# Works with the Compose plugin (`docker compose`) or the standalone
# `docker-compose` (1.29, what Debian ships; it has no `up --wait`, so the
# wait is done here from the containers' health checks).
set -euo pipefail
cd "$(dirname "$0")/../.."
PROJECT=${E2EB_COMPOSE_PROJECT:-e2eb}
STATE=${E2EB_CONTAINER_STATE:-${E2EB_STATE_DIR:-.state}/containers}
mkdir -p "$STATE"
export E2EB_CONTAINER_STATE
E2EB_CONTAINER_STATE=$(cd "$STATE" && pwd)
STARTUP_SECS=${E2EB_STARTUP_SECS:-120}
LOCAL=deploy/compose/compose.local.yaml
USER_FACING=deploy/compose/compose.yaml

if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$LOCAL" "$@"; }

project_ids() { # kind (container|volume|network) -> ids labelled with this project
  local all=()
  [[ $1 == container ]] && all=(--all)
  docker "$1" ls -q "${all[@]}" --filter "label=com.docker.compose.project=$PROJECT"
}

wait_healthy() {
  local deadline=$((SECONDS + STARTUP_SECS)) id state pending
  while :; do
    pending=()
    for id in $(project_ids container); do
      # Containers without a health check count once running.
      state=$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}' "$id")
      [[ $state == *" running healthy" ]] || pending+=("${state#/}")
    done
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      echo "not healthy after ${STARTUP_SECS}s: ${pending[*]}" >&2
      compose logs --tail 20 >&2
      exit 1
    fi
    sleep 1
  done
}

container_of() { compose ps -q "$1"; }

up() {
  deploy/compose/secrets.sh "$E2EB_CONTAINER_STATE"
  compose up -d --remove-orphans
  wait_healthy
  # The vault replicas share their secrets through etcd: one fingerprint.
  docker logs "$(container_of key-vault-1)" 2>/dev/null |
    sed -n 's/^key-vault public key fingerprint: //p' | tail -1 >"$E2EB_CONTAINER_STATE/vault/fingerprint"
  [[ -s $E2EB_CONTAINER_STATE/vault/fingerprint ]] || { echo "key-vault-1 printed no fingerprint" >&2; exit 1; }
  echo "container stack $PROJECT is up (secrets in $E2EB_CONTAINER_STATE):"
  echo "  local S3        http://127.0.0.1:29000  (bucket e2e-backups)"
  echo "  blob gateway 1  https://localhost:29061  (clients use this one until multi-replica commits land)"
  echo "  blob gateway 2  https://localhost:29161"
  echo "  key vault 1-3   https://localhost:29062 29162 29262  (etcd store, fingerprint $(<"$E2EB_CONTAINER_STATE/vault/fingerprint"))"
  echo "  etcd 1-3        inside the network only (etcd-N:2379)"
  echo "  TLS CA          $E2EB_CONTAINER_STATE/tls/ca.pem"
  echo "  a fleet         make fleet-containers  (device-sim fleet in a container)"
}

fleet() {
  local fingerprint
  fingerprint=$(<"$E2EB_CONTAINER_STATE/vault/fingerprint")
  compose run --rm device-sim fleet --no-progress --vault-fingerprint "$fingerprint" "$@"
}

down() {
  compose down -v --remove-orphans
  local kind left
  for kind in container network volume; do
    left=$(project_ids "$kind")
    [[ -z $left ]] || { echo "down left ${kind}s of $PROJECT behind: $left" >&2; exit 1; }
  done
  echo "container stack $PROJECT removed: no container, network or volume left"
}

check() {
  if ! "${COMPOSE[@]}" version >/dev/null 2>&1; then
    echo "no docker compose / docker-compose: compose files not validated"
    return
  fi
  # Validation needs no secrets and no images: the paths are only read.
  E2EB_CONTAINER_STATE=/nonexistent "${COMPOSE[@]}" -f "$LOCAL" --profile sim config -q
  E2EB_CONTAINER_STATE=/nonexistent MINIO_ROOT_PASSWORD=validate-only "${COMPOSE[@]}" -f "$USER_FACING" --profile sim config -q
  echo "compose files valid: $LOCAL $USER_FACING"
}

case ${1:-} in
  up) up ;;
  fleet) shift; fleet "$@" ;;
  down) down ;;
  check) check ;;
  *) echo "usage: $0 up|fleet [ARGS]|down|check" >&2; exit 2 ;;
esac
