"""The console page's load time on loopback, in Debian's headless Chromium, against a real node.

What it measures
    A real node as the browser tests run it (tests/console/node.py: the GStreamer RTSP camera,
    vas-agent with FFmpeg, vas-exporter) with 3 live cameras, plus --cheap N cheap streams (no
    camera: the 100-camera grid).  Then --rounds page loads in one headless Chromium with the HTTP
    cache disabled (every file fetched again, as on a first visit), each read from the browser's
    own Navigation Timing: ``load`` (loadEventEnd: the page and its three files, hls.js included)
    and ``first render`` (the page's ``vas-first-render`` mark: the grid drawn from the first
    status answer, every camera's name and state on screen).  Printed as p50 / max next to the
    target (<= 300 ms) and the size of our own code (<= 50 kB; hls.js is vendored and counted apart).

How to run
    .venv/bin/python bench/console_page.py                 # --rounds 20 --cheap 0
    .venv/bin/python bench/console_page.py --cheap 100     # the grid at 103 cameras
Needs ./install.sh --dev (chromium, chromium-driver, selenium).  Everything lives in a temp
directory; every process started is stopped at the end (errors and Ctrl-C included).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests.console.browser import Browser  # noqa: E402
from tests.console.node import ConsoleNode  # noqa: E402

CONSOLE = ROOT / "exporter" / "console"
TARGET_MS = 300
TIMING = """
    const nav = performance.getEntriesByType('navigation')[0];
    const mark = performance.getEntriesByName('vas-first-render')[0];
    return nav && nav.loadEventEnd > 0 && mark ? [nav.loadEventEnd, mark.startTime, nav.transferSize] : null;"""


def load_once(browser: Browser, url: str) -> tuple[float, float]:
    """One fresh page load: (load, first render) in ms since navigation start."""
    browser.driver.get(url)
    deadline = time.monotonic() + 30
    while (got := browser.js(TIMING)) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the page did not render within 30 s; console: {browser.console_text()[-1000:]}")
        time.sleep(0.01)
    return got[0], got[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cheap", type=int, default=0, help="cheap streams beside the 3 cameras")
    args = ap.parse_args()
    ours = sum((CONSOLE / n).stat().st_size for n in ("index.html", "app.js", "app.css"))
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        node = ConsoleNode(Path(tmp) / "node", cheap=args.cheap)
        node.workdir.mkdir()
        browser = None
        try:
            node.start()
            browser = Browser(Path(tmp) / "downloads")
            browser.driver.execute_cdp_cmd("Network.enable", {})
            browser.driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
            load_once(browser, node.url())  # the exporter's first answers (imports, file opens) apart
            loads, renders = [], []
            for _ in range(args.rounds):
                load, render = load_once(browser, node.url())
                loads.append(load)
                renders.append(render)
        finally:
            if browser is not None:
                browser.quit()
            node.close()
    streams = 3 + args.cheap
    print(f"console page on loopback, {streams} streams, {args.rounds} cold loads (HTTP cache off):")
    for label, values in (("load", loads), ("first render", renders)):
        print(f"  {label:12}  p50 {statistics.median(values):6.1f} ms   max {max(values):6.1f} ms"
              f"   (target <= {TARGET_MS})")
    print(f"  our code: {ours} bytes (target <= 50000); vendored hls.js: "
          f"{(CONSOLE / 'vendor' / 'hls.min.js').stat().st_size} bytes")
    return 0 if statistics.median(renders) <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
