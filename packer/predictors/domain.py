"""The training domain of a tree model: the part of query space its twin sweep covered.

A tree answers anywhere, but outside the ranges it was trained on it extrapolates (a leaf at the
edge of the data stands for everything beyond it): 9,748 adapters on one GPU look like 512 to a
model trained on 1..512. ``Domain`` records those ranges as intervals of feature columns (a model
file keeps them in its ``training["domain"]``; files without one were trained on the default
``SweepSpec``, whose domain ``default_domain()`` gives), and ``DomainCheck`` tells, for feature rows,
which ranges a query leaves, with one numba pass over the rows (``domain_flags``) and a message only
for the rows that leave one.

A *group* is one condition with one or more alternative intervals, any of which will do: the load is
inside when its offered tokens/s lie in the sweep's absolute range *or* its load factor (offered
load / the fluid model's capacity) in the range the knee and overload samples were drawn at;
Poisson arrivals (cv 1, sigma 0, period 0) and bursty ones have separate intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Mapping, Sequence

import numba as nb
import numpy as np

from ..errors import InputError
from .kernels import _S_N, N_FEATURES, N_OUTCOMES, _fill, predict_outcomes_row

__all__ = ["Domain", "DomainCheck", "default_domain", "domain_flags", "predict_packed_row_checked"]

_KIND, _LORA = attrgetter("arrivals.kind"), attrgetter("server.enable_lora")
# Bounds are widened by this relative margin, so that a sample the sweep drew exactly at a bound
# (a knee load factor of 0.4, recomputed from rescaled rates) is inside.
_MARGIN = 1e-9
_NOTES = {
    "length_distribution": " (0 sharegpt, 1 azure-conv, 2 fixed, 3 trace, 4 empirical)",
    "arrival_cv": " (Poisson is 1)",
    "arrival_sigma": " (Poisson is 0)",
    "arrival_period_s": " (Poisson is 0)",
    "load_factor": " (offered load / the fluid model's capacity)",
}


@dataclass(frozen=True)
class Domain:
    """Ranges of feature columns a model was trained on (see the module docstring).

    ``ranges``: (group name, ((feature, low, high), ...)) pairs: a query is inside a group when one of
    its intervals holds its feature value. ``arrival_kinds`` and ``enable_lora``: the arrival kinds
    and LoRA settings the sweep drew (not feature columns: a replayed trace has the features of a
    bursty source)."""

    ranges: tuple[tuple[str, tuple[tuple[str, float, float], ...]], ...]
    arrival_kinds: tuple[str, ...] = ("poisson", "bursty")
    enable_lora: tuple[bool, ...] = (True,)

    @classmethod
    def from_sweep(cls, sweep: Mapping[str, Any]) -> "Domain":
        """The domain of a sweep, from its settings (``SweepSpec.to_dict()``)."""
        from ..model import VLLM_MAX_LORA_RANKS as VLLM_RANK_CLASSES
        from ..model import rank_class as _rank_class

        s = dict(sweep)
        n_lo, n_hi = s["count_range"]
        ranks = sorted(s["ranks"])
        top_class = _rank_class(ranks[-1])
        if s["rank_bump_share"] > 0 and top_class != VLLM_RANK_CLASSES[-1]:
            top_class = VLLM_RANK_CLASSES[VLLM_RANK_CLASSES.index(top_class) + 1]
        default_share = s["server_default_share"]
        seqs = {2048} | (set(s["max_num_seqs_choices"]) if default_share < 1 else set())
        batched = {2048} | (set(s["max_num_batched_tokens_choices"]) if default_share < 1 else set())
        im, om = s["input_mean_range"], s["output_mean_range"]
        if s["default_lengths_share"] > 0:
            from .training.spec import DEFAULT_LENGTHS

            im = (min(im[0], DEFAULT_LENGTHS[0]), max(im[1], DEFAULT_LENGTHS[0]))
            om = (min(om[0], DEFAULT_LENGTHS[1]), max(om[1], DEFAULT_LENGTHS[1]))
        load = [("offered_tps", *s["load_tps_range"])]
        factors = [tuple(r) for share, r in ((s["knee_share"], s["knee_load_range"]),
                                            (s["overload_share"], s["overload_load_range"])) if share > 0]
        if factors:
            load.append(("load_factor", min(f[0] for f in factors), max(f[1] for f in factors)))
        bursty, poisson = s["bursty_share"] > 0, s["bursty_share"] < 1
        arrival = {"arrival_cv": [], "arrival_sigma": [], "arrival_period_s": []}
        if bursty:
            periods = s["bursty_periods"]
            arrival["arrival_cv"].append(("arrival_cv", *s["bursty_cv_range"]))
            arrival["arrival_sigma"].append(("arrival_sigma", *s["bursty_sigma_range"]))
            arrival["arrival_period_s"].append(("arrival_period_s", min(periods), max(periods)))
        if poisson:
            for name, v in (("arrival_cv", 1.0), ("arrival_sigma", 0.0), ("arrival_period_s", 0.0)):
                arrival[name].append((name, v, v))
        util = s["gpu_memory_utilization"]
        groups: dict[str, list[tuple[str, float, float]]] = {
            "n_adapters": [("n_adapters", n_lo, n_hi)],
            "rank_max": [("rank_max", ranks[0], ranks[-1])],
            "rank_mean": [("rank_mean", ranks[0], ranks[-1])],
            "max_lora_rank": [("max_lora_rank", _rank_class(ranks[0]), top_class)],
            "input_mean": [("input_mean", *im)],
            "output_mean": [("output_mean", *om)],
            "length_distribution": [("length_distribution", 0.0, 0.0)],  # the sweep draws sharegpt lengths
            "load": load,
            **arrival,
            "max_num_seqs": [("max_num_seqs", min(seqs), max(seqs))],
            "max_num_batched_tokens": [("max_num_batched_tokens", min(batched), max(batched))],
            "gpu_memory_utilization": [("gpu_memory_utilization", util, util)],
        }
        kinds = tuple(k for k, on in (("poisson", poisson), ("bursty", bursty)) if on)
        return cls(tuple((g, tuple((f, float(lo), float(hi)) for f, lo, hi in alts)) for g, alts in groups.items()),
                   kinds, (True,))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: {"ranges": {group: [[feature, low, high], ...]}, "arrival_kinds": [...],
        "enable_lora": [...]}."""
        return {"ranges": {g: [list(a) for a in alts] for g, alts in self.ranges},
                "arrival_kinds": list(self.arrival_kinds), "enable_lora": list(self.enable_lora)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Domain":
        try:
            ranges = tuple((str(g), tuple((str(f), float(lo), float(hi)) for f, lo, hi in alts))
                           for g, alts in d["ranges"].items())
            return cls(ranges, tuple(str(k) for k in d.get("arrival_kinds", ("poisson", "bursty"))),
                       tuple(bool(x) for x in d.get("enable_lora", (True,))))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError("model", f"malformed training domain in the model metadata ({e}); retrain it "
                             "with `packer train`") from None

    def check(self, feature_names: Sequence[str]) -> "DomainCheck":
        """The compiled check for feature rows in ``feature_names`` order (groups on features a model
        does not have are skipped)."""
        return DomainCheck(self, tuple(feature_names))


def default_domain() -> Domain:
    """The domain of the default ``SweepSpec``: what the shipped models were trained on."""
    import dataclasses

    from .training.spec import SweepSpec

    defaults = {f.name: f.default for f in dataclasses.fields(SweepSpec) if f.default is not dataclasses.MISSING}
    return Domain.from_sweep(defaults)


@nb.njit(cache=True, nogil=True)
def _row_flags(x, intervals):
    inside = np.int64(0)
    groups = np.int64(0)
    for j in range(intervals.shape[1]):
        g = np.int64(intervals[3, j])
        groups |= np.int64(1) << g
        v = x[np.int64(intervals[0, j])]
        if v >= intervals[1, j] and v <= intervals[2, j]:
            inside |= np.int64(1) << g
    return groups & ~inside


@nb.njit(cache=True, nogil=True)
def domain_flags(X, intervals):
    """Per row of ``X``, a bit mask of the groups none of whose intervals holds the row's value.
    ``intervals`` (4, k): interval j is feature column intervals[0, j] in [intervals[1, j],
    intervals[2, j]], in group intervals[3, j] (``DomainCheck.intervals``); NaN is outside."""
    out = np.zeros(X.shape[0], dtype=np.int64)
    for i in range(X.shape[0]):
        out[i] = _row_flags(X[i], intervals)
    return out


@nb.njit(cache=True, nogil=True)
def predict_packed_row_checked(v, xs, ys, c, nodes, node_values, roots, heads, bias, plan, output_len_scale,
                               intervals):
    """The single-query path in one call: [the N_OUTCOMES outcomes of ``kernels.predict_packed_row``, the
    ``domain_flags`` mask (as a float; exact, masks have at most 52 bits), the feature row]."""
    out = np.empty(N_OUTCOMES + 1 + N_FEATURES, dtype=np.float64)
    x = out[N_OUTCOMES + 1:]
    _fill(x, v[:_S_N], v[_S_N:], xs, ys, c)
    out[:N_OUTCOMES] = predict_outcomes_row(x, nodes, node_values, roots, heads, bias, plan, output_len_scale)
    out[N_OUTCOMES] = float(_row_flags(x, intervals))
    return out


@dataclass(frozen=True)
class DomainCheck:
    """A ``Domain`` compiled for one feature layout: ``warnings(X, queries)`` per row."""

    domain: Domain
    feature_names: tuple[str, ...]
    intervals: np.ndarray = field(init=False, repr=False, compare=False)  # domain_flags' (4, k) argument
    _groups: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {n: i for i, n in enumerate(self.feature_names)}
        cols, lo, hi, grp, groups = [], [], [], [], []
        for _name, alts in self.domain.ranges:
            alts = tuple(a for a in alts if a[0] in index)
            if not alts:
                continue
            g = len(groups)
            if g >= 52:  # the single-row kernel returns the mask as a float64
                raise InputError("model", "a training domain has more than 52 groups")
            # the message's fixed part, once: the features it names and the trained ranges
            features = tuple(dict.fromkeys((f, index[f]) for f, _, _ in alts))
            trained = " or ".join((f"{f} " if len(features) > 1 else "") + _interval(a, b) for f, a, b in alts)
            verb = "are" if len(features) > 1 else "is"
            notes = "".join(_NOTES.get(f, "") for f, _ in features)
            groups.append((features, f" {verb} outside the trained range {trained}{notes}"))
            for f, a, b in alts:
                cols.append(index[f])
                lo.append(a - _MARGIN * abs(a))
                hi.append(b + _MARGIN * abs(b))
                grp.append(g)
        intervals = np.array([cols, lo, hi, grp], dtype=np.float64).reshape(4, len(cols))
        intervals.setflags(write=False)
        object.__setattr__(self, "intervals", intervals)
        object.__setattr__(self, "_groups", tuple(groups))

    def plain(self, query: Any) -> bool:
        """Whether ``query``'s arrival kind and LoRA setting (not feature columns) are trained ones."""
        return query.arrivals.kind in self.domain.arrival_kinds and query.server.enable_lora in self.domain.enable_lora

    def flags(self, X: np.ndarray) -> np.ndarray:
        """``domain_flags`` of feature rows (a 2-D array, or one row)."""
        X2 = X.reshape(1, -1) if X.ndim == 1 else X
        return domain_flags(X2, self.intervals)

    def warnings(self, X: np.ndarray, queries: Sequence[Any]) -> list[tuple[str, ...]]:
        """For each feature row (and its ``GpuQuery``), the ranges it leaves, as messages naming the
        feature, its value and the trained range; ``()`` for a row inside the domain."""
        X2 = X.reshape(1, -1) if X.ndim == 1 else X
        flags = self.flags(X2)
        out: list[tuple[str, ...]] = [()] * len(queries)
        kinds, loras = list(map(_KIND, queries)), list(map(_LORA, queries))
        odd: list[int] = []
        if not (set(kinds) <= set(self.domain.arrival_kinds) and set(loras) <= set(self.domain.enable_lora)):
            odd = [i for i, q in enumerate(queries) if not self.plain(q)]
        for row in sorted(set(np.flatnonzero(flags).tolist()).union(odd)):
            out[row] = self.messages(int(flags[row]), X2[row], queries[row])
        return out

    def messages(self, mask: int, x: np.ndarray, query: Any) -> tuple[str, ...]:
        """The warnings of one query from its ``domain_flags`` mask and feature row."""
        msgs = []
        for g, (features, fixed) in enumerate(self._groups):
            if mask >> g & 1:
                msgs.append(" and ".join(f"{f} = {_num(float(x[col]))}" for f, col in features) + fixed)
        kinds, lora = self.domain.arrival_kinds, self.domain.enable_lora
        if query.arrivals.kind not in kinds:
            msgs.append(f"arrivals kind {query.arrivals.kind!r} is outside the trained kinds ({', '.join(kinds)})")
        if query.server.enable_lora not in lora:
            msgs.append(f"server.enable_lora={query.server.enable_lora} is outside the trained settings "
                        f"({', '.join(str(x) for x in lora)})")
        return tuple(f"extrapolating: {m}" for m in msgs)


def _interval(a: float, b: float) -> str:
    return _num(a) if a == b else f"{_num(a)} to {_num(b)}"


def _num(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v):,}"
    return f"{v:,.4g}" if abs(v) >= 1 else f"{v:.4g}"
