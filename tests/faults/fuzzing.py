"""Hostile streams.yaml files for the fuzz tests and bench/fuzz.py: structure-aware
configs (valid shapes with wrong keys, types, durations, placeholders and huge values),
raw bytes, and the classic attacks (alias bombs, deep nesting, huge scalars, non-UTF-8)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from agent.config.loader import load
from agent.config.model import Config, ConfigError

ENV = {"CAM_PASSWORD": "Fuzz-Pw:1@x"}
KEYS = ["version", "node", "recordings", "defaults", "streams", "exporter", "mediasoup", "consumers", "cluster",
        "runtime_dir", "ffmpeg", "drain_period", "root", "min_free", "url", "command", "name", "enabled",
        "restart", "initial_delay", "max_delay", "multiplier", "jitter", "stable_after", "stall_timeout",
        "stop_timeout", "recording", "retention", "max_size", "segment_duration", "rtp", "ssrc", "payload_type",
        "placement", "prefer", "allow", "etcd", "endpoints", "lease_ttl", "input_args", "ready_after", "typo_key"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=10**30, max_value=10**400),
    st.sampled_from(["20s", "0s", "-1s", "1e400s", "5m", "1d", "nan", "inf", "10%", "200GiB", "0.0001ms",
                     "rtsp://u:p@h/s", "rtsp://h/{url}", "{url!r}", "{progress:>9}", "${CAM_PASSWORD}", "${NOPE}",
                     "${file:/dev/zero}", "${file:/nonexistent}", "rtsp://a:${CAM_PASSWORD}@h:554/x", "\0", "é",
                     "tcp", "udp", "http://e:2379", "ffmpeg", "/tmp", "../../etc", "Cam 1", "cam1"]),
    st.text(max_size=40))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)),
    max_leaves=25)


@st.composite
def structured(draw: Any) -> bytes:
    """A config of the right general shape with some parts wrong, dumped as YAML."""
    stream_ids = draw(st.lists(st.sampled_from(["cam1", "cam2", "Cam3", "a" * 70, "x y", "1"]) | st.text(max_size=6),
                               max_size=4))
    doc: dict[Any, Any] = {"version": draw(st.sampled_from([1, 1, 1, 2, "1", True, None]))}
    doc["streams"] = {sid: draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5)) for sid in stream_ids}
    for section in draw(st.lists(st.sampled_from(KEYS[1:9]), max_size=3, unique=True)):
        doc[section] = draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4) | VALUES)
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()
    cut = draw(st.integers(min_value=0, max_value=len(text)))
    return text if draw(st.booleans()) else text[:cut] + draw(st.binary(max_size=8)) + text[cut:]


def attacks() -> list[tuple[str, bytes]]:
    """One file per classic attack on a YAML loader."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
    return [
        ("alias bomb", ("version: 1\nstreams: {}\n" + bomb).encode()),
        ("deep nesting", ("version: 1\nstreams: " + "[" * 5000 + "]" * 5000 + "\n").encode()),
        ("deep mapping", ("version: 1\nstreams:\n" + "".join("  " * i + f"k{i}:\n" for i in range(300))).encode()),
        ("huge scalar", b"version: 1\nstreams: {cam1: {url: 'rtsp://h/" + b"x" * 5_000_000 + b"'}}\n"),
        ("huge int", b"version: 1\nstreams: {cam1: {url: rtsp://h/, stop_timeout: " + b"9" * 100_000 + b"}}\n"),
        ("non-UTF-8", b"version: 1\nstreams: {cam1: {url: 'rtsp://h/\xff\xfe\x80'}}\n"),
        ("UTF-16 BOM", "\ufeffversion: 1\nstreams: {}\n".encode("utf-16")),
        ("NUL", b"version: 1\x00\nstreams: {}\n"),
        ("python tag", b"version: 1\nstreams: !!python/object/apply:os.system ['true']\n"),
        ("recursive alias", b"version: 1\nstreams: &s {cam1: *s}\n"),
        ("many errors", ("version: 1\nstreams:\n" + "".join(f"  c{i}: {{url: 'x'}}\n" for i in range(20000))).encode()),
        ("empty", b""),
        ("only a comment", b"# nothing\n"),
        ("tabs", b"version: 1\nstreams:\n\tcam1: {}\n"),
        ("duplicate keys", b"version: 1\nstreams: {}\nstreams: {}\n"),
    ]


LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): ")


def check_load(path: Path, data: bytes) -> Config | None:
    """Load ``data`` as ``path``: a Config, or a ConfigError naming the file and a line on
    every line; anything else is a defect (raised as AssertionError)."""
    path.write_bytes(data)
    try:
        return load(path, ENV)
    except ConfigError as exc:
        assert exc.errors, "ConfigError without a message"
        for line in exc.errors:
            m = LINE.match(line)
            whole_file = line.startswith(f"{path}: file is larger than")  # no one line to name
            assert whole_file or (m and m.group("file") == str(path)), f"error without file:line: {line[:200]!r}"
            assert "Traceback" not in line
        return None
