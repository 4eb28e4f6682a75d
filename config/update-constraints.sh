#!/usr/bin/env bash
# Renew constraints.txt: resolve vas-node-agent[test,bench] afresh (the newest versions
# pyproject.toml allows) in a throwaway venv, then pin what was installed.
#   config/update-constraints.sh          then review `git diff constraints.txt`, run the tests
#                                         (./install.sh --dev --test) and commit the file.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
# Not -c constraints.txt: the point is to move the pins.
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check ".[test,bench]"
"$work/venv/bin/python" config/lock.py >"$work/constraints.txt"
mv "$work/constraints.txt" constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins; review: git diff constraints.txt"
