"""Regressions from the core review: inputs `--check` accepted (or crashed on) that
the runtime could not take, and secrets that leaked through error messages."""
from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from agent.config import yamlsrc
from agent.config.loader import load, runtime_dir_of
from agent.config.model import ConfigError
from agent.config.units import SECRET_FILE_MAX, parse_duration

from .config.test_loader import one_stream


def load_errors(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path, env or {})
    return info.value.errors


# -- YAML that produced tracebacks ------------------------------------------------
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))

BAD_YAML = {
    "int tag": ("stall_timeout: !!int abc", "invalid int value 'abc'"),
    "float tag": ("stall_timeout: !!float abc", "invalid float value 'abc'"),
    "bool tag": ("enabled: !!bool maybe", "invalid bool value 'maybe'"),
    "timestamp tag": ("name: !!timestamp foo", "unquoted date or time 'foo'"),
    "binary tag": ("name: !!binary 'a'", "unsupported YAML tag tag:yaml.org,2002:binary"),
    "impossible date": ("name: 2024-02-30", "unquoted date or time '2024-02-30'"),
    "5000-digit int": ("stall_timeout: " + "9" * 5000, "invalid int value"),
    "recursive alias": ("input_args: &a [*a]", "recursive alias"),
    "deep nesting": ("input_args: " + "[" * 500 + "]" * 500, "nested deeper than 64 levels"),
}


@pytest.mark.parametrize("body,expected", BAD_YAML.values(), ids=BAD_YAML.keys())
def test_bad_yaml_is_a_line_error_not_a_traceback(tmp_path, body, expected):
    path = one_stream(tmp_path, "url: rtsp://h/\n" + body + "\n")
    [error] = load_errors(path)
    assert error.startswith(f"{path}:") and expected in error
    # vasctl reads the same file for node.runtime_dir: one clear line, no traceback.
    with pytest.raises(ValueError, match=f"^{path}:"):
        runtime_dir_of(path)


def test_a_400_digit_stall_timeout_is_a_clear_error(tmp_path):
    path = one_stream(tmp_path, "url: rtsp://h/\nstall_timeout: " + "1" * 400 + "\n")
    [error] = load_errors(path)
    assert error.startswith(f"{path}:5: streams.lobby.stall_timeout: must be at most 1d, got 1111")


def test_an_alias_bomb_stops_within_a_fixed_budget(tmp_path):
    path = tmp_path / "streams.yaml"
    path.write_text(ALIAS_BOMB + "version: 1\nstreams: {}\n")  # 9^9 values if expanded
    started = time.monotonic()
    [error] = load_errors(path)
    assert "alias bomb" in error
    assert time.monotonic() - started < 10  # a generous bound: it used to run for minutes


def test_an_oversized_file_is_refused(tmp_path):
    path = tmp_path / "streams.yaml"
    path.write_bytes(b"version: 1\n#" + b"x" * yamlsrc.MAX_DOCUMENT_BYTES + b"\n")
    assert load_errors(path) == [f"{path}: file is larger than 16 MiB"]


def test_a_fifo_as_config_fails_at_once(tmp_path):
    fifo = tmp_path / "streams.yaml"
    os.mkfifo(fifo)
    assert load_errors(fifo) == [f"{fifo}: cannot read: not a regular file"]


def test_twenty_thousand_errors_are_reported_in_linear_time(tmp_path):
    streams = "".join(f"  s{i}: {{url: rtsp://h/, stall_timeout: bad}}\n" for i in range(20_000))
    path = tmp_path / "streams.yaml"
    path.write_text("version: 1\nstreams:\n" + streams)
    started = time.monotonic()
    errors = load_errors(path)
    assert len(errors) == 20_000
    assert errors[-1] == f"{path}:20002: streams.s19999.stall_timeout: expected a duration like 20s, got 'bad'"
    assert time.monotonic() - started < 8  # quadratic line lookup took 12.8 s


# -- values the runtime cannot (or should not) take ---------------------------------
@pytest.mark.parametrize("restart,message", [
    ("{initial_delay: 1.0e-300, max_delay: 1.0e+10}", "restart.initial_delay: must be at least 1ms"),
    ("{initial_delay: 1.0e-300, max_delay: 1.0e+10}", "restart.max_delay: must be at most 1d"),
    ("{initial_delay: 1.0e-250}", "restart.initial_delay: must be at least 1ms, got 1e-250"),
    ("{max_delay: '" + "9" * 310 + "s'}", "restart.max_delay: must be at most 1d"),
    ("{max_delay: 500ms}", "restart.max_delay: must be at least 1s"),
    ("{multiplier: 1, initial_delay: 10ms}", "with multiplier 1 the delay never grows"),
])
def test_restart_policies_that_overflow_or_spin_are_refused(tmp_path, restart, message):
    path = one_stream(tmp_path, f"url: rtsp://h/\nrestart: {restart}\n")
    assert any(message in e for e in load_errors(path)), load_errors(path)


def test_durations_are_finite_and_bounded():
    for bad in ("9" * 310 + "s", 10 ** 400, float("inf"), "101000d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("36500d") == 36500 * 86400.0


@pytest.mark.parametrize("arg", ["{url!x}", "{url!r}", "{url:d}", "{url:{url}}", "{url:>99}"])
def test_placeholders_take_no_conversion_or_format_spec(tmp_path, arg):
    command = f'[ffmpeg, -i, "{arg}", -progress, "{{progress}}", out.ts]'
    path = one_stream(tmp_path, f"url: rtsp://h/\ncommand: {command}\n")
    [error] = load_errors(path)
    assert "streams.lobby.command.2: placeholders take no conversion or format spec" in error


@pytest.mark.parametrize("body,key", [
    ('url: "rtsp://h/a\\0b"', "streams.lobby.url"),
    ('url: rtsp://h/\ninput_args: ["-x\\0"]', "streams.lobby.input_args.0"),
    ('command: [ffmpeg, "-progress", "{progress}", "a\\0b"]', "streams.lobby.command.3"),
])
def test_nul_bytes_are_refused(tmp_path, body, key):
    [error] = load_errors(one_stream(tmp_path, body + "\n"))
    assert f"{key}: contains a NUL byte" in error


# -- secret files -------------------------------------------------------------------
def test_secret_files_must_be_small_regular_files(tmp_path):
    fifo, big = tmp_path / "fifo", tmp_path / "big"
    os.mkfifo(fifo)  # no writer: reading it used to block the reload (and shutdown)
    big.write_bytes(b"x" * (SECRET_FILE_MAX + 1))
    for secret, problem in ((fifo, "is not a regular file"), ("/dev/zero", "is not a regular file"),
                            (big, "is larger than 64 KiB")):
        path = one_stream(tmp_path, f"url: rtsp://admin:${{file:{secret}}}@cam/\n")
        started = time.monotonic()
        assert load_errors(path) == [f"{path}:4: streams.lobby.url: secret file {secret} {problem}"]
        assert time.monotonic() - started < 5


# -- secrets in error messages ------------------------------------------------------
def test_a_secret_cut_by_truncation_is_still_redacted(tmp_path):
    secret = "correct-horse-battery-staple"
    # The bad value quotes the secret around the 60-character cut of the message.
    body = f"url: rtsp://h/\nname: [\"{'x' * 40}${{PW}}\"]\n"
    [error] = load_errors(one_stream(tmp_path, body), {"PW": secret})
    assert "correct" not in error and "horse" not in error


def test_a_url_used_as_stream_id_is_redacted_in_the_key_path(tmp_path):
    path = tmp_path / "streams.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        streams:
          rtsp://admin:s3cret@cam/:
            url: rtsp://h/
    """))
    [error] = load_errors(path)
    assert "s3cret" not in error and "rtsp://admin:***@cam/" in error


def test_userinfo_with_at_signs_is_redacted_in_errors(tmp_path):
    body = 'url: "http://user@corp:p@ss/w#rd x@cam/"\n'
    [error] = load_errors(one_stream(tmp_path, body))
    assert "p@ss" not in error and "rd x" not in error and "http://user@corp:***@cam/" in error


def test_values_quoted_from_bad_tags_are_redacted(tmp_path):
    path = one_stream(tmp_path, "url: !!int rtsp://admin:s3cret@cam/\n")
    [error] = load_errors(path)
    assert "s3cret" not in error and "rtsp://admin:***@cam/" in error
