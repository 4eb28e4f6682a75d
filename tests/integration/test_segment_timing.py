"""Segments dated by their media, not by when a starved FFmpeg got to write them: a real
camera, the product's HLS output, a real FFmpeg stopped (SIGSTOP) and let go, and the
watcher reading FFmpeg's playlist as it renames each new one into place."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from agent.config.model import RecordingConfig, StreamConfig
from agent.recordings import query
from agent.recordings.index import SegmentIndex
from agent.recordings.watch import PLAYLIST_MAX, Watch
from agent.supervise.ffmpeg import Launch, hls_output

from .harness import config, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SEG = 1.0


@pytest.mark.parametrize("dated", [True, False], ids=["templated", "without-program-date-time"])
def test_segments_written_in_a_burst_keep_their_media_times(rtsp_camera, tmp_path, dated):
    # The templated command dates each segment (program_date_time); an operator's command may
    # not, and then each segment starts where the one before it ended.
    root = tmp_path / "rec"
    (root / "cam").mkdir(parents=True)
    index = SegmentIndex(root)
    watch = Watch(root, index)
    watch.start()
    stream = StreamConfig(id="cam", url=rtsp_camera.url("cam1"), recording=RecordingConfig(segment_duration=SEG))
    launch = Launch(recording_dir=root / "cam", start_stamp="20261128T120000000Z")
    output = hls_output(stream, launch)
    if not dated:
        flags = output.index("-hls_flags") + 1
        output[flags] = output[flags].replace("+program_date_time", "")
    ffmpeg = subprocess.Popen(["ffmpeg", "-hide_banner", "-nostdin", "-v", "error", "-rtsp_transport", "tcp",
                               "-i", stream.url or "", *output], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: index.stats("cam")[0] >= 3, 30, "three segments")
        ffmpeg.send_signal(signal.SIGSTOP)  # starved: the camera's packets wait in the socket
        time.sleep(4 * SEG)
        ffmpeg.send_signal(signal.SIGCONT)  # then written in one burst
        wait_for(lambda: index.stats("cam")[0] >= 12, 60, "twelve segments")
    finally:
        ffmpeg.terminate()
        ffmpeg.wait(10)
        watch.stop()
    names = sorted(p.name for p in (root / "cam").glob("*.ts"))
    mtimes = [os.stat(root / "cam" / n).st_mtime for n in names]
    burst = max(range(1, len(mtimes)), key=lambda i: mtimes[i] - mtimes[i - 1])
    assert mtimes[burst] - mtimes[burst - 1] > 2.5 * SEG, "the stop made no burst (nothing to test)"
    found, _ = query.segments_between(index, "cam", mtimes[0] - 60, mtimes[-1] + 60, SEG)
    assert [s[0] for s in found] == names
    timed = [index.timing.span("cam", "", n) for n in names]
    assert all(t is not None for t in timed), "a segment the playlist named has no timing"
    for prev, seg in zip(found, found[1:]):  # back to back in media time, each about SEG long
        assert abs(prev[1] + prev[2] - seg[1]) < 0.05, (prev, seg)
    assert all(0.5 * SEG <= s[2] <= 2.5 * SEG for s in found[:-1]), [s[2] for s in found]


def test_a_playlist_past_the_size_of_a_live_one_is_not_read(tmp_path):
    # The watcher read the first 256 KiB of a bigger playlist (an hls_list_size 0 command after
    # hours): only old entries, looked up in the index under its lock at every new segment.
    root = tmp_path / "rec"
    (root / "cam").mkdir(parents=True)
    now = time.time()
    names = [f"cam_R_{i:06d}.ts" for i in range(10_000)]  # 340 KB listed
    entry = "#EXTINF:1.000000,\n{}\n"
    cut = (PLAYLIST_MAX - len("#EXTM3U\n")) // len(entry.format(names[0]))  # the entries 256 KiB hold
    planted = [*names[cut - 3:cut], names[-1]]
    for i, name in enumerate(planted):
        (root / "cam" / name).write_bytes(b"x")
        os.utime(root / "cam" / name, (now - 10 + i, now - 10 + i))
    index = SegmentIndex(root)
    index.scan_all()
    watch = Watch(root, index)
    watch.start()
    try:
        for playlist, listed in (("big.m3u8", names), ("index.m3u8", names[-1:])):  # in this order
            tmp = root / "cam" / f"{playlist}.tmp"
            tmp.write_text("#EXTM3U\n" + "".join(entry.format(n) for n in listed))
            tmp.rename(root / "cam" / playlist)
        wait_for(lambda: index.timing.span("cam", "", names[-1]) is not None, 10, "the live playlist read")
    finally:
        watch.stop()
    assert [index.timing.span("cam", "", n) for n in planted[:3]] == [None] * 3


def test_a_planted_playlist_takes_no_segment_out_of_the_agent_s_answers(rtsp_camera, agent_factory):
    # A playlist in the stream's folder dating its segments in year 9999 and in 1970, with 1e9 s
    # durations, rewritten in a loop; a FIFO, a symlink to /dev/zero and 1 MiB of noise named
    # .m3u8 beside it.  The agent's range answer lost every segment (the run's lead became
    # 8,000 years); the watcher must stay up and keep indexing.
    from agent.client import request
    agent = agent_factory(config({"cam1": {"url": rtsp_camera.url("cam1")}})).start()
    folder = agent.recordings / "cam1"
    wait_for(lambda: len(agent.segments("cam1")) >= 4, 30, "four segments")
    names = [p.name for p in agent.segments("cam1")]
    for k in range(200):
        date = "9999-12-31T00:00:00Z" if k % 2 else "1970-01-01T00:00:00Z"
        tmp = folder / "planted.m3u8.tmp"
        tmp.write_text("#EXTM3U\n" + "".join(f"#EXT-X-PROGRAM-DATE-TIME:{date}\n#EXTINF:1e9,\n{n}\n" for n in names)
                       + "#EXTINF:1,\n../../../etc/passwd.ts\n#EXTINF:1,\n/etc/x.ts\n")
        tmp.rename(folder / "planted.m3u8")
    os.mkfifo(folder / "fifo.m3u8")
    reader = os.open(folder / "fifo.m3u8", os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(folder / "fifo.m3u8", os.O_WRONLY)
    os.write(writer, b"#EXTINF:1,\nx.ts\n")
    os.close(writer)  # IN_CLOSE_WRITE on a FIFO: the watcher must not open it
    os.close(reader)
    os.symlink("/dev/zero", folder / "zero.m3u8")
    (folder / "noise.m3u8").write_bytes(os.urandom(1 << 20))
    before = len(agent.segments("cam1"))
    wait_for(lambda: len(agent.segments("cam1")) >= before + 2, 30, "two more segments")
    sock = str(agent.runtime_dir / "agent.sock")
    now = time.time()
    newest = lambda: request(sock, "GET", "/index/cam1/newest")[1]["segment"][0]  # noqa: E731
    wait_for(lambda: newest() not in names, 10, "a new segment indexed")
    status, body = request(sock, "GET", f"/index/cam1/segments?start={now - 300:.3f}&end={now + 60:.3f}")
    assert status == 200
    found = {s[0]: s for s in body["segments"]}
    assert set(names) <= set(found), (names, sorted(found))
    for name in names:
        mtime = os.stat(folder / name).st_mtime
        assert mtime - 5 < found[name][1] < mtime and 0 < found[name][2] < 5, found[name]
    assert "Traceback" not in agent.log(), agent.log()[-3000:]
