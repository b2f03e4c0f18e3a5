"""Live metrics in Ray's dashboard: each fold's epoch, validation F1, training loss and examples/s as Ray application
metrics (ray.util.metrics gauges), published by the driver from the epoch rows it receives, tagged with the run, the
fold and the trial. Ray exports them with its own on each node's metrics endpoint (Prometheus text, names prefixed
`ray_`), so the dashboard's Metrics view (with Prometheus and Grafana, as Ray documents) and the Grafana panel of
docs/grafana/reuters-ray-folds.json show them beside Ray Train's.
"""

from __future__ import annotations

from typing import Any

from reuters_ray import rows as R

TAGS = ("run", "fold", "trial")
# name (without Ray's ray_ prefix) -> (what it is, the epoch row key, or None for the validation F1)
GAUGES = {
    "reuters_ray_fold_epoch": ("the fold's last finished epoch", R.EPOCH),
    "reuters_ray_fold_val_f1": (
        "the fold's validation F1 at its last epoch: weighted F1 (multi-label: micro-F1)",
        None,
    ),
    "reuters_ray_fold_train_loss": ("the fold's mean training loss in its last epoch", R.TRAIN_LOSS),
    "reuters_ray_fold_examples_per_s": ("the fold's training examples per second in its last epoch", R.EXAMPLES_PER_S),
}


def val_f1(row: dict[str, Any]) -> float:
    """The validation F1 a gauge shows: micro-F1 for a multi-label fold, else weighted F1."""
    return float(row[R.VAL + "f1_micro"] if R.VAL + "hamming_loss" in row else row[R.VAL_F1])


class LiveMetrics:
    """A console listener publishing each epoch row as the GAUGES, tagged run=`run`, fold=<k>, trial=`trial` ("" for
    a run that is no search's trial). Needs a connected Ray (ray.util.metrics)."""

    def __init__(self, run: str, trial: str = ""):
        from ray.util.metrics import Gauge

        self.tags = {"run": run, "trial": trial}
        self.gauges = {name: Gauge(name, description=text, tag_keys=TAGS) for name, (text, _) in GAUGES.items()}

    def __call__(self, row: dict[str, Any]) -> None:
        tags = {**self.tags, "fold": str(row[R.FOLD])}
        for name, (_, key) in GAUGES.items():
            self.gauges[name].set(val_f1(row) if key is None else float(row[key]), tags=tags)
