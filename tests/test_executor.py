"""One executor for every parallel job: serial, process and Ray (a local Ray started by the test) give the
same sweep rows, capacity tables and twin verdicts for the same seed; a user's Executor is used as given."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from packer.capacity import build_capacity_model
from packer.errors import InputError
from packer.executor import EXECUTORS, RayExecutor, map_jobs, open_executor
from packer.model import LengthSpec, PoissonArrivals, ServerConfig, ServerDefaults
from packer.predictors import GpuQuery, TwinPredictor
from packer.predictors.training import SweepSpec, generate, load_dataset

LLAMA = "llama-3.1-8b-instruct@h100-64gb"
HAVE_RAY = importlib.util.find_spec("ray") is not None
NAMES = [pytest.param(n, marks=pytest.mark.skipif(n == "ray" and not HAVE_RAY, reason="ray is not installed"))
         for n in EXECUTORS]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module's Ray cases (each RayExecutor then joins it instead of starting one)."""
    if not HAVE_RAY:
        yield None
        return
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("name", NAMES)
def test_map_jobs_returns_results_in_job_order(name, ray_cluster):
    seen = []
    with open_executor(name, 2) as ex:
        out = map_jobs(ex, pow, [(i, 2) for i in range(7)], seen.append)  # a builtin: Ray workers import it
    assert out == [i * i for i in range(7)] and sorted(seen) == sorted(out)


def test_a_given_executor_is_used_and_left_open():
    with ThreadPoolExecutor(2) as pool:
        with open_executor(pool) as ex:
            assert ex is pool and map_jobs(ex, pow, [(3, 2)]) == [9]
        assert pool.submit(pow, 2, 2).result() == 4  # still open


def test_an_unknown_executor_lists_the_valid_ones():
    with pytest.raises(InputError, match="valid: serial, process, ray"):
        with open_executor("threads"):
            pass


@pytest.mark.skipif(HAVE_RAY, reason="ray is installed")
def test_ray_without_the_extra_names_it():
    with pytest.raises(InputError, match=r"packer\[ray\]"):
        RayExecutor(1)


TINY_SWEEP = SweepSpec(profile=LLAMA, n_samples=12, seed=4, duration_s=60.0, warmup_s=30.0)


def test_every_executor_gives_the_same_sweep_rows(tmp_path, ray_cluster):
    rows = {}
    for name in [n for n in EXECUTORS if n != "ray" or HAVE_RAY]:
        generate(TINY_SWEEP, tmp_path / name, workers=2, chunk_size=4, executor=name, progress=False)
        rows[name] = load_dataset(tmp_path / name)
    ref = rows.pop("serial")
    for name, ds in rows.items():
        for col in ("throughput_tps", "starved", "memory_error", "mean_itl_ms", "features"):
            assert np.array_equal(ds[col], ref[col], equal_nan=True), (name, col)


def test_every_executor_gives_the_same_capacity_table_and_verdicts(ray_cluster):
    twin = TwinPredictor(duration_s=120.0, warmup_s=60.0)
    tables, verdicts = {}, {}
    queries = [GpuQuery(LLAMA, ServerConfig(max_loras=4, max_lora_rank=8), (8,) * 4, (r,) * 4) for r in (0.5, 4.0, 20.0)]
    for name in [n for n in EXECUTORS if n != "ray" or HAVE_RAY]:
        cm = build_capacity_model(twin, LLAMA, LengthSpec(input_mean=300, output_mean=100), PoissonArrivals(),
                                  ServerDefaults(), [8, 16], 3, workers=2, cache=False, executor=name)
        tables[name] = cm.to_dict()["table"]
        verdicts[name] = TwinPredictor(duration_s=120.0, warmup_s=60.0, workers=2, executor=name).predict_many(queries)
    assert all(t == tables["serial"] for t in tables.values())
    assert all(v == verdicts["serial"] for v in verdicts.values())


def test_a_twin_predictor_holding_an_open_executor_still_goes_to_worker_processes():
    """The capacity search ships the predictor to its workers; an open executor object stays behind
    (benchmarks/gap.py passes one), a named one travels."""
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    from packer.predictors.twin import TwinPredictor

    with ProcessPoolExecutor(1) as pool:
        twin = TwinPredictor(executor=pool, seed=3)
        copy = pickle.loads(pickle.dumps(twin))
        assert copy.executor is None and copy.seed == 3 and twin.executor is pool
    assert pickle.loads(pickle.dumps(TwinPredictor(executor="serial"))).executor == "serial"
