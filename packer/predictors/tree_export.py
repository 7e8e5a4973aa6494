"""Fitted scikit-learn tree models as packer's plain arrays: decision trees, forests and histogram
gradient boosting as ``Tree`` / ``Head`` (``tree_model.py``), their nodes in the kernel's pre-order."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .tree_model import Head, Tree

__all__ = ["tree_from_sklearn", "head_from_sklearn"]


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


def head_from_sklearn(est, transform: str = "identity") -> Head:
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

