"""Fast start (issue 13): `import packer`, `packer --help` and `packer profiles` load no heavy library,
the registries list every backend without importing it, and no numba kernel compiles at import.

Each check runs in a fresh interpreter and looks at ``sys.modules``: which modules get imported, not
how long it takes (speed is measured by benchmarks/startup.py, not by timed tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import packer
from packer.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "numba", "pydantic", "ortools", "pyomo", "sklearn", "scipy", "ray", "rich", "requests", "urllib3",
         "httpx")
# What `packer profiles` must not need either: it reads JSON files (no numpy, no pydantic either).
HEAVY_FOR_PROFILES = HEAVY
# Runs the CLI as the console script does, then reports the top-level packages it imported.
RUN_CLI = """
import json, runpy, sys
sys.argv = ["packer", *sys.argv[1:]]
try:
    runpy.run_module("packer.cli", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
print(json.dumps({"exit": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(names))


def _modules_after(code: str) -> list[str]:
    out = _python(code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _cli(*args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = _python(RUN_CLI, *args)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    return out, report


@pytest.mark.parametrize("statement", ["import packer", "import packer.cli", "import packer.predictors",
                                       "import packer.solvers", "import packer.solvers.exact", "import packer.twin",
                                       "import packer.capacity", "import packer.calibration"])
def test_importing_the_packages_loads_nothing_heavy(statement):
    assert _loaded(_modules_after(statement), HEAVY) == []


def test_help_loads_nothing_heavy():
    out, report = _cli("--help")
    assert report["exit"] == 0
    assert "Commands:" in out.stdout and "profiles" in out.stdout and "solve" in out.stdout
    assert _loaded(report["modules"], HEAVY) == []


def test_a_command_s_help_loads_nothing_heavy():
    out, report = _cli("train", "--help")
    assert report["exit"] == 0
    assert "--duration" in out.stdout and "600" in out.stdout  # the default shown comes from packer.defaults
    assert _loaded(report["modules"], HEAVY) == []


def test_profiles_lists_every_profile_without_heavy_imports():
    out, report = _cli("profiles")
    assert report["exit"] == 0
    lines = out.stdout.splitlines()
    measured = [line for line in lines if not line.startswith(("model:", "gpu:"))]  # then the catalog (issue 15)
    listed = [line.split("\t")[0] for line in measured]
    assert listed == packer.list_profiles() and listed
    for line in measured:
        name, description = line.split("\t")
        assert description == packer.load_profile(name).description
    from packer.derive import catalog_gpus, catalog_models
    assert [line.split("\t")[0] for line in lines[len(measured):]] == \
        [f"model:{m}" for m in catalog_models()] + [f"gpu:{g}" for g in catalog_gpus()]
    assert _loaded(report["modules"], HEAVY_FOR_PROFILES) == []


def test_registries_list_every_backend_without_importing_it():
    out = _python("""
        import json, sys
        from packer.predictors import PREDICTORS
        from packer.solvers import SOLVERS
        before = {"predictors": PREDICTORS.names(), "solvers": SOLVERS.names(), "modules": sorted(sys.modules)}
        import packer.predictors.tree, packer.predictors.twin
        import packer.solvers.greedy, packer.solvers.ladder, packer.solvers.exact.solvers
        after = {"predictors": PREDICTORS.names(), "solvers": SOLVERS.names()}
        print(json.dumps([before, after]))
    """)
    assert out.returncode == 0, out.stderr
    before, after = json.loads(out.stdout)
    # Every backend module registers what its registry declares, and nothing more.
    assert before["predictors"] == after["predictors"] and before["solvers"] == after["solvers"]
    assert {"twin", "tree", "forest"} <= set(before["predictors"])
    assert {"greedy", "ladder", "cpsat", "milp"} <= set(before["solvers"])
    assert _loaded(before["modules"], ("numba", "ortools", "pyomo", "sklearn", "scipy", "ray")) == []


def test_the_exact_worker_imports_no_backend_and_none_of_packer_s_heavy_parts():
    # The child of every exact solve: the backend's libraries come later, one per process; its start-up
    # comes out of the time limit, so it loads the bounds (numpy) and nothing of the twin or predictors.
    modules = _modules_after("import packer.solvers.exact.worker")
    assert _loaded(modules, ("numba", "pydantic", "ortools", "pyomo", "highspy", "sklearn", "scipy", "ray")) == []
    ours = {m for m in modules if m.split(".")[0] == "packer"}
    allowed = {"packer", "packer.errors", "packer.lazy", "packer.executor", "packer.solvers", "packer.solvers.bounds",
               "packer.solvers.exact"} | {f"packer.solvers.exact.{m}" for m in
                                          ("worker", "phases", "prepare", "moves", "cpsat_model", "milp_model")}
    assert ours <= allowed, ours - allowed


def test_no_numba_kernel_compiles_at_import():
    out = _python("""
        import json
        from numba.core.dispatcher import Dispatcher
        import packer.twin.kernel, packer.predictors.kernels, packer.predictors.domain, packer.predictors.tree
        import packer.planner  # the whole stack, as `packer solve` imports it
        mods = [packer.twin.kernel, packer.predictors.kernels, packer.predictors.domain, packer.predictors.tree]
        kernels = {f"{m.__name__}.{k}": len(v.signatures) for m in mods for k, v in vars(m).items()
                   if isinstance(v, Dispatcher)}
        print(json.dumps(kernels))
    """)
    assert out.returncode == 0, out.stderr
    kernels = json.loads(out.stdout)
    assert {k.rsplit(".", 1)[0] for k in kernels} == {"packer.twin.kernel", "packer.predictors.kernels",
                                                      "packer.predictors.domain", "packer.predictors.tree"}
    assert {k: n for k, n in kernels.items() if n} == {}  # compiled (or loaded from the cache) only on first call


@pytest.mark.parametrize("package", ["packer", "packer.predictors", "packer.predictors.training", "packer.solvers",
                                     "packer.solvers.exact", "packer.twin", "packer.capacity", "packer.live",
                                     "packer.calibration", "packer.deploy"])
def test_lazy_names_are_the_defining_modules_objects(package):
    import importlib

    mod = importlib.import_module(package)
    for name in mod.__all__:
        value = getattr(mod, name)
        if hasattr(value, "__qualname__"):  # a class or function: the package hands out the defining module's
            assert getattr(importlib.import_module(value.__module__), value.__qualname__) is value, name
    assert set(mod.__all__) <= set(dir(mod))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        getattr(mod, "not_a_name")


def test_submodules_are_attributes_of_the_package_as_before():
    out = _python("""
        import packer
        print(packer.planner.__name__, packer.solvers.base.__name__, packer.twin.engine.__name__)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["packer.planner", "packer.solvers.base", "packer.twin.engine"]


# ---- declared backends: the registry's own contract, on real modules -----------------------------

def _write_module(where: Path, name: str, body: str) -> None:
    (where / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")


class _Base:
    pass


def test_a_declared_backend_is_imported_on_first_use(tmp_path, monkeypatch):
    reg = Registry("widget", _Base)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "REGISTRY", reg, raising=False)
    _write_module(tmp_path, "startup_widget_a", f"""
        from {__name__} import REGISTRY, _Base
        class Widget(_Base):
            def __init__(self, size=1):
                self.size = size
        REGISTRY.register("a", Widget, summary="the a widget")
    """)
    reg.declare("a", "startup_widget_a")
    assert reg.names() == ["a"] and "startup_widget_a" not in sys.modules
    w = reg.get("a", size=3)
    assert type(w).__name__ == "Widget" and w.size == 3 and reg.summary("a") == "the a widget"
    assert "startup_widget_a" in sys.modules and reg.available("a")
    with pytest.raises(ValueError, match="already registered"):
        reg.declare("a", "startup_widget_a")


def test_a_module_that_does_not_register_its_declared_name_is_an_error(tmp_path, monkeypatch):
    reg = Registry("widget", _Base)
    monkeypatch.syspath_prepend(str(tmp_path))
    _write_module(tmp_path, "startup_widget_b", "X = 1\n")
    reg.declare("b", "startup_widget_b")
    with pytest.raises(RuntimeError, match="does not register the widget 'b'"):
        reg.get("b")


def test_only_the_declaring_module_registers_a_declared_name():
    reg = Registry("widget", _Base)
    reg.declare("c", "somewhere.else")
    with pytest.raises(ValueError, match="declared by somewhere.else"):
        reg.register("c", _Base)
    assert reg.names() == ["c"]
