#!/usr/bin/env bash
# Build mediasoup 3.8.4, the last release built with gyp, from the npm registry alone,
# once per machine, into a cache outside the checkout keyed by version:
#
#   sfu/build-mediasoup.sh [CACHE_DIR]     (default /var/cache/vas/mediasoup-3.8.4)
#
# Its npm tarball vendors every C++ dependency; two one-line patches make it build
# with today's Python (3.10+) and glibc (2.34+). Prints the cache directory (a
# node_modules tree the reference app in sfu/ runs with) on its last line.
# A rerun with the cache in place only checks it (well under a second).
set -euo pipefail

VERSION=3.8.4
CACHE="${1:-${VAS_MEDIASOUP_CACHE:-/var/cache/vas/mediasoup-$VERSION}}"
WORKER=node_modules/mediasoup/worker/out/Release/mediasoup-worker

log() { printf '==> mediasoup: %s\n' "$*" >&2; }
die() { printf 'build-mediasoup.sh: %s\n' "$*" >&2; exit 1; }

if [[ -f "$CACHE/.vas-built" && -x "$CACHE/$WORKER" ]]; then
    log "$VERSION cached in $CACHE"
    echo "$CACHE"
    exit 0
fi
command -v npm >/dev/null || die "npm not found (install Debian's nodejs and npm)"
for tool in make g++ python3; do
    command -v "$tool" >/dev/null || die "$tool not found (needed to build the mediasoup worker)"
done

mkdir -p "$(dirname "$CACHE")"
work="$(mktemp -d "$(dirname "$CACHE")/.mediasoup-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "building $VERSION in $work (about 5 minutes on 2 cores, once per machine)"
cd "$work"
printf '{"name": "vas-mediasoup-cache", "private": true}\n' >package.json
# The postinstall would download a prebuilt worker or run python2: a set
# MEDIASOUP_WORKER_BIN makes it skip the worker build, which we do ourselves below.
MEDIASOUP_WORKER_BIN=/nonexistent npm install --no-audit --no-fund --loglevel=error \
    "mediasoup@$VERSION" >&2

patch_line() {  # FILE OLD NEW: replace exactly one occurrence, fail loudly otherwise
    local file="$1" old="$2" new="$3"
    [[ "$(grep -cF -- "$old" "$file")" == 1 ]] || die "patch target not found once in $file: $old"
    OLD="$old" NEW="$new" perl -0pi -e 's/\Q$ENV{OLD}\E/$ENV{NEW}/' "$file"
}
src=node_modules/mediasoup/worker
# Python 3.10 removed the collections aliases of collections.abc.
patch_line "$src/deps/gyp/pylib/gyp/common.py" \
    "collections.MutableSet" "collections.abc.MutableSet"
# glibc 2.34 made SIGSTKSZ a long, not a constant int.
patch_line "$src/deps/libwebrtc/deps/abseil-cpp/abseil-cpp/absl/debugging/failure_signal_handler.cc" \
    "std::max(SIGSTKSZ, 65536)" "std::max<size_t>(SIGSTKSZ, 65536)"

make -C "$src" PYTHON=python3 CORES="$(nproc)" MEDIASOUP_WORKER_BIN= >&2
strip "$WORKER"
"$WORKER" --version >/dev/null 2>&1 || true  # a smoke run; the worker exits without its channel fds
# Keep only what runs: the JS library and the stripped worker (247 MB -> ~15 MB).
find "$src" -mindepth 1 -maxdepth 1 ! -name out ! -name package.json -exec rm -rf {} +
find "$src/out" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
find "$src/out/Release" -mindepth 1 -maxdepth 1 ! -name mediasoup-worker -exec rm -rf {} +
date -u +%FT%TZ >.vas-built
chmod -R a+rX .
rm -rf "$CACHE"
mv "$work" "$CACHE"
trap - EXIT
log "$VERSION built into $CACHE ($(du -sh "$CACHE" | cut -f1))"
echo "$CACHE"
