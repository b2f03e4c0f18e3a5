"""A run in MLflow (track.mlflow), written by the driver alone: it already receives every fold's epoch rows (the
console's), so no worker talks to MLflow and there is no rank logic.

    a cv run     one MLflow run (params: the flattened config; tags: the data's fingerprint, the Ray job id, the run
                 folder), a nested run per fold with each epoch's train/*, val/*, best/* and time/epoch_s figures at
                 step=epoch, the test figures of the predictor's parts on the parent (test/ensemble/*,
                 test/linear/*, test/blend/*; tag reuters_ray.predictor names the one `predict` answers with), the
                 out-of-fold figures (oof/*), report.md, metrics.json, per_class.csv, folds.csv and history.csv as
                 artifacts, and the predictor as an MLflow model (reuters_ray.track.pyfunc) under "model"
    a student    one run, its epochs on it, tagged with its teacher's run folder and, when the teacher was tracked,
                 its MLflow run id (reuters_ray.teacher_mlflow_run_id)
    a search     one run, a nested run per trial: each epoch round's score (step=round), its values as params, its
                 folds' best validation figures as metrics (fold_<k>/val_<figure>: folds as metrics, not runs) and
                 its test figures; the chosen trial tagged reuters_ray.chosen=true, the parent's best_trial param

Where the MLflow runs went is kept in the run folder (tracking.json): the same command run again continues the same
MLflow runs, and logs each epoch once (the steps already logged are skipped). Tracking never loses training: every
MLflow call runs in one background thread; the first that fails is one warning, after which nothing more is sent;
the end of a run waits for what is queued at most FLUSH_S seconds. MLflow is imported only when track.mlflow is set.
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reuters_ray import rows as R
from reuters_ray.config import TrackConfig
from reuters_ray.console import Console
from reuters_ray.errors import ConfigError
from reuters_ray.storage import read_text, write_atomic
from reuters_ray.track.pyfunc import log_predictor

# In the run (or search) folder: {"stores": {tracking URI: {"experiment_id", "run_id", "children": {index: run id}}},
# "last": the URI logged to last}
TRACKING_FILE = "tracking.json"
FLUSH_S = 300.0  # at most this long the end of a run waits for MLflow (the model's upload included)
ENDING_S = 15.0  # at most this long a stopped or failed run waits for MLflow to mark its runs
# Epoch-row keys logged per epoch: the figures, not the worker's host or pid
EPOCH_PREFIXES = (R.TRAIN_LOSS.split("/")[0] + "/", R.VAL, R.BEST, R.EPOCH_S, R.PEAK_GIB)
# An unreachable tracking server: MLflow's own defaults retry for minutes (7 tries, 120 s each) before its first
# failure; tracking gives up sooner. A user's own settings win.
HTTP_RETRIES, HTTP_TIMEOUT_S = "2", "20"


def check_tracking(track: TrackConfig) -> None:
    """Raises ConfigError, before anything starts, when track.mlflow is set and MLflow is not installed."""
    if not track.mlflow:
        return
    try:
        import mlflow  # noqa: F401 (the track extra's; imported only when asked for)
    except ImportError:
        raise ConfigError(
            "track.mlflow: MLflow is not installed in this environment; pip install 'reuters-ray[track]' (or "
            "mlflow>=3), or run without --track.mlflow"
        ) from None


def tracking_uri(track: TrackConfig) -> str:
    """track.uri, else MLFLOW_TRACKING_URI, else MLflow's default (MLflow 3: sqlite:///mlflow.db in this folder)."""
    import mlflow

    return track.uri or mlflow.get_tracking_uri()


def flat_params(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"data.path": "...", "train.lr": "0.003", ...}: a nested config as MLflow params (strings, None as "None")."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def numeric(d: dict[str, Any], keys=None) -> dict[str, float]:
    """The numbers of `d` (bools and None left out), all of them or those whose key starts with one of `keys`."""
    return {
        k: float(v)
        for k, v in d.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (keys is None or k.startswith(keys))
    }


class Tracker:
    """The MLflow side of one reuters-ray run (or search) in a background thread. `place`: the run's (or search's)
    place (fs, path, uri, name); `kind`: "cv", "student" or "search"; `children`: what the nested runs are named
    after ("fold" or "trial"; None: epochs go on the run itself). Every method only queues work and returns at once;
    `finish` waits for the queue (FLUSH_S at most). A disabled tracker (track.mlflow false) does nothing."""

    def __init__(self, track: TrackConfig, place, console: Console, kind: str, children: str | None = "fold"):
        self.track, self.place, self.console, self.kind, self.children = track, place, console, kind, children
        self.enabled = track.mlflow
        self.failed = False
        self.ids: dict[str, Any] = {"children": {}}
        self.last_step: dict[str, int] = {}  # run id -> last epoch already logged there
        if not self.enabled:
            return
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_RETRIES)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its bars would cut the console's lines
        self.uri = tracking_uri(track)
        self.jobs: queue.Queue = queue.Queue()
        self.client = None
        self.thread = threading.Thread(target=self._work, name="mlflow", daemon=True)
        self.thread.start()

    # --- the background thread --------------------------------------------------------------------------------

    def _queue(self, fn, *args) -> None:
        if self.enabled and not self.failed:
            self.jobs.put((fn, args))

    def _work(self) -> None:
        while (item := self.jobs.get()) is not None:
            fn, args = item
            if self.failed:
                continue
            try:
                fn(*args)
            except Exception as e:  # noqa: BLE001 (tracking never ends the run)
                self.failed = True
                text = str(e).strip().splitlines()[0] if str(e).strip() else ""
                first = text if len(text) <= 240 else text[:240] + " ..."
                self.console.warning(
                    f"MLflow tracking at {self.uri} failed ({type(e).__name__}: {first}); the run goes on without "
                    f"it (its run folder has everything)",
                    tracking_uri=self.uri,
                )

    # --- what the recipes call ---------------------------------------------------------------------------------

    def start(self, config: dict[str, Any], tags: dict[str, str], children: list[int] = ()) -> None:
        """Opens the MLflow run (or continues the one tracking.json names) with `config` as params and `tags`, and
        a nested run per child index (folds or trials)."""
        self._queue(self._start, config, tags, list(children))

    def tag(self, tags: dict[str, str]) -> None:
        self._queue(lambda: set_tags_batch(self._client(), self.ids["run_id"], tags))

    def epoch(self, row: dict[str, Any]) -> None:
        """A console listener: one fold's epoch row, logged at step=epoch on its nested run (a student's: on the
        run), once."""
        self._queue(self._epoch, dict(row), int(time.time() * 1000))

    def history(self, rows: list[dict[str, Any]]) -> None:
        """The folds' epoch rows as their checkpoints keep them (history.csv's): those not logged live are logged
        now (folds that finished before tracking was turned on, a row the console never saw); the others are
        skipped."""
        for row in sorted(rows, key=lambda r: (r[R.FOLD], r[R.EPOCH])):
            self.epoch(row)

    def child_metrics(self, index: int, metrics: dict[str, float], step: int = 0, params=None, tags=None) -> None:
        """Metrics (and params, tags) of the nested run of child `index` (a search's trial)."""
        self._queue(self._child_metrics, index, metrics, step, params or {}, tags or {})

    def finish(self, metrics: dict[str, float], files: list[str], model=None, tags=None, status="FINISHED") -> None:
        """Logs the run's end: `metrics` and `tags` on the run, `files` (names in the run folder) as artifacts,
        `model` (a callable (client, run_id) logging the MLflow model, or None), the nested runs and the run ended as
        `status`; then waits for the queue, FLUSH_S at most."""
        if tags:
            self.tag(tags)
        self._queue(self._finish, metrics, files, model, status)
        self.close()

    def close(self, status: str | None = None, wait_s: float = FLUSH_S) -> None:
        """Ends the MLflow runs as `status` (e.g. "KILLED" for a stopped run; None: leave them as they are) and waits
        for the queue, `wait_s` at most (a stopped or failed run: ENDING_S, so a stop is not held up by a slow
        store)."""
        if not self.enabled:
            return
        if status is not None:
            self._queue(self._end, status)
        self.jobs.put(None)
        self.thread.join(wait_s)
        if self.thread.is_alive():
            self.console.warning(f"MLflow tracking at {self.uri} still busy after {wait_s:.0f} s; left behind")
        self.enabled = False

    # --- the MLflow calls (background thread) ------------------------------------------------------------------

    def _client(self):
        if self.client is None:
            from mlflow import MlflowClient

            self.client = MlflowClient(self.uri)
        return self.client

    def _start(self, config: dict[str, Any], tags: dict[str, str], children: list[int]) -> None:
        from mlflow.entities import Param

        client = self._client()
        text = read_text(self.place.fs, self.place.at(TRACKING_FILE))
        stores = json.loads(text).get("stores", {}) if text else {}  # a file of another shape: new runs
        kept = stores.get(self.uri)  # this store's runs: a run logged to several stores continues each its own
        if kept is not None and _exists(client, kept["run_id"]):
            self.ids = {**kept, "children": {int(k): v for k, v in kept.get("children", {}).items()}}
            client.update_run(self.ids["run_id"], status="RUNNING")
            for run_id in [self.ids["run_id"], *self.ids["children"].values()]:
                self.last_step[run_id] = _last_step(client, run_id)
        else:
            exp = client.get_experiment_by_name(self.track.experiment)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(self.track.experiment)
            run = client.create_run(exp_id, run_name=self.place.name, tags={"reuters_ray.kind": self.kind})
            self.ids = {"experiment_id": exp_id, "run_id": run.info.run_id, "children": {}}
        run_id = self.ids["run_id"]
        logged = client.get_run(run_id).data.params  # a resumed run: params are logged once (MLflow keeps them)
        params = [Param(k, v[:6000]) for k, v in flat_params(config).items() if k not in logged]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(run_id, params=params[i : i + 100])
        set_tags_batch(client, run_id, {**tags, "reuters_ray.run_folder": self.place.uri})
        for index in children:
            if index not in self.ids["children"]:
                child = client.create_run(
                    self.ids["experiment_id"],
                    run_name=f"{self.place.name}/{self.children}_{index}",
                    tags={"mlflow.parentRunId": run_id, f"reuters_ray.{self.children}": str(index)},
                )
                self.ids["children"][index] = child.info.run_id
        kept = {"stores": {**stores, self.uri: self.ids}, "last": self.uri}
        write_atomic(self.place.at(TRACKING_FILE), json.dumps(kept, indent=2), self.place.fs)

    def _epoch(self, row: dict[str, Any], timestamp: int) -> None:
        from mlflow.entities import Metric

        run_id = self.ids["run_id"] if self.children is None else self.ids["children"].get(row[R.FOLD])
        step = int(row[R.EPOCH])
        if run_id is None or step <= self.last_step.get(run_id, 0):
            return  # a resumed (or restarted) fold's epoch that is logged already
        figures = numeric(row, EPOCH_PREFIXES) | numeric({R.LR: row.get(R.LR)})
        self._client().log_batch(run_id, metrics=[Metric(k, v, timestamp, step) for k, v in figures.items()])
        self.last_step[run_id] = step

    def _child_metrics(self, index: int, metrics: dict[str, float], step: int, params, tags) -> None:
        from mlflow.entities import Metric, Param

        client, run_id, now = self._client(), self.ids["children"][index], int(time.time() * 1000)
        logged = client.get_run(run_id).data.params if params else {}
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, step) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in params.items() if k not in logged],
            tags=[],
        )
        if tags:
            set_tags_batch(client, run_id, tags)

    def _finish(self, metrics: dict[str, float], files: list[str], model, status: str) -> None:
        from mlflow.entities import Metric

        client, run_id, now = self._client(), self.ids["run_id"], int(time.time() * 1000)
        batch = [Metric(k, v, now, 0) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            client.log_batch(run_id, metrics=batch[i : i + 1000])
        with tempfile.TemporaryDirectory() as tmp:
            for name in files:
                data = read_text(self.place.fs, self.place.at(name))
                if data is not None:
                    (Path(tmp) / name).write_text(data)
                    client.log_artifact(run_id, str(Path(tmp) / name))
        if model is not None:
            model(client, run_id)
        self._end(status)

    def _end(self, status: str) -> None:
        client = self._client()
        for run_id in [*self.ids["children"].values(), self.ids["run_id"]]:
            client.set_terminated(run_id, status)


def _exists(client, run_id: str) -> bool:
    """Whether the tracking store still has the run (and it is not deleted)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def _last_step(client, run_id: str) -> int:
    """The last epoch logged on a run (0: none): its train/loss history's last step."""
    history = client.get_metric_history(run_id, R.TRAIN_LOSS)
    return max((m.step for m in history), default=0)


def set_tags_batch(client, run_id: str, tags: dict[str, str]) -> None:
    """MlflowClient has no batch of tags: one log_batch with them."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])


PREDICTOR_TAG = "reuters_ray.predictor"  # what `predict` answers with: blend, ensemble or student
ARTIFACTS = ("report.md", "metrics.json", "per_class.csv", "folds.csv", "history.csv", "config.yaml")


def run_figures(metrics: dict[str, Any]) -> dict[str, float]:
    """A finished run's figures as MLflow metrics (metrics.json's): test/<part>/<figure> for the predictor (its name,
    metrics.json "predictor": blend, ensemble or student), the ensemble and the linear model (the baseline), the
    out-of-fold ones (oof/<figure>), the blend's weight, the wall time and its phases (timing/<phase>)."""
    part = metrics.get("predictor", "ensemble")
    out = {f"test/{part}/{k}": v for k, v in numeric(metrics).items() if k not in ("wall_s", "max_length")}
    for name, key in (("ensemble", "ensemble"), ("linear", "baseline"), ("teacher", "teacher")):
        if isinstance(metrics.get(key), dict) and name != part:
            out.update({f"test/{name}/{k}": v for k, v in numeric(metrics[key]).items()})
    out.update({f"oof/{k}": v for k, v in numeric(metrics.get("out_of_fold", {})).items()})
    if isinstance(metrics.get("blend"), dict) and "weight" in metrics["blend"]:
        out["blend/weight"] = float(metrics["blend"]["weight"])
    out.update({f"timing/{k}": v for k, v in numeric(metrics.get("timing", {})).items()})
    return out | {"wall_s": float(metrics.get("wall_s", 0.0))}


@contextmanager
def tracked(run, kind: str, children: str | None = "fold", tags: dict[str, str] | None = None):
    """The Tracker of a run (reuters_ray.run.inputs.Run) while the recipe runs it: started with the run's config
    and data fingerprint, told every epoch row; a run that raises (a failure, a stop signal) ends its MLflow runs as
    FAILED or KILLED, and the same command run again continues them."""
    tracker = Tracker(run.cfg.track, run.place, run.console, kind, children)
    folds = range(run.cfg.cv.folds) if children == "fold" else ()
    tracker.start(run.cfg.to_dict(), {"reuters_ray.data_sha256": run.prep.fingerprint["sha256"], **(tags or {})}, folds)
    run.console.listeners.append(tracker.epoch)
    try:
        yield tracker
    except BaseException as e:
        tracker.close("FAILED" if isinstance(e, Exception) else "KILLED", ENDING_S)  # KeyboardInterrupt: a stop
        raise
    finally:
        run.console.listeners.remove(tracker.epoch)
        tracker.close()


def model_logger(run, metrics: dict[str, Any]):
    """What Tracker.finish calls to log the run's predictor as an MLflow model (track.pyfunc), registered under
    track.register when set; None when track.log_model is off."""
    if not run.cfg.track.log_model:
        return None

    def log(client, run_id: str) -> None:
        log_predictor(client, run_id, run.place.fs, run.place.path, metrics, run.cfg.track.register)

    return log
