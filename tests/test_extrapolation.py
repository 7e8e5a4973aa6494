"""The tree and forest predictors say when they extrapolate: a query outside the training domain of
their model carries a warning (naming the feature, its value and the trained range), or is answered by
the twin, or refused; queries inside the domain (the sweep's own) carry none. Real models, real twin
runs, real processes."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LLAMA, llama_scenario
from packer.errors import InputError
from packer.model import BurstyArrivals, LengthSpec, PoissonArrivals, ServerConfig, TraceArrivals
from packer.predictors import GpuQuery, Prediction, get_predictor
from packer.predictors.training import SweepSpec, generate, sample_query
from packer.predictors.domain import Domain, default_domain
from packer.predictors.tree import ForestPredictor, TreePredictor
from packer.predictors.tree_io import load_model, model_path
from packer.predictors.twin import TwinPredictor
from packer.profile import list_profiles

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def query(n: int = 8, rate: float = 1.0, rank: int = 16, max_loras: int = 8, lengths: LengthSpec | None = None,
          arrivals=None, **server) -> GpuQuery:
    return GpuQuery(LLAMA, ServerConfig(max_loras=max_loras, max_lora_rank=rank, **{"max_num_seqs": 2048, **server}),
                    (rank,) * n, (rate,) * n, lengths or LengthSpec(), arrivals or PoissonArrivals())


INSIDE = query()  # 8 adapters, 8 req/s: 3,350 tokens/s
OUTSIDE = query(n=2000, rate=0.004, max_loras=64)  # 2,000 adapters: the model saw 1..512


def test_a_prediction_carries_no_warnings_by_default():
    p = Prediction(predictor="x", starved=False, memory_error=None, throughput_tps=1.0, offered_tps=1.0)
    assert p.warnings == () and json.loads(json.dumps(p.to_dict()))["warnings"] == []


@pytest.mark.parametrize("name", ["tree", "forest"])
def test_too_many_adapters_is_an_extrapolation_warning(name):
    pred = get_predictor(name)
    one = pred.predict(OUTSIDE)
    assert one.predictor == name and one.throughput_tps > 0  # still the model's answer ("warn" mode)
    assert one.warnings == ("extrapolating: n_adapters = 2,000 is outside the trained range 1 to 512",)
    assert pred.predict_many([INSIDE, OUTSIDE, INSIDE]) == [pred.predict(INSIDE), one, pred.predict(INSIDE)]
    assert pred.predict(INSIDE).warnings == ()


@pytest.mark.parametrize("profile", list_profiles())
def test_the_sweeps_own_queries_carry_no_warnings(profile):
    spec = SweepSpec(profile=profile, seed=11)  # another seed than the training sweep: the same domain
    qs = [sample_query(spec, i) for i in range(1500)]
    kinds = {q.arrivals.kind for q in qs}
    assert kinds == {"poisson", "bursty"}
    for name in ("tree", "forest"):
        pred = get_predictor(name)
        many = pred.predict_many(qs)
        flagged = [(i, p.warnings) for i, p in enumerate(many) if p.warnings]
        assert flagged == [], flagged[:3]
        assert [pred.predict(q) for q in qs[:300]] == many[:300]


@pytest.mark.parametrize("change, feature, trained", [
    ({"rate": 200.0}, "offered_tps = ",
     "are outside the trained range offered_tps 500 to 25,000 or load_factor 0.4 to 20"),
    ({"rank": 4}, "rank_max = 4", "8 to 64"),  # rank_mean and max_lora_rank too
    ({"lengths": LengthSpec(input_mean=900, output_mean=100)}, "input_mean = 900", "100 to 600"),
    ({"lengths": LengthSpec(distribution="fixed")}, "length_distribution = 2", "0 (0 sharegpt"),
    ({"arrivals": BurstyArrivals(cv=5.0, multiplier_sigma=0.5, period_s=120)}, "arrival_cv = 5", "1 to 3 or 1"),
    ({"arrivals": BurstyArrivals(cv=2.0, multiplier_sigma=0.5, period_s=10)}, "arrival_period_s = 10", "60 to 300"),
    ({"max_num_batched_tokens": 32768}, "max_num_batched_tokens = 32,768", "1,024 to 8,192"),
    ({"gpu_memory_utilization": 0.8}, "gpu_memory_utilization = 0.8", "0.9"),
])
def test_each_feature_outside_its_range_is_named(change, feature, trained):
    q = query(**change)
    w = get_predictor("tree").predict(q).warnings
    assert len(w) == (3 if "rank" in change else 1), w
    assert w[0].startswith(f"extrapolating: {feature}") and trained in w[0], w
    assert get_predictor("tree").predict_many([q])[0].warnings == w


def test_arrival_kinds_and_lora_off_are_outside_too():
    t = get_predictor("tree")
    trace = t.predict(query(arrivals=TraceArrivals(trace="azure-conv")))
    assert trace.warnings == ("extrapolating: arrivals kind 'trace' is outside the trained kinds (poisson, bursty)",)
    no_lora = t.predict_many([query(enable_lora=False)])[0]
    assert len(no_lora.warnings) == 1 and "server.enable_lora=False" in no_lora.warnings[0]


def test_a_memory_error_is_exact_and_carries_no_warning():
    q = query(n=2000, rate=0.004, max_loras=400, rank=512)
    for p in (get_predictor("tree").predict(q), get_predictor("tree").predict_many([q])[0]):
        assert p.memory_error and p.warnings == ()


def test_twin_mode_answers_out_of_domain_queries_with_the_twin():
    outside = query(n=600, rate=0.005, max_loras=64)  # light: a quick twin run
    twin = TwinPredictor()
    pred = get_predictor("tree", extrapolation="twin")
    got = pred.predict_many([INSIDE, outside])
    assert got[0] == get_predictor("tree").predict(INSIDE)  # inside: the tree, unchanged
    expected = twin.predict(outside)
    assert got[1].predictor == "twin" and dataclasses.replace(got[1], warnings=()) == expected
    assert got[1].warnings[0] == "extrapolating: n_adapters = 600 is outside the trained range 1 to 512"
    assert "answered by the twin" in got[1].warnings[-1]
    assert pred.predict(outside) == got[1]
    assert pred.describe()["extrapolation"] == "twin" and "extrapolation" not in get_predictor("tree").describe()


def test_error_mode_refuses_out_of_domain_queries():
    pred = get_predictor("forest", extrapolation="error")
    assert pred.predict(INSIDE).warnings == ()
    for call in (lambda: pred.predict(OUTSIDE), lambda: pred.predict_many([INSIDE, OUTSIDE])):
        with pytest.raises(InputError, match=r"^extrapolation: the forest model would extrapolate: n_adapters = 2,000"):
            call()
    with pytest.raises(InputError, match="^extrapolation: unknown mode 'guess'; valid: warn, twin, error"):
        TreePredictor(extrapolation="guess")


def test_shipped_models_use_the_default_sweeps_domain():
    dom = default_domain()
    assert dom == Domain.from_sweep(SweepSpec(profile=LLAMA).to_dict())
    assert Domain.from_dict(json.loads(json.dumps(dom.to_dict()))) == dom
    for profile in list_profiles():
        for kind in ("tree", "forest"):
            m = load_model(model_path(profile, kind))
            assert "domain" not in m.training and m.domain == dom


def test_training_records_the_sweeps_domain_in_the_model_files(tmp_path):
    pytest.importorskip("sklearn")
    from packer.predictors.training import train

    spec = SweepSpec(profile=LLAMA, n_samples=48, seed=3, duration_s=40.0, warmup_s=0.0, count_range=(1, 8),
                     input_mean_range=(150, 300))
    generate(spec, tmp_path / "sweep", workers=1, chunk_size=64, progress=False)
    train(tmp_path / "sweep", LLAMA, tmp_path / "m.json", candidates=("random_forest",), leaf_grid=(8,),
          extra_rows=0, forest_out=tmp_path / "m.forest.npz", forest_trees=2, forest_depth=3, log=None)
    for path, cls in ((tmp_path / "m.json", TreePredictor), (tmp_path / "m.forest.npz", ForestPredictor)):
        m = load_model(path)
        assert m.training["domain"]["ranges"]["n_adapters"] == [["n_adapters", 1.0, 8.0]]
        assert m.domain == Domain.from_sweep(spec.to_dict())
        pred = cls(model=path)
        w = pred.predict(query(n=12, rate=0.5)).warnings
        assert w == ("extrapolating: n_adapters = 12 is outside the trained range 1 to 8",)
        assert pred.predict(query(n=6, rate=1.0)).warnings == ()  # 6 adapters, 222.7/196.1 lengths: inside


def test_packer_predict_shows_the_warnings(tmp_path):
    many = llama_scenario(adapters=[{"id": f"a{i}", "rank": 8, "rate": 0.004} for i in range(1000)], duration_s=60,
                          server={"max_loras": 64, "max_cpu_loras": 1000, "max_lora_rank": 8})
    few = llama_scenario(duration_s=60)
    paths = []
    for name, sc in (("many.json", many), ("few.json", few)):
        (tmp_path / name).write_text(json.dumps(sc))
        paths.append(str(tmp_path / name))

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "packer.cli", "predict", *paths, *args], capture_output=True,
                             text=True, timeout=300, env=ENV)
        assert out.returncode == 0, out.stderr
        return out.stdout

    objs = [json.loads(x) for x in run("--json").strip().splitlines()]
    assert objs[0]["warnings"] == ["extrapolating: n_adapters = 1,000 is outside the trained range 1 to 512"]
    assert objs[1]["warnings"] == []
    table = run()
    first, second = table.split(paths[1])
    assert "│ warning" in first and "n_adapters = 1,000 is outside the trained range 1 to 512" in first
    assert "warning" not in second
