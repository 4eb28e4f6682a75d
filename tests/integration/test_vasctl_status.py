"""vasctl status as an operator uses it, against a real agent (issue 18, item 10): into a pipe
closed early, CPU measured finely, sizes in human units, --watch redrawing in place, and status
while streams.yaml is broken."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from .harness import BIN, CHEAP, IDLE, NO_RECORDING, config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A child with a steady ~2 % CPU duty cycle (0.2 ms busy, 9.8 ms asleep).
BURNER = [sys.executable, "-c",
          "import time\nwhile True:\n t = time.perf_counter()\n while time.perf_counter() - t < 0.0002: pass\n"
          " time.sleep(0.0098)"]


def _node(agent_factory):
    streams = {"burn": {"command": BURNER, "ready_after": "0.5s", "stall_timeout": 0},
               "idle": {**CHEAP}}
    agent = agent_factory(config(streams)).start()
    agent.wait_all("live", ["burn", "idle"], timeout=30)
    return agent


def test_status_json_into_a_pipe_closed_early_ends_quietly(agent_factory):
    agent = _node(agent_factory)
    # The reader is gone before vasctl writes (as `| head` is, after its lines of a long status).
    piped = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"'{BIN / 'vasctl'}' --config '{agent.config_path}' status --json | true"],
                           capture_output=True, text=True, timeout=60)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr, piped.stderr
    assert piped.returncode == 141  # as a Unix tool killed by SIGPIPE: the pipeline failed, quietly


def test_status_cpu_is_fine_grained_and_sizes_have_human_units(agent_factory):
    agent = _node(agent_factory)
    # 500 KiB of recordings: "0.0GiB" said nothing.
    (agent.recordings / "idle").mkdir(parents=True, exist_ok=True)
    (agent.recordings / "idle" / "seg-1.ts").write_bytes(b"\0" * 512_000)
    wait_for(lambda: agent.streams()["idle"]["recording"].get("total_bytes") == 512_000, 20, "the segment indexed")
    table = agent.vasctl("status").stdout
    idle = next(line for line in table.splitlines() if line.startswith("idle "))
    assert " 500KiB " in idle, table
    # A 2 % process measured over 0.2 s: in clock ticks (10 ms) that is 0 % or 5 %, nothing between.
    figures = []
    for _ in range(4):
        burn = {s["id"]: s for s in json.loads(agent.vasctl("status", "--json").stdout)["streams"]}["burn"]
        figures.append(burn["cpu_percent"])
    assert all(0.5 < f < 4.5 for f in sorted(figures)[1:3]), f"5 % steps: {figures}"


def test_status_watch_redraws_until_ctrl_c(agent_factory):
    agent = _node(agent_factory)
    # Started with SIGINT ignored, as a script's background job (`cmd &`) is: Ctrl-C must still quit
    # (a full run launched that way hung here for 10 s).
    proc = subprocess.Popen([str(BIN / "vasctl"), "--config", str(agent.config_path), "status", "--watch", "0.3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    seen: list[str] = []
    try:
        # Three frames first: a SIGINT sent before vasctl has set its handler (a slow start under
        # load) is ignored as the job's SIGINT is, and the test would wait for nothing.
        assert proc.stdout is not None
        while sum("every 0.3s" in line for line in seen) < 3 and (line := proc.stdout.readline()):
            seen.append(line)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    out = "".join(seen) + proc.stdout.read()  # not communicate(): it would skip what readline buffered
    err = proc.stderr.read()
    frames = [f for f in out.split("\f\n") if f]
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert len(frames) >= 3, out
    assert all("every 0.3s" in f and "burn" in f and "idle" in f for f in frames), out
    # From the second frame on, CPU is measured between frames: no extra sampling delay.
    assert all("%" in next(ln for ln in f.splitlines() if ln.startswith("burn ")) for f in frames[1:])
    usage = subprocess.run([str(BIN / "vasctl"), "--config", str(agent.config_path), "status", "--watch", "--json"],
                           capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "--watch redraws the table" in usage.stderr


def test_vasctl_status_works_while_the_file_is_broken(agent_factory):
    agent = agent_factory(config({"cam": {"command": IDLE}}, **NO_RECORDING)).start()
    agent.wait_state("cam", "live")
    agent.write_raw(agent.config_path.read_text() + "streams: [broken\n")
    status = agent.vasctl("status")
    assert status.returncode == 0 and "live" in status.stdout
    assert "invalid YAML" in status.stderr and f"using runtime_dir {agent.runtime_dir}" in status.stderr
