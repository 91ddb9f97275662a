"""The code's layers (ipa/__init__.py): every import runs down or sideways within a layer, never up, and no two
modules import each other, directly or round a cycle. Read from the source (every import statement, those inside
functions too), so a new upward import fails here before it can tangle the layers again."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

LAYERS = [
    ["ipa.errors", "ipa.files", "ipa.args"],
    ["ipa.models", "ipa.placement"],
    ["ipa.rewards"],
    ["ipa.tasks"],
    ["ipa.preferences"],
    ["ipa.policy_adapter"],
    ["ipa.decoding"],
    ["ipa.loading"],
    ["ipa.training"],
    ["ipa.evaluation"],
    ["ipa.commands"],
    ["app", "bench"],
]
"""Bottom first. A module belongs to the first entry that is it or contains it (ipa.rewards.text: ipa.rewards)."""
PACKAGES = ("ipa", "app", "bench")


def layer_of(module: str) -> int:
    for level, names in enumerate(LAYERS):
        if any(module == name or module.startswith(name + ".") for name in names):
            return level
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to ipa/__init__.py's list)")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((Path(REPO) / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The project's modules a file imports (a `from x import y` of a submodule counts as that submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def test_every_import_runs_down_the_layers():
    upward = [f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
              for module, targets in graph().items() for target in sorted(targets)
              if layer_of(target) > layer_of(module)]
    assert upward == []


def test_app_and_bench_sit_side_by_side():
    edges = graph()
    crossing = sorted(f"{m} -> {t}" for m, targets in edges.items() for t in targets
                      if m.split(".")[0] != t.split(".")[0] and {m.split(".")[0], t.split(".")[0]} == {"app", "bench"})
    assert [c for c in crossing if c.startswith("app")] == []  # the page never imports a benchmark script
    assert all(c.endswith("app.config") for c in crossing), crossing  # a benchmark may read the app's settings


def test_no_module_imports_round_a_cycle():
    edges = graph()
    # Tarjan's strongly connected components: a component of more than one module is a cycle.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    assert cycles == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The test above can fail: a module of the bottom layer importing the decoder is caught."""
    source = tmp_path / "errors.py"
    source.write_text("from ipa.decoding.engine import Engine\n\ndef f():\n    import ipa.training.loop\n")
    found = imports(source, {"ipa.decoding.engine", "ipa.training.loop", "ipa.errors"})
    assert found == {"ipa.decoding.engine", "ipa.training.loop"}
    assert all(layer_of(target) > layer_of("ipa.errors") for target in found)
