"""The Ray CV runner end to end, as users run it: `python jobs/cv.py` in its own process, a real local Ray,
a tiny BERT on a stratified sample of 500 Reuters-18 wires, 2 folds x 2 epochs (conftest.FOLDS: the shipped tiny config
has 3; two show the same and cost a third less)."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import FOLDS, checkpoints, dashboard_get, state_list
from sklearn.metrics import accuracy_score, f1_score


def test_end_to_end_outputs_agree_with_predictions(finished_run):
    run = finished_run
    # --quiet: the result line only
    (line,) = (run.parent / "stdout.txt").read_text().splitlines()
    assert line.startswith(f"run {run.name}: accuracy ") and line.endswith(f"report: {run}/report.html")
    assert "(blend, weight " in line and "; weighted F1 of the ensemble " in line and " and the baseline " in line
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["folds"]) == FOLDS and all(
        f["best_epoch"] in (1, 2) and f["epochs_run"] == 2 for f in metrics["folds"]
    )
    assert metrics["n_test"] == 200 and len(metrics["label_names"]) == 18
    pred = pd.read_parquet(run / "predictions.parquet")
    assert len(pred) == 200 and pred["id"].is_unique
    probs = pred[[f"p_{n}" for n in metrics["label_names"]]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (np.array(metrics["label_names"])[probs.argmax(axis=1)] == pred["predicted_label"]).all()
    y, p = pred["true_label"], pred["predicted_label"]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert metrics["f1_weighted"] == pytest.approx(f1_score(y, p, average="weighted", zero_division=0))
    assert metrics["f1_macro"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    cm = pd.read_csv(run / "confusion_matrix.csv", index_col=0)
    assert cm.to_numpy().sum() == 200 and np.trace(cm.to_numpy()) == round(metrics["accuracy"] * 200)
    assert pd.read_csv(run / "per_class.csv")["support"].sum() == 200
    folds = pd.read_csv(run / "folds.csv")
    assert folds["fold"].tolist() == list(range(FOLDS))
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["name"] == "tiny-bert-random"
    steps = [s["step"] for s in json.loads((run / "provenance.json").read_text())["steps"]]
    assert steps == ["filter_rare_classes", "clean_texts", "drop_short_texts", "subsample"]
    # out of fold: every training row once, scored by the fold that validated on it (fold_assignment.json)
    oof = pd.read_parquet(run / "oof_predictions.parquet")
    assignment = json.loads((run / "fold_assignment.json").read_text())
    assert len(oof) == len(assignment) == 500 and oof["id"].is_unique and set(oof["id"]) == set(assignment)
    assert (oof["fold"] == oof["id"].map(assignment)).all()
    probs = oof[[f"p_{n}" for n in metrics["label_names"]]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    hit = oof["true_label"] == oof["predicted_label"]
    for k, f in enumerate(metrics["folds"]):  # the best model's validation accuracy, from its kept logits
        assert hit[oof["fold"] == k].mean() == pytest.approx(f["val_accuracy"])
    o = metrics["out_of_fold"]
    assert o["n"] == 500 and o["accuracy"] == pytest.approx(hit.mean())
    assert o["f1_macro"] == pytest.approx(
        f1_score(oof["true_label"], oof["predicted_label"], average="macro", zero_division=0)
    )
    assert o["folds_mean"]["accuracy"] == pytest.approx(np.mean([f["val_accuracy"] for f in metrics["folds"]]))
    for k in range(FOLDS):  # one Ray Train checkpoint per epoch, each carrying the best model
        cks = checkpoints(run, k)
        assert sorted(c["epoch"] for c in cks.values()) == [1, 2]
        assert all((run / f"fold_{k}" / name / "best" / "model.safetensors").exists() for name in cks)


def test_a_healthy_run_fails_no_ray_task_and_stores_no_pickle(ray_head, finished_run):
    """What a user watching the dashboard sees of a healthy run: no failed task in its job (folds as Tune trials
    polled a queue actor that failed four tasks a second). And nothing in storage a resume would unpickle."""
    job = json.loads((finished_run / "metrics.json").read_text())["cluster"]["job_id"]

    def listed(resource, **filters):  # the state API behind `ray list` and the dashboard, asked over REST
        return state_list(ray_head, resource, **filters)

    names = {t["name"] for t in listed("tasks", job_id=job)}
    assert {"TrainController.run", "RayTrainWorker.run_train_fn"} <= names
    # no helper actor a fold does not use (cluster.fold_trainer): a process each, about 8 s of a quick run on 2 cores
    classes = {a["class_name"] for a in listed("actors", job_id=job)}
    assert {"TrainController", "RayTrainWorker"} <= classes
    assert not classes & {"PlacementGroupCleaner", "DatasetManager"}
    # each fold scored the test split with its best model as it finished: no ensemble actor loaded them again
    assert not {n for n in names if n.startswith("_EnsembleActor")}
    assert listed("tasks", job_id=job, state="FAILED") == []
    assert listed("tasks", job_id=job, state="FINISHED") != []  # the filter filters
    assert not [p for p in finished_run.rglob("*") if p.suffix in (".pkl", ".pickle")]
    # the dashboard's Train API (Ray Train's state tracking, on for every run) lists each fold's Train run
    runs = [r for r in dashboard_get(ray_head, "/api/train/v2/runs/v1")["train_runs"] if r["job_id"] == job]
    assert sorted((r["name"], r["status"]) for r in runs) == [
        (f"{finished_run.name}/fold_{k}", "FINISHED") for k in range(FOLDS)
    ]
    # each fold's Ray node, in the fold table: the one node of this cluster
    (node,) = [n["node_id"] for n in listed("nodes", state="ALIVE")]
    folds = json.loads((finished_run / "metrics.json").read_text())["folds"]
    assert [f["node_id"] for f in folds] == [node] * FOLDS
    assert [f["node_ids"] for f in folds] == [[node]] * FOLDS
    assert f"| {node[:12]} |" in (finished_run / "report.md").read_text()  # the fold table's node(s) column


@pytest.mark.parametrize("job_ends_with_recipe", [True, False])
@pytest.mark.parametrize("torch_backend", [True, False])
def test_a_fold_trainer_starts_no_helper_a_fold_does_not_use(ray_head, tmp_path, job_ends_with_recipe, torch_backend):
    """cluster.fold_trainer: no DatasetManager (a fold is given no Ray Datasets); no placement-group cleaner when the
    job ends with the recipe (Ray removes its placement groups then); TorchTrainer (its torch process group) only
    for a fold of several workers or on a GPU. (ray_head: this process imports Ray after the tests' settings.)"""
    import ray.train
    from ray.train import BackendConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from reuters_ray.recipes.cluster import fold_trainer
    from reuters_ray.recipes.fold_worker import fold_worker

    trainer_class = fold_trainer(job_ends_with_recipe, torch_backend)
    trainer = trainer_class(
        fold_worker,
        train_loop_config={},
        scaling_config=ray.train.ScalingConfig(num_workers=1),
        run_config=ray.train.RunConfig(name="fold_0", storage_path=str(tmp_path)),
    )
    callbacks = {type(c).__name__ for c in trainer._create_default_callbacks()}
    assert {"BackendSetupCallback", "UserCallbackHandler"} <= callbacks and "DatasetsCallback" not in callbacks
    assert ("PlacementGroupCleanerCallback" in callbacks) is not job_ends_with_recipe
    assert issubclass(trainer_class, TorchTrainer) is torch_backend
    assert type(trainer.backend_config) is (TorchConfig if torch_backend else BackendConfig)


@pytest.mark.parametrize("fixed_cluster", [True, False])
def test_on_a_cluster_started_here_a_fold_asks_no_autoscaler(ray_head, tmp_path, fixed_cluster):
    """cluster.fold_trainer(fixed_cluster=True), for a cluster the driver started itself (cluster.started_ray_here:
    no autoscaler): the fold's Train controller sends Ray Data's autoscaling coordinator no resource request (Ray
    Train's FixedScalingPolicy logs each one in the controller's log) and the fold trains as before; on a joined
    cluster it does. Here: a fold of one worker running a function that does nothing, on the tests' head."""
    import os
    from pathlib import Path

    import ray
    import ray.train

    from reuters_ray.recipes.cluster import fold_trainer, started_ray_here

    port = os.environ["RAY_ADDRESS"].rsplit(":", 1)[1]  # the head's (conftest.local_cluster)
    logs = Path(f"/tmp/reuters-ray-test-{port}/session_latest/logs/train")
    before = set(logs.glob("ray-train-app-controller-*.log"))
    trainer = fold_trainer(True, False, fixed_cluster=fixed_cluster)(
        lambda: None,
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 0.1}),
        run_config=ray.train.RunConfig(name="fold_0", storage_path=str(tmp_path)),
    )
    try:
        assert trainer.fit().error is None
        assert not started_ray_here()  # joined: the tests' head was started by `ray start`
    finally:
        ray.shutdown()
    (controller,) = set(logs.glob("ray-train-app-controller-*.log")) - before
    assert ("Requesting resources" in controller.read_text()) is not fixed_cluster


def test_fold_models_load_with_transformers_alone(finished_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    metrics = json.loads((finished_run / "metrics.json").read_text())
    for k in range(FOLDS):
        folder = finished_run / "models" / f"fold_{k}"
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert [model.config.id2label[i] for i in range(18)] == metrics["label_names"]
        logits = model(**tok(["oil prices rose sharply"], return_tensors="pt")).logits
        assert logits.shape == (1, 18)


def test_another_config_under_the_same_name_is_refused(tiny_yaml, finished_run, capsys):
    from reuters_ray.cli import main  # in this process: refused before Ray, and nothing written

    before = sorted(p.name for p in finished_run.iterdir())
    args = ["cv", "--config", str(tiny_yaml), "--cv.storage_path", str(finished_run.parent), "--cv.name"]
    assert main([*args, finished_run.name, "--train.lr", "0.01"]) == 2
    assert "was made with another config (differs in train.lr)" in capsys.readouterr().err
    assert sorted(p.name for p in finished_run.iterdir()) == before


def test_a_fold_that_cannot_fit_the_cluster_is_refused(ray_head, tiny_yaml, tmp_path, capsys):
    """Refused once connected to the cluster, before any fold starts; the new run's folder is removed again. The
    driver in this process (it joins the tests' head through RAY_ADDRESS)."""
    from reuters_ray.cli import main

    assert main(["cv", "--config", str(tiny_yaml), "--cv.storage_path", str(tmp_path), "--cv.cpus_per_fold", "64"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "reuters-ray: error: cv.cpus_per_fold=64.0 does not fit this Ray cluster's 2 CPUs"
    assert list(tmp_path.iterdir()) == []


def test_folds_finished_without_test_logits_are_scored_by_the_ensemble_actor(
    ray_head, tiny_yaml, finished_run, tmp_path
):
    """Folds finished before their workers kept test logits (an older version's run, resumed): the ensemble actor
    loads their best models and scores the test split, to the same figures as the folds' own test logits."""
    import shutil
    import subprocess

    from conftest import RUN_TIMEOUT, cv_cmd

    storage = tmp_path / "runs"
    shutil.copytree(finished_run, storage / finished_run.name)
    kept = list((storage / finished_run.name).glob("fold_*/checkpoint_*/best/test_logits.safetensors"))
    assert {p.parents[2].name for p in kept} == {f"fold_{k}" for k in range(FOLDS)}
    for p in kept:
        p.unlink()
    out = subprocess.run(cv_cmd(tiny_yaml, storage) + ["--quiet"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    again = json.loads((storage / finished_run.name / "metrics.json").read_text())
    before = json.loads((finished_run / "metrics.json").read_text())
    for key in ("accuracy", "f1_weighted", "f1_macro"):
        assert again["ensemble"][key] == pytest.approx(before["ensemble"][key]) and again[key] == pytest.approx(
            before[key]
        )
    probs = [
        pd.read_parquet(r / "predictions.parquet").filter(like="p_").to_numpy()
        for r in (finished_run, storage / finished_run.name)
    ]
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)
    names = {t["name"] for t in state_list(ray_head, "tasks", job_id=again["cluster"]["job_id"])}
    assert "_EnsembleActor.fold_logits" in names and "RayTrainWorker.run_train_fn" not in names  # scored, not trained


@pytest.mark.runs
def test_a_run_stored_on_another_filesystem_copies_its_checkpoints(ray_head, tiny_yaml):
    """The fold worker's checkpoints are written in its temporary folder and moved into local storage; where the
    storage is on another filesystem (here /dev/shm's tmpfs) the move cannot be a rename and they are copied, as Ray
    Train copies them: the run finishes with every fold's checkpoints and test logits in storage."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from conftest import RUN_TIMEOUT, cv_cmd

    if not Path("/dev/shm").is_dir() or Path("/dev/shm").stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temporary folder")
    storage = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="reuters-ray-test-"))
    try:
        out = subprocess.run(
            cv_cmd(tiny_yaml, storage) + ["--quiet"], capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        (run,) = [p for p in storage.iterdir() if p.is_dir()]
        for k in range(FOLDS):
            assert len(checkpoints(run, k)) == 2  # both epochs' checkpoints, registered
            assert list((run / f"fold_{k}").glob("checkpoint_*/best/test_logits.safetensors"))
        assert json.loads((run / "metrics.json").read_text())["n_test"] == 200
    finally:
        shutil.rmtree(storage, ignore_errors=True)


@pytest.mark.runs
def test_a_fold_whose_ray_snapshot_a_stop_emptied_continues_from_its_newest_checkpoint(
    ray_head, tiny_yaml, finished_run, tmp_path
):
    """A stop while Ray Train wrote a fold's checkpoint list left it empty (seen by a new user's SIGTERM): every rerun
    failed that fold in Ray Train's controller. Now the rerun sets the list aside, says so, and the fold continues
    from its newest checkpoint folder (here epoch 1 of 2) to the end."""
    import shutil
    import subprocess

    from conftest import RUN_TIMEOUT, cv_cmd

    storage = tmp_path / "runs"
    shutil.copytree(finished_run, storage / finished_run.name)
    run = storage / finished_run.name
    cks = checkpoints(run, 1)
    newest = max(cks, key=lambda name: cks[name]["epoch"])
    shutil.rmtree(run / "fold_1" / newest)  # as if stopped before epoch 2's checkpoint: epoch 1's is the newest
    (run / "fold_1" / "fold_result.json").unlink()
    (run / "fold_1" / "checkpoint_manager_snapshot.json").write_text("")
    out = subprocess.run(cv_cmd(tiny_yaml, storage) + ["--quiet"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "fold_1: Ray Train's list of its checkpoints" in out.stderr and "set aside" in out.stderr
    assert (run / "fold_1" / "checkpoint_manager_snapshot.json.damaged").exists()
    folds = json.loads((run / "metrics.json").read_text())["folds"]
    assert folds[1]["epochs_run"] == 2 and [r["kind"] for r in folds[1]["restarts"]] == ["resumed by a new run"]
    assert json.loads((run / "fold_1" / "checkpoint_manager_snapshot.json").read_text())  # Ray's new list reads
