#!/usr/bin/env bash
# Build the qrng-dd base image from Debian packages, with no container registry at all.
#
#   sudo deploy/base-image.sh                      # -> qrng-dd-base:bookworm (skipped if present)
#   docker build --build-arg BASE_IMAGE=qrng-dd-base:bookworm -t qrng-dd:local .
#
# What it does: `debootstrap --variant=minbase` a Debian 12 (bookworm) root file system with
# only python3 (3.11), python3-venv (the Dockerfile's builder stage makes a venv) and passwd
# (its runtime stage adds the qrng user), applies bookworm-updates and bookworm-security, strips
# documentation and package caches, and `docker import`s the tree. The Dockerfile runs the same
# on this image as on python:3.11-slim-bookworm.
#
# Air-gapped sites (the usual home of a data diode) have three ways in:
#   --mirror URL      a local Debian mirror (http://, or file:/// of a mounted mirror or DVD);
#                     --security-mirror URL for bookworm-security, or --no-updates without one
#   --tarball FILE    keep the root file system as the tar file FILE; when it exists (no --force)
#                     it is imported as it is: build it once where Debian is reachable, carry
#                     the file across, run the same command there. Also the cache between runs.
#   docker save qrng-dd-base:bookworm | gzip > base.tar.gz   (then `docker load` on the far side)
#
# Idempotent: does nothing when the tag already exists, unless --force. Needs root (debootstrap
# and chroot), debootstrap, and a reachable Docker daemon (DOCKER_HOST is honoured).
set -euo pipefail

TAG=qrng-dd-base:bookworm
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
UPDATES=1
FORCE=0
TARBALL=
# python3-venv: ensurepip for `python3 -m venv`; passwd: groupadd/useradd. Nothing else.
PACKAGES=python3,python3-venv,passwd

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    cat <<EOF
Options: --tag NAME (default $TAG)  --mirror URL  --security-mirror URL  --no-updates
         --tarball FILE  --force  -h|--help
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
        --mirror) MIRROR=${2:?--mirror needs a value}; shift 2 ;;
        --security-mirror) SECURITY_MIRROR=${2:?--security-mirror needs a value}; shift 2 ;;
        --no-updates) UPDATES=0; shift ;;
        --tarball) TARBALL=${2:?--tarball needs a value}; shift 2 ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "base-image.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "base-image.sh: $*" >&2; }

command -v docker >/dev/null || { say "docker is not installed (Debian: apt-get install docker.io)"; exit 1; }
docker version >/dev/null 2>&1 || { say "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-unset})"; exit 1; }

if [ "$FORCE" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    say "$TAG exists; nothing to do (--force rebuilds it)"
    exit 0
fi

# The image's configuration: what `FROM python:3.11-slim` would give the Dockerfile. An
# imported image has no PATH at all, and the Dockerfile extends "$PATH".
import_tree() {
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "qrng-dd base: debootstrap $SUITE minbase + $PACKAGES" \
        "$1" "$TAG" >/dev/null
    say "imported $TAG ($(docker image inspect --format '{{.Size}}' "$TAG") bytes)"
}

if [ -n "$TARBALL" ] && [ -f "$TARBALL" ] && [ "$FORCE" = 0 ]; then
    say "importing $TARBALL"
    import_tree "$TARBALL"
    exit 0
fi

[ "$(id -u)" = 0 ] || { say "debootstrap needs root"; exit 1; }
command -v debootstrap >/dev/null || { say "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qrng-dd-base.XXXXXX")
ROOTFS=$WORK/rootfs
cleanup() {
    # debootstrap unmounts what it mounted; this catches an interrupted run.
    for mnt in proc sys dev/pts dev; do
        if mountpoint -q "$ROOTFS/$mnt" 2>/dev/null; then umount -l "$ROOTFS/$mnt"; fi
    done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

say "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
debootstrap --variant=minbase --include="$PACKAGES" --components=main \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }

cat >"$ROOTFS/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF

if [ "$UPDATES" = 1 ]; then
    say "applying $SUITE-updates and $SUITE-security"
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c 'apt-get -qq update && apt-get -qq -y --no-install-recommends upgrade' \
        >"$WORK/upgrade.log" 2>&1 \
        || { tail -n 30 "$WORK/upgrade.log" >&2; say "upgrade failed (--no-updates skips it)"; exit 1; }
fi

# Slim it the way the official slim images are: no package caches or lists, no docs but the
# copyright files, no man pages or translations, no host files Docker manages itself.
(
    cd "$ROOTFS"
    rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* \
           var/cache/debconf/*-old var/lib/dpkg/*-old var/log/* \
           usr/share/man/* usr/share/info/* usr/share/locale/* usr/share/lintian \
           etc/resolv.conf etc/hostname etc/hosts debootstrap
    find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
    find usr/share/doc -mindepth 1 -type d -empty -delete
    : >etc/machine-id
)

OUT=${TARBALL:-$WORK/rootfs.tar}
tar --numeric-owner --xattrs -C "$ROOTFS" -cf "$OUT.partial" .
mv "$OUT.partial" "$OUT"
[ -n "$TARBALL" ] && say "root file system saved as $TARBALL"
import_tree "$OUT"
