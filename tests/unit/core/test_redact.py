"""Credentials never shown: URL passwords and known secret values are masked."""
from __future__ import annotations

import io
import logging

import pytest

from agent.redact import RedactingFilter, redact, redact_url


@pytest.mark.parametrize(("url", "shown"), [
    ("rtsp://admin:pw@h", "rtsp://admin:***@h"),
    ("rtsp://admin:hunter22@10.0.0.5:554/Streaming/Channels/101",
     "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101"),
    ("rtsps://admin:pw@cam.example/live", "rtsps://admin:***@cam.example/live"),
    ("rtsp://admin:p%40ss@h/s", "rtsp://admin:***@h/s"),
    ("rtsp://admin:p:ss@h/s", "rtsp://admin:***@h/s"),
    ("rtsp://admin:p#s!s$@h/s", "rtsp://admin:***@h/s"),
    ("rtsp://admin:@h/s", "rtsp://admin:***@h/s"),
    ("rtsp://:pw@h/s", "rtsp://:***@h/s"),
    ("http://root:pw@h/", "http://root:***@h/"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_a_raw_at_sign_in_the_password_does_not_leak_its_tail():
    # FFmpeg splits credentials at the last '@' before the path, so cameras work
    # with raw '@' in passwords; the redaction must hide the whole password.
    shown = redact_url("rtsp://admin:p@ss@10.0.0.5/s")
    assert shown == "rtsp://admin:***@10.0.0.5/s"


@pytest.mark.parametrize("url", [
    "rtsp://10.0.0.5:554/stream1",
    "rtsp://admin@10.0.0.5/stream1",
    "rtsp://cam.example:8554/live?user=admin",
    "/var/lib/vas/recordings/lobby",
    "",
])
def test_urls_without_a_password_are_unchanged(url):
    assert redact_url(url) == url


def test_urls_inside_log_lines():
    line = ("[rtsp @ 0x55d0] method DESCRIBE failed: 401 Unauthorized\n"
            "rtsp://admin:hunter22@10.0.0.5:554/s: Server returned 401 Unauthorized; "
            "retrying rtsp://viewer:abc@10.0.0.6/s")
    assert redact_url(line) == (
        "[rtsp @ 0x55d0] method DESCRIBE failed: 401 Unauthorized\n"
        "rtsp://admin:***@10.0.0.5:554/s: Server returned 401 Unauthorized; "
        "retrying rtsp://viewer:***@10.0.0.6/s")


def test_redact_masks_secrets_anywhere():
    secrets = frozenset({"hunter22", "tok-abc123"})
    text = "auth hunter22 failed; token=tok-abc123 (again: hunter22)"
    assert redact(text, secrets) == "auth *** failed; token=*** (again: ***)"


def test_redact_masks_both_url_passwords_and_secrets():
    text = "opening rtsp://admin:hunter22@h/s with key s3cr3tkey"
    assert redact(text, {"s3cr3tkey"}) == "opening rtsp://admin:***@h/s with key ***"


def test_redact_catches_a_secret_in_a_mangled_url():
    # FFmpeg sometimes prints the URL percent-decoded or split; the secret set still applies.
    assert redact("Could not open 'admin' 'hunter22' at 10.0.0.5", {"hunter22"}) == (
        "Could not open 'admin' '***' at 10.0.0.5")


def test_redact_without_secrets_only_masks_urls():
    assert redact("rtsp://a:b@h plain hunter22") == "rtsp://a:***@h plain hunter22"


def test_a_secret_inside_a_longer_secret_does_not_leak_the_rest():
    # User "admin" (from ${CAM_USER}) and password "admin2024!" are both secrets.
    # Replacing the short one first would leave "***2024!" showing.  A set iterates
    # in hash order, so check many distinct pairs: some of them iterate short-first.
    for n in range(64):
        user, password = f"op{n}", f"op{n}-2024!"
        out = redact(f"login {user}/{password} refused", frozenset({user, password}))
        assert out == "login ***/*** refused", (user, password, out)


@pytest.mark.parametrize("url,password", [
    ("rtsp://user@domain:pass@10.0.0.5/s1", "pass"),
    ("rtsp://user@domain:p@ss@cam.local:554/s1", "p@ss"),
    ("rtsp://admin:pa/ss@cam/s1", "pa/ss"),
    ("rtsp://admin:pa ss@cam/s1", "pa ss"),
    ("rtsp://admin:pa#ss@cam/s1", "pa#ss"),
    ("rtsp://admin:p:a:s:s@[fe80::1]:554/s1", "p:a:s:s"),
])
def test_userinfo_is_redacted_up_to_the_last_at(url, password):
    for text in (url, f"[rtsp @ 0x55d] {url}: Connection refused", f"'{url}' and rtsp://b:x2@h2/"):
        shown = redact_url(text)
        assert password not in shown and ":***@" in shown
    assert redact_url("[tcp @ 0x5] rtsp://cam.local:554/x failed") == "[tcp @ 0x5] rtsp://cam.local:554/x failed"


def test_the_log_filter_redacts_messages_arguments_and_tracebacks():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactingFilter(frozenset({"hunter22"})))
    log = logging.getLogger("test.redacting")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("cam %s failed with %s", "rtsp://u@d:p@ss@cam/", "hunter22")
        try:
            raise ValueError("bad url rtsp://admin:hunter22@cam/ and rtsp://x:topsecret@h/")
        except ValueError:
            log.exception("reload failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "hunter22" not in text and "p@ss" not in text and "topsecret" not in text
    assert "rtsp://u@d:***@cam/" in text and "Traceback" in text


def test_redact_hides_known_secrets_anywhere():
    assert redact("token=abcdef-secret", frozenset({"abcdef-secret"})) == "token=***"
