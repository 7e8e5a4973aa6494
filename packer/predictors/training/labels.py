"""What the models learn from a sweep: the targets of the three heads, the bases the throughput
ratio is taken against, and the train / validation / test split (70 / 15 / 15 %, by sample, seeded).

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

__all__ = ["Labels", "make_labels"]


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

    @property
    def train_itl(self) -> np.ndarray:
        """Training rows with an ITL."""
        return self.train[self.has_itl[self.train]]

    @property
    def val_itl(self) -> np.ndarray:
        """Validation rows with an ITL."""
        return self.val[self.has_itl[self.val]]

    @property
    def test_itl(self) -> np.ndarray:
        """Test rows with an ITL."""
        return self.test[self.has_itl[self.test]]


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
    return Labels(X=X, thr=thr, twin_off=twin_off, offered=off, base=base, base_drawn=base_drawn, ratio=ratio,
                  starved=ds["starved"].astype(bool), itl=itl, has_itl=np.isfinite(itl) & (itl > 0), usable=idx,
                  train=np.sort(perm[:n_tr]), val=np.sort(perm[n_tr:n_tr + n_va]), test=np.sort(perm[n_tr + n_va:]))
