"""The data-driven predictors: features, the twin sweep, the numba tree kernel, model files, training
and the ``tree`` / ``forest`` predictors. Real twin runs and real scikit-learn fits, no mocks."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from packer.errors import InputError
from packer.model import BurstyArrivals, LengthSpec, ServerConfig
from packer.predictors import PREDICTORS, GpuQuery, get_predictor
from packer.predictors import features as F
from packer.predictors.kernels import predict_nodes, predict_nodes_row
from packer.predictors.training import (ReplicateSpec, SweepSpec, consensus_labels, generate, load_dataset,
                                       query_from_dataset, replicate, run_query, sample_queries)
from packer.predictors.tree import ForestPredictor, TreePredictor
from packer.predictors.tree_export import head_from_sklearn, tree_from_sklearn
from packer.predictors.tree_io import load_model, model_path, save_model
from packer.predictors.tree_model import Head, Tree, TreeModel
from packer.profile import list_profiles, load_profile
from packer.twin import simulate
from packer.twin.lengths import shipped_length_shapes

sklearn = pytest.importorskip("sklearn")
from sklearn.ensemble import (HistGradientBoostingClassifier, HistGradientBoostingRegressor,  # noqa: E402
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402

LLAMA = "llama-3.1-8b-instruct@h100-64gb"


def query(n: int = 8, rate: float = 1.0, max_loras: int = 8, rank: int = 16, profile: str = LLAMA, **server) -> GpuQuery:
    return GpuQuery(profile, ServerConfig(max_loras=max_loras, max_lora_rank=rank, max_num_seqs=2048, **server),
                    (rank,) * n, (rate,) * n, LengthSpec())


def random_data(n: int = 3000, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array([1.0, 1e3, 1e-3, 5.0, 1.0, 1.0])[:d]
    y = np.sin(X[:, 0]) + X[:, 1] / 1e3 + 1e3 * X[:, 2] * (X[:, 3] > 0) + 0.1 * rng.normal(size=n)
    return X, y


def model_of(heads: dict[str, Head], d: int) -> TreeModel:
    return TreeModel("test", tuple(f"f{i}" for i in range(d)), heads)


# ---- kernel ---------------------------------------------------------------------------------------

def test_kernel_matches_sklearn_regression_tree_exactly():
    X, y = random_data()
    dt = DecisionTreeRegressor(max_leaf_nodes=256, random_state=0).fit(X[:2000], y[:2000])
    m = model_of({"ratio": Head((tree_from_sklearn(dt),))}, X.shape[1])
    # rows near the thresholds too: float32 rounding decides the side, as in scikit-learn
    t = dt.tree_
    inner = t.children_left >= 0
    near = np.tile(X[:1], (int(inner.sum()) * 3, 1))
    for k, (f, thr) in enumerate(zip(t.feature[inner], t.threshold[inner])):
        near[3 * k:3 * k + 3, f] = [thr, np.nextafter(thr, np.inf), np.nextafter(np.float32(thr), np.float32(np.inf))]
    for rows in (X, near):
        assert np.array_equal(m.raw_batch(rows)[:, 0], dt.predict(rows))


def test_kernel_matches_sklearn_classification_tree_exactly():
    X, y = random_data(seed=1)
    lab = y > 0.3
    dt = DecisionTreeClassifier(max_leaf_nodes=128, random_state=0).fit(X[:2000], lab[:2000])
    m = model_of({"ratio": Head((tree_from_sklearn(dt),))}, X.shape[1])
    p = m.raw_batch(X)[:, 0]
    assert np.array_equal(p, dt.predict_proba(X)[:, list(dt.classes_).index(True)])
    assert np.array_equal(p > 0.5, dt.predict(X))


def test_ensemble_is_the_forest_mean():
    X, y = random_data(seed=2)
    rf = RandomForestRegressor(n_estimators=12, max_depth=8, random_state=0).fit(X[:2000], y[:2000])
    rc = RandomForestClassifier(n_estimators=7, max_depth=6, random_state=0).fit(X[:2000], y[:2000] > 0)
    m = model_of({"ratio": Head(tuple(tree_from_sklearn(e) for e in rf.estimators_)),
                  "starved": Head(tuple(tree_from_sklearn(e) for e in rc.estimators_))}, X.shape[1])
    out = m.predict_batch(X)
    np.testing.assert_allclose(out["ratio"], rf.predict(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out["starved"], rc.predict_proba(X)[:, 1], rtol=1e-12, atol=1e-12)


def test_gradient_boosting_exports_as_a_sum_of_trees():
    from threadpoolctl import threadpool_limits

    X, y = random_data(seed=5)
    with threadpool_limits(1):  # OpenMP threads on a busy machine only spin
        hr = HistGradientBoostingRegressor(max_iter=40, random_state=0).fit(X[:2000], y[:2000])
        hc = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X[:2000], y[:2000] > 0.2)
    m = model_of({"ratio": head_from_sklearn(hr), "starved": head_from_sklearn(hc, "sigmoid")}, X.shape[1])
    out = m.predict_batch(X)
    np.testing.assert_allclose(out["ratio"], hr.predict(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["starved"], hc.predict_proba(X)[:, 1], rtol=1e-9, atol=1e-12)


def test_exported_trees_are_in_preorder_and_malformed_ones_are_refused():
    """Exported trees have every left child right after its parent (the layout the kernel walks
    fastest) and still agree with scikit-learn; a node reached twice is refused, unreachable ones go."""
    X, y = random_data(seed=5)
    dt = DecisionTreeRegressor(max_leaf_nodes=256, random_state=0).fit(X, y)  # best-first numbering
    assert np.any(dt.tree_.children_left[dt.tree_.children_left >= 0] != np.flatnonzero(dt.tree_.children_left >= 0) + 1)
    t = tree_from_sklearn(dt)
    inner = np.flatnonzero(t.left >= 0)
    assert np.array_equal(t.left[inner], inner + 1) and t.n_leaves == 256
    assert np.array_equal(predict_nodes(X, *model_of({"ratio": Head((t,))}, X.shape[1]).arrays)[:, 0], dt.predict(X))
    tr = dt.tree_  # the same tree in scikit-learn's own numbering: the model reorders it when packing
    raw = Tree(np.where(tr.children_left < 0, -1, tr.feature).astype(np.int32), tr.threshold.astype(np.float64),
               tr.children_left.astype(np.int32), tr.children_right.astype(np.int32), tr.value[:, 0, 0].copy())
    assert np.array_equal(predict_nodes(X, *model_of({"ratio": Head((raw,))}, X.shape[1]).arrays)[:, 0], dt.predict(X))
    hgb = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(X, y)
    for tree in head_from_sklearn(hgb).trees:
        inner = np.flatnonzero(tree.left >= 0)
        assert np.array_equal(tree.left[inner], inner + 1)

    i32, f64 = (lambda *v: np.array(v, dtype=np.int32)), (lambda *v: np.array(v, dtype=np.float64))
    with pytest.raises(InputError, match="not a tree"):
        Tree(i32(0, 0, -1), f64(0.5, 0.5, 0), i32(1, 2, -1), i32(2, 1, -1), f64(0, 0, 1)).preorder()
    stray = Tree(i32(0, -1, -1, -1), f64(0.5, 0, 0, 0), i32(2, -1, -1, -1), i32(3, -1, -1, -1), f64(0, 9, 1, 2))
    assert stray.preorder().n_nodes == 3 and stray.preorder().value.tolist() == [0, 1, 2]


def test_batch_and_row_paths_agree():
    X, y = random_data(seed=3)
    heads = {"ratio": Head((tree_from_sklearn(DecisionTreeRegressor(max_leaf_nodes=64).fit(X, y)),)),
             "itl": Head((tree_from_sklearn(DecisionTreeRegressor(max_depth=5).fit(X, np.abs(y))),), "exp")}
    m = model_of(heads, X.shape[1])
    batch = predict_nodes(X[:200], *m.arrays)
    rows = np.array([predict_nodes_row(x, *m.arrays) for x in X[:200]])
    assert np.array_equal(batch, rows)
    row = m.predict_row(X[5])
    assert row["ratio"] == batch[5, 0] and row["itl"] == pytest.approx(np.exp(batch[5, 1]), rel=1e-15)


@pytest.mark.parametrize("ratio_base", ["offered", "served"])
@pytest.mark.parametrize("with_heads", [(), ("starved",), ("starved", "itl")])
def test_outcomes_are_the_heads_on_the_training_targets_base(ratio_base, with_heads):
    """The kernel's decode is what training divided by: the ratio head x ``served_base`` (or the
    offered load) of ``expected_offered``, capped at it; starved = P > 0.5 (or under 90 % of offered
    without a starved head); ITL the exp head (NaN without one). Batch and row agree."""
    qs = [query(n=n, rate=r, max_loras=a) for n, r, a in ((4, 0.2, 4), (8, 3.0, 8), (16, 9.0, 4), (2, 40.0, 1))]
    X = F.features_many(qs)
    rng = np.random.default_rng(0)
    Xr = np.repeat(X, 50, axis=0) * rng.uniform(0.5, 2.0, size=(200, X.shape[1]))
    y = rng.uniform(0.3, 1.2, size=len(Xr))
    fit = {"ratio": DecisionTreeRegressor(max_leaf_nodes=8).fit(Xr, y),
           "starved": DecisionTreeClassifier(max_leaf_nodes=8).fit(Xr, y > 0.8),
           "itl": DecisionTreeRegressor(max_leaf_nodes=8).fit(Xr, np.log(30 * y))}
    heads = {"ratio": head_from_sklearn(fit["ratio"])}
    for h in with_heads:
        heads[h] = head_from_sklearn(fit[h], "exp" if h == "itl" else "identity")
    m = TreeModel(LLAMA, F.FEATURE_NAMES, heads, ratio_base=ratio_base)
    scale = load_profile(LLAMA).client.output_len_scale
    got = m.outcomes(X, scale)
    offered = F.expected_offered(X, scale)
    base = F.served_base(offered, X[:, F.feature_index("load_factor")]) if ratio_base == "served" else offered
    thr = np.minimum(np.maximum(fit["ratio"].predict(X), 0) * base, offered)
    assert got[:, 0] == pytest.approx(thr, rel=1e-12) and got[:, 1] == pytest.approx(offered, rel=1e-12)
    starved = fit["starved"].predict_proba(X)[:, 1] > 0.5 if "starved" in with_heads else thr < 0.9 * offered
    assert np.array_equal(got[:, 2] != 0, starved)
    if "itl" in with_heads:
        assert got[:, 3] == pytest.approx(np.exp(fit["itl"].predict(X)), rel=1e-12)
    else:
        assert np.isnan(got[:, 3]).all()
    assert np.array_equal(np.array([m.outcomes(x, scale) for x in X]), got, equal_nan=True)
    if ratio_base == "served":
        assert base[-1] < offered[-1]  # one query is overloaded, so the served base is exercised
    with pytest.raises(InputError, match="load_factor"):
        model_of({"ratio": Head((tree_from_sklearn(DecisionTreeRegressor(max_depth=2).fit(X[:, :6], y[:4])),))},
                 6).outcomes(X[:, :6], scale)


# ---- model files ----------------------------------------------------------------------------------

def test_model_files_round_trip_without_pickle(tmp_path):
    X, y = random_data(seed=4)
    rf = RandomForestRegressor(n_estimators=4, max_depth=6, random_state=0).fit(X, y)
    m = model_of({"ratio": Head((tree_from_sklearn(DecisionTreeRegressor(max_leaf_nodes=32).fit(X, y)),)),
                  "itl": Head(tuple(tree_from_sklearn(e) for e in rf.estimators_), "exp")}, X.shape[1])
    m.training = {"note": "test"}
    for ext in ("json", "npz"):
        p = save_model(m, tmp_path / f"m.{ext}")
        if ext == "json":
            d = json.loads(p.read_text())
            assert d["format"] == "packer-tree-model" and d["feature_names"] == list(m.feature_names)
        else:
            with np.load(p, allow_pickle=False) as z:  # raises if anything needs pickle
                assert {"meta", "ratio.roots", "itl.value"} <= set(z.files)
        back = load_model(p)
        assert back.training == {"note": "test"} and back.head_names == m.head_names
        for a, b in zip(back.arrays, m.arrays):
            assert np.array_equal(a, b)
        assert np.array_equal(back.raw_batch(X), m.raw_batch(X))


def test_shipped_models_load_without_pickle():
    shipped = [p for p in (model_path(n, k) for n in list_profiles() for k in ("tree", "forest")) if p is not None]
    assert model_path(LLAMA, "tree") is not None, "the Llama tree model must be shipped"
    for p in shipped:
        if p.suffix == ".npz":
            np.load(p, allow_pickle=False).close()
        else:
            json.loads(p.read_text())
        m = load_model(p)
        assert m.feature_names == F.FEATURE_NAMES and {"ratio", "starved", "itl"} <= set(m.heads)
        assert m.profile_fingerprint == load_profile(m.profile).fingerprint(), f"{p.name} is stale: retrain it"


# ---- features -------------------------------------------------------------------------------------

def test_every_feature_is_documented():
    assert tuple(F.FEATURE_DOCS) == F.FEATURE_NAMES and len(set(F.FEATURE_NAMES)) == len(F.FEATURE_NAMES)
    for name in F.FEATURE_NAMES:
        assert F.FEATURE_DOCS[name].strip()
        assert f"``{name}``" in F.__doc__, f"feature {name} is not described in the module docstring"


def test_features_values():
    q = GpuQuery(LLAMA, ServerConfig(max_loras=4, max_lora_rank=32, max_num_seqs=2048), (8, 16, 32, 32),
                 (1.0, 1.0, 2.0, 4.0), LengthSpec(input_mean=300, output_mean=100),
                 BurstyArrivals(cv=2.5, multiplier_sigma=0.4, period_s=120))
    x = dict(zip(F.FEATURE_NAMES, F.features(q)))
    assert x["n_adapters"] == 4 and x["total_rate_rps"] == 8.0 and x["max_share"] == 0.5
    assert x["effective_adapters"] == pytest.approx(64 / 22)
    assert x["rank_max"] == 32 and x["rank_mean"] == 22 and x["loras_per_adapter"] == 1.0
    assert x["offered_tps"] == pytest.approx(q.offered_tps) == 3200.0
    assert (x["arrival_cv"], x["arrival_sigma"], x["arrival_period_s"]) == (2.5, 0.4, 120.0)
    assert x["kv_tokens"] == load_profile(LLAMA).memory.kv_tokens(4, 32, 0.9, True)
    assert x["load_factor"] == pytest.approx(x["offered_tps"] / x["capacity_est_tps"])
    assert 0 < x["itl_est_ms"] < 1000 and x["batch_limit"] > 1
    # capacity estimate falls with slots and rank; ITL estimate rises with load
    caps = [dict(zip(F.FEATURE_NAMES, F.features(query(max_loras=a, rank=r))))["capacity_est_tps"]
            for a, r in ((8, 8), (8, 64), (64, 64))]
    assert caps[0] > caps[1] > caps[2]
    itls = [F.features(query(rate=r))[F.feature_index("itl_est_ms")] for r in (0.2, 1.0, 3.0, 10.0)]
    assert itls == sorted(itls)
    qs = [query(rate=r) for r in (0.5, 1.0)] + [q]
    assert np.array_equal(F.features_many(qs), np.array([F.features(x) for x in qs]))


def test_slot_contention_features():
    """The slot features follow their definitions, and they flag what the twin does: at a fifth of
    the fluid capacity, three busy adapters sharing one slot starve (one holds the slot for hours),
    while with three slots the same traffic is served."""
    def feats(q):
        return dict(zip(F.FEATURE_NAMES, F.features(q)))

    def four_adapters(max_loras):
        return GpuQuery(LLAMA, ServerConfig(max_loras=max_loras, max_lora_rank=16, max_num_seqs=2048), (16,) * 4,
                        (1.0, 4.0, 0.5, 2.0), LengthSpec(input_mean=300, output_mean=100))

    x = feats(four_adapters(2))
    life = 100 * load_profile(LLAMA).client.output_len_scale * x["itl_est_ms"] / 1000

    def busy(rate):
        return math.expm1(rate * life) / rate

    assert x["busiest_running"] == pytest.approx(4.0 * life)
    assert x["slot_holder_running"] == pytest.approx(2.0 * life)
    assert x["slot_hold_log_s"] == pytest.approx(math.log(busy(2.0)))
    assert x["unslotted_rate_rps"] == pytest.approx(1.5)
    assert x["slot_turnover_log10"] == pytest.approx(math.log10((1 / busy(4.0) + 1 / busy(2.0)) / 1.5))
    every_fits = feats(four_adapters(4))
    assert (every_fits["slot_holder_running"], every_fits["slot_hold_log_s"], every_fits["slot_turnover_log10"],
            every_fits["unslotted_rate_rps"]) == (0.0, -10.0, 6.0, 0.0)

    one_slot, three_slots = query(n=3, rate=3.0, max_loras=1), query(n=3, rate=3.0, max_loras=3)
    x1, x3 = feats(one_slot), feats(three_slots)
    assert x1["load_factor"] < 0.25 and x1["slot_hold_log_s"] > math.log(3600) and x1["slot_turnover_log10"] < -3
    assert x3["slot_turnover_log10"] == 6.0
    r1, r3 = (simulate(q.scenario(600.0, 0, 300.0)) for q in (one_slot, three_slots))
    assert r1.starved and r1.throughput_ratio < 0.5
    assert not r3.starved and r3.throughput_ratio > 0.95


def test_expected_offered_is_what_the_twin_draws():
    """The load the predictors scale by: nominal rates x lengths, with the profile's early-EOS output
    scale, the same from one row or a batch, and what a long twin run actually offers."""
    qs = [query(rate=r) for r in (0.5, 1.0)]
    X = F.features_many(qs)
    scale = load_profile(LLAMA).client.output_len_scale
    batch = F.expected_offered(X, scale)
    assert [F.expected_offered(list(x), scale) for x in X] == pytest.approx(batch.tolist(), rel=1e-12)
    assert batch[1] == pytest.approx(8 * 1.0 * (222.7 + 196.1 * scale))
    drawn = simulate(qs[1].scenario(3600.0, 0)).offered_tps
    assert drawn == pytest.approx(batch[1], rel=0.03)


# ---- the sweep ------------------------------------------------------------------------------------

TINY = SweepSpec(profile=LLAMA, n_samples=40, seed=3, duration_s=60.0, warmup_s=30.0)  # short, to keep the suite quick


def _read(p: Path) -> dict:
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_sweep_sampling_covers_the_ranges():
    qs = sample_queries(SweepSpec(profile=LLAMA, n_samples=400, seed=1))
    assert qs == sample_queries(SweepSpec(profile=LLAMA, n_samples=400, seed=1))
    assert qs[:50] == sample_queries(SweepSpec(profile=LLAMA, n_samples=50, seed=1))  # sample i depends on i only
    counts = [q.num_adapters for q in qs]
    assert min(counts) == 1 and max(counts) > 200
    prof = load_profile(LLAMA)
    mem = [prof.memory.startup_error(q.server.max_loras, q.server.max_lora_rank) is not None for q in qs]
    assert 0 < sum(mem) < 40
    loads = [q.offered_tps for q in qs]
    assert min(loads) >= 100 and min(loads) < 1000 and max(loads) > 15000
    lf = F.features_many(qs)[:, F.feature_index("load_factor")]
    assert 0.3 < np.mean((lf > 0.4) & (lf < 1.6)) < 0.9  # the knee is sampled densely
    assert 0.05 < np.mean(lf > 3.0) < 0.3  # and heavy overload
    assert any(isinstance(q.arrivals, BurstyArrivals) for q in qs)
    assert all(max(q.ranks) <= q.server.max_lora_rank for q in qs)
    assert {r for q in qs for r in q.ranks} == {8, 16, 32, 64}


def test_sweep_is_deterministic_and_resumable(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    s1 = generate(TINY, a, workers=1, chunk_size=16, progress=False)
    assert (s1["chunks"], s1["chunks_run"]) == (3, 3)
    s2 = generate(TINY, b, workers=2, chunk_size=16, progress=False)  # process pool
    assert s2["executor"] == "process"
    for k in range(3):
        ca, cb = _read(a / f"chunk_{k:05d}.npz"), _read(b / f"chunk_{k:05d}.npz")
        assert ca.keys() == cb.keys()
        for col in ca:
            if col != "twin_wall_s":
                assert np.array_equal(ca[col], cb[col], equal_nan=ca[col].dtype.kind == "f"), col
    before = _read(a / "chunk_00001.npz")
    (a / "chunk_00001.npz").unlink()
    s3 = generate(TINY, a, workers=1, chunk_size=16, progress=False)
    assert (s3["chunks_run"], s3["chunks_skipped"]) == (1, 2)
    after = _read(a / "chunk_00001.npz")
    for col in before:
        if col != "twin_wall_s":
            assert np.array_equal(before[col], after[col], equal_nan=before[col].dtype.kind == "f"), col

    ds = load_dataset(a)
    assert len(ds["index"]) == 40 and ds["features"].shape == (40, len(F.FEATURE_NAMES))
    assert np.array_equal(ds["index"], np.arange(40))
    qs = sample_queries(TINY)
    for i in (0, 17, 39):
        assert query_from_dataset(ds, i) == qs[i]
    assert np.array_equal(ds["features"], F.features_many(qs))
    assert ds["memory_error"].dtype == bool and ds["starved"].dtype == bool
    ok = ~ds["memory_error"]
    np.testing.assert_allclose(ds["throughput_ratio"][ok], ds["throughput_tps"][ok] / ds["offered_tps"][ok])
    np.testing.assert_allclose(ds["twin_throughput_ratio"][ok], ds["throughput_tps"][ok] / ds["twin_offered_tps"][ok])
    assert np.all(np.isnan(ds["throughput_tps"][~ok]))

    with pytest.raises(InputError, match="different sweep"):
        generate(SweepSpec(profile=LLAMA, n_samples=40, seed=4, duration_s=60.0, warmup_s=30.0), a, workers=1, progress=False)

    # feature rows written by other feature code (same names) are recomputed on load, not reused
    chunk = _read(a / "chunk_00002.npz")
    assert str(chunk["features_code"]) == F.features_code()
    chunk["features"] = np.zeros_like(chunk["features"])
    chunk["features_code"] = np.array("older-code")
    np.savez_compressed(a / "chunk_00002.npz", **chunk)
    assert np.array_equal(load_dataset(a)["features"], F.features_many(qs))
    assert not load_dataset(a, recompute_features=False)["features"][32:].any()


def test_replicates_are_resumable_reproducible_and_labels_are_their_consensus(tmp_path):
    spec = SweepSpec(profile=LLAMA, n_samples=24, seed=5, duration_s=60.0, warmup_s=30.0)
    everything = ReplicateSpec(seeds=2, ratio_range=(0.0, 100.0))  # every sample that starts
    with pytest.raises(InputError, match="generate the sweep"):
        replicate(spec, tmp_path / "a", everything, workers=1, progress=False, chunk_size=8)
    for d in ("a", "b"):
        generate(spec, tmp_path / d, workers=1, chunk_size=8, progress=False)
    first = replicate(spec, tmp_path / "a", everything, workers=1, progress=False, chunk_size=8)
    again = replicate(spec, tmp_path / "a", everything, workers=1, progress=False, chunk_size=8)
    assert first["chunks_run"] == 3 and again["chunks_run"] == 0 and again["runs"] == first["runs"]
    other = replicate(spec, tmp_path / "b", everything, workers=2, progress=False, chunk_size=8)
    assert other["executor"] == "process" and other["runs"] == first["runs"]

    ds, ds_b = load_dataset(tmp_path / "a"), load_dataset(tmp_path / "b")
    for k in ("rep_index", "rep_throughput_tps", "rep_starved", "rep_seeds"):
        np.testing.assert_array_equal(ds[k], ds_b[k])
    started = np.flatnonzero(~ds["memory_error"])
    np.testing.assert_array_equal(ds["rep_index"], ds["index"][started])
    assert len(set(ds["rep_seeds"].ravel()) | set(ds["twin_seed"])) == ds["rep_seeds"].size + len(ds["twin_seed"])
    # a replicate is the twin run with its recorded seed
    row = int(ds["rep_index"][3])
    again_run = run_query(query_from_dataset(ds, row), 60.0, int(ds["rep_seeds"][3, 1]), 30.0)
    assert again_run["throughput_tps"] == ds["rep_throughput_tps"][3, 1]

    before = {k: v.copy() for k, v in ds.items()}
    c = consensus_labels(ds)
    assert all(np.array_equal(ds[k], before[k], equal_nan=ds[k].dtype.kind == "f") for k in ds)  # not mutated
    assert set(c["runs"][started]) == {3} and set(np.delete(c["runs"], started)) <= {1}
    for j, i in enumerate(ds["rep_index"]):
        runs = np.r_[ds["throughput_tps"][i], ds["rep_throughput_tps"][j]]
        assert c["throughput_tps"][i] == pytest.approx(runs.mean())
        votes = int(ds["starved"][i]) + int(ds["rep_starved"][j].sum())
        assert c["starved"][i] == (votes >= 2)
        assert c["twin_throughput_ratio"][i] == pytest.approx(runs.mean() / c["twin_offered_tps"][i])
    no_reps = consensus_labels({k: v for k, v in ds.items() if not k.startswith("rep")})
    assert no_reps["runs"].max() == 1 and np.array_equal(no_reps["starved"], ds["starved"])

    # the default rule replicates a subset; changing the rule redoes every file
    narrow = replicate(spec, tmp_path / "a", ReplicateSpec(seeds=1), workers=1, progress=False, chunk_size=8)
    assert narrow["chunks_run"] == 3 and narrow["replicated_samples"] < first["replicated_samples"]
    assert load_dataset(tmp_path / "a")["rep_starved"].shape[1] == 1


def test_a_grown_sweep_replicates_its_regrown_last_chunk(tmp_path):
    everything = ReplicateSpec(seeds=1, ratio_range=(0.0, 100.0))
    small = SweepSpec(profile=LLAMA, n_samples=10, seed=6, duration_s=60.0, warmup_s=30.0)
    generate(small, tmp_path, workers=1, chunk_size=8, progress=False)
    assert replicate(small, tmp_path, everything, workers=1, progress=False, chunk_size=8)["chunks_run"] == 2
    grown = dataclasses.replace(small, n_samples=12)  # chunk 1 grows from samples 8-9 to 8-11
    generate(grown, tmp_path, workers=1, chunk_size=8, progress=False)
    again = replicate(grown, tmp_path, everything, workers=1, progress=False, chunk_size=8)
    assert again["chunks_run"] == 1 and again["chunks_skipped"] == 1
    ds = load_dataset(tmp_path)
    np.testing.assert_array_equal(ds["rep_index"], ds["index"][~ds["memory_error"]])


def test_replicate_rule_picks_the_ambiguous_first_runs(tmp_path):
    spec = SweepSpec(profile=LLAMA, n_samples=64, seed=8, duration_s=60.0, warmup_s=30.0)
    generate(spec, tmp_path, workers=1, chunk_size=64, progress=False)
    ds = load_dataset(tmp_path)
    rule = ReplicateSpec()
    picked = np.zeros(len(ds["index"]), bool)
    picked[rule.select(ds)] = True
    r = ds["twin_throughput_ratio"]
    in_band = (r >= 0.85) & (r < 0.99)
    assert (picked[in_band & ~ds["memory_error"]]).all() and not picked[ds["memory_error"]].any()
    lf = ds["features"][:, F.FEATURE_NAMES.index("load_factor")]
    bursty = np.array(['"bursty"' in str(q) for q in ds["query_json"]])
    calm = ~bursty & ~in_band & ~ds["queue_diverging"]
    assert not picked[calm].any() and 0 < picked.sum() < len(picked)
    assert picked[bursty & (lf >= 0.3) & (lf < 1.5) & ~ds["memory_error"]].all()
    with pytest.raises(InputError, match="seeds"):
        ReplicateSpec(seeds=0)
    with pytest.raises(InputError, match="ratio_range"):
        ReplicateSpec(ratio_range=(1.0, 0.5))


def test_ray_executor_names_the_extra(tmp_path):
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed")
    except ImportError:
        pass
    with pytest.raises(InputError, match=r"packer\[ray\]"):
        generate(SweepSpec(profile=LLAMA, n_samples=4, duration_s=10.0, warmup_s=0.0), tmp_path, workers=2, chunk_size=1,
                 executor="ray", progress=False)


def test_train_exports_a_working_model(tmp_path):
    from packer.predictors.training import train

    d = tmp_path / "sweep"
    spec = SweepSpec(profile=LLAMA, n_samples=120, seed=5, duration_s=60.0, warmup_s=30.0)
    generate(spec, d, workers=1, chunk_size=64, progress=False)
    replicate(spec, d, ReplicateSpec(seeds=2, ratio_range=(0.0, 100.0)), workers=1, progress=False, chunk_size=64)
    rep = train(d, LLAMA, tmp_path / "m.json", candidates=("random_forest",), leaf_grid=(8, 16), extra_rows=300,
                forest_out=tmp_path / "m.forest.npz", forest_trees=4, forest_depth=5, log=None)
    assert rep["dataset"]["replicated"] > 60 and rep["dataset"]["replicate_spec"]["seeds"] == 2
    first_runs = train(d, LLAMA, tmp_path / "first.json", candidates=("random_forest",), leaf_grid=(8,),
                       extra_rows=0, use_replicates=False, log=None)
    assert first_runs["dataset"]["replicated"] == 0 and first_runs["dataset"]["replicate_spec"] is None
    assert {"full", "tree"} == set(rep["test"]) and 0 <= rep["test"]["tree"]["starved_f1"] <= 1
    assert 0 <= rep["test"]["tree"]["keep_up_accuracy"] <= 1 and rep["test"]["full"]["throughput_mare"] < 1
    m = load_model(tmp_path / "m.json")
    assert m.sizes()["ratio"]["leaves"] <= 16 and m.training["profile"] == LLAMA
    f = load_model(tmp_path / "m.forest.npz")
    assert f.kind == "forest" and len(f.heads["ratio"].trees) == 4 and f.sizes()["ratio"]["max_depth"] <= 5
    p = get_predictor("tree", model=tmp_path / "m.json")
    qs = [query(rate=r) for r in (0.5, 2.0, 8.0)] + [query(n=4, rate=0.1, max_loras=400, rank=512)]
    many = p.predict_many(qs)
    assert many == [p.predict(q) for q in qs]
    assert many[3].memory_error and many[0].memory_error is None and many[0].throughput_tps > 0
    fp = ForestPredictor(model=tmp_path / "m.forest.npz")
    assert p.describe()["model"] != fp.describe()["model"]
    assert [x.memory_error for x in fp.predict_many(qs)] == [x.memory_error for x in many]
    # the latency heads: every one trained (the TTFT ones on not-starved runs) and answered on both paths
    assert set(m.latency_heads) == set(f.latency_heads) == {"itl", "ttft_mean", "ttft_p99", "ttft_worst_p99"}
    assert all(f"{h}_mare" in rep["test"]["tree"] for h in m.latency_heads)
    ungated = get_predictor("tree", model=tmp_path / "m.json", latency_gate=1e9)  # every head, however inaccurate
    light = ungated.predict(qs[0])
    assert ungated.predict_many(qs[:1]) == [light]
    assert 0 < light.mean_ttft_ms <= light.p99_ttft_ms * 1.5 and light.worst_adapter_p99_ttft_ms > 0
    assert light.mean_itl_ms > 0
    x = F.features_many(qs[:1])[0]
    assert m.outcomes(x, 1.0)[3:].tolist() == [m.predict_row(x)[h] for h in m.latency_heads]
    shipped = TreePredictor().model_for(LLAMA)  # trained before the TTFT heads: NaN there, None in predictions
    assert shipped.latency_heads == ("itl",) and np.isnan(shipped.outcomes(x, 1.0)[4:]).all()
    assert TreePredictor().predict(qs[0]).mean_ttft_ms is None
    # an SLO on TTFT is planned with the tree itself (no fallback to the twin), its latencies reported
    import packer

    wl = {"profile": LLAMA, "lengths": {"input_mean": 222.7, "output_mean": 196.1}, "slo": {"ttft_p99_ms": 2000},
          "adapters": [{"id": f"a{i}", "rank": 8, "rate": 0.5 + i} for i in range(4)]}
    r = packer.solve(wl, predictor=ungated, verify=False, executor="serial")
    assert r.predictor == "tree" and not any("does not predict" in w for w in r.warnings)
    assert all(c.predicted_ms is not None for g in r.gpus for c in g.slo)
    # the accuracy gate: a head whose test error exceeds it is withheld, and the SLO goes to the twin, saying why
    err = load_model(tmp_path / "m.json").latency_test_mare("ttft_p99")
    gate = get_predictor("tree", model=tmp_path / "m.json", latency_gate=err * 0.99)
    assert gate.predict(qs[0]).p99_ttft_ms is None and gate.predict(qs[0]).mean_itl_ms == light.mean_itl_ms
    assert "p99_ttft_ms" in gate.withheld(LLAMA) and gate.describe() != ungated.describe()
    r = packer.solve(wl, predictor=gate, verify=False, executor="serial")
    assert r.predictor == "twin"
    assert any("does not predict ttft_p99_ms (ttft_p99_ms: its ttft_p99 head's test error" in w for w in r.warnings)
    with pytest.raises(InputError, match="latency_gate"):
        get_predictor("tree", latency_gate=0)


# ---- the predictors -------------------------------------------------------------------------------

def test_registry_lists_tree_and_forest():
    assert {"tree", "forest"} <= set(PREDICTORS.names()) and PREDICTORS.available("tree")
    assert isinstance(get_predictor("tree"), TreePredictor) and isinstance(get_predictor("forest"), ForestPredictor)


def test_describe_hashes_every_module_with_prediction_kernels():
    """Caches keyed on ``describe()`` (the capacity tables) must notice a change in any code that turns
    a query into a tree prediction: every predictors module that defines numba kernels, or computes
    features, is hashed."""
    import packer.predictors as pkg
    from packer.predictors.tree import code_files

    hashed = {p.resolve() for p in code_files()}
    here = Path(pkg.__file__).parent
    for f in here.glob("*.py"):
        text = f.read_text(encoding="utf-8")
        if "@nb.njit" in text or f.name in ("features.py", "tree.py", "tree_model.py", "tree_io.py"):
            assert f.resolve() in hashed, f"{f.name} defines prediction code but is not in describe()'s hash"
    assert "code" in get_predictor("tree").describe()


def test_memory_error_is_the_profile_check():
    prof = load_profile(LLAMA)
    p = get_predictor("tree")
    qs = [query(n=n, rate=0.2, max_loras=a, rank=r) for n, a, r in
          ((4, 400, 512), (8, 8, 16), (64, 64, 64), (100, 100, 128), (40, 40, 320), (440, 440, 8), (500, 500, 8))]
    preds = p.predict_many(qs)
    assert preds == [p.predict(q) for q in qs]
    n_err = 0
    for q, r in zip(qs, preds):
        want = prof.memory.startup_error(q.server.max_loras, q.server.max_lora_rank, 0.9, True)
        assert r.memory_error == want
        n_err += want is not None
        assert (r.throughput_tps is None) == (want is not None)
    assert 0 < n_err < len(qs)


def test_missing_or_stale_model_names_the_profile_and_packer_train(tmp_path):
    shipped = Path(__file__).resolve().parents[1] / "packer" / "profiles" / f"{LLAMA}.json"
    d = json.loads(shipped.read_text())
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps(dict(d, name="custom@gpu")))
    with pytest.raises(InputError, match=r"'custom@gpu'.*packer train"):
        get_predictor("tree").predict(query(profile=str(custom)))
    # a model trained on another calibration of the profile is refused, not silently used
    d["step"]["prefill_ms_per_token"] *= 1.5
    recal = tmp_path / "recal.json"
    recal.write_text(json.dumps(d))
    if model_path(LLAMA) is not None:
        with pytest.raises(InputError, match="another calibration.*packer train"):
            get_predictor("tree").predict(query(profile=str(recal)))
    with pytest.raises(InputError, match="no model file"):
        get_predictor("tree", model=tmp_path / "nope.json")


@pytest.mark.parametrize("name", ["tree", "forest"])
def test_model_trained_on_other_length_shapes_is_refused(tmp_path, name):
    shipped = model_path(LLAMA, name)
    if shipped is None:
        pytest.skip(f"no {name} model shipped for {LLAMA}")
    model = load_model(shipped)
    assert model.length_shapes == shipped_length_shapes()  # the shipped models match the shipped shapes
    shapes = {k: list(v) for k, v in model.length_shapes.items()}
    shapes["sharegpt"][1] += 0.1
    stale = save_model(dataclasses.replace(model, length_shapes=shapes), tmp_path / f"stale{shipped.suffix}")
    with pytest.raises(InputError, match="other request-length shapes.*packer train"):
        get_predictor(name, model=stale).predict(query())


@pytest.mark.parametrize("name", ["tree", "forest"])
def test_shipped_model_contract(name):
    if model_path(LLAMA, name) is None:
        pytest.skip(f"no {name} model shipped for {LLAMA}")
    p = get_predictor(name)
    light = p.predict(query(rate=0.5))
    assert light.predictor == name and light.ok and light.throughput_ratio > 0.95
    # offered as the twin draws it: the nominal load with the profile's early-EOS output scale
    scale = load_profile(LLAMA).client.output_len_scale
    assert light.offered_tps == pytest.approx(8 * 0.5 * (222.7 + 196.1 * scale))
    assert light.offered_tps == pytest.approx(query(rate=0.5).offered_tps, rel=0.01)
    assert 5 < light.mean_itl_ms < 200
    over = p.predict(query(rate=12.0))
    assert over.starved and not over.ok and over.throughput_ratio < 0.8
    assert p.predict(query(n=4, rate=0.1, max_loras=400, rank=512)).memory_error
    qs = [query(rate=r) for r in (0.5, 2.0, 0.5)]
    assert p.predict_many(qs) == [p.predict(q) for q in qs] and p.predict(qs[0]) == p.predict(qs[2])


@pytest.mark.parametrize("profile", [LLAMA, "qwen-2.5-7b-instruct@h100-64gb"])
def test_shipped_tree_follows_the_twin_into_heavy_overload(profile):
    # The real measurements run one GPU at 300+ req/s, 10-20x its capacity. A throughput head that
    # learnt throughput / offered could not extrapolate there (its leaves are constants); the
    # "served" base (min of offered and the fluid model's capacity) can.
    if model_path(profile, "tree") is None:
        pytest.skip(f"no tree model shipped for {profile}")
    tree, twin = get_predictor("tree"), get_predictor("twin", duration_s=300.0)
    for n, slots, total_rate in ((64, 32, 80.0), (384, 16, 350.0)):
        q = query(n=n, rate=total_rate / n, max_loras=slots, profile=profile, max_cpu_loras=n)
        t, w = tree.predict(q), twin.predict(q)
        assert t.starved and w.starved
        assert t.throughput_tps == pytest.approx(w.throughput_tps, rel=0.2), (n, slots)
        assert t.throughput_ratio < 0.4


def test_capacity_check_compares_with_the_twin():
    from packer.capacity.training import capacity_check

    if model_path(LLAMA, "tree") is None:
        pytest.skip("no tree model shipped")
    out = capacity_check(LLAMA, {"tree": get_predictor("tree")}, ranks=(8,), max_count=1, workers=1)
    assert out["tree"]["entries"] == 1 and 0 <= out["tree"]["mean_abs_rel_diff"] < 0.5


def test_solve_with_the_tree_predictor(tmp_path, monkeypatch):
    import packer

    if model_path(LLAMA, "tree") is None:
        pytest.skip("no tree model shipped")
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path))
    wl = {"profile": LLAMA, "adapters": [{"id": f"a{i}", "rank": 8 if i % 3 else 16, "rate": 0.5 + 0.1 * (i % 5)}
                                         for i in range(40)]}
    r = packer.solve(wl, predictor="tree", verify=False)
    assert r.num_gpus >= 1 and r.predictor == "tree"
    assert sorted(a.id for g in r.gpus for a in g.adapters) == sorted({f"a{i}" for i in range(40)})
