"""Print constraints.txt: every distribution that ``vas-node-agent[test,bench]`` needs, pinned
to the version installed in the running interpreter's environment.

Run by config/update-constraints.sh inside a fresh venv; by hand:
``.venv/bin/python config/lock.py > constraints.txt``.
"""
from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

ROOT = "vas-node-agent"
EXTRAS = ("test", "bench")


def canonical(name: str) -> str:
    """PEP 503 name: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """Installed name -> version of everything ``root[extras]`` requires, transitively."""
    pinned: dict[str, str] = {}
    todo = [(root, set(extras))]
    while todo:
        name, wanted = todo.pop()
        dist = distribution(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
                continue
            key = canonical(req.name)
            if key in pinned:
                continue
            try:
                pinned[key] = f"{distribution(req.name).metadata['Name']}=={distribution(req.name).version}"
            except PackageNotFoundError:
                sys.exit(f"lock.py: {req.name} (needed by {name}) is not installed here")
            todo.append((req.name, set(req.extras)))
    pinned.pop(canonical(root), None)
    return pinned


def main() -> int:
    """Write the pins, sorted, under a header that says how to renew them."""
    print("# Every dependency of vas-node-agent[test,bench], pinned: install.sh installs with")
    print("# `pip install -c constraints.txt` in every mode (host, --dev, --demo, --offline) and CI.")
    print("# Renew (newest versions pyproject.toml allows, resolved in a fresh venv): config/update-constraints.sh")
    for key in sorted(pinned := closure(ROOT, EXTRAS)):
        print(pinned[key])
    return 0


if __name__ == "__main__":
    sys.exit(main())
