"""Which code runs: the checkout's tag and commit, for ``--version``, ``vas_build_info`` and the API.

An installed copy carries them in ``agent/_build.py``, written by install.sh from the
checkout (``python3 -m agent.version --module``); a checkout (``--dev``, ``--demo``,
tests) asks git.  The package metadata's version (``0.1.0``) is the same in every
build, so it never stands alone.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import NamedTuple

#: Where the package sits: its parent is the checkout when run from one.
CHECKOUT = Path(__file__).resolve().parent.parent
UNKNOWN = "unknown"


class Build(NamedTuple):
    """``version``: ``git describe`` (tag, commits since, ``-dirty``), or the package version and
    the short commit when no tag is reachable; ``commit``: the full commit id, or ``unknown``."""

    version: str
    commit: str


def describe(tag: str | None, distance: int, commit: str, dirty: bool, fallback: str) -> str:
    """The version string (pure): ``1.2.0``, ``1.2.0+3.gabc1234``, ``0.1.0+gabc1234.dirty``."""
    short = commit[:7]
    if tag is not None:
        base = tag[1:] if tag[:1] == "v" and tag[1:2].isdigit() else tag
        local = [f"{distance}.g{short}"] if distance else []
    else:
        base, local = fallback, [f"g{short}"]
    local += ["dirty"] if dirty else []
    return base + ("+" + ".".join(local) if local else "")


def _git(*args: str) -> str | None:
    import subprocess  # here: vasctl imports this module and must start fast
    try:  # safe.directory: root reading a checkout another user owns (sudo ./install.sh)
        out = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(CHECKOUT), *args],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vas-node-agent")
    except PackageNotFoundError:
        return "0.1.0"


def from_git() -> Build | None:
    """The checkout's build, or None when this is no git checkout (or git is missing)."""
    if not (CHECKOUT / ".git").exists():
        return None
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return None
    # A new module not yet added is an edit too (it is installed and imported); .gitignore still applies.
    dirty = _git("status", "--porcelain", "--untracked-files=all", "--", "agent", "exporter", "pyproject.toml")
    tag, distance = None, 0
    found = _git("describe", "--tags", "--abbrev=0")
    if found:
        tag = found
        distance = int(_git("rev-list", "--count", f"{found}..HEAD") or 0)
    return Build(describe(tag, distance, commit, bool(dirty), _package_version()), commit)


@functools.lru_cache(maxsize=1)
def build() -> Build:
    """This process's build (computed once: git runs at most once per process)."""
    try:
        from agent import _build  # type: ignore[attr-defined]
        return Build(_build.VERSION, _build.COMMIT)
    except ImportError:
        pass
    return from_git() or Build(_package_version(), UNKNOWN)


def line(prog: str) -> str:
    """``--version`` output: ``vasctl 0.1.0+gabc1234 (commit abc1234...)``."""
    b = build()
    return f"{prog} {b.version} (commit {b.commit})"


class VersionAction(argparse.Action):
    """``--version``: tag and commit, looked up only when asked (git may run)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and commit, then exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(line(parser.prog))
        parser.exit()


def main(argv: list[str]) -> int:
    """``python3 -m agent.version [--module]``: the version, or ``_build.py``'s text for an install."""
    b = build()
    if argv[:1] == ["--module"]:
        print(f'"""Written by install.sh: the checkout this copy was installed from."""\n'
              f"VERSION = {b.version!r}\nCOMMIT = {b.commit!r}")
    else:
        print(f"{b.version} {b.commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
