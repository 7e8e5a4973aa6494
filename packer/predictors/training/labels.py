"""What the models learn from a sweep: the targets of the heads, the bases the throughput ratio is
taken against, and the train / validation / test split (70 / 15 / 15 %, by sample, seeded).

The latency heads (``tree_model.LATENCY_HEADS``) learn the log of a twin latency: ``itl`` on every row
with a positive mean ITL; the TTFT heads (``ttft_mean``, ``ttft_p99``, ``ttft_worst_p99``) only on the rows
the twin does not call starved: a starved GPU's TTFT grows with the run's length (its queue), and the
capacity model refuses such a GPU before it reads a latency. Replicated samples learn the mean ITL over
their runs (``replicates.consensus_labels``) but the first run's TTFTs (replicates record none). A sweep without a latency's column (one
written before it) gives no rows for that head, which is then not trained.

The ``ratio`` head learns the twin's throughput / min(offered as the twin drew it, the fluid model's
capacity); the predictor multiplies it by min(the expected offered load, that capacity)
(``features.served_base``) and caps the product at the expected offered load. Rows with a memory error
(the predictor answers those with the profile's exact memory check) and rows without a throughput are
left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...profile import Profile
from ..features import FEATURE_NAMES, expected_offered, served_base
from ..tree_model import LATENCY_HEADS

__all__ = ["Labels", "make_labels", "NOT_STARVED_ONLY"]

NOT_STARVED_ONLY = ("ttft_mean", "ttft_p99", "ttft_worst_p99")  # latency heads learned on not-starved rows


@dataclass(frozen=True)
class Labels:
    """Per-row arrays of a sweep (after ``consensus_labels``) and the row numbers of its split.

    ``offered`` is the expected offered load, ``base`` what the predictor multiplies its ratio by,
    ``base_drawn`` the same with the load the twin drew; ``usable`` the rows that can be learned from."""

    X: np.ndarray
    thr: np.ndarray
    twin_off: np.ndarray
    offered: np.ndarray
    base: np.ndarray
    base_drawn: np.ndarray
    ratio: np.ndarray
    starved: np.ndarray
    itl: np.ndarray
    has_itl: np.ndarray
    usable: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    latency: dict[str, np.ndarray]  # latency head -> its values (ms), per row
    has_latency: dict[str, np.ndarray]  # latency head -> whether the row is one the head learns from

    def latency_heads(self) -> tuple[str, ...]:
        """The latency heads this sweep can train and score: rows with the value in every split."""
        return tuple(h for h in LATENCY_HEADS
                     if all(np.any(self.has_latency[h][idx]) for idx in (self.train, self.val, self.test)))

    def rows(self, head: str, split: str) -> np.ndarray:
        """The rows of ``split`` (``train``, ``val``, ``test``) latency head ``head`` learns from."""
        idx = getattr(self, split)
        return idx[self.has_latency[head][idx]]


def make_labels(ds: dict[str, np.ndarray], prof: Profile, seed: int) -> Labels:
    """The targets and the seeded split of dataset ``ds`` on profile ``prof``."""
    X = ds["features"]
    thr, twin_off = ds["throughput_tps"], ds["twin_offered_tps"]
    off = expected_offered(X, prof.client.output_len_scale)
    ok = ~ds["memory_error"] & np.isfinite(thr) & (off > 0) & np.isfinite(twin_off) & (twin_off > 0)
    idx = np.flatnonzero(ok)
    perm = np.random.default_rng(seed).permutation(idx)
    n_tr, n_va = int(0.7 * len(perm)), int(0.15 * len(perm))
    lf = X[:, FEATURE_NAMES.index("load_factor")]
    base = served_base(off, lf)
    base_drawn = np.where(lf > 1.0, np.minimum(twin_off, base), twin_off)
    ratio = np.where(ok, thr / np.where(ok, base_drawn, 1.0), np.nan)  # throughput / min(drawn offered, capacity)
    itl = ds["mean_itl_ms"]
    starved = ds["starved"].astype(bool)
    latency, has = {}, {}
    for head, column in LATENCY_HEADS.items():
        v = ds[column] if column in ds else np.full(len(X), np.nan)
        latency[head] = v
        has[head] = np.isfinite(v) & (v > 0) & ((~starved) if head in NOT_STARVED_ONLY else True)
    return Labels(X=X, thr=thr, twin_off=twin_off, offered=off, base=base, base_drawn=base_drawn, ratio=ratio,
                  starved=starved, itl=itl, has_itl=has["itl"], usable=idx,
                  train=np.sort(perm[:n_tr]), val=np.sort(perm[n_tr:n_tr + n_va]), test=np.sort(perm[n_tr + n_va:]),
                  latency=latency, has_latency=has)
