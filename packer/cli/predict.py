"""`packer predict`: a fast predictor's answer for scenario files."""

from __future__ import annotations

from typing import Any

import click

from ..errors import InputError, PackerError
from .common import bare, fail, load_scenario
from .render import echo_json, prediction_dict, prediction_table

__all__ = ["predict"]


def _check_model_file(path: str) -> None:
    """--model: a readable packer tree model (JSON or NPZ), checked before anything is predicted."""
    from ..predictors.tree_io import load_model

    try:
        load_model(path)
    except InputError as e:
        fail(f"--model: {bare(e)}")


@click.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--predictor", default="tree", show_default=True, help="tree, forest or twin.")
@click.option("--model", default=None, metavar="PATH",
              help="Model file (.json / .npz, from `packer train`) for tree / forest instead of the shipped one.")
@click.option("--extrapolation", type=click.Choice(["warn", "twin", "error"]), default="warn", show_default=True,
              help="tree / forest on a query outside their training domain: answer with a warning, answer with "
                   "the twin instead, or refuse.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per scenario, one per line.")
def predict(scenarios: tuple[str, ...], predictor: str, model: str | None, extrapolation: str,
            as_json: bool) -> None:
    """Predict each SCENARIO.json's throughput, starvation and ITL with a fast predictor.

    Same scenario files as `packer simulate`; `--predictor twin` runs the twin with each scenario's
    duration_s and seed (the numbers of `packer simulate`), `tree` / `forest` answer in microseconds."""
    import time

    from ..predictors import PREDICTORS, GpuQuery

    parsed = [load_scenario(p) for p in scenarios]  # validate every file before predicting any
    if predictor not in PREDICTORS.names():
        fail(f"--predictor: unknown predictor {predictor!r}; valid: {', '.join(PREDICTORS.names())}")
    if model is not None:
        if predictor == "twin":
            fail("--model: applies to the tree and forest predictors, not twin")
        _check_model_file(model)
    if extrapolation != "warn" and predictor == "twin":
        fail("--extrapolation: applies to the tree and forest predictors, not twin")
    options: dict[str, Any] = {} if model is None else {"model": model}
    if extrapolation != "warn":
        options["extrapolation"] = extrapolation

    def make(**extra):
        try:
            return PREDICTORS.get(predictor, field="--predictor", **options, **extra)
        except InputError as e:  # a missing optional dependency, a bad model file
            fail(str(e))

    queries = [GpuQuery.from_scenario(sc) for sc in parsed]
    results: list[tuple] = []  # (prediction, wall seconds) per scenario
    if predictor == "twin":
        from ..twin.engine import warm_up

        make(duration_s=parsed[0].workload.duration_s, seed=parsed[0].workload.seed,
             warmup_s=parsed[0].workload.warmup_s)  # checks the name first
        warm_up()  # the kernel's compilation (or cache load) is loading, not predicting
        for path, sc, q in zip(scenarios, parsed, queries):
            pred = make(duration_s=sc.workload.duration_s, seed=sc.workload.seed, warmup_s=sc.workload.warmup_s)
            t0 = time.perf_counter()
            try:
                p = pred.predict(q)
            except PackerError as e:
                fail(f"{path}: {e}")
            results.append((p, time.perf_counter() - t0))
    else:
        pred = make()
        model_for = getattr(pred, "model_for", None)
        for path, sc in zip(scenarios, parsed):  # load (and check) each profile's model before predicting
            try:
                if model_for is not None:
                    model_for(sc.profile)
            except PackerError as e:
                fail(f"{path}: {e}")
        try:
            pred.predict_many(queries[:1])  # warm-up: numba's compiled kernels load from its cache
            t0 = time.perf_counter()
            preds = pred.predict_many(queries)  # one batch: every scenario of a profile in one kernel call
            each = (time.perf_counter() - t0) / len(queries)
        except PackerError as e:
            for path, q in zip(scenarios, queries):  # name the scenario that fails
                try:
                    pred.predict(q)
                except PackerError as e1:
                    fail(f"{path}: {e1}")
            fail(f"{scenarios[0]}: {e}")
        results = [(p, each) for p in preds]
    for path, (p, wall) in zip(scenarios, results):
        if as_json:
            echo_json(prediction_dict(p, wall))
        else:
            click.echo(prediction_table(path, p, wall))
