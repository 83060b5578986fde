# The two commands a newcomer runs: `make demo` and `make test`.
SHELL := /bin/bash
export E2EB_STATE_DIR ?= .state
# The simulator plays the account authority and trusts the stack's dev CA.
export E2EB_AUTHORITY_KEY_FILE ?= $(E2EB_STATE_DIR)/authority/token.key
export E2EB_TLS_CA_FILE ?= $(E2EB_STATE_DIR)/tls/ca.pem

.PHONY: demo up up-fleet fleet-demo down status test bench bench-vault fleet-bench report-screenshot build clean-state deps \
	bins images up-containers fleet-containers down-containers

## Debian packages the build and the tests need (etcd-client's build script
## runs protoc). Installs only what is missing.
DEB_PACKAGES := protobuf-compiler etcd-server softhsm2
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

## Build, start the stack, run simulated phones through the key and password
## flows, then a small fleet: 20 phones over 3 days, every lifecycle event.
demo: up
	@echo; echo "== one phone with a 64-digit key, then one with a password (logs: $(E2EB_STATE_DIR)/logs/demo.log)"
	@LOG_FILE=$(E2EB_STATE_DIR)/logs/demo.log \
	  target/debug/device-sim --s3-baseline --report-json $(E2EB_STATE_DIR)/demo-report.json
	@echo; echo "== a fleet: 20 phones living 3 days of backups, restores, password changes and lockouts"
	@LOG_FILE=$(E2EB_STATE_DIR)/logs/demo.log \
	  target/debug/device-sim fleet --devices 20 --days 3 --concurrency 8 --report-dir $(E2EB_STATE_DIR)/fleet

## Build and start local S3 and the blob gateway as processes on loopback.
up: deps
	deploy/stack.sh up

## The fleet as processes: local S3, a 3-member etcd cluster, 3 vault
## replicas on it (one identity), one gateway; endpoints printed and written
## to $(E2EB_STATE_DIR)/fleet.env for clients.
up-fleet: deps
	deploy/stack.sh up-fleet

## A small fleet of phones against every vault replica of `make up-fleet`.
fleet-demo: up-fleet
	source $(E2EB_STATE_DIR)/fleet.env && \
	  target/debug/device-sim fleet --devices 20 --days 3 --concurrency 8 --report-dir $(E2EB_STATE_DIR)/fleet

## Stop exactly the processes `make up` or `make up-fleet` started.
down:
	deploy/stack.sh down

status:
	deploy/stack.sh status

build:
	cargo build --workspace --all-targets

bins:
	cargo build --workspace --bins

## Container images from the binaries already built (no second cargo build;
## `deploy/images/build.sh --help` for release binaries or another base).
images:
	deploy/images/build.sh

## The stack in containers (deploy/compose/compose.local.yaml: local S3,
## etcd x3, vault x3, gateway x2): build, images, secrets, up, wait healthy.
up-containers: deps bins images
	deploy/compose/containers.sh up

## 20 simulated phones over 3 days in a container against the container stack.
FLEET_CONTAINER_ARGS ?= --devices 20 --days 3 --concurrency 8
fleet-containers:
	deploy/compose/containers.sh fleet $(FLEET_CONTAINER_ARGS)

## Remove the container stack's containers, network and volumes (and check).
down-containers:
	deploy/compose/containers.sh down

## Every test: unit, crate integration and end-to-end (the e2e tests start
## their own processes on free ports; no running stack needed). With Docker,
## the images are built and the container e2e tests run them.
test: deps
	cargo build --workspace --bins
	@if ! docker info >/dev/null 2>&1; then \
	  echo "no Docker Engine: images not built, compose files not validated, container tests will skip"; \
	else $(if $(E2EB_IMAGES_BUILT),true,deploy/images/build.sh) && deploy/compose/containers.sh check; fi
	cargo nextest run --workspace --no-fail-fast

## A ~100 MiB phone: full backup, three days of ~1 % new data with
## incremental backups, key rotation and restore, against raw aws-sdk-s3
## PUT/GET of the same bytes to the same server.
bench: up
	target/debug/device-sim key-flow --profile large --days 3 --s3-baseline --storage v2,v3

## Vault cost per registration and login through gRPC next to opaque-ke alone.
bench-vault:
	cargo bench -p key-vault --bench vault

## 1,000 tiny phones over 2 days; CPU seconds per process (simulator,
## gateway, vault, S3) and the simulator's peak memory. FLEET_ARGS overrides.
FLEET_ARGS ?= --devices 1000 --days 2 --concurrency 16 --profile-mix tiny --report-dir $(E2EB_STATE_DIR)/fleet-bench
fleet-bench: up
	deploy/fleet-bench.sh $(FLEET_ARGS)

## Render the last fleet report in headless Chromium (apt-get install -y
## chromium) and save a screenshot beside it. Not part of `make test`.
report-screenshot:
	deploy/render-report.sh $(E2EB_STATE_DIR)/fleet/report.html

## Forget all local state (stops the stack first).
clean-state: down
	rm -rf $(E2EB_STATE_DIR)
