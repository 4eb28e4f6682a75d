"""Files written into directories, by inotify: what counts, directories that went away, one
directory watched twice."""
from __future__ import annotations

import errno
import os

import pytest

from agent.supervise.dir_writes import DirWrites


@pytest.fixture
def writes():
    made = DirWrites()
    yield made
    os.close(made.fd)


def test_files_made_count_and_deletions_and_new_folders_do_not(tmp_path, writes):
    old, other = tmp_path / "old.ts", tmp_path / "other"
    old.write_bytes(b"x")
    other.mkdir()
    wd, wd_other = writes.watch(tmp_path), writes.watch(other)
    assert writes.take(wd) is None
    old.unlink()  # retention deleting footage
    (tmp_path / "sub").mkdir()
    os.utime(tmp_path / "sub")
    assert writes.take(wd) is None
    with open(tmp_path / "seg.ts.tmp", "ab") as f:  # a segment being written: named once made
        assert writes.take(wd) == "seg.ts.tmp"
        for _ in range(1000):  # its writes bring no event each (the caller looks at its mtime)
            f.write(b"x")
            f.flush()
        assert writes.take(wd) is None
    assert writes.take(wd) == "seg.ts.tmp"  # closed after writing
    assert writes.take(wd_other) is None  # each directory its own
    (tmp_path / "seg.ts.tmp").rename(tmp_path / "seg.ts")  # moved in: the last name made counts
    (tmp_path / "next.ts.tmp").touch()
    assert writes.take(wd) == "next.ts.tmp" and writes.take(wd) is None
    os.utime(tmp_path / "seg.ts")
    assert writes.take(wd) is None  # a new mtime alone is no write
    assert not writes.gone(wd)


def test_a_removed_directory_ends_its_watch_and_a_missing_one_has_none(tmp_path, writes):
    folder = tmp_path / "cam"
    folder.mkdir()
    wd = writes.watch(folder)
    folder.rmdir()
    writes.take(wd)
    assert writes.gone(wd)
    writes.unwatch(wd)
    with pytest.raises(OSError) as raised:
        writes.watch(folder)
    assert raised.value.errno == errno.ENOENT and str(folder) in str(raised.value)


def test_one_directory_watched_twice_is_kept_until_both_let_it_go(tmp_path, writes):
    first, second = writes.watch(tmp_path), writes.watch(tmp_path)
    assert first == second
    writes.unwatch(first)  # the last run's watch let go; the next run's goes on
    (tmp_path / "seg.ts").write_bytes(b"x")
    assert writes.take(second) == "seg.ts"
    writes.unwatch(second)
    (tmp_path / "seg2.ts").write_bytes(b"x")
    assert writes.take(second) is None
