"""Ray orchestration of k-fold cross-validation: the one module that imports Ray Train (the service's Ray Serve
code is reuters_ray.serve). The driver's steps without Ray are reuters_ray.phases; run_cv calls them in order.

    driver   the input checked and tokenized once; the arrays in the object store; one TorchTrainer per fold
             (ScalingConfig(num_workers=cv.workers_per_fold, use_gpu=...)), their fit() calls in driver threads so
             the folds run at once
    worker   calls reuters_ray.fold.train.train_fold, reporting each epoch (and rank 0 its checkpoint) to Ray storage;
             a fold's several workers train it data-parallel (DDP through Ray Train's process group)
    callback on each fold's Train controller: forwards every registered report to the driver's console
    actor    the ensemble: loads each fold's best model from storage and scores the test split

Running the same command with the same run name resumes: finished folds (fold_result.json) are kept, and Ray Train
restores each unfinished fold from its latest registered checkpoint (its own JSON snapshot; nothing unpickled).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from reuters_ray import phases, stopping
from reuters_ray import rows as R
from reuters_ray.config import RunConfig
from reuters_ray.console import Console, duration
from reuters_ray.errors import ConfigError
from reuters_ray.phases import RunPlace, write_test
from reuters_ray.storage import LOCAL, copy_dir, storage_location, uri_join


@dataclass(frozen=True)
class FoldTask:
    """Everything a fold's Ray worker needs besides the data: the run's config, which fold, where it runs."""

    run: RunConfig
    fold: int
    gpu_share: float  # of one GPU for each worker (1.0 = a whole one; 0 on CPU); workers sharing a card get a part
    cpus: float  # for each worker
    attempt: str  # new with each fit() of the fold, kept when Ray Train restarts a dead worker
    folder: str = ""  # its Ray Train run's folder in the run (phases.fold_names); default fold_<fold>
    workers: int = 1  # data-parallel Ray Train workers (cv.workers_per_fold)


# --- code that runs in Ray workers ----------------------------------------------------------------------------


def _fold_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: one fold's training loop (or one worker's share of it), each epoch (and rank 0's
    checkpoint) reported into Ray storage."""
    started_at = time.time()  # against the driver's clock: how long Ray took to start this worker
    import functools

    import ray
    import ray.train
    import ray.train.torch

    from reuters_ray.console import format_row
    from reuters_ray.data.features import TokenArrays
    from reuters_ray.fold.train import FoldData, train_fold

    task: FoldTask = config["task"]
    rank = ray.train.get_context().get_world_rank()
    arrays = ray.get(config["data_ref"][0])  # numpy arrays come back zero-copy from the object store
    train_idx, val_idx = arrays["folds"][task.fold]
    tokens = TokenArrays(arrays["ids"], arrays["lengths"], arrays["pad_id"])
    data = FoldData(
        tokens, arrays["labels"], train_idx, val_idx, arrays["class_weights"], arrays["label_names"],
        soft_targets=arrays.get("soft_targets"), labelled=arrays.get("labelled"),  # a student's
    )  # fmt: skip
    if rank == 0:
        print(format_row(), flush=True)  # the epoch table in the worker's log too (dashboard, Ray's log files)
    stop = _watch_stop(config["progress"]) if rank == 0 else None  # rank 0 asks; train_fold tells the others

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> bool:
        """Reports the epoch into Ray storage (every worker must; rank 0's row and checkpoint are the ones
        registered); True when the driver asks the fold to stop (a search ended it): rank 0 asks, train_fold tells
        the others."""
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report({**metrics, R.WORKER_STARTED_AT: started_at}, checkpoint=checkpoint)
        if rank == 0:
            print(format_row(metrics), flush=True)
        if rank != 0 or metrics[R.FINISHED]:  # a finished fold has nothing left to gate
            return False
        while (answer := ray.get(config["progress"].gate.remote(metrics[R.EPOCH]))) == "wait":  # a search's trial
            time.sleep(0.1)
        return answer == "stop"

    with tempfile.TemporaryDirectory() as tmp:
        resume = None
        checkpoint = ray.train.get_checkpoint()  # set when Ray restores this fold (driver rerun or worker restart)
        if checkpoint is not None:
            resume = resume_candidates(checkpoint.filesystem, checkpoint.path, tmp)
        device = ray.train.torch.get_device()
        train_fold(
            task.run,
            data,
            Path(tmp) / "checkpoints",
            fold=task.fold,
            resume_from=resume,
            attempt=task.attempt,
            report=report,
            device=device,
            gpu_share=task.gpu_share or 1.0,
            worker_info={"node_id": ray.get_runtime_context().get_node_id()},
            wrap=functools.partial(ray.train.torch.prepare_model, move_to_device=False),  # DDP, several workers
            should_stop=stop.is_set if stop is not None else lambda: False,
        )


STOP_POLL_S = 0.5  # how often a fold's rank 0 asks whether its driver was stopped


def _watch_stop(progress) -> threading.Event:
    """An event set once the driver's progress actor says to stop now (its command got a stop signal), asked every
    STOP_POLL_S seconds from a thread of the worker; the fold then stops after its current optimizer step. A
    progress actor that is gone (its driver died) ends the watch: Ray ends the fold with its job."""
    import ray

    event = threading.Event()

    def watch() -> None:
        while True:
            try:
                if ray.get(progress.stopping_now.remote(), timeout=60):
                    event.set()
                    return
            except Exception:  # noqa: BLE001 (the actor is gone: nothing left to ask)
                return
            time.sleep(STOP_POLL_S)

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()
    return event


def resume_candidates(fs: pafs.FileSystem, latest: str, local_root: str):
    """Yields local copies of checkpoint `latest` (the one Ray restored) and then of the fold's older kept
    checkpoints, newest first, each fetched only when asked for (train_fold takes the first that loads).
    Ray names checkpoint folders checkpoint_<timestamp>, so name order is age order; newer folders than
    `latest` are ones Ray never registered and are not used."""
    parent, name = latest.rstrip("/").rsplit("/", 1)
    older = sorted(
        (
            i.base_name
            for i in fs.get_file_info(pafs.FileSelector(parent))
            if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_") and i.base_name < name
        ),
        reverse=True,
    )
    for k, folder in enumerate([name, *older]):
        dst = os.path.join(local_root, f"resume_{k}")
        os.makedirs(dst)
        copy_dir(f"{parent}/{folder}", dst, fs, LOCAL)
        yield Path(dst)


def _worker_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with a model or tokenizer given as a relative local folder made absolute: a fold's Ray worker runs in a
    folder of Ray's, where the relative path names nothing (it would be taken for a hub id)."""
    import dataclasses

    def absolute(name: str | None) -> str | None:
        return str(Path(name).resolve()) if name and Path(name).is_dir() else name

    model = dataclasses.replace(cfg.model, name=absolute(cfg.model.name))
    data = dataclasses.replace(cfg.data, tokenizer=absolute(cfg.data.tokenizer))
    return dataclasses.replace(cfg, model=model, data=data)


def _fit_fold(task: FoldTask, data_ref: list, run_uri: str, progress) -> tuple[str | None, bool]:
    """Fits fold `task.fold` as a Ray Train run named <run>/fold_<k> (a student: <run>/student), i.e. in that folder of
    `run_uri`
    (blocking; the driver calls it in a thread per fold). The name is what the dashboard's Train API lists: it says
    the run. Started again with the same name, Ray Train restores the fold from its latest registered checkpoint
    (its own JSON snapshot). Returns (the folder name of the fold's last checkpoint, whether the fold finished: its
    last reported epoch says so; a fold stopped before its end has reported an earlier one, or no checkpoint)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    location, sep, query = run_uri.partition("?")  # an S3-compatible store's options stay last
    parent, run_name = location.rstrip("/").rsplit("/", 1)

    resources = {"CPU": task.cpus, **({"GPU": task.gpu_share} if task.gpu_share else {})}
    trainer = TorchTrainer(
        _fold_worker,
        train_loop_config={"task": task, "data_ref": data_ref, "progress": progress},
        # PACK (Ray's default): a fold's workers share a node when one has room for all, else they spread
        scaling_config=ray.train.ScalingConfig(
            num_workers=task.workers, use_gpu=bool(task.gpu_share), resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"{run_name}/{task.folder or f'fold_{task.fold}'}",
            storage_path=parent + sep + query,
            callbacks=[_forward_reports(progress)],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=task.run.train.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=task.run.cv.max_failures),
        ),
    )
    result = trainer.fit()
    finished = bool((result.metrics or {}).get(R.FINISHED))
    if result.checkpoint is None:
        if finished:
            raise RuntimeError(f"fold {task.fold} reported no checkpoint")
        return None, False  # stopped before its first checkpoint
    return result.checkpoint.path.rstrip("/").rsplit("/", 1)[-1], finished


def _node_write_test(run_uri: str) -> str | None:
    """Run as a Ray task on one node: why the run folder at `run_uri` cannot be written from there, or None."""
    fs, path, _ = storage_location(run_uri)
    return write_test(fs, path)


def check_nodes_can_write(storage_path: str, run_uri: str) -> None:
    """Raises ConfigError unless every live node of the Ray cluster can write the run folder: the driver's own
    credentials are not its workers' (they have the environment `ray start` ran in, or the node's instance
    profile), and a fold that cannot write its checkpoints would fail only after its Train start-up. One task
    (no CPU) per node, pinned there."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_node_write_test)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    answers = ray.get(
        [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(run_uri)
            for n in nodes
        ]
    )
    for node, why in zip(nodes, answers):
        if why is not None:
            raise ConfigError(
                f"cv.storage_path {storage_path!r} cannot be written from Ray node {node}: {why} (every node needs "
                "the bucket's credentials: an instance profile, or AWS_* variables where `ray start` ran)"
            )


# Detached actors that every Train controller of Ray 2.60 gets or creates (they outlive jobs): the state actor behind
# Train's state tracking, and the autoscaling coordinator. Controllers started at once race to create them, and
# the losers' creations are FAILED tasks in a healthy run's job.
TRAIN_SHARED_ACTORS = ("train_v2_state_actor", "AutoscalingCoordinator")


def _create_train_shared_actors() -> bool:
    """Creates Ray Train's shared actors from the driver (Ray Train's own get-or-create functions), and waits until
    both are up, so that every fold's controller finds them and all folds can start at once; a controller that
    creates them costs the folds after it its start (docs/results.md). False when Ray no longer has these functions
    (private API): the folds then wait for the first one's (_await_train_shared_actors)."""
    import ray

    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
        from ray.train.v2._internal.state.state_actor import get_or_create_state_actor
    except ImportError:
        return False
    actors = [get_or_create_autoscaling_coordinator()]
    if os.environ.get("RAY_TRAIN_ENABLE_STATE_TRACKING") == "1":
        actors.append(get_or_create_state_actor())
    ray.get([a.__ray_ready__.remote() for a in actors])
    return True


def _await_train_shared_actors(first_fold, timeout: float = 30.0) -> None:
    """Waits until the first fold's Train controller has created Ray Train's shared actors (at most `timeout`
    seconds, and not past that fold's end), unless they exist already; the other folds start after. Seen through
    Ray's public list of named actors; if Ray renames them, this only waits. (Creating them from the driver
    instead was tried: the folds then raced for the coordinator; docs/results.md.)"""
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not first_fold.done():
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
        if names.issuperset(TRAIN_SHARED_ACTORS):
            return
        time.sleep(0.2)


def _forward_reports(progress):
    """A Train callback (it runs on the fold's Train controller) that sends each registered epoch row to the
    driver's progress actor."""
    from ray.train import UserCallback

    class _Forward(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            progress.put.remote(R.forwarded(metrics[0]))

    return _Forward()


class _Progress:
    """An async actor between the folds' Train controllers and the driver: rows in, rows out. take() waits at most
    `timeout` seconds and returns what arrived (possibly nothing): a poll that never fails a task."""

    def __init__(self):
        import asyncio

        self._rows: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()

    async def put(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._arrived.set()

    async def take(self, timeout: float) -> list[dict[str, Any]]:
        import asyncio

        if not self._rows:
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        rows, self._rows = self._rows, []
        self._arrived.clear()
        return rows

    # A search's trial gates its folds by epoch rounds: a fold that reported epoch e waits until the scheduler asked
    # for more than the rounds it has seen (allow), or ended the trial (stop). A plain run never gates.

    async def gate(self, epoch: int) -> str:
        """For the fold that reported `epoch`: "stop", "go" or "wait" (ask again). Answered at once: a call that
        waited here would be a FAILED task in the dashboard when the actor goes at the run's end."""
        if getattr(self, "_stopping", False) or getattr(self, "_stop_now", False):  # a fold waiting at the gate too
            return "stop"
        return "wait" if getattr(self, "_allowed", epoch) < epoch else "go"

    async def allow(self, epoch: int) -> None:
        self._allowed = max(epoch, getattr(self, "_allowed", 0))

    async def stop(self) -> None:
        """Every fold stops after the epoch it is in (a search's scheduler ended the trial)."""
        self._stopping = True

    async def stop_now(self) -> None:
        """Every fold stops after its current optimizer step (the command got a stop signal)."""
        self._stop_now = True

    async def stopping_now(self) -> bool:
        """Asked by each fold's rank 0 every STOP_POLL_S seconds (_watch_stop) while it trains."""
        self._asked = time.monotonic()
        return getattr(self, "_stop_now", False)

    async def asked_within(self, seconds: float) -> bool:
        """Whether a fold asked stopping_now within the last `seconds`: a fold is still training (or stopping)."""
        return time.monotonic() - getattr(self, "_asked", -1e9) <= seconds


class _EnsembleActor:
    """The ensemble. Created while the last folds train (its process, torch and transformers imported, a CUDA
    context), so that once they end only load() (each fold's best model copied from storage onto this actor's
    device) and fold_logits() remain."""

    def __init__(self):
        # imported now, used by load: BERT's classifier is the product's (another architecture's loads there)
        from transformers import AutoModelForSequenceClassification, BertForSequenceClassification  # noqa: F401

        from reuters_ray.fold.inference import default_device

        self.device = default_device()
        if self.device.type == "cuda":
            import torch

            torch.zeros(1, device=self.device)  # the CUDA context, created now rather than after the folds
        self.folds = None

    def load(self, storage_uri: str, best_paths: list[str], precision: str, profile: str) -> None:
        from reuters_ray.fold.inference import TorchFolds
        from reuters_ray.fold.train import PROFILES, resolve_precision

        fs, _, _ = storage_location(storage_uri)  # any URI of the run's storage: its filesystem
        self._tmp = tempfile.mkdtemp(prefix="reuters-ray-ensemble-")
        local = []
        for k, path in enumerate(best_paths):
            dst = os.path.join(self._tmp, f"fold_{k}")
            os.makedirs(dst)
            copy_dir(path, dst, fs, LOCAL)
            local.append(dst)
        precision = resolve_precision(precision, PROFILES[profile], self.device)
        self.folds = TorchFolds(local, device=self.device, precision=precision)

    def fold_logits(self, arrays: dict[str, Any]) -> np.ndarray:
        from reuters_ray.data.features import TokenArrays

        return self.folds.fold_logits(TokenArrays(arrays["ids"], arrays["lengths"], arrays["pad_id"]))


# --- the driver -----------------------------------------------------------------------------------------------


def run_cv(cfg: RunConfig, console: Console | None = None, control=None) -> dict[str, Any] | None:
    """Runs (or resumes) k-fold CV plus the ensemble on a local or remote Ray cluster; returns metrics.json's dict.

    Everything about the input (model name, data, folds, storage path, a run name used by another config or other
    data) is checked before anything is written, and raises ConfigError or DataError. RuntimeError when a fold fails
    (the run then resumes when started again). Connects to Ray (or starts it) only when not connected already, and
    then disconnects at the end. `control` (TrialControl, a search's trial) gates the folds by epoch rounds; once it
    says stop, the folds stop after their current epoch and run_cv returns None, writing no outputs (a rerun
    continues the folds from their checkpoints).
    """
    ray = sys.modules.get("ray")  # not imported here: bad input is refused without importing Ray at all
    connected_before = ray is not None and ray.is_initialized()
    try:
        return _run_cv(cfg, console or Console(), control)
    finally:
        ray = sys.modules.get("ray")
        if not connected_before and ray is not None and ray.is_initialized():
            ray.shutdown()  # also ends Ray's message thread, which would print after the result otherwise


def _run_cv(cfg: RunConfig, console: Console, control=None) -> dict[str, Any] | None:
    timing = phases.Stopwatch()
    # nothing is written before the input passed: a bad run leaves nothing behind (and starts no Ray)
    prep = phases.check_input(cfg, tokenize_now=False)
    place, resuming = phases.open_run(cfg, prep)
    phases.announce_run(console, place, prep)  # what the checks found, before Ray starts
    data_done = start_ray_during(lambda: phases.tokenize_input(prep, cfg.data.max_length))
    timing.lap_at("data_s", data_done)  # checks, loading, preprocessing, tokenization (Ray starting meanwhile)
    phases.announce_data(console, prep, cfg)
    gpu_share = connect(cfg, place, resuming)
    timing.lap("ray_start_s")  # what Ray's start took beyond the data, and placing the folds
    if resuming:
        console.info(
            f"run {place.name}: resuming (finished folds are kept, unfinished ones continue from their last checkpoint)",
            resuming=True,
        )
    linear = _start_linear_fit(cfg, prep)  # CPU work on the driver while the folds train: no wall time of the run
    ensemble_actor = _Ensemble(place, phases.ensemble_fits_early(cfg.cv, _resources(), gpu_share))
    try:
        # a search's trial, which its scheduler may stop, starts its ensemble only once its folds are done
        started = ensemble_actor.start if control is None else None
        folders = _run_folds(cfg, place, gpu_share, _put_train_split(prep), console, control, started)
        if folders is None and control is not None:
            return None  # the trial was stopped: no outputs
        folds = phases.collect_folds(place, folders, cfg.train.patience)
        oof_logits = phases.out_of_fold_logits(place.fs, folds.best_paths, prep.folds, prep.n_train)
        timing.lap("folds_s")
        fold_logits = ensemble_actor.test_logits(cfg, prep, folds.best_paths)
    finally:
        ensemble_actor.close()
    ensemble = phases.score_ensemble(prep.ds, fold_logits, folds.table, cfg.cv, oof_logits)
    timing.lap("ensemble_s")
    fitted = linear.result() if linear is not None else None
    ensemble_probs = phases.probabilities(fold_logits.mean(0), prep.ds.multi_label)
    scored = phases.blend_phase(cfg, prep.ds, fitted, oof_logits, ensemble, ensemble_probs, console)
    metrics = phases.run_metrics(cfg, place, prep, folds, ensemble, scored, oof_logits, timing, _cluster())
    with stopping.deferred():  # a stop signal waits for the outputs: nothing half-written
        phases.write_outputs(place, cfg, prep, folds, metrics, scored, oof_logits)
    timing.lap("outputs_s")  # its own time cannot be in metrics.json (written first): the result line carries it
    _say_done(console, place, metrics, {**timing.laps, "total_s": timing.total()})
    return metrics


def run_distill(cfg: RunConfig, console: Console | None = None) -> dict[str, Any]:
    """Trains (or resumes) a student of run cfg.distill.teacher (reuters_ray.distill) as one Ray Train run, scores the
    test split with it and writes its run folder; returns its metrics.json. Raises ConfigError or DataError before
    anything is written for a bad teacher, student or data; RuntimeError when the training fails (the same command
    resumes). Connects to Ray (or starts it) only when not connected already, and then disconnects at the end."""
    ray = sys.modules.get("ray")
    connected_before = ray is not None and ray.is_initialized()
    try:
        return _run_distill(cfg, console or Console())
    finally:
        ray = sys.modules.get("ray")
        if not connected_before and ray is not None and ray.is_initialized():
            ray.shutdown()


def _run_distill(cfg: RunConfig, console: Console) -> dict[str, Any]:
    from reuters_ray import distill

    timing = phases.Stopwatch()
    prep = distill.check_input(
        cfg
    )  # the teacher, the student model, the data and the soft targets: nothing written yet
    place, resuming = phases.open_run(cfg, prep)
    phases.announce(console, place, prep, cfg)
    t, transfer = prep.teacher_metrics, prep.n_train - prep.n_labelled
    train_idx, val_idx = prep.folds[0]
    console.info(
        f"student of run {t['run']} ({t.get('predictor', 'ensemble')} of {len(t['folds'])} fold models): "
        f"{cfg.model.name}{'' if cfg.model.layers is None else f' (its first {cfg.model.layers} layers)'}, trained on "
        f"{len(train_idx) - transfer} texts with their labels and the teacher's out-of-fold probabilities"
        + (f" and {transfer} transfer texts with the teacher's probabilities" if transfer else "")
        + f" (alpha {cfg.distill.alpha}, temperature {cfg.distill.temperature}); {len(val_idx)} held out for early "
        "stopping",
        teacher=t["run"],
    )
    if transfer:
        console.info(f"transfer: {transfer} wires the run's data left out, scored by the teacher's predictor ...")
        seconds = distill.score_transfer(prep)
        console.info(f"transfer: scored in {duration(seconds)}", transfer=transfer)
    timing.lap("data_s")
    gpu_share = connect(cfg, place, resuming)
    timing.lap("ray_start_s")
    if resuming:
        console.info(f"run {place.name}: resuming (the student continues from its last checkpoint)", resuming=True)
    # the student alone: its scoring actor, started while it trains
    ensemble_actor = _Ensemble(place, phases.ensemble_fits_early(cfg.cv, _resources(), gpu_share, 1))
    try:
        folders = _run_folds(cfg, place, gpu_share, _put_train_split(prep), console, started=ensemble_actor.start)
        folds = phases.collect_folds(place, folders, cfg.train.patience, phases.fold_names(cfg))
        timing.lap("folds_s")
        test_logits = ensemble_actor.test_logits(cfg, prep, folds.best_paths)[0]
    finally:
        ensemble_actor.close()
    timing.lap("ensemble_s")
    metrics = distill.student_metrics(cfg, place, prep, folds, test_logits, timing, _cluster())
    with stopping.deferred():  # a stop signal waits for the outputs: nothing half-written
        distill.write_outputs(place, cfg, prep, folds, metrics, test_logits)
    timing.lap("outputs_s")
    _say_done(console, place, metrics, {**timing.laps, "total_s": timing.total()})
    return metrics


def start_ray_during(work) -> float:
    """Starts Ray (init_ray) here while `work()` runs in a thread: tokenizing overlaps the seconds Ray takes to
    start. Returns the perf_counter time at which `work` ended; its exception, if any, is raised (after Ray is up:
    run_cv's caller shuts it down)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="data")
    try:
        done = pool.submit(lambda: (work(), time.perf_counter())[1])
        init_ray()
        return done.result()
    finally:
        pool.shutdown(wait=True)


def init_ray() -> None:
    """Joins the Ray cluster RAY_ADDRESS (or `ray job submit`) names, or starts a local one, unless connected already;
    sets Ray Train's settings for the folds first. Read by TorchTrainer.fit in this process (its controller gets the
    RAY_TRAIN_* ones); a user's own values win."""
    import ray  # only now: bad input is refused without starting (or even importing) Ray

    # Ray Train's state tracking: the dashboard's Train API (/api/train/v2/runs/v1) lists each fold's Train run.
    # _run_folds keeps the folds from racing to create its actor.
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")
    # How often a fold's controller polls its workers (Ray's default 2 s): a fold's end, and each epoch row, reach
    # the driver up to that much later.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(HEALTH_CHECK_S))
    if ray.is_initialized():
        return
    # Worker output stays in Ray's logs (dashboard, /tmp/ray/session_latest/logs): the driver prints each epoch
    # itself, once.
    ray.init(log_to_driver=False)
    stopping.reinstall()  # ray.init's SIGTERM handler exits with status 15 and says nothing
    # On a one-machine cluster this driver started itself nothing is ever drained or preempted: no Ray Train
    # preemption watcher (an actor per fold, a process importing Ray).
    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None and getattr(node, "head", False):
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


HEALTH_CHECK_S = 0.5


def connect(cfg: RunConfig, place: RunPlace, resuming: bool) -> float:
    """Joins the Ray cluster (ray start, ray job submit) or starts a local one, and checks that the folds fit it and
    that every node can write a bucket's run folder; returns each fold's GPU share. A new run's folder is removed
    again when it is refused here (ConfigError)."""
    import ray

    init_ray()
    try:
        gpu_share = phases.place_folds(cfg.cv, ray.cluster_resources(), len(phases.fold_names(cfg)))
        if "://" in cfg.cv.storage_path:  # a local folder is this machine's; a bucket must take every node's writes
            check_nodes_can_write(cfg.cv.storage_path, place.uri)
    except ConfigError:
        if not resuming:
            place.fs.delete_dir(place.path)  # refused before any training: a new run leaves nothing behind
        raise
    return gpu_share


def _put_train_split(prep) -> Any:
    """The training split's arrays in Ray's object store, shared zero-copy by every fold's worker."""
    import ray

    n = prep.n_train
    soft = getattr(prep, "soft_targets", None)  # a student's (reuters_ray.distill.StudentPrepared)
    return ray.put(
        {
            "ids": prep.tokens.ids[:n],
            "lengths": prep.tokens.lengths[:n],
            "pad_id": prep.tokens.pad_id,
            "labels": prep.ds.train_labels,
            "class_weights": prep.weights,
            "label_names": prep.ds.label_names,
            "folds": prep.folds,
            **({"soft_targets": soft, "labelled": prep.labelled} if soft is not None else {}),
        }
    )


def _start_linear_fit(cfg: RunConfig, prep):
    """The linear model's fits (phases.fit_linear) in a driver thread, when the blend or the baseline needs it."""
    if not (cfg.cv.blend or cfg.cv.baseline):
        return None
    return _in_thread("linear-model", phases.fit_linear, prep.ds, prep.folds)


def _in_thread(name: str, fn, *args) -> Future:
    """fn(*args) in a daemon thread, its result (or exception) in the Future returned: a stopped command exits at
    once, where a pool's threads would be waited for at the interpreter's exit (a fold's fit to its end)."""
    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 (handed to whoever waits on the future)
            future.set_exception(e)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


class _Ensemble:
    """The run's ensemble actor, named <run>:ensemble (the name the dashboard's Actors page shows): start() creates
    it, as soon as every unfinished fold is running (_run_folds calls it then; none waits for room, so it takes none
    a fold needs: no CPU, and on a GPU cluster phases.ENSEMBLE_GPU of a GPU, which place_folds leaves free when folds
    share a card; `early`: phases.ensemble_fits_early); test_logits() creates it if not yet done, loads the fold
    models and scores the test split."""

    def __init__(self, place: RunPlace, early: bool = True):
        self.place, self.early, self.actor = place, early, None

    def start(self) -> None:
        """Creates the actor (unless done): while folds train only when phases.ensemble_fits_early said so."""
        if self.actor is None and self.early:
            self._create()

    def _create(self) -> None:
        import ray

        gpus = phases.ENSEMBLE_GPU if ray.cluster_resources().get("GPU", 0) > 0 else 0
        actor_cls = ray.remote(num_cpus=0, num_gpus=gpus)(_EnsembleActor)
        # DEFAULT: not in the placement group of whatever runs this driver (a search's trial), which holds no room
        self.actor = actor_cls.options(name=f"{self.place.name}:ensemble", scheduling_strategy="DEFAULT").remote()

    def test_logits(self, cfg: RunConfig, prep, best_paths: list[str]) -> np.ndarray:
        """[folds, N, K] test logits of the fold models at `best_paths` (in storage)."""
        import ray

        if self.actor is None:
            self._create()
        n = prep.n_train
        test = {"ids": prep.tokens.ids[n:], "lengths": prep.tokens.lengths[n:], "pad_id": prep.tokens.pad_id}
        ray.get(self.actor.load.remote(self.place.uri, best_paths, cfg.train.precision, cfg.train.profile))
        return ray.get(self.actor.fold_logits.remote(ray.put(test)))

    def close(self) -> None:
        import ray

        if self.actor is not None:
            ray.kill(self.actor)
            self.actor = None


def _resources() -> dict[str, float]:
    import ray

    return ray.cluster_resources()


def _cluster() -> dict[str, Any]:
    """The cluster's CPUs and GPUs and the run's job id (its job in the dashboard and `ray list`)."""
    import ray

    resources = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    return {**resources, "job_id": ray.get_runtime_context().get_job_id()}


def _say_done(console: Console, place: RunPlace, metrics: dict[str, Any], timing: dict[str, float]) -> None:
    if metrics.get("task") == "multi":
        m = metrics
        console.done(
            f"run {place.name}: micro-F1 {m['f1_micro']:.4f}, macro-F1 {m['f1_macro']:.4f}, samples-F1 "
            f"{m['f1_samples']:.4f}, subset accuracy {m['subset_accuracy']:.4f}, Hamming loss {m['hamming_loss']:.4f} on "
            f"{m['n_test']} test texts ({phases.predictor_line(m)}) in {duration(timing['total_s'])}"
            f"{phases.unseen_line(m)}; report: {uri_join(place.uri, 'report.html')}",
            run=place.name, uri=place.uri, f1_micro=m["f1_micro"], f1_macro=m["f1_macro"], f1_samples=m["f1_samples"],
            subset_accuracy=m["subset_accuracy"], hamming_loss=m["hamming_loss"], timing=timing,
            **({"test_unseen": m["test_unseen"]} if "test_unseen" in m else {}),
        )  # fmt: skip
        return
    console.done(
        f"run {place.name}: accuracy {metrics['accuracy']:.4f}, weighted F1 {metrics['f1_weighted']:.4f}, "
        f"macro F1 {metrics['f1_macro']:.4f} on {metrics['n_test']} test texts ({phases.predictor_line(metrics)}) "
        f"in {duration(timing['total_s'])}{phases.unseen_line(metrics)}; report: {uri_join(place.uri, 'report.html')}",
        run=place.name,
        uri=place.uri,
        accuracy=metrics["accuracy"],
        f1_weighted=metrics["f1_weighted"],
        f1_macro=metrics["f1_macro"],
        timing=timing,
        **({"test_unseen": metrics["test_unseen"]} if "test_unseen" in metrics else {}),
    )


def _run_folds(
    cfg: RunConfig, place: RunPlace, gpu_share: float, train_ref, console: Console, control=None, started=None
):
    """Fits the unfinished folds at once (a thread per fold waits on its TorchTrainer) while printing their epoch
    rows; returns each fold's last checkpoint folder. `started` (a callable) is called once every unfinished fold has
    reported an epoch (none waits for room any more). A search's trial passes `control` (TrialControl): its folds go
    past epoch e only once control.allowed >= e, and once control.stop is set they stop after their current epoch,
    as if interrupted, and None is returned. Raises RuntimeError naming the folds that failed, once the others are
    done (their results are kept: the rerun resumes only what failed)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    names = phases.fold_names(cfg)
    folders = phases.finished_folds(place, names)
    # On the driver's node, as Ray Train attaches each fold's controller: the driver lives only as long as that node
    # does, and elsewhere a lost node would take the folds' reports with it. Hard: a soft preference was seen
    # spilled to another node (no CPU asked, so the driver's node always has room).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    progress = ray.remote(num_cpus=0)(_Progress).options(name=f"{place.name}:progress", scheduling_strategy=here)
    progress = progress.remote()
    if control is not None:
        progress.allow.remote(0)  # gated: each fold waits after its first epoch for the trial's next round
    console.expected = {k for k in range(len(names)) if k not in folders}
    all_at_once = not console.expected or _create_train_shared_actors()
    futures = {}
    try:
        for k in sorted(console.expected):
            task = FoldTask(
                _worker_config(cfg), k, gpu_share, cfg.cv.cpus_per_fold, uuid.uuid4().hex[:12], names[k],
                cfg.cv.workers_per_fold,
            )  # fmt: skip
            futures[_in_thread(f"fold-{k}", _fit_fold, task, [train_ref], place.uri, progress)] = k
            if len(futures) == 1 and not all_at_once:
                _await_train_shared_actors(next(iter(futures)))
        errors, unfinished, ended = _await_folds(futures, folders, place, names, progress, console, control, started)
    except KeyboardInterrupt:  # a stop signal (stopping.Stopped, or Ray's in its place): folds stop after their step
        _stop_folds(futures, progress)  # a second signal cuts it short; Ray ends the rest with the job
        raise
    for row in ray.get(progress.take.remote(0)):  # the last rows, sent just before their fold's fit returned
        console.epoch(row)
    if ended:  # the folds' last gate calls ("stop") were just answered: let the actor record their end first
        time.sleep(GATE_RECORD_S)
    progress.__ray_terminate__.remote()  # gracefully, after any call still queued (a kill would fail it)
    if errors:
        k, first = min(errors.items())
        raise RuntimeError(
            f"run {place.name}: fold(s) {', '.join(map(str, sorted(errors)))} failed; rerun the same command to "
            f"resume. Fold {k}: {first}"
        )
    if unfinished and control is None:  # asked to stop from elsewhere (its progress actor): not a finished run
        raise RuntimeError(
            f"run {place.name}: fold(s) {', '.join(map(str, sorted(unfinished)))} stopped before their end; "
            f"{stopping.STOPPED_LINE}"
        )
    # stopped (a search's scheduler, or the search's driver stopped): the folds' last checkpoints are not their end
    return None if ended or unfinished else [folders[k] for k in range(len(names))]


# At most this long a stopped command waits for its folds to stop after their step (they may still be starting);
# what is left then goes with the command's Ray job.
STOP_WAIT_FOLDS_S = 30.0


def _stop_folds(futures, progress) -> None:
    """Asks the folds to stop after their current step, and waits until their fits returned: at most
    STOP_WAIT_FOLDS_S seconds, and only while some fold was heard from within STOP_QUIET_S (a fold that saw the
    stop ends its Train run in a second or two; a signal sent to the whole process group, as a batch scheduler
    sends it, also ends the fold workers of the Ray this command started, whose fits would then never return)."""
    import ray

    started = time.monotonic()
    stopping.say(early=True)  # a submitted job's driver: `ray job stop` kills it 3 s after its SIGTERM
    if _own_ray_lost():
        return
    try:
        progress.stop_now.remote()
        while time.monotonic() - started < STOP_WAIT_FOLDS_S and wait(futures, timeout=1.0).not_done:
            if time.monotonic() - started > STOP_QUIET_S and not ray.get(
                progress.asked_within.remote(STOP_QUIET_S), timeout=5
            ):
                return
    except (ray.exceptions.RayError, ConnectionError):  # Ray itself is gone: nothing left to wait for
        pass


STOP_QUIET_S = 5.0


def _own_ray_lost() -> bool:
    """Whether the local Ray this driver started has lost one of its processes: a signal sent to the whole process
    group (`timeout`, a batch scheduler) reaches them too, and every call into Ray would then wait out its own
    timeouts (a minute for the GCS) before the command could end."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    return bool(node is not None and getattr(node, "head", False) and node.dead_processes())


def _await_folds(futures: dict, folders: dict, place, names, progress, console, control, started):
    """_run_folds' wait on the folds' fits, printing their epoch rows; each finished fold marked in storage.
    Returns (errors by fold, folds that returned unfinished, whether control stopped the folds)."""
    import ray

    errors: dict[int, BaseException] = {}
    unfinished: set[int] = set()
    pending, stopping, allowed, reported = set(futures), False, 0, set()
    while pending:
        if started is not None and reported >= set(futures.values()):
            started()  # every fold is running: the caller's next step may start now
            started = None
        if control is not None and control.stop.is_set() and not stopping:
            progress.stop.remote()  # the workers ask after each epoch
            stopping = True
        if control is not None and control.allowed > allowed:
            allowed = control.allowed
            progress.allow.remote(allowed)
        for row in ray.get(progress.take.remote(1.0 if control is None else 0.2)):
            console.epoch(row)
            reported.add(row[R.FOLD])
        for future in [f for f in pending if f.done()]:
            pending.discard(future)
            k = futures[future]
            if future.exception() is not None:
                errors[k] = future.exception()
                continue
            folder, finished = future.result()
            if finished and not stopping:  # a stopped fold's last checkpoint is not its end
                folders[k] = folder
                phases.mark_finished(place, names[k], folder)
            else:
                unfinished.add(k)
    return errors, unfinished, stopping


# Ray records an actor task's end from the actor's own process, in batches about once a second (task events): an
# actor terminated within that time after answering a call can leave the call recorded as FAILED (WORKER_DIED), as
# once seen in the search's test. Seconds waited before the progress actor of a stopped trial goes.
GATE_RECORD_S = 2.0


@dataclass
class TrialControl:
    """How a search's trial steers its run (run_cv's `control`): the epoch rounds the scheduler has allowed, and
    whether it ended the trial."""

    allowed: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


# --- hyperparameter search: every trial a whole k-fold run, on Ray Tune ---------------------------------------


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

    from reuters_ray.config import from_dict
    from reuters_ray.run.trials import mark_stopped, search_place

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
                from reuters_ray.run.trials import score_of_folds

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
    """Runs (or continues) the search in `search_file` (reuters_ray.search) over the run config `base`: every trial
    a k-fold cross-validation in <cv.storage_path>/<name>/trial_<i>, at most as many at once as the cluster has
    room for, bad trials ended by ASHA on their score (Search.score_name) after each epoch round. Returns the
    results (search.json's). Raises ConfigError or DataError, before Ray starts, for a bad search file or input;
    RuntimeError when trials failed. Like run_cv, connects to Ray (or starts it) only when not connected already,
    and then disconnects at the end."""
    ray = sys.modules.get("ray")
    connected_before = ray is not None and ray.is_initialized()
    try:
        return _run_search(base, search_file, name, console)
    finally:
        ray = sys.modules.get("ray")
        if not connected_before and ray is not None and ray.is_initialized():
            ray.shutdown()


def _run_search(base: RunConfig, search_file: str, name: str, console: Console) -> dict[str, Any]:
    from reuters_ray.run.trials import (
        check_search,
        read_search,
        search_place,
        trial_config,
        trial_rows,
        trial_status,
        write_results,
        write_search,
    )

    search_place(base.cv.storage_path, name)  # a bad search name or storage path, before the data is read
    if base.cv.name is not None:
        raise ConfigError(
            "cv.name: a search names its trials' run folders (trial_<i>); name the search with --search-name"
        )
    search = read_search(search_file, base)
    prep = phases.check_input(base, tokenize_now=False)  # the data, the model, the folds, what the linear model needs
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
    if todo:
        _tune(search, place, configs, todo, console, room)
    rows = trial_rows(place, trials)
    best = write_results(place, search, rows)
    _say_results(console, place, search, rows, best)
    return {"trials": rows, "best": best}


def _check_lengths(base: RunConfig, search, search_file: str) -> None:
    """The model reads every data.max_length the search may draw (phases.check_input checked the base config's
    and the tokenizer). Raises ConfigError."""
    from reuters_ray.fold.models import check_model

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
    from reuters_ray.run.trials import named_test_figures, summary

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


def _tune(search, place, configs: dict, todo: list[int], console: Console, room: int) -> None:
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
            name="_tune", storage_path=place.uri, callbacks=[_say(search, place, console)], verbose=0
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


def _say(search, place, console: Console):
    """The search's Tune callback (Tune is imported only when a search runs): each trial's epoch rounds on the
    search's console; the end of the search held until every ended trial has stopped its folds; this process's stop
    signals taken back from Tune."""
    from ray import tune

    from reuters_ray.run.trials import round_line, trial_status

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

    from reuters_ray.run.trials import TRIAL_PREFIX

    if _own_ray_lost():
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
    workers = base.cv.workers_per_fold
    per_trial = base.cv.folds * workers * base.cv.cpus_per_fold + TRIAL_CPU
    gpus = (base.cv.gpus_per_fold or 0.0) * workers
    fit = int(cluster.get("CPU", 0) // per_trial)
    if gpus:
        fit = min(fit, int(cluster.get("GPU", 0) // (base.cv.folds * gpus)))
    if fit < 1:
        each = f"{workers} workers x " if workers > 1 else ""
        raise ConfigError(
            f"one trial needs {per_trial:g} CPUs ({base.cv.folds} folds x {each}cv.cpus_per_fold={base.cv.cpus_per_fold}) "
            f"{'and ' + str(base.cv.folds * gpus) + ' GPUs ' if gpus else ''}but this Ray cluster has "
            f"{cluster.get('CPU', 0):g} CPUs{' and ' + format(cluster.get('GPU', 0), 'g') + ' GPUs' if gpus else ''}"
        )
    return min(fit, asked) if asked else fit
