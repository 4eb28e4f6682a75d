"""A credential leak scanner for the fault and security tests.

    hits = scan(secret_forms(PASSWORD), paths=[agent.workdir], texts={"vasctl status": out},
                skip_pids=set())
    assert not hits, hits

``secret_forms`` gives every way a password can be written down (raw, URL-encoded
with upper- or lower-case escapes, form-encoded, base64, JSON-escaped); ``scan``
looks for each in every file under ``paths`` (media segments excepted: FFmpeg
writes video, not text), in every captured text, and in the command line of
every process on the machine except FFmpeg itself (which must be given the URL),
the test camera (which is told the password it demands) and ``skip_pids``.  Each hit names where it was.
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

MEDIA = (".ts", ".m4s", ".mp4", ".mkv")


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
    hits = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                argv = fh.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0]) in ("ffmpeg", "ffprobe"):
            continue  # FFmpeg must be given the camera's URL
        if any(a.endswith("rtsp_camera.py") for a in argv[:3]):
            continue  # the test camera is told the password it demands
        form = _find(" ".join(argv), forms)
        if form:
            hits.append(Hit(f"/proc/{entry.name}/cmdline ({os.path.basename(argv[0])})", form))
    return hits
