"""One "disk used %" everywhere, and it is df's (issue 18, item 17); the filesystem gauges are
there from the first scrape after a snapshot exists (item 16).

A real ext4 filesystem with 5 % of its blocks reserved for root, loop-mounted, is where two
definitions would part: reserved blocks are neither used nor available to ``df``."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.config.model import RecordingsConfig
from agent.diskuse import used_percent
from agent.recordings.disk import measure
from exporter.app import create_app

from .conftest import snapshot_dict, stream


@pytest.fixture
def ext4(tmp_path):
    """A 64 MiB ext4 (5 % reserved) mounted at tmp_path/mnt, 20 MiB used."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        pytest.fail("needs root and mkfs.ext4 for a loop mount (CI runs as root; Debian: e2fsprogs)", pytrace=False)
    image, mnt = tmp_path / "fs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(image, "wb") as fh:
        fh.truncate(64 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "5", str(image)], check=True, timeout=60)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True, timeout=60)
    try:
        (mnt / "cam1").mkdir()
        (mnt / "cam1" / "a.ts").write_bytes(os.urandom(20 * 2**20))
        os.sync()
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True, timeout=60)


def df_percent(path: Path) -> int:
    out = subprocess.run(["df", "--output=pcent", str(path)], capture_output=True, text=True, check=True, timeout=30)
    return int(out.stdout.splitlines()[1].strip().rstrip("%"))


def test_used_percent_rounds_up_like_df():
    assert used_percent(1, 3) == 25.0 and used_percent(1, 2) == 33.34 and used_percent(0, 10) == 0.0
    assert used_percent(10, 0) == 100.0 and used_percent(0, 0) == 0.0


async def test_snapshot_api_and_metrics_agree_with_df(ext4, aiohttp_client, node):
    want = df_percent(ext4)
    fd = os.open(ext4, os.O_RDONLY | os.O_DIRECTORY)
    try:
        (fs,) = measure(fd, RecordingsConfig(), str(ext4), {})
    finally:
        os.close(fd)
    snapshot_figures = [fs.legacy_view()["used_percent"], fs.view()["used_percent"]]
    node.write(snapshot_dict([stream("cam1")], root=str(ext4)))
    client = await aiohttp_client(create_app(node.settings))
    api = [(await (await client.get("/v2/health/recordings")).json())["filesystem"]["used_percent"],
           (await (await client.get("/v2/health/system")).json())["recordings"]["filesystem"]["used_percent"]]
    text = await (await client.get("/v2/metrics")).text()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("vas_recording_filesystem_")}
    used, free = values["vas_recording_filesystem_used_bytes"], values["vas_recording_filesystem_free_bytes"]
    metric = 100 * used / (used + free)  # the ratio docs/metrics.md gives for dashboards
    assert [math.ceil(p) for p in (*snapshot_figures, *api, metric)] == [want] * 5, (snapshot_figures, api, metric)


async def test_filesystem_gauges_are_there_from_the_first_scrape(aiohttp_client, node, tmp_path):
    (node.runtime / "state.json").unlink()  # the exporter starts before the agent's first snapshot
    client = await aiohttp_client(create_app(node.settings))
    assert (await client.get("/v2/metrics")).status == 200
    node.write(snapshot_dict([stream("cam1")], root=str(tmp_path)))
    for _ in range(3):  # the first scrape, and every one after: never gone in between
        text = await (await client.get("/v2/metrics")).text()
        assert "\nvas_recording_filesystem_free_bytes " in text and "\nvas_recording_filesystem_size_bytes " in text
    (node.runtime / "state.json").write_bytes(b"garbage")  # unreadable now: the root last known still counts
    assert "\nvas_recording_filesystem_free_bytes " in await (await client.get("/v2/metrics")).text()
