"""Hyperparameter search over cross-validation on Ray Tune (issue 29), on the tests' Ray head with the tiny model.

The search: 4 trials of 2 folds x 3 epochs on a table of three sections with words of their own (a tiny BERT learns
it in one epoch: validation F1 0.56 against 0.17 for a model that learns nothing), one trial at a time, drawn from
seed 11 so that trial 2 gets a learning rate that cannot learn (1e-9) and the others 0.003 (identical: ASHA then
never ends them, so the test does not depend on noise between them). Marker `search` (CI's own step, `pytest -m search`): about 5 minutes."""

import json
import os

import numpy as np
import pytest
import yaml
from conftest import dashboard_get, make_csv, state_list

from reuters_ray.cli import main

pytestmark = pytest.mark.search

SEARCH = {
    "trials": 4,
    "max_concurrent": 1,
    "seed": 11,
    "grace_epochs": 1,
    "reduction_factor": 2,
    "space": {"train.lr": {"choice": [0.003, 1.0e-9]}},
}


@pytest.fixture(scope="module")
def searched(ray_head, tmp_path_factory):
    """The search, run once through `reuters-ray tune` in this process (it joins the tests' head), then again."""
    import ray

    work = tmp_path_factory.mktemp("search")
    make_csv(work / "news.csv", n_per_class=100)  # three sections with words of their own: learnt in one epoch
    cfg = {
        "data": {"source": "table", "path": "news.csv", "text_column": "headline",
                 "label_column": "section", "min_samples": 5, "max_length": 32},
        "model": {"name": "tiny-bert-random", "hidden_dropout": 0.1},
        "train": {"lr": 0.003, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.0, "max_epochs": 3},
        "cv": {"folds": 2, "cpus_per_fold": 0.5},
    }  # fmt: skip
    (work / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    (work / "search.yaml").write_text(yaml.safe_dump(SEARCH))
    # paths relative to the folder the command runs in, as a user writes them (Tune runs each trial elsewhere)
    # tracked in MLflow's default store of this folder, written as a user would (the search's driver logs the trials)
    cmd = ["tune", "--config", "tiny.yaml", "--search", "search.yaml", "--cv.storage_path", "runs", "--track.mlflow",
           "true", "--track.uri", "sqlite:///mlflow.db", "--search-name", "s", "--quiet"]  # fmt: skip
    here = os.getcwd()
    os.chdir(work)
    ray.init(log_to_driver=False)  # joined here (RAY_ADDRESS) to name the job: the command then keeps the connection
    try:
        assert main(cmd) == 0
        job = ray.get_runtime_context().get_job_id()
        folder = work / "runs" / "s"
        before = {p: p.stat().st_mtime_ns for p in folder.glob("trial_*/**/*") if p.is_file()}
        assert main(cmd) == 0  # the same command again: every trial is done or stopped, nothing trains
        after = {p: p.stat().st_mtime_ns for p in folder.glob("trial_*/**/*") if p.is_file()}
    finally:
        os.chdir(here)
    yield folder, job, before, after, cmd
    ray.shutdown()  # before the head goes: a process still joined to a stopped head is ended by Ray with status 1


def test_the_bad_trial_is_ended_early_and_the_best_is_chosen_on_the_training_split(searched):
    folder, *_ = searched
    result = json.loads((folder / "search.json").read_text())
    rows = {r["trial"]: r for r in result["results"]}
    assert [rows[i]["train.lr"] for i in range(4)] == [0.003, 0.003, 1e-9, 0.003]  # drawn from seed 11
    # ASHA ended it at its first rung; its folds stop after the epoch they were in then (1 or 2 of 3)
    assert rows[2]["status"] == "stopped" and rows[2]["epochs"] < 3
    assert [rows[i]["status"] for i in (0, 1, 3)] == ["finished"] * 3 and all(rows[i]["epochs"] == 3 for i in (0, 1, 3))
    assert not (folder / "trial_2" / "report.md").exists() and (folder / "trial_2" / "stopped.json").exists()
    # the score, recomputed from each finished trial's own files: its folds' mean best validation weighted F1
    scores = {}
    for i in (0, 1, 3):
        folds = json.loads((folder / f"trial_{i}" / "metrics.json").read_text())["folds"]
        scores[i] = float(np.mean([f["val_f1_weighted"] for f in folds]))
        assert rows[i]["score"] == pytest.approx(scores[i])
    best = max(scores, key=lambda i: (scores[i], -i))
    assert result["best"]["trial"] == best and (folder / "best").resolve() == (folder / f"trial_{best}").resolve()
    assert rows[2]["score"] < min(scores.values())  # it was not learning
    csv = (folder / "trials.csv").read_text().splitlines()
    assert csv[0].startswith("trial,run,train.lr,status,score_mean_best_val_f1_weighted,") and len(csv) == 5
    report = (folder / "report.md").read_text()
    assert "| trial |" in report and f"Trial {best} (`trial_{best}`" in report and "of the chosen trial alone" in report
    assert (folder / "score_vs_train_lr.png").stat().st_size > 1000


def test_the_search_is_one_mlflow_run_with_a_nested_run_per_trial(searched):
    """Run twice, logged once: one run for the search (continued by the rerun, not duplicated), a nested run per
    trial with its values, its epoch rounds' scores, its folds' best validation figures as metrics and its test
    figures; the chosen trial tagged."""
    from mlflow import MlflowClient

    folder, *_ = searched
    result = json.loads((folder / "search.json").read_text())
    rows = {r["trial"]: r for r in result["results"]}
    client = MlflowClient(f"sqlite:///{folder.parent.parent / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("reuters-ray").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == "s" and parent.data.tags["reuters_ray.kind"] == "search"
    assert parent.info.status == "FINISHED" and parent.data.tags["reuters_ray.best_trial"] == str(
        result["best"]["trial"]
    )
    trials = {int(r.data.tags["reuters_ray.trial"]): r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert sorted(trials) == [0, 1, 2, 3] and len(runs) == 5
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials.values())
    for i, run in trials.items():
        assert float(run.data.params["train.lr"]) == rows[i]["train.lr"]
        assert run.data.tags["reuters_ray.status"] == rows[i]["status"]
        assert run.data.tags["reuters_ray.chosen"] == str(i == result["best"]["trial"]).lower()
        assert run.data.metrics["score_mean_best_val_f1_weighted"] == pytest.approx(rows[i]["score"])
        rounds = [m.step for m in client.get_metric_history(run.info.run_id, "score_mean_best_val_f1_weighted")]
        assert rounds[0] == 1 and max(rounds) == rows[i]["epochs"]
    for i in (0, 1, 3):  # finished: their folds as metrics, their test figures
        folds = json.loads((folder / f"trial_{i}" / "metrics.json").read_text())["folds"]
        logged = trials[i].data.metrics
        assert [logged[f"fold_{k}/val_f1_weighted"] for k in range(2)] == pytest.approx(
            [f["val_f1_weighted"] for f in folds]
        )
        assert logged["test/accuracy"] == pytest.approx(rows[i]["test"]["accuracy"])
    assert not any(k.startswith("test/") for k in trials[2].data.metrics)  # stopped: no test figures


def test_a_trial_is_a_run_folder_predict_takes_through_best(searched, capsys):
    folder, *_ = searched
    capsys.readouterr()
    assert main(["predict", "--run", str(folder / "best"), "--json", "Oil prices rose sharply"]) == 0
    answer = json.loads(capsys.readouterr().out)
    labels = json.loads((folder / "best" / "metrics.json").read_text())["label_names"]
    assert answer["label"] in labels


def test_the_search_leaves_no_failed_task_and_no_worker_behind(ray_head, searched):
    _, job, *_ = searched
    failed = state_list(ray_head, "tasks", job_id=job, state="FAILED")
    assert failed == [], [(t["name"], t.get("error_type"), t.get("error_message")) for t in failed]
    names = {t["name"] for t in state_list(ray_head, "tasks", job_id=job)}
    assert {"TrainController.run", "RayTrainWorker.run_train_fn"} <= names  # the filter filters
    ours = ("RayTrainWorker", "TrainController", "Progress", "_EnsembleActor")  # not Train's shared state actor
    alive = [
        a["class_name"] for a in state_list(ray_head, "actors", job_id=job, state="ALIVE") if a["class_name"] in ours
    ]
    assert alive == []  # the ended trial's fold workers went with it, as every finished trial's did
    assert {a["class_name"] for a in state_list(ray_head, "actors", job_id=job)} >= {"RayTrainWorker", "Progress"}
    runs = [r for r in dashboard_get(ray_head, "/api/train/v2/runs/v1")["train_runs"] if r["job_id"] == job]
    assert sorted({r["name"].split("/")[0] for r in runs}) == ["trial_0", "trial_1", "trial_2", "trial_3"]
    assert {r["status"] for r in runs} == {"FINISHED"}  # trial 2's folds too: stopped after an epoch, not killed


def test_the_rerun_trains_nothing_again(searched):
    _, _, before, after, _ = searched
    assert before and after == before


def test_a_trial_that_cannot_fit_the_cluster_is_refused_in_one_line(ray_head, searched, capsys, monkeypatch):
    folder, *_, cmd = searched
    monkeypatch.chdir(folder.parent.parent)
    other = [*cmd[:-3], "--search-name", "room", "--cv.cpus_per_fold", "2"]
    assert main(other) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        line
        == "reuters-ray: error: one trial needs 4.01 CPUs (2 folds x cv.cpus_per_fold=2.0) but this Ray cluster has 2 CPUs"
    )
