"""One stream's supervision in process, with real child processes (shell stand-ins for
FFmpeg): a command that cannot be built, a loop that ended, a stall_timeout changed in
place, and the watch that reopens a recording output that stopped."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from agent.config.model import RecordingConfig, RestartPolicy, StreamConfig
from agent.supervise.process import DRAIN_TIMEOUT
from agent.supervise.states import StreamState
from agent.supervise.stream import Host, Stream

from .harness import alive

pytestmark = pytest.mark.integration

#: One progress report, then silence: a process that stalls at once.
REPORT_THEN_HANG = ("/bin/sh", "-c", "printf 'frame=1\\nprogress=continue\\n'; exec sleep 600", "{progress}")
QUICK = RestartPolicy(initial_delay=0.05, multiplier=2, max_delay=0.5, jitter=0, stable_after=60)


def stream_config(command: tuple[str, ...], **kw) -> StreamConfig:
    return StreamConfig(**{"id": "cam", "url": "rtsp://admin:pw@cam/", "command": command, "restart": QUICK,
                           "stall_timeout": 0, "stop_timeout": 2, "recording": RecordingConfig(enabled=False), **kw})


def host(tmp_path: Path) -> Host:
    return Host(ffmpeg="ffmpeg", recordings_root=tmp_path, secrets=frozenset(), on_change=lambda _: None)


async def wait_until(check, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def test_a_command_that_cannot_be_built_shows_error_and_restart_still_answers(tmp_path, caplog):
    # "{url!x}" passed validation before the fix and raised inside format_map.
    stream = Stream(stream_config(("/bin/true", "{url!x}", "{progress}")), host(tmp_path))
    stream.start()
    await wait_until(lambda: stream.state is StreamState.ERROR, 5, "error state")
    assert "internal error" in stream.last_exit["description"]
    assert "internal error supervising cam" in caplog.text
    await asyncio.wait_for(stream.restart("manual"), 5)  # used to wait forever
    await asyncio.wait_for(stream.apply(stream.cfg, restart=True), 5)
    await asyncio.wait_for(stream.close(), 5)
    assert stream.state is StreamState.STOPPED


async def test_a_loop_that_ended_is_revived_by_restart(tmp_path):
    stream = Stream(stream_config(REPORT_THEN_HANG), host(tmp_path))
    stream.start()
    await wait_until(lambda: stream.state is StreamState.LIVE, 5, "live")
    first = stream.pid
    stream._task.cancel()  # the loop ends, as an unexpected BaseException would end it
    await asyncio.sleep(0.1)
    await asyncio.wait_for(stream.restart("manual"), 5)
    await wait_until(lambda: stream.pid not in (None, first), 5, "a new process")
    await asyncio.wait_for(stream.close(), 5)
    assert not alive(first)


@pytest.mark.slow
async def test_stall_timeout_from_0_to_positive_arms_the_running_process(tmp_path):
    stream = Stream(stream_config(REPORT_THEN_HANG), host(tmp_path))
    stream.start()
    await wait_until(lambda: stream.state is StreamState.LIVE, 5, "live")
    pid = stream.pid
    await stream.apply(dataclasses.replace(stream.cfg, stall_timeout=1.0), restart=False)
    await wait_until(lambda: stream.restart_reasons["stall"] == 1, 6, "a stall restart")
    assert stream.pid != pid and not alive(pid)
    # And back to 0: the new process is left alone.
    await stream.apply(dataclasses.replace(stream.cfg, stall_timeout=0), restart=False)
    await wait_until(lambda: stream.state is StreamState.LIVE, 5, "live again")
    await asyncio.sleep(1.5)
    assert stream.restart_reasons["stall"] == 1
    await stream.close()


@pytest.mark.slow
async def test_a_recording_output_that_stopped_is_reopened_once_there_is_room(tmp_path):
    """Out of inodes (a real tmpfs), FFmpeg drops the output however many bytes are free: the
    watch waits for inodes too, then reopens it."""
    from agent.supervise.stall import watch_recording
    folder = tmp_path / "rec"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m,nr_inodes=128", "tmpfs", str(folder)], check=True)
    try:
        playlist = folder / "index.m3u8"
        playlist.write_bytes(b"#EXTM3U\n")
        stray = folder / "stray.ts"
        stray.write_bytes(b"x")
        fillers = []
        with contextlib.suppress(OSError):
            for i in range(256):
                (folder / f"filler{i}").touch()
                fillers.append(folder / f"filler{i}")
        reopened = asyncio.Event()
        task = asyncio.create_task(watch_recording(playlist, 1.0, media_flowing=lambda: True, reopen=reopened.set))
        # A file written in the folder is no segment FFmpeg finished: only a new playlist says so.
        for _ in range(14):  # past the 10 s of quiet, with 128 MiB but no inode free: not reopened
            with open(stray, "ab") as f:
                f.write(b"x")
            await asyncio.sleep(1)
        assert not reopened.is_set()
        for filler in fillers:
            filler.unlink()
        await asyncio.wait_for(reopened.wait(), 6)  # inodes free again
        await task
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _watched(folder: Path) -> tuple[asyncio.Event, asyncio.Task]:
    """A camera's ``folder`` (made) with its playlist, under the recording watch (1 s segments,
    media flowing): the event set when it asks for a reopen, and its task."""
    from agent.supervise.stall import watch_recording
    folder.mkdir(parents=True)
    playlist = folder / "index.m3u8"
    playlist.write_bytes(b"#EXTM3U\n")
    reopened = asyncio.Event()
    return reopened, asyncio.create_task(watch_recording(playlist, 1.0, media_flowing=lambda: True,
                                                         reopen=reopened.set))


@pytest.mark.slow
async def test_a_recording_folder_removed_under_ffmpeg_is_reopened_once_its_parent_is_there(tmp_path):
    """``rm -r`` of a camera's folder: FFmpeg never makes it again, so the watch asks for the restart
    that does (it judged the room of the missing folder, failed, and waited for ever); with the
    recording root gone as well there is nowhere to reopen into, and it waits for the root."""
    root = tmp_path / "recordings"
    reopened, task = _watched(root / "cam")
    try:
        shutil.rmtree(root)
        await asyncio.sleep(14)  # past the 10 s of quiet: no folder and no root, nothing to reopen into
        assert not reopened.is_set()
        root.mkdir()  # the root is back (mounted again, say), the camera's folder is not
        await asyncio.wait_for(reopened.wait(), 6)
        await task
    finally:
        task.cancel()


@pytest.mark.slow
async def test_a_recording_folder_replaced_by_a_file_is_logged_not_reopened_and_reopened_once_it_goes(tmp_path, caplog):
    """A file where the camera's folder was: FFmpeg writes no segment, and a restart could not make
    the folder (so the stream would not start, viewers' feed and all).  The watch stayed silent for
    the life of the process (the stat of the playlist failed with ENOTDIR every check); it now says
    so once, keeps the process, and reopens once the file is gone."""
    folder = tmp_path / "recordings" / "cam"
    reopened, task = _watched(folder)
    try:
        await asyncio.sleep(2.5)  # the playlist seen once
        shutil.rmtree(folder)
        folder.write_text("not a folder\n")
        with caplog.at_level("WARNING", logger="vas.stream"):
            await asyncio.sleep(16)  # past the 10 s of quiet, and a few checks more
        assert not reopened.is_set()
        said = [r.getMessage() for r in caplog.records if "is not a directory" in r.getMessage()]
        assert said == [f"recording stopped: {folder} is not a directory; remove it and recording resumes "
                        "(live video goes on meanwhile)"], caplog.text
        folder.unlink()
        await asyncio.wait_for(reopened.wait(), 6)
        await task
    finally:
        task.cancel()


@pytest.mark.slow
async def test_a_growing_recording_is_left_alone(tmp_path):
    from agent.supervise.stall import watch_recording
    reopened = asyncio.Event()
    playlist = tmp_path / "index.m3u8"
    task = asyncio.create_task(watch_recording(playlist, 1.0, media_flowing=lambda: True, reopen=reopened.set))
    for i in range(7):  # a segment every 2 s for 14 s, and its playlist renamed into place as FFmpeg does
        (tmp_path / f"{i}.ts").write_bytes(b"x")
        (tmp_path / "index.m3u8.tmp").write_text(f"#EXTM3U\n#EXTINF:2,\n{i}.ts\n")
        os.replace(tmp_path / "index.m3u8.tmp", playlist)
        await asyncio.sleep(2)
    assert not reopened.is_set()
    task.cancel()


#: A command without progress reports that keeps one file open in its recording directory and
#: writes to it every 0.3 s while ``$2/write`` exists (as FFmpeg's segment muxer with flush_packets does): its progress.
WRITER = ("/bin/sh", "-c", 'exec 3>>"$1/seg.ts.tmp"; while :; do [ -e "$2/write" ] && echo x >&3; sleep 0.3; done',
          "writer", "{recording_dir}")


@pytest.mark.slow
async def test_a_command_without_progress_lives_by_its_writes_and_deletions_are_not_progress(tmp_path):
    control = tmp_path / "control"
    control.mkdir()
    (control / "write").touch()
    cfg = stream_config((*WRITER, str(control)), stall_timeout=3, ready_after=60,
                        recording=RecordingConfig(enabled=True, retention=0))
    stream = Stream(cfg, host(tmp_path / "rec"))
    stream.start()
    try:
        # Live from its first write (ready_after alone would take 60 s), and never stalled while writing.
        await wait_until(lambda: stream.state is StreamState.LIVE, 5, "live from the first write")
        first = stream.pid
        folder = tmp_path / "rec" / "cam"
        for i in range(200):  # footage for "retention" to delete below
            (folder / f"old{i}.ts").touch()
        await asyncio.sleep(4.5)
        assert stream.pid == first and stream.restart_reasons["stall"] == 0
        # It stops writing; old footage deleted from its folder meanwhile is no progress: a stall.
        (control / "write").unlink()
        for i in range(200):
            (folder / f"old{i}.ts").unlink()
            if stream.restart_reasons["stall"]:
                break
            await asyncio.sleep(0.05)
        await wait_until(lambda: stream.restart_reasons["stall"] == 1, 8, "a stall kill")
    finally:
        await stream.close()


async def test_what_a_process_left_in_its_group_dies_with_it_and_does_not_delay_the_respawn(tmp_path):
    # `sh -c 'sleep 600 & exec ffmpeg ...'`: FFmpeg exits, the background job holds the pipes.
    # It outlived the agent (one more per restart, a second writer beside the next run) and
    # every exit waited DRAIN_TIMEOUT for pipes it kept open.
    pids = tmp_path / "pids"
    command = ("/bin/sh", "-c", f"sleep 600 & echo $! >> {pids}; sleep 0.2; exit 1", "{progress}")
    stream = Stream(stream_config(command), host(tmp_path))
    stream.start()
    clock = asyncio.get_running_loop().time
    try:
        await wait_until(lambda: stream.pid is not None, 5, "the first run")
        first_run, started = stream.pid, clock()
        await wait_until(lambda: stream.pid not in (None, first_run), 5, "the next run")
        took = clock() - started  # 0.2 s of run, 0.05 s of backoff
        first = int(pids.read_text().split()[0])
        await wait_until(lambda: not alive(first), 2, f"the first run's background job {first} to die")
        # Waiting out the pipes would add DRAIN_TIMEOUT; the margin is what the machine may add.
        assert took < 0.2 + QUICK.initial_delay + DRAIN_TIMEOUT - 0.1, f"the next run came {took:.2f}s after the first"
    finally:
        await asyncio.wait_for(stream.close(), 5)
        for pid in map(int, pids.read_text().split()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
