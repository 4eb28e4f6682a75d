"""Pure pieces of issue 18's operator items: the unit's environment file as systemd reads it,
the ${file:} secrets of a document, sizes for people, CPU between two samples."""
from __future__ import annotations

import pytest

from agent.service_check import parse_environment, secret_files
from agent.usage import cpu_percent, human_bytes


def test_environment_file_lines_as_systemd_reads_them():
    text = "# comment\n; also a comment\n\nA=1\n B = two words \nC='single quoted'\nD=\"dq \\\"x\\\"\"\nnot a line\n" \
           "1BAD=x\nE=\n"
    assert parse_environment(text) == {"A": "1", "B": "two words", "C": "single quoted", "D": 'dq "x"', "E": ""}


def test_secret_files_with_their_key_paths():
    doc = {"streams": {"cam": {"url": "rtsp://u:${file:/s/a}@h/x", "command": ["ffmpeg", "-i", "${file:/s/b}"]},
                       "lit": {"url": "rtsp://u:$${file:/not/a/ref}@h"}}}
    assert list(secret_files(doc)) == [(("streams", "cam", "url"), "/s/a"), (("streams", "cam", "command", 2), "/s/b")]


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 512, 512_000, 1536 * 1024, 12 * 2**30, 2**50 * 3000)] == \
        ["0B", "512B", "500KiB", "1.5MiB", "12GiB", "3000PiB"]


def test_cpu_percent_between_samples_of_one_process():
    assert cpu_percent((7, 1.0, 10.0, 100.0), (7, 1.0, 10.37, 101.0)) == pytest.approx(37.0)
    assert cpu_percent((7, 1.0, 10.0, 100.0), (7, 2.0, 10.5, 101.0)) is None  # PID reused: another process
