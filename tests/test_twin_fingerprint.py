"""One fingerprint of the twin keys every artefact made from twin output: a change to one line of the twin
kernel makes the capacity tables, the sweeps and the trained models stale (issue 13, deliverable 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import packer
from packer.capacity.cache import _shipped_dir, cache_key
from packer.model import LengthSpec, PoissonArrivals, ServerDefaults
from packer.predictors.training import SweepSpec
from packer.predictors.twin import TwinPredictor
from packer.profile import list_profiles, load_profile
from packer.twin.fingerprint import twin_fingerprint

PACKAGE = Path(packer.__file__).resolve().parent
LLAMA = "llama-3.1-8b-instruct@h100-64gb"

PROBE = """
import json
from packer.capacity.cache import cache_key
from packer.errors import InputError
from packer.model import LengthSpec, PoissonArrivals, ServerDefaults
from packer.predictors.training import SweepSpec
from packer.predictors.tree import TreePredictor
from packer.predictors.twin import TwinPredictor
from packer.profile import load_profile
from packer.twin.fingerprint import twin_fingerprint
p = load_profile("%s")
try:
    TreePredictor().model_for(p)
    model = "ok"
except InputError as e:
    model = str(e)
print(json.dumps({"twin": twin_fingerprint(p), "sweep": SweepSpec(profile=p.name).fingerprint(), "model": model,
                  "capacity": cache_key(TwinPredictor(), p, LengthSpec(), PoissonArrivals(), ServerDefaults(), 8, 0.02)}))
""" % LLAMA


def _probe(root: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300, cwd=root)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_one_changed_line_of_the_kernel_makes_every_artefact_stale(tmp_path):
    here = {"twin": twin_fingerprint(load_profile(LLAMA)), "sweep": SweepSpec(profile=LLAMA).fingerprint(),
            "capacity": cache_key(TwinPredictor(), load_profile(LLAMA), LengthSpec(), PoissonArrivals(),
                                  ServerDefaults(), 8, 0.02)}
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "packer", ignore=shutil.ignore_patterns("__pycache__"))
    same = _probe(copy)
    assert {k: same[k] for k in here} == here and same["model"] == "ok"  # a copy is the same twin

    kernel = copy / "packer" / "twin" / "kernel.py"
    line = "    max_loras = cfg[I_MAX_LORAS]\n"
    assert line in kernel.read_text()
    kernel.write_text(kernel.read_text().replace(line, line.rstrip("\n") + "  # one changed line\n", 1))
    changed = _probe(copy)
    assert all(changed[k] != here[k] for k in here), changed
    assert "trained on runs of another twin" in changed["model"]


def test_the_shipped_artefacts_are_keyed_on_this_twin():
    for name in list_profiles():
        prof = load_profile(name)
        keys = [cache_key(TwinPredictor(), prof, LengthSpec(), PoissonArrivals(), ServerDefaults(), R, 0.02)
                for R in (8, 16, 32, 64)]
        assert all((_shipped_dir() / f"{k}.json").is_file() for k in keys), name
    shipped = {p.name for p in Path(str(_shipped_dir())).glob("*.json")}
    assert len(shipped) == 8
