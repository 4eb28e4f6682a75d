"""Durations, sizes and ``${...}`` interpolation."""
from __future__ import annotations

import pytest

from agent.config.units import InterpolationError, interpolate, parse_duration, parse_size


@pytest.mark.parametrize(("value", "seconds"), [
    ("500ms", 0.5), ("1ms", 0.001), ("20s", 20.0), ("1.5s", 1.5), ("5m", 300.0), ("1h", 3600.0),
    ("7d", 604800.0), (" 10s ", 10.0), ("10 s", 10.0), ("0s", 0.0),
    (10, 10.0), (0, 0.0), (2.5, 2.5),
])
def test_parse_duration(value, seconds):
    result = parse_duration(value)
    assert result == pytest.approx(seconds)
    assert isinstance(result, float)


@pytest.mark.parametrize("value", [
    -1, -0.5, "-5s", True, False, None, "fast", "", "20", "20 sec", "20S", "1w", "1e3s", "s",
    "5m30s", [20], {"s": 5}, float("nan"), float("inf"),
])
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_are_finite_and_bounded():
    for bad in ("9" * 310 + "s", 10 ** 400, float("inf"), "101000d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_duration("36500d") == 36500 * 86400.0


@pytest.mark.parametrize(("value", "size"), [
    ("100B", 100), ("100", 100), ("1KiB", 1024), ("500MiB", 500 << 20), ("50GiB", 50 << 30),
    ("2TiB", 2 << 40), ("1.5GiB", 3 << 29), (" 8 MiB ", 8 << 20), (0, 0), (4096, 4096),
])
def test_parse_size(value, size):
    result = parse_size(value)
    assert result == size and isinstance(result, int)


@pytest.mark.parametrize("value", [
    -1, True, None, 1.5, "", "junk", "5MB", "5mib", "5 GB", "-1KiB", "1PiB", "GiB", [1],
])
def test_parse_size_rejects(value):
    with pytest.raises(ValueError):
        parse_size(value)


# -- interpolation ------------------------------------------------------------------

def test_plain_text_is_returned_as_is():
    assert interpolate("rtsp://cam/stream", {}) == "rtsp://cam/stream"
    assert interpolate("costs $5", {}) == "costs $5"


def test_environment_references():
    env = {"USER": "admin", "PW": "hunter22"}
    assert interpolate("rtsp://${USER}:${PW}@cam/", env) == "rtsp://admin:hunter22@cam/"


def test_missing_environment_variable():
    with pytest.raises(InterpolationError) as info:
        interpolate("rtsp://admin:${LOBBY_PASSWORD}@cam/", {})
    assert str(info.value) == "environment variable LOBBY_PASSWORD is not set"


def test_empty_value_is_allowed():
    assert interpolate("a${EMPTY}b", {"EMPTY": ""}) == "ab"


def test_double_dollar_brace_is_a_literal():
    assert interpolate("$${PW}", {}) == "${PW}"
    assert interpolate("x $${A} ${A}", {"A": "1"}) == "x ${A} 1"


def test_substituted_values_are_not_interpolated_again():
    assert interpolate("${A}", {"A": "${B}", "B": "no"}) == "${B}"


@pytest.mark.parametrize(("text", "ref"), [("${}", ""), ("${1PW}", "1PW"), ("${A-B}", "A-B"),
                                           ("${env:PW}", "env:PW")])
def test_bad_references(text, ref):
    with pytest.raises(InterpolationError) as info:
        interpolate(text, {"PW": "x"})
    assert str(info.value) == f"bad reference ${{{ref}}}: expected ${{NAME}} or ${{file:/path}}"


def test_secrets_collect_substituted_values():
    secrets: set[str] = set()
    interpolate("${USER}:${PW}:${PIN}", {"USER": "admin", "PW": "hunter22", "PIN": "12"}, secrets)
    # Values shorter than 3 characters would redact half the text: they are not collected.
    assert secrets == {"admin", "hunter22"}


def test_secret_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("p@ss word\r\n\n")
    secrets: set[str] = set()
    assert interpolate(f"${{file:{secret}}}", {}, secrets) == "p@ss word"
    assert secrets == {"p@ss word"}


def test_secret_file_keeps_inner_and_leading_whitespace(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(" two\nlines\n")
    assert interpolate(f"${{file:{secret}}}", {}) == " two\nlines"


def test_secret_file_errors(tmp_path):
    with pytest.raises(InterpolationError) as info:
        interpolate("${file:pw.txt}", {})
    assert str(info.value) == "secret file path must be absolute, got 'pw.txt'"
    with pytest.raises(InterpolationError) as info:
        interpolate(f"${{file:{tmp_path}/nope}}", {})
    assert str(info.value) == f"cannot read secret file {tmp_path}/nope: No such file or directory"
    with pytest.raises(InterpolationError) as info:
        interpolate(f"${{file:{tmp_path}}}", {})
    assert str(info.value) == f"secret file {tmp_path} is not a regular file"


def test_unclosed_reference_is_an_error_not_literal_text():
    with pytest.raises(InterpolationError, match=r"unclosed \$\{"):
        interpolate("rtsp://admin:${PW@cam/", {"PW": "x"})


def test_braces_in_values_are_escaped_for_templates():
    assert interpolate("Basic ${PW}", {"PW": "s3cr}e{t"}, template=True) == "Basic s3cr}}e{{t"
