"""The layers import only downwards (docs/architecture.md): checked on every import statement
of the package, the ones inside functions included."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastunlearn"
# Rank of each layer; a module may import its own layer and lower ranks. engine and eval share
# a rank but do not import each other (recipes joins them).
RANKS = {
    "ops": 0,
    "models": 1,
    "objectives": 2,
    "data": 3,
    "engine": 4,
    "eval": 4,
    "recipes": 5,
    "cli": 6,
    "__main__": 7,  # python -m fastunlearn: runs the cli
}
SHARED = {"_lazy", "resources", "_C"}  # importable from any layer


def layer_of(module: str) -> str:
    return module.split(".")[1]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name.startswith("fastunlearn.")}


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts)
        if layer_of(name + ".x") in RANKS:
            yield name, path


@pytest.mark.parametrize("module, path", list(modules()), ids=lambda value: str(value))
def test_imports_point_down(module, path):
    own = layer_of(module + ".x")
    for imported in imports_of(path):
        target = layer_of(imported)
        if target in SHARED or target == own:
            continue
        assert target in RANKS, f"{module} imports {imported}: a layer docs/ does not name"
        assert RANKS[target] < RANKS[own], f"{module} imports {imported}, a layer not below it"


def test_every_layer_is_checked():
    layers = {layer_of(name + ".x") for name, _ in modules()}
    assert layers == set(RANKS)
