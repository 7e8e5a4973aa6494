"""A placement says what a user must know before deploying it: an unverified plan, and a predictor that
extrapolated beyond its training domain (issue 19: `solve --predictor tree --no-verify` on 100 k
adapters reported an "optimal" plan with no warning)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import packer

ROOT = Path(packer.__file__).resolve().parents[1]
LLAMA = "llama-3.1-8b-instruct@h100-64gb"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path / "cache"))


def _many_light_adapters(n: int) -> dict:
    return {"profile": LLAMA, "adapters": [{"id": f"a{i}", "rank": 8, "rate": 0.01} for i in range(n)]}


def test_an_unverified_tree_plan_beyond_the_trained_adapter_counts_says_so():
    r = packer.solve(_many_light_adapters(3000), predictor="tree", verify=False)
    assert not r.verified
    assert any(w.startswith("not verified") for w in r.warnings)
    extrapolating = [w for w in r.warnings if "extrapolating: n_adapters" in w]
    assert extrapolating and all("trained range 1 to 512" in w for w in extrapolating)
    # every GPU beyond 512 adapters is named in a warning ("tree predictor, GPUs 0, 1 and 3 more: ...")
    named, more = set(), 0
    for w in extrapolating:
        head = w.split(":", 1)[0].split("GPU", 1)[1].lstrip("s ")
        listed, _, rest = head.partition(" and ")
        named |= {int(g) for g in listed.split(", ")}
        more += int(rest.split()[0]) if rest else 0
    big = {g for g, p in enumerate(r.gpus) if len(p.adapters) > 512}
    assert big and big <= set(range(len(r.gpus)))
    assert len(named) + more >= len(big) and named <= big
    assert r.to_dict()["warnings"] == list(r.warnings)


def test_a_verified_plan_inside_the_domain_has_no_warnings():
    wl = json.loads((ROOT / "packer" / "examples" / "workload.json").read_text())
    r = packer.solve(wl)
    assert r.verified and r.warnings == ()


def test_the_cli_prints_each_warning_on_its_own_line(tmp_path):
    (tmp_path / "w.json").write_text(json.dumps(_many_light_adapters(3000)))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PACKER_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-m", "packer.cli", "solve", "w.json", "--predictor", "tree",
                          "--no-verify"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "NOT verified by the twin" in out.stdout and "extrapolating: n_adapters" in out.stdout
    js = subprocess.run([sys.executable, "-m", "packer.cli", "solve", "w.json", "--predictor", "tree",
                         "--no-verify", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    d = json.loads(js.stdout)
    assert d["verified"] is False and any(w.startswith("not verified") for w in d["warnings"])
