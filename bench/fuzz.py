"""Hostile-input figures: config fuzzing, HTTP fuzzing and control-socket abuse.

What it measures
    config    --cases structure-aware YAML configs and --raw raw byte strings
              (tests/faults/fuzzing.py) through the real loader, plus the classic
              attacks: every case must load or fail with ConfigError lines naming
              file:line (anchor: 0 tracebacks); the slowest case is printed.
    cli       --cli cases through `vas-agent --check` as a process: exit 0 or 1,
              no traceback (anchor: 0).
    http      schemathesis over /v2/openapi.json against a real exporter and agent,
              with and without a token, --examples per operation
              (tests/faults/test_http_fuzz.py): 0 5xx, 0 schema violations, 0
              changes without a token.
    socket    the control-socket abuse of tests/faults/test_control_socket_abuse.py
              (malformed HTTP, a 50 MB body, 200 slow clients, 800 bad requests):
              the agent's event-loop lag max and the worst /status round trip
              (anchor: the issue's 100 ms).

How to run
    .venv/bin/python bench/fuzz.py                         # 10,000 + 2,000 + 300 cases
    .venv/bin/python bench/fuzz.py --cases 500 --raw 200 --cli 20 --examples 50   # quick
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import _common as c  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.faults.fuzzing import ENV, attacks, check_load, structured  # noqa: E402

BIN = Path(sys.executable).parent


def config_fuzz(tmp: Path, cases: int, raw: int) -> tuple[int, list[str], float, str]:
    ran, failures, slowest = 0, [], (0.0, "")

    def one(data: bytes, label: str) -> None:
        nonlocal ran, slowest
        started = time.perf_counter()
        try:
            check_load(tmp / "streams.yaml", data)
        except BaseException as exc:  # a traceback in the product: counted, shown
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:200]}")
        took = time.perf_counter() - started
        ran += 1
        if took > slowest[0]:
            slowest = (took, f"{label} ({len(data)} bytes)")

    for strategy, n, label in ((structured(), cases, "structured"), (st.binary(max_size=4000), raw, "raw")):
        @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.tuples(strategy, st.just(label)))
        def run(case: tuple[bytes, str]) -> None:
            one(*case)
        run()
    for name, data in attacks():
        one(data, name)
    return ran, failures, slowest[0], slowest[1]


def cli_fuzz(tmp: Path, n: int) -> tuple[int, list[str]]:
    ran, failures = 0, []

    @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(structured() | st.binary(max_size=2000))
    def run(data: bytes) -> None:
        nonlocal ran
        path = tmp / "cli.yaml"
        path.write_bytes(data)
        out = subprocess.run([str(BIN / "vas-agent"), "--check", "--config", str(path)], capture_output=True,
                             text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **ENV})
        ran += 1
        if out.returncode not in (0, 1) or "Traceback" in out.stdout + out.stderr:
            failures.append(f"exit {out.returncode}: {out.stderr[-300:]}")
    run()
    return ran, failures


def pytest_figures(test: str, examples: int) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", test],
                         capture_output=True, text=True, cwd=ROOT, timeout=3600,
                         env={**os.environ, "VAS_FUZZ_EXAMPLES": str(examples)})
    lines = [ln for ln in out.stdout.splitlines() if re.search(r"^(schemathesis|abuse) ", ln)]
    return out.returncode, "\n".join(lines) or out.stdout[-2000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--raw", type=int, default=2_000)
    parser.add_argument("--cli", type=int, default=300)
    parser.add_argument("--examples", type=int, default=200, help="schemathesis examples per operation")
    args = parser.parse_args()
    print(c.machine_line())
    ok = True
    with tempfile.TemporaryDirectory(prefix="vas-fuzz-") as tmp:
        started = time.monotonic()
        ran, failures, slowest, which = config_fuzz(Path(tmp), args.cases, args.raw)
        print(f"config: {ran} cases in {time.monotonic() - started:.1f}s, {len(failures)} tracebacks "
              f"(anchor 0: {c.verdict(not failures)}); slowest {slowest * 1000:.0f} ms ({which})")
        for f in failures[:5]:
            print(f"  {f}")
        ok &= not failures
        started = time.monotonic()
        ran, failures = cli_fuzz(Path(tmp), args.cli)
        print(f"vas-agent --check: {ran} cases in {time.monotonic() - started:.1f}s, {len(failures)} tracebacks or "
              f"bad exits (anchor 0: {c.verdict(not failures)})")
        ok &= not failures
    rc, text = pytest_figures("tests/faults/test_http_fuzz.py", args.examples)
    print(f"http (schemathesis, {args.examples} examples per operation): {c.verdict(rc == 0)}\n{text}")
    ok &= rc == 0
    rc, text = pytest_figures("tests/faults/test_control_socket_abuse.py", 0)
    lag = re.search(r"heartbeat lag max ([\d.]+) ms", text)
    worst = re.search(r"max ([\d.]+) ms; heartbeat", text)
    under = rc == 0 and lag is not None and float(lag.group(1)) <= 100 and worst is not None \
        and float(worst.group(1)) <= 100
    print(f"control socket abuse: {text.strip()} (anchor <= 100 ms: {c.verdict(under)})")
    ok &= under
    print(c.machine_line("end"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
