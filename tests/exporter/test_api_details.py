"""HTTP details of the exporter (issue 18, items 12 and 13): 405 names the allowed methods,
no answer may be cached, /readyz's age moves between snapshots, and a cleanup's
``retention_days`` is a plain ASCII decimal given once."""
from __future__ import annotations

import subprocess
import sys

import pytest

from agent.config import cleanup as cleanup_params

from .test_api import GETS


@pytest.mark.parametrize("method,path,allowed", [
    ("POST", "/v2/health/system", {"GET", "HEAD"}),
    ("DELETE", "/readyz", {"GET", "HEAD", "OPTIONS"}),
    ("GET", "/v2/health/recordings/cam1/cleanup", {"POST"}),
    ("PUT", "/v2/health/consumers/c1/heartbeat", {"POST"}),
    ("GET", "/v2/streams/cam1/consumers/c1", {"DELETE"}),
])
async def test_405_carries_an_allow_header(client, method, path, allowed):
    resp = await client.request(method, path)
    assert resp.status == 405
    assert {m.strip() for m in resp.headers["Allow"].split(",")} == allowed
    assert "error" in await resp.json()


@pytest.mark.parametrize("path", [*GETS, "/v2/fleet/targets", "/v2/health/consumers/nobody", "/v2/nothing"])
async def test_every_api_answer_is_no_store(client, path):
    resp = await client.get(path)
    assert resp.headers.get("Cache-Control") == "no-store", (path, resp.status)


async def test_readyz_reports_the_snapshot_age_of_now_not_of_the_last_snapshot(client, node):
    node.age(1.0)
    first = await (await client.get("/readyz")).json()
    node.age(3.0)  # the same snapshot (same inode and size), only older
    second = await (await client.get("/readyz")).json()
    ages = [b["checks"][0]["value"] for b in (first, second)]
    assert 0.9 < ages[0] < 2.0 and 2.9 < ages[1] < 4.0, ages


@pytest.mark.parametrize("value", ["7_0", "\u0667", "\uff17", " 7", "7 ", "1e1", "inf", "nan", "+7", "0x10",
                                   "7.0.1", ""])
def test_retention_days_is_a_plain_ascii_decimal(value):
    with pytest.raises(cleanup_params.BadParameter):
        cleanup_params.parse({"retention_days": value}, allowed=("retention_days",))


@pytest.mark.parametrize("value,days", [("7", 7.0), ("0.5", 0.5), (".5", 0.5), ("7.", 7.0),
                                        ("0.0416667", 0.0416667), ("36500", 36500.0)])
def test_plain_decimals_are_taken_exactly(value, days):
    assert cleanup_params.parse({"retention_days": value}, allowed=("retention_days",)).retention_days == days


@pytest.mark.parametrize("value", ["7_0", "\u0667"])
async def test_the_api_refuses_them_with_400_naming_the_parameter(client, node, value):
    resp = await client.post("/v2/health/recordings/cleanup", params={"retention_days": value},
                             headers={"Authorization": f"Bearer {node.admin}"})
    assert resp.status == 400 and (await resp.json())["parameter"] == "retention_days"


async def test_a_repeated_retention_days_is_refused(client, node):
    resp = await client.post("/v2/health/recordings/cleanup?retention_days=30&retention_days=1",
                             headers={"Authorization": f"Bearer {node.admin}"})
    assert resp.status == 400 and (await resp.json())["parameter"] == "retention_days"


def test_vasctl_refuses_them_too(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import sys; from agent.cli import vasctl_main; "
                          "sys.exit(vasctl_main(sys.argv[1:]))", "--socket", str(tmp_path / "none.sock"),
                          "cleanup", "--dry-run", "--retention-days", "7_0"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and "--retention-days must be" in out.stderr, out.stderr
