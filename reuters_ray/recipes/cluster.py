"""The Ray Train machinery the recipes share: with reuters_ray.recipes.fold_worker (what the folds' Ray processes run)
the modules that import Ray Train (the search's Ray Tune code is reuters_ray.recipes.search, the service's Ray Serve
code reuters_ray.predictor.serve).

    connect      Ray started (or joined) once, the folds placed on the cluster (place_folds), the nodes' write test
    fit_folds    one Ray Train run per fold (fold_trainer: TorchTrainer, or one CPU worker without a process group;
                 ScalingConfig(num_workers=cv.workers_per_fold, use_gpu=...)), their fit() calls in driver threads so
                 the folds run at once, their epoch rows forwarded to the console
    worker       fold_worker.fold_worker calls reuters_ray.fold.train.train_fold, reporting each epoch (and rank 0
                 its checkpoint) to Ray storage; a fold's several workers train it data-parallel (DDP through Ray
                 Train's process group); a finished fold scores the test split with its best model
    FoldScorer   the test logits each fold kept, or the ensemble actor's (it loads the fold models and scores)
    ray_session  connects (or starts Ray) only when not connected already, and disconnects at the end

Running the same command with the same run name resumes: finished folds (fold_result.json) are kept, and Ray Train
restores each unfinished fold from its latest registered checkpoint (its own JSON snapshot; nothing unpickled).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from reuters_ray import rows as R
from reuters_ray import stopping
from reuters_ray.config import PROFILES, RunConfig
from reuters_ray.data.features import TokenArrays
from reuters_ray.errors import ConfigError
from reuters_ray.fold.inference import TorchFolds, default_device
from reuters_ray.fold.plan import resolve_precision
from reuters_ray.recipes.fold_worker import FoldTask, Progress, fixed_cluster_policy, fold_worker, forward_reports
from reuters_ray.run.folds import kept_test_logits
from reuters_ray.run.inputs import Run
from reuters_ray.run.place import (
    SNAPSHOT,
    finished_folds,
    fold_names,
    mark_finished,
    recover_from_damaged_snapshot,
    write_test,
)
from reuters_ray.run.resources import ENSEMBLE_GPU, ensemble_fits_early, place_folds, share_of_cpus
from reuters_ray.stopping import in_thread
from reuters_ray.storage import LOCAL, copy_dir, storage_location
from reuters_ray.track.live import LiveMetrics


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

    location, sep, query = run_uri.partition("?")  # an S3-compatible store's options stay last
    parent, run_name = location.rstrip("/").rsplit("/", 1)

    resources = {"CPU": task.cpus, **({"GPU": task.gpu_share} if task.gpu_share else {})}
    torch_backend = task.workers > 1 or bool(task.gpu_share)
    trainer = fold_trainer(job_ends_with_recipe(), torch_backend, fixed_cluster=started_ray_here())(
        fold_worker,
        train_loop_config={"task": task, "data_ref": data_ref, "progress": progress},
        # PACK (Ray's default): a fold's workers share a node when one has room for all, else they spread
        scaling_config=ray.train.ScalingConfig(
            num_workers=task.workers, use_gpu=bool(task.gpu_share), resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=f"{run_name}/{task.folder or f'fold_{task.fold}'}",
            storage_path=parent + sep + query,
            callbacks=[forward_reports(progress)],
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


@functools.cache
def fold_trainer(job_ends_with_recipe: bool, torch_backend: bool = True, fixed_cluster: bool = False):
    """The Ray Train trainer class of a fold: TorchTrainer (torch_backend: a fold of several workers, or on a GPU),
    or else Ray Train's DataParallelTrainer without a backend: one worker on CPU needs no torch process group, and
    the fold's Train controller then does not import torch either. Both less helper actors a fold does not use, each
    a process importing Ray that Ray Train 2.60 starts for every run: its DatasetManager (a fold is given no Ray
    Datasets) and, when the driver's Ray job ends with the recipe (ray_session disconnects it: Ray then removes the
    job's placement groups itself), its PlacementGroupCleaner, which frees a fold's placement group should the
    fold's controller die while the job lives on (a session connected before the recipe, or a search's trial, keeps
    it). On a cluster this driver started itself (fixed_cluster: no autoscaler), its scaling policy asks no
    autoscaling coordinator for resources (fold_worker.fixed_cluster_policy). On 2 cores a quick run took 100 s
    before, 92 s without the helpers, 86 s without the process group too (docs/results.md, issue 45). Private API
    (Ray is pinned to 2.60.x): where these names are gone, TorchTrainer (and Ray Train's own policy)."""
    from ray.train.torch import TorchTrainer

    try:
        from ray.train.v2._internal.callbacks import DatasetsCallback
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
        from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        FixedClusterPolicy = fixed_cluster_policy()
    except ImportError:
        return TorchTrainer
    needed = ("_create_default_callbacks", "_initialize_and_run_controller")
    if not all(hasattr(TorchTrainer, n) for n in needed) or not issubclass(TorchTrainer, DataParallelTrainer):
        return TorchTrainer

    class FoldTrainer(TorchTrainer if torch_backend else DataParallelTrainer):
        def _create_default_callbacks(self):
            unused = (PlacementGroupCleanerCallback,) if job_ends_with_recipe else ()
            unused += () if self.datasets else (DatasetsCallback,)
            return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]

        def _initialize_and_run_controller(self, **kwargs):
            if fixed_cluster and type(kwargs.get("scaling_policy")) is FixedScalingPolicy:
                kwargs["scaling_policy"] = FixedClusterPolicy(self.scaling_config)
            return super()._initialize_and_run_controller(**kwargs)

    return FoldTrainer


def _recover_from(place, name: str, console) -> str | None:
    """recover_from_damaged_snapshot, said on the console when it found a damaged snapshot."""
    found = recover_from_damaged_snapshot(place, name)
    if found is not None:
        console.warning(
            f"{name}: Ray Train's list of its checkpoints ({place.at(name, SNAPSHOT)}) was damaged, likely by a stop "
            f"while it was written; set aside as {SNAPSHOT}.damaged: the fold continues from its newest checkpoint "
            "that loads"
        )
    return found


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
# Train's state tracking, and the autoscaling coordinator (not on a cluster this driver started: fixed_cluster_policy).
# Controllers started at once race to create them, and the losers' creations are FAILED tasks in a healthy run's job.
TRAIN_SHARED_ACTORS = ("train_v2_state_actor", "AutoscalingCoordinator")


def _create_train_shared_actors() -> bool:
    """Creates Ray Train's shared actors the folds' controllers will use from the driver (Ray Train's own
    get-or-create functions), so that every fold's controller finds them and all folds can start at once; a
    controller that creates them costs the folds after it its start (docs/results.md). A named actor is registered
    when its creation is sent, so the folds start without waiting for the actors' processes (which took 1.8 s of a
    quick run's start on 2 cores). False when Ray no longer has these functions (private API): the folds then wait
    for the first one's (_await_train_shared_actors)."""
    try:
        from ray.train.v2._internal.state.state_actor import get_or_create_state_actor

        if not started_ray_here():  # Ray Data's module: 0.6 s of imports where its actor is not needed
            from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
                get_or_create_autoscaling_coordinator,
            )

            get_or_create_autoscaling_coordinator()
    except ImportError:
        return False
    if os.environ.get("RAY_TRAIN_ENABLE_STATE_TRACKING") == "1":
        get_or_create_state_actor()
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


class _EnsembleActor:
    """The ensemble. Created while the last folds train (its process, torch and transformers imported, a CUDA
    context), so that once they end only load() (each fold's best model copied from storage onto this actor's
    device) and fold_logits() remain."""

    def __init__(self):
        # imported now, used by load: BERT's classifier is the product's (another architecture's loads there)
        from transformers import AutoModelForSequenceClassification, BertForSequenceClassification  # noqa: F401

        self.device = default_device()
        if self.device.type == "cuda":
            import torch

            torch.zeros(1, device=self.device)  # the CUDA context, created now rather than after the folds
        self.folds = None

    def load(self, storage_uri: str, best_paths: list[str], precision: str, profile: str) -> None:

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

        return self.folds.fold_logits(TokenArrays(arrays["ids"], arrays["lengths"], arrays["pad_id"]))


@contextmanager
def ray_session() -> Iterator[None]:
    """Around a recipe: Ray is connected to (or started) inside only when not connected already, and then
    disconnected at the end, which ends the driver's Ray job (job_ends_with_recipe). Ray is not imported here: bad
    input is refused without importing Ray at all."""
    ray = sys.modules.get("ray")
    connected_before = ray is not None and ray.is_initialized()
    _sessions.append(not connected_before)
    try:
        yield
    finally:
        _sessions.pop()
        if _disconnecting:
            _disconnecting.pop().join()
        ray = sys.modules.get("ray")
        if not connected_before and ray is not None and ray.is_initialized():
            ray.shutdown()  # also ends Ray's message thread, which would print after the result otherwise


_sessions: list[bool] = []  # for each ray_session this process is in (innermost last): whether it disconnects
_disconnecting: list = []  # the thread of disconnect_early, joined at the session's end


def disconnect_early() -> None:
    """Disconnects from Ray in a thread now, once the recipe needs Ray no more, where its ray_session would at its
    end (job_ends_with_recipe): the recipe's last steps (its outputs, about 3 s on 2 cores) overlap Ray's shutdown
    (about 1.4 s, mostly waiting for the processes of a Ray this driver started to exit). The session waits for it."""
    import ray

    if job_ends_with_recipe() and ray.is_initialized() and not _disconnecting:
        _disconnecting.append(threading.Thread(target=ray.shutdown, name="ray-shutdown", daemon=True))
        _disconnecting[0].start()


def job_ends_with_recipe() -> bool:
    """Whether the driver's Ray job ends when the recipe running now does: its ray_session connected to Ray and will
    disconnect (a command, a Python call on an unconnected session); not inside a session connected before (a
    notebook's own ray.init, a search's trial) or outside any."""
    return bool(_sessions) and _sessions[-1]


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
    # fit_folds keeps the folds from racing to create its actor.
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
    if started_ray_here():
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


def started_ray_here() -> bool:
    """Whether this process started the Ray cluster it is connected to (ray.init() without an address: one machine,
    no autoscaler, nothing drained or preempted), not joined one (RAY_ADDRESS, `ray job submit`)."""
    ray = sys.modules.get("ray")
    node = getattr(ray._private.worker, "_global_node", None) if ray is not None and ray.is_initialized() else None
    return node is not None and bool(getattr(node, "head", False))


HEALTH_CHECK_S = 0.5


def connect(run: Run) -> float:
    """Joins the Ray cluster (ray start, ray job submit) or starts a local one, and checks that the folds fit it and
    that every node can write a bucket's run folder; sets (and returns) each fold worker's GPU share, run.gpu_share.
    A new run's folder is removed again when it is refused here (ConfigError)."""
    import ray

    cfg, place = run.cfg, run.place
    init_ray()
    try:
        cluster, n_models = ray.cluster_resources(), len(fold_names(cfg))
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]]
        run.cpu_share = share_of_cpus(cfg.cv, nodes, cluster.get("GPU", 0.0), n_models)
        gpu_share = place_folds(dataclasses.replace(cfg.cv, cpus_per_fold=run.cpu_share), cluster, n_models)
        if "://" in cfg.cv.storage_path:  # a local folder is this machine's; a bucket must take every node's writes
            check_nodes_can_write(cfg.cv.storage_path, place.uri)
    except ConfigError:
        if not run.resuming:
            place.fs.delete_dir(place.path)  # refused before any training: a new run leaves nothing behind
        raise
    run.gpu_share = gpu_share
    if cfg.cv.cpus_per_fold is None:
        workers = f" x {cfg.cv.workers_per_fold} workers" if cfg.cv.workers_per_fold > 1 else ""
        run.console.info(
            f"placement: {n_models} fold(s){workers} at once where they fit, {run.cpu_share:g} CPU each "
            "(cv.cpus_per_fold unset: the cluster's CPUs shared by the folds, 1 each with GPUs)",
            cpus_per_fold=run.cpu_share,
        )
    return gpu_share


def put_train_split(prep) -> Any:
    """The training split's arrays in Ray's object store, shared zero-copy by every fold's worker, and the test
    split's tokens (no labels), which each fold scores with its best model once it finished."""
    import ray

    n = prep.n_train
    soft = getattr(prep, "soft_targets", None)  # a student's (reuters_ray.recipes.distill.StudentPrepared)
    return ray.put(
        {
            "ids": prep.tokens.ids[:n],
            "lengths": prep.tokens.lengths[:n],
            "test_ids": prep.tokens.ids[n:],
            "test_lengths": prep.tokens.lengths[n:],
            "pad_id": prep.tokens.pad_id,
            "labels": prep.ds.train_labels,
            "class_weights": prep.weights,
            "label_names": prep.ds.label_names,
            "folds": prep.folds,
            **({"soft_targets": soft, "labelled": prep.labelled} if soft is not None else {}),
        }
    )


class FoldScorer:
    """The run's test logits: each fold's own, which its worker scored with its best model when it finished
    (kept_test_logits), or else (folds finished by an older version) those of the ensemble actor, named
    <run>:ensemble (the name the dashboard's Actors page shows), which loads the fold models and scores the test
    split. start() creates the actor while the last folds train when such older folds are there and it fits then
    (ensemble_fits_early: it takes no CPU, and on a GPU cluster ENSEMBLE_GPU of a GPU, which place_folds leaves free
    when folds share a card); test_logits() creates it when needed and not yet done."""

    def __init__(self, run: Run):
        self.run, self.place, self.actor = run, run.place, None
        names = fold_names(run.cfg)
        fits = ensemble_fits_early(run.cfg.cv, cluster_resources(), run.gpu_share, len(names))
        self.early = fits and self._older_folds(names)

    def _older_folds(self, names: list[str]) -> bool:
        """Whether a fold finished by a previous run kept no test logits."""
        n_test = len(self.run.prep.tokens) - self.run.prep.n_train
        done = finished_folds(self.place, names)
        paths = [f"{self.place.at(names[k], folder)}/best" for k, folder in done.items()]
        return any(kept_test_logits(self.place.fs, [p], n_test) is None for p in paths)

    def start(self) -> None:
        """Creates the actor (unless done): while folds train only when ensemble_fits_early said so."""
        if self.actor is None and self.early:
            self._create()

    def _create(self) -> None:
        import ray

        gpus = ENSEMBLE_GPU if ray.cluster_resources().get("GPU", 0) > 0 else 0
        actor_cls = ray.remote(num_cpus=0, num_gpus=gpus)(_EnsembleActor)
        # DEFAULT: not in the placement group of whatever runs this driver (a search's trial), which holds no room
        self.actor = actor_cls.options(name=f"{self.place.name}:ensemble", scheduling_strategy="DEFAULT").remote()

    def test_logits(self, best_paths: list[str]) -> np.ndarray:
        """[folds, N, K] test logits of the fold models at `best_paths` (in storage): the folds' own when every fold
        kept them, else the ensemble actor's."""
        import ray

        cfg, prep = self.run.cfg, self.run.prep
        n = prep.n_train
        kept = kept_test_logits(self.place.fs, best_paths, len(prep.tokens) - n)
        if kept is not None:
            return kept
        if self.actor is None:
            self._create()
        test = {"ids": prep.tokens.ids[n:], "lengths": prep.tokens.lengths[n:], "pad_id": prep.tokens.pad_id}
        ray.get(self.actor.load.remote(self.place.uri, best_paths, cfg.train.precision, cfg.train.profile))
        return ray.get(self.actor.fold_logits.remote(ray.put(test)))

    def close(self) -> None:
        import ray

        if self.actor is not None:
            ray.kill(self.actor)
            self.actor = None


def cluster_resources() -> dict[str, float]:
    import ray

    return ray.cluster_resources()


def cluster_record() -> dict[str, Any]:
    """The cluster's CPUs and GPUs and the run's job id (its job in the dashboard and `ray list`)."""
    import ray

    resources = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
    return {**resources, "job_id": ray.get_runtime_context().get_job_id()}


def fit_folds(run: Run, train_ref, control=None, started=None):
    """Fits the unfinished folds at once (a thread per fold waits on its TorchTrainer) while printing their epoch
    rows; returns each fold's last checkpoint folder. `started` (a callable) is called once every unfinished fold has
    reported an epoch (none waits for room any more). A search's trial passes `control` (TrialControl): its folds go
    past epoch e only once control.allowed >= e, and once control.stop is set they stop after their current epoch,
    as if interrupted, and None is returned. Raises RuntimeError naming the folds that failed, once the others are
    done (their results are kept: the rerun resumes only what failed)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cfg, place, console = run.cfg, run.place, run.console
    names = fold_names(cfg)
    recover = {k: _recover_from(place, name, console) for k, name in enumerate(names)}  # may mark a fold finished
    folders = finished_folds(place, names)
    # On the driver's node, as Ray Train attaches each fold's controller: the driver lives only as long as that node
    # does, and elsewhere a lost node would take the folds' reports with it. Hard: a soft preference was seen
    # spilled to another node (no CPU asked, so the driver's node always has room).
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    progress = ray.remote(num_cpus=0)(Progress).options(name=f"{place.name}:progress", scheduling_strategy=here)
    progress = progress.remote()
    if control is not None:
        progress.allow.remote(0)  # gated: each fold waits after its first epoch for the trial's next round
    console.expected = {k for k in range(len(names)) if k not in folders}
    # the dashboard's live metrics: a search's trial is tagged trial=trial_<i>, run=<search> (its storage folder)
    search = cfg.cv.storage_path.rstrip("/").rsplit("/", 1)[-1] if control is not None else ""
    console.listeners.append(live := LiveMetrics(search or place.name, place.name if control is not None else ""))
    all_at_once = not console.expected or _create_train_shared_actors()
    futures = {}
    try:
        for k in sorted(console.expected):
            task = FoldTask(
                _worker_config(cfg),
                k,
                run.gpu_share,
                run.cpu_share,
                uuid.uuid4().hex[:12],
                names[k],
                cfg.cv.workers_per_fold,
                recover[k],
            )
            futures[in_thread(f"fold-{k}", _fit_fold, task, [train_ref], place.uri, progress)] = k
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
    console.listeners.remove(live)
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
    if own_ray_lost():
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


def own_ray_lost() -> bool:
    """Whether the local Ray this driver started has lost one of its processes: a signal sent to the whole process
    group (`timeout`, a batch scheduler) reaches them too, and every call into Ray would then wait out its own
    timeouts (a minute for the GCS) before the command could end."""
    import ray

    return started_ray_here() and bool(ray._private.worker._global_node.dead_processes())


def _await_folds(futures: dict, folders: dict, place, names, progress, console, control, started):
    """fit_folds' wait on the folds' fits, printing their epoch rows; each finished fold marked in storage.
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
        for row in ray.get(progress.take.remote(POLL_S)):
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
                mark_finished(place, names[k], folder)
            else:
                unfinished.add(k)
    return errors, unfinished, stopping


# How long the driver's wait on the folds waits for epoch rows before it looks whether a fold's fit returned: about
# half of it is how long after its last fold the run goes on (it was 1 s; docs/results.md, issue 45).
POLL_S = 0.2


# Ray records an actor task's end from the actor's own process, in batches about once a second (task events): an
# actor terminated within that time after answering a call can leave the call recorded as FAILED (WORKER_DIED), as
# once seen in the search's test. Seconds waited before the progress actor of a stopped trial goes.
GATE_RECORD_S = 2.0
