"""bench/heap_census.py on a real process: it finds the chunks a Python child made, by kind,
and the free ones its thread keeps cached, with that thread's cache's own count."""
from __future__ import annotations

import collections
import subprocess
import sys

import pytest

from bench.heap_census import census

pytestmark = pytest.mark.integration

CHILD = """
import sys
from array import array
kept = [bytes(20_000) for _ in range(300)]                     # 20 KiB objects: malloc's
times = [array("d", [1.79e9 + i] * 2_000) for i in range(50)]  # 16 KiB of Unix times each
cached = [bytes(600) for _ in range(7)]                         # freed into the thread's cache
del cached
print("ready", flush=True)
sys.stdin.read()
"""


def test_the_census_finds_a_childs_objects_and_buffers_by_kind():
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        heaps = census(child.pid)
    finally:
        child.kill()
        child.wait(10)
    assert heaps and heaps[0].name == "main heap"
    counts = sum((h.counts for h in heaps), start=collections.Counter())
    assert counts[("bytes", 19)] >= 300
    assert counts[("buffer:epoch-doubles", 15)] >= 50
    assert sum(h.cached for h in heaps) >= 7 * 640  # 633-byte objects: 640-byte chunks
    # The main thread's cache's own bookkeeping is found, and says it holds those seven at least.
    assert max(held for h in heaps for held in h.caches) >= 7 * 640
    for h in heaps:
        assert h.in_use >= sum(h.kinds.values()) and h.top > 0
