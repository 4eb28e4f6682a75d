"""The console's files as they are served: small, readable, CSP-strict, and the vendored hls.js is
the pinned release (config/vendor-hls.sh holds its sha256)."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[2] / "exporter" / "console"
OURS = ("index.html", "app.js", "app.css")
VENDOR_SCRIPT = Path(__file__).resolve().parents[2] / "config" / "vendor-hls.sh"


def test_our_code_is_at_most_50_kB_with_no_build_step():
    sizes = {name: (CONSOLE / name).stat().st_size for name in OURS}
    assert sum(sizes.values()) <= 50_000, sizes
    assert sorted(p.name for p in CONSOLE.iterdir() if p.is_file()) == sorted(OURS)  # one JS module, no bundle
    for name in OURS:
        longest = max(len(line) for line in (CONSOLE / name).read_text().splitlines())
        assert longest <= 160, f"{name}: a line of {longest} characters: minified?"


def test_the_page_needs_nothing_a_strict_csp_refuses():
    html = (CONSOLE / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html), "inline style or event handler"
    for name in OURS:
        text = (CONSOLE / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f"{name} names another host"
    js = (CONSOLE / "app.js").read_text()
    # Whatever the node sends is text: a camera name or an FFmpeg error can never become markup.
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", js)


def test_the_vendored_hls_js_is_the_pinned_release_with_its_licence():
    pins = dict(re.findall(r"^(MIN_JS_SHA256|LICENSE_SHA256|VERSION)=(\S+)$", VENDOR_SCRIPT.read_text(), re.M))
    vendor = CONSOLE / "vendor"
    assert hashlib.sha256((vendor / "hls.min.js").read_bytes()).hexdigest() == pins["MIN_JS_SHA256"]
    assert hashlib.sha256((vendor / "LICENSE").read_bytes()).hexdigest() == pins["LICENSE_SHA256"]
    assert "Apache License" in (vendor / "LICENSE").read_text()
    assert pins["VERSION"] == "1.7.4"
