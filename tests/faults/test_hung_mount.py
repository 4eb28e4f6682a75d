"""One stream's recording folder on a hung mount (a real FUSE mount no server answers,
tests/faults/hungfs.py, in a private mount namespace): the agent starts and publishes its
snapshot, the healthy stream runs and its retention is enforced, retention's status names
the folder that does not answer, and comes up for it by itself once it answers; SIGTERM
still ends the agent within its stop budget, the final snapshot written."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.recordings.hung import stuck_after
from camera.fixture import free_port
from tests.integration import harness
from tests.integration.harness import BIN, TRAPS_TERM, AgentProcess, alive, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/fuse"),
                                 reason="needs root and /dev/fuse (a FUSE mount in a private namespace)")]
HUNGFS = Path(__file__).with_name("hungfs.py")
OLD = time.time() - 30 * 86400
#: recordings.probe_interval: how often each stream folder must answer, and how long a call may be
#: stuck with no folder known hung before the status names it (30 s by default, 10 s at least).
PROBE = 5


def config(streams: dict) -> dict:
    """The harness's config with a probe every PROBE seconds."""
    return {**harness.config(streams), "recordings": {"probe_interval": f"{PROBE}s"}}


def plant(folder: Path) -> Path:
    """Two segments 30 days old: retention 1d takes the first (the newest segment of a running
    stream is kept: it may be the one being written)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("old.ts", "newest.ts")):
        (folder / name).write_bytes(b"x" * 100)
        os.utime(folder / name, (OLD + i, OLD + i))
    return folder / "old.ts"


class HungAgent(AgentProcess):
    """The agent started by hungfs.py in a private mount namespace where ``hung_dirs`` hang."""

    def __init__(self, workdir: Path, cfg: dict, hung_dirs: list[Path]) -> None:
        super().__init__(workdir, cfg)
        self.hung_dirs = hung_dirs
        self.runner: subprocess.Popen[str] | None = None
        self.pid = 0

    def launch(self) -> HungAgent:
        mounts = [a for d in self.hung_dirs for a in ("--mount", str(d))]
        self.runner = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", sys.executable, str(HUNGFS), *mounts,
             "--log", str(self.log_path), "--", str(BIN / "vas-agent"), "--config", str(self.config_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=self.env, start_new_session=True)
        assert self.runner.stdout is not None
        line = self.runner.stdout.readline()  # "pid N" once mounted and started (bounded by the runner)
        assert line.startswith("pid "), f"hungfs runner: {line!r}\n{self.log()}"
        self.pid = int(line.split()[1])
        return self

    def abort(self) -> None:
        """The mount answers again (ENOTCONN, then the plain directory beneath it)."""
        assert self._ask("abort") == "aborted"

    def mount(self, target: Path) -> None:
        """One more hung mount, over ``target`` (in the agent's namespace)."""
        assert self._ask(f"mount {target}") == "mounted"

    def _ask(self, line: str) -> str:
        assert self.runner is not None and self.runner.stdin is not None and self.runner.stdout is not None
        self.runner.stdin.write(line + "\n")
        self.runner.stdin.flush()
        return self.runner.stdout.readline().strip()

    def wait_exit(self, timeout: float) -> None:
        wait_for(lambda: not alive(self.pid), timeout, "the agent to exit")

    def close(self) -> None:
        """Kill what is left (only this test's agent and runner); the runner aborts the mounts."""
        if self.pid and alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        if self.runner is not None:
            if self.runner.stdin is not None:
                self.runner.stdin.close()  # EOF: the runner aborts every mount
            try:
                self.runner.wait(20)
            except subprocess.TimeoutExpired:
                self.runner.kill()
                self.runner.wait(10)


@pytest.fixture
def hung_agent(tmp_path) -> Iterator[HungAgent]:
    """An agent with a healthy stream ``ok`` (an old segment to delete) and ``hung``, whose
    recording folder is a hung mount (old segments planted beneath it, hidden until abort)."""
    rec = tmp_path / "recordings"
    plant(rec / "ok")
    plant(rec / "hung")
    streams = {"ok": {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "1d"}},
               "hung": {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "1d"}}}
    agent = HungAgent(tmp_path, config(streams), [rec / "hung"])
    try:
        yield agent
    finally:
        agent.close()


def recordings(agent: AgentProcess) -> dict:
    return agent.snapshot()["recordings"]


def stop_timed(agent: HungAgent, what: str) -> None:
    """SIGTERM, the exit within 30 s (its time printed), and the final snapshot saying stopped."""
    started = time.monotonic()
    os.kill(agent.pid, signal.SIGTERM)
    agent.wait_exit(30)
    print(f"\nexit with {what}: {time.monotonic() - started:.1f}s after SIGTERM")
    assert agent.snapshot()["agent"]["status"] == "stopped"


def test_a_hung_stream_folder_neither_holds_up_start_nor_the_other_streams_and_retention_returns_for_it(
        hung_agent, tmp_path):
    """Snapshot and the healthy stream live at once; retention deletes the healthy stream's old
    segment while naming the hung folder; once it answers, its old segment goes too."""
    started = time.monotonic()
    agent, rec = hung_agent.launch(), tmp_path / "recordings"
    wait_for(lambda: agent.snapshot()["agent"]["pid"] == agent.pid, 15, "the agent's first snapshot")
    print(f"\nfirst snapshot with a hung folder: {time.monotonic() - started:.1f}s after the start")
    agent.wait_state("ok", "live", timeout=30)
    wait_for(lambda: recordings(agent)["not_answering"] == [str(rec / "hung")], 30, "retention to name the hung folder")
    assert str(rec / "hung") in recordings(agent)["problem"]
    status = agent.vasctl("status", by_socket=True)
    assert f"{rec / 'hung'}: not answering" in status.stdout, status.stdout
    wait_for(lambda: not (rec / "ok" / "old.ts").exists(), 30, "the healthy stream's old segment to be deleted")
    assert "is not answering (a hung mount?)" in agent.log()

    agent.abort()
    wait_for(lambda: recordings(agent)["problem"] is None, 30, "retention's problem to clear")
    wait_for(lambda: not (rec / "hung" / "old.ts").exists(), 30, "the old segment of the folder back to be deleted")
    assert "answers again" in agent.log()
    os.kill(agent.pid, signal.SIGTERM)
    agent.wait_exit(30)
    assert agent.snapshot()["agent"]["status"] == "stopped"
    assert "Traceback" not in agent.log()


def test_sigterm_ends_the_agent_while_a_folder_stays_hung(hung_agent):
    """SIGTERM as soon as the agent listens (its retention coming up, the mount still hung): the
    agent exits within its stop budget, its final snapshot written."""
    agent = hung_agent.launch()
    wait_for(lambda: (agent.runtime_dir / "agent.sock").exists(), 15, "the agent's control socket")
    stop_timed(agent, "a hung folder")


def test_a_hang_below_a_stream_folder_makes_retention_wait_and_say_so(tmp_path):
    """A mount hung below a stream's folder (the probe of the root's entries cannot see it): the
    agent starts all the same, retention says after START_PATIENCE that it waits for the root,
    and SIGTERM ends the agent, which names the calls it left stuck."""
    rec = tmp_path / "recordings"
    streams = {"ok": {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "1d"}}}
    agent = HungAgent(tmp_path, config(streams), [rec / "ok" / "2026"])
    try:
        agent.launch()
        wait_for(lambda: agent.snapshot()["agent"]["pid"] == agent.pid, 15, "the agent's first snapshot")
        agent.wait_state("ok", "live", timeout=30)
        wait_for(lambda: "a directory below" in (recordings(agent)["problem"] or ""), 30, "retention to say it waits")
        assert str(rec) in recordings(agent)["problem"]
        stop_timed(agent, "the root's watch stuck")
        assert "calls still stuck (a hung mount?), not waited for: retention:watch" in agent.log()
    finally:
        agent.close()


def test_a_pass_stuck_below_a_folder_that_hung_later_is_named_and_does_not_hold_up_the_exit(tmp_path):
    """A directory below a stream's folder, indexed while it answered, hangs just before the age pass
    that deletes there (no probe sees it: the folder itself answers): the pass is stuck in the kernel.
    Retention's status names the stuck call (it said nothing: only with a folder known hung); SIGTERM:
    retention gives the pass CLOSE_PATIENCE, then gives up on it (each deletion was decided and is
    checked again before its unlink), and the agent exits."""
    rec = tmp_path / "recordings"
    due = time.time() + 12  # the older segment expires then: the age timer's pass deletes it
    (rec / "late" / "sub").mkdir(parents=True)
    for i, name in enumerate(("a.ts", "b.ts")):
        (rec / "late" / "sub" / name).write_bytes(b"x" * 100)
        os.utime(rec / "late" / "sub" / name, (due - 86400 + i * 3600,) * 2)
    streams = {"late": {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "1d"}}}
    agent = HungAgent(tmp_path, config(streams), [])
    try:
        agent.launch()
        wait_for(lambda: agent.snapshot()["agent"]["pid"] == agent.pid, 15, "the agent's first snapshot")
        wait_for(lambda: agent.streams()["late"]["recording"]["segment_count"] == 2, 10, "the index")
        wait_for(lambda: time.time() > due - 1, 12, "a moment before the age pass (its timer)")
        agent.mount(rec / "late" / "sub")
        after = stuck_after(False, PROBE)
        wait_for(lambda: f"has been running for more than {after:g}s" in (recordings(agent)["problem"] or ""), 70,
                 "retention to name the stuck call")
        started = time.monotonic()
        cleanup = agent.vasctl("cleanup", "--dry-run", by_socket=True, timeout=50)  # waited for the lock for ever
        assert cleanup.returncode != 0 and "has a pass running for more than 20s" in cleanup.stderr, cleanup
        print(f"\ncleanup with a retention pass stuck: refused in {time.monotonic() - started:.1f}s")
        stop_timed(agent, "a retention pass stuck")
        assert "a pass is still running after 3s" in agent.log()
        assert "calls still stuck (a hung mount?), not waited for: " in agent.log()
    finally:
        agent.close()


def _threads(pid: int) -> int:
    return int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("Threads:")))


def test_a_root_that_hangs_after_start_is_said_and_holds_a_bounded_number_of_threads(tmp_path):
    """The whole recordings root hangs after retention came up: the status names the root (it said
    nothing), the agent's threads stay bounded (a statvfs every 2 s took a new one: +40 in 90 s),
    the heartbeat goes on, and the status clears once the root answers."""
    rec = tmp_path / "recordings"
    streams = {"ok": {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "1d"}}}
    agent = _indexed_then_hung(tmp_path, streams, [])
    try:
        wait_for(lambda: recordings(agent)["indexed"], 15, "retention's index")
        agent.mount(rec)
        wait_for(lambda: f"recordings root {rec} is not answering" in (recordings(agent)["problem"] or ""), 45,
                 "retention to name the root")
        first = _threads(agent.pid)
        assert _heartbeats(agent, 30) >= 20, "the snapshot's heartbeat stopped"
        last = _threads(agent.pid)
        print(f"\nthreads with the root hung: {first} -> {last} in 30 s")
        assert last - first <= 3, f"threads grew from {first} to {last} in 30 s with the root hung"
        agent.abort()
        wait_for(lambda: recordings(agent)["problem"] is None, 45, "retention's problem to clear")
        assert agent.log().count(f"recordings root {rec} is not answering") == 1
        assert f"retention: {rec} answers again" in agent.log()
    finally:
        agent.close()


def _indexed_then_hung(tmp_path: Path, streams: dict, folders: list[str]) -> HungAgent:
    """An agent whose ``folders`` (each with two recent segments, nothing due) are indexed while
    they answer, then hang (hung mounts over them) before retention's next probe."""
    rec = tmp_path / "recordings"
    for name in folders:
        (rec / name).mkdir(parents=True)
        for i, seg in enumerate(("a.ts", "b.ts")):
            (rec / name / seg).write_bytes(b"x" * 100)
            os.utime(rec / name / seg, (time.time() - 3600 + i,) * 2)
    agent = HungAgent(tmp_path, config(streams), [])
    agent.launch()
    wait_for(lambda: agent.snapshot()["agent"]["pid"] == agent.pid, 15, "the agent's first snapshot")
    def indexed() -> bool:
        return all(agent.streams()[n]["recording"]["segment_count"] == 2 for n in folders)
    wait_for(indexed, 15, f"the index of {folders}")
    for name in folders:
        agent.mount(rec / name)
    return agent


def _heartbeats(agent: AgentProcess, seconds: float) -> int:
    """How many times the snapshot was rewritten in ``seconds`` (the agent's heartbeat: every 1 s)."""
    path, seen, last = agent.runtime_dir / "state.json", 0, None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        mtime = path.stat().st_mtime_ns
        seen += last is not None and mtime != last
        last = mtime
        time.sleep(0.1)
    return seen


def test_a_reload_while_an_indexed_folder_hangs_answers_and_the_loop_keeps_running(tmp_path):
    """A folder indexed while it answered hangs; a reload (adding a stream) comes before
    retention's next probe finds it.  The reload answers, the heartbeat goes on, the other
    streams are still supervised (one's child killed comes back); the status then names the
    folder, nothing of it is deleted, and it is taken back once it answers."""
    rec = tmp_path / "recordings"
    streams = {sid: {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "1d"}}
               for sid in ("late", "ok")}
    agent = _indexed_then_hung(tmp_path, streams, ["late"])
    try:
        agent.write_config(config({**streams, "new": streams["ok"]}))
        started = time.monotonic()
        try:
            reload = agent.vasctl("reload", by_socket=True, timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("the reload did not answer in 20 s (the event loop stuck on the hung folder?)")
        print(f"\nreload with an indexed folder hung: answered in {time.monotonic() - started:.1f}s")
        assert reload.returncode == 0, reload.stdout + reload.stderr
        assert _heartbeats(agent, 4) >= 2, "the snapshot's heartbeat stopped"
        agent.wait_state("new", "live", timeout=15)
        before = agent.pids()["ok"]
        assert before
        os.kill(before, signal.SIGKILL)
        wait_for(lambda: agent.pids()["ok"] not in (None, before) and agent.streams()["ok"]["state"] == "live",
                 30, "the healthy stream's child to be restarted")
        wait_for(lambda: recordings(agent)["not_answering"] == [str(rec / "late")], 45, "the probe to find the folder")
        agent.abort()
        wait_for(lambda: recordings(agent)["problem"] is None, 30, "retention's problem to clear")
        wait_for(lambda: agent.streams()["late"]["recording"]["segment_count"] == 2, 15, "the folder taken back")
        assert sorted(p.name for p in (rec / "late").iterdir()) == ["a.ts", "b.ts"]
        os.kill(agent.pid, signal.SIGTERM)
        agent.wait_exit(30)
        assert "Traceback" not in agent.log()
    finally:
        agent.close()


def test_cleanup_of_every_stream_with_two_folders_hung_is_refused_plainly_and_one_stream_is_cleaned(tmp_path):
    """Two stream folders of three on hung mounts: ``vasctl cleanup`` (every stream) answers at once
    that they do not answer (it said "would delete 0 segments" of them); a hung one alone is refused;
    the healthy one is cleaned; ``vasctl status`` says the same as the snapshot."""
    rec = tmp_path / "recordings"
    old = plant(rec / "c")
    plant(rec / "a")
    plant(rec / "b")
    streams = {sid: {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "60d"}}
               for sid in ("a", "b", "c")}
    port = free_port()
    cfg = {**config(streams), "exporter": {"listen": f"127.0.0.1:{port}", "tokens_file": str(tmp_path / "tokens")}}
    agent = HungAgent(tmp_path, cfg, [rec / "a", rec / "b"])
    exporter = None
    try:
        agent.launch()
        wait_for(lambda: recordings(agent)["not_answering"] == [str(rec / "a"), str(rec / "b")], 30,
                 "retention to name the hung folders")
        problem = recordings(agent)["problem"]
        assert f"RETENTION: {problem}" in agent.vasctl("status", by_socket=True).stdout
        exporter = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(agent.config_path)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        system = wait_for(lambda: _get(port, "/v2/health/system"), 15, "the exporter")
        assert system["recordings"]["problem"] == problem
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/metrics", timeout=5) as resp:
            assert "vas_retention_problem 1.0" in resp.read().decode()  # it had no metric
        started = time.monotonic()
        every = agent.vasctl("cleanup", "--retention-days", "1", by_socket=True, timeout=30)
        print(f"\ncleanup of every stream, two folders hung: refused in {time.monotonic() - started:.1f}s")
        assert every.returncode != 0, every.stdout
        assert f"{rec / 'a'}, {rec / 'b'}: not answering" in every.stderr and "one by one" in every.stderr, every
        one = agent.vasctl("cleanup", "a", "--retention-days", "1", by_socket=True, timeout=30)
        assert one.returncode != 0 and f"{rec / 'a'}: not answering" in one.stderr, one
        assert old.exists()
        healthy = agent.vasctl("cleanup", "c", "--retention-days", "1", by_socket=True, timeout=30)
        assert healthy.returncode == 0, healthy
        assert not old.exists() and (rec / "c" / "newest.ts").exists()
    finally:
        if exporter is not None:
            exporter.terminate()
            exporter.wait(10)
        agent.close()


def _get(port: int, path: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def test_a_folder_that_answers_and_hangs_again_loses_nothing_through_reload_cleanup_sigkill_and_restart(tmp_path):
    """The hostile operator's round: a folder (kept 60 days) hung at start, then answering, then
    hung again; a reload and cleanups meanwhile; SIGKILL; a restart with it still hung.  Each step
    answers, the status follows, and every segment of the folder is still there at the end."""
    rec = tmp_path / "recordings"
    plant(rec / "a")
    plant(rec / "c")
    (rec / "a" / "keep.ts").write_bytes(b"k" * 100)
    before = sorted(p.name for p in (rec / "a").iterdir())
    streams = {"a": {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "60d"}},
               "c": {"command": TRAPS_TERM, "stall_timeout": 0, "recording": {"retention": "1d"}}}
    agent = HungAgent(tmp_path, config(streams), [rec / "a"])
    second: subprocess.Popen[bytes] | None = None
    try:
        agent.launch()
        wait_for(lambda: recordings(agent)["not_answering"] == [str(rec / "a")], 30, "retention to name a")
        wait_for(lambda: not (rec / "c" / "old.ts").exists(), 30, "c's old segment to be deleted")
        agent.abort()
        wait_for(lambda: recordings(agent)["problem"] is None, 30, "retention's problem to clear")
        wait_for(lambda: agent.streams()["a"]["recording"]["segment_count"] == 3, 15, "a indexed")
        agent.mount(rec / "a")  # hangs again
        wait_for(lambda: recordings(agent)["not_answering"] == [str(rec / "a")], 45, "retention to name a again")
        agent.write_config(config({**streams, "d": streams["c"]}))
        assert agent.vasctl("reload", by_socket=True, timeout=20).returncode == 0
        for args in (("cleanup", "a"), ("cleanup", "--dry-run")):
            refused = agent.vasctl(*args, by_socket=True, timeout=20)
            assert refused.returncode != 0 and f"{rec / 'a'}: not answering" in refused.stderr, refused
        os.kill(agent.pid, signal.SIGKILL)
        wait_for(lambda: not alive(agent.pid), 20, "SIGKILL to end the agent")
        assert agent.runner is not None
        with open(agent.log_path, "ab") as log:  # the mount lives in the runner's namespace: start there
            second = subprocess.Popen(["nsenter", "-t", str(agent.runner.pid), "-m", "--", str(BIN / "vas-agent"),
                                       "--config", str(agent.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=agent.env)
        wait_for(lambda: agent.snapshot()["agent"]["pid"] == second.pid, 20, "the restarted agent's snapshot")
        wait_for(lambda: recordings(agent)["not_answering"] == [str(rec / "a")], 30, "the restart to name a")
        agent.wait_state("d", "live", timeout=20)
        second.terminate()
        assert second.wait(30) == 0
        agent.abort()
        assert sorted(p.name for p in (rec / "a").iterdir()) == before, "a segment of the folder was lost"
    finally:
        if second is not None and second.poll() is None:
            second.kill()
            second.wait(10)
        agent.close()
