"""Several workers per fold (cv.workers_per_fold): the fold loop as two data-parallel workers (local processes joined
by gloo, as Ray Train's are; reuters_ray.fold.parallel.run_local) against the same fold trained by one; placement and the
search's room with several workers. A fold of two workers through Ray, across two nodes and with a worker killed,
is in test_cluster.py."""

import json

import numpy as np
import pytest
import torch
from test_train import fold_data

from reuters_ray import rows as R
from reuters_ray.config import CVConfig, ModelConfig, RunConfig, TrainConfig
from reuters_ray.fold.inference import predict_logits
from reuters_ray.fold.parallel import Group, run_local
from reuters_ray.fold.plan import plan_fold
from reuters_ray.fold.train import train_fold, validate
from reuters_ray.recipes.search import _trials_at_once
from reuters_ray.run.folds import summarize_fold
from reuters_ray.run.place import run_name
from reuters_ray.run.report import folds_section
from reuters_ray.run.resources import place_folds

EPOCHS = 3
METRICS = (R.TRAIN_LOSS, R.VAL_LOSS, R.VAL_ACCURACY, R.VAL_F1, R.VAL_F1_MACRO)


def config() -> RunConfig:
    # Dropout off: with it each worker draws its own masks, and one worker's figures could not be compared with
    # two's. A last batch of 200 % 16 = 8 rows; batch_size 16 split 8 + 8 over the two workers.
    return RunConfig(
        model=ModelConfig(name="tiny-bert-random", hidden_dropout=0.0, attention_dropout=0.0),
        train=TrainConfig(lr=3e-3, batch_size=16, grad_accum=1, max_epochs=EPOCHS, patience=EPOCHS),
    )


def quiet(_):
    pass


def one_worker_of_two(cfg, data, root):
    """What each of the two workers runs (in its own process): the fold undisturbed; the fold stopped after epoch 1
    and continued from that checkpoint (a worker group restarted); the undisturbed model's validation logits
    sharded over the workers and whole."""
    full = train_fold(cfg, data, root / "full", log=quiet)
    train_fold(cfg, data, root / "stopped", stop_after_epoch=1, log=quiet)  # rank 0 writes, the others wait for it
    resumed = train_fold(cfg, data, root / "resumed", resume_from=root / "stopped" / "epoch_001", log=quiet)
    cpu = torch.device("cpu")
    plan = plan_fold(cfg, len(data.train_idx), 0, cpu, 1.0, Group.current(cpu))
    sharded = validate(full.model, data, plan, cfg.train)[2]
    whole = predict_logits(full.model, data.tokens, data.val_idx, 16, "longest", cpu, "fp32")
    return {"full": full.history, "resumed": resumed.history, "equal_logits": bool(np.array_equal(sharded, whole))}


@pytest.fixture(scope="module")
def fold(reuters, minilm_tokenizer):
    # 300 wires of the six large topics, 200 train / 100 validation, 32 tokens: seconds per epoch
    return fold_data(reuters, minilm_tokenizer, 300, max_length=32)


@pytest.fixture(scope="module")
def two_workers(fold, tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    return run_local(one_worker_of_two, 2, config(), fold, root), root


def metrics(history):
    return {k: [r[k] for r in history] for k in METRICS}


def test_two_workers_make_the_updates_of_one_worker_with_the_same_batch(fold, two_workers, tmp_path):
    (rank0, rank1), _ = two_workers
    torch.set_num_threads(1)  # as each of the two workers
    try:
        one = train_fold(config(), fold, tmp_path, log=quiet).history
    finally:
        torch.set_num_threads(2)
    two = metrics(rank0["full"])
    assert metrics(rank1["full"]) == two  # the workers agree on every figure (all-reduced), so they stop together
    # Within float32 rounding: two shards of 8 rows and an all-reduced mean of their gradients sum in another order
    # than one batch of 16 (seen by hand: at most 2.7e-5 relative on the losses of a 400/200-wire fold over 4 epochs,
    # cpu-2core); a validation metric may then differ
    # by one text of the 100 at most, when an argmax is a near tie.
    for k in (R.TRAIN_LOSS, R.VAL_LOSS):
        torch.testing.assert_close(two[k], [r[k] for r in one], rtol=1e-4, atol=0.0)
    for k in (R.VAL_ACCURACY, R.VAL_F1, R.VAL_F1_MACRO):
        torch.testing.assert_close(two[k], [r[k] for r in one], rtol=0.0, atol=0.011)
    # throughput counts both workers' examples: the same 200 a epoch as the one worker's
    assert [r[R.EXAMPLES_PER_S] * r[R.TRAIN_S] for r in rank0["full"]] == pytest.approx([200.0] * EPOCHS)
    last = rank0["full"][-1]
    assert last[R.WORKERS] == 2 and len(set(last[R.WORKER_PIDS])) == 2 and last[R.WORKER_NODE_IDS] == [None, None]
    assert one[-1][R.WORKERS] == 1 and one[-1][R.WORKER_PIDS] == [one[-1][R.WORKER + "pid"]]


def test_the_validation_sharded_over_two_workers_gives_the_one_worker_logits(two_workers):
    (rank0, rank1), _ = two_workers
    assert rank0["equal_logits"] and rank1["equal_logits"]  # bit for bit: the same rows in the same batches


def test_a_two_worker_fold_restarted_from_its_checkpoint_ends_as_the_undisturbed_one(two_workers):
    (rank0, _), root = two_workers
    assert metrics(rank0["resumed"]) == metrics(rank0["full"])  # exactly: batches and dropout seeds per epoch
    assert [r[R.RESTARTS] for r in rank0["resumed"]] == [0, 1, 1]
    # only rank 0 wrote checkpoints, into the folder all the workers were given
    assert sorted(p.name for p in (root / "full").iterdir()) == [f"epoch_{e:03d}" for e in range(1, EPOCHS + 1)]


def test_a_checkpoint_of_two_workers_resumes_with_one_and_the_fold_records_both(fold, two_workers, tmp_path):
    (rank0, _), root = two_workers
    said = []
    res = train_fold(config(), fold, tmp_path, resume_from=root / "stopped" / "epoch_001", log=said.append)
    assert [r[R.EPOCH] for r in res.history] == [1, 2, 3] and metrics(res.history[:1]) == metrics(rank0["full"][:1])
    assert [r[R.WORKERS] for r in res.history] == [2, 1, 1]
    assert said[0].endswith("after epoch 1 with 1 worker(s) instead of 2")
    progress = json.loads((tmp_path / "epoch_003" / "progress.json").read_text())
    summary = summarize_fold(0, progress, patience=EPOCHS)
    assert (summary["workers"], summary["worker_counts"]) == (1, [2, 1])
    (restart,) = summary["restarts"]
    assert (restart["kind"], restart["after_epoch"], restart["workers"]) == ("resumed by a new run", 1, [2, 1])
    run = {
        "metrics": {"folds": [{**summary, "test_f1_weighted": 0.5}], "f1_weighted": 0.5},
        "config": config().to_dict(),
    }
    table = folds_section(run)[1][0]
    assert table.rows[0][table.headers.index("workers")] == "2, 1"
    for k in (R.TRAIN_LOSS, R.VAL_LOSS):  # the same updates from there on, as above
        torch.testing.assert_close(metrics(res.history)[k], metrics(rank0["full"])[k], rtol=1e-4, atol=0.0)


def test_workers_hold_a_gpu_share_each_and_a_fold_that_never_fits_is_refused():
    two = CVConfig(folds=3, workers_per_fold=2)
    assert place_folds(two, {"CPU": 16, "GPU": 1}) == 0.165  # six workers on one card, 0.01 left for the ensemble
    assert place_folds(two, {"CPU": 16, "GPU": 8}) == 1.0
    assert place_folds(CVConfig(folds=3, workers_per_fold=2, cpus_per_fold=0.5), {"CPU": 1}) == 0.0  # they queue
    from reuters_ray.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        place_folds(CVConfig(workers_per_fold=3, cpus_per_fold=1.0), {"CPU": 2})
    assert str(e.value) == (
        "a fold's 3 workers (cv.workers_per_fold) need 3 CPUs (1 each: cv.cpus_per_fold) but this Ray cluster has 2 CPUs"
    )
    with pytest.raises(ConfigError, match=r"a fold's 2 workers .* need 2 GPUs \(1 each: cv.gpus_per_fold\)"):
        place_folds(CVConfig(workers_per_fold=2, gpus_per_fold=1.0), {"CPU": 16, "GPU": 1})
    base = RunConfig(cv=CVConfig(folds=2, workers_per_fold=2, cpus_per_fold=1.0))
    assert _trials_at_once(base, {"CPU": 8}, None) == 1  # a trial holds 2 folds x 2 workers x 1 CPU
    with pytest.raises(ConfigError, match=r"one trial needs 4.01 CPUs \(2 folds x 2 workers x cv.cpus_per_fold=1.0"):
        _trials_at_once(base, {"CPU": 2}, None)


def test_the_number_of_workers_is_free_to_change_when_a_run_resumes():
    assert run_name(RunConfig(cv=CVConfig(workers_per_fold=4))) == run_name(RunConfig())
