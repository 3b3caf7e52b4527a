"""The architecture as a test: no import cycle among streams/, model/ and index/; dependencies
point one way (DESIGN.md: cli -> wiring -> ingest, serving, lifecycle -> app -> kafka -> settings,
errors, metrics; serving and lifecycle -> model, index); no module over 400 lines; no sys.path
edits; bench/ never imports tests/. Reads the files only (ast); imports nothing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "model", "index")
MAX_LINES = 400

# streams' parts, lowest first: a module may import its own part and the parts below it
LAYERS = [
    {"streams.errors"},
    {"streams.settings", "streams.metrics", "streams.tuning"},
    {"streams.kafka"},
    {"streams.app"},
    {"streams.ingest", "streams.serving", "streams.lifecycle"},
    {"streams.wiring"},
    {"streams.cli", "streams.harness"},
]
# imports between the parts of one layer that are allowed (importer part -> imported module)
SIDEWAYS = {
    ("streams.serving", "streams.lifecycle.model_store"),  # the version records serving loads
    ("streams.lifecycle", "streams.ingest.events"),  # the trainer's reader parses the event contract
    ("streams.lifecycle", "streams.ingest.guard"),  # and leaves out what ingest's rate limit holds back
}
KAFKA_CLIENTS = ("faust", "mode", "aiokafka", "kafka")
PATH_EDITS = ("insert", "append")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules (and top-level names of other packages) imported anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import mod`` imports the module ``pkg.mod``; ``from pkg import name``, pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            t = target
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
            elif not t:
                out.add(target.split(".")[0])
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def part_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def layer_of(module: str) -> int:
    part = part_of(module)
    return next(n for n, layer in enumerate(LAYERS) if part in layer)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_streams_dependencies_point_one_way():
    wrong = []
    for module, targets in graph().items():
        if not module.startswith("streams.") or module == "streams":
            continue
        for target in targets:
            if not target.startswith("streams.") or part_of(target) == part_of(module):
                continue
            here, there = layer_of(module), layer_of(target)
            if there > here or (there == here and (part_of(module), target) not in SIDEWAYS):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


@pytest.mark.parametrize("package", ["model", "index"])
def test_model_and_index_know_nothing_of_streams_or_kafka(package):
    bad = {f"{m} -> {t}" for m, ts in graph().items() if m.split(".")[0] == package
           for t in ts if t.split(".")[0] in ("streams", *KAFKA_CLIENTS)}
    assert bad == set()


def test_no_module_over_the_limit():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_no_sys_path_edits_and_bench_never_imports_tests():
    found = []
    for folder in ("tests", "bench", *PACKAGES):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if any(f"sys.path.{verb}(" in text for verb in PATH_EDITS):
                found.append(f"{path.relative_to(ROOT)}: sys.path edit")
            if folder == "bench":
                for node in ast.walk(ast.parse(text)):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "tests":
                        found.append(f"{path.relative_to(ROOT)}: imports tests")
    assert found == []
