"""The hyperparameter-search recipe: every trial a whole k-fold run (run_cv) on Ray Tune, bad trials ended by ASHA
on their score after each epoch round; the one module that imports Ray Tune. The search file, the trials' configs
and the search folder's files are reuters_ray.run.trials.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reuters_ray import rows as R
from reuters_ray import stopping
from reuters_ray.config import RunConfig, from_dict
from reuters_ray.console import Console
from reuters_ray.errors import ConfigError
from reuters_ray.fold.models import check_model
from reuters_ray.recipes.cluster import STOP_WAIT_FOLDS_S, own_ray_lost, ray_session
from reuters_ray.recipes.cv import run_cv
from reuters_ray.run.inputs import check_input
from reuters_ray.run.trials import (
    SEARCH_FILE,
    TRIAL_PREFIX,
    check_search,
    mark_stopped,
    named_test_figures,
    read_search,
    round_line,
    score_of_folds,
    search_place,
    summary,
    trial_config,
    trial_cpus_per_fold,
    trial_rows,
    trial_status,
    write_results,
    write_search,
)
from reuters_ray.storage import read_text, uri_join
from reuters_ray.track.mlflow_run import ENDING_S, Tracker, check_tracking


@dataclass
class TrialControl:
    """How a search's trial steers its run (run_cv's `control`): the epoch rounds the scheduler has allowed, and
    whether it ended the trial."""

    allowed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


class _RoundConsole(Console):
    """A trial's console: no output of its own (the trial's log has the workers' tables); it turns the folds'
    epoch rows into rounds for Tune: round r is complete when every fold has reported epoch r or finished, and its
    score is the folds' mean best validation figure, up to epoch r, of the one they stop on (train.monitor: weighted
    F1 by default, micro-F1 for multi-label data; Search.score_name)."""

    def __init__(self, rounds, folds: int):
        import io

        super().__init__("quiet", io.StringIO())
        self.rounds, self.n_folds, self.sent = rounds, folds, 0
        self.best: dict[int, dict[int, float]] = {}  # fold -> epoch -> best monitored validation figure so far
        self.finished: dict[int, bool] = {}

    def epoch(self, row: dict[str, Any]) -> None:
        self.tell_listeners(row)
        k = row[R.FOLD]
        self.best.setdefault(k, {})[row[R.EPOCH]] = row[R.best_key(row)]
        self.finished[k] = row[R.FINISHED]
        while self._complete(self.sent + 1):
            self.sent += 1
            score = float(np.mean([_best_at(b, self.sent) for b in self.best.values()]))
            self.rounds.put({"score": score, "epoch": self.sent})

    def _complete(self, r: int) -> bool:
        if len(self.best) < self.n_folds:
            return False
        if all(self.finished.values()) and all(max(b) < r for b in self.best.values()):
            return False  # every fold is done and reported: no round r
        return all(max(b) >= r or self.finished[k] for k, b in self.best.items())

    def done(self, text: str, **fields: Any) -> None:  # the run's result line: the search prints its own
        pass


def _best_at(best: dict[int, float], epoch: int) -> float:
    """A fold's best monitored validation figure up to `epoch` (a resumed fold reports from its first new epoch on)."""
    earlier = [e for e in best if e <= epoch]
    return best[max(earlier)] if earlier else best[min(best)]


def _trial_trainable():
    """The Tune trainable class of a search (a function: Ray Tune is imported only when a search runs). Each trial
    runs run_cv in a thread of its actor; step() returns its next epoch round; cleanup(), called when the scheduler
    or the search ends the trial, stops its folds after their current epoch and waits for them: the trial's Ray
    Train runs end as FINISHED, with nothing left behind and no task failed."""
    import queue

    from ray import tune

    class Trial(tune.Trainable):
        def setup(self, config: dict[str, Any]) -> None:
            self.index, self.place = config["trial"], search_place(config["storage"], config["search"])
            self.cfg = from_dict(RunConfig, config["configs"][str(self.index)])
            self.rounds, self.control, self.started = queue.Queue(), TrialControl(), time.time()
            self.console = _RoundConsole(self.rounds, self.cfg.cv.folds)
            self.metrics, self.error, self.last = None, None, {"score": 0.0, "epoch": 0}
            self.thread = threading.Thread(target=self._run, name=f"trial-{self.index}", daemon=True)
            self.thread.start()

        def _run(self) -> None:
            try:
                self.metrics = run_cv(self.cfg, self.console, self.control)
            except BaseException as e:  # noqa: BLE001 (re-raised by step: Tune records the trial's error)
                self.error = e
            finally:
                self.rounds.put(None)

        def step(self) -> dict[str, Any]:
            self.control.allowed = self.last["epoch"]  # asked for more: the folds may go past the rounds seen
            item = self.rounds.get()
            if item is None:
                if self.error is not None:
                    raise self.error
                if self.metrics is None:  # its folds were stopped by the search's driver (a stop signal)
                    raise RuntimeError(f"trial {self.index}: stopped with its search")

                return {**self.last, "score": score_of_folds(self.metrics["folds"]), "done": True}
            self.last = item
            return item

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            return None  # a trial's state is its run folder (its folds' checkpoints): nothing for Tune to keep

        def load_checkpoint(self, checkpoint) -> None:
            return None  # never restored through Tune: a rerun derives the trials and resumes their run folders

        def cleanup(self) -> None:
            if self.thread.is_alive():  # ended by the scheduler (or the search): folds stop after this epoch
                self.control.stop.set()
                self.thread.join()
            # ended by the scheduler (not by a stop of the whole search): the epochs its folds ran, the last may
            # follow the stop
            if self.control.stop.is_set() and self.metrics is None and self.error is None:
                epochs = max((max(b) for b in self.console.best.values()), default=0)
                mark_stopped(self.place, self.index, self.last["score"], epochs, time.time() - self.started)

    return Trial


def run_search(base: RunConfig, search_file: str, name: str, console: Console) -> dict[str, Any]:
    """Runs (or continues) the search in `search_file` (reuters_ray.run.trials) over the run config `base`: every trial
    a k-fold cross-validation in <cv.storage_path>/<name>/trial_<i>, at most as many at once as the cluster has
    room for, bad trials ended by ASHA on their score (Search.score_name) after each epoch round. Returns the
    results (search.json's). Raises ConfigError or DataError, before Ray starts, for a bad search file or input;
    RuntimeError when trials failed. Like run_cv, connects to Ray (or starts it) only when not connected already,
    and then disconnects at the end."""
    with ray_session():
        return _run_search(base, search_file, name, console)


def _run_search(base: RunConfig, search_file: str, name: str, console: Console) -> dict[str, Any]:

    check_tracking(base.track)  # MLflow asked for and not installed: said before anything is read or written
    search_place(base.cv.storage_path, name)  # a bad search name or storage path, before the data is read
    if base.cv.name is not None:
        raise ConfigError(
            "cv.name: a search names its trials' run folders (trial_<i>); name the search with --search-name"
        )
    search = read_search(search_file, base)
    prep = check_input(base, tokenize_now=False)  # the data, the model, the folds, what the linear model needs
    _check_lengths(base, search, search_file)
    base = base.with_absolute_paths()  # checked as given; the trials run where Tune puts them, not in this folder
    place, trials, resumed = check_search(base, search, name)
    configs = {str(i): trial_config(base, v, name, base.cv.storage_path, i).to_dict() for i, v in enumerate(trials)}
    todo = [i for i in range(len(trials)) if trial_status(place, i) == "to run"]
    room = _connect_for_trials(base, search.max_concurrent) if todo else 0  # refused here: nothing written yet
    write_search(place, search, base, trials)
    console.info(
        f"search {name}: {place.uri}; {len(trials)} trials, {len(trials) - len(todo)} done before"
        + (" (continuing)" if resumed else "")
        + f"; a trial's score: its {search.score_name}",
        search=name,
        uri=place.uri,
    )
    for line in prep.ds.notes() + prep.notes:  # what every trial's data and model hold (its log has them too)
        console.info(line)
    tracker = Tracker(base.track, place, console, "search", children="trial")
    tracker.start(base.to_dict(), {"reuters_ray.data_sha256": prep.fingerprint["sha256"]}, range(len(trials)))
    try:
        if todo:
            _tune(search, place, configs, todo, console, room, tracker)
        rows = trial_rows(place, trials)
        best = write_results(place, search, rows)
    except BaseException as e:
        tracker.close("FAILED" if isinstance(e, Exception) else "KILLED", ENDING_S)  # KeyboardInterrupt: a stop
        raise
    _track_trials(tracker, place, search, rows, best)
    _say_results(console, place, search, rows, best)
    return {"trials": rows, "best": best}


def _track_trials(tracker: Tracker, place, search, rows: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
    """Each trial's nested MLflow run: its values (params), status, folds' best validation figures (as metrics,
    fold_<k>/val_<figure>: the folds are not runs of their own) and test figures; the chosen trial tagged; then the
    search's run ended with its results as artifacts."""
    for r in rows:
        figures = {f"test/{k}": float(v) for k, v in (r.get("test") or {}).items()}
        if r["status"] == "finished":
            m = json.loads(read_text(place.fs, place.at(r["run"], "metrics.json")))
            for f in m["folds"]:
                figures |= {
                    f"fold_{f['fold']}/{k}": float(v)
                    for k, v in f.items()
                    if k.startswith("val_") and isinstance(v, float)
                }
        if r["score"] is not None:
            figures[search.score_column] = float(r["score"])
        chosen = best is not None and r["trial"] == best["trial"]
        tags = {"reuters_ray.status": r["status"], "reuters_ray.chosen": str(chosen).lower()}
        step = r["epochs"] or 0  # its last round: the score there is the trial's
        tracker.child_metrics(r["trial"], figures, step=step, params={k: r[k] for k in search.space}, tags=tags)
    if best is not None:
        tracker.tag({"reuters_ray.best_trial": str(best["trial"])})
    best_figures = {f"best/test/{k}": float(v) for k, v in best["test"].items()} if best else {}
    tracker.finish(best_figures, ["trials.csv", SEARCH_FILE, "report.md"])


def _check_lengths(base: RunConfig, search, search_file: str) -> None:
    """The model reads every data.max_length the search may draw (check_input checked the base config's
    and the tokenizer). Raises ConfigError."""

    positions, _ = check_model(base.model.name)
    dist = search.space.get("data.max_length")
    if dist is not None and positions:
        high = max(dist.args) if dist.kind == "choice" else dist.args[1]
        if high > positions:
            raise ConfigError(
                f"search {search_file}: data.max_length: {list(dist.args)} reaches {high}, but model "
                f"{base.model.name!r} reads at most {positions} tokens (max_position_embeddings); keep it at "
                f"{positions} or less"
            )


def _say_results(console: Console, place, search, rows: list[dict[str, Any]], best: dict[str, Any] | None) -> None:

    for r in sorted(rows, key=lambda r: (r["score"] is None, -(r["score"] or 0))):
        score = "n/a" if r["score"] is None else f"{r['score']:.4f} ({search.score_name})"
        values = summary({k: r[k] for k in search.space})
        epochs = "" if r["epochs"] is None else f", {r['epochs']} epoch{'' if r['epochs'] == 1 else 's'}"
        console.info(f"trial {r['trial']}: {r['status']}, score {score}{epochs} ({values})")
    if best is not None:
        console.done(
            f"search {place.name}: best trial {best['trial']} (score {best['score']:.4f}, {search.score_name}; its "
            f"test figures: {named_test_figures(best['test'])}); run folder {uri_join(place.uri, best['run'])}; "
            f"report: {uri_join(place.uri, 'report.html')}",
            search=place.name,
            best=best["trial"],
            score=best["score"],
            score_of=search.score_name,
        )


def _connect_for_trials(base: RunConfig, asked: int | None) -> int:
    """Connects to Ray (or starts it); how many trials fit at once (_trials_at_once). Raises ConfigError."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)
        stopping.reinstall()  # ray.init's SIGTERM handler exits with status 15 and says nothing
    return _trials_at_once(base, ray.cluster_resources(), asked)


def _tune(search, place, configs: dict, todo: list[int], console: Console, room: int, tracker: Tracker) -> None:
    """The trials in `todo` as Ray Tune trials under ASHA, at most `room` at once. Tune's own experiment state
    (pickled) goes to <search>/_tune and is never read back: a rerun derives the trials from the search file again."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    # ASHA's horizon one round past the longest trial: a trial ends by finishing (done), never by reaching max_t,
    # which would stop it while its last folds return and leave it without outputs
    max_t = max(c["train"]["max_epochs"] for c in configs.values()) + 1

    trainable = tune.with_resources(_trial_trainable(), {"CPU": TRIAL_CPU})
    tuner = tune.Tuner(
        trainable,
        param_space={
            "trial": tune.grid_search(todo),
            "storage": place.storage,
            "search": place.name,
            "configs": configs,
        },
        tune_config=tune.TuneConfig(
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                metric="score",
                mode="max",
                max_t=max_t,
                grace_period=min(search.grace_epochs, max_t - 1),
                reduction_factor=search.reduction_factor,
            ),
            max_concurrent_trials=room,
        ),
        run_config=tune.RunConfig(
            name="_tune", storage_path=place.uri, callbacks=[_say(search, place, console, tracker)], verbose=0
        ),
    )
    # Tune's own SIGINT handler would save its pickled state and print how to restore it through Tune: a search
    # continues when the same command runs again (reuters_ray.stopping)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        results = tuner.fit()
    except KeyboardInterrupt:  # a stop signal: each running trial's folds stop after their step
        stopping.say(early=True)
        _stop_trials(todo)
        raise
    failed = [r for r in results if r.error is not None]
    if failed:
        first = str(failed[0].error).strip().splitlines()[-1]
        raise RuntimeError(
            f"search {place.name}: {len(failed)} trial(s) failed; rerun the same command to continue. First: {first}"
        )


def _say(search, place, console: Console, tracker: Tracker):
    """The search's Tune callback (Tune is imported only when a search runs): each trial's epoch rounds on the
    search's console; the end of the search held until every ended trial has stopped its folds; this process's stop
    signals taken back from Tune."""
    from ray import tune

    class Say(tune.Callback):
        """Each trial's epoch rounds on the search's console; and the end of the search held until every ended trial
        has stopped its folds. Tune pickles its callbacks into its own experiment state, never read back here: the
        console (a stream) is left out of the pickle."""

        ended: set[int] = set()
        signals_taken = False

        def on_step_begin(self, iteration, trials, **info):
            # In Tune's loop, on the driver's main thread, after Tune took SIGUSR1 (always) for its own stop
            if not self.signals_taken:
                stopping.reinstall()
                self.signals_taken = True

        def on_trial_result(self, iteration, trials, trial, result):
            if console is not None and not result.get("done"):  # a finished trial's line comes with the results
                console.info(round_line(search, trial.config["trial"], result["epoch"], result["score"]))
                tracker.child_metrics(
                    trial.config["trial"], {search.score_column: result["score"]}, step=result["epoch"]
                )

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ended.add(trial.config["trial"])

        def on_step_end(self, iteration, trials, **info):
            # Once every trial is done in Tune's eyes, Tune gives a trial's actor 10 s to stop, then kills it, and
            # with it the Train runs it owns (FAILED tasks). A trial the scheduler ended is still stopping its folds
            # after their current epoch: wait for it (its cleanup writes stopped.json last).
            if not all(t.status in ("TERMINATED", "ERROR") for t in trials):
                return
            deadline = time.monotonic() + STOP_WAIT_S
            for i in sorted(self.ended):
                while trial_status(place, i) == "to run" and time.monotonic() < deadline:
                    time.sleep(0.5)
            self.ended.clear()

        def __reduce__(self):
            return (object, ())

    return Say()


def _stop_trials(trials: list[int]) -> None:
    """Asks the folds of every running trial of `trials` to stop after their current step (each trial's progress
    actor, named <trial_i>:progress), and waits until those actors are gone, at most STOP_WAIT_FOLDS_S seconds: what
    is left then goes with the search's Ray job. A trial stopped so is not recorded as ended by the scheduler."""
    import ray

    if own_ray_lost():
        return
    names = {f"{TRIAL_PREFIX}{i}:progress" for i in trials}
    for name in names:
        try:
            ray.get_actor(name).stop_now.remote()
        except ValueError:  # not running
            pass
    deadline = time.monotonic() + STOP_WAIT_FOLDS_S
    while time.monotonic() < deadline and names & set(ray.util.list_named_actors()):  # this job's namespace
        time.sleep(0.5)


TRIAL_CPU = 0.01  # what a trial's actor holds: it only waits on its folds, which hold their own CPUs


STOP_WAIT_S = 600.0  # at most this long for ended trials to stop their folds when the search ends (Tune's own limit)


def _trials_at_once(base: RunConfig, cluster: dict[str, float], asked: int | None) -> int:
    """How many trials fit the cluster at once: each holds its folds' CPUs (and GPU shares) and a sliver for its
    actor. Raises ConfigError when not even one fits."""
    workers, cpus = base.cv.workers_per_fold, trial_cpus_per_fold(base.cv)  # as trial_config sets it
    per_trial = base.cv.folds * workers * cpus + TRIAL_CPU
    gpus = (base.cv.gpus_per_fold or 0.0) * workers
    fit = int(cluster.get("CPU", 0) // per_trial)
    if gpus:
        fit = min(fit, int(cluster.get("GPU", 0) // (base.cv.folds * gpus)))
    if fit < 1:
        each = f"{workers} workers x " if workers > 1 else ""
        raise ConfigError(
            f"one trial needs {per_trial:g} CPUs ({base.cv.folds} folds x {each}cv.cpus_per_fold={cpus}) "
            f"{'and ' + str(base.cv.folds * gpus) + ' GPUs ' if gpus else ''}but this Ray cluster has "
            f"{cluster.get('CPU', 0):g} CPUs{' and ' + format(cluster.get('GPU', 0), 'g') + ' GPUs' if gpus else ''}"
        )
    return min(fit, asked) if asked else fit
