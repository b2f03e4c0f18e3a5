"""The Ray driver's phases that need no Ray: placing folds on a cluster, resuming, summarising a fold."""

import pytest

from reuters_ray.config import CVConfig, DataConfig, RunConfig, TrainConfig
from reuters_ray.errors import ConfigError
from reuters_ray.run.folds import summarize_fold
from reuters_ray.run.place import RESUME_FREE_KEYS, check_resumable, result_config, run_name
from reuters_ray.run.resources import ensemble_fits_early, place_folds
from reuters_ray.storage import LOCAL, write_atomic


def test_folds_share_one_gpu_take_whole_ones_or_run_on_cpu():
    # folds sharing a card leave the ensemble's actor its 0.01 (it starts while they train)
    assert place_folds(CVConfig(folds=3), {"CPU": 16, "GPU": 1}) == 0.33
    assert place_folds(CVConfig(folds=3), {"CPU": 16, "GPU": 4}) == 1.0  # a spare card: the actor's
    assert place_folds(CVConfig(folds=4), {"CPU": 16, "GPU": 2}) == 0.495
    assert place_folds(CVConfig(folds=3), {"CPU": 16, "GPU": 2}) == 0.495  # two on one card, all three at once
    assert place_folds(CVConfig(folds=3), {"CPU": 2}) == 0.0
    assert place_folds(CVConfig(folds=3, gpus_per_fold=1), {"CPU": 16, "GPU": 1}) == 1.0  # one after another


def test_the_ensemble_starts_while_folds_train_only_where_it_takes_no_room_a_fold_needs():
    one_gpu, cv = {"CPU": 16, "GPU": 1}, CVConfig(folds=3)
    assert ensemble_fits_early(cv, {"CPU": 2}, 0.0)  # no CPU asked
    assert ensemble_fits_early(cv, one_gpu, place_folds(cv, one_gpu))  # the card's 0.01 left by the folds
    assert ensemble_fits_early(cv, {"CPU": 16, "GPU": 4}, 1.0)  # a spare card
    assert not ensemble_fits_early(cv, {"CPU": 16, "GPU": 3}, 1.0)  # whole cards, none spare: after the folds
    assert not ensemble_fits_early(CVConfig(folds=3, gpus_per_fold=0.25), one_gpu, 0.25)  # the user's shares
    assert not ensemble_fits_early(cv, one_gpu, 1.0, n_models=1)  # a student on the one card


def test_folds_share_the_cpus_when_cpus_per_fold_is_unset():
    """Unset: every fold worker at once with the largest share of the nodes' CPUs that fits them all; 1 with GPUs."""
    from reuters_ray.run.resources import share_of_cpus

    three = CVConfig(folds=3)
    assert share_of_cpus(three, [2.0], 0) == 0.66  # the quick run on 2 cores: 3 x 0.66 <= 2
    assert share_of_cpus(three, [16.0], 0) == 5.33
    assert share_of_cpus(three, [8.0, 8.0], 0) == 4.0  # 5.33 would put one fold on each node and leave the third
    assert share_of_cpus(CVConfig(folds=3, workers_per_fold=2), [2.0], 0) == 0.33
    assert share_of_cpus(three, [2.0], 0, n_models=1) == 2.0  # a student, alone
    assert share_of_cpus(three, [0.0], 0) == 0.01  # no CPU at all: the smallest share, which place_folds refuses
    assert share_of_cpus(three, [16.0], 1) == 1.0  # GPUs do the work
    assert share_of_cpus(CVConfig(folds=3, cpus_per_fold=0.5), [16.0], 0) == 0.5  # set: as set
    assert place_folds(three, {"CPU": 2}) == 0.0  # unset fits: 3 at once


def test_a_fold_that_could_never_be_placed_is_refused():
    with pytest.raises(ConfigError, match=r"cv.cpus_per_fold=4.0 does not fit this Ray cluster's 2 CPUs"):
        place_folds(CVConfig(cpus_per_fold=4.0), {"CPU": 2})
    with pytest.raises(ConfigError, match=r"cv.gpus_per_fold=2.0 but this Ray cluster has 1 GPUs"):
        place_folds(CVConfig(gpus_per_fold=2.0), {"CPU": 16, "GPU": 1})


def test_settings_free_on_resume_keep_the_run_name_and_the_rest_change_it():
    base = RunConfig()
    free = RunConfig(train=TrainConfig(eval_batch_size=64, keep_checkpoints=2, checkpoint_every=5),
                     cv=CVConfig(baseline=False, max_failures=0, cpus_per_fold=2))  # fmt: skip
    assert run_name(free) == run_name(base) and result_config(free.to_dict()) == result_config(base.to_dict())
    assert run_name(RunConfig(train=TrainConfig(lr=1e-4))) != run_name(base)
    assert "baseline" in RESUME_FREE_KEYS["cv"] and "lr" not in RESUME_FREE_KEYS["train"]


def test_a_run_folder_of_another_config_is_refused_with_the_keys_that_differ(tmp_path):
    import yaml

    run = str(tmp_path / "r")
    check_resumable(LOCAL, run, RunConfig(), "r")  # nothing there yet
    write_atomic(f"{run}/config.yaml", yaml.safe_dump(RunConfig().to_dict()))
    check_resumable(LOCAL, run, RunConfig(cv=CVConfig(baseline=False)), "r")  # free to differ
    with pytest.raises(
        ConfigError, match=r"run 'r' in runs was made with another config \(differs in train.lr, train.seed\)"
    ):
        check_resumable(LOCAL, run, RunConfig(train=TrainConfig(lr=1.0, seed=1)), "r")
    # a run made before data.task, data.split, data.label_delimiter, train.monitor and the thresholds' settings existed
    old = RunConfig().to_dict()
    for section, key in [("data", "task"), ("data", "split"), ("data", "label_delimiter"), ("train", "monitor"),
                         ("cv", "threshold_min_positives"), ("cv", "at_least_one")]:  # fmt: skip
        del old[section][key]
    write_atomic(f"{run}/config.yaml", yaml.safe_dump(old))
    assert check_resumable(LOCAL, run, RunConfig(), "r")  # resumed, its derived name unchanged too
    assert result_config(old) == result_config(RunConfig().to_dict())
    with pytest.raises(ConfigError, match=r"differs in data.task"):
        check_resumable(LOCAL, run, RunConfig(data=DataConfig(task="multi")), "r")


def row(epoch, f1, **extra):
    return {"epoch": epoch, "val/f1_weighted": f1, "val/accuracy": f1 + 0.01, "val/f1_macro": f1 - 0.1,
            "time/train_s": 2.0, "time/val_s": 0.5, "time/checkpoint_s": 0.25, "time/epoch_s": 2.75, "time/report_s": 0.1,
            "train/examples_per_s": 100.0, "train/tokens_per_s": 9000.0, "memory/peak_gib": None,
            "worker/device": "cpu (1 thread)", "worker/host": "h", **extra}  # fmt: skip


def test_a_fold_summary_from_its_last_checkpoint():
    progress = {"finished": True, "epoch": 3, "history": [row(1, 0.5, **{"time/setup_s": 4.0}), row(2, 0.7), row(3, 0.6)],
                "early_stopping": {"best": 0.7, "best_epoch": 2, "bad_epochs": 1},
                "setup": {"precision": "fp32", "gradient_checkpointing": False},
                "restarts": [{"after_epoch": 1, "kind": "worker restart"}]}  # fmt: skip
    s = summarize_fold(1, progress, patience=1)
    assert (s["fold"], s["best_epoch"], s["val_f1_weighted"], s["epochs_run"], s["stopped_early"]) == (
        1,
        2,
        0.7,
        3,
        True,
    )
    assert s["val_accuracy"] == pytest.approx(0.71) and s["val_f1_macro"] == pytest.approx(0.6)
    assert s["val_monitor"] == 0.7  # what early stopping followed: a search's trial is scored on it
    assert (s["setup_s"], s["train_s"], s["val_s"], s["checkpoint_s"]) == (4.0, 6.0, 1.5, 0.75)
    assert s["wall_s"] == pytest.approx(4.0 + 3 * 2.75 + 3 * 0.1) and s["device"] == "cpu (1 thread)"
    assert s["precision"] == "fp32" and s["restarts"] == progress["restarts"]
    assert summarize_fold(1, progress, patience=2)["stopped_early"] is False
    with pytest.raises(RuntimeError, match="fold 0's last checkpoint is not finished"):
        summarize_fold(0, {**progress, "finished": False}, patience=1)


def test_resume_tries_the_restored_checkpoint_then_older_ones_fetched_one_at_a_time(tmp_path):
    """What a fold's worker gets to resume from when Ray restores checkpoint B: B, then A (older); never C, a newer
    folder Ray did not register (an upload the driver's death cut short). Each copy is made only when asked for, so
    a good latest checkpoint costs one download."""
    from reuters_ray.recipes.fold_worker import resume_candidates

    fold = tmp_path / "fold_0"
    for name in (
        "checkpoint_2026-01-01_00-00-01.1",
        "checkpoint_2026-01-01_00-00-02.1",
        "checkpoint_2026-01-01_00-00-03.1",
    ):
        (fold / name).mkdir(parents=True)
        (fold / name / "progress.json").write_text(name)
    (fold / "checkpoint_manager_snapshot.json").write_text("{}")  # a file beside them, not a candidate
    local = tmp_path / "local"
    local.mkdir()
    found = resume_candidates(LOCAL, str(fold / "checkpoint_2026-01-01_00-00-02.1"), str(local))
    first = next(found)
    assert (first / "progress.json").read_text() == "checkpoint_2026-01-01_00-00-02.1"
    assert sorted(p.name for p in local.iterdir()) == ["resume_0"]  # the older one not fetched yet
    assert [(p / "progress.json").read_text() for p in found] == ["checkpoint_2026-01-01_00-00-01.1"]


def test_kept_test_logits_are_every_folds_or_none(tmp_path):
    """The run's test logits come from the folds' best/ folders only when every fold kept them for this test split;
    otherwise (a fold finished by an older version, another test split) None: the ensemble actor scores."""
    import numpy as np
    from transformers import BertConfig

    from reuters_ray.fold.checkpoint import save_best
    from reuters_ray.run.folds import kept_test_logits

    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(3)]
    config, weights = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2), {}
    best = []
    for k, z in enumerate(logits):
        best.append(str(tmp_path / f"fold_{k}" / "best"))
        save_best(tmp_path / f"fold_{k}" / "best", config, weights, test_logits=z)
    np.testing.assert_array_equal(kept_test_logits(LOCAL, best, 5), np.stack(logits))
    assert kept_test_logits(LOCAL, best, 6) is None  # another test split
    save_best(tmp_path / "old" / "best", config, weights)  # a fold finished without them
    assert kept_test_logits(LOCAL, [*best[:2], str(tmp_path / "old" / "best")], 5) is None


def test_a_damaged_ray_snapshot_is_set_aside_and_the_newest_checkpoint_named(tmp_path):
    """Ray Train writes a fold's checkpoint list in place; a stop during that write left it empty, and every rerun
    failed the fold. It is set aside, and the fold continues from its newest checkpoint folder, or counts as finished
    when that one is a finished fold's."""
    import json

    from reuters_ray.run.place import SNAPSHOT, RunPlace, finished_folds, recover_from_damaged_snapshot

    place = RunPlace("run", LOCAL, str(tmp_path / "run"), str(tmp_path / "run"))
    fold = tmp_path / "run" / "fold_1"
    for name, finished in (("checkpoint_2026-12-06_23-29-01.1", False), ("checkpoint_2026-12-06_23-29-02.5", False)):
        (fold / name).mkdir(parents=True)
        (fold / name / "progress.json").write_text(json.dumps({"finished": finished}))
    assert recover_from_damaged_snapshot(place, "fold_1") is None  # no snapshot at all: Ray starts the fold
    (fold / SNAPSHOT).write_text('{"checkpoints": []}')
    assert recover_from_damaged_snapshot(place, "fold_1") is None  # it reads: Ray's own restore
    (fold / SNAPSHOT).write_text("")  # the stop's leftover
    assert recover_from_damaged_snapshot(place, "fold_1") == str(fold / "checkpoint_2026-12-06_23-29-02.5")
    assert not (fold / SNAPSHOT).exists() and (fold / f"{SNAPSHOT}.damaged").read_text() == ""
    # the newest checkpoint finished the fold: counted finished, nothing to continue
    (fold / "checkpoint_2026-12-06_23-29-02.5" / "progress.json").write_text(json.dumps({"finished": True}))
    (fold / SNAPSHOT).write_text('{"checkpoints": [')
    assert recover_from_damaged_snapshot(place, "fold_1") is None
    assert finished_folds(place, ["fold_0", "fold_1"]) == {1: "checkpoint_2026-12-06_23-29-02.5"}


def test_the_job_ends_with_the_recipe_only_inside_a_session_that_disconnects():
    import sys

    from reuters_ray.recipes.cluster import job_ends_with_recipe, ray_session

    ray = sys.modules.get("ray")
    connected = ray is not None and ray.is_initialized()  # a session connected before: its job outlives the recipe
    assert not job_ends_with_recipe()
    with ray_session():
        assert job_ends_with_recipe() is not connected
    assert not job_ends_with_recipe()


@pytest.mark.slow
def test_a_driver_that_starts_its_own_ray_knows_it_and_one_that_joins_does_not():
    """cluster.started_ray_here: True once init_ray started a local cluster (no RAY_ADDRESS: no autoscaler, so the
    folds ask none and get no preemption watcher), False before. (The joined case: test_cv's fold trainer test.)"""
    import os
    import subprocess
    import sys

    code = (
        "import os; from reuters_ray.recipes.cluster import init_ray, started_ray_here; before = started_ray_here(); "
        "init_ray(); print(before, started_ray_here(), os.environ['RAY_TRAIN_ENABLE_PREEMPTION_WATCHER'])"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-3:] == ["False", "True", "0"]
