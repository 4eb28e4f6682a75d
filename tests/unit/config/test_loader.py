"""streams.yaml validation: exact ``{file}:{line}: {key.path}: {message}`` errors and merging."""
from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from agent.config import loader, yamlsrc
from agent.config import model as config
from agent.config.loader import load, runtime_dir_of
from agent.config.model import ConfigError, RestartPolicy
from agent.config.units import SECRET_FILE_MAX

ENV = {"LOBBY_PASSWORD": "hunter22"}

#: A realistic file; line 14 is the bad ``stall_timeout`` the example error names.
EXAMPLE = """\
version: 1
node:
  runtime_dir: /run/vas
  ffmpeg: /usr/bin/ffmpeg
recordings:
  root: /var/lib/vas/recordings
defaults:
  restart:
    max_delay: 2m
streams:
  lobby:
    name: Lobby
    url: rtsp://admin:${LOBBY_PASSWORD}@10.0.0.5/stream1
    stall_timeout: fast
"""


def write(tmp_path: Path, text: str, name: str = "streams.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def errors(path: Path, env: dict[str, str] | None = None) -> list[str]:
    """The error lines of loading ``path``; fails the test if it loads."""
    with pytest.raises(ConfigError) as info:
        load(path, ENV if env is None else env)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def one_stream(tmp_path: Path, body: str, *, defaults: str = "") -> Path:
    """A file with one stream ``lobby`` whose settings (indented 4) are ``body``."""
    text = "version: 1\n"
    if defaults:
        text += "defaults:\n" + textwrap.indent(textwrap.dedent(defaults), "  ")
    text += "streams:\n  lobby:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    return write(tmp_path, text)


def load_errors(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path, env or {})
    return info.value.errors


def lobby(tmp_path: Path, body: str, **kw) -> config.StreamConfig:
    return load(one_stream(tmp_path, body, **kw), ENV).streams["lobby"]


# -- the documented example and a valid file ------------------------------------

def test_example_error_names_file_line_key_and_value(tmp_path):
    path = write(tmp_path, EXAMPLE)
    assert errors(path) == [
        f"{path}:14: streams.lobby.stall_timeout: expected a duration like 20s, got 'fast'"]


def test_valid_file_loads_every_setting(tmp_path):
    path = write(tmp_path, EXAMPLE.replace("stall_timeout: fast", "stall_timeout: 30s"))
    cfg = load(path, ENV)
    assert cfg.path == path.absolute()
    assert cfg.node == config.NodeConfig(runtime_dir=Path("/run/vas"), ffmpeg="/usr/bin/ffmpeg")
    assert cfg.recordings_root == Path("/var/lib/vas/recordings")
    assert list(cfg.streams) == ["lobby"]
    s = cfg.streams["lobby"]
    assert s.id == "lobby" and s.name == "Lobby" and s.enabled
    assert s.url == "rtsp://admin:hunter22@10.0.0.5/stream1"
    assert s.stall_timeout == 30.0
    assert s.restart == RestartPolicy(max_delay=120.0)
    assert s.recording == config.RecordingConfig()
    assert len(cfg.sha256) == 64


def test_name_defaults_to_the_stream_id(tmp_path):
    assert lobby(tmp_path, "url: rtsp://cam/").name == "lobby"


def test_enabled_false_parses(tmp_path):
    s = lobby(tmp_path, "url: rtsp://cam/\nenabled: false\n")
    assert s.enabled is False


def test_unreadable_config_file(tmp_path):
    path = tmp_path / "missing.yaml"
    assert errors(path) == [f"{path}: cannot read: No such file or directory"]


# -- YAML-level problems ------------------------------------------------------

@pytest.mark.parametrize(("text", "line", "problem"), [
    ("version: 1\nstreams:\n  lobby:\n    url: rtsp://h/\n   stall_timeout: 5s\n", 5,
     "did not find expected key"),
    ("version: 1\nstreams:\n\tlobby: {}\n", 3, "found character that cannot start any token"),
    ("version: 1\nstreams:\n  lobby:\n    url: rtsp://h/\n    input_args: [a, b\n    name: x\n", 6,
     "did not find expected ',' or ']'"),
])
def test_invalid_yaml_reports_the_line(tmp_path, text, line, problem):
    path = write(tmp_path, text)
    assert errors(path) == [f"{path}:{line}: invalid YAML: {problem}"]


def test_duplicate_key_is_an_error_on_the_second_key(tmp_path):
    path = one_stream(tmp_path, "url: rtsp://a/\nname: x\nurl: rtsp://b/\n")
    assert errors(path) == [f"{path}:6: streams.lobby.url: duplicate key"]


def test_empty_file_reports_missing_keys_with_a_real_line(tmp_path):
    # An empty document has no line marks; the messages must still be well formed.
    for text in ("", "# nothing yet\n"):
        path = write(tmp_path, text)
        assert errors(path) == [
            f"{path}:1: version: required key is missing (write 'version: 1')",
            f"{path}:1: streams: required key is missing (a mapping of stream id to settings)",
        ]


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    assert errors(path) == [
        f"{path}:1: (top level): expected a mapping, got ['a', 'b']",
        f"{path}:1: version: required key is missing (write 'version: 1')",
        f"{path}:1: streams: required key is missing (a mapping of stream id to settings)",
    ]


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


def test_an_alias_bomb_stops_within_a_fixed_budget(tmp_path):
    path = tmp_path / "streams.yaml"
    path.write_text(ALIAS_BOMB + "version: 1\nstreams: {}\n")  # 9^9 values if expanded
    started = time.process_time()  # CPU time: the parse alone, not the other processes sharing the cores
    [error] = load_errors(path)
    assert "alias bomb" in error
    assert time.process_time() - started < 10  # a generous bound: it used to run for minutes


def test_an_oversized_file_is_refused(tmp_path):
    path = tmp_path / "streams.yaml"
    path.write_bytes(b"version: 1\n#" + b"x" * yamlsrc.MAX_DOCUMENT_BYTES + b"\n")
    assert load_errors(path) == [f"{path}: file is larger than 16 MiB"]


def test_a_fifo_as_config_fails_at_once(tmp_path):
    fifo = tmp_path / "streams.yaml"
    os.mkfifo(fifo)
    assert load_errors(fifo) == [f"{fifo}: cannot read: not a regular file"]


# -- version -------------------------------------------------------------------

def test_version_missing(tmp_path):
    path = write(tmp_path, "streams: {}\n")
    assert errors(path) == [f"{path}:1: version: required key is missing (write 'version: 1')"]


@pytest.mark.parametrize(("value", "shown"), [("2", "2"), ("'1'", "'1'"), ("v1", "'v1'"),
                                              ("true", "True")])
def test_version_wrong(tmp_path, value, shown):
    path = write(tmp_path, f"version: {value}\nstreams: {{}}\n")
    assert errors(path) == [f"{path}:1: version: expected 1, got {shown}"]


# -- unknown keys, at every level -------------------------------------------------

@pytest.mark.parametrize(("text", "line", "key", "hint"), [
    ("verison: 1\nversion: 1\nstreams: {}\n", 1, "verison", "version"),
    ("version: 1\nnode:\n  runtimedir: /x\nstreams: {}\n", 3, "node.runtimedir", "runtime_dir"),
    ("version: 1\nrecordings:\n  rot: /x\nstreams: {}\n", 3, "recordings.rot", "root"),
    ("version: 1\ndefaults:\n  stall_timout: 5s\nstreams: {}\n", 3, "defaults.stall_timout",
     "stall_timeout"),
    ("version: 1\ndefaults:\n  restart:\n    max_dealy: 5s\nstreams:\n  lobby: {url: rtsp://h/}\n",
     4, "defaults.restart.max_dealy", "max_delay"),
    ("version: 1\ndefaults:\n  recording:\n    retension: 1d\nstreams:\n  lobby: {url: rtsp://h/}\n",
     4, "defaults.recording.retension", "retention"),
    ("version: 1\nstreams:\n  lobby:\n    url: rtsp://h/\n    ulr: rtsp://h/\n", 5,
     "streams.lobby.ulr", "url"),
    ("version: 1\nstreams:\n  lobby:\n    url: rtsp://h/\n    restart:\n      multiplyer: 3\n", 6,
     "streams.lobby.restart.multiplyer", "multiplier"),
    ("version: 1\nstreams:\n  lobby:\n    url: rtsp://h/\n    recording:\n      enable: false\n", 6,
     "streams.lobby.recording.enable", "enabled"),
])
def test_unknown_key_with_did_you_mean(tmp_path, text, line, key, hint):
    path = write(tmp_path, text)
    assert errors(path) == [f"{path}:{line}: {key}: unknown key (did you mean '{hint}'?)"]


def test_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path):
    path = one_stream(tmp_path, "url: rtsp://h/\nrestart:\n  zzz: 1\n")
    assert errors(path) == [
        f"{path}:6: streams.lobby.restart.zzz: unknown key; "
        "allowed: initial_delay, jitter, max_delay, multiplier, stable_after"]


def test_url_is_not_allowed_under_defaults(tmp_path):
    path = write(tmp_path, "version: 1\ndefaults:\n  url: rtsp://h/\nstreams: {}\n")
    [err] = errors(path)
    assert err.startswith(f"{path}:3: defaults.url: unknown key")


# -- wrong types ------------------------------------------------------------------

@pytest.mark.parametrize(("body", "line", "key", "message"), [
    ("input_args: -fflags nobuffer\n", 5, "input_args",
     "expected a list of strings, got '-fflags nobuffer'"),
    ("input_args: [-analyzeduration, 5]\n", 5, "input_args.1", "expected a string, got 5"),
    ("stall_timeout: true\n", 5, "stall_timeout", "expected a duration like 20s, got True"),
    ("stall_timeout: -5\n", 5, "stall_timeout", "expected a duration like 20s, got -5"),
    ("stall_timeout: [20s]\n", 5, "stall_timeout", "expected a duration like 20s, got ['20s']"),
    ("stop_timeout: 0s\n", 5, "stop_timeout", "must be greater than 0, got '0s'"),
    ("enabled: 'no'\n", 5, "enabled", "expected true or false, got 'no'"),
    ("name: 7\n", 5, "name", "expected a string, got 7"),
    ("rtsp_transport: quic\n", 5, "rtsp_transport",
     "expected one of tcp, udp, udp_multicast, http, https, got 'quic'"),
    ("restart: 5s\n", 5, "restart", "expected a mapping, got '5s'"),
    ("recording: false\n", 5, "recording", "expected a mapping, got False"),
    ("recording:\n  enabled: 1\n", 6, "recording.enabled", "expected true or false, got 1"),
    ("recording:\n  segment_duration: 0\n", 6, "recording.segment_duration",
     "must be greater than 0, got 0"),
    ("recording:\n  retention: forever\n", 6, "recording.retention",
     "expected a duration like 20s, got 'forever'"),
])
def test_wrong_type_in_a_stream(tmp_path, body, line, key, message):
    path = one_stream(tmp_path, "url: rtsp://h/\n" + body)
    assert errors(path) == [f"{path}:{line}: streams.lobby.{key}: {message}"]


@pytest.mark.parametrize(("text", "line", "key", "message"), [
    ("version: 1\nstreams: [lobby]\n", 2, "streams",
     "expected a mapping of stream id to settings, got ['lobby']"),
    ("version: 1\nrecordings: /srv\nstreams: {}\n", 2, "recordings", "expected a mapping, got '/srv'"),
    ("version: 1\nrecordings:\n  root: ''\nstreams: {}\n", 3, "recordings.root",
     "expected a directory path, got ''"),
    ("version: 1\nnode:\n  ffmpeg: 5\nstreams: {}\n", 3, "node.ffmpeg", "expected a string, got 5"),
    ("version: 1\nnode:\n  runtime_dir: [/run/vas]\nstreams: {}\n", 3, "node.runtime_dir",
     "expected a string, got ['/run/vas']"),
    ("version: 1\nstreams:\n  lobby: 5\n", 3, "streams.lobby", "expected a mapping, got 5"),
])
def test_wrong_type_outside_streams(tmp_path, text, line, key, message):
    path = write(tmp_path, text)
    assert f"{path}:{line}: {key}: {message}" in errors(path)


@pytest.mark.parametrize("body,key", [
    ('url: "rtsp://h/a\\0b"', "streams.lobby.url"),
    ('url: rtsp://h/\ninput_args: ["-x\\0"]', "streams.lobby.input_args.0"),
    ('command: [ffmpeg, "-progress", "{progress}", "a\\0b"]', "streams.lobby.command.3"),
])
def test_nul_bytes_are_refused(tmp_path, body, key):
    [error] = load_errors(one_stream(tmp_path, body + "\n"))
    assert f"{key}: contains a NUL byte" in error


# -- stream ids -------------------------------------------------------------------

@pytest.mark.parametrize("sid", ["Lobby", "lobby cam", "a" * 65, "-lobby", "_lobby", "cam.1",
                                 "cam/1", "", "cam1\n"])
def test_bad_stream_id(tmp_path, sid):
    quoted = '"' + sid.replace("\n", "\\n") + '"'
    path = write(tmp_path, f"version: 1\nstreams:\n  {quoted}:\n    url: rtsp://h/\n")
    shown = repr(sid) if len(repr(sid)) <= 60 else repr(sid)[:57] + "..."  # values are shortened
    assert errors(path) == [
        f"{path}:3: streams.{sid}: stream id must match ^[a-z0-9][a-z0-9_-]{{0,63}}$, got {shown}"]


def test_integer_stream_id_is_rejected(tmp_path):
    path = write(tmp_path, "version: 1\nstreams:\n  12:\n    url: rtsp://h/\n")
    assert errors(path) == [
        f"{path}:3: streams.12: stream id must match ^[a-z0-9][a-z0-9_-]{{0,63}}$, got 12 (quote it: '...')"]


@pytest.mark.parametrize("sid", ["a", "cam1", "lobby-east_2", "0", "a" * 64])
def test_good_stream_id(tmp_path, sid):
    path = write(tmp_path, f"version: 1\nstreams:\n  '{sid}':\n    url: rtsp://h/\n")
    assert list(load(path, ENV).streams) == [sid]


# -- url ----------------------------------------------------------------------------

def test_missing_url(tmp_path):
    path = one_stream(tmp_path, "name: Lobby\n")
    assert errors(path) == [
        f"{path}:3: streams.lobby.url: required key is missing (the camera's rtsp:// URL)"]


def test_stream_without_settings_misses_its_url(tmp_path):
    path = write(tmp_path, "version: 1\nstreams:\n  lobby:\n")
    assert errors(path) == [
        f"{path}:3: streams.lobby.url: required key is missing (the camera's rtsp:// URL)"]


def test_non_rtsp_url_is_rejected_with_the_password_redacted(tmp_path):
    path = one_stream(tmp_path, "url: http://admin:${LOBBY_PASSWORD}@10.0.0.5/video\n")
    errs = errors(path)
    assert errs == [f"{path}:4: streams.lobby.url: expected an rtsp:// or rtsps:// URL, "
                    "got 'http://admin:***@10.0.0.5/video'"]
    assert "hunter22" not in "\n".join(errs)


def test_literal_password_in_non_rtsp_url_is_redacted(tmp_path):
    path = one_stream(tmp_path, "url: https://root:topsecret@cam/\n")
    errs = errors(path)
    assert errs == [f"{path}:4: streams.lobby.url: expected an rtsp:// or rtsps:// URL, "
                    "got 'https://root:***@cam/'"]


@pytest.mark.parametrize("text", [
    "version: 1\nstreams:\n  lobby: rtsp://admin:topsecret@10.0.0.5/stream1\n",
    "version: 1\nstreams:\n  lobby:\n    url: [rtsp://admin:topsecret@10.0.0.5/stream1]\n",
])
def test_a_misplaced_url_never_shows_its_password_in_errors(tmp_path, text):
    # Operators write `lobby: rtsp://...` or a one-item list by mistake; the error
    # quotes the value, and credentials must never reach logs or vasctl output.
    path = write(tmp_path, text)
    errs = errors(path)
    assert errs and "topsecret" not in "\n".join(errs)


def test_rtsps_url_is_accepted(tmp_path):
    assert lobby(tmp_path, "url: rtsps://cam:322/s\n").url == "rtsps://cam:322/s"


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


# -- interpolation and secrets ------------------------------------------------------

def test_missing_environment_variable(tmp_path):
    path = write(tmp_path, EXAMPLE.replace("stall_timeout: fast", "stall_timeout: 5s"))
    assert errors(path, env={}) == [
        f"{path}:13: streams.lobby.url: environment variable LOBBY_PASSWORD is not set"]


def test_secrets_collect_interpolated_url_values(tmp_path):
    path = write(tmp_path, EXAMPLE.replace("stall_timeout: fast", "stall_timeout: 5s"))
    cfg = load(path, {"LOBBY_PASSWORD": "hunter22", "UNUSED": "nope"})
    assert cfg.secrets == frozenset({"hunter22"})


def test_dollar_dollar_brace_is_a_literal(tmp_path):
    s = lobby(tmp_path, "url: rtsp://cam/$${x}\nname: costs $${AMOUNT}\n")
    assert s.url == "rtsp://cam/${x}"
    assert s.name == "costs ${AMOUNT}"


def test_bad_reference(tmp_path):
    path = one_stream(tmp_path, "url: rtsp://admin:${1PW}@cam/\n")
    assert errors(path) == [
        f"{path}:4: streams.lobby.url: bad reference ${{1PW}}: expected ${{NAME}} or ${{file:/path}}"]


def test_secret_file_strips_the_trailing_newline(tmp_path):
    secret = tmp_path / "lobby.pw"
    secret.write_text("s3cr:et\n")
    cfg = load(one_stream(tmp_path, f"url: rtsp://admin:${{file:{secret}}}@cam/\n"), ENV)
    assert cfg.streams["lobby"].url == "rtsp://admin:s3cr:et@cam/"
    assert cfg.secrets == frozenset({"s3cr:et"})


def test_missing_secret_file(tmp_path):
    secret = tmp_path / "absent.pw"
    path = one_stream(tmp_path, f"url: rtsp://admin:${{file:{secret}}}@cam/\n")
    assert errors(path) == [
        f"{path}:4: streams.lobby.url: cannot read secret file {secret}: No such file or directory"]


def test_unreadable_secret_file(tmp_path):
    secret = tmp_path / "a-directory"
    secret.mkdir()
    path = one_stream(tmp_path, f"url: rtsp://admin:${{file:{secret}}}@cam/\n")
    assert errors(path) == [
        f"{path}:4: streams.lobby.url: secret file {secret} is not a regular file"]


def test_relative_secret_file_path(tmp_path):
    path = one_stream(tmp_path, "url: rtsp://admin:${file:secrets/lobby.pw}@cam/\n")
    assert errors(path) == [
        f"{path}:4: streams.lobby.url: secret file path must be absolute, got 'secrets/lobby.pw'"]


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


# -- restart policy rules ----------------------------------------------------------

def test_max_delay_below_initial_delay(tmp_path):
    path = one_stream(tmp_path, "url: rtsp://h/\nrestart:\n  initial_delay: 2m\n  max_delay: 30s\n")
    assert errors(path) == [
        f"{path}:7: streams.lobby.restart.max_delay: must be at least initial_delay (120s), got 30s"]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("jitter", "1.5", "expected a number from 0 to 1, got 1.5"),
    ("jitter", "-0.1", "expected a number from 0 to 1, got -0.1"),
    ("jitter", "true", "expected a number from 0 to 1, got True"),
    ("multiplier", "0.5", "expected a number from 1 to 100, got 0.5"),
    ("multiplier", "'2'", "expected a number from 1 to 100, got '2'"),
    ("max_delay", "0", "must be greater than 0, got 0"),
    ("stable_after", "soon", "expected a duration like 20s, got 'soon'"),
])
def test_restart_value_out_of_range(tmp_path, key, value, message):
    path = one_stream(tmp_path, f"url: rtsp://h/\nrestart:\n  {key}: {value}\n")
    assert errors(path) == [f"{path}:6: streams.lobby.restart.{key}: {message}"]


@pytest.mark.parametrize("value", [".nan", ".inf"])
def test_non_finite_durations_are_rejected(tmp_path, value):
    path = one_stream(tmp_path, f"url: rtsp://h/\nrestart:\n  max_delay: {value}\n")
    [err] = errors(path)
    assert err.startswith(f"{path}:6: streams.lobby.restart.max_delay: expected a duration like 20s, got ")


def test_zero_initial_delay_is_rejected(tmp_path):
    # 0 * multiplier**n stays 0: a down camera would be respawned in a hot loop, forever.
    path = one_stream(tmp_path, "url: rtsp://h/\nrestart:\n  initial_delay: 0s\n")
    assert errors(path) == [
        f"{path}:6: streams.lobby.restart.initial_delay: must be greater than 0, got '0s'"]


@pytest.mark.parametrize(("value", "shown"), [("1s", "'1s'"), ("3.9s", "'3.9s'"), ("500ms", "'500ms'"),
                                              ("2", "2")])
def test_stall_timeout_shorter_than_two_progress_periods(tmp_path, value, shown):
    path = one_stream(tmp_path, f"url: rtsp://h/\nstall_timeout: {value}\n")
    assert errors(path) == [
        f"{path}:5: streams.lobby.stall_timeout: must be 0 (off) or at least 4s "
        f"(FFmpeg reports progress every 2s), got {shown}"]


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("0s", 0.0), ("4s", 4.0), ("2m", 120.0)])
def test_stall_timeout_off_or_long_enough(tmp_path, value, seconds):
    assert lobby(tmp_path, f"url: rtsp://h/\nstall_timeout: {value}\n").stall_timeout == seconds
    assert config.MIN_STALL_TIMEOUT == 2 * config.PROGRESS_PERIOD


def test_restart_policy_from_the_file(tmp_path):
    s = lobby(tmp_path, "url: rtsp://h/\nrestart:\n  initial_delay: 500ms\n  multiplier: 1.5\n"
                        "  max_delay: 5m\n  jitter: 0\n  stable_after: 1h\n")
    assert s.restart == RestartPolicy(0.5, 1.5, 300.0, 0.0, 3600.0)


def test_a_400_digit_stall_timeout_is_a_clear_error(tmp_path):
    path = one_stream(tmp_path, "url: rtsp://h/\nstall_timeout: " + "1" * 400 + "\n")
    [error] = load_errors(path)
    assert error.startswith(f"{path}:5: streams.lobby.stall_timeout: must be at most 1d, got 1111")


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


# -- verbatim command ----------------------------------------------------------------

def command_file(tmp_path: Path, *args: str) -> Path:
    items = "".join(f"  - '{a}'\n" for a in args)
    return one_stream(tmp_path, "command:\n" + items)


def test_verbatim_command_needs_no_url(tmp_path):
    path = command_file(tmp_path, "ffmpeg", "-progress", "{progress}", "-i", "{url}", "-f", "null", "-")
    s = load(path, ENV).streams["lobby"]
    assert s.url is None
    assert s.command == ("ffmpeg", "-progress", "{progress}", "-i", "{url}", "-f", "null", "-")


def test_verbatim_command_with_an_unknown_placeholder(tmp_path):
    path = command_file(tmp_path, "ffmpeg", "-progress", "{progress}", "-i", "{camera_url}")
    known = ("{payload_type}, {playlist}, {progress}, {recording_dir}, {rtp_host}, {rtp_port}, {rtp_url}, "
             "{rtsp_transport}, {segment_duration}, {segment_pattern}, {ssrc}, {stream_id}, {url}")
    assert errors(path) == [
        f"{path}:4: streams.lobby.command: unknown placeholder {{camera_url}}; known: {known}"]


def test_verbatim_command_without_progress_is_a_black_box(tmp_path):
    # Runs exactly as written; readiness then comes from uptime or recording growth.
    path = command_file(tmp_path, "ffmpeg", "-i", "{url}", "-f", "null", "-")
    stream = load(path, ENV).streams["lobby"]
    assert not stream.reports_progress and not stream.sends_rtp and stream.ready_after == 5.0


def test_verbatim_command_with_an_unbalanced_brace(tmp_path):
    path = command_file(tmp_path, "ffmpeg", "-progress", "{progress}", "-vf", "x={")
    [err] = errors(path)
    assert err.startswith(f"{path}:9: streams.lobby.command.4: bad placeholder in 'x={{': ")
    assert err.endswith("(write {{ for a literal brace)")


@pytest.mark.parametrize("arg", ["{url!x}", "{url!r}", "{url:d}", "{url:{url}}", "{url:>99}"])
def test_placeholders_take_no_conversion_or_format_spec(tmp_path, arg):
    command = f'[ffmpeg, -i, "{arg}", -progress, "{{progress}}", out.ts]'
    path = one_stream(tmp_path, f"url: rtsp://h/\ncommand: {command}\n")
    [error] = load_errors(path)
    assert "streams.lobby.command.2: placeholders take no conversion or format spec" in error


# -- defaults ----------------------------------------------------------------------

def test_defaults_merge_nested_maps_key_by_key(tmp_path):
    s = lobby(tmp_path, "url: rtsp://h/\nrestart:\n  multiplier: 3\n",
              defaults="stall_timeout: 45s\nrestart:\n  max_delay: 5m\n  jitter: 0.1\n"
                       "recording:\n  retention: 30d\n")
    assert s.restart == RestartPolicy(initial_delay=1.0, multiplier=3.0, max_delay=300.0,
                                      jitter=0.1, stable_after=60.0)
    assert s.stall_timeout == 45.0
    assert s.recording == config.RecordingConfig(enabled=True, segment_duration=10.0,
                                                 retention=30 * 86400.0)


def test_stream_values_win_over_defaults(tmp_path):
    s = lobby(tmp_path, "url: rtsp://h/\nstall_timeout: 10s\nenabled: false\ninput_args: [-re]\n"
                        "restart:\n  max_delay: 30s\nrecording:\n  enabled: false\n",
              defaults="stall_timeout: 45s\nenabled: true\ninput_args: [-fflags, nobuffer]\n"
                       "restart:\n  max_delay: 5m\nrecording:\n  enabled: true\n  segment_duration: 4s\n")
    assert s.stall_timeout == 10.0 and s.enabled is False and s.input_args == ("-re",)
    assert s.restart.max_delay == 30.0
    assert s.recording == config.RecordingConfig(enabled=False, segment_duration=4.0)


def test_a_bad_default_is_reported_once_however_many_streams_use_it(tmp_path):
    path = write(tmp_path, """\
        version: 1
        defaults:
          stall_timeout: fast
        streams:
          a: {url: rtsp://h/a}
          b: {url: rtsp://h/b}
          c: {url: rtsp://h/c}
        """)
    assert errors(path) == [f"{path}:3: defaults.stall_timeout: expected a duration like 20s, got 'fast'"]


def test_a_bad_nested_default_is_reported_once(tmp_path):
    path = write(tmp_path, """\
        version: 1
        defaults:
          restart:
            bogus: 1
        streams:
          a: {url: rtsp://h/a}
          b: {url: rtsp://h/b}
        """)
    assert errors(path) == [f"{path}:4: defaults.restart.bogus: unknown key; "
                            "allowed: initial_delay, jitter, max_delay, multiplier, stable_after"]


def test_a_bad_default_is_reported_even_when_no_stream_uses_it(tmp_path):
    # "Validate the whole new file first": an unused default is still a typo.
    path = write(tmp_path, """\
        version: 1
        defaults:
          stall_timeout: fast
        streams:
          a: {url: rtsp://h/a, stall_timeout: 5s}
        """)
    assert errors(path) == [f"{path}:3: defaults.stall_timeout: expected a duration like 20s, got 'fast'"]


# -- paths ----------------------------------------------------------------------------

def test_relative_paths_resolve_against_the_config_directory(tmp_path):
    conf_dir = tmp_path / "etc" / "vas"
    conf_dir.mkdir(parents=True)
    path = write(conf_dir, "version: 1\nnode:\n  runtime_dir: ../../run\nrecordings:\n  root: rec\n"
                           "streams: {}\n")
    cfg = load(path, ENV)
    assert cfg.node.runtime_dir == (tmp_path / "run").resolve()
    assert cfg.recordings_root == (conf_dir / "rec").resolve()


def test_path_defaults(tmp_path):
    cfg = load(write(tmp_path, "version: 1\nstreams: {}\n"), ENV)
    assert cfg.node == config.NodeConfig(runtime_dir=Path("/run/vas"), ffmpeg="ffmpeg")
    assert cfg.recordings_root == Path("/var/lib/vas/recordings")
    assert cfg.streams == {}


# -- many errors at once --------------------------------------------------------------

def test_every_error_is_reported_in_one_config_error(tmp_path):
    path = write(tmp_path, """\
        version: 2
        node:
          ffmpge: /usr/bin/ffmpeg
        streams:
          lobby:
            url: rtsp://h/
            stall_timeout: fast
          Garage:
            url: rtsp://h/
          yard:
            name: Yard
        """)
    assert errors(path) == [
        f"{path}:1: version: expected 1, got 2",
        f"{path}:3: node.ffmpge: unknown key (did you mean 'ffmpeg'?)",
        f"{path}:7: streams.lobby.stall_timeout: expected a duration like 20s, got 'fast'",
        f"{path}:8: streams.Garage: stream id must match ^[a-z0-9][a-z0-9_-]{{0,63}}$, got 'Garage'",
        f"{path}:10: streams.yard.url: required key is missing (the camera's rtsp:// URL)",
    ]


@pytest.mark.slow
def test_twenty_thousand_errors_are_reported_in_linear_time(tmp_path):
    streams = "".join(f"  s{i}: {{url: rtsp://h/, stall_timeout: bad}}\n" for i in range(20_000))
    path = tmp_path / "streams.yaml"
    path.write_text("version: 1\nstreams:\n" + streams)
    started = time.process_time()  # CPU time: the parse alone, not the other processes sharing the cores
    errors = load_errors(path)
    assert len(errors) == 20_000
    assert errors[-1] == f"{path}:20002: streams.s19999.stall_timeout: expected a duration like 20s, got 'bad'"
    assert time.process_time() - started < 8  # quadratic line lookup took 12.8 s


# -- runtime_dir_of (vasctl) ----------------------------------------------------------

def test_runtime_dir_of_absolute(tmp_path):
    path = write(tmp_path, "version: 1\nnode:\n  runtime_dir: /run/vas-test\nstreams:\n"
                           "  lobby: {url: 'rtsp://admin:${NOT_SET}@h/'}\n")
    assert runtime_dir_of(path) == Path("/run/vas-test")


def test_runtime_dir_of_relative_matches_load(tmp_path):
    path = write(tmp_path, "version: 1\nnode:\n  runtime_dir: state/../run\nstreams: {}\n")
    assert runtime_dir_of(path) == (tmp_path / "run").resolve() == load(path, ENV).node.runtime_dir


@pytest.mark.parametrize("text", ["version: 1\nstreams: {}\n", "node: 5\n", "- a\n", ""])
def test_runtime_dir_of_default(tmp_path, text):
    assert runtime_dir_of(write(tmp_path, text)) == Path("/run/vas")


def test_runtime_dir_of_refuses_interpolation(tmp_path):
    path = write(tmp_path, "node:\n  runtime_dir: ${RUNTIME_DIRECTORY}\n")
    with pytest.raises(ValueError) as info:
        runtime_dir_of(path)
    assert str(info.value) == (f"{path}: node.runtime_dir must be a plain path for vasctl; "
                               "pass --socket PATH")


def test_runtime_dir_of_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ValueError) as info:
        runtime_dir_of(path)
    assert str(info.value) == (f"cannot read {path}: No such file or directory; "
                               "pass --config FILE or --socket PATH")


def test_runtime_dir_of_invalid_yaml(tmp_path):
    path = write(tmp_path, "node:\n  runtime_dir: /run/vas\n x: [\n")
    with pytest.raises(ValueError) as info:
        runtime_dir_of(path)
    assert str(info.value).startswith(f"{path}:3: invalid YAML: ")


def test_a_secret_with_braces_works_in_a_command_and_never_shows_in_errors(tmp_path):
    from agent.supervise.ffmpeg import Launch, build_argv
    env = {"PW": "s3cr}e{t"}
    body = 'command: [ffmpeg, -headers, "Authorization: Basic ${PW}", -progress, "{progress}"]\n'
    s = load(one_stream(tmp_path, body), env).streams["lobby"]
    argv = build_argv(s, Launch(tmp_path / "lobby", "S"))
    assert argv[2] == "Authorization: Basic s3cr}e{t" and argv[-1] == "pipe:1"
    bad = one_stream(tmp_path, body.replace('"{progress}"]', '"{progress}", "{oops}"]'))
    (err,) = errors(bad, env)
    assert "s3cr}e{t" not in err and "unknown placeholder {oops}" in err


@pytest.mark.parametrize("text,expected,how", [
    ("node:\n  runtime_dir: /run/vas-x\n x: [\n", "/run/vas-x", "from line 2"),
    ("node:\n  runtime_dir: '/run/vas-q'  # quoted\nstreams: [\n", "/run/vas-q", "from line 2"),
    ("streams:\n  a: {url: [\n", "/run/vas", "the default runtime_dir"),
])
def test_vasctl_finds_the_runtime_dir_of_a_broken_file(tmp_path, text, expected, how):
    path = write(tmp_path, text)
    found, note = loader.runtime_dir_for_vasctl(path)
    assert found == Path(expected) and note.startswith(f"{path}:") and how in note


def test_vasctl_uses_a_valid_file_without_a_note(tmp_path):
    path = write(tmp_path, "version: 1\nnode:\n  runtime_dir: /run/vas-ok\nstreams: {}\n")
    assert loader.runtime_dir_for_vasctl(path) == (Path("/run/vas-ok"), None)
