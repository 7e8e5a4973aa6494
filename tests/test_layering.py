"""Dependencies point one way: twin <- live, calibration <- predictors <- capacity <- solvers <- planner
<- deploy <- cli (``deploy``: a plan as deployable files, issue 16).
Every import of every module is read from its source (module level and inside functions), so a cycle
cannot hide in a function-level import (issue 13, deliverable 1).

``calibration`` (fitting a profile from measurements) is a layer of its own below the predictors: it
needs only the shared modules (``profile``, ``files``) today, may build on the twin, and is imported by
the layers above it (capacity, solvers, cli) but never imports them. ``live`` (talking to vLLM
servers: serve-twin, bench, launching) sits on the twin and under calibration and the predictors,
which run their measurements through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import packer

PACKAGE = Path(packer.__file__).resolve().parent
LAYERS = ["twin", "live", "calibration", "predictors", "capacity", "solvers", "planner", "deploy", "cli"]
# layer -> the layers it must not import (every layer above it)
FORBIDDEN = {layer: set(LAYERS[i + 1:]) for i, layer in enumerate(LAYERS)}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "packer" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, relative ones resolved."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from packer import cli`
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_layer_is_found():
    assert {_layer(_module_name(p)) for p in MODULES} >= set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_point_one_way(path):
    layer = _layer(_module_name(path))
    if layer is None:
        return  # root-level modules (model, profile, files, executor, errors, ...) sit below every layer
    bad = [f"line {line}: {mod}" for line, mod in _imports(path)
           if _layer(mod) in FORBIDDEN[layer]]
    assert bad == [], f"{path.relative_to(PACKAGE)} ({layer}) imports a layer above it: {bad}"


# The shared modules every layer imports: they import no layer. (``validation`` and ``replay`` score the
# twin against measured runs: they sit on the twin, like the predictors.)
SHARED = {"errors", "files", "executor", "registry", "model", "profile", "derive", "defaults", "lazy", "requestlog"}
BESIDE_TWIN = {"validation", "replay"}
# The contract kit checks solvers and predictors, like a test: it may import every layer, none imports it.
KIT = {"testing"}


@pytest.mark.parametrize("path", [p for p in MODULES if _layer(_module_name(p)) is None and p.stem != "__init__"
                                  and p.stem != "__main__" and p.stem not in KIT],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_shared_modules_import_no_layer(path):
    allowed = {"twin"} if path.stem in BESIDE_TWIN else set()
    assert path.stem in SHARED | BESIDE_TWIN, f"{path.name}: a new root module: put it in a layer or in SHARED"
    bad = [f"line {line}: {mod}" for line, mod in _imports(path) if _layer(mod) not in (None, *allowed)]
    assert bad == [], f"{path.relative_to(PACKAGE)} imports a layer: {bad}"


def test_the_walk_sees_relative_imports_inside_functions():
    found = _imports(PACKAGE / "cli" / "train.py")
    assert any(mod == "packer.capacity.training" for _, mod in found)  # `from ..capacity.training import build`
    inner = [ln for ln, mod in found if mod == "packer.capacity.training"]
    text = (PACKAGE / "cli" / "train.py").read_text().splitlines()
    assert all(text[ln - 1].startswith(" ") for ln in inner)  # indented: inside a function


def test_nothing_in_packer_imports_the_contract_kit():
    users = [f"{p.relative_to(PACKAGE)}: line {ln}" for p in MODULES if p.stem not in KIT
             for ln, mod in _imports(p) if mod == "packer.testing" or mod.startswith("packer.testing.")]
    assert users == []
