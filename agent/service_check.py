"""``vas-agent --check`` as the service will see it: its environment file and its user.

The unit runs the agent as user ``vas`` with ``EnvironmentFile=-/etc/vas/environment``.
A check run by root in a login shell sees neither: it would say ``ok`` for a secret file
only root can read (and ``ExecStartPre`` then fails) and ``not set`` for a variable the
service has.  So a check of the service's file reads that environment file, and when run as
root opens the config and every ``${file:}`` secret as the service user.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: What systemd/vas-agent.service runs: its --config, EnvironmentFile= and User=.
SERVICE_CONFIG = Path("/etc/vas/streams.yaml")
ENVIRONMENT_FILE = Path("/etc/vas/environment")
SERVICE_USER = "vas"

_FILE_REF = re.compile(r"(?<!\$)\$\{file:([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_service_config(path: str | os.PathLike[str]) -> bool:
    """True for the file the unit runs the agent on (however it was spelled)."""
    return os.path.realpath(path) == os.path.realpath(SERVICE_CONFIG)


def parse_environment(text: str) -> dict[str, str]:
    """``KEY=value`` lines as systemd's ``EnvironmentFile=`` reads them (pure): ``#``/``;``
    comments, blank lines, and values in matching single or double quotes."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if not _NAME.fullmatch(key):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1].replace('\\"', '"') if value[0] == '"' else value[1:-1]
        env[key] = value
    return env


def environment(path: Path, explicit: bool = False) -> tuple[dict[str, str], str | None]:
    """The process environment with ``path``'s variables on top (they win, as under systemd),
    and a note when the file exists but cannot be read here, or was asked for and is missing
    (the unit's own is optional: ``EnvironmentFile=-``)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return dict(os.environ), (f"{path}: no such file: ${{NAME}} references use this shell's environment"
                                  if explicit else None)
    except OSError as exc:
        # Under systemd (ExecStartPre, as vas) the unit has loaded it already: nothing to say.
        quiet = "INVOCATION_ID" in os.environ
        return dict(os.environ), None if quiet else (
            f"{path}: not read ({exc.strerror}): ${{NAME}} references use this shell's environment")
    return {**os.environ, **parse_environment(text)}, None


def secret_files(value: Any, key: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every ``${file:PATH}`` in a parsed document, with the key path it sits under (pure)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from secret_files(v, (*key, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from secret_files(v, (*key, i))
    elif isinstance(value, str) and "${file:" in value:
        for path in _FILE_REF.findall(value):
            yield key, path


def default_user(service: bool) -> str | None:
    """The unit's User= when root checks the unit's file and that user exists; else nobody."""
    import pwd

    if not service or os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return SERVICE_USER


def access_errors(path: str, user: str | None) -> list[str]:
    """``file:line: key: ...`` for the config and each ``${file:}`` secret ``user`` cannot read."""
    if user is None:
        return []
    from agent.config import yamlsrc
    doc = yamlsrc.parse(yamlsrc.read_source(path))  # loaded fine a moment ago
    refs = list(secret_files(doc.value))
    # Absolute: the probe runs in /, where "cd /etc/vas && vas-agent --config streams.yaml" is "No such file".
    here = os.path.abspath(path)
    denied = unreadable_as(user, [here, *(p for _, p in refs)])
    if here in denied:
        denied[str(path)] = denied.pop(here)
    errors = [f"{path}: user {user} cannot read this file ({describe(path)}: {denied[str(path)]}); "
              + fix(user, str(path), denied[str(path)])] if str(path) in denied else []
    for key, secret in refs:
        if secret in denied:
            errors.append(f"{path}:{doc.line(key)}: {'.'.join(map(str, key))}: ${{file:{secret}}}: user {user} "
                          f"cannot read it ({describe(secret)}: {denied[secret]}); "
                          + fix(user, secret, denied[secret]))
    return errors


def fix(user: str, path: str, reason: str) -> str:
    """What to run (pure): open the file to the user's group, or the directory that shuts it out."""
    closed = re.search(r"\(directory (.+) is closed to it\)$", reason)
    target, mode = (closed.group(1), "g+x") if closed else (path, "0640")
    return f"the service (user {user}) would fail to start; e.g. chgrp {user} {target} && chmod {mode} {target}"


#: Run as the user: each path it cannot open, and why.  A file denied in a readable mode sits
#: behind a directory the user cannot enter: that directory is named, or "chmod 0640 FILE"
#: would be advice that changes nothing.
PROBE = """
import os, sys
for p in sys.argv[1:]:
    try:
        open(p, 'rb').close()
    except OSError as e:
        parents, q = [], os.path.dirname(p)
        while q not in parents:
            parents.append(q)
            q = os.path.dirname(q)
        shut = [d for d in reversed(parents) if not os.access(d, os.X_OK)]
        print(p + '\\0' + (e.strerror or str(e)) + (f' (directory {shut[0]} is closed to it)' if shut else ''))
"""


def unreadable_as(user: str, paths: list[str]) -> dict[str, str]:
    """Which of ``paths`` ``user`` cannot open for reading, and why: really tried, in a child
    process with the user's uid, gid and groups (as systemd's ``User=`` sets them)."""
    import pwd
    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError:
        return {p: f"there is no user {user}" for p in paths}
    if os.geteuid() != 0:
        return {p: f"cannot check as user {user}: only root can switch users" for p in paths}
    # This interpreter may be closed to the user (a venv in /root, a --root stage in a 0700
    # directory): then Debian's, which every user can run; the probe needs nothing else.
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        try:
            out = subprocess.run([python, "-I", "-c", PROBE, *paths], user=user, group=gid,
                                 extra_groups=os.getgrouplist(user, gid), capture_output=True, text=True,
                                 timeout=30, cwd="/")
        except OSError:
            continue
        return dict(line.split("\0", 1) for line in out.stdout.splitlines() if "\0" in line)
    return {p: f"cannot check: user {user} can run neither {sys.executable} nor /usr/bin/python3" for p in paths}


def describe(path: str) -> str:
    """``mode 0600 root:root`` for a message, or what stat says."""
    import grp
    import pwd
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)

    def name(lookup: Any, ident: int) -> str:
        try:
            return str(lookup(ident)[0])
        except KeyError:
            return str(ident)
    return f"mode {st.st_mode & 0o7777:04o} {name(pwd.getpwuid, st.st_uid)}:{name(grp.getgrgid, st.st_gid)}"
