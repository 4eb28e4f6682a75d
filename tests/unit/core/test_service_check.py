"""``--check`` as the service sees it: the unit's environment file as systemd reads it, and the
``${file:}`` secrets of a document with their key paths."""
from __future__ import annotations

from agent.service_check import parse_environment, secret_files


def test_environment_file_lines_as_systemd_reads_them():
    text = "# comment\n; also a comment\n\nA=1\n B = two words \nC='single quoted'\nD=\"dq \\\"x\\\"\"\nnot a line\n" \
           "1BAD=x\nE=\n"
    assert parse_environment(text) == {"A": "1", "B": "two words", "C": "single quoted", "D": 'dq "x"', "E": ""}


def test_secret_files_with_their_key_paths():
    doc = {"streams": {"cam": {"url": "rtsp://u:${file:/s/a}@h/x", "command": ["ffmpeg", "-i", "${file:/s/b}"]},
                       "lit": {"url": "rtsp://u:$${file:/not/a/ref}@h"}}}
    assert list(secret_files(doc)) == [(("streams", "cam", "url"), "/s/a"), (("streams", "cam", "command", 2), "/s/b")]
