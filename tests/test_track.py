"""Watching and comparing runs (issue 44): MLflow tracking with a real SQLite store, the predictor as an MLflow pyfunc,
Ray application metrics read from the node's own metrics endpoint, model cards read back with huggingface_hub.

Marker `track` (CI's own step, `pytest -m track`): the tiny run (2 folds x 2 epochs) tracked, stopped after its first
epoch and run again, then a run whose store is locked mid-run; about 3 minutes. The rest runs in the default suite.
"""

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import FOLDS, REPO, RUN_TIMEOUT, cv_cmd, dashboard_get, run_dir_of, tiny_config

from reuters_ray.cli import main
from reuters_ray.config import RunConfig, TrackConfig, load_config
from reuters_ray.errors import ConfigError, DataError
from reuters_ray.recipes.distill import teacher_tags
from reuters_ray.run.place import result_config, run_name
from reuters_ray.track.live import GAUGES
from reuters_ray.track.pyfunc import texts_of

TEXTS = ["Oil prices rose sharply after the OPEC meeting", "Wheat exports to the Soviet Union grew", "", "gold"]


# --- the default suite: no MLflow store, no Ray of their own ------------------------------------------------------


def test_mlflow_asked_for_and_missing_is_one_line_before_anything_starts(reuters_dir, tmp_path):
    """MLflow not installed (its import fails, as in an environment without the track extra): one line naming the
    extra, exit 2, no run folder, no Ray."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(reuters_dir)))
    code = (
        "import sys; sys.modules['mlflow'] = None\n"
        "from reuters_ray.cli import main\n"
        f"sys.exit(main(['cv', '--config', {str(tmp_path / 'tiny.yaml')!r}, '--cv.storage_path', "
        f"{str(tmp_path / 'runs')!r}, '--track.mlflow', 'true']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [
        "reuters-ray: error: track.mlflow: MLflow is not installed in this environment; pip install 'reuters-ray[track]' "
        "(or mlflow>=3), or run without --track.mlflow"
    ]
    assert not (tmp_path / "runs").exists()


def test_the_track_section_is_free_to_differ_when_a_run_resumes():
    """Where a run is logged is not what it computes: the same run name and resumable with tracking on or off, and
    a config.yaml written before the section existed still matches."""
    plain, tracked = RunConfig(), load_config(None, track={"mlflow": "true", "uri": "sqlite:///x.db"})
    assert tracked.track.mlflow is True and tracked.track.uri == "sqlite:///x.db"
    assert result_config(tracked.to_dict()) == result_config(plain.to_dict())
    assert run_name(tracked, "abc") == run_name(plain, "abc")
    older = plain.to_dict()
    older.pop("track")
    assert result_config(older) == result_config(tracked.to_dict())
    with pytest.raises(ConfigError, match=r"track.register must be unset unless track.mlflow is true"):
        TrackConfig(register="reuters")


def test_the_pyfunc_reads_a_text_column_a_series_or_a_list():
    assert texts_of(pd.DataFrame({"id": [1, 2], "text": ["a", None]})) == ["a", None]
    assert texts_of(pd.DataFrame({"headline": ["x"]})) == ["x"]
    assert texts_of(pd.Series(["y", float("nan")])) == ["y", None]
    assert texts_of(["z"]) == ["z"]
    with pytest.raises(DataError, match=r"the model's input: no 'text' column \(columns: id, body\)"):
        texts_of(pd.DataFrame({"id": [1], "body": ["b"]}))


def test_a_student_is_linked_to_its_tracked_teacher(tmp_path):
    cfg = load_config(None, distill={"teacher": "runs/teacher"})
    assert teacher_tags(cfg, tmp_path) == {"reuters_ray.teacher": "runs/teacher"}
    (tmp_path / "tracking.json").write_text(json.dumps({"uri": "sqlite:///m.db", "run_id": "abc"}))  # another shape
    assert teacher_tags(cfg, tmp_path) == {"reuters_ray.teacher": "runs/teacher"}
    stores = {"sqlite:///a.db": {"run_id": "old"}, "sqlite:///m.db": {"experiment_id": "1", "run_id": "abc"}}
    (tmp_path / "tracking.json").write_text(json.dumps({"stores": stores, "last": "sqlite:///m.db"}))
    assert teacher_tags(cfg, tmp_path) == {
        "reuters_ray.teacher": "runs/teacher",
        "reuters_ray.teacher_mlflow_run_id": "abc",
        "reuters_ray.teacher_mlflow_uri": "sqlite:///m.db",
    }


def test_the_grafana_panel_shows_the_gauges_the_driver_publishes():
    board = json.loads((REPO / "docs" / "grafana" / "reuters-ray-folds.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for name in GAUGES:  # Ray exports an application metric with its ray_ prefix
        assert any(f"ray_{name}" in e for e in exprs), name
    assert all("fold" in t["legendFormat"] for p in board["panels"] for t in p.get("targets", []))


def test_a_fold_folder_carries_a_model_card_with_its_test_figures(finished_run):
    from huggingface_hub import ModelCard

    metrics = json.loads((finished_run / "metrics.json").read_text())
    for row in metrics["folds"]:
        card = ModelCard.load(finished_run / "models" / f"fold_{row['fold']}" / "README.md")
        assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
        assert card.data.base_model is None  # tiny-bert-random is no hub id: named in the text instead
        test = [r for r in card.data.eval_results if r.dataset_split == "test"]
        assert [(r.metric_type, r.metric_config) for r in test] == [("f1", "weighted")]
        assert test[0].metric_value == pytest.approx(row["test_f1_weighted"], abs=1e-6)
        assert test[0].dataset_type == "reuters21578"
        assert "the run's predictor (`reuters-ray predict`, `serve`, the export) is the **blend**" in card.text
        assert f"| the predictor (blend) | {metrics['accuracy']:.4f} |" in card.text
        assert all(f"`{name}`" in card.text for name in metrics["label_names"])


# --- a tracked run, stopped and continued (marker track) ----------------------------------------------------------


def metrics_endpoint(dashboard: str) -> str:
    """The head node's metrics endpoint (Prometheus text), from the dashboard's node summary."""
    node = dashboard_get(dashboard, "/nodes?view=summary")["data"]["summary"][0]
    return f"http://{node['ip']}:{node['raylet']['metricsExportPort']}/metrics"


class Scraper:
    """Reads the metrics endpoint every half second while a run goes; keeps each sample of the reuters_ray gauges:
    (name without ray_, its labels, value)."""

    def __init__(self, url: str):
        self.url, self.samples, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self.stop.is_set():
            try:
                text = urllib.request.urlopen(self.url, timeout=5).read().decode()
            except OSError:
                text = ""
            for line in text.splitlines():
                if line.startswith("ray_reuters_ray_"):
                    name, _, rest = line[4:].partition("{")
                    labels, _, value = rest.rpartition("} ")
                    tags = dict(kv.split("=", 1) for kv in labels.split(","))
                    self.samples.append((name, {k: v.strip('"') for k, v in tags.items()}, float(value)))
            self.stop.wait(0.5)

    def close(self):
        self.stop.set()
        self.thread.join()
        return self.samples


def epoch_events(stdout: str) -> list[dict]:
    return [e for line in stdout.splitlines() if (e := json.loads(line))["event"] == "epoch"]


@pytest.fixture(scope="module")
def tracked(ray_head, reuters_dir, tmp_path_factory):
    """The tiny run with MLflow tracking into a SQLite store (its predictor registered as reuters-tiny), stopped
    (SIGINT) once both folds reported their first epoch, then run again to its end, the node's metrics endpoint
    read all along."""
    work = tmp_path_factory.mktemp("tracked")
    (work / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(reuters_dir, folds=FOLDS)))
    uri = f"sqlite:///{work}/mlflow.db"
    cmd = cv_cmd(work / "tiny.yaml", work / "runs") + ["--log-format", "json", "--track.mlflow", "true"]
    cmd += ["--track.uri", uri, "--track.register", "reuters-tiny"]
    scraper = Scraper(metrics_endpoint(ray_head))
    with open(work / "first.err", "w") as err:
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        rows = []
        for line in first.stdout:
            event = json.loads(line)
            rows += [event] if event["event"] == "epoch" else []
            if {r["fold"] for r in rows if r["epoch"] == 1} == set(range(FOLDS)):
                first.send_signal(signal.SIGINT)
                break
        rest, _ = first.communicate(timeout=120)
    assert first.returncode == 130, (work / "first.err").read_text()[-3000:]
    rows += epoch_events(rest)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert second.returncode == 0, second.stderr[-3000:]
    time.sleep(3)  # the last values reach the endpoint within Ray's report interval
    rows += epoch_events(second.stdout)
    run = run_dir_of(work / "runs")
    return SimpleNamespace(run=run, uri=uri, rows=rows, samples=scraper.close(), stderr=second.stderr)


def mlflow_runs(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("reuters-ray")
    return client, client.search_runs([exp.experiment_id])


@pytest.mark.track
def test_one_mlflow_run_and_a_nested_run_per_fold_each_epoch_once_as_in_history_csv(tracked):
    client, runs = mlflow_runs(tracked.uri)
    kept = json.loads((tracked.run / "tracking.json").read_text())
    assert kept["last"] == tracked.uri and list(kept["stores"]) == [tracked.uri]
    kept = kept["stores"][tracked.uri]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_id == kept["run_id"] and parent.info.run_name == tracked.run.name
    assert parent.info.status == "FINISHED"
    folds = {int(r.data.tags["reuters_ray.fold"]): r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert sorted(folds) == list(range(FOLDS)) and len(runs) == FOLDS + 1
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in folds.values())
    assert {k: r.info.run_id for k, r in folds.items()} == {int(k): v for k, v in kept["children"].items()}

    history = pd.read_csv(tracked.run / "history.csv")
    keys = [c for c in history.columns if c.startswith(("train/", "val/"))]
    assert {"train/loss", "val/f1_weighted", "val/accuracy", "train/examples_per_s"} <= set(keys)
    for k, run in folds.items():
        mine = history[history.fold == k].sort_values("epoch")
        for key in keys:
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert [s for s, _ in logged] == mine.epoch.tolist() == [1, 2], (k, key)  # every epoch once
            assert [v for _, v in logged] == pytest.approx(mine[key].tolist(), rel=1e-9), (k, key)

    metrics = json.loads((tracked.run / "metrics.json").read_text())
    logged = parent.data.metrics
    assert logged["test/blend/accuracy"] == pytest.approx(metrics["accuracy"])
    assert logged["test/ensemble/f1_weighted"] == pytest.approx(metrics["ensemble"]["f1_weighted"])
    assert logged["test/linear/f1_macro"] == pytest.approx(metrics["baseline"]["f1_macro"])
    assert logged["oof/f1_weighted"] == pytest.approx(metrics["out_of_fold"]["f1_weighted"])
    assert logged["blend/weight"] == pytest.approx(metrics["blend"]["weight"])
    fingerprint = json.loads((tracked.run / "data_fingerprint.json").read_text())
    tags, params = parent.data.tags, parent.data.params
    assert tags["reuters_ray.data_sha256"] == fingerprint["sha256"] and tags["reuters_ray.run_folder"] == str(
        tracked.run
    )
    assert tags["reuters_ray.ray_job_id"] == metrics["cluster"]["job_id"]  # the second command's job
    assert tags["reuters_ray.predictor"] == "blend"
    assert params["train.lr"] == "0.003" and params["cv.folds"] == str(FOLDS) and params["track.mlflow"] == "True"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "metrics.json", "per_class.csv", "history.csv", "model"} <= artifacts


@pytest.mark.track
def test_the_pyfunc_and_the_registered_model_answer_as_predict(tracked, capsys):
    import mlflow

    _, runs = mlflow_runs(tracked.uri)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    mlflow.set_tracking_uri(tracked.uri)
    frame = pd.DataFrame({"text": TEXTS})
    answers = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model").predict(frame)
    registered = mlflow.pyfunc.load_model("models:/reuters-tiny/1").predict(frame)
    capsys.readouterr()
    assert main(["predict", "--run", str(tracked.run), "--json", *TEXTS]) == 0
    cli = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    labels = [None if pd.isna(x) else x for x in answers["label"]]  # a blank text: no label
    assert labels == [None if pd.isna(x) else x for x in registered["label"]] == cli
    metrics = json.loads((tracked.run / "metrics.json").read_text())
    assert list(answers.columns) == ["label"] + [f"p_{name}" for name in metrics["label_names"]]


@pytest.mark.track
def test_the_dashboard_metrics_carry_each_folds_console_rows(tracked):
    """The node's metrics endpoint (Prometheus text), read during the runs: each fold's gauges tagged with the run
    and the fold, and every value read is one of that fold's console rows."""
    mine = [(name, tags, v) for name, tags, v in tracked.samples if tags.get("run") == tracked.run.name]
    assert {tags["fold"] for _, tags, _ in mine} == {str(k) for k in range(FOLDS)}
    assert {name for name, _, _ in mine} == set(GAUGES)
    assert all(tags["trial"] == "" for _, tags, _ in mine)
    keys = {
        "reuters_ray_fold_epoch": "epoch",
        "reuters_ray_fold_val_f1": "val/f1_weighted",
        "reuters_ray_fold_train_loss": "train/loss",
        "reuters_ray_fold_examples_per_s": "train/examples_per_s",
    }
    for name, tags, value in mine:
        seen = [r[keys[name]] for r in tracked.rows if r["fold"] == int(tags["fold"])]
        assert any(value == pytest.approx(s, rel=1e-9) for s in seen), (name, tags, value, seen)


@pytest.mark.track
def test_a_store_that_cannot_be_written_mid_run_is_one_warning_and_the_run_finishes(ray_head, reuters_dir, tmp_path):
    """The SQLite store locked by another process (an exclusive transaction) once the MLflow run is made: one
    warning line, and the run finishes with its run folder whole."""
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(reuters_dir, folds=FOLDS)))
    db = tmp_path / "mlflow.db"
    cmd = cv_cmd(tmp_path / "tiny.yaml", tmp_path / "runs") + ["--quiet", "--track.mlflow", "true"]
    proc = subprocess.Popen(cmd + ["--track.uri", f"sqlite:///{db}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("runs/*/tracking.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    lock = sqlite3.connect(db, timeout=0)
    lock.execute("BEGIN EXCLUSIVE")  # held until the run ends: every write of the run's tracking fails
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        lock.rollback()
        lock.close()
    assert proc.returncode == 0, err.decode()[-3000:]
    warnings = [line for line in err.decode().splitlines() if line.startswith("reuters-ray: warning:")]
    assert len(warnings) == 1 and "MLflow tracking at sqlite:///" in warnings[0], warnings
    assert "the run goes on without it" in warnings[0]
    run = run_dir_of(tmp_path / "runs")
    assert (run / "report.md").is_file() and (run / "metrics.json").is_file()
    assert all((run / "models" / f"fold_{k}" / "model.safetensors").is_file() for k in range(FOLDS))
    assert out.decode().startswith(f"run {run.name}: accuracy ")


def test_a_run_logged_to_another_store_and_back_keeps_one_run_in_each(tmp_path):
    """The Tracker alone (no Ray) against two real SQLite stores: logged to A, then B, then A again: one parent and
    its two fold runs in each store, A's continued, each epoch once."""
    from mlflow import MlflowClient

    from reuters_ray.console import Console
    from reuters_ray.run.place import RunPlace
    from reuters_ray.storage import LOCAL
    from reuters_ray.track.mlflow_run import Tracker

    (tmp_path / "run").mkdir()
    place = RunPlace("run", LOCAL, str(tmp_path / "run"), str(tmp_path / "run"))
    stores = [f"sqlite:///{tmp_path / name}.db" for name in ("a", "b", "a")]
    for epoch, uri in enumerate(stores, start=1):
        tracker = Tracker(TrackConfig(mlflow=True, uri=uri), place, Console("quiet"), "cv")
        tracker.start(RunConfig().to_dict(), {"reuters_ray.data_sha256": "x"}, [0, 1])
        for fold in (0, 1):
            tracker.epoch({"fold": fold, "epoch": epoch, "lr": 1e-4, "train/loss": 1.0 / epoch, "val/f1_weighted": 0.5})
        tracker.finish({"wall_s": 1.0}, [])
        assert not tracker.failed
    for uri, epochs in ((stores[0], [1, 3]), (stores[1], [2])):
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("reuters-ray").experiment_id])
        assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 1 and len(runs) == 3
        child = next(r for r in runs if r.data.tags.get("reuters_ray.fold") == "0")
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")] == epochs
    kept = json.loads((tmp_path / "run" / "tracking.json").read_text())
    assert kept["last"] == stores[0] and sorted(kept["stores"]) == sorted(set(stores))
