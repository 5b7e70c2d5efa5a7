"""The layers contract: imports only go down (cli -> run -> {data, model, report} -> foundation), no cycles, and no
module uses another module's private names. Every import counts, including the lazy ones inside functions."""

from __future__ import annotations

import ast
import os

import pytest

PACKAGE = "imgclass_cli"
ROOT = os.path.join(os.path.dirname(__file__), "..", PACKAGE)
FOUNDATION = {"imgclass_cli", "imgclass_cli.config", "imgclass_cli.errors", "imgclass_cli._tf", "imgclass_cli.fs",
              "imgclass_cli.precision",
              "imgclass_cli.files", "imgclass_cli.options", "imgclass_cli.interrupts"}
# The rank of each layer: a module may import modules of a lower rank, or of its own package (without cycles).
LAYERS = {"data": 1, "model": 1, "report": 1, "run": 2, "cli": 3, "__main__": 4}


def _modules() -> dict[str, str]:
    found = {}
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), ROOT)[:-3].replace(os.sep, ".")
                mod = PACKAGE if rel == "__init__" else f"{PACKAGE}.{rel.removesuffix('.__init__')}"
                found[mod] = os.path.join(dirpath, name)
    return found


MODULES = _modules()


def rank(module: str) -> int:
    if module in FOUNDATION:
        return 0
    return LAYERS[module.split(".")[1]]


def layer(module: str) -> str:
    return "foundation" if module in FOUNDATION else module.split(".")[1]


def imports(path: str) -> tuple[dict[str, int], list[tuple[str, int]], ast.Module]:
    """({imported project module: line}, [(private name used, line)], tree) of one file."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    found: dict[str, int] = {}
    private: list[tuple[str, int]] = []
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PACKAGE):
                    found.setdefault(a.name, node.lineno)
                    aliases[a.asname or a.name.split(".")[0]] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in MODULES:  # `from imgclass_cli.data import dataset`: the module itself
                    found.setdefault(sub, node.lineno)
                    aliases[a.asname or a.name] = sub
                else:
                    found.setdefault(node.module, node.lineno)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        private.append((f"{node.module}.{a.name}", node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                private.append((f"{aliases[node.value.id]}.{node.attr}", node.lineno))
    return found, private, tree


GRAPH = {m: imports(p)[0] for m, p in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    for m in MODULES:
        assert m in FOUNDATION or m.split(".")[1] in LAYERS, f"{m}: not in a layer of tests/test_layers.py"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    for target, line in GRAPH[module].items():
        if target == PACKAGE and module != PACKAGE:
            continue  # `from imgclass_cli import __version__`
        same_layer = layer(target) == layer(module)
        assert rank(target) < rank(module) or same_layer, (
            f"{MODULES[module]}:{line}: {module} ({layer(module)}) imports {target} ({layer(target)}): "
            "imports only go down: cli -> run -> data|model|report -> foundation")


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in GRAPH.get(m, {}):
            if t == m or t not in MODULES:
                continue
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [t] if t in path else [m, t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_of_other_modules(module):
    _, private, _ = imports(MODULES[module])
    assert not private, f"{module} uses private names of other modules: {private}"


def test_the_contract_catches_a_backward_import(tmp_path):
    """The checks above on a planted violation: data importing run, and a cycle."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from imgclass_cli.run import training\n    from imgclass_cli.data.dataset import _x\n")
    found, private, _ = imports(str(bad))
    assert "imgclass_cli.run.training" in found and rank("imgclass_cli.run.training") > rank("imgclass_cli.data.dataset")
    assert private == [("imgclass_cli.data.dataset._x", 3)]
