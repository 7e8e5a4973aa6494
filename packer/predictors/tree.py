"""Distilled decision trees evaluated by numba: the ``tree`` and ``forest`` predictors.

Model files
-----------
A model file holds, for one profile, a few *heads* (``ratio``: throughput / offered load as the twin
counts it,
``starved``: probability that the twin calls the GPU starved, ``itl``: log of the mean inter-token
latency in ms), each one or more binary trees, plus metadata. No pickle anywhere:

- JSON (``packer/models/<profile>.json``, the ``tree`` predictor)::

    {"format": "packer-tree-model", "version": 1, "kind": "tree", "profile": ..., "profile_fingerprint": ...,
     "length_shapes": {...}, "feature_names": [...], "training": {...},
     "heads": {"ratio": {"transform": "identity", "trees": [{"feature": [...], "threshold": [...],
                                                               "left": [...], "right": [...], "value": [...]}]},
               "starved": {...}, "itl": {"transform": "exp", ...}}}

- NPZ (``packer/models/<profile>.forest.npz``, the ``forest`` predictor): per head ``<head>.feature``,
  ``.threshold``, ``.left``, ``.right``, ``.value`` (every tree's nodes concatenated, child indices
  local to their tree) and ``<head>.roots`` (each tree's first node), plus ``meta`` (a 0-d unicode
  array with the JSON metadata, heads' transforms included). Loads with ``allow_pickle=False``.

A node is a leaf when ``left == -1``; otherwise a row goes left when ``float32(x[feature]) <=
threshold`` — scikit-learn's own rule (it casts X to float32), so exported trees agree with
``DecisionTree*.predict`` exactly. A head's output is the mean of its trees' leaf values (a random
forest's rule), then its transform (``identity``, ``exp``).

Evaluation
----------
All heads of a model are packed into one node array; ``predict_batch(X)`` evaluates every head on
every row in one numba call (``cache=True``), ``predict_row(x)`` one row; ``outcomes(X)`` runs the
heads and turns them into the predicted quantities in the same call (one row or a batch).
``TreePredictor`` (registered as ``tree``) computes the features (``features.py``), runs that kernel
and answers with
``memory_error`` from the profile's exact memory check (no ML), ``offered_tps`` = the offered load
the twin would draw in expectation (``features.expected_offered``: the nominal load with the
profile's early-EOS output scale), ``throughput_tps`` = the ratio head x a base, capped at that load
(the model's ``ratio_base``: ``served`` multiplies min(offered, the fluid model's capacity),
``features.served_base``, so that the prediction extrapolates to heavy overload; ``offered``, the
first models' target, multiplies the offered load), ``starved`` = P(starved) > 0.5 and
``mean_itl_ms``. A query outside the model's training domain (``domain.py``: the ranges its sweep
drew) carries ``Prediction.warnings``, or is answered by the twin or refused (``extrapolation``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..files import dumps, read_json, read_json_text, read_npz
from ..profile import Profile, load_profile
from ..twin.fingerprint import twin_fingerprint
from ..twin.lengths import shipped_length_shapes
from .base import PREDICTORS, GpuQuery, Prediction, Predictor
from .domain import Domain, DomainCheck, default_domain, predict_packed_row_checked
from .features import FEATURE_NAMES, _consts, features_many, pack, profile_of
from .kernels import (_C_OUT_SCALE, _P_INPUT_MEAN, _P_ITL, _P_ITL_T, _P_LOAD_FACTOR, _P_N, _P_OUTPUT_MEAN, _P_RATIO_T,
                      _P_SERVED, _P_STARVED, _P_STARVED_T, _P_TOTAL_RATE, _TRANSFORM_CODES, predict_nodes,
                      predict_nodes_row, predict_outcomes, predict_outcomes_row)

__all__ = ["Tree", "Head", "TreeModel", "head_from_sklearn", "predict_nodes", "predict_nodes_row", "predict_outcomes",
           "predict_outcomes_row", "load_model", "save_model",
           "model_path", "tree_from_sklearn", "TreePredictor", "ForestPredictor", "HEADS", "FORMAT", "EXTRAPOLATION"]

FORMAT = "packer-tree-model"
VERSION = 1
HEADS = ("ratio", "starved", "itl")
EXTRAPOLATION = ("warn", "twin", "error")  # what TreePredictor does with a query outside the training domain
_TRANSFORMS = ("identity", "exp", "sigmoid")
_RATIO_BASES = ("offered", "served")
# Each head transform for one float and for an array (``TreeModel.apply``); the kernels use the codes.
_TRANSFORM_FNS = {"identity": (float, np.asarray),
                  "exp": (math.exp, np.exp),
                  "sigmoid": (lambda v: 1.0 / (1.0 + math.exp(-v)), lambda v: 1.0 / (1.0 + np.exp(-v)))}



# ---- the model ----------------------------------------------------------------------------------

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

    def to_json(self) -> dict:
        leaf = self.left < 0
        return {"feature": [int(f) if not l else -1 for f, l in zip(self.feature, leaf)],
                "threshold": [float(t) if not l else 0.0 for t, l in zip(self.threshold, leaf)],
                "left": self.left.tolist(), "right": self.right.tolist(),
                "value": [float(v) if l else 0.0 for v, l in zip(self.value, leaf)]}

    @classmethod
    def from_json(cls, d: Mapping[str, Sequence]) -> "Tree":
        return cls(np.asarray(d["feature"], dtype=np.int32), np.asarray(d["threshold"], dtype=np.float64),
                   np.asarray(d["left"], dtype=np.int32), np.asarray(d["right"], dtype=np.int32),
                   np.asarray(d["value"], dtype=np.float64))


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


def tree_from_sklearn(est, output: str = "value") -> Tree:
    """A fitted scikit-learn ``DecisionTreeRegressor`` / ``DecisionTreeClassifier`` (or one tree of a
    forest) as a ``Tree``, its nodes in pre-order. For a binary classifier the leaf value is P(class 1),
    the fraction of class-1 training weight in the leaf (what ``predict_proba`` returns)."""
    t = est.tree_
    left = t.children_left.astype(np.int32)
    right = t.children_right.astype(np.int32)
    leaf = left < 0
    v = t.value  # (nodes, outputs, classes)
    if getattr(est, "n_classes_", None) is not None and np.ndim(est.n_classes_) == 0 and int(est.n_classes_) >= 2:
        classes = list(est.classes_)
        k = classes.index(True) if True in classes else (classes.index(1) if 1 in classes else len(classes) - 1)
        tot = v[:, 0, :].sum(axis=1)
        value = np.where(tot > 0, v[:, 0, k] / np.where(tot > 0, tot, 1.0), 0.0)
    elif getattr(est, "n_classes_", None) is not None and np.ndim(est.n_classes_) == 0:
        value = np.full(len(left), float(est.classes_[0] in (True, 1)))  # a one-class classifier
    else:
        value = v[:, 0, 0].astype(np.float64)
    feature = np.where(leaf, -1, t.feature).astype(np.int32)
    threshold = np.where(leaf, 0.0, t.threshold).astype(np.float64)
    return Tree(feature, threshold, left, right, np.where(leaf, value, 0.0).astype(np.float64)).preorder()


def _tree_from_hgb_nodes(nodes) -> Tree:
    leaf = nodes["is_leaf"].astype(bool)
    if np.any(nodes["is_categorical"][~leaf]):
        raise InputError("model", "categorical splits are not supported")
    return Tree(np.where(leaf, -1, nodes["feature_idx"]).astype(np.int32),
                np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64),
                np.where(leaf, -1, nodes["left"]).astype(np.int32), np.where(leaf, -1, nodes["right"]).astype(np.int32),
                np.where(leaf, nodes["value"], 0.0).astype(np.float64)).preorder()


def head_from_sklearn(est, transform: str = "identity") -> "Head":
    """A fitted scikit-learn tree model as a ``Head``: a decision tree, a random forest / extra trees
    (the mean of its trees; classifiers give P(class 1)) or a histogram gradient boosting model
    (binary classifier or squared-error regressor: the sum of its trees plus the baseline; use
    ``transform="sigmoid"`` for a classifier's probability). Missing values are not supported
    (the features never are)."""
    if hasattr(est, "_predictors"):  # HistGradientBoosting*
        if any(len(p) != 1 for p in est._predictors):
            raise InputError("model", "only single-output gradient boosting (regression, binary) is supported")
        trees = tuple(_tree_from_hgb_nodes(p[0].nodes) for p in est._predictors)
        bias = float(np.ravel(est._baseline_prediction)[0])
        return Head(trees, transform, combine="sum", bias=bias, compare="float64")
    if hasattr(est, "estimators_"):
        return Head(tuple(tree_from_sklearn(e) for e in est.estimators_), transform)
    return Head((tree_from_sklearn(est),), transform)


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
        plan = np.zeros(_P_N, dtype=np.int64)
        plan[_P_STARVED], plan[_P_ITL] = self.index.get("starved", -1), self.index.get("itl", -1)
        for head, pos in (("ratio", _P_RATIO_T), ("starved", _P_STARVED_T), ("itl", _P_ITL_T)):
            if head in self.index:
                plan[pos] = _TRANSFORM_CODES[self.heads[head].transform]
        plan[_P_SERVED] = int(self.ratio_base == "served")
        columns = {n: i for i, n in enumerate(self.feature_names)}
        for pos, name in ((_P_TOTAL_RATE, "total_rate_rps"), (_P_INPUT_MEAN, "input_mean"),
                          (_P_OUTPUT_MEAN, "output_mean"), (_P_LOAD_FACTOR, "load_factor")):
            plan[pos] = columns.get(name, -1)
        self.plan = plan
        self._decodable = bool(np.all(plan[[_P_TOTAL_RATE, _P_INPUT_MEAN, _P_OUTPUT_MEAN, _P_LOAD_FACTOR]] >= 0))

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
        """(throughput_tps, offered_tps, starved 0/1, mean_itl_ms or NaN) per feature row, shape (rows, 4);
        a 1-D row gives four values. Throughput is the ratio head x the ``ratio_base``, capped at the
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

    # -- files --

    def _meta(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "profile": self.profile,
                "profile_fingerprint": self.profile_fingerprint, "feature_names": list(self.feature_names),
                "ratio_base": self.ratio_base, "length_shapes": self.length_shapes,
                "twin_fingerprint": self.twin_fingerprint,
                "training": self.training, "head_settings": {n: h.settings() for n, h in self.heads.items()}}

    def to_json(self) -> dict:
        meta = self._meta()
        settings = meta.pop("head_settings")
        meta["heads"] = {n: {**settings[n], "trees": [t.to_json() for t in h.trees]} for n, h in self.heads.items()}
        return meta

    def to_npz_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"meta": np.array(dumps(self._meta()))}  # keeps the head order
        for n, h in self.heads.items():
            offs = np.cumsum([0] + [t.n_nodes for t in h.trees])
            arrays[f"{n}.roots"] = offs[:-1].astype(np.int64)
            for col in ("feature", "threshold", "left", "right", "value"):
                arrays[f"{n}.{col}"] = np.concatenate([getattr(t, col) for t in h.trees])
        return arrays


def save_model(model: TreeModel, path: str | Path) -> Path:
    """Write ``model`` as JSON (``.json``) or NPZ (``.npz``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix == ".json":
        p.write_text(dumps(model.to_json(), separators=(",", ":")), encoding="utf-8")
    elif p.suffix == ".npz":
        with open(p, "wb") as f:
            np.savez_compressed(f, **model.to_npz_arrays())
    else:
        raise InputError("out_path", f"a model file must end in .json or .npz (got {p.name!r})")
    _load_cached.cache_clear()
    return p


def _check_meta(meta: Any, where: str) -> None:
    fmt = meta.get("format") if isinstance(meta, dict) else f"a JSON {type(meta).__name__}"
    if fmt != FORMAT:
        raise InputError("model", f"{where} is not a packer tree model (format {fmt!r}); give a model file "
                         "written by `packer train`")
    version = meta.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError("model", f"{where} has model format version {version!r}, not a whole number; "
                         "write the model again")
    if version > VERSION:
        raise InputError("model", f"{where} has model format version {version}; this packer reads "
                         f"up to {VERSION}")


def load_model(path: str | Path) -> TreeModel:
    """Read a model file (JSON or NPZ, never pickle); a file that is not a sound model is an InputError."""
    p = Path(path)
    if p.suffix not in (".json", ".npz"):
        raise InputError("model", f"a model file must end in .json or .npz (got {p.name!r})")
    try:
        mtime_ns = p.stat().st_mtime_ns
    except OSError:
        mtime_ns = -1  # the reader names what is wrong with the path
    return _load_cached(str(p.resolve()), mtime_ns)


_NODE_COLUMNS = {"feature": "i", "threshold": "f", "left": "i", "right": "i", "value": "f"}  # name: numpy kind


def _node_array(a: Any, column: str, where: str) -> np.ndarray:
    """One node column, checked: 1-D, integer (split feature, children) or finite numbers (threshold, value)."""
    a = np.asarray(a)
    if a.ndim != 1 or a.dtype.kind not in ("iu" if _NODE_COLUMNS[column] == "i" else "iuf"):
        raise InputError("model", f"{where}: the {column!r} node column is not a 1-D array of "
                         f"{'integers' if _NODE_COLUMNS[column] == 'i' else 'numbers'} (dtype {a.dtype}, "
                         f"shape {a.shape}); write the model again")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise InputError("model", f"{where}: the {column!r} node column holds NaN or infinite values; "
                         "write the model again")
    if a.dtype.kind in "iu" and len(a) and (a.max() > np.iinfo(np.int32).max or a.min() < np.iinfo(np.int32).min):
        raise InputError("model", f"{where}: the {column!r} node column holds values out of range; "
                         "write the model again")
    return a.astype(np.int32 if _NODE_COLUMNS[column] == "i" else np.float64)


def _tree_from_json(t: Any, where: str) -> Tree:
    if not isinstance(t, dict) or set(_NODE_COLUMNS) - set(t):
        raise InputError("model", f"{where}: a tree is not an object with the node lists "
                         f"{', '.join(_NODE_COLUMNS)}; write the model again")
    try:
        cols = {c: _node_array(np.asarray(t[c]), c, where) for c in _NODE_COLUMNS}
    except ValueError as e:  # ragged or non-numeric lists
        raise InputError("model", f"{where}: a tree's node lists are not flat lists of numbers ({e}); "
                         "write the model again") from None
    return Tree(**cols)


def _head_settings(h: Mapping[str, Any], where: str) -> dict[str, Any]:
    settings = {k: h[k] for k in ("transform", "combine", "bias", "compare") if k in h}
    bias = settings.get("bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
        raise InputError("model", f"{where}: a head's bias {bias!r} is not a finite number; write the model again")
    return settings


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> TreeModel:
    p = Path(path)
    if p.suffix == ".json":
        # non-finite numbers are allowed in the metadata (a training report's metrics); every node
        # array is checked to be finite below
        d = read_json(p, field="model", allow_nan=True)
        _check_meta(d, str(p))
        try:
            heads = {n: Head(tuple(_tree_from_json(t, str(p)) for t in h["trees"]), **_head_settings(h, str(p)))
                     for n, h in d["heads"].items()}
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError("model", f"{p}: not a packer tree model (its heads lack {e}); "
                             "write the model again") from None
    else:
        z = read_npz(p, field="model", required=("meta",))
        d = read_json_text(str(z["meta"]), f"{p} (meta)", field="model", allow_nan=True)
        _check_meta(d, str(p))
        heads = {}
        settings_of = d.get("head_settings")
        if not isinstance(settings_of, dict):
            raise InputError("model", f"{p}: its metadata has no head_settings; write the model again")
        for n, settings in settings_of.items():
            need = [f"{n}.{c}" for c in ("roots", *_NODE_COLUMNS)]
            missing = [k for k in need if k not in z]
            if missing or not isinstance(settings, dict):
                raise InputError("model", f"{p}: lacks the arrays {', '.join(missing) or 'settings'} of head {n!r}; "
                                 "write the model again")
            cols = {c: _node_array(z[f"{n}.{c}"], c, str(p)) for c in _NODE_COLUMNS}
            roots = z[f"{n}.roots"]
            size = len(cols["feature"])
            if not (roots.ndim == 1 and roots.dtype.kind in "iu" and len(roots) and roots[0] == 0
                    and np.all(np.diff(roots) > 0) and roots[-1] < size
                    and all(len(a) == size for a in cols.values())):
                raise InputError("model", f"{p}: head {n!r} has tree roots or node arrays that do not fit "
                                 "together; write the model again")
            ends = [*roots[1:].tolist(), size]
            heads[n] = Head(tuple(Tree(*(cols[c][a:b] for c in _NODE_COLUMNS)) for a, b in zip(roots.tolist(), ends)),
                            **_head_settings(settings, str(p)))
    try:
        return TreeModel(d["profile"], tuple(d["feature_names"]), heads, d.get("kind", "tree"),
                         d.get("profile_fingerprint", ""), d.get("training", {}), source=str(p),
                         ratio_base=d.get("ratio_base", "offered"), length_shapes=d.get("length_shapes", {}),
                         twin_fingerprint=d.get("twin_fingerprint", ""))
    except (KeyError, TypeError) as e:
        raise InputError("model", f"{p}: not a packer tree model (its metadata lacks {e}); "
                         "write the model again") from None


def _models_dir():
    return resources.files("packer") / "models"


def model_path(profile: str, kind: str = "tree") -> Path | None:
    """The shipped model file of ``profile`` for predictor ``kind`` (``tree``: ``<profile>.json`` or
    ``.npz``; ``forest``: ``<profile>.forest.npz`` or ``.forest.json``), or None."""
    if "/" in profile or "\\" in profile:
        return None
    stems = [profile] if kind == "tree" else [f"{profile}.{kind}"]
    exts = (".json", ".npz") if kind == "tree" else (".npz", ".json")
    d = _models_dir()
    for stem in stems:
        for ext in exts:
            f = d / f"{stem}{ext}"
            if f.is_file():
                return Path(str(f))
    return None


# ---- the predictor ------------------------------------------------------------------------------

class TreePredictor(Predictor):
    """Predicts one GPU with the distilled decision trees shipped for its profile.

    ``model`` is a model file to use instead of the shipped one (for every profile); ``profile``
    overrides the query's profile (a custom, unshipped ``Profile``) for the features and the memory
    check. Memory errors come from the profile's exact start-up memory check, not from a model.

    A query outside the model's training domain (``TreeModel.domain``: adapter count, load, lengths,
    ranks, server flags, arrivals) is, by ``extrapolation``: ``"warn"`` (default) predicted by the
    tree with ``Prediction.warnings`` naming each feature, its value and the trained range;
    ``"twin"`` answered by ``twin`` (default: a ``TwinPredictor`` on the same profile), the
    warnings saying so; ``"error"`` refused with an ``InputError``.
    """

    name = "tree"
    kind = "tree"

    def __init__(self, model: str | Path | None = None, profile: Profile | None = None, extrapolation: str = "warn",
                 twin: Predictor | None = None):
        self.model_file = Path(model) if model is not None else None
        if self.model_file is not None and not self.model_file.is_file():
            raise InputError("model", f"no model file at {self.model_file}")
        if extrapolation not in EXTRAPOLATION:
            raise InputError("extrapolation", f"unknown mode {extrapolation!r}; valid: {', '.join(EXTRAPOLATION)}")
        self.profile = profile
        self.extrapolation = extrapolation
        self._twin = twin
        self._models: dict[str | None, TreeModel] = {}

    @property
    def twin(self) -> Predictor:
        """The predictor behind ``extrapolation="twin"``."""
        if self._twin is None:
            from .twin import TwinPredictor

            self._twin = TwinPredictor(profile=self.profile)
        return self._twin

    def describe(self) -> dict:
        d: dict[str, Any] = {"name": self.name}
        if self.extrapolation != "warn":  # "warn" only adds warnings; the others change answers
            d["extrapolation"] = self.extrapolation
            if self.extrapolation == "twin":
                d["twin"] = self.twin.describe()
        if self.model_file is not None:
            d["model"] = _file_hash(str(self.model_file.resolve()), self.model_file.stat().st_mtime_ns)
        else:
            d["models"] = {p.name: _file_hash(str(p), p.stat().st_mtime_ns)
                           for p in sorted(Path(str(_models_dir())).glob("*")) if p.suffix in (".json", ".npz")}
        if self.profile is not None:
            d["profile"] = self.profile.fingerprint()
        d["code"] = _code_hash()  # the features, the kernels and the decode: a change in any changes answers
        return d

    def model_for(self, profile: str | Profile) -> TreeModel:
        """The model for ``profile`` (a name, a profile file or a ``Profile``), checked against its numbers."""
        if self.profile is not None:
            key = None  # one profile for every query
        elif isinstance(profile, str):
            key = profile
        else:
            key = f"{profile.name}#{profile.fingerprint()}"
        m = self._models.get(key)
        if m is not None:
            return m
        prof = self.profile if self.profile is not None else load_profile(profile)
        path = self.model_file or model_path(prof.name, self.kind)
        if path is None:
            raise InputError("profile", f"no {self.kind} model is shipped for profile {prof.name!r}; train one "
                             f"with `packer train` (packer.predictors.training.train) and pass it as "
                             f"model=PATH, or use predictor 'twin'")
        m = load_model(path)
        if tuple(m.feature_names) != FEATURE_NAMES:
            raise InputError("model", f"{path} was trained on other features than this packer computes; "
                             "retrain it with `packer train`")
        if m.profile_fingerprint and m.profile_fingerprint != prof.fingerprint():
            raise InputError("model", f"{path} was trained on another calibration of profile {m.profile!r} "
                             f"than {prof.name!r} has now; retrain it with `packer train`")
        if m.length_shapes and m.length_shapes != shipped_length_shapes():
            raise InputError("model", f"{path} was trained on other request-length shapes than packer/data now "
                             "ships; retrain it with `packer train`")
        if m.twin_fingerprint != twin_fingerprint(prof):
            raise InputError("model", f"{path} was trained on runs of another twin than this packer's (its code, its "
                             "data files or the profile changed since); retrain it with `packer train`")
        self._models[key] = m
        return m

    def _memory_error(self, query: GpuQuery) -> str | None:
        s = query.server
        return _startup_error(self.profile if self.profile is not None else query.profile, s.max_loras,
                              s.max_lora_rank, s.gpu_memory_utilization, s.enable_lora)

    def predict(self, query: GpuQuery) -> Prediction:
        err = self._memory_error(query)
        if err is not None:
            return Prediction(predictor=self.name, starved=False, memory_error=err, throughput_tps=None,
                              offered_tps=query.offered_tps)
        m = self.model_for(query.profile)
        key = self.profile if self.profile is not None else query.profile
        xs, ys, c, _ = _consts(key)
        check = m.domain_check()
        r = predict_packed_row_checked(pack(query, key), xs, ys, c, *m.arrays, m.plan, c[_C_OUT_SCALE],
                                       check.intervals)
        thr, offered, starved, itl, mask = r[:5].tolist()
        warnings = check.messages(int(mask), r[5:], query) if mask or not check.plain(query) else ()
        if warnings and self.extrapolation != "warn":
            return self._outside([query], [warnings])[0]
        return Prediction(predictor=self.name, starved=starved != 0.0, memory_error=None, throughput_tps=thr,
                          offered_tps=offered, mean_itl_ms=itl if m.has_itl else None, warnings=warnings)

    def predict_many(self, queries: Sequence[GpuQuery]) -> list[Prediction]:
        """``predict`` on every query, the features and trees of each profile's queries in one batch."""
        out: list[Prediction | None] = [None] * len(queries)
        by_profile: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            err = self._memory_error(q)
            if err is not None:
                out[i] = Prediction(predictor=self.name, starved=False, memory_error=err, throughput_tps=None,
                                    offered_tps=q.offered_tps)
            else:
                by_profile.setdefault(q.profile, []).append(i)
        outside: list[int] = []
        outside_warnings: list[tuple[str, ...]] = []
        for profile, idx in by_profile.items():
            m = self.model_for(profile)
            group = [queries[i] for i in idx]
            X = features_many(group, self.profile)
            warnings = m.domain_check().warnings(X, group)
            c = _consts(self.profile if self.profile is not None else profile)[2]
            res = m.outcomes(X, float(c[_C_OUT_SCALE]))
            itl = res[:, 3].tolist() if m.has_itl else [None] * len(idx)
            name = self.name
            for i, t, o, st, il, w in zip(idx, res[:, 0].tolist(), res[:, 1].tolist(), (res[:, 2] != 0.0).tolist(),
                                          itl, warnings):
                out[i] = Prediction(predictor=name, starved=st, memory_error=None, throughput_tps=t, offered_tps=o,
                                    mean_itl_ms=il, warnings=w)
                if w and self.extrapolation != "warn":
                    outside.append(i)
                    outside_warnings.append(w)
        if outside:
            for i, p in zip(outside, self._outside([queries[i] for i in outside], outside_warnings)):
                out[i] = p
        return out  # type: ignore[return-value]

    def _outside(self, queries: Sequence[GpuQuery], warnings: Sequence[tuple[str, ...]]) -> list[Prediction]:
        """Queries outside the training domain, by ``extrapolation``: refused, or answered by the twin."""
        if self.extrapolation == "error":
            raise InputError("extrapolation", f"the {self.name} model would extrapolate: "
                             f"{warnings[0][0].removeprefix('extrapolating: ')}; use predictor 'twin', or "
                             "extrapolation='twin' (the twin answers such queries) or 'warn'")
        note = f"answered by the twin: the query is outside the {self.name} model's training domain"
        return [dataclasses.replace(p, warnings=(*w, note))
                for p, w in zip(self.twin.predict_many(list(queries)), warnings)]


class ForestPredictor(TreePredictor):
    """The ``forest`` predictor: the undistilled models as one ensemble (``train(..., forest_out=...)``:
    gradient boosting exported tree by tree, or a random forest / extra trees refitted with at most
    32 trees of depth 12), shipped as ``packer/models/<profile>.forest.npz``; same kernel and
    interface as ``tree``, more accurate on average, tens of µs per GPU."""

    name = "forest"
    kind = "forest"


@lru_cache(maxsize=4096)
def _startup_error(profile: str | Profile, max_loras: int, max_lora_rank: int, util: float, lora: bool) -> str | None:
    return profile_of(profile).memory.startup_error(max_loras, max_lora_rank, util, lora)


def code_files() -> tuple[Path, ...]:
    """The source files whose code turns a query into a tree prediction (features, kernels, this
    module): ``describe()`` hashes them, so caches keyed on it notice a change in any of them."""
    from . import domain, features, kernels
    return tuple(Path(m.__file__) for m in (features, kernels, domain)) + (Path(__file__),)


@lru_cache(maxsize=1)
def _code_hash() -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in code_files())).hexdigest()[:16]


@lru_cache(maxsize=64)
def _file_hash(path: str, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


PREDICTORS.register("tree", TreePredictor, summary="a distilled decision tree trained on twin runs (numba; µs per GPU)")
PREDICTORS.register("forest", ForestPredictor, summary="the undistilled tree ensemble trained on twin runs (numba)")
