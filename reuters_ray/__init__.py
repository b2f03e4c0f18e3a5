"""reuters-ray: fine-tune small BERT encoders for text classification as a Ray job, k-fold cross-validated.

The public face (what `__all__` names); everything else is the rooms' own business and may change:

    configs     RunConfig (one typed config: data, model, train, cv, distill), DataConfig, load_config
    data        load_dataset(DataConfig) -> TextDataset (train and test texts, labels, ids, provenance)
    the door    TextClassifier(config, **overrides).fit(DataFrame) -> predict, predict_proba, evaluate,
                leaderboard, distill; TextClassifier.load(run folder | bucket run | export)
    recipes     run_cv (k-fold cross-validation, the ensemble, the blend, the report), run_search (a search on Ray
                Tune, every trial a k-fold run), run_distill (a student of a finished run)
    predictor   Ensemble.load(run_dir) -> predict(texts): what `reuters-ray predict` answers
    errors      ReutersRayError and its kinds DataError, ConfigError, CheckpointError (all ValueErrors)

The rooms, each importing only those below it: data -> scoring -> fold -> run / predictor -> recipes -> cli, on the
ground modules (config, errors, console, rows, storage, stopping). Ray is imported by recipes.cluster (Ray Train),
recipes.search (Ray Tune) and predictor.serve (Ray Serve) alone, and only when they run: `import reuters_ray` and
every name here load without Ray, the heavy ones (torch, transformers) only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from reuters_ray.config import DataConfig, RunConfig, load_config
from reuters_ray.data import TextDataset, load_dataset
from reuters_ray.errors import CheckpointError, ConfigError, DataError, ReutersRayError

if TYPE_CHECKING:  # loaded on first use (below): they import torch and transformers
    from reuters_ray.predictor.ensemble import Ensemble
    from reuters_ray.recipes.classifier import TextClassifier
    from reuters_ray.recipes.cv import run_cv
    from reuters_ray.recipes.distill import run_distill
    from reuters_ray.recipes.search import run_search

__version__ = "0.1.0"
__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Ensemble",
    "ReutersRayError",
    "RunConfig",
    "TextClassifier",
    "TextDataset",
    "__version__",
    "load_config",
    "load_dataset",
    "run_cv",
    "run_distill",
    "run_search",
]

_LAZY = {
    "Ensemble": "reuters_ray.predictor.ensemble",
    "TextClassifier": "reuters_ray.recipes.classifier",
    "run_cv": "reuters_ray.recipes.cv",
    "run_distill": "reuters_ray.recipes.distill",
    "run_search": "reuters_ray.recipes.search",
}


def __getattr__(name: str) -> Any:  # PEP 562: the heavy names load when first used
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'reuters_ray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
