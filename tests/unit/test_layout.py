"""The house rules of agent/ and exporter/, read from the source with ``ast``, and where tests/unit keeps their tests.

Every import counts, also one inside a function or under ``TYPE_CHECKING``: a circle
hidden behind a late import is still a circle (docs/architecture.md).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "supervise", "recordings", "sfu", "fleet")
#: Small stdlib-only modules at the top of agent/ that everything may use.
HELPERS = {"redact", "blocking", "snapshot", "snapshot_view", "version", "diskuse", "tokens", "client",
           "httplog", "sdnotify", "_build", "nofollow"}
#: The core: wires the subsystems together and serves the control socket and the CLIs.
CORE = {"agent", "interface", "control", "views", "publisher", "reload", "cli", "vasctl", "usage",
        "service_check"}
#: What the exporter may use of the agent: nothing that starts or supervises a process.
EXPORTER_MAY_USE = ({"agent.config"} | {f"agent.{h}" for h in HELPERS - {"sdnotify", "blocking"}}
                    | {"agent.supervise.states", "agent.supervise.limits"})
#: Where each part sits; a module imports only from its own part or a lower one.
RANK = {"helpers": 0, "config": 1, "supervise": 2, "recordings": 3, "sfu": 3, "fleet": 3, "core": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for top in ("agent", "exporter") for p in sorted((ROOT / top).rglob("*.py"))}


def imported_bases(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """Each import of ``name``'s source as (module, names imported from it), relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [a.name for a in node.names]))
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The first-party modules ``name`` imports, anywhere in its source."""
    found: set[str] = set()
    for base, names in imported_bases(name, path):
        found.add(base)
        found |= {f"{base}.{n}" for n in names}  # ``from pkg import module``
    return {m for m in found if m in known}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = sources()
    known = set(mods)
    return {name: imports_of(name, path, known) - {name} for name, path in mods.items()}


def part_of(module: str) -> str:
    """``helpers``, ``core``, a package name, or ``exporter``; unknown top-level modules fail."""
    parts = module.split(".")
    if parts[0] == "exporter":
        return "exporter"
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in PACKAGES):
        return parts[1]
    if module == "agent" or parts[1] in CORE:
        return "core"
    if parts[1] in HELPERS:
        return "helpers"
    raise AssertionError(f"{module}: a new module at the top of agent/; put it in a package "
                         f"({', '.join(PACKAGES)}) or list it in HELPERS or CORE here")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_every_first_party_import_names_a_module_of_this_tree():
    """A moved module's old name must fail here, not resolve through an installed copy elsewhere."""
    mods = sources()
    wrong = [f"{name}: {base}" for name, path in mods.items() for base, _ in imported_bases(name, path)
             if base.split(".")[0] in ("agent", "exporter") and base not in mods and base != "agent._build"]
    assert wrong == []


def test_there_is_no_import_circle(graph):
    assert cycles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_agent_never_imports_the_exporter(graph):
    wrong = {(m, d) for m, deps in graph.items() if m.startswith("agent") for d in deps if d.startswith("exporter")}
    assert wrong == set()


def test_the_exporter_uses_only_what_starts_no_process(graph):
    def allowed(module: str) -> bool:
        return any(module == a or module.startswith(a + ".") for a in EXPORTER_MAY_USE) or module == "agent"

    used = {d for m, deps in graph.items() if m.startswith("exporter") for d in deps if d.startswith("agent")}
    assert {d for d in used if not allowed(d)} == set()
    reach = set(used)
    while True:  # and nothing those modules import starts one either
        more = {d for m in reach for d in graph[m]} - reach
        if not more:
            break
        reach |= more
    assert {d for d in reach if not allowed(d)} == set()


def test_dependencies_run_one_way(graph):
    wrong = []
    for module, deps in graph.items():
        if not module.startswith("agent") or module == "agent":
            continue
        mine = part_of(module)
        for dep in deps - {"agent"}:
            theirs = part_of(dep)
            if theirs == mine:
                continue
            if RANK[theirs] >= RANK[mine]:  # upward, or a sibling subsystem
                wrong.append(f"{module} ({mine}) imports {dep} ({theirs})")
    assert wrong == []


def test_a_package_init_only_says_what_the_package_does():
    for package in PACKAGES:
        tree = ast.parse((ROOT / "agent" / package / "__init__.py").read_text())
        assert ast.get_docstring(tree), package
        assert len(tree.body) == 1, f"agent/{package}/__init__.py: only a docstring goes there"
        assert "Entr" in ast.get_docstring(tree), f"agent/{package}/__init__.py names its entry class"


def test_the_rules_see_a_broken_one():
    """An upward import and a sibling import are both caught."""
    assert part_of("agent.supervise.stream") == "supervise" and part_of("agent.snapshot") == "helpers"
    assert RANK[part_of("agent.recordings.service")] == RANK[part_of("agent.sfu.producers")]
    with pytest.raises(AssertionError, match="new module"):
        part_of("agent.newthing")


#: Checks of the whole repository (and of the camera fixture), kept at the top of tests/unit.
PROJECT_WIDE = {"test_clock_pattern.py", "test_docs.py", "test_docs_layout.py", "test_layout.py", "test_lint.py",
                "test_prometheus_rules.py", "test_schema.py", "test_shell.py", "test_systemd_units.py",
                "test_xdist_groups.py"}
#: Words that name the work that produced a test rather than what it tests.
WORK_WORDS = ("hardening", "regression", "review", "issue", "pure", "fixes", "misc")


def test_unit_tests_sit_with_the_package_and_module_they_test():
    """tests/unit/<package>/test_<module>.py for agent/<package>/<module>.py; core/ is agent/'s top."""
    unit = ROOT / "tests" / "unit"
    wrong = [f"tests/unit/{p.name}: goes into tests/unit/<package>/" for p in sorted(unit.glob("test_*.py"))
             if p.name not in PROJECT_WIDE]
    for folder in sorted(p for p in unit.iterdir() if p.is_dir() and p.name != "__pycache__"):
        if folder.name not in (*PACKAGES, "core"):
            wrong.append(f"tests/unit/{folder.name}/: not an agent package (or core)")
            continue
        if not (folder / "__init__.py").exists():
            wrong.append(f"tests/unit/{folder.name}/__init__.py is missing (test file names repeat across folders)")
        source = ROOT / "agent" if folder.name == "core" else ROOT / "agent" / folder.name
        wrong += [f"{t.relative_to(ROOT)}: no module {(source / t.name[5:]).relative_to(ROOT)} to test"
                  for t in sorted(folder.glob("test_*.py")) if not (source / t.name[5:]).exists()]
    assert wrong == []


def test_no_test_file_is_named_for_the_work_that_produced_it():
    named = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if any(word in p.stem for word in WORK_WORDS))
    assert named == []
