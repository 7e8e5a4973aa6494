"""Training the data-driven predictors on the twin: a reproducible, resumable sweep and the models fitted on it.

The sweep side: ``spec.py`` (``SweepSpec`` and the sampling of its queries), ``runs.py`` (chunked twin
runs on ``packer.executor``: ``generate``), ``replicates.py`` (more runs of the ambiguous samples and
their consensus labels), ``store.py`` (the sweep directory on disk: NPZ chunks, ``spec.json``,
``load_dataset``); ``python -m packer.predictors.training`` generates a sweep.

The model side: ``labels.py`` (targets and the train / validation / test split), ``fit.py`` (the
scikit-learn candidates), ``distill.py`` (single trees distilled from them), ``scores.py`` (the error
measures and test scores), ``export.py`` (the model files) and ``pipeline.py`` (``train``, the whole job).
"""

from ...lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {  # imported on first use: numpy, the twin, scikit-learn
    **dict.fromkeys(["SweepSpec", "sample_queries", "sample_query"], ".spec"),
    **dict.fromkeys(["generate", "run_query"], ".runs"),
    **dict.fromkeys(["ReplicateSpec", "replicate", "consensus_labels"], ".replicates"),
    **dict.fromkeys(["load_dataset", "query_from_dataset"], ".store"),
    **dict.fromkeys(["mare", "f1"], ".scores"),
    "train": ".pipeline"})

__all__ = ["SweepSpec", "sample_queries", "sample_query", "generate", "run_query", "ReplicateSpec", "replicate",
           "consensus_labels", "load_dataset", "query_from_dataset", "mare", "f1", "train"]
