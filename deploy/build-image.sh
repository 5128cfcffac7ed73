#!/usr/bin/env bash
# Build deploy/Dockerfile, unchanged, without a Docker engine or a registry.
#
# The Dockerfile's two bases, debian:trixie and debian:trixie-slim, are made
# here from Debian's own archive with mmdebstrap (minbase, as the official
# images are; -slim also leaves out docs, man pages and locales as the
# official -slim does) and imported into buildah's store under the names the
# Dockerfile asks for. buildah then builds the Dockerfile with chroot
# isolation and --pull=never, so no registry is ever asked.
#
# Usage (as root, from anywhere):
#   deploy/build-image.sh [TAG]          # default TAG: localhost/kpr:dev
# Environment:
#   KPR_IMAGE_CACHE    where the base tarballs are kept between runs
#                      (default /var/cache/kpr-image); a tarball older than
#                      KPR_BASE_MAX_AGE_DAYS (default 7) is made again.
#   KPR_BUILDAH_ROOT   buildah's storage root (default: buildah's own,
#   KPR_BUILDAH_RUNROOT  /var/lib/containers/storage and /run/containers/storage).
#   KPR_DEBIAN_MIRROR  default http://deb.debian.org/debian
#   KPR_BUILD_CA_FILE  a CA bundle the build's npm must trust, for a network
#                      behind a TLS-intercepting proxy (default: the host's
#                      NODE_EXTRA_CA_CERTS, if set). It is bound into the
#                      build stage's RUNs only, never into the image.
# Needs: mmdebstrap, buildah (Debian 12: apt-get install mmdebstrap buildah).
# Prints the image id on the last line of stdout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-localhost/kpr:dev}
cache=${KPR_IMAGE_CACHE:-/var/cache/kpr-image}
max_age_days=${KPR_BASE_MAX_AGE_DAYS:-7}
mirror=${KPR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${mirror%/debian}/debian-security
suite=trixie

log() { printf '[build-image] %s\n' "$*" >&2; }

buildah_cmd=(buildah)
[ -n "${KPR_BUILDAH_ROOT:-}" ] && buildah_cmd+=(--root "$KPR_BUILDAH_ROOT")
[ -n "${KPR_BUILDAH_RUNROOT:-}" ] && buildah_cmd+=(--runroot "$KPR_BUILDAH_RUNROOT")

for tool in mmdebstrap buildah; do
  command -v "$tool" >/dev/null || { log "$tool is missing (apt-get install mmdebstrap buildah)"; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { log "run as root (mmdebstrap and buildah's chroot isolation need it)"; exit 1; }

# Run a network step up to 3 times: the archive and the npm registry are
# reached over the network, and one dropped connection must not fail a build.
retry() {
  local n
  for n in 1 2 3; do
    "$@" && return 0
    log "attempt $n of 3 failed: $*"
    [ "$n" -lt 3 ] && sleep $((n * 10))
  done
  return 1
}

# mmdebstrap --variant=minbase into $out, with the official images' sources.
make_base() {
  local name=$1 out=$2
  local opts=(--variant=minbase --mode=root --format=tar
              --aptopt='Acquire::Retries "5"'
              --components=main)
  if [ "$name" = "$suite-slim" ]; then
    # The official -slim images' dpkg filter: no docs, man pages or locales.
    local p
    for p in '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' \
             '/usr/share/groff/*' '/usr/share/lintian/*' '/usr/share/linda/*'; do
      opts+=(--dpkgopt="path-exclude=$p")
    done
    opts+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
  fi
  rm -f "$out.part"
  mmdebstrap "${opts[@]}" "$suite" "$out.part" \
    "deb $mirror $suite main" \
    "deb $mirror $suite-updates main" \
    "deb $security_mirror $suite-security main"
  mv "$out.part" "$out"
}

# docker.io/library/debian:NAME in buildah's store, from a cached tarball.
import_base() {
  local name=$1
  local tarball=$cache/debian-$name.tar
  local ref=docker.io/library/debian:$name
  mkdir -p "$cache"
  if [ -f "$tarball" ] && [ -n "$(find "$tarball" -mtime +"$max_age_days" -print)" ]; then
    log "$tarball is older than $max_age_days days: making it again"
    rm -f "$tarball"
  fi
  if [ ! -f "$tarball" ]; then
    log "making the $name base with mmdebstrap"
    retry make_base "$name" "$tarball"
  fi
  local sum
  sum=$(sha256sum "$tarball" | cut -c1-16)
  # The image carries the tarball's digest: a new tarball is imported again,
  # the same one is not.
  if [ "$("${buildah_cmd[@]}" inspect --type image --format '{{index .ImageAnnotations "org.kpr.base-tar"}}' "$ref" 2>/dev/null || true)" = "$sum" ]; then
    log "$ref is up to date"
    return
  fi
  log "importing $tarball as $ref"
  local ctr
  ctr=$("${buildah_cmd[@]}" from --pull=never scratch)
  "${buildah_cmd[@]}" add "$ctr" "$tarball" / >/dev/null
  "${buildah_cmd[@]}" config --cmd '["bash"]' --annotation "org.kpr.base-tar=$sum" "$ctr"
  "${buildah_cmd[@]}" commit --quiet --rm "$ctr" "$ref" >/dev/null
}

import_base "$suite"
import_base "$suite-slim"

# The host's trust for npm inside the build: a file bound in, not a layer.
build_opts=()
ca=${KPR_BUILD_CA_FILE:-${NODE_EXTRA_CA_CERTS:-}}
if [ -n "$ca" ]; then
  [ -f "$ca" ] || { log "CA bundle $ca: no such file"; exit 1; }
  npmrc=$(mktemp)
  trap 'rm -f "$npmrc"' EXIT
  printf 'cafile=/run/kpr-build-ca.pem\n' > "$npmrc"
  build_opts+=(-v "$ca:/run/kpr-build-ca.pem:ro" -v "$npmrc:/root/.npmrc:ro")
  log "npm in the build trusts $ca"
fi

log "building deploy/Dockerfile as $tag"
# --format docker: the OCI format has no SHELL, and buildah would run every
# RUN under /bin/sh -c instead of the Dockerfile's bash -euo pipefail.
bud=("${buildah_cmd[@]}" bud --isolation chroot --pull=never --layers --force-rm --format docker -f "$repo/deploy/Dockerfile")
if [ ${#build_opts[@]} -gt 0 ]; then
  # The build stage alone with the CA bound in (npm ci), then the whole
  # Dockerfile from those cached layers without it: the runtime stage's RUNs
  # would otherwise keep the empty files buildah makes to bind onto.
  retry "${bud[@]}" "${build_opts[@]}" --target build "$repo" >&2
fi
retry "${bud[@]}" -t "$tag" "$repo" >&2
printf '%s\n' "$("${buildah_cmd[@]}" inspect --type image --format '{{.FromImageID}}' "$tag")"
