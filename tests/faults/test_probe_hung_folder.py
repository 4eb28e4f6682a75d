"""A spawn's codec probe waits for its first segment in a folder whose mount hangs (a real FUSE
mount no server answers, tests/faults/hungfs.py, in a private mount namespace): the event loop
keeps running.  The wait's stat ran on the loop, and the whole agent stopped in the kernel."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                                 reason="needs root and /dev/fuse (a FUSE mount in a private namespace)")]
HUNGFS = Path(__file__).with_name("hungfs.py")
ROOT = Path(__file__).parents[2]
#: Runs inside the namespace: a spawn's probe of its first segment below the hung mount, the loop
#: ticking beside it; prints the ticks seen in WINDOW seconds.
PROGRAM = """
import asyncio, json, sys, time
from pathlib import Path
from agent.config.model import RecordingConfig, StreamConfig
from agent.supervise.ffmpeg import Launch
from agent.supervise.video_probe import probe_spawn

async def main():
    ticks = 0
    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
    ticker = asyncio.ensure_future(tick())
    stream = StreamConfig(id="cam1", url="rtsp://127.0.0.1:9/x", recording=RecordingConfig(segment_duration=1.0))
    launch = Launch(Path(sys.argv[1]) / "cam1", "20261129T000000000Z")
    probe = asyncio.ensure_future(probe_spawn("ffmpeg", stream, launch))
    await asyncio.sleep(1.5)
    print(json.dumps({"ticks": ticks, "probe_done": probe.done()}), flush=True)
    probe.cancel()
    ticker.cancel()

asyncio.run(main())
"""


def test_a_probe_waiting_for_its_segment_on_a_hung_mount_leaves_the_loop_running(tmp_path):
    hung = tmp_path / "rec"
    log = tmp_path / "program.log"
    runner = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", sys.executable, str(HUNGFS), "--mount", str(hung),
         "--log", str(log), "--", sys.executable, "-c", PROGRAM, str(hung)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 15
        while not (log.exists() and "ticks" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)  # past the deadline the loop is stuck in the kernel: the abort below frees it
    finally:
        runner.communicate(timeout=30)  # EOF: the runner aborts the mount, then ends the program
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
    assert lines, log.read_text()
    seen = json.loads(lines[0])
    assert seen["ticks"] >= 50 and not seen["probe_done"], f"the loop ticked {seen['ticks']} times in 1.5 s"
