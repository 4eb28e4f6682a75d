"""A credential leak scanner for the fault and security tests.

    hits = scan(secret_forms(PASSWORD), paths=[agent.workdir], texts={"vasctl status": out},
                skip_pids=set())
    assert not hits, hits

``secret_forms`` gives every way a password can be written down (raw, URL-encoded
with upper- or lower-case escapes, form-encoded, base64, JSON-escaped); ``scan``
looks for each in every file under ``paths`` (media segments excepted: FFmpeg
writes video, not text), in every captured text, and in the command line of
every process on the machine except FFmpeg itself (which must be given the URL, and so
is the agent's die-with-the-agent wrapper for the moment before it execs FFmpeg), the test
camera (which is told the password it demands) and ``skip_pids``.  Each hit names where it was.

A process caught between ``execve``'s point of no return and the setup of its new
argv reads an empty command line for a moment (on this kernel, right after
``Popen`` returns, about one time in three); the scanner re-reads such a process
for up to ``EMPTY_RETRY_SECONDS`` instead of passing it over (and reports it
as a hit if it never shows one).  Kernel threads and
zombies, whose command line is always empty, are not waited for.
"""
from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

MEDIA = (".ts", ".m4s", ".mp4", ".mkv")
#: How long a momentarily empty command line is re-read (bounded: a scan never hangs).
EMPTY_RETRY_SECONDS = 2.0
EMPTY_RETRY_INTERVAL = 0.01
PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class Hit:
    where: str
    form: str


def secret_forms(secret: str) -> set[str]:
    """The ways ``secret`` may appear in text."""
    encoded = quote(secret, safe="")
    lower = "%".join(part if i == 0 else part[:2].lower() + part[2:] for i, part in enumerate(encoded.split("%")))
    return {secret, encoded, lower, quote_plus(secret), base64.b64encode(secret.encode()).decode(),
            json.dumps(secret)[1:-1]} - {""}


def _find(text: str, forms: Iterable[str]) -> str | None:
    return next((f for f in forms if f in text), None)


def scan(secrets: Iterable[str], paths: Iterable[Path] = (), texts: Mapping[str, str] | None = None,
         proc: bool = True, skip_pids: set[int] | None = None) -> list[Hit]:
    """Every place one of ``secrets`` appears (see the module's docstring)."""
    forms = sorted(set(secrets), key=len, reverse=True)
    hits = []
    for root in paths:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                if name.endswith(MEDIA):
                    continue
                path = Path(dirpath) / name
                try:
                    text = path.read_bytes().decode("utf-8", "replace")
                except OSError:
                    continue
                form = _find(text, forms)
                if form:
                    hits.append(Hit(str(path), form))
    for where, text in (texts or {}).items():
        form = _find(text, forms)
        if form:
            hits.append(Hit(where, form))
    if proc:
        hits += _scan_processes(forms, skip_pids or set())
    return hits


def _scan_processes(forms: list[str], skip: set[int]) -> list[Hit]:
    hits, empty = [], []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) not in skip and int(entry.name) != os.getpid():
            argv = _argv(entry.name)
            if argv == [""] and not _always_empty(entry.name):
                empty.append(entry.name)
            elif argv is not None:
                hits += _check_argv(entry.name, argv, forms)
    deadline = time.monotonic() + EMPTY_RETRY_SECONDS
    while empty and time.monotonic() < deadline:  # caught mid-exec: its argv appears in a moment
        time.sleep(EMPTY_RETRY_INTERVAL)
        again = []
        for pid in empty:
            argv = _argv(pid)
            if argv == [""] and not _always_empty(pid):
                again.append(pid)
            elif argv is not None:
                hits += _check_argv(pid, argv, forms)
        empty = again
    # Still empty: say so rather than pass it over (a scan that cannot look must not say "clean").
    return hits + [Hit(f"/proc/{pid}/cmdline (empty for {EMPTY_RETRY_SECONDS:g}s, not checked)", "?") for pid in empty]


def _argv(pid: str) -> list[str] | None:
    """The command line of ``pid`` (``[""]`` when empty), None once the process is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode("utf-8", "replace").rstrip("\0").split("\0")
    except OSError:
        return None


def _always_empty(pid: str) -> bool:
    """A kernel thread, a zombie or a process gone: no command line will ever appear."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & PF_KTHREAD)


#: FFmpeg must be given the camera's URL.
FFMPEG = ("ffmpeg", "ffprobe")
#: The agent's spawn wrapper (agent/supervise/process.py dying_with_agent): ``setpriv ... -- sh -c
#: CHECK PID ffmpeg ...`` holds FFmpeg's argv until it execs it; only the words before FFmpeg's are checked.
WRAPPER = ("setpriv", "sh", "dash", "bash")


def _check_argv(pid: str, argv: list[str], forms: list[str]) -> list[Hit]:
    names = [os.path.basename(a) for a in argv]
    if names[0] in FFMPEG:
        return []
    if names[0] in WRAPPER and any(n in FFMPEG for n in names):
        argv = argv[:next(i for i, n in enumerate(names) if n in FFMPEG)]
    if any(a.endswith("rtsp_camera.py") for a in argv[:3]):
        return []  # the test camera is told the password it demands
    form = _find(" ".join(argv), forms)
    return [Hit(f"/proc/{pid}/cmdline ({os.path.basename(argv[0])})", form)] if form else []
