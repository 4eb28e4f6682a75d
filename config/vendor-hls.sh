#!/usr/bin/env bash
# Re-fetch the vendored hls.js (exporter/console/vendor/) from the npm registry and check it.
#
#   config/vendor-hls.sh          fetch hls.js@VERSION with npm, check the tarball's and the files' sha256,
#                                 write vendor/hls.min.js and vendor/LICENSE (then review and commit them)
#   config/vendor-hls.sh --check  fetch and compare with the committed files; exit 1 when they differ
#
# To move to another version: change VERSION, run once with the new sums printed by a failed run,
# review the release notes, update the three sums below, run the console tests (tests/console/).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

VERSION=1.7.4
TARBALL_SHA256=e4ab3d5d13f7cca9ef241d098f39686e19fd451831ba07dc9943482fd5ff75c7
MIN_JS_SHA256=cfc70cc9e9fc63d071919e087670abc760c8fd1bc889b88588026e4d22193bbe
LICENSE_SHA256=ca8773cf798c7ed997d4dd7c8e23c348699f8d5b7462636694cc14de6cda12db
DEST=exporter/console/vendor

die() { printf 'vendor-hls.sh: %s\n' "$*" >&2; exit 1; }
sum_is() {  # sum_is FILE SHA256: the file's sha256 is the pinned one, or die naming both
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    [[ "$got" == "$2" ]] || die "$1: sha256 $got, pinned $2 (hls.js@$VERSION changed upstream? do not commit it)"
}

command -v npm >/dev/null || die "npm is needed (Debian: apt-get install npm)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "hls.js@$VERSION" >/dev/null)
sum_is "$work/hls.js-$VERSION.tgz" "$TARBALL_SHA256"
tar -xzf "$work/hls.js-$VERSION.tgz" -C "$work" package/dist/hls.min.js package/LICENSE
sum_is "$work/package/dist/hls.min.js" "$MIN_JS_SHA256"
sum_is "$work/package/LICENSE" "$LICENSE_SHA256"

if [[ "${1:-}" == --check ]]; then
    cmp -s "$work/package/dist/hls.min.js" "$DEST/hls.min.js" || die "$DEST/hls.min.js differs from hls.js@$VERSION"
    cmp -s "$work/package/LICENSE" "$DEST/LICENSE" || die "$DEST/LICENSE differs from hls.js@$VERSION"
    echo "$DEST: hls.js@$VERSION, sha256 checked"
    exit 0
fi
mkdir -p "$DEST"
install -m 0644 "$work/package/dist/hls.min.js" "$DEST/hls.min.js"
install -m 0644 "$work/package/LICENSE" "$DEST/LICENSE"
echo "$DEST: hls.js@$VERSION written (sha256 $MIN_JS_SHA256); review and commit it"
