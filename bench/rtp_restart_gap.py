"""RTP gap of one FFmpeg restart on the real SFU: what a viewer loses when FFmpeg dies.

What it measures
    One stream from the GStreamer RTSP test camera feeds the reference SFU
    (sfu/server.js on real mediasoup 3.8.4, run by the agent).  FFmpeg is
    SIGKILLed --kills times, 3 s apart; each time the figure is the time from
    the kill to the first packet mediasoup counts again (GET /producers, its
    own getStats()) on the SAME producer.  It also counts the FFmpeg spawns
    (anchor: one per kill; before the stable source port, each kill cost a
    second restart ~8 s later, on a new producer that dropped every viewer).

How to run
    .venv/bin/python bench/rtp_restart_gap.py              # --kills 5
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from integration.harness import AgentProcess, wait_for  # noqa: E402
from integration.test_real_sfu_agent import only_producer, real_sfu_config, spawns  # noqa: E402

from camera.fixture import RtspCamera, free_port  # noqa: E402


def one_kill(agent: AgentProcess, port: int) -> float:
    """SIGKILL the stream's FFmpeg; seconds until mediasoup counts its packets again."""
    pid = agent.streams()["cam1"]["pid"]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: agent.streams()["cam1"]["pid"] not in (None, pid), 20, "a new FFmpeg")
    base = only_producer(port, "cam1")["packets"]  # the dead FFmpeg's last packets are counted by now
    wait_for(lambda: only_producer(port, "cam1")["packets"] > base, 20, "packets again", interval=0.05)
    return time.monotonic() - killed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    args = parser.parse_args()
    with RtspCamera(("cam1",)) as cam, tempfile.TemporaryDirectory(prefix="vas-bench-gap-") as tmp:
        port = free_port()
        agent = AgentProcess(Path(tmp), real_sfu_config({"cam1": {"url": cam.url("cam1")}}, port))
        agent.start()
        try:
            agent.wait_state("cam1", "live", timeout=45)
            first = only_producer(port, "cam1")["producer_id"]
            gaps = []
            for _ in range(args.kills):
                time.sleep(3)
                gaps.append(one_kill(agent, port))
            time.sleep(10)  # longer than the repair of a silent producer: a second restart would show
            same = only_producer(port, "cam1")["producer_id"] == first
            count = spawns(agent, "cam1")
        finally:
            agent.stop()
    gaps.sort()
    print(f"FFmpeg SIGKILL x{args.kills}: RTP gap p50 {gaps[len(gaps) // 2]:.2f} s, max {gaps[-1]:.2f} s; "
          f"spawns {count} (anchor {1 + args.kills}: one per kill); same producer: {same}")
    return 0 if same and count == 1 + args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
