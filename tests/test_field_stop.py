"""Inputs from the field, part 3 (issue 41): stopping a long command. Ctrl-C (SIGINT to the terminal's process
group), `timeout` and `kill` (SIGTERM to the process) end `cv`, `distill` and `tune` with the shell's status (130,
143), one line "stopped; run the same command to continue" and nothing else (no traceback, no Ray Tune hint), the
folds stopped after their current step (not trained on to their end), nothing half-written; the same command then
continues, and a run ends exactly as the undisturbed one. (`serve`: test_serve.py, test_serve_alone.py.) Every run
here joins the tests' Ray head, as under `ray job submit`; marker `runs` (CI's last step), about 4 minutes."""

import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest
import yaml
from conftest import BIN, RUN_TIMEOUT, cv_cmd, make_csv, run_dir_of, tiny_config

pytestmark = pytest.mark.runs

STOPPED = "reuters-ray: stopped; run the same command to continue"
EPOCHS = 5


def _start(cmd, tmp_path, name, cwd=None):
    out = open(tmp_path / f"{name}.out", "w+")
    err = open(tmp_path / f"{name}.err", "w+")
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, start_new_session=True)  # its own process group
    return proc, out, err


def _wait_for(proc, seen, what, timeout=300):
    deadline = time.monotonic() + timeout
    while not seen():
        assert proc.poll() is None, f"ended (status {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


def _stopped_cleanly(proc, err, status):
    proc.wait(timeout=120)
    said = open(err.name).read()
    assert proc.returncode == status, said[-3000:]
    assert said.rstrip("\n").splitlines()[-1] == STOPPED, said[-3000:]
    for foreign in ("Traceback", "Tuner.restore", "Resume experiment", "KeyboardInterrupt", "SIGTERM", "*** "):
        assert foreign not in said, said[-3000:]


def _snapshot_epochs(folder) -> list[int]:
    """The epochs of the checkpoints Ray Train registered in a Train run's folder (fold_<k>, student)."""
    path = folder / "checkpoint_manager_snapshot.json"
    try:
        snap = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):  # not there yet, or being written
        return []
    return sorted(c["metrics"]["epoch"] for c in snap.get("checkpoint_results", []))


@pytest.fixture(scope="module")
def config(reuters_dir, tmp_path_factory):
    cfg = tiny_config(reuters_dir, folds=2)
    cfg["train"]["max_epochs"] = EPOCHS
    # the quick run's sample: one of its 300 test wires is also a training wire (the test_unseen figures)
    cfg["data"].update(train_sample=750, test_sample=300, max_length=32)
    path = tmp_path_factory.mktemp("stop") / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def undisturbed(ray_head, config, tmp_path_factory):
    storage = tmp_path_factory.mktemp("undisturbed")
    out = subprocess.run(cv_cmd(config, storage) + ["--quiet"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return run_dir_of(storage)


def test_ctrl_c_stops_a_run_after_the_folds_step_and_the_same_command_ends_it_as_undisturbed(
    ray_head, config, undisturbed, tmp_path
):
    storage = tmp_path / "runs"
    cmd = cv_cmd(config, storage)
    proc, out, err = _start(cmd, tmp_path, "stopped")
    try:
        # once fold 0 has an epoch registered, Ctrl-C in the terminal: SIGINT to the command's process group
        _wait_for(proc, lambda: storage.exists() and any(_snapshot_epochs(p) for p in storage.glob("*/fold_0")),
                  "epoch registered")  # fmt: skip
        os.killpg(proc.pid, signal.SIGINT)
        _stopped_cleanly(proc, err, 130)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run = run_dir_of(storage)
    for k in range(2):  # stopped before their end: no fold trained on to its last epoch
        assert max(_snapshot_epochs(run / f"fold_{k}"), default=0) < EPOCHS
        assert not (run / f"fold_{k}" / "fold_result.json").exists()
    assert not (run / "metrics.json").exists() and not (run / "report.md").exists()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".tmp")]

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    new, ref = (json.loads((r / "metrics.json").read_text()) for r in (run, undisturbed))
    for key in ("accuracy", "f1_weighted", "f1_macro", "per_class", "confusion_matrix", "ensemble", "out_of_fold"):
        assert new[key] == ref[key], key
    _one_test_text_is_a_training_text(run, new, again.stdout)
    assert new["blend"]["weight"] == ref["blend"]["weight"]
    keys = ["fold", "epoch", "train/loss", "val/loss", "val/f1_weighted", "best/f1_weighted"]
    history, reference = (pd.read_csv(r / "history.csv")[keys] for r in (run, undisturbed))
    pd.testing.assert_frame_equal(history, reference)


def test_sigterm_stops_a_student_and_the_same_command_continues_it(ray_head, undisturbed, tmp_path):
    """`timeout` and `kill` send SIGTERM to the command alone (its Ray child processes do not get it)."""
    cmd = [str(BIN / "reuters-ray"), "distill", "--run", str(undisturbed), "--out", "pupil"]
    proc, out, err = _start(cmd, tmp_path, "student")
    student = undisturbed.parent / "pupil" / "student"
    try:
        _wait_for(proc, lambda: bool(_snapshot_epochs(student)), "student epoch registered")
        os.kill(proc.pid, signal.SIGTERM)
        _stopped_cleanly(proc, err, 143)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert max(_snapshot_epochs(student)) < EPOCHS and not (student / "fold_result.json").exists()
    assert not (undisturbed.parent / "pupil" / "metrics.json").exists()
    again = subprocess.run(cmd + ["--quiet"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    m = json.loads((undisturbed.parent / "pupil" / "metrics.json").read_text())
    assert m["predictor"] == "student" and m["folds"][0]["epochs_run"] == EPOCHS


def test_ctrl_c_stops_a_search_without_tunes_hint_and_the_same_command_continues_it(ray_head, tmp_path):
    """A search of one trial: Ctrl-C after its first epoch round. The trial is not recorded as ended by the
    scheduler (it would never run again); the same command continues its folds to their end."""
    make_csv(tmp_path / "news.csv", n_per_class=100)
    cfg = {
        "data": {"source": "table", "path": "news.csv", "text_column": "headline", "label_column": "section",
                 "min_samples": 5, "max_length": 32},
        "model": {"name": "tiny-bert-random", "hidden_dropout": 0.1},
        "train": {"lr": 0.003, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.0, "max_epochs": EPOCHS},
        "cv": {"folds": 2, "cpus_per_fold": 0.5},
    }  # fmt: skip
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    search = {"trials": 1, "seed": 0, "space": {"train.lr": {"choice": [0.003]}}}
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(search))
    cmd = [str(BIN / "reuters-ray"), "tune", "--config", "tiny.yaml", "--search",
           "search.yaml", "--cv.storage_path", "runs", "--search-name", "s"]  # fmt: skip
    proc, out, err = _start(cmd, tmp_path, "search", cwd=tmp_path)
    try:
        _wait_for(proc, lambda: "trial 0: epoch 1," in open(out.name).read(), "epoch round")
        os.killpg(proc.pid, signal.SIGINT)
        _stopped_cleanly(proc, err, 130)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    trial = tmp_path / "runs" / "s" / "trial_0"
    assert not (trial / "stopped.json").exists() and not (trial / "metrics.json").exists()
    assert all(max(_snapshot_epochs(trial / f"fold_{k}"), default=0) < EPOCHS for k in range(2))
    again = subprocess.run(cmd + ["--quiet"], capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    (row,) = json.loads((tmp_path / "runs" / "s" / "search.json").read_text())["results"]
    assert row["status"] == "finished" and row["epochs"] == EPOCHS


def _one_test_text_is_a_training_text(run, metrics, stdout):
    """The same text on both sides of the split (issue 41, kind 2), on a real run: named in its first lines, and
    its test figures given again without it, equal to those of its predictions file without that text."""
    from sklearn.metrics import accuracy_score, f1_score

    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.data.overlap import shared_test_rows
    from reuters_ray.data.preprocess import prepare

    ds = prepare(from_dict(RunConfig, yaml.safe_load((run / "config.yaml").read_text())).data)
    (shared,) = shared_test_rows(ds.train_texts, ds.test_texts)
    assert (
        "warning: 1 of 300 test texts (0.3%) are also training texts (the same text after cleaning; test ids " in stdout
    )
    u = metrics["test_unseen"]
    assert (u["n"], u["shared_with_training"]) == (299, 1)
    pred = pd.read_parquet(run / "predictions.parquet")
    kept = pred[pred["id"] != ds.test_ids[shared]]
    assert len(kept) == 299
    assert u["accuracy"] == pytest.approx(accuracy_score(kept["true_label"], kept["predicted_label"]))
    assert u["f1_macro"] == pytest.approx(
        f1_score(kept["true_label"], kept["predicted_label"], average="macro", labels=metrics["label_names"])
    )
    assert f"; on the 299 test texts that are not training texts: accuracy {u['accuracy']:.4f}," in stdout
    assert "**Test texts that are training texts:** 1 of 300" in (run / "report.md").read_text()
