"""`packer train`: a twin sweep for a profile, and the tree (and forest) predictor trained on it."""

from __future__ import annotations

from pathlib import Path

import click

from ..defaults import DEFAULT_DURATION_S, DEFAULT_WARMUP_S
from ..errors import InputError
from .common import bare, executor_options, fail
from .render import echo_json, train_summary

__all__ = ["train"]


@click.command()
@click.option("--profile", "profile_name", required=True, metavar="NAME",
              help="Profile to train for (see `packer profiles`).")
@click.option("--samples", type=click.IntRange(min=1), default=24000, show_default=True,
              help="Twin runs in the sweep (a larger sweep in the same directory reuses the runs done).")
@click.option("--dataset", default=None, metavar="DIR",
              help="Sweep directory, created or resumed [default: benchmarks/out/sweeps/<short name>].")
@click.option("--out", default=None, metavar="FILE.json", help="Tree model file to write [default: ./<profile>.json].")
@click.option("--forest-out", default=None, metavar="FILE.npz", help="Also write the forest model here.")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_DURATION_S,
              show_default=True, help="Measured simulated seconds per twin run.")
@click.option("--warmup", "warmup_s", type=click.FloatRange(min=0), default=DEFAULT_WARMUP_S, show_default=True,
              help="Simulated seconds before each run's measured window (steady state).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Twin processes [default: CPU count].")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="scikit-learn processes / threads.")
@click.option("--extra-rows", type=click.IntRange(min=0), default=300000, show_default=True,
              help="Sampled feature rows labelled by the big models for the distillation.")
@click.option("--replicates", type=click.IntRange(min=0), default=4, show_default=True,
              help="Extra twin seeds for the sweep's ambiguous samples (near the starvation boundary), whose "
                   "labels become the runs' mean / majority; 0 for none.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-capacity-check", is_flag=True, help="Skip comparing the capacity tables with the twin's.")
@executor_options
@click.option("--json", "as_json", is_flag=True, help="The training report as one JSON object.")
def train(profile_name: str, samples: int, dataset: str | None, out: str | None, forest_out: str | None,
          duration_s: float, warmup_s: float, workers: int | None, jobs: int, extra_rows: int, replicates: int, seed: int,
          no_capacity_check: bool, executor: str, ray_address: str | None, as_json: bool) -> None:
    """Run a twin sweep for a profile and train the tree (and forest) predictor on it."""
    import importlib.util
    import time

    from ..profile import load_profile

    try:
        prof = load_profile(profile_name)
    except InputError as e:
        fail(f"--profile: {bare(e)}")
    short = prof.name.split("@")[0].split("-")[0] or prof.name
    dataset = dataset or str(Path("benchmarks") / "out" / "sweeps" / short)
    out = out or f"./{prof.name}.json"
    for flag, path in (("--out", out), ("--forest-out", forest_out)):
        if path is not None and Path(path).suffix not in (".json", ".npz"):
            fail(f"{flag}: a model file must end in .json or .npz (got {Path(path).name!r})")
    if Path(dataset).exists() and not Path(dataset).is_dir():
        fail(f"--dataset: {dataset} is not a directory")
    if importlib.util.find_spec("sklearn") is None:  # before a long sweep, not after it
        fail("training needs scikit-learn; install it with: pip install scikit-learn")
    from ..capacity.training import build

    log = None if as_json else (lambda msg: click.echo(msg, err=True))
    t0, started = time.perf_counter(), time.time()
    try:
        rep = build(profile_name, samples, dataset, out, seed=seed, workers=workers, forest_out=forest_out,
                    duration_s=duration_s, warmup_s=warmup_s, progress=not as_json, check_capacity=not no_capacity_check,
                    n_jobs=jobs, extra_rows=extra_rows, replicates=replicates, log=log, executor=executor,
                    ray_address=ray_address)
    except InputError as e:
        written = Path(out).is_file() and Path(out).stat().st_mtime >= started - 1
        if written and not no_capacity_check:  # the model is saved last in training: the capacity check failed
            fail(f"wrote {out}, but its capacity check failed ({e}); the model is too coarse to plan with: "
                  f"train on more --samples (or skip the check with --no-capacity-check)")
        fail(str(e))
    except ValueError as e:  # scikit-learn refusing a split too small to fit
        fail(f"training on {samples} samples failed ({e}); use more --samples")
    wall = time.perf_counter() - t0
    if as_json:
        echo_json({**rep, "wall_seconds": wall})
    else:
        click.echo(train_summary(prof.name, out, forest_out, rep, wall))
