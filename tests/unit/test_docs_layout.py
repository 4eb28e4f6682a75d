"""The docs and the code's own text name the code as it is laid out.

Every ``agent/`` or ``exporter/`` path and every ``*.py`` file that the docs, a docstring
or a comment names exists; no module is named by a name it no longer has; the source
says what it does, not which issue or review it came from; docs/architecture.md
covers every package, its entry and every module at the top of ``agent/``.
"""
from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "bench" / "README.md",
        *sorted((ROOT / "docs").glob("*.md"))]
#: Module paths: ``agent/supervise/stream.py``, ``agent/recordings/``, ``exporter/app.py``.
MODULE_PATH = re.compile(r"(?<![\w/.-])((?:agent|exporter)/[\w/]*\w(?:\.py|/)?)")
PY_FILE = re.compile(r"(?<![\w/.-])(\w+\.py)\b")
#: Written by install.sh into an installed copy; never in a checkout.
GENERATED = {"agent/_build.py", "_build.py"}
#: Module names the package move retired (agent/<old>.py, exporter/settings.py): their
#: modules live on under other names, so these names mislead wherever they appear.
RETIRED = {"fleet_config", "retention_config", "cleanup_params", "retention_service", "retention_plans",
           "retention_report", "retention_disk", "retention_inits", "retention_memory", "retention_pressure",
           "retention_unsafe", "segment_index", "segment_watch", "segment_pack", "segment_verify",
           "sfu_client", "producer_plan", "exporter.settings", "exporter/settings"}
RETIRED_WORD = re.compile(r"(?<![\w.])(" + "|".join(sorted(map(re.escape, RETIRED))) + r")(?![\w/])")
#: History instead of a description, in the shipped code.
HISTORY = re.compile(r"\(later issues?\)|\bissue \d+|\breview ?\d+\b|\breview-\w+|found by review|"
                     r"before the fix|\bused to\b", re.IGNORECASE)


def sources(*tops: str) -> list[Path]:
    return [p for top in tops for p in sorted((ROOT / top).rglob("*.py"))]


def prose(path: Path) -> list[tuple[int, str]]:
    """The comments and docstrings of a Python file, line by line."""
    text = path.read_text()
    lines = text.splitlines()
    found = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(text).readline)
             if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            found += [(n, lines[n - 1]) for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)]
    return found


@functools.cache
def texts() -> list[tuple[str, str]]:
    """(where, text) for every line of the docs and of the code's comments and docstrings."""
    out = [(f"{p.relative_to(ROOT)}:{n}", line) for p in DOCS for n, line in enumerate(p.read_text().splitlines(), 1)]
    out += [(f"{p.relative_to(ROOT)}:{n}", line) for p in sources("agent", "exporter", "tests", "bench")
            if p != Path(__file__).resolve() for n, line in prose(p)]  # this file names them on purpose
    return out


def test_every_module_path_named_exists():
    missing = [f"{where}: {path}" for where, text in texts() for path in MODULE_PATH.findall(text)
               if path not in GENERATED and not (ROOT / path).exists()]
    assert missing == []


def test_every_python_file_named_exists():
    names = {p.name for p in [*ROOT.glob("*.py"), *sources("agent", "exporter", "tests", "bench", "config")]}
    missing = [f"{where}: {name}" for where, text in texts() for name in PY_FILE.findall(text)
               if name not in names | GENERATED]
    assert missing == []


def test_no_module_goes_by_a_retired_name():
    said = [f"{where}: {m}" for where, text in texts() for m in RETIRED_WORD.findall(text)]
    assert said == []


def test_the_shipped_code_describes_itself_instead_of_its_history():
    said = [f"{p.relative_to(ROOT)}:{n}: {m.group(0)}" for p in sources("agent", "exporter")
            for n, line in prose(p) for m in [HISTORY.search(line)] if m]
    assert said == []


def test_the_architecture_page_covers_every_package_and_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    packages = sorted(p.parent.name for p in (ROOT / "agent").glob("*/__init__.py"))
    assert packages, "no package under agent/"
    for package in packages:
        assert f"`agent/{package}/`" in page, package
        doc = ast.get_docstring(ast.parse((ROOT / "agent" / package / "__init__.py").read_text())) or ""
        entries = re.findall(r":class:`([\w.]+)`", doc.split("Entr", 1)[1])
        for entry in entries or re.findall(r"``([\w.]+)\(", doc.split("Entr", 1)[1]):
            assert f"`{entry}" in page, f"agent/{package}: its entry {entry} is not on docs/architecture.md"
    top = {p.stem for p in (ROOT / "agent").glob("*.py")} - {"__init__", "_build"}
    unnamed = {m for m in top if not re.search(rf"\b{m}\b", page)}
    assert unnamed == set()


def test_the_checks_see_a_stale_name():
    """Each check fails on the kind of text it is for."""
    assert MODULE_PATH.findall("see agent/retention_service.py and `agent/sfu/`") == [
        "agent/retention_service.py", "agent/sfu/"]
    assert PY_FILE.findall("(see ``config.py``), bench/sfu.py") == ["config.py"]
    assert RETIRED_WORD.findall("see segment_watch.EVENTS; exporter/settings.py; my_segment_index") == [
        "segment_watch", "exporter/settings"]
    assert HISTORY.search("Prometheus metrics (later issues).")
    assert HISTORY.search("Found by review18: it was wrong") and not HISTORY.search("a reviewed plan")
