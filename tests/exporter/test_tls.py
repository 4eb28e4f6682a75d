"""exporter.tls: HTTPS with a self-signed certificate made by openssl, checked by a real
vas-exporter process: trusted clients get answers, plain HTTP and untrusting clients
don't, a broken pair is refused by --check, and SIGHUP picks up a renewed certificate."""
from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from camera.fixture import free_port
from tests.integration.harness import wait_for

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def make_cert(directory: Path, name: str, cn: str = "127.0.0.1") -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", f"subjectAltName=IP:{cn}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def write_config(path: Path, port: int, runtime: Path, tls: dict | None) -> None:
    exporter: dict = {"listen": f"127.0.0.1:{port}", "tokens_file": str(path.parent / "tokens")}
    if tls is not None:
        exporter["tls"] = tls
    path.write_text(json.dumps({"version": 1, "node": {"runtime_dir": str(runtime)}, "streams": {},
                                "exporter": exporter}))


def served_fingerprint(port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der or b"").hexdigest()


def fingerprint(cert: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()


@pytest.fixture
def https_exporter(tmp_path):
    cert, key = make_cert(tmp_path, "one")
    port, conf = free_port(), tmp_path / "streams.yaml"
    write_config(conf, port, tmp_path / "run", {"cert_file": cert.name, "key_file": key.name})
    log = open(tmp_path / "exporter.log", "ab")
    proc = subprocess.Popen([str(BIN / "vas-exporter"), "--config", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: served_fingerprint(port), 15, "the HTTPS exporter")
    yield port, cert, key, proc, tmp_path
    proc.terminate()
    proc.wait(10)
    log.close()


def get(url: str, cafile: Path | None) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else ssl.create_default_context()
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_https_for_trusting_clients_only(https_exporter):
    port, cert, _key, _proc, _tmp = https_exporter
    code, body = get(f"https://127.0.0.1:{port}/livez", cert)
    assert code == 200 and json.loads(body)["status"] == "ok"
    code, body = get(f"https://127.0.0.1:{port}/v2/metrics", cert)
    assert code == 200 and "vas_agent_up" in body
    context = ssl.create_default_context(cafile=str(cert))
    with pytest.raises(urllib.error.HTTPError) as info:  # tokens are still required over TLS
        urllib.request.urlopen(urllib.request.Request(f"https://127.0.0.1:{port}/v2/health/recordings/cleanup",
                                                      method="POST"), timeout=5, context=context)
    assert info.value.code == 401
    with pytest.raises(urllib.error.URLError):
        get(f"https://127.0.0.1:{port}/livez", None)  # a client that does not trust the certificate
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=5).read()  # plain HTTP gets nothing


def test_sighup_picks_up_a_renewed_certificate_and_keeps_the_old_one_if_broken(https_exporter):
    port, cert, key, proc, tmp = https_exporter
    assert served_fingerprint(port) == fingerprint(cert)
    new_cert, new_key = make_cert(tmp, "two")
    new_cert.replace(cert)
    new_key.replace(key)
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: served_fingerprint(port) == fingerprint(cert), 10, "the renewed certificate served")
    renewed = fingerprint(cert)
    key.write_text("not a key\n")  # a broken renewal
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in (tmp / "exporter.log").read_text(), 10, "the broken renewal refused")
    assert served_fingerprint(port) == renewed and get(f"https://127.0.0.1:{port}/livez", cert)[0] == 200


@pytest.mark.parametrize("tls, expected", [
    ({"cert_file": "one.crt"}, "exporter.tls.key_file: required with tls:"),
    ({"cert_file": "one.crt", "key_file": "missing.key"}, "exporter.tls.key_file: cannot read"),
    ({"cert_file": "one.crt", "key_file": "two.key"}, "exporter.tls: one.crt and two.key are not a usable"),
    ({"cert_file": "one.crt", "key_file": "one.key", "ca": "x"}, "exporter.tls.ca: unknown key"),
])
def test_check_refuses_a_bad_tls_section_naming_file_line_and_key(tmp_path, tls, expected):
    make_cert(tmp_path, "one")
    make_cert(tmp_path, "two")
    conf = tmp_path / "streams.yaml"
    write_config(conf, free_port(), tmp_path / "run", tls)
    out = subprocess.run([str(BIN / "vas-exporter"), "--config", str(conf), "--check"], capture_output=True, text=True)
    assert out.returncode == 1 and f"{conf}:1: {expected}" in out.stderr, out.stderr
