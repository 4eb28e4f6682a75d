"""Debian's Chromium, driven by Selenium through the system chromedriver (no browser download).

Headless as root needs ``--no-sandbox --headless=new --disable-dev-shm-usage``.  Every network
request the page makes and everything it logs are kept (``requests``, ``console``) so a test can
check where the page went and what it said; ``quit()`` always ends the browser.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--no-sandbox", "--headless=new", "--disable-dev-shm-usage", "--window-size=1280,860",
    "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--no-first-run",
    # Nothing of Chromium's own traffic (updates, sync, safe browsing) beside the page's.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--disable-client-side-phishing-detection",
)


class Browser:
    """One headless Chromium with its performance (network) and browser (console) logs."""

    def __init__(self, downloads: Path) -> None:
        self.downloads = downloads
        downloads.mkdir(parents=True, exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in FLAGS:
            opts.add_argument(flag)
        opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                               "download.prompt_for_download": False})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            self.driver.set_page_load_timeout(30)
            self.driver.set_script_timeout(30)
            self.driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                                        {"behavior": "allow", "downloadPath": str(downloads)})
        except Exception:
            self.driver.quit()  # the caller never gets an object to quit
            raise
        self.events: list[dict[str, Any]] = []  # performance log messages, kept (reading drains them)
        self.console: list[dict[str, Any]] = []

    def quit(self) -> None:
        self.driver.quit()

    # -- page ---------------------------------------------------------------
    def open(self, url: str, token: str | None = None) -> None:
        """Load the console; with ``token``, give it through the page's own token form."""
        self.driver.get(url)
        if token is not None:
            self.give_token(token)

    def give_token(self, token: str) -> None:
        if not self.driver.find_element(By.ID, "token-form").is_displayed():
            self.driver.find_element(By.ID, "token-button").click()
        field = self.driver.find_element(By.ID, "token-input")
        field.clear()
        field.send_keys(token)
        self.driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
             detail: Callable[[], str] | None = None) -> Any:
        """Poll ``check`` until truthy; fail naming ``what``, ``detail()`` and the page's console on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(interval)
        said = f" ({detail()})" if detail else ""
        raise AssertionError(f"timed out after {timeout}s waiting for {what}{said}; "
                             f"console: {self.console_text()[-2000:]}")

    def tiles(self) -> dict[str, dict[str, Any]]:
        """Every tile by stream id: the text of its fields, and its live video's state."""
        return self.js("""
            const out = {};
            for (const t of document.querySelectorAll('#grid article.tile')) {
              const f = (c) => t.querySelector(`[data-f="${c}"]`).textContent;
              const v = t.querySelector('[data-f=live]'), picture = t.querySelector('[data-f=picture]');
              out[t.dataset.stream] = {name: f('name'), state: f('state'), error: f('error'), uptime: f('uptime'),
                recorded: f('recorded'), video: f('video'), playing: picture.classList.contains('playing'),
                live: Boolean(v.currentSrc), time: v.currentTime,
                thumb: Boolean(t.querySelector('[data-f=thumb]').src)};
            }
            return out;""")

    def nonblack(self, selector: str) -> float:
        """The share of pixels in a canvas copy of the video's current frame that are not near-black."""
        return self.js("""
            const v = document.querySelector(arguments[0]);
            if (!v || !v.videoWidth) return -1;
            const c = document.createElement('canvas');
            c.width = v.videoWidth; c.height = v.videoHeight;
            const g = c.getContext('2d');
            g.drawImage(v, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data;
            let lit = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 48) lit += 1;
            return lit / (d.length / 4);""", selector)

    # -- logs ---------------------------------------------------------------
    def collect(self) -> None:
        for entry in self.driver.get_log("performance"):
            self.events.append(json.loads(entry["message"])["message"])
        self.console.extend(self.driver.get_log("browser"))

    def requests(self) -> list[str]:
        """Every URL the page asked for so far."""
        self.collect()
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def responses(self) -> list[tuple[str, int]]:
        """(url, status) of every response the page received so far."""
        self.collect()
        return [(e["params"]["response"]["url"], e["params"]["response"]["status"])
                for e in self.events if e["method"] == "Network.responseReceived"]

    def console_text(self) -> str:
        self.collect()
        return "\n".join(str(m.get("message")) for m in self.console)

    def network_text(self) -> str:
        self.collect()
        return json.dumps(self.events)

    def foreign_requests(self, port: int) -> list[str]:
        """Requests to anything but the node (blob: and data: URLs are the page's own memory)."""
        node = ("127.0.0.1", port)
        return [u for u in self.requests()
                if not u.startswith(("blob:", "data:")) and (urlsplit(u).hostname, urlsplit(u).port) != node]

    def dom_text(self) -> str:
        """The DOM as markup, its text, and every input's value."""
        return self.js("""return document.documentElement.outerHTML + '\\n' + document.body.innerText + '\\n'
            + [...document.querySelectorAll('input')].map((i) => i.value).join('\\n');""")
