"""No camera password anywhere: a distinctive password containing @ : / % (and an escape),
given as a URL-encoded literal, through ${ENV} and through ${file:}, with restarts, a
refused reload, an offline camera and the exporter answering; then every log, snapshot,
API response, metric, vasctl output and process command line is searched."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from camera.fixture import free_port
from tests.faults.leakscan import scan, secret_forms
from tests.integration.harness import config, wait_for
from tests.integration.test_exporter import Exporter, http

pytestmark = pytest.mark.integration
PASSWORD = "Zq9@k:/%40p@ss"
ENCODED = quote(PASSWORD, safe="")
#: What the scanner's own tests plant in processes: not PASSWORD, or a scan of every process by
#: test_no_password_in_any_output running at the same time (pytest -n) would find their plants.
PLANTED = "Pl4@nt:/%40ed"
PLANTED_ENCODED = quote(PLANTED, safe="")


#: The planted process writes one byte once it runs its own program: its argv is then in /proc.
SLEEPER = "import os, time; os.write(1, b'r'); time.sleep(30)"


def test_scanner_finds_a_planted_secret_in_each_source(tmp_path):
    forms = secret_forms(PLANTED)
    assert PLANTED_ENCODED in forms and PLANTED in forms
    (tmp_path / "log").write_text(f"rtsp://u:{PLANTED_ENCODED}@h/x\n")
    # Not ``sh -c``: dash execs its last command in place, and the argument vanishes.
    sleeper = subprocess.Popen([sys.executable, "-c", SLEEPER, f"pw={PLANTED_ENCODED}"], stdout=subprocess.PIPE)
    lower = PLANTED_ENCODED.replace("%2F", "%2f").replace("%3A", "%3a")
    try:
        assert sleeper.stdout is not None and sleeper.stdout.read(1) == b"r"  # planted and visible
        hits = scan(forms, [tmp_path], {"vasctl": f"x {PLANTED} y", "api": f"u:{lower}@h"})
        where = {h.where.split(" ")[0] for h in hits}
        assert {str(tmp_path / "log"), "vasctl", "api", f"/proc/{sleeper.pid}/cmdline"} <= where, where
    finally:
        sleeper.kill()
        sleeper.wait()
        assert sleeper.stdout is not None
        sleeper.stdout.close()


#: Blanks its own command line for a moment (what /proc shows of a process caught mid-exec,
#: as right after ``Popen`` returns), says so with one byte, then puts it back.
BLANKER = """
import os, time
fields = open("/proc/self/stat", "rb").read().rsplit(b")", 1)[1].split()
start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end
with open("/proc/self/mem", "r+b", buffering=0) as mem:
    mem.seek(start)
    argv = mem.read(end - start)
    mem.seek(start)
    mem.write(bytes(len(argv)))
    os.write(1, b"b")
    time.sleep(0.3)
    mem.seek(start)
    mem.write(argv)
time.sleep(30)
"""


def test_scanner_waits_for_a_command_line_that_reads_empty_for_a_moment():
    """Right after ``Popen`` returns, a child's command line can read empty (about one time in
    three here): the scanner must look again, within a bound, not pass the process over."""
    blanker = subprocess.Popen([sys.executable, "-c", BLANKER, f"pw={PLANTED_ENCODED}"], stdout=subprocess.PIPE)
    try:
        assert blanker.stdout is not None and blanker.stdout.read(1) == b"b"  # its argv reads empty now
        started = time.monotonic()
        hits = scan(secret_forms(PLANTED))
        assert f"/proc/{blanker.pid}/cmdline" in {h.where.split(" ")[0] for h in hits}, hits
        assert time.monotonic() - started < 2.5  # bounded: EMPTY_RETRY_SECONDS and one pass
    finally:
        blanker.kill()
        blanker.wait()
        assert blanker.stdout is not None
        blanker.stdout.close()


@pytest.mark.slow
def test_no_password_in_any_output(camera_factory, agent_factory, tmp_path):
    camera = camera_factory(("cam1", "cam2", "cam3"), user="vasuser", password=PASSWORD)
    secret_file = tmp_path / "cam3.secret"
    secret_file.write_text(ENCODED + "\n")
    secret_file.chmod(0o600)
    base = camera.url("cam1").replace("rtsp://", "")
    streams = {
        "literal": {"url": f"rtsp://vasuser:{ENCODED}@{base}"},
        "by_env": {"url": f"rtsp://vasuser:${{CAM_PW}}@{base.replace('cam1', 'cam2')}"},
        "by_file": {"url": f"rtsp://vasuser:${{file:{secret_file}}}@{base.replace('cam1', 'cam3')}"},
        "wrong": {"url": camera.url("cam1", user="vasuser", password=PASSWORD + "x")},
    }
    port = free_port()
    cfg = config(streams)
    cfg["exporter"] = {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}
    agent = agent_factory(cfg, env={"CAM_PW": ENCODED}).start()
    agent.wait_all("live", ["literal", "by_env", "by_file"], timeout=60)
    exporter = Exporter(agent, port)
    texts: dict[str, str] = {}
    try:
        # Faults: a killed FFmpeg, a refused reload near the secrets, an offline camera.
        os.kill(agent.pids()["by_env"], signal.SIGKILL)
        agent.wait_state("by_env", "live", timeout=30)
        good = agent.config_path.read_text()
        agent.write_raw(good.replace("literal:\n", "literal:\n    stall_timeout: fast\n"))
        texts["vasctl reload (refused)"] = (out := agent.vasctl("reload")).stdout + out.stderr
        assert out.returncode == 1
        agent.write_raw(good)
        wait_for(lambda: agent.streams()["wrong"]["restarts"] >= 2, 30, "the wrong password failing")
        camera.stop()
        wait_for(lambda: agent.streams()["literal"]["restarts"] >= 2, 30, "the offline camera failing")
        camera.start()
        agent.wait_all("live", ["literal", "by_env", "by_file"], timeout=60)
        for args in (("status",), ("status", "--json"), ("reload",), ("restart", "by_file"),
                     ("cleanup", "--dry-run"), ("cleanup", "--dry-run", "--json")):
            out = agent.vasctl(*args)
            texts["vasctl " + " ".join(args)] = out.stdout + out.stderr
        paths = ["/livez", "/readyz", "/healthz", "/v2/health/system", "/v2/health/ingestion",
                 "/v2/health/producers", "/v2/health/consumers", "/v2/health/recordings", "/v2/metrics",
                 "/v2/openapi.json", "/v2/health/streams/nope", "/v2/fleet/targets"]
        paths += [f"/v2/health/streams/{sid}" for sid in streams] + [f"/v2/health/recordings/{sid}" for sid in streams]
        for path in paths:
            code, body = http(port, path)
            assert code < 500, (path, code)
            texts[f"GET {path}"] = body
        texts["POST cleanup without a token"] = http(port, "/v2/health/recordings/cleanup", "POST")[1]
        time.sleep(1)
        camera_pid = camera.proc.pid if camera.proc else -1
        hits = scan(secret_forms(PASSWORD), [agent.workdir, tmp_path / "tokens"] if (tmp_path / "tokens").exists()
                    else [agent.workdir], texts, skip_pids={camera_pid})
        # The only files that may hold it: the config itself and the secret file.
        hits = [h for h in hits if h.where not in (str(agent.config_path), str(secret_file))]
        assert hits == [], hits
        assert "rtsp://vasuser:***@" in texts["GET /v2/health/streams/literal"]
    finally:
        exporter.stop()
    assert not scan(secret_forms(PASSWORD), [Path(exporter.log)], proc=False)
