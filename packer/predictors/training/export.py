"""The exported model files: a ``TreeModel`` of the ``tree`` or ``forest`` kind keyed on the profile and
the twin, and the ``forest`` export of the chosen big models (gradient boosting exported tree by tree;
a random forest or extra trees refitted with at most ``forest_trees`` trees of depth ``forest_depth``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...profile import Profile
from ...twin.fingerprint import twin_fingerprint
from ...twin.lengths import shipped_length_shapes
from ..features import FEATURE_NAMES
from ..tree_export import head_from_sklearn
from ..tree_io import save_model
from ..tree_model import Head, TreeModel
from .fit import BigModels, require_sklearn
from .labels import Labels
from .scores import latency_predictions, score_line, scores_on_test

__all__ = ["predictor_model", "export_forest"]


def predictor_model(prof: Profile, heads: dict[str, Head], kind: str) -> TreeModel:
    """A model of ``kind`` (``tree`` / ``forest``) for ``prof`` from its heads."""
    return TreeModel(prof.name, FEATURE_NAMES, heads, kind, prof.fingerprint(), ratio_base="served",
                     length_shapes=shipped_length_shapes(), twin_fingerprint=twin_fingerprint(prof))


def export_forest(big: BigModels, lab: Labels, seed: int, n_jobs: int, n_trees: int, depth: int, prof: Profile,
                  domain: dict[str, Any], out: str | Path, say: Callable[[str], None],
                  forest_min_leaf: int = 5) -> dict[str, Any]:
    """The chosen big models as one ensemble model written to ``out``: gradient boosting exported tree
    by tree; a random forest / extra trees refitted with at most ``n_trees`` trees of depth at most
    ``depth`` and leaves of at least ``forest_min_leaf`` rows (which keeps the file near a megabyte).
    Returns its report (families, caps, test scores, sizes)."""
    ens, _ = require_sklearn()
    capped = {"random_forest": (ens.RandomForestRegressor, ens.RandomForestClassifier, 0.5),
              "extra_trees": (ens.ExtraTreesRegressor, ens.ExtraTreesClassifier, 0.7)}
    X, tr = lab.X, lab.train

    def export(head: str, transform: str, rows, y, classify: bool) -> Head:
        family = big.best[head][1].split("/")[0]
        m = big.best[head][2]
        if family in capped:
            R, C, mf = capped[family]
            cls = C if classify else R
            m = cls(n_estimators=n_trees, max_depth=depth, min_samples_leaf=forest_min_leaf, max_features=mf,
                    n_jobs=n_jobs, random_state=seed).fit(X[rows], y)
            return head_from_sklearn(m, transform)
        return head_from_sklearn(m, "sigmoid" if classify else transform)

    log_ratio = big.log_ratio
    heads = {
        "ratio": export("ratio", "exp" if log_ratio else "identity", tr,
                        np.log(np.maximum(lab.ratio[tr], 1e-4)) if log_ratio else lab.ratio[tr], False),
        "starved": export("starved", "identity", tr, lab.starved[tr], True),
        **{h: export(h, "exp", lab.rows(h, "train"), np.log(lab.latency[h][lab.rows(h, "train")]), False)
           for h in big.latency_heads},
    }
    model = predictor_model(prof, heads, "forest")
    o = model.predict_batch(X[lab.test])
    scores = scores_on_test(lab, o["ratio"], o["starved"] > 0.5, latency_predictions(model, lab))
    say(f"  test  forest: {score_line(scores)}")
    rep = {"families": {h: big.best[h][1] for h in big.best}, "capped_trees": n_trees, "capped_depth": depth,
           "capped_min_leaf": forest_min_leaf, "test": scores, "sizes": model.sizes(), "out_path": str(out)}
    model.training = {"profile": prof.name, "forest": rep, "domain": domain}
    save_model(model, out)
    say(f"  wrote {out}")
    return rep
