"""TextClassifier, the Python door (issue 43): k-fold cross-validation on Ray over pandas DataFrames, the same run
as `reuters-ray cv` (run folder, resume, report), its answers as `reuters-ray predict`'s; bad frames refused in one
line naming the column and row, before Ray and before anything is written."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, tiny_config

from reuters_ray import DataConfig, TextClassifier, load_dataset
from reuters_ray.cli import main
from reuters_ray.errors import ConfigError, DataError
from reuters_ray.recipes.classifier import _table_path

TEXTS = ["Oil prices rose sharply after OPEC cut output", "The central bank cut its discount rate"]


@pytest.fixture(scope="module")
def frames(reuters_dir):
    """Reuters-46's Keras split as DataFrames, with an id column and the labels as names (a user's table)."""
    ds = load_dataset(DataConfig(path=str(reuters_dir)))

    def frame(ids, texts, labels):
        return pd.DataFrame({"id": ids, "body": texts, "topic": [ds.label_names[i] for i in labels]})

    return frame(ds.train_ids, ds.train_texts, ds.train_labels), frame(ds.test_ids, ds.test_texts, ds.test_labels)


@pytest.fixture(scope="module")
def config(reuters_dir, tmp_path_factory):
    """configs/tiny-cpu.yaml with 2 folds: its samples (500 train / 200 test rows) apply to the frames too."""
    return tiny_config(reuters_dir, folds=2)


@pytest.fixture(scope="module")
def fitted(ray_head, frames, config, tmp_path_factory):
    storage = tmp_path_factory.mktemp("classifier")
    clf = TextClassifier(config_of(config), log_format="quiet", cv={"storage_path": str(storage), "name": "frame"})
    return clf.fit(frames[0], text="body", label="topic", test=frames[1]), storage


def config_of(cfg: dict):
    from reuters_ray.config import RunConfig, from_dict

    return from_dict(RunConfig, cfg)


def test_fit_on_frames_is_the_cv_run_and_answers_as_predict(fitted, capsys):
    clf, storage = fitted
    run = storage / "frame"
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "report.md").is_file() and clf.metrics == metrics
    assert metrics["predictor"] == "blend" and len(metrics["folds"]) == 2
    board = clf.leaderboard()
    assert list(board["model"]) == ["blend", "ensemble", "linear", "fold_0", "fold_1"]
    top = board.set_index("model")
    assert top.loc["blend", "test_accuracy"] == metrics["accuracy"]
    assert top.loc["ensemble", "test_f1_macro"] == metrics["ensemble"]["f1_macro"]
    assert top.loc["linear", "test_f1_weighted"] == metrics["baseline"]["f1_weighted"]
    assert top.loc["ensemble", "out_of_fold_accuracy"] == metrics["out_of_fold"]["accuracy"]
    assert top.loc["fold_1", "out_of_fold_f1_weighted"] == metrics["folds"][1]["val_f1_weighted"]

    labels = clf.predict(TEXTS)
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--json", *TEXTS]) == 0
    cli = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    assert list(labels) == cli and labels.name == "label"

    proba = clf.predict_proba(pd.Series(TEXTS + ["   "], index=["a", "b", "blank"]))
    assert list(proba.columns) == metrics["label_names"] and list(proba.index) == ["a", "b", "blank"]
    assert np.allclose(proba.loc[["a", "b"]].sum(axis=1), 1.0) and proba.loc["blank"].isna().all()
    assert list(proba.loc[["a", "b"]].idxmax(axis=1)) == cli
    assert clf.predict(pd.DataFrame({"body": TEXTS + [""]}, index=[7, 8, 9])).to_dict() == {
        7: cli[0],
        8: cli[1],
        9: None,
    }


def test_evaluate_gives_the_runs_test_figures_on_its_test_split(fitted):
    from reuters_ray.data.preprocess import prepare

    clf, _ = fitted
    ds = prepare(clf.config.data)  # the run's own test split: the sample of the test frame, cleaned
    test = pd.DataFrame({"body": ds.test_texts, "topic": [ds.label_names[i] for i in ds.test_labels]})
    m = clf.evaluate(test, label="topic")
    for key in ("accuracy", "f1_weighted", "f1_macro"):
        assert m[key] == pytest.approx(clf.metrics[key], abs=1e-12), key
    with pytest.raises(DataError, match=r"column 'topic', row 3: label 'no-such-topic' is not one of the run's"):
        clf.evaluate(test.assign(topic=test.topic.where(test.index != 3, "no-such-topic")), label="topic")


def test_the_same_fit_again_trains_nothing_and_a_changed_frame_is_refused(fitted, frames, config):
    clf, storage = fitted
    run = storage / "frame"
    checkpoints = sorted(p.name for p in run.glob("fold_*/checkpoint_*"))
    history = (run / "history.csv").read_text()
    again = TextClassifier(config_of(config), log_format="quiet", cv={"storage_path": str(storage), "name": "frame"})
    again.fit(frames[0], text="body", label="topic", test=frames[1])
    assert sorted(p.name for p in run.glob("fold_*/checkpoint_*")) == checkpoints
    assert (run / "history.csv").read_text() == history and again.metrics["accuracy"] == clf.metrics["accuracy"]
    changed = frames[0].copy()
    row = changed.index[changed.topic == "earn"][0]
    changed.loc[row, "topic"] = "acq"  # one label, in a row the sample keeps (the whole frame is the data)
    with pytest.raises(ConfigError, match=r"run 'frame' .* was made with other data"):
        again.fit(changed, text="body", label="topic", test=frames[1])


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda f: f.drop(columns="topic"), r"train: no column 'topic' \(columns: id, body\)"),
        (lambda f: f.iloc[:0], r"train: the DataFrame has no rows"),
        (lambda f: f.assign(topic=f.topic.where(f.index != 5, np.nan)), r"train: column 'topic', row 5: no label"),
        (lambda f: f.assign(body=f.body.where(f.index != 2, 17)), r"train: column 'body', row 2: not text \(17, int\)"),
        (lambda f: f.assign(body=f.body.where(f.index != 4, None)), r"train: column 'body', row 4: not text"),
    ],
    ids=["missing column", "empty frame", "NaN label", "a number as text", "None as text"],
)
def test_a_bad_frame_is_one_line_before_ray_with_nothing_written(frames, config, tmp_path, make, match):
    clf = TextClassifier(config_of(config), log_format="quiet", cv={"storage_path": str(tmp_path / "runs")})
    with pytest.raises(DataError, match=match):
        clf.fit(make(frames[0].head(50)), text="body", label="topic")
    assert not (tmp_path / "runs").exists()


def test_a_frame_of_label_lists_is_a_multi_label_table(tmp_path, monkeypatch):
    """Lists in the label column: written as a Parquet list column, read back by the table source as multi-label."""
    monkeypatch.setenv("REUTERS_RAY_CACHE", str(tmp_path))
    texts = [f"wire {i} about crude oil and wheat harvests in the north" for i in range(60)]
    topics = [["crude", "wheat"], ["crude"], ["wheat"]] * 20
    frame = pd.DataFrame({"text": texts, "topics": topics})
    path = _table_path(frame, "text", "topics", "train")
    assert path == _table_path(frame.copy(), "text", "topics", "train")  # named by content
    assert path.startswith(str(tmp_path / "frames"))
    ds = load_dataset(DataConfig(source="table", path=path, label_column="topics", task="multi", min_samples=1))
    assert ds.multi_label and sorted(ds.label_names) == ["crude", "wheat"]
    assert ds.train_labels.shape[1] == 2 and ds.train_labels.sum() + ds.test_labels.sum() == 80


def test_what_the_table_source_refuses_in_a_frame_names_the_frame(frames, config, tmp_path):
    clf = TextClassifier(config_of(config), log_format="quiet", cv={"storage_path": str(tmp_path / "runs")})
    test = frames[1].head(40).assign(topic="a-topic-never-trained")
    with pytest.raises(DataError, match=r"^the test DataFrame: test labels never seen in training: 'a-topic-never"):
        clf.fit(frames[0], text="body", label="topic", test=test)
    assert not (tmp_path / "runs").exists()


def test_a_preset_a_file_and_overrides_give_the_same_config():
    a = TextClassifier("quick-cpu", train={"max_epochs": 2}, log_format="quiet").config
    b = TextClassifier(REPO / "configs" / "quick-cpu.yaml", train={"max_epochs": "2"}, log_format="quiet").config
    assert a == b and a.train.max_epochs == 2 and a.model.name == "minilm-offline"
    with pytest.raises(ConfigError, match="unknown key"):
        TextClassifier("quick-cpu", train={"max_epoch": 2})


@pytest.mark.runs
def test_a_frame_of_label_lists_fits_a_multi_label_run(ray_head, reuters_dir, config, tmp_path, capsys):
    """ModApte's topics as lists in a DataFrame: the run is multi-label, its leaderboard micro-F1, its answers label
    sets, as `reuters-ray predict` prints them."""
    ds = load_dataset(DataConfig(path=str(reuters_dir), split="modapte", task="multi"))

    common = ds.train_labels.sum(axis=0) >= 50  # the frequent topics: a split needs 2 of each, the config 50

    def frame(texts, labels):
        topics = [[ds.label_names[j] for j in np.flatnonzero(r & common)] for r in labels]
        return pd.DataFrame({"text": texts, "topics": topics})

    clf = TextClassifier(config_of(config), log_format="quiet", cv={"storage_path": str(tmp_path), "name": "multi"})
    clf.fit(frame(ds.train_texts, ds.train_labels), label="topics")  # ModApte's test topics include unseen ones
    assert clf.config.data.task == "multi" and clf.metrics["task"] == "multi"
    board = clf.leaderboard()
    assert "test_f1_micro" in board.columns and board.loc[0, "test_f1_micro"] == clf.metrics["f1_micro"]
    labels = clf.predict(TEXTS)
    assert all(isinstance(v, list) for v in labels)
    capsys.readouterr()
    assert main(["predict", "--run", str(tmp_path / "multi"), *TEXTS]) == 0
    cli = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert ["|".join(v) or "(none)" for v in labels] == cli
