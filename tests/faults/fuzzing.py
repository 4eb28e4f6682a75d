"""Hostile streams.yaml files for the fuzz tests and bench/fuzz.py: structure-aware
configs (valid shapes with wrong keys, types, durations, placeholders and huge values),
raw bytes, and the classic attacks (alias bombs, deep nesting, huge scalars, non-UTF-8)."""
from __future__ import annotations

import random
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
#: Strings that mean something to the loader: units, placeholders, secrets, paths, URLs.
WORDS = ["20s", "0s", "-1s", "1e400s", "5m", "1d", "nan", "inf", "10%", "200GiB", "0.0001ms", "rtsp://u:p@h/s",
         "rtsp://h/{url}", "{url!r}", "{progress:>9}", "${CAM_PASSWORD}", "${NOPE}", "${file:/dev/zero}",
         "${file:/nonexistent}", "rtsp://a:${CAM_PASSWORD}@h:554/x", "\0", "é", "tcp", "udp", "http://e:2379",
         "ffmpeg", "/tmp", "../../etc", "Cam 1", "cam1"]
NUMBERS = [0, 1, -1, 2, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, -2**63, 10**30,
           0.0, -0.0, 0.5, 1e-300, 5e-324, 1.7976931348623157e308, float("inf"), float("-inf"), float("nan")]
#: Where a random string's characters come from: ASCII, control characters, Latin-1, the rest of
#: the Basic Multilingual Plane (no surrogates: no YAML file holds one) and the astral planes.
CHARS = [(0x20, 0x7e), (0x00, 0x1f), (0x7f, 0xff), (0x100, 0xd7ff), (0xe000, 0xfffd), (0x10000, 0x10ffff)]


#: For a key the loader knows, half the time a value of its kind (right or wrong in its details):
#: a random value seldom reaches the checks behind a key's type.
DURATIONS = ["20s", "0s", "-1s", "1e400s", "5m", "1d", "nan", "inf", "0.0001ms", "10", "1h30m", "", 0, -1, 5, 2.5,
             10**400, float("nan")]
KEY_VALUES: dict[str, list[Any]] = {
    **{key: DURATIONS for key in ("drain_period", "initial_delay", "max_delay", "stable_after", "stall_timeout",
                                  "stop_timeout", "retention", "segment_duration", "lease_ttl", "ready_after")},
    "url": ["rtsp://u:p@h/s", "rtsp://h/{url}", "rtsp://a:${CAM_PASSWORD}@h:554/x", "rtsp://h:99999/x", "http://h/",
            "rtsp://", "rtsp://h/\0", "${NOPE}", "${file:/dev/zero}"],
    "command": [["ffmpeg", "-i", "{url}"], ["{url}"], [], "ffmpeg -i {url}", ["ffmpeg", "{nope}"], ["${NOPE}"]],
    "enabled": [True, False, "yes", 0, None],
    "max_size": ["200GiB", "10%", "0", "-1GiB", "1e400GiB", "5 TB", 100, "101%"],
    "min_free": ["10%", "200GiB", "0%", "100%", "-5%", "nan%"],
    "multiplier": [2, 1, 0.5, -1, "2", float("inf")], "jitter": [0, 0.1, 1, 2, -0.1],
    "ssrc": [0, 1, 2**32 - 1, 2**32, -1, "1"], "payload_type": [96, 127, 128, 0, -1, "96"],
    "root": ["/tmp", "../../etc", "relative", "", "/dev/null", "/nonexistent/x"],
}


def _known(rng: random.Random, key: str, leaves: list[int]) -> Any:
    pool = KEY_VALUES.get(key)
    return rng.choice(pool) if pool is not None and rng.random() < 0.5 else _value(rng, leaves)


def _text(rng: random.Random, max_size: int) -> str:
    out = []
    for _ in range(rng.randint(0, max_size)):
        low, high = CHARS[0] if rng.random() < 0.6 else rng.choice(CHARS)
        out.append(chr(rng.randint(low, high)))
    return "".join(out)


def _scalar(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice(NUMBERS)
    if kind == 2:
        return rng.randint(-2**rng.randint(1, 70), 2**rng.randint(1, 70))
    if kind == 3:
        return rng.uniform(-1e6, 1e6) * 10.0 ** rng.randint(-40, 40)
    if kind == 4:
        return rng.randint(10**30, 10**rng.randint(31, 400))
    if kind in (5, 6):
        return rng.choice(WORDS)
    return _text(rng, 40)


def _value(rng: random.Random, leaves: list[int]) -> Any:
    """A scalar, or (while ``leaves[0]`` lasts: 25 a file's value) a list or mapping of values."""
    leaves[0] -= 1
    kind = rng.random() if leaves[0] > 0 else 0.0
    if kind < 0.6:
        return _scalar(rng)
    if kind < 0.8:
        return [_value(rng, leaves) for _ in range(rng.randint(0, 4))]
    keys = [_key(rng) for _ in range(rng.randint(0, 5))]
    return {key: _known(rng, key, leaves) for key in keys}


def _key(rng: random.Random) -> str:
    return rng.choice(KEYS) if rng.random() < 0.75 else _text(rng, 8)


def _section(rng: random.Random, size: int) -> dict[str, Any]:
    keys = [rng.choice(KEYS) for _ in range(rng.randint(0, size))]
    return {key: _known(rng, key, [25]) for key in keys}


def structured_config(rng: random.Random) -> bytes:
    """A config of the right general shape with some parts wrong, dumped as YAML (then, one
    time in two, a few random bytes put in somewhere).  A seeded ``random.Random``: the same
    seed gives the same file, at a small part of what drawing it through hypothesis costs."""
    stream_ids = [rng.choice(["cam1", "cam2", "Cam3", "a" * 70, "x y", "1"]) if rng.random() < 0.5
                  else _text(rng, 6) for _ in range(rng.randint(0, 4))]
    doc: dict[Any, Any] = {"version": rng.choice([1, 1, 1, 2, "1", True, None])}
    doc["streams"] = {sid: _section(rng, 5) for sid in stream_ids}
    for section in rng.sample(KEYS[1:9], rng.randint(0, 3)):
        doc[section] = _section(rng, 4) if rng.random() < 0.5 else _value(rng, [25])
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()
    if rng.random() < 0.5:
        return text
    cut = rng.randint(0, len(text))
    return text[:cut] + rng.randbytes(rng.randint(0, 8)) + text[cut:]


def structured() -> st.SearchStrategy[bytes]:
    """:func:`structured_config` as a hypothesis strategy (for bench/fuzz.py): one draw, the seed."""
    return st.integers(min_value=0, max_value=2**64).map(lambda seed: structured_config(random.Random(seed)))


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
