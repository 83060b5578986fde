# The two commands a newcomer runs: `make demo` and `make test`.
SHELL := /bin/bash
export E2EB_STATE_DIR ?= .state

.PHONY: demo up down status test bench bench-vault build clean-state

## Build, start the stack, run simulated phones through the key and password flows.
demo: up
	target/debug/device-sim --s3-baseline --report-json $(E2EB_STATE_DIR)/demo-report.json

## Build and start local S3 and the blob gateway as processes on loopback.
up:
	deploy/stack.sh up

## Stop exactly the processes `make up` started.
down:
	deploy/stack.sh down

status:
	deploy/stack.sh status

build:
	cargo build --workspace --all-targets

## Every test: unit, crate integration and end-to-end (the e2e tests start
## their own processes on free ports; no running stack needed).
test:
	cargo build --workspace --bins
	cargo nextest run --workspace --no-fail-fast

## A ~100 MiB phone: full backup, three days of ~1 % new data with
## incremental backups, key rotation and restore, against raw aws-sdk-s3
## PUT/GET of the same bytes to the same server.
bench: up
	target/debug/device-sim key-flow --profile large --days 3 --s3-baseline

## Vault cost per registration and login through gRPC next to opaque-ke alone.
bench-vault:
	cargo bench -p key-vault --bench vault

## Forget all local state (stops the stack first).
clean-state: down
	rm -rf $(E2EB_STATE_DIR)
