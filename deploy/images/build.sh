#!/usr/bin/env bash
# Builds the container images from binaries `cargo build` already made (no
# second build, no registry): for each image it stages a root filesystem
# under target/images/<image>/ (the binaries, stripped of debug info; the
# shared libraries `ldd` lists and the loader; /etc/passwd and /etc/group
# with the non-root user e2eb, uid 10001; data directories that user owns;
# the host's CA certificates where aws-sdk-s3 runs)
# and runs `docker build` on deploy/images/<image>.Dockerfile with that
# directory as the context.
#
#   deploy/images/build.sh [--profile debug|release] [--base IMAGE] [--tag TAG] [IMAGE...]
#
# Images: local-s3 key-vault blob-gateway device-sim etcd (default: all),
# tagged e2eb/<image>:<TAG> (default TAG: local). --base scratch (the
# default) ships the host's glibc with each binary; any other base (e.g.
# debian:bookworm-slim, for a user with a registry) brings its own libc, so
# only the binaries are staged. etcd is Debian's etcd-server binary
# (/usr/bin/etcd; `make deps` installs it).
set -euo pipefail

cd "$(dirname "$0")/../.."
PROFILE=${E2EB_PROFILE:-debug}
BASE=${E2EB_IMAGE_BASE:-scratch}
TAG=${E2EB_IMAGE_TAG:-local}
IMAGES=()
while (($#)); do
  case $1 in
    --profile) PROFILE=$2; shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    --tag) TAG=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) IMAGES+=("$1"); shift ;;
  esac
done
((${#IMAGES[@]})) || IMAGES=(local-s3 key-vault blob-gateway device-sim etcd)
BIN_DIR=${E2EB_TARGET_DIR:-target/$PROFILE}
STAGE_ROOT=target/images
APP_UID=10001

binaries_of() { # image -> the programs it carries
  case $1 in
    local-s3) echo "$BIN_DIR/local-s3" ;;
    key-vault) echo "$BIN_DIR/key-vault $BIN_DIR/health-probe" ;;
    blob-gateway) echo "$BIN_DIR/blob-gateway $BIN_DIR/health-probe" ;;
    device-sim) echo "$BIN_DIR/device-sim $BIN_DIR/mint-token $BIN_DIR/health-probe" ;;
    etcd) echo "/usr/bin/etcd $BIN_DIR/health-probe" ;;
    *) echo "no image named $1 (local-s3 key-vault blob-gateway device-sim etcd)" >&2; exit 2 ;;
  esac
}

data_dir_of() { # image -> the directory its user writes (a volume)
  case $1 in
    local-s3) echo /var/lib/local-s3 ;;
    key-vault) echo /var/lib/key-vault ;;
    blob-gateway) echo /var/lib/blob-gateway ;;
    device-sim) echo /var/lib/device-sim ;;
    etcd) echo /var/lib/etcd ;;
  esac
}

copy_lib() { # path on the host -> the same path in the rootfs, symlinks resolved
  local src=$1 rootfs=$2
  mkdir -p "$rootfs$(dirname "$src")"
  cp -L "$src" "$rootfs$src"
}

stage() { # image
  local image=$1 dir=$STAGE_ROOT/$1 rootfs bin lib
  rootfs=$dir/rootfs
  rm -rf "$dir"
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp" "$dir/data"
  chmod 1777 "$rootfs/tmp"
  for bin in $(binaries_of "$image"); do
    [[ -x $bin ]] || { echo "$bin is missing: run cargo build --workspace --bins${PROFILE/debug/} (or make deps for etcd)" >&2; exit 1; }
    if [[ $bin == /usr/bin/* ]]; then
      mkdir -p "$rootfs/usr/bin"
      cp "$bin" "$rootfs/usr/bin/"
    else
      # Debug info is most of a debug binary's size; the code is the same.
      objcopy --strip-debug "$bin" "$rootfs/usr/local/bin/$(basename "$bin")"
    fi
    if [[ $BASE == scratch ]]; then
      # `ldd` prints "name => /path (addr)" per library and "/path (addr)" for the loader.
      for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        copy_lib "$lib" "$rootfs"
      done
    fi
  done
  case $image in
    # aws-sdk-s3's HTTPS client refuses to start without root certificates
    # (debian:bookworm-slim has none either).
    blob-gateway|device-sim)
      mkdir -p "$rootfs/etc/ssl/certs"
      cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/" ;;
  esac
  printf 'root:x:0:0:root:/root:/sbin/nologin\ne2eb:x:%d:%d:e2e-backups:%s:/sbin/nologin\n' \
    "$APP_UID" "$APP_UID" "$(data_dir_of "$image")" >"$rootfs/etc/passwd"
  printf 'root:x:0:\ne2eb:x:%d:\n' "$APP_UID" >"$rootfs/etc/group"
  cp "deploy/images/$image.Dockerfile" "$dir/Dockerfile"
}

for image in "${IMAGES[@]}"; do
  stage "$image"
  # The legacy builder's deprecation notice is noise; its errors are not.
  log=$STAGE_ROOT/$image.build.log
  docker build -q --build-arg "BASE=$BASE" -t "e2eb/$image:$TAG" "$STAGE_ROOT/$image" >"$log" 2>&1 ||
    { cat "$log" >&2; echo "docker build of $image failed" >&2; exit 1; }
  echo "built e2eb/$image:$TAG ($(docker image inspect -f '{{.Size}}' "e2eb/$image:$TAG" | awk '{printf "%.1f MB", $1 / 1e6}'), base $BASE)"
done
