"""The package's shape: subpackages by stage, layers that point one way, no import cycle.

Every `import` counts, at module level or inside a function: a function-level import that closes a
cycle still ties two stages together.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "trainkit"
# The stages in the order a run flows through them; each may import only itself and those before it.
LAYERS = ("core", "config", "data", "preflight", "evaluate", "train", "supervise", "bench")
# Imports a layer makes of a layer above it on purpose: none.
ALLOWED_UPWARD: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The trainkit modules this one imports (a `from package import module` names the module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    found.add(f"{base}.{alias.name}")
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_package_has_no_import_cycle_even_through_function_level_imports():
    assert cycles(import_graph()) == []


def test_a_cycle_would_be_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_stage_imports_only_the_stages_before_it():
    upward = sorted(
        f"{name} imports {other}"
        for name, imported in import_graph().items()
        for other in imported
        if layer(name) in LAYERS and layer(other) in LAYERS
        and LAYERS.index(layer(other)) > LAYERS.index(layer(name))
        and (layer(name), layer(other)) not in ALLOWED_UPWARD
    )
    assert upward == []


def test_train_never_imports_supervise_and_core_imports_no_other_stage():
    graph = import_graph()
    assert not [(n, o) for n, imported in graph.items() if layer(n) == "train" for o in imported
                if layer(o) == "supervise"]
    assert not [(n, o) for n, imported in graph.items() if layer(n) == "core" for o in imported
                if layer(o) not in ("core", None)]


def test_the_top_level_holds_at_most_15_entries_each_a_known_stage():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 15, entries
    stages = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.name not in ("__init__.py", "__pycache__")}
    assert stages <= set(LAYERS), stages - set(LAYERS)


def test_every_subpackage_docstring_says_what_it_owns_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "Owns" in doc, f"{init}: no 'Owns ...' in its docstring"
        allowed = re.search(r"May import: (.+?)(?:\n\n|$)", doc, re.S)
        assert allowed, f"{init}: no 'May import:' in its docstring"
        stage = init.parent.name
        earlier = {f"trainkit.{s}" for s in LAYERS[: LAYERS.index(stage)]}
        named = set(re.findall(r"trainkit\.[a-z_]+", allowed.group(1).split(";")[0]))
        assert named <= earlier, f"{init} allows {named - earlier}, which come after {stage}"


def test_the_backend_seam_is_named_in_the_train_package_docstring():
    doc = ast.get_docstring(ast.parse((PACKAGE / "train" / "__init__.py").read_text()))
    assert "trainkit.train.backend.Backend" in doc
    from trainkit.train import backend

    assert {"load_data", "build"} <= set(dir(backend.Backend))
    assert {"train", "check_weights", "save_last_good", "save_final"} <= set(dir(backend.TrainingSession))
