"""The operator console in a real browser (Debian's Chromium, headless) against a real node:
the GStreamer RTSP camera, vas-agent with real FFmpeg, and vas-exporter serving the page.

Figures (page load time) belong in bench/console_page.py; these tests check behaviour, with
bounded waits only.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from .browser import Browser
from .node import PASSWORD, ConsoleNode, http

#: One worker runs this module's tests, so its module-scoped node is built once, not once per worker.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("console_browser")]
REPO = Path(__file__).resolve().parents[2]
SEGMENT = 1.0  # the harness's recording.segment_duration (tests/integration/harness.py FAST)


def assert_clean(browser: Browser, node: ConsoleNode) -> None:
    """The camera password nowhere the page shows or sends; no request to any host but the node;
    nothing the node's Content-Security-Policy had to refuse."""
    assert browser.foreign_requests(node.port) == []
    assert "Content Security Policy" not in browser.console_text()
    for where, text in (("DOM", browser.dom_text()), ("network log", browser.network_text()),
                        ("console log", browser.console_text())):
        assert PASSWORD not in text, f"the camera password is in the browser's {where}"


def test_the_grid_shows_every_stream_and_a_live_view_plays(console_node, browser):
    node = console_node
    browser.open(node.url(), node.viewer)
    tiles = browser.wait(lambda: (t := browser.tiles()) and len(t) == 3 and t, 10, "three tiles")
    assert {sid: t["name"] for sid, t in tiles.items()} == {"cam1": "Gate", "cam2": "Yard", "locked": "Office"}
    assert {t["state"] for t in tiles.values()} == {"live"}

    playing = browser.wait(lambda: (t := browser.tiles()["cam1"])["playing"] and t["time"] > 0 and t, 30,
                           "cam1's live view to play")
    first = playing["time"]
    browser.wait(lambda: browser.tiles()["cam1"]["time"] >= first + 2, 15, "currentTime to advance 2 s")
    lit = browser.nonblack('article[data-stream="cam1"] [data-f=live]')
    assert lit > 0.5, f"only {lit:.0%} of the live frame is non-black"
    # The status line fills in from the node (codec probed by the agent: never parsed from the URL).
    browser.wait(lambda: browser.tiles()["cam1"]["video"].startswith("h264"), 15, "codec and size")
    browser.wait(lambda: all(t["playing"] for t in browser.tiles().values()), 30, "every tile live")
    shot = browser.driver.get_screenshot_as_png()
    assert shot.startswith(b"\x89PNG")
    if os.environ.get("VAS_UPDATE_SCREENSHOT"):  # README's picture, taken here: VAS_UPDATE_SCREENSHOT=1 pytest ...
        (REPO / "docs" / "console.png").write_bytes(shot)
    assert_clean(browser, node)


def test_a_stopped_camera_shows_error_and_its_redacted_error_within_5_s(node_factory, browser):
    node = node_factory()
    browser.open(node.url(), node.viewer)
    browser.wait(lambda: browser.tiles().get("locked", {}).get("state") == "live", 15, "the locked tile live")
    node.locked.stop()
    deadline = time.monotonic() + 60
    while (status := node.stream_status("locked"))["state"] != "error":
        assert time.monotonic() < deadline, f"the agent never reported locked in error: {status}"
        time.sleep(0.1)
    shown = browser.wait(lambda: (t := browser.tiles()["locked"])["state"] == "error" and t["error"] and t, 10,
                         "the tile to show error and the last error")
    late = time.time() - status["since"]
    assert late <= 5, f"error shown {late:.1f} s after the stream went into error"
    assert PASSWORD not in shown["error"]
    # The node's own redacted text, as the node says it now (a text node: never markup). The run that
    # saw the camera go may end on any line (a DTS warning); a retry's refused connection names the URL.
    browser.wait(lambda: "***@" in (t := browser.tiles()["locked"]["error"]) and t, 20,
                 "a retry's error naming the camera's URL, its password redacted")
    browser.wait(lambda: browser.tiles()["locked"]["error"] == node.stream_status("locked")["last_error"], 10,
                 "the tile's last error to be the node's")
    browser.wait(lambda: browser.tiles()["locked"]["thumb"], 10, "the last picture as a thumbnail, live view gone")
    assert_clean(browser, node)
    assert PASSWORD not in node.logs()

    assert node.exporter is not None
    node.exporter.terminate()  # the node itself gone: said on the page within 5 s, the last state kept
    node.exporter.wait(10)
    banner = browser.driver.find_element(By.ID, "status-error")
    gone = time.monotonic()
    browser.wait(lambda: banner.is_displayed(), 5, "the page to say the node does not answer")
    assert time.monotonic() - gone <= 5 and "status" in banner.text
    assert len(browser.tiles()) == 3


def test_a_recorded_range_plays_and_downloads_as_a_valid_mp4(console_node, browser):
    node = console_node
    ranges = node.recorded_for("cam1", 10)
    newest = ranges[-1][1]
    start, end = newest - 8, newest - 2
    browser.open(node.url(), node.viewer)
    tile = browser.wait(lambda: browser.driver.find_element(By.CSS_SELECTOR, 'article[data-stream="cam1"]'), 10,
                        "cam1's tile")
    tile.send_keys(Keys.ENTER)  # the keyboard opens a camera
    browser.wait(lambda: browser.driver.find_element(By.ID, "range-start").get_attribute("value"), 10,
                 "the timeline", detail=lambda: browser.driver.find_element(By.ID, "rec-message").text)
    assert browser.driver.find_element(By.ID, "recordings").is_displayed()
    for field, value in (("range-start", start), ("range-end", end)):
        box = browser.driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(f"{value:.3f}")
    browser.driver.find_element(By.ID, "range-end").send_keys(Keys.ENTER)  # submits: Play
    browser.wait(lambda: browser.js("const v = document.getElementById('rec-video');"
                                    "return v.currentTime >= 3 || v.ended;"), 30, "the range to play 3 s")
    assert browser.nonblack("#rec-video") > 0.5

    browser.driver.find_element(By.ID, "range-download").click()
    clip = browser.wait(lambda: [p for p in browser.downloads.glob("*.mp4")], 60, "the downloaded clip")[0]
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration,format_name",
                            "-of", "json", str(clip)], capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0, probe.stderr
    fmt = json.loads(probe.stdout)["format"]
    assert "mp4" in fmt["format_name"]
    assert abs(float(fmt["duration"]) - (end - start)) <= SEGMENT, fmt

    # A range the node refuses (nothing recorded then; past the size cap it is a 413, the same path):
    # the page shows the node's own words, not a bare status code.
    future = time.time() + 3600
    for field, value in (("range-start", future), ("range-end", future + 60)):
        box = browser.driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(f"{value:.0f}")
    code, body, _ = http(node.port, f"/v2/recordings/cam1/clip.mp4?start={future:.0f}&end={future + 60:.0f}",
                         node.viewer)
    assert code >= 400
    said = browser.driver.find_element(By.ID, "rec-message")
    browser.driver.find_element(By.ID, "range-download").click()
    browser.wait(lambda: said.text == json.loads(body)["error"], 10, "the node's refusal on the page",
                 detail=lambda: said.text)

    browser.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    browser.wait(lambda: not browser.driver.find_element(By.ID, "recordings").is_displayed(), 5, "Esc to close")
    assert browser.driver.switch_to.active_element.get_attribute("data-stream") == "cam1"  # focus back on the tile
    assert_clean(browser, node)


def test_without_a_token_no_video_is_served_and_the_page_says_why(console_node, browser, tmp_path):
    node = console_node
    live = http(node.port, "/v2/streams/cam1/live.m3u8", node.viewer)
    assert live[0] == 200, live
    segment = next(line for line in live[1].decode().splitlines() if line and not line.startswith("#"))
    now = time.time()
    video_routes = ["/v2/streams/cam1/live.m3u8", segment, "/v2/streams/cam1/snapshot.jpg",
                    f"/v2/recordings/cam1/playlist.m3u8?start={now - 20:.0f}&end={now:.0f}",
                    f"/v2/recordings/cam1/clip.mp4?start={now - 20:.0f}&end={now:.0f}",
                    "/v2/recordings/cam1/timeline"]
    read = node.token("reader", "read")
    for path in video_routes:
        assert http(node.port, path)[0] == 401, path
        assert http(node.port, path, "not-a-token")[0] == 401, path
        assert http(node.port, path, read)[0] == 403, path

    browser.open(node.url())  # a new tab: nothing in sessionStorage
    browser.wait(lambda: len(browser.tiles()) == 3, 10, "the tiles (status needs no token)")
    why = browser.driver.find_element(By.ID, "auth")
    assert why.is_displayed() and "vasctl token add" in why.text and "viewer" in why.text
    browser.give_token(read)
    browser.wait(lambda: "403" in why.text and "viewer scope" in why.text, 10, "the wrong scope on the page")
    browser.give_token("not-a-token")
    browser.wait(lambda: "401" in why.text, 10, "the node's refusal on the page")
    assert not any(t["playing"] or t["thumb"] for t in browser.tiles().values())
    served = [(u, s) for u, s in browser.responses() if re.search(r"/v2/(streams|recordings)/", u) and s < 400]
    assert served == []
    assert_clean(browser, node)


def test_a_hundred_cameras_get_tiles_and_only_on_screen_ones_play(node_factory, browser):
    node = node_factory(cheap=100)
    browser.open(node.url(), node.viewer)
    tiles = browser.wait(lambda: (t := browser.tiles()) and len(t) == 103 and t, 20, "103 tiles")
    assert all(t["state"] for t in tiles.values())
    browser.wait(lambda: browser.tiles()["cam1"]["playing"], 30, "the first tile live")
    time.sleep(3)  # a few polls: the page keeps up with 103 streams
    playing = [sid for sid, t in browser.tiles().items() if t["live"]]
    assert 1 <= len(playing) <= 16, playing
    offscreen = browser.js("""return [...document.querySelectorAll('#grid article.tile')]
        .filter((t) => t.getBoundingClientRect().top > 2 * innerHeight).map((t) => t.dataset.stream);""")
    assert offscreen and not set(offscreen) & set(playing)
    snapshots = [u for u in browser.requests() if u.endswith("/snapshot.jpg")]
    assert len(snapshots) < 103  # thumbnails only for tiles near the screen
    assert_clean(browser, node)


@pytest.fixture(autouse=True)
def _need_chromium():
    missing = [p for p in ("/usr/bin/chromium", "/usr/bin/chromedriver") if not shutil.which(p)]
    if missing:  # a failure, not a skip: CI installs them (./install.sh --dev), so a skip would prove nothing
        pytest.fail(f"{', '.join(missing)} missing: run ./install.sh --dev (Debian chromium chromium-driver)")


def test_a_poll_that_lands_between_retries_still_shows_error(console_node, browser):
    """A dead camera cycles error -> initializing (the retry) -> error; the 2 s poll can alias with the
    backoff, so a stream that failed since the last poll shows error until it is up again."""
    browser.open(console_node.url(), console_node.viewer)
    browser.wait(lambda: len(browser.tiles()) == 3, 10, "the tiles")
    cases = [  # (this poll, the last poll's shown state and failures) -> shown
        ({"state": "initializing", "restarts": 0}, None, "initializing"),  # first start
        ({"state": "initializing", "restarts": 3}, {"state": "error", "failures": 2}, "error"),
        ({"state": "initializing", "restarts": 3}, {"state": "live", "failures": 2}, "error"),  # missed the error
        ({"state": "initializing", "restarts": 3, "failures": 1}, {"state": "live", "failures": 1},
         "initializing"),  # a reload's restart is no failure
        ({"state": "live", "restarts": 3}, {"state": "error", "failures": 3}, "live"),
    ]
    got = browser.driver.execute_async_script("""
        const [cases, done] = arguments;
        import('/console/app.js').then((m) => done(cases.map(([s, last]) => m.shownState(s, last))));""",
                                              [[s, last] for s, last, _ in cases])
    assert got == [want for _, _, want in cases]


def test_a_fleet_owner_link_is_only_ever_an_http_link(console_node, browser):
    """Fleet mode links each stream to its owner's console: a URL from the cluster is data, never script."""
    browser.open(console_node.url())
    browser.wait(lambda: len(browser.tiles()) == 3, 10, "the tiles")
    urls = ["http://node-b:8080/", "https://node-c.example/", "javascript:alert(1)", "data:text/html,x", "node-b", None]
    got = browser.driver.execute_async_script("""
        const [urls, done] = arguments;
        import('/console/app.js').then((m) => done(urls.map((u) => m.safeHref(u))));""", urls)
    assert got == ["http://node-b:8080/", "https://node-c.example/", "", "", "", ""]
