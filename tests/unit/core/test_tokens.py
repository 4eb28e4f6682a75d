"""The tokens file parser, pure: what each bad line says, and that it never echoes the line."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent import tokens

PATH = Path("/etc/vas/tokens")
SECRET = "Zz9-pasted-token-value"


def good(name: str, scope: str = "admin") -> bytes:
    return f"{name} {scope} {hashlib.sha256(name.encode()).hexdigest()}".encode()


def test_bad_lines_are_dropped_one_by_one_and_the_rest_applies():
    data = b"\n".join([b"# comment", good("a"), b"\xff\xfe " + SECRET.encode(), f"b admin {SECRET}".encode(),
                       good("c", "heartbeat"), f"d root {'0' * 64}".encode(), good("a"), b"e admin", b"", b"  "])
    loaded = tokens._parse(PATH, data)
    assert [t.name for t in loaded.tokens] == ["a", "c"] and not loaded.refused
    assert [p.split(": ", 1)[0] for p in loaded.problems] == [f"{PATH}:{n}" for n in (3, 4, 6, 7, 8)]
    assert "not ASCII text at column 1" in loaded.problems[0]
    assert "not a SHA-256 hex digest" in loaded.problems[1]
    assert "unknown SCOPE" in loaded.problems[2] and "the name of line 2 again" in loaded.problems[3]
    assert "2 fields, expected 3" in loaded.problems[4]
    assert not any(SECRET in p or "root" in p for p in loaded.problems)  # never a byte of the line


def stat_of(mode: int, uid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 1, 1, 1, uid, 0, 10, 0, 0, 0))


@pytest.mark.parametrize(("mode", "who"), [(0o100666, "group and others"), (0o100660, "group"),
                                           (0o100602, "others")])
def test_a_file_others_may_write_is_refused(mode, who):
    reason = tokens.unsafe_reason(stat_of(mode), PATH)
    assert reason and f"writable by {who}" in reason and "chmod 640" in reason


def test_safe_files_and_unsafe_kinds():
    assert tokens.unsafe_reason(stat_of(0o100640), PATH) is None
    assert tokens.unsafe_reason(stat_of(0o100600, uid=os.geteuid()), PATH) is None
    assert "not a regular file" in (tokens.unsafe_reason(stat_of(0o040750), PATH) or "")
    if os.geteuid() != 4242:
        assert "owned by uid 4242" in (tokens.unsafe_reason(stat_of(0o100640, uid=4242), PATH) or "")


def test_digest_is_total():
    assert len(tokens.digest("\udcff\udcfe")) == 64  # lone surrogates (undecodable header bytes) hash too
