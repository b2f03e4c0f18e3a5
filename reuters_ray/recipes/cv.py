"""The cross-validation recipe, read top to bottom: run_cv checks the input before anything is written, opens the
run folder, trains the folds at once on Ray Train (reuters_ray.recipes.cluster), scores the ensemble and the
blend with the linear model fitted meanwhile, and writes the run's outputs, report.md last.
"""

from __future__ import annotations

from typing import Any

from reuters_ray import stopping
from reuters_ray.config import RunConfig
from reuters_ray.console import Console
from reuters_ray.recipes.cluster import (
    FoldScorer,
    cluster_record,
    connect,
    disconnect_early,
    fit_folds,
    put_train_split,
    ray_session,
    start_ray_during,
)
from reuters_ray.run.folds import collect_folds, out_of_fold_logits
from reuters_ray.run.inputs import Run, announce_data, announce_run, check_input, open_run, tokenize_input
from reuters_ray.run.outputs import run_metrics, say_done, write_outputs
from reuters_ray.run.place import Stopwatch
from reuters_ray.scoring.evaluate import blend_phase, fit_linear, probabilities, score_ensemble
from reuters_ray.stopping import in_thread
from reuters_ray.track.mlflow_run import (
    ARTIFACTS,
    PREDICTOR_TAG,
    Tracker,
    check_tracking,
    model_logger,
    run_figures,
    tracked,
)


def run_cv(cfg: RunConfig, console: Console | None = None, control=None) -> dict[str, Any] | None:
    """Runs (or resumes) k-fold CV plus the ensemble on a local or remote Ray cluster; returns metrics.json's dict.

    Everything about the input (model name, data, folds, storage path, a run name used by another config or other
    data) is checked before anything is written, and raises ConfigError or DataError. RuntimeError when a fold fails
    (the run then resumes when started again). Connects to Ray (or starts it) only when not connected already, and
    then disconnects at the end. `control` (recipes.search.TrialControl, a search's trial) gates the folds by epoch
    rounds; once it says stop, the folds stop after their current epoch and run_cv returns None, writing no outputs
    (a rerun continues the folds from their checkpoints).
    """
    with ray_session():
        return _run_cv(cfg, console or Console(), control)


def _run_cv(cfg: RunConfig, console: Console, control=None) -> dict[str, Any] | None:
    timing = Stopwatch()
    check_tracking(cfg.track)  # MLflow asked for and not installed: said before anything is written
    # nothing is written before the input passed: a bad run leaves nothing behind (and starts no Ray)
    prep = check_input(cfg, tokenize_now=False)
    place, resuming = open_run(cfg, prep)
    run = Run(cfg, place, prep, console, resuming, timing)
    with tracked(run, "cv") as tracker:
        return _train_and_score(run, tracker, control)


def _train_and_score(run: Run, tracker: Tracker, control) -> dict[str, Any] | None:
    cfg, place, prep, console, timing = run.cfg, run.place, run.prep, run.console, run.timing
    announce_run(console, place, prep)  # what the checks found, before Ray starts
    data_done = start_ray_during(lambda: tokenize_input(prep, cfg.data.max_length))
    timing.lap_at("data_s", data_done)  # checks, loading, preprocessing, tokenization (Ray starting meanwhile)
    announce_data(console, prep, cfg)
    connect(run)
    timing.lap("ray_start_s")  # what Ray's start took beyond the data, and placing the folds
    tracker.tag({"reuters_ray.ray_job_id": cluster_record()["job_id"]})
    if run.resuming:
        console.info(
            f"run {place.name}: resuming (finished folds are kept, unfinished ones continue from their last checkpoint)",
            resuming=True,
        )
    linear = _start_linear_fit(cfg, prep)  # CPU work on the driver while the folds train: no wall time of the run
    scorer = FoldScorer(run)
    try:
        # a search's trial, which its scheduler may stop, starts its ensemble only once its folds are done
        folders = fit_folds(run, put_train_split(prep), control, scorer.start if control is None else None)
        if folders is None and control is not None:
            return None  # the trial was stopped: no outputs
        folds = collect_folds(place, folders, cfg.train.patience)
        tracker.history(folds.history)
        oof_logits = out_of_fold_logits(place.fs, folds.best_paths, prep.folds, prep.n_train)
        timing.lap("folds_s")
        fold_logits = scorer.test_logits(folds.best_paths)
    finally:
        scorer.close()
    ensemble = score_ensemble(prep.ds, fold_logits, folds.table, cfg.cv, oof_logits)
    timing.lap("ensemble_s")
    fitted = linear.result() if linear is not None else None
    ensemble_probs = probabilities(fold_logits.mean(0), prep.ds.multi_label)
    scored = blend_phase(cfg, prep.ds, fitted, oof_logits, ensemble, ensemble_probs, console)
    metrics = run_metrics(run, folds, ensemble, scored, oof_logits, cluster_record())
    disconnect_early()  # Ray's no longer needed: its shutdown overlaps the outputs
    with stopping.deferred():  # a stop signal waits for the outputs: nothing half-written
        write_outputs(run, folds, metrics, scored, oof_logits)
    timing.lap("outputs_s")  # its own time cannot be in metrics.json (written first): the result line carries it
    tracker.finish(run_figures(metrics), ARTIFACTS, model_logger(run, metrics), {PREDICTOR_TAG: metrics["predictor"]})
    say_done(console, place, metrics, {**timing.laps, "total_s": timing.total()})
    return metrics


def _start_linear_fit(cfg: RunConfig, prep):
    """The linear model's fits (fit_linear) in a driver thread, when the blend or the baseline needs it."""
    if not (cfg.cv.blend or cfg.cv.baseline):
        return None
    return in_thread("linear-model", fit_linear, prep.ds, prep.folds)
