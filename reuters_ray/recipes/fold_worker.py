"""What the run's Ray processes other than the driver unpickle: a fold's Ray Train worker function (fold_worker) and
its task (FoldTask), the Train callback that forwards each epoch row (forward_reports, run by the fold's Train
controller), the driver's progress actor (Progress), and on a cluster the driver started the folds' scaling policy
(fixed_cluster_policy). reuters_ray.recipes.cluster builds and runs them.

Light on purpose: a fold's Train controller and the progress actor import this module to unpickle what they run, and
never use torch, transformers or scikit-learn; only the fold worker imports the fold loop, when it starts. That spared
each such process about 2 s of CPU, 3 to 5 s of a quick run's wall on 2 cores (docs/results.md, issue 45).
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from reuters_ray import rows as R
from reuters_ray.config import RunConfig
from reuters_ray.console import format_row
from reuters_ray.data.features import TokenArrays
from reuters_ray.storage import LOCAL, copy_dir


@dataclass(frozen=True)
class FoldTask:
    """Everything a fold's Ray worker needs besides the data: the run's config, which fold, where it runs."""

    run: RunConfig
    fold: int
    gpu_share: float  # of one GPU for each worker (1.0 = a whole one; 0 on CPU); workers sharing a card get a part
    cpus: float  # for each worker
    attempt: str  # new with each fit() of the fold, kept when Ray Train restarts a dead worker
    folder: str = ""  # its Ray Train run's folder in the run (fold_names); default fold_<fold>
    workers: int = 1  # data-parallel Ray Train workers (cv.workers_per_fold)
    # Ray Train's snapshot of the fold was damaged (place.recover_from_damaged_snapshot): its newest checkpoint folder
    recover_from: str | None = None


def fold_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: one fold's training loop (or one worker's share of it), each epoch (and rank 0's
    checkpoint) reported into Ray storage."""
    started_at = time.time()  # against the driver's clock: how long Ray took to start this worker
    import ray
    import ray.train
    import ray.train.torch

    from reuters_ray.fold.train import FoldData, train_fold  # torch and transformers: in the worker alone

    task: FoldTask = config["task"]
    rank = ray.train.get_context().get_world_rank()
    arrays = ray.get(config["data_ref"][0])  # numpy arrays come back zero-copy from the object store
    train_idx, val_idx = arrays["folds"][task.fold]
    tokens = TokenArrays(arrays["ids"], arrays["lengths"], arrays["pad_id"])
    data = FoldData(
        tokens,
        arrays["labels"],
        train_idx,
        val_idx,
        arrays["class_weights"],
        arrays["label_names"],
        soft_targets=arrays.get("soft_targets"),
        labelled=arrays.get("labelled"),  # a student's
        test_tokens=TokenArrays(arrays["test_ids"], arrays["test_lengths"], arrays["pad_id"]),
    )
    if rank == 0:
        print(format_row(), flush=True)  # the epoch table in the worker's log too (dashboard, Ray's log files)
    stop = _watch_stop(config["progress"]) if rank == 0 else None  # rank 0 asks; train_fold tells the others
    last_report = [time.monotonic()]

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> bool:
        """Reports the epoch into Ray storage (every worker must; rank 0's row and checkpoint are the ones
        registered); True when the driver asks the fold to stop (a search ended it): rank 0 asks, train_fold tells
        the others."""
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(
            {**metrics, R.WORKER_STARTED_AT: started_at}, checkpoint=checkpoint, checkpoint_upload_fn=_persist
        )
        last_report[0] = time.monotonic()
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
        elif task.recover_from is not None:  # Ray's list of the fold's checkpoints was lost: the folders remain
            resume = resume_candidates(ray.train.get_context().get_storage().storage_filesystem, task.recover_from, tmp)
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
    # Ray Train kills the fold's synchronization actor (and this worker) within a second of the fold's end: a call
    # whose end its process had not yet sent to Ray (once every task_events_report_interval) would be listed FAILED
    # in a healthy run's job, as the last report's barrier once was (test_cv).
    time.sleep(max(0.0, last_report[0] + task_events_interval_s() + 0.2 - time.monotonic()))


def task_events_interval_s() -> float:
    """How often a Ray process sends its tasks' ends to Ray's GCS: Ray's task_events_report_interval_ms (1000 unless
    its environment variable says otherwise), in seconds."""
    return float(os.environ.get("RAY_task_events_report_interval_ms", "1000")) / 1000


STOP_POLL_S = 0.5  # how often a fold's rank 0 asks whether its driver was stopped


def _persist(checkpoint, name: str):
    """Ray Train's checkpoint upload (report's checkpoint_upload_fn): into local storage on the same filesystem the
    worker's checkpoint folder is moved (a rename) instead of copied, which on a small machine saved about a second
    of CPU per checkpoint of MiniLM (docs/results.md, issue 45); anywhere else (a bucket, another filesystem)
    Ray's own copy. Returns the persisted checkpoint."""
    import ray.train

    storage = ray.train.get_context().get_storage()
    if isinstance(storage.storage_filesystem, pafs.LocalFileSystem):
        destination = storage.build_checkpoint_path_from_name(name)
        try:
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            os.rename(checkpoint.path, destination)
            return ray.train.Checkpoint(destination, filesystem=storage.storage_filesystem)
        except OSError:  # another filesystem (EXDEV) or a name taken: copy as Ray does
            pass
    return storage.persist_current_checkpoint(checkpoint, name)


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


def forward_reports(progress):
    """A Train callback (it runs on the fold's Train controller) that sends each registered epoch row to the
    driver's progress actor."""
    from ray.train import UserCallback

    class _Forward(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            progress.put.remote(R.forwarded(metrics[0]))

    return _Forward()


class Progress:
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


@functools.cache
def fixed_cluster_policy() -> type:
    """Ray Train's fixed scaling policy without its autoscaling coordinator, for the folds of a Ray cluster the driver
    started itself (`ray.init()` on one machine: no autoscaler to ask for nodes; recipes.cluster.started_ray_here).

    Ray Train 2.60's FixedScalingPolicy registers every run's resources with Ray Data's AutoscalingCoordinator, a
    detached actor (a process importing Ray Data) that passes them to the cluster's autoscaler, and each fold's
    controller waits for its answer as it starts: there a process and a wait for nothing (on 2 cores about 1.4 s of
    CPU of a quick run, docs/results.md, issue 45). Same workers, same decisions otherwise. Made on first use, as
    this module imports no Ray until it runs; a fold's Train controller unpickles it as this module's
    FixedClusterPolicy (__getattr__). Private API (Ray is pinned to 2.60.x): ImportError where its names are gone."""
    from ray.train.v2._internal.execution.scaling_policy.fixed import FixedScalingPolicy

    class FixedClusterPolicy(FixedScalingPolicy):
        def after_controller_start(self, train_run_context) -> None:
            pass

        async def before_controller_shutdown(self) -> None:
            pass

        def before_controller_abort(self) -> None:
            pass

        def _maybe_send_resource_request(self) -> None:
            pass

        def _send_resource_request(self) -> None:
            pass

    FixedClusterPolicy.__module__, FixedClusterPolicy.__qualname__ = __name__, "FixedClusterPolicy"
    return FixedClusterPolicy


def __getattr__(name: str):
    """The module's FixedClusterPolicy (fixed_cluster_policy), as pickle looks it up (PEP 562)."""
    if name == "FixedClusterPolicy":
        return fixed_cluster_policy()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
