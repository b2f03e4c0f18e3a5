"""What a run's folds ask of a Ray cluster, decided from its resources (ray.cluster_resources(), a dict): each fold
worker's share of a GPU, whether the ensemble's actor fits while the folds train, and a refusal of folds that could
never be placed. No Ray here: reuters_ray.recipes.cluster passes the cluster's resources in.
"""

from __future__ import annotations

import dataclasses
import math

from reuters_ray.errors import ConfigError

# Of a GPU, what the ensemble's actor holds: it is created while the last folds train (FoldScorer), so folds
# that share a card leave it this much.
ENSEMBLE_GPU = 0.01


def share_of_gpu(workers: int, gpus: int) -> float:
    """Each of `workers` training workers' share of `gpus` GPUs: 1 when there are enough, else an equal share, as
    many workers to a card as the busiest card takes (3 workers on 2 GPUs: 2 to a card), less ENSEMBLE_GPU on each
    card, rounded down to Ray's 1e-4 resource grain (3 on one GPU: 0.33 each); 0 without GPUs."""
    if gpus < 1:
        return 0.0
    if workers <= gpus:
        return 1.0
    per_card = -(-workers // gpus)
    return math.floor((1 - ENSEMBLE_GPU) / per_card * 1e4) / 1e4


def ensemble_fits_early(cv, cluster: dict[str, float], gpu_share: float, n_models: int | None = None) -> bool:
    """Whether the ensemble's actor (no CPU, ENSEMBLE_GPU of a GPU on a GPU cluster) fits while the folds hold
    their room: without GPUs, when the folds share cards (place_folds left each card ENSEMBLE_GPU) or when a card is
    spare. Not with cv.gpus_per_fold set, or whole cards for every fold: the actor would wait for a card, and could
    take one a restarted fold worker needs."""
    gpus = int(cluster.get("GPU", 0))
    if gpus == 0:
        return True
    workers = (n_models or cv.folds) * cv.workers_per_fold
    return cv.gpus_per_fold is None and (gpu_share < 1 or workers < gpus)


def share_of_cpus(cv, node_cpus: list[float], gpus: float, n_models: int | None = None) -> float:
    """The CPUs of each fold worker: cv.cpus_per_fold when set; unset, 1 on a cluster with GPUs (`gpus` > 0), else
    the largest share, in hundredths of a CPU, with which every worker of the n_models (default cv.folds) models fits
    the nodes at once (a node of c CPUs takes floor(c / share) workers); node_cpus: each alive node's CPUs. At least
    0.01."""
    if cv.cpus_per_fold is not None:
        return cv.cpus_per_fold
    if gpus > 0:
        return 1.0
    workers = (n_models or cv.folds) * cv.workers_per_fold

    def fits(share: float) -> bool:
        return sum(int((c + 1e-9) // share) for c in node_cpus) >= workers

    shares = {math.floor(c / k * 100) / 100 for c in node_cpus for k in range(1, workers + 1)}
    return max([s for s in shares if s > 0 and fits(s)], default=0.01)


def place_folds(cv, cluster: dict[str, float], n_models: int | None = None) -> float:
    """The GPU share of each fold worker on a cluster with resources `cluster` (ray.cluster_resources()).

    cv.gpus_per_fold unset: a whole GPU per worker when there are enough, else a share (share_of_gpu) so the folds
    share them and run at once (on one H100 that pays the minute of fold start-up once, not per fold:
    docs/results.md), 0 without GPUs; a fold has cv.workers_per_fold workers. n_models: the models trained at once,
    when not cv.folds (a student run: 1). Raises ConfigError when a fold could never be placed (it would wait forever); folds that fit
    only one after another queue."""
    gpus, workers = cv.gpus_per_fold, cv.workers_per_fold
    have_gpu, have_cpu = cluster.get("GPU", 0), cluster.get("CPU", 0)
    if cv.cpus_per_fold is None:  # recipes.cluster.connect passes its share (of each node); here one node's
        cv = dataclasses.replace(cv, cpus_per_fold=share_of_cpus(cv, [have_cpu], have_gpu, n_models))
    if gpus is None:
        gpus = share_of_gpu((n_models or cv.folds) * workers, int(have_gpu))
    alone = {  # one worker: the messages of before cv.workers_per_fold
        "CPUs": f"cv.cpus_per_fold={cv.cpus_per_fold} does not fit this Ray cluster's {have_cpu:g} CPUs",
        "GPUs": f"cv.gpus_per_fold={gpus} but this Ray cluster has {have_gpu:g} GPUs",
    }
    for what, each, have in (("CPUs", cv.cpus_per_fold, have_cpu), ("GPUs", gpus, have_gpu)):
        if workers * each > have + 1e-9:
            raise ConfigError(
                alone[what]
                if workers == 1
                else f"a fold's {workers} workers (cv.workers_per_fold) need {workers * each:g} {what} ({each:g} "
                f"each: cv.{what[:3].lower()}s_per_fold) but this Ray cluster has {have:g} {what}"
            )
    return gpus
