#!/usr/bin/env bash
# scripts/container.sh - build and check lockstep's container image without a registry.
#
# Installs what the container tests need and makes a local Debian base to build the image
# FROM, since no image registry is reachable from CI (only the package registries are):
#   - podman with runc (Debian's default runtime, crun, refuses hybrid cgroups) and a private
#     containers.conf (podman's default ulimits are above what root may set on such hosts);
#   - a Debian bookworm base image made with debootstrap and `podman import`, holding what the
#     runtime stage needs (git, ssh, CA certificates, tini), tagged $BASE_IMAGE;
#   - a Python venv with the offline manifest checkers (kubernetes-validate, yamllint) and
#     podman-compose, pinned.
# Idempotent: re-running it skips the work already done (under a second once installed).
#
# Usage:  scripts/container.sh [install|base|image|env]   (default: base; needs root)
#   install  podman, runc, debootstrap, the containers.conf, the venv; write the env file
#   base     install, then make the base image unless it exists
#   image    base, then build the runtime image around a binary built on the host:
#              scripts/container.sh image [BINARY [TAG]]
#            BINARY defaults to target/release/lockstep (built with `cargo build --release`
#            when missing), TAG to localhost/lockstep:latest. Prints TAG.
#   env      print the path of the env file
#
# Environment (all optional):
#   LOCKSTEP_CONTAINER_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/lockstep-container
#       (containers.conf, venv, env file)
#
# The env file holds KEY=value lines: CONTAINERS_CONF (podman reads it), LOCKSTEP_BASE_IMAGE
# (the local base, once `base` made it) and LOCKSTEP_CONTAINER_TOOLS (the venv's bin folder).
# Load it with
#   set -a; . "$(scripts/container.sh env)"; set +a
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${LOCKSTEP_CONTAINER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lockstep-container}"
ENVFILE="$STATE/env"
CONF="$STATE/containers.conf"
VENV="$STATE/venv"
SUITE=bookworm
# The base's packages; with the trimming below, its label: a base made otherwise is remade.
BASE_PACKAGES=git,openssh-client,ca-certificates,tini
BASE_LABEL="$BASE_PACKAGES;slim"
BASE_IMAGE=localhost/lockstep-base:$SUITE
TOOLS=(kubernetes-validate==1.37.0 yamllint==1.38.0 podman-compose==1.6.0)

log() { printf '[container %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# No argument means `base`, as the usage says; every `$1` below reads it.
[ $# -gt 0 ] || set -- base
case "$1" in
  env) echo "$ENVFILE"; exit 0 ;;
  install|base|image) ;;
  *) echo "usage: $0 [install|base|image|env]" >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "scripts/container.sh: run it as root (it installs packages and runs podman)" >&2; exit 1; }
mkdir -p "$STATE"
T0=$(date +%s%N)

# 1. Packages. Another apt user may hold the lock: wait for it rather than fail.
installed() { [ "$(dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null | grep -c 'install ok installed')" = $# ]; }
if installed podman runc debootstrap; then
  log "podman, runc, debootstrap already installed"
else
  log "installing podman, runc, debootstrap (log: $STATE/apt.log)"
  apt=(apt-get -o DPkg::Lock::Timeout=600 -q)
  {
    if ! apt-cache policy podman 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      "${apt[@]}" update
    fi
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y podman runc debootstrap
  } >"$STATE/apt.log" 2>&1 || { tail -20 "$STATE/apt.log" >&2; exit 1; }
fi

# 2. containers.conf: limits at or below the hard ones (root cannot raise them here), runc.
want_conf=$(cat <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]

[engine]
runtime = "runc"
CONF
)
if [ "$(cat "$CONF" 2>/dev/null)" != "$want_conf" ]; then
  log "writing $CONF"
  printf '%s\n' "$want_conf" > "$CONF"
fi
export CONTAINERS_CONF="$CONF"

# 3. The checkers, pinned, in a venv (PyPI's kubernetes-validate bundles the schemas).
if [ "$(cat "$VENV/pinned" 2>/dev/null)" = "${TOOLS[*]}" ] && [ -x "$VENV/bin/kubernetes-validate" ]; then
  log "checkers already installed in $VENV"
else
  log "installing ${TOOLS[*]} in $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${TOOLS[@]}" >&2
  echo "${TOOLS[*]}" > "$VENV/pinned"
fi

write_env() {
  {
    echo "CONTAINERS_CONF=$CONF"
    echo "LOCKSTEP_CONTAINER_TOOLS=$VENV/bin"
    if podman image exists "$BASE_IMAGE"; then echo "LOCKSTEP_BASE_IMAGE=$BASE_IMAGE"; fi
  } > "$ENVFILE.tmp"
  mv "$ENVFILE.tmp" "$ENVFILE"
}
write_env
if [ "$1" = install ]; then
  log "ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms; env file $ENVFILE"
  cat "$ENVFILE"
  exit 0
fi

# 4. The base image: debootstrap from the host's own Debian mirror, then `podman import`.
base_label() { podman image inspect --format '{{index .Labels "lockstep.base.packages"}}' "$BASE_IMAGE" 2>/dev/null; }
if [ "$(base_label)" = "$BASE_LABEL" ]; then
  log "base image $BASE_IMAGE already made"
else
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs=$(mktemp -d "$STATE/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $SUITE ($BASE_PACKAGES) from $mirror"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 \
    || { tail -20 "$STATE/debootstrap.log" >&2; exit 1; }
  # What Debian's slim images leave out: package lists and caches, documentation, manuals
  # and translations. The image then weighs about what users' images FROM them weigh.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* \
    "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  log "importing it as $BASE_IMAGE"
  tar -C "$rootfs" -c . | podman import \
    --change 'CMD ["/bin/bash"]' --change "LABEL lockstep.base.packages=$BASE_LABEL" \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi
write_env
if [ "$1" = base ]; then
  log "ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms; env file $ENVFILE"
  cat "$ENVFILE"
  exit 0
fi

# 5. The image: the Containerfile's `prebuilt` target, FROM the local base, around a binary
#    built on the host. The context holds only what that target copies.
binary="${2:-$ROOT/target/release/lockstep}"
tag="${3:-localhost/lockstep:latest}"
if [ ! -x "$binary" ] && [ -z "${2:-}" ]; then
  log "building $binary"
  (cd "$ROOT" && cargo build --release --locked >&2)
fi
[ -x "$binary" ] || { echo "scripts/container.sh image: no executable at \`$binary\`; build it with \`cargo build --release\`" >&2; exit 1; }
context=$(mktemp -d "$STATE/context.XXXXXX")
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/deploy"
cp "$ROOT/deploy/lockstep.toml" "$context/deploy/"
cp -r "$ROOT/policies" "$context/policies"
# Symbols and debug info are for debugging on the host, not for the image.
strip -o "$context/lockstep" "$binary" 2>/dev/null || cp "$binary" "$context/lockstep"
log "building $tag from $BASE_IMAGE"
previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
# --format docker keeps HEALTHCHECK, which the OCI image format has no field for.
podman build --pull=never --format docker --target prebuilt \
  --build-arg "BASE=$BASE_IMAGE" -f "$ROOT/Containerfile" -t "$tag" "$context" >&2
# The image this tag named before would stay behind, nameless, at every test run (unless
# another tag still names it).
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$tag")" ] \
   && [ "$(podman image inspect --format '{{len .RepoTags}}' "$previous")" = 0 ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
log "ready in $(( ($(date +%s%N) - T0) / 1000000 )) ms"
echo "$tag"
