"""Live reconfiguration: reload touches exactly what changed; a bad file changes nothing; the control
socket answers every failure in JSON."""
from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import stat
import time

import psutil
import pytest

from agent.client import request

from .harness import IDLE, NO_RECORDING, alive, children, config, is_probe, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def five_streams(camera) -> dict:
    return {
        "keep": {"url": camera.url("cam1")},
        "moved": {"url": camera.url("cam2")},
        "gone": {"url": camera.url("cam3")},
        "off": {"url": camera.url("cam4")},
        "kept_retention": {"url": camera.url("cam1"), "recording": {"retention": "7d"}},
    }


def edited(camera, streams: dict) -> dict:
    streams = {k: dict(v) for k, v in streams.items()}
    streams["moved"]["url"] = camera.url("cam3")          # changes the FFmpeg command
    del streams["gone"]                                     # removed
    streams["off"]["enabled"] = False                       # disabled
    streams["kept_retention"]["recording"] = {"retention": "1d"}  # no command change
    streams["keep"]["name"] = "Renamed"                     # no command change
    streams["new"] = {"url": camera.url("cam4")}            # added
    return streams


@pytest.mark.parametrize("how", ["sighup", "vasctl"])
def test_reload_restarts_exactly_what_changed(rtsp_camera, agent_factory, how):
    streams = five_streams(rtsp_camera)
    agent = agent_factory(config(streams)).start()
    before = {sid: s["pid"] for sid, s in agent.wait_all("live", list(streams)).items()}
    keep_segments = wait_for(lambda: len(agent.segments("keep")) >= 2 and agent.segments("keep"), 20,
                             "segments of the unchanged stream")

    agent.write_config(config(edited(rtsp_camera, streams)))
    if how == "vasctl":
        result = agent.vasctl("reload")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            "reloaded: started: new; restarted: moved; stopped: off, gone; updated: keep, kept_retention; unchanged: 0")
    else:
        agent.signal(signal.SIGHUP)
        wait_for(lambda: (agent.snapshot()["config"]["last_reload"] or {}).get("ok"), 20, "the reload")

    after = agent.wait_all("live", ["keep", "moved", "kept_retention", "new"])
    assert after["keep"]["pid"] == before["keep"]
    assert after["kept_retention"]["pid"] == before["kept_retention"]
    assert after["keep"]["name"] == "Renamed"
    assert after["kept_retention"]["recording"]["retention_seconds"] == 86400
    assert after["moved"]["pid"] != before["moved"] and not alive(before["moved"])
    assert after["moved"]["restart_reasons"] == {"config": 1}
    assert after["off"]["state"] == "stopped" and not alive(before["off"])
    assert "gone" not in after and not alive(before["gone"])
    # The unchanged stream kept recording into the same run's segment series.
    wait_for(lambda: len(agent.segments("keep")) > len(keep_segments), 20, "more segments")
    stamps = {p.name.split("_")[1] for p in agent.segments("keep")}
    assert len(stamps) == 1, "the unchanged stream's FFmpeg must not have restarted"


@pytest.mark.parametrize("broken, message", [
    ("version: 1\nstreams:\n  keep: {url: [unclosed\n", "invalid YAML"),
    ("version: 1\nstreams:\n  keep:\n    url: rtsp://127.0.0.1/x\n    stall_timeout: soon\n",
     "streams.keep.stall_timeout: expected a duration like 20s, got 'soon'"),
    ("version: 1\nstreams:\n  keep:\n    url: rtsp://u:${NOT_SET_ANYWHERE}@127.0.0.1/x\n",
     "streams.keep.url: environment variable NOT_SET_ANYWHERE is not set"),
])
def test_bad_file_on_reload_changes_nothing(rtsp_camera, agent_factory, broken, message):
    streams = {"keep": {"url": rtsp_camera.url("cam1")}, "other": {"url": rtsp_camera.url("cam2")}}
    agent = agent_factory(config(streams)).start()
    before = {sid: s["pid"] for sid, s in agent.wait_all("live", list(streams)).items()}
    good_config = agent.config_path.read_text()
    raw = broken.replace("version: 1\n", f"version: 1\nnode: {{runtime_dir: {agent.runtime_dir}}}\n")
    agent.write_raw(raw)

    # By socket, as the systemd unit's ExecReload does: the agent itself must refuse the file.
    result = agent.vasctl("reload", by_socket=True)
    assert result.returncode == 1
    assert "reload refused" in result.stderr and message in result.stderr
    assert f"{agent.config_path}:" in result.stderr
    agent.signal(signal.SIGHUP)
    time.sleep(1)
    last = agent.snapshot()["config"]["last_reload"]
    assert last["ok"] is False and any(message in e for e in last["error"])
    assert {sid: s["pid"] for sid, s in agent.streams().items()} == before
    assert all(s["state"] == "live" for s in agent.streams().values())
    assert "reload refused, nothing changed" in agent.log()
    # Fixed file: the next reload works and still changes nothing.
    agent.write_raw(good_config)
    ok = agent.vasctl("reload")
    assert ok.returncode == 0 and "unchanged: 2" in ok.stdout


def test_reload_storm_ends_consistent(rtsp_camera, agent_factory):
    streams = {f"s{i}": {"url": rtsp_camera.url(f"cam{1 + i % 4}")} for i in range(4)}
    agent = agent_factory(config(streams)).start()
    agent.wait_all("live", list(streams))
    # 20 reloads within about a second, the file changing under them.
    for i in range(20):
        variant = dict(streams)
        variant[f"extra{i % 3}"] = {"url": rtsp_camera.url("cam1")}
        agent.write_config(config(variant))
        agent.signal(signal.SIGHUP)
        time.sleep(0.05)
    final = dict(streams, extra1={"url": rtsp_camera.url("cam2")})
    agent.write_config(config(final))
    result = agent.vasctl("reload")
    assert result.returncode == 0, result.stderr
    live = agent.wait_all("live", list(final))
    assert set(live) == set(final)
    pids = [s["pid"] for s in live.values()]
    assert len(set(pids)) == len(final) and all(alive(p) for p in pids)
    # Exactly one FFmpeg per stream: no process from an earlier variant survived.
    running = _children_of(agent.proc.pid)
    assert sorted(running) == sorted(pids)


def _children_of(pid: int) -> list[int]:
    """The agent's FFmpeg processes (not the short ffprobe that reads a spawn's codec and resolution)."""
    return [c.pid for c in children(pid) if not _is_probe(c)]


def _is_probe(proc: psutil.Process) -> bool:
    try:
        return is_probe(proc.cmdline())
    except psutil.NoSuchProcess:
        return True  # gone: not an FFmpeg that outlived its variant


def test_concurrent_vasctl_commands(rtsp_camera, agent_factory):
    streams = {f"s{i}": {"url": rtsp_camera.url(f"cam{1 + i}")} for i in range(3)}
    agent = agent_factory(config(streams)).start()
    agent.wait_all("live", list(streams))
    commands = [("reload",)] * 4 + [("restart", "s0"), ("restart", "s1"), ("status",), ("status", "--json")]
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda c: agent.vasctl(*c), commands))
    for cmd, res in zip(commands, results):
        assert res.returncode == 0, f"vasctl {' '.join(cmd)}: {res.stderr}"
    live = agent.wait_all("live", list(streams))
    assert live["s0"]["restart_reasons"] == {"manual": 1}
    assert live["s2"]["restarts"] == 0
    assert sorted(_children_of(agent.proc.pid)) == sorted(s["pid"] for s in live.values())


def test_control_socket_errors_and_mode(rtsp_camera, agent_factory):
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")},
                                  "off": {"url": rtsp_camera.url("cam2"), "enabled": False}})).start()
    agent.wait_state("cam1", "live")
    sock = agent.runtime_dir / "agent.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    unknown = agent.vasctl("restart", "nope")
    assert unknown.returncode == 1 and "unknown stream 'nope'" in unknown.stderr
    disabled = agent.vasctl("restart", "off")
    assert disabled.returncode == 1 and "disabled" in disabled.stderr
    assert request(str(sock), "POST", "/streams/nope/restart")[0] == 404
    assert request(str(sock), "POST", "/streams/off/restart")[0] == 409
    code, status = request(str(sock), "GET", "/status")
    assert code == 200 and [s["id"] for s in status["streams"]] == ["cam1", "off"]
    assert status["streams"][0]["state"] == "live" and status["agent"]["pid"] == agent.proc.pid
    usage = agent.vasctl("frobnicate")
    assert usage.returncode == 2


def test_vasctl_with_agent_down_gives_one_clear_line(agent_factory):
    agent = agent_factory({"streams": {}})
    agent.runtime_dir.mkdir()
    for args in (("reload",), ("restart", "x"), ("status",)):
        res = agent.vasctl(*args)
        assert res.returncode == 1, args
        assert "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "is it running?" in agent.vasctl("reload").stderr


def test_secret_file_reread_on_reload(camera_factory, agent_factory, tmp_path):
    camera = camera_factory(("cam1",), user="admin", password="first-pw")
    secret = tmp_path / "cam1.secret"
    secret.write_text("first-pw\n")
    url = camera.url("cam1").replace("rtsp://", f"rtsp://admin:${{file:{secret}}}@")
    agent = agent_factory(config({"cam1": {"url": url}})).start()
    old = agent.wait_state("cam1", "live")["pid"]
    # The operator rotates the camera's password and the secret file, then reloads.
    camera.stop()
    camera.password = "second-pw"
    camera.start()
    secret.write_text("second-pw\n")
    result = agent.vasctl("reload")
    assert result.returncode == 0 and "restarted: cam1" in result.stdout
    new = wait_for(lambda: (s := agent.streams()["cam1"])["state"] == "live" and s["pid"] != old and s, 30,
                   "cam1 live with the new password")
    assert "second-pw" not in agent.log() and "second-pw" not in agent.vasctl("status", "--json").stdout
    assert new["url"].startswith("rtsp://admin:***@")


def test_runtime_dir_change_needs_restart(rtsp_camera, agent_factory, tmp_path):
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}})).start()
    pid = agent.wait_state("cam1", "live")["pid"]
    cfg = config({"cam1": {"url": rtsp_camera.url("cam1")}})
    cfg["node"] = {"runtime_dir": str(tmp_path / "elsewhere")}
    agent.write_config(cfg)
    result = agent.vasctl("reload", by_socket=True)
    assert result.returncode == 0, result.stderr
    assert "needs agent restart: node.runtime_dir" in result.stdout
    snap = agent.snapshot()
    assert snap["config"]["needs_restart"] == ["node.runtime_dir"]
    assert snap["streams"][0]["pid"] == pid
    assert not (tmp_path / "elsewhere").exists()


STUBBORN = ('trap "" TERM; n=0; while :; do n=$((n+1)); '
            'printf "frame=%d\\nprogress=continue\\n" $n; sleep 0.5; done')


def test_second_reload_while_one_applies_gets_409(agent_factory):
    """A child that ignores SIGTERM keeps a reload busy for stop_timeout: a second one is refused."""
    def streams(tag: str) -> dict:
        return {"stubborn": {"command": ["/bin/sh", "-c", STUBBORN, "{progress}", tag],
                             "stop_timeout": "3s", "recording": {"enabled": False}}}
    agent = agent_factory(config(streams("v1"))).start()
    old = agent.wait_state("stubborn", "live")["pid"]
    agent.write_config(config(streams("v2")))
    sock = str(agent.runtime_dir / "agent.sock")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(request, sock, "POST", "/reload")
        time.sleep(1)  # the first reload now waits out the 3 s stop_timeout
        assert not first.done()
        code, body = request(sock, "POST", "/reload")
        assert code == 409 and "reload is in progress" in body["error"]
        assert first.result(timeout=30)[0] == 200
    stream = agent.wait_state("stubborn", "live")
    assert stream["pid"] != old and not alive(old)  # SIGKILLed after stop_timeout


def test_secret_on_a_fifo_is_refused_on_reload_and_sigterm_stops_promptly(agent_factory, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("pw\n")
    cam = {"url": f"rtsp://admin:${{file:{secret}}}@127.0.0.1:9/x", **NO_RECORDING}
    agent = agent_factory(config({"cam": cam})).start()
    wait_for(lambda: agent.streams()["cam"]["pid"], 10, "a first process")
    secret.unlink()
    os.mkfifo(secret)  # no writer: a read would block forever
    cam2 = dict(cam, url=cam["url"].replace("/x", "/y"))
    agent.write_config(config({"cam": cam2, "extra": cam2}))
    agent.signal(signal.SIGHUP)
    wait_for(lambda: (agent.snapshot()["config"]["last_reload"] or {}).get("ok") is False, 10, "the refusal")
    error = agent.snapshot()["config"]["last_reload"]["error"]
    assert any(f"secret file {secret} is not a regular file" in e for e in error)
    started = time.monotonic()
    assert agent.stop(timeout=20) == 0
    assert time.monotonic() - started < 10
    assert "extra" not in {s["id"] for s in json.loads((agent.runtime_dir / "state.json").read_text())["streams"]}


def test_every_control_failure_answers_json(agent_factory):
    agent = agent_factory(config({"cam": {"command": IDLE}}, **NO_RECORDING)).start()
    sock = str(agent.runtime_dir / "agent.sock")
    for method, path, code in (("GET", "/nope", 404), ("DELETE", "/reload", 405)):
        status, body = request(sock, method, path)
        assert status == code and "error" in body
    agent.write_raw(agent.config_path.read_text() + "bad: !!int abc\n")
    status, body = request(sock, "POST", "/reload")
    assert status == 422 and any("invalid int value 'abc'" in d for d in body["details"])
    assert agent.snapshot()["config"]["last_reload"]["ok"] is False
