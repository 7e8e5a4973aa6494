"""A distilled tree model in memory: its trees and heads, packed into one node array for the numba kernels.

A model holds, for one profile, a few *heads* (``ratio``: throughput / offered load as the twin
counts it, ``starved``: probability that the twin calls the GPU starved, and the optional latency
heads, each the log of a latency in ms: ``itl`` mean inter-token latency, ``ttft_mean``, ``ttft_p99``
and ``ttft_worst_p99`` the worst adapter's p99 TTFT), each one or more binary trees, plus metadata (``tree_io.py`` reads and
writes it; ``tree_export.py`` makes it from scikit-learn).

A node is a leaf when ``left == -1``; otherwise a row goes left when ``float32(x[feature]) <=
threshold`` — scikit-learn's own rule (it casts X to float32), so exported trees agree with
``DecisionTree*.predict`` exactly. A head's output is the mean of its trees' leaf values (a random
forest's rule), then its transform (``identity``, ``exp``).

All heads of a model are packed into one node array; ``predict_batch(X)`` evaluates every head on
every row in one numba call (``cache=True``), ``predict_row(x)`` one row; ``outcomes(X)`` runs the
heads and turns them into the predicted quantities in the same call (one row or a batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from .domain import Domain, DomainCheck, default_domain
from .kernels import (_P_INPUT_MEAN, _P_LATENCY, _P_LOAD_FACTOR, _P_N, _P_OUTPUT_MEAN, _P_RATIO_T, _P_SERVED,
                      _P_STARVED, _P_STARVED_T, _P_TOTAL_RATE, _TRANSFORM_CODES, N_LATENCY, predict_nodes,
                      predict_nodes_row, predict_outcomes, predict_outcomes_row)

__all__ = ["Tree", "Head", "TreeModel", "HEADS", "LATENCY_HEADS"]

# The latency heads (each optional, all learned as a log), in the kernel's order (``kernels._decode``):
# head name -> the twin's result field it learns, also the ``Prediction`` field it fills.
LATENCY_HEADS = {"itl": "mean_itl_ms", "ttft_mean": "mean_ttft_ms", "ttft_p99": "p99_ttft_ms",
                 "ttft_worst_p99": "worst_adapter_p99_ttft_ms"}
assert len(LATENCY_HEADS) == N_LATENCY
HEADS = ("ratio", "starved", *LATENCY_HEADS)
_TRANSFORMS = ("identity", "exp", "sigmoid")
_RATIO_BASES = ("offered", "served")
# Each head transform for one float and for an array (``TreeModel.apply``); the kernels use the codes.
_TRANSFORM_FNS = {"identity": (float, np.asarray),
                  "exp": (math.exp, np.exp),
                  "sigmoid": (lambda v: 1.0 / (1.0 + math.exp(-v)), lambda v: 1.0 / (1.0 + np.exp(-v)))}


@dataclass(frozen=True)
class Tree:
    """One binary tree as arrays (child indices local to the tree; leaves have left == right == -1)."""

    feature: np.ndarray    # int32, the split feature (ignored at leaves)
    threshold: np.ndarray  # float64, go left when float32(x[feature]) <= threshold
    left: np.ndarray       # int32
    right: np.ndarray      # int32
    value: np.ndarray      # float64, the leaf output (ignored at inner nodes)

    def __post_init__(self) -> None:
        n = len(self.feature)
        if not (n and len(self.threshold) == len(self.left) == len(self.right) == len(self.value) == n):
            raise InputError("model", "a tree's node arrays must be non-empty and of equal length")
        inner = self.left >= 0
        if np.any((self.left >= n) | (self.right >= n) | (inner != (self.right >= 0))):
            raise InputError("model", "a tree has child indices out of range or half-leaf nodes")

    @property
    def n_nodes(self) -> int:
        return len(self.feature)

    @property
    def n_leaves(self) -> int:
        return int(np.count_nonzero(self.left < 0))

    def depth(self) -> int:
        d, stack = 0, [(0, 0)]
        while stack:
            node, k = stack.pop()
            d = max(d, k)
            if self.left[node] >= 0:
                stack += [(int(self.left[node]), k + 1), (int(self.right[node]), k + 1)]
        return d

    def preorder(self) -> "Tree":
        """The same tree with its nodes in depth-first pre-order: the root first, each left child right
        after its parent: the kernel's node layout (``kernels.predict_nodes``), where the left child
        is the next record (scikit-learn's best-first builder numbers nodes by split gain instead).
        Nodes the root does not reach are dropped."""
        order, stack = [], [0]
        seen = np.zeros(self.n_nodes, dtype=bool)
        while stack:
            node = stack.pop()
            if seen[node]:
                raise InputError("model", "a tree's child links reach a node twice: not a tree")
            seen[node] = True
            order.append(node)
            if self.left[node] >= 0:
                stack += [int(self.right[node]), int(self.left[node])]
        idx = np.asarray(order, dtype=np.int64)
        new_id = np.full(self.n_nodes, -1, dtype=np.int32)
        new_id[idx] = np.arange(len(idx), dtype=np.int32)

        def renumbered(child: np.ndarray) -> np.ndarray:
            return np.where(child >= 0, new_id[np.maximum(child, 0)], -1).astype(np.int32)

        return Tree(self.feature[idx], self.threshold[idx], renumbered(self.left[idx]), renumbered(self.right[idx]),
                    self.value[idx])


def _node_records(tree: Tree, base: int) -> np.ndarray:
    """One tree as the kernel's node records (``kernels.predict_nodes``), its nodes numbered from
    ``base``: in pre-order (reordered when the file's trees are not), so that every step moves to a
    later node and a walk always ends."""
    inner = np.flatnonzero(tree.left >= 0)
    if not (np.array_equal(tree.left[inner], inner + 1) and np.all(tree.right[inner] > inner + 1)):
        tree = tree.preorder()
    leaf = tree.left < 0
    if base + tree.n_nodes >= 2 ** 31:
        raise InputError("model", "a model has more than 2**31 tree nodes")
    rec = np.empty((tree.n_nodes, 2), dtype=np.int64)
    right = np.where(leaf, 0, tree.right + base).astype(np.int64)
    rec[:, 0] = (right << 32) | (np.where(leaf, -1, tree.feature).astype(np.int64) & 0xFFFFFFFF)
    rec.view(np.float64)[:, 1] = np.where(leaf, tree.value, tree.threshold)
    return rec



@dataclass(frozen=True)
class Head:
    """One predicted quantity from its trees: their mean (``combine="mean"``, a random forest) or
    their sum plus ``bias`` (``"sum"``, gradient boosting), then ``transform``. ``compare`` is
    ``float32`` (scikit-learn's decision trees cast X to float32) or ``float64``."""

    trees: tuple[Tree, ...]
    transform: str = "identity"
    combine: str = "mean"
    bias: float = 0.0
    compare: str = "float32"

    def __post_init__(self) -> None:
        if not self.trees:
            raise InputError("model", "a head needs at least one tree")
        if self.transform not in _TRANSFORMS:
            raise InputError("model", f"unknown transform {self.transform!r}; valid: {', '.join(_TRANSFORMS)}")
        if self.combine not in ("mean", "sum"):
            raise InputError("model", f"unknown combine {self.combine!r}; valid: mean, sum")
        if self.compare not in ("float32", "float64"):
            raise InputError("model", f"unknown compare {self.compare!r}; valid: float32, float64")

    def settings(self) -> dict:
        return {"transform": self.transform, "combine": self.combine, "bias": self.bias, "compare": self.compare}


@dataclass
class TreeModel:
    """The heads of one profile's model, packed for the kernel, with their metadata."""

    profile: str
    feature_names: tuple[str, ...]
    heads: dict[str, Head]
    kind: str = "tree"
    profile_fingerprint: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    ratio_base: str = "offered"  # what the ratio head's output multiplies: "offered" or "served" (features.served_base)
    length_shapes: dict[str, list[float]] = field(default_factory=dict)  # the twin's shapes it was trained on
    twin_fingerprint: str = ""  # ``packer.twin.fingerprint`` of the twin runs it was trained on

    def __post_init__(self) -> None:
        if "ratio" not in self.heads:
            raise InputError("model", "a model needs at least a 'ratio' head")
        if self.ratio_base not in _RATIO_BASES:
            raise InputError("model", f"unknown ratio_base {self.ratio_base!r}; valid: {', '.join(_RATIO_BASES)}")
        nf = len(self.feature_names)
        for name, h in self.heads.items():
            for t in h.trees:
                if np.any(t.feature[t.left >= 0] >= nf) or np.any(t.feature[t.left >= 0] < 0):
                    raise InputError("model", f"head {name!r} splits on a feature index outside the "
                                     f"{nf} feature names")
        self.head_names = ("ratio",) + tuple(n for n in self.heads if n != "ratio")  # ratio first: _decode()
        records, roots, heads = [], [], []
        base = 0
        for name in self.head_names:
            h = self.heads[name]
            first = len(roots)
            for t in h.trees:
                records.append(_node_records(t, base))
                roots.append(base)
                base += len(records[-1])
            heads.append((first, len(roots), int(h.combine == "sum"), int(h.compare == "float32")))
        nodes = np.ascontiguousarray(np.concatenate(records))
        self.arrays = (nodes, nodes.view(np.float64), np.asarray(roots, dtype=np.int32),
                       np.asarray(heads, dtype=np.int32).reshape(-1, 4),
                       np.array([float(self.heads[n].bias) for n in self.head_names], dtype=np.float64))
        self.transforms = tuple(self.heads[n].transform for n in self.head_names)
        self.index = {n: i for i, n in enumerate(self.head_names)}
        self._fns = tuple(_TRANSFORM_FNS[t] for t in self.transforms)
        self.has_itl = "itl" in self.index
        self._gated: dict = {}
        self.latency_heads = tuple(h for h in LATENCY_HEADS if h in self.index)
        plan = np.zeros(_P_N, dtype=np.int64)
        plan[_P_STARVED] = self.index.get("starved", -1)
        for head, pos in (("ratio", _P_RATIO_T), ("starved", _P_STARVED_T)):
            if head in self.index:
                plan[pos] = _TRANSFORM_CODES[self.heads[head].transform]
        for k, head in enumerate(LATENCY_HEADS):
            plan[_P_LATENCY + 2 * k] = self.index.get(head, -1)
            if head in self.index:
                plan[_P_LATENCY + 2 * k + 1] = _TRANSFORM_CODES[self.heads[head].transform]
        plan[_P_SERVED] = int(self.ratio_base == "served")
        columns = {n: i for i, n in enumerate(self.feature_names)}
        for pos, name in ((_P_TOTAL_RATE, "total_rate_rps"), (_P_INPUT_MEAN, "input_mean"),
                          (_P_OUTPUT_MEAN, "output_mean"), (_P_LOAD_FACTOR, "load_factor")):
            plan[pos] = columns.get(name, -1)
        self.plan = plan
        self._decodable = bool(np.all(plan[[_P_TOTAL_RATE, _P_INPUT_MEAN, _P_OUTPUT_MEAN, _P_LOAD_FACTOR]] >= 0))

    def gated_latencies(self, gate: float) -> tuple[tuple[int, str], ...]:
        """(column of ``outcomes``, ``Prediction`` field) of each latency head whose test MARE is at most
        ``gate`` (or unrecorded), in ``LATENCY_HEADS`` order; kept per gate."""
        if self._gated.get("training") is not self.training:  # kept until ``training`` is replaced
            self._gated = {"training": self.training}
        got = self._gated.get(gate)
        if got is None:
            got = self._gated[gate] = tuple(
                (3 + k, field) for k, (head, field) in enumerate(LATENCY_HEADS.items())
                if head in self.index and not ((e := self.latency_test_mare(head)) is not None and e > gate))
        return got

    def latency_test_mare(self, head: str) -> float | None:
        """Latency head ``head``'s MARE on its training's test split (None where the training recorded none)."""
        scores = (self.training.get("forest", {}).get("test") if self.kind == "forest"
                  else self.training.get("test", {}).get("tree")) or {}
        v = scores.get(f"{head}_mare")
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    @property
    def domain(self) -> Domain:
        """The training domain: ``training["domain"]`` (written by ``packer train``), else that of the
        default ``SweepSpec`` (the shipped models, trained before domains were recorded)."""
        d = self.training.get("domain")
        return Domain.from_dict(d) if d is not None else default_domain()

    def domain_check(self) -> DomainCheck:
        """``domain`` compiled for this model's features (kept until ``training`` is replaced)."""
        cached = getattr(self, "_domain_check", None)
        if cached is None or cached[0] is not self.training:
            cached = self._domain_check = (self.training, self.domain.check(self.feature_names))
        return cached[1]

    def apply(self, name: str, raw):
        """Head ``name``'s transform on raw kernel output (a float or an array)."""
        scalar, array = self._fns[self.index[name]]
        return array(raw) if isinstance(raw, np.ndarray) else scalar(raw)

    def outcomes(self, X: np.ndarray, output_len_scale: float) -> np.ndarray:
        """(throughput_tps, offered_tps, starved 0/1, then each of ``LATENCY_HEADS``' values or NaN where
        the model lacks the head) per feature row, shape (rows, 7); a 1-D row gives seven values. Throughput is the ratio head x the ``ratio_base``, capped at the
        expected offered load; without a starved head, starved means under 90 % of it."""
        if not self._decodable:
            raise InputError("model", "this model's features lack total_rate_rps, input_mean, output_mean or "
                             "load_factor, which its outcomes are computed from")
        if X.ndim == 1:
            return predict_outcomes_row(X, *self.arrays, self.plan, output_len_scale)
        return predict_outcomes(X, *self.arrays, self.plan, output_len_scale)

    def raw_batch(self, X: np.ndarray) -> np.ndarray:
        """Every head's mean tree output on every row (before transforms), shape (rows, heads)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise InputError("features", f"expected a (rows, {len(self.feature_names)}) array, got {X.shape}")
        return predict_nodes(X, *self.arrays)

    def predict_batch(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Every head on every row, transforms applied: {head name: values}."""
        raw = self.raw_batch(X)
        return {n: self.apply(n, raw[:, i]) for i, n in enumerate(self.head_names)}

    def predict_row(self, x: np.ndarray) -> dict[str, float]:
        raw = predict_nodes_row(np.ascontiguousarray(x, dtype=np.float64), *self.arrays)
        return {n: self.apply(n, float(raw[i])) for i, n in enumerate(self.head_names)}

    def sizes(self) -> dict[str, dict[str, int]]:
        return {n: {"trees": len(h.trees), "leaves": sum(t.n_leaves for t in h.trees),
                    "max_depth": max(t.depth() for t in h.trees)} for n, h in self.heads.items()}

