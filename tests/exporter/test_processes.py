"""The streams' processes in /v2/metrics (exporter/processes.py): /proc read directly gives what
psutil gave, the text is what client_python wrote, and the sampling happens off the
scrape while scrapes come.  Real processes; psutil is the reference."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time

import psutil
import pytest
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from exporter import processes
from exporter.processes import ProcessSampler, read_stat, render, sample

from .test_metrics_text import respelled


@pytest.fixture
def worker():
    """A process that has used some CPU and memory, then sleeps (its figures hold still)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time\nx = bytearray(30 << 20)\n"
                             "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
                             "print(flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    yield proc
    proc.kill()
    proc.wait()


def asleep(argv: list[str]) -> subprocess.Popen:
    """``argv`` started and asleep in its own program: exec'd and loaded, so its figures hold
    still (read right after the fork, a CI run saw its RSS grow between two reads)."""
    proc = subprocess.Popen(argv)
    name = argv[0].rsplit("/", 1)[-1][:15]  # the kernel's comm: the program's name, 15 bytes
    for _ in range(1000):  # hang catcher: 10 s
        with open(f"/proc/{proc.pid}/stat") as fh:
            stat = fh.read()
        if stat[stat.index("(") + 1:stat.rindex(")")] == name and stat[stat.rindex(")") + 2] == "S":
            return proc
        time.sleep(0.01)
    proc.kill()
    raise AssertionError(f"{argv} never went to sleep")


def test_a_stat_read_gives_what_psutil_gives(worker):
    cpu, rss = read_stat(worker.pid) or (None, None)
    p = psutil.Process(worker.pid)
    times = p.cpu_times()
    assert cpu == pytest.approx(times.user + times.system, abs=1e-9) and cpu >= 0.3
    assert rss == p.memory_info().rss and rss > 30 << 20


def test_a_command_with_spaces_and_parentheses_in_its_name_is_read(tmp_path):
    odd = tmp_path / "a) b (c"
    odd.symlink_to(shutil.which("sleep") or "/bin/sleep")
    proc = asleep([str(odd), "60"])
    try:
        cpu, rss = read_stat(proc.pid) or (None, None)
        assert cpu is not None and rss == psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_is_gone_a_zombie_or_no_pid_is_left_out(worker):
    gone, zombie = subprocess.Popen(["true"]), subprocess.Popen(["true"])
    gone.wait()
    try:
        for _ in range(100):  # exited, not reaped (the agent stopping, say): counted healthy with RSS 0 before
            if psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE:
                break
            time.sleep(0.02)
        streams = [{"id": "a", "pid": worker.pid}, {"id": "b", "pid": gone.pid}, {"id": "c", "pid": None},
                   {"id": "d", "pid": -1}, {"id": "e", "pid": True}, {"id": "f"}, {"id": "z", "pid": zombie.pid}]
        assert list(sample(streams)) == ["a"]
    finally:
        zombie.wait()


def reference(samples: dict[str, tuple[float, int]]) -> bytes:
    """The families as client_python rendered them before."""
    cpu = CounterMetricFamily("vas_ffmpeg_cpu_seconds", "CPU time of the stream's FFmpeg.", labels=["stream"])
    rss = GaugeMetricFamily("vas_ffmpeg_resident_memory_bytes", "RSS of the stream's FFmpeg.", labels=["stream"])
    for sid, (seconds, resident) in samples.items():
        cpu.add_metric([sid], seconds)
        rss.add_metric([sid], resident)
    healthy = GaugeMetricFamily("vas_ffmpeg_processes_healthy", "Stream processes running and sampled.",
                                value=len(samples))

    class Families:
        def collect(self):
            return [cpu, rss, healthy]
    return generate_latest(Families())  # type: ignore[arg-type]


@pytest.mark.parametrize("samples", [{}, {"cam1": (12.34, 123 << 20)},
                                     {'we"ird\\id\nx': (0.0, 0), "ü cam": (1e10 + 0.01, 2**40), "b": (3.0, 4096)}])
def test_the_text_is_client_pythons(samples):
    assert respelled(render(samples).decode()) == reference(samples).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_scrape_samples_only_when_the_last_sample_is_old(worker):
    clock = Clock()
    sampler = ProcessSampler(clock)
    streams = [{"id": "cam1", "pid": worker.pid}]
    sampler.current(streams)
    first = sampler.taken_at
    assert set(sampler.samples) == {"cam1"} and b'vas_ffmpeg_cpu_seconds_total{stream="cam1"}' in sampler.text
    clock.now += processes.STALE_AFTER - 0.1
    sampler.current([])  # recent enough: the last sample is kept
    assert sampler.taken_at == first and set(sampler.samples) == {"cam1"}
    clock.now += 0.2
    sampler.current([])
    assert sampler.taken_at > first and sampler.samples == {}


async def test_samples_are_taken_in_the_background_while_scrapes_come_and_stop_when_they_stop(worker, monkeypatch):
    monkeypatch.setattr(processes, "SAMPLE_EVERY", 0.05)
    monkeypatch.setattr(processes, "IDLE_AFTER", 0.5)
    sampler = ProcessSampler()
    streams = [{"id": "cam1", "pid": worker.pid}]
    task = asyncio.create_task(sampler.run(lambda: streams))
    try:
        sampler.current(streams)
        first = sampler.taken_at
        await asyncio.sleep(0.3)
        assert sampler.taken_at > first  # taken again without a scrape asking
        await asyncio.sleep(0.6)  # past IDLE_AFTER without a scrape: no more samples
        idle = sampler.taken_at
        await asyncio.sleep(0.3)
        assert sampler.taken_at == idle
    finally:
        task.cancel()



def test_a_respawned_process_is_not_shown_with_the_old_ones_figures(worker):
    """The API pairs a stream's pid with its figures: after a respawn (a new pid in the snapshot,
    the last sample of the old one) the new process's own figures, not the old one's."""
    sampler = ProcessSampler()
    sampler.take([{"id": "cam1", "pid": worker.pid}])
    new = asleep(["sleep", "60"])
    try:
        assert sampler.figures({"id": "cam1", "pid": worker.pid}) == sampler.samples["cam1"]
        cpu, rss = sampler.figures({"id": "cam1", "pid": new.pid}) or (None, None)
        assert (cpu, rss) == read_stat(new.pid) and cpu is not None and cpu < 0.3 <= sampler.samples["cam1"][0]
        assert sampler.figures({"id": "cam1", "pid": None}) is None
        assert sampler.figures({"id": "cam2", "pid": None}) is None
    finally:
        new.kill()
        new.wait()


async def test_the_ingestion_api_does_not_pair_a_new_pid_with_the_old_processs_figures(client, node, worker):
    """Measured with the real agent: for up to SAMPLE_EVERY after a respawn /v2/health/ingestion
    answered the new pid with the killed FFmpeg's cpu_seconds and rss_bytes."""
    from .conftest import snapshot_dict, stream
    node.write(snapshot_dict([stream("cam1", pid=worker.pid)]))
    first = (await (await client.get("/v2/health/ingestion")).json())["processes"][0]
    assert first["pid"] == worker.pid and first["cpu_seconds"] >= 0.3
    new = asleep(["sleep", "60"])
    try:
        node.write(snapshot_dict([stream("cam1", pid=new.pid)]))
        for _ in range(50):  # the exporter sees the new snapshot
            after = (await (await client.get("/v2/health/ingestion")).json())["processes"][0]
            if after["pid"] == new.pid:
                break
            await asyncio.sleep(0.05)
        assert after["pid"] == new.pid
        assert (after["cpu_seconds"], after["rss_bytes"]) == read_stat(new.pid)
    finally:
        new.kill()
        new.wait()


async def test_a_sampling_pass_that_fails_is_said_once_and_sampling_goes_on(worker, monkeypatch, caplog):
    monkeypatch.setattr(processes, "SAMPLE_EVERY", 0.05)
    sampler, calls = ProcessSampler(), []
    streams = [{"id": "cam1", "pid": worker.pid}]

    def snapshot_streams() -> list:
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("a hostile snapshot")
        return streams
    sampler.current([])
    task = asyncio.create_task(sampler.run(snapshot_streams))
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if "cam1" in sampler.samples:
                break
    finally:
        task.cancel()
    assert "cam1" in sampler.samples and len(calls) >= 4
    assert [r.getMessage() for r in caplog.records if "sampling" in r.getMessage()] == [
        "sampling the streams' processes failed; scrapes sample them themselves until it works again"]
