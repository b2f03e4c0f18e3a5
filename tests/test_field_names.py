"""Every figure under its true name (issue 41): what it is (weighted F1, micro-F1, subset accuracy, ...), where it was
measured and of what, in console lines, JSON lines, run reports, CSV headers, metrics.json and a search's results,
for single- and multi-label runs and every train.monitor. No Ray and no training: epoch rows made by
train.epoch_row from validation figures of small arrays, fold tables, metrics and run and search folders made by the
package's own functions from them."""

import copy
import functools
import io
import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from reuters_ray import rows as R
from reuters_ray.config import MONITORS, CVConfig, DataConfig, RunConfig, TrainConfig, monitor_key
from reuters_ray.console import Console, format_row
from reuters_ray.run.figures import curves_figure
from reuters_ray.run.folds import summarize_fold
from reuters_ray.run.outputs import Predictions, true_named, write_run_outputs
from reuters_ray.run.report import build_sections, load_run, render_markdown
from reuters_ray.scoring.evaluate import out_of_fold_metrics, probabilities, score_ensemble

NAMES = ["grain", "wheat", "corn"]
# (data.task, train.monitor) -> the validation figure's key and name
CASES = [
    ("single", None, "f1_weighted", "weighted F1"),
    ("single", "f1_weighted", "f1_weighted", "weighted F1"),
    ("single", "f1_macro", "f1_macro", "macro F1"),
    ("single", "f1_micro", "f1_micro", "micro-F1"),
    ("single", "accuracy", "accuracy", "accuracy"),
    ("multi", None, "f1_micro", "micro-F1"),
    ("multi", "f1_weighted", "f1_weighted", "weighted F1"),
    ("multi", "f1_macro", "f1_macro", "macro F1"),
    ("multi", "f1_micro", "f1_micro", "micro-F1"),
    ("multi", "accuracy", "subset_accuracy", "subset accuracy"),
]
SOME = [(t, m) for t, m, *_ in CASES if m in (None, "f1_macro", "accuracy")]  # the report and search cases
KEY = {(t, m): k for t, m, k, _ in CASES}
NAME = {(t, m): n for t, m, _, n in CASES}


def config(task: str, monitor: str | None, storage: str = "runs") -> RunConfig:
    split = "modapte" if task == "multi" else "keras"
    return RunConfig(
        data=DataConfig(task=task, split=split), train=TrainConfig(monitor=monitor), cv=CVConfig(storage_path=storage)
    )


def labels(task: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if task == "single":
        return rng.integers(0, 3, n)
    y = (rng.random((n, 3)) < 0.4).astype(np.uint8)
    y[np.arange(n), rng.integers(0, 3, n)] = 1  # every text has a topic
    return y


def logits_for(task: str, y: np.ndarray, seed: int) -> np.ndarray:
    """[N, 3] logits that follow the labels `y`, with noise drawn from `seed`."""
    signal = 2.0 * y - 1.0 if task == "multi" else 1.5 * np.eye(3)[y]
    return (signal + np.random.default_rng(seed).normal(0.0, 1.2, signal.shape)).astype(np.float32)


def validation(task: str, y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """A fold's validation figures, as train.validate computes them."""
    from reuters_ray.scoring.metrics import classification_metrics
    from reuters_ray.scoring.multilabel import validation_metrics

    return validation_metrics(y, logits) if task == "multi" else classification_metrics(y, logits.argmax(1), 3)


def fold_progress(cfg: RunConfig, fold: int, epochs: int = 3) -> dict:
    """progress.json of a fold's last checkpoint: its epoch rows made by train.epoch_row, stopped on cfg.monitor()."""
    from reuters_ray.fold.optim import EarlyStopping
    from reuters_ray.fold.train import epoch_row

    task, y = cfg.data.task, labels(cfg.data.task, 24, fold)
    stopper = EarlyStopping(patience=5, min_delta=0.0)
    plan = SimpleNamespace(seed=42 + fold, device=SimpleNamespace(type="cpu"))
    rows = []
    for epoch in range(1, epochs + 1):
        m = validation(task, y, logits_for(task, y, 10 * fold + epoch))
        stopper.update(m[cfg.monitor()], epoch)
        state = SimpleNamespace(
            scheduler=SimpleNamespace(get_last_lr=lambda: [1e-5]),
            stopper=stopper,
            finished=epoch == epochs,
            restarts=[],
        )
        seconds = {"setup": 1.0, "train": 2.0, "val": 0.5}
        rows.append(epoch_row(fold, plan, epoch, state, (0.5, 24, 240), (m, 0.4), seconds, epochs, cfg.monitor()))
    es = {"best": stopper.best, "best_epoch": stopper.best_epoch, "bad_epochs": stopper.bad_epochs}
    return {"finished": True, "epoch": epochs, "history": rows, "early_stopping": es, "config": cfg.to_dict()}


@functools.lru_cache
def _run(task: str, monitor: str | None):
    cfg = config(task, monitor)
    progress = [fold_progress(cfg, k) for k in (0, 1)]
    table = [summarize_fold(k, p, cfg.train.patience) for k, p in enumerate(progress)]
    y_train, y_test = labels(task, 40, 7), labels(task, 30, 8)
    oof = logits_for(task, y_train, 9)
    fold_logits = np.stack([logits_for(task, y_test, 11), logits_for(task, y_test, 12)])
    ds = SimpleNamespace(multi_label=task == "multi", train_labels=y_train, test_labels=y_test, label_names=NAMES)
    ensemble = score_ensemble(ds, fold_logits, table, cfg.cv, oof)
    metrics = {
        **ensemble,
        "ensemble": ensemble,
        "out_of_fold": out_of_fold_metrics(y_train, oof, NAMES, table, ensemble.get("decision")),
        "task": task,
        "predictor": "ensemble",
        "run": "r",
        "label_names": NAMES,
        "max_length": 32,
        "folds": table,
        "wall_s": 75.0,
        "timing": {"data_s": 1.0, "folds_s": 60.0},
    }
    probs = probabilities(fold_logits.mean(axis=0), task == "multi")
    test = Predictions([f"t{i}" for i in range(30)], y_test, probs, decision=metrics.get("decision"))
    return cfg, metrics, [r for p in progress for r in p["history"]], test


def run_of(task: str, monitor: str | None):
    """(config, metrics.json, epoch rows, test predictions) of a 2-fold run: copies, free to change."""
    return copy.deepcopy(_run(task, monitor))


def write_run(folder, task, monitor, metrics=None, history=None):
    cfg, m, h, test = run_of(task, monitor)
    write_run_outputs(
        folder, metrics or m, history=history or h, test=test, config=cfg.to_dict(), provenance={"source": "table"}
    )
    return folder


def report_md(folder) -> str:
    return render_markdown(*build_sections(load_run(folder)))


def table_header(md: str, start: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(start))


def bare_accuracy(text: str) -> list[str]:
    """Every "accuracy" in `text` that is not "subset accuracy" (or a key: subset_accuracy, val_accuracy)."""
    return re.findall(r"(?<![a-z_])(?<!subset )accuracy", text)


# --- train.monitor: its key and name, for both tasks -----------------------------------------------------------


@pytest.mark.parametrize("task,monitor,key,name", CASES)
def test_each_monitor_is_a_validation_figure_under_its_true_key_and_name(task, monitor, key, name):
    assert monitor_key(monitor, task) == config(task, monitor).monitor() == key and R.NAMES[key] == name
    y = labels(task, 20, 1)
    figures = validation(task, y, logits_for(task, y, 2))
    assert key in figures  # what train.run_epoch reads: metrics[cfg.monitor()]
    if task == "multi":  # a multi-label run's validation figures never call the subset accuracy "accuracy"
        from reuters_ray.scoring.multilabel import sigmoid

        whole_set_right = (y == (sigmoid(logits_for(task, y, 2)) >= figures["threshold"])).all(axis=1)
        assert "accuracy" not in figures and figures["subset_accuracy"] == pytest.approx(whole_set_right.mean())


def test_every_allowed_monitor_is_covered():
    for task in ("single", "multi"):
        assert {m for t, m, *_ in CASES if t == task} == {None, *MONITORS}


# --- the console: epoch table, progress line, JSON lines ---------------------------------------------------------


def test_the_epoch_tables_name_each_validation_figure():
    assert format_row() == (
        "fold | epoch | train loss | val loss | val accuracy | val weighted P | val weighted R | val weighted F1 | "
        "val macro F1 |      s"
    )
    assert format_row(multi_label=True) == (
        "fold | epoch | train loss | val loss | val subset accuracy | val micro P | val micro R | val micro-F1 | "
        "val macro-F1 |      s"
    )


@pytest.mark.parametrize("task,monitor", [(t, m) for t, m, *_ in CASES])
def test_epoch_rows_progress_and_json_lines_name_the_monitored_figure(task, monitor):
    cfg = config(task, monitor)
    rows = fold_progress(cfg, 0)["history"] + fold_progress(cfg, 1, epochs=2)["history"]
    key, name = KEY[task, monitor], NAME[task, monitor]
    out = io.StringIO()
    c = Console("text", out)
    c.expected = {0, 1, 2}
    for row in rows:
        c.epoch(row)
    best = [max(r["val/" + key] for r in rows if r["fold"] == k) for k in (0, 1)]
    assert out.getvalue().splitlines()[-1] == (
        f"progress, best val {name}: fold 0 3/3 done {best[0]:.4f} | fold 1 2/2 done {best[1]:.4f} | fold 2 waiting "
        "| waiting for the other folds"
    )
    assert out.getvalue().splitlines()[0] == format_row(multi_label=task == "multi")
    out = io.StringIO()
    c = Console("json", out)
    c.epoch(rows[-1])
    event = json.loads(out.getvalue())
    assert event["monitor"] == key and event[f"best/{key}"] == best[1]
    assert {k for k in event if k.startswith("best/")} == {f"best/{key}", "best/epoch"}
    assert ("val/accuracy" in event, "val/subset_accuracy" in event) == (task == "single", task == "multi")


# --- a run's files: folds.csv, history.csv, metrics.json ---------------------------------------------------------


@pytest.mark.parametrize("task,monitor", SOME)
def test_csv_headers_and_metrics_keys_of_a_run(task, monitor, tmp_path):
    folder = write_run(tmp_path, task, monitor)
    key, multi = KEY[task, monitor], task == "multi"
    history = pd.read_csv(folder / "history.csv")
    folds = pd.read_csv(folder / "folds.csv")
    m = json.loads((folder / "metrics.json").read_text())
    assert f"best/{key}" in history and set(history["monitor"]) == {key}
    assert ("best/f1_weighted" in history) == (key == "f1_weighted")
    assert set(folds["monitor"]) == {key}
    assert folds["val_monitor"].tolist() == [max(history[history["fold"] == k]["val/" + key]) for k in (0, 1)]
    if multi:  # subset accuracy: never under "accuracy" in a CSV; metrics.json keeps "accuracy" beside it
        assert "val/subset_accuracy" in history and "val/accuracy" not in history
        assert "val_subset_accuracy" in folds and "val_accuracy" not in folds
        assert m["accuracy"] == m["subset_accuracy"] and m["ensemble"]["accuracy"] == m["subset_accuracy"]
        assert set(m["out_of_fold"]) >= {"subset_accuracy", "f1_micro"} and "accuracy" not in m["out_of_fold"]
        assert set(m["out_of_fold"]["folds_mean"]) == {"subset_accuracy", "f1_weighted", "f1_macro"}
    else:
        assert "val/accuracy" in history and "val_accuracy" in folds and "subset_accuracy" not in m


# --- a run's report --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task,monitor", SOME)
def test_the_run_report_names_every_figure(task, monitor, tmp_path):
    md = report_md(write_run(tmp_path, task, monitor))
    m = json.loads((tmp_path / "metrics.json").read_text())
    name = NAME[task, monitor]
    if task == "multi":
        assert table_header(md, "| model |") == (
            "| model | test micro-F1 | test macro-F1 | test samples-F1 | test weighted F1 | test subset accuracy | "
            "test Hamming loss |"
        )
        assert table_header(md, "| fold |") == (
            f"| fold | best epoch (by val {name}) | epochs run | val subset accuracy | val micro-F1 | val weighted F1 | "
            "val macro F1 | test weighted F1 alone | test micro-F1 alone | restarts | workers | node(s) |"
        )
        assert f"subset accuracy {m['out_of_fold']['subset_accuracy']:.4f}." in md
        mean, what = np.mean([f["val_f1_micro"] for f in m["folds"]]), "micro-F1"
        assert bare_accuracy(md.split("## Config")[0]) == []  # (the config's `monitor: accuracy` is the setting)
    else:
        assert table_header(md, "| model |") == (
            "| model | test accuracy | test weighted F1 | test macro F1 | test weighted precision | test weighted recall |"
        )
        assert table_header(md, "| fold |") == (
            f"| fold | best epoch (by val {name}) | epochs run | val accuracy | val weighted F1 | val macro F1 | "
            "test weighted F1 alone | restarts | workers | node(s) |"
        )
        o = m["out_of_fold"]["folds_mean"]
        assert (
            f"the folds' mean validation figures at their best epochs: {o['accuracy']:.4f}, {o['f1_weighted']:.4f}, "
            f"{o['f1_macro']:.4f}."
        ) in md
        mean, what = np.mean([f["val_f1_weighted"] for f in m["folds"]]), "weighted F1"
    assert (
        f"Each fold keeps the model of its best epoch, the one of its best validation {name} (train.monitor); the val "
        f"figures are that epoch's. The folds' mean validation {what} at their best epochs {mean:.4f};"
    ) in md
    assert f"Training curves: loss and validation {name} per epoch, one colour per fold." in md


def old_run(task: str, monitor: str | None):
    """The run as reuters-ray wrote it before the true names: a multi-label run's subset accuracy under "accuracy"
    alone (val_accuracy, val/accuracy), epoch rows without "monitor" and their best under best/f1_weighted."""
    cfg, m, history, _ = run_of(task, monitor)
    for d in (m, m["ensemble"]):
        d.pop("subset_accuracy")
    m["out_of_fold"]["accuracy"] = m["out_of_fold"].pop("subset_accuracy")
    m["out_of_fold"]["folds_mean"]["accuracy"] = m["out_of_fold"]["folds_mean"].pop("subset_accuracy")
    for f in m["folds"]:
        f["val_accuracy"] = f.pop("val_subset_accuracy")
        del f["monitor"]
    old = []
    for r in history:
        r = dict(r)
        r["best/f1_weighted"] = r.pop(R.best_key(r))
        del r["monitor"]
        r["val/accuracy"] = r.pop("val/subset_accuracy")
        old.append(r)
    return m, old


def test_a_multi_label_run_made_before_rebuilds_the_same_report(tmp_path):
    new_md = report_md(write_run(tmp_path / "new", "multi", "accuracy"))
    m, history = old_run("multi", "accuracy")
    folder = tmp_path / "old"
    write_run(folder, "multi", "accuracy", metrics=m)
    pd.DataFrame(history).to_csv(folder / "history.csv", index=False)  # as written then, before true_named
    assert report_md(folder) == new_md
    curves_figure(pd.read_csv(folder / "history.csv"), folder / "curves.png", "subset_accuracy")  # val/accuracy
    assert (folder / "curves.png").stat().st_size > 1000
    # a run resumed from such checkpoints writes its history.csv under the true names
    _, _, new_history, _ = run_of("multi", "accuracy")
    assert true_named(history, config("multi", "accuracy").to_dict()) == new_history
    assert true_named(new_history, config("multi", "accuracy").to_dict()) == new_history


def test_a_student_report_reads_an_older_teachers_subset_accuracy(tmp_path):
    m, _ = old_run("multi", None)  # the teacher, from before
    _, student, _, _ = run_of("multi", None)
    teacher = {k: v for k, v in m.items() if isinstance(v, float) and k != "wall_s"}
    student.update(
        predictor="student",
        teacher={"run": "t", "source": "runs/t", "predictor": "ensemble", "folds": 2, "model": "tiny", **teacher},
        ensemble=m["ensemble"],
        distill={"soft_targets": "x", "temperature": 2.0, "alpha": 0.5, "train": 30, "validation": 10},
    )
    md = report_md(write_run(tmp_path, "multi", None, metrics=student))
    row = {r.split(":")[0]: r for r in md.splitlines() if r.startswith(("| student:", "| teacher:"))}
    assert row["| teacher"].startswith("| teacher: run t's ensemble |")
    assert row["| teacher"].endswith(f"| {m['accuracy']:.4f} | {m['hamming_loss']:.4f} |")
    assert row["| student"].endswith(f"| {student['subset_accuracy']:.4f} | {student['hamming_loss']:.4f} |")
    assert bare_accuracy(md.split("## Config")[0]) == []


# --- the run's result line -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["single", "multi"])
def test_the_result_line_and_its_json_fields(task):
    from reuters_ray.run.outputs import say_done

    _, m, _, _ = run_of(task, None)
    place = SimpleNamespace(name="r", uri="/runs/r")
    out = io.StringIO()
    say_done(Console("text", out), place, m, {"total_s": 75.0})
    if task == "multi":
        assert out.getvalue() == (
            f"run r: micro-F1 {m['f1_micro']:.4f}, macro-F1 {m['f1_macro']:.4f}, samples-F1 {m['f1_samples']:.4f}, "
            f"subset accuracy {m['subset_accuracy']:.4f}, Hamming loss {m['hamming_loss']:.4f} on 30 test texts "
            "(ensemble) in 1 min 15 s; report: /runs/r/report.html\n"
        )
    else:
        assert out.getvalue() == (
            f"run r: accuracy {m['accuracy']:.4f}, weighted F1 {m['f1_weighted']:.4f}, macro F1 {m['f1_macro']:.4f} "
            "on 30 test texts (ensemble) in 1 min 15 s; report: /runs/r/report.html\n"
        )
    out = io.StringIO()
    say_done(Console("json", out), place, m, {"total_s": 75.0})
    event = json.loads(out.getvalue())
    figures = set(event) - {"event", "time", "message", "run", "uri", "timing"}
    if task == "multi":
        assert figures == {"f1_micro", "f1_macro", "f1_samples", "subset_accuracy", "hamming_loss"}
    else:
        assert figures == {"accuracy", "f1_weighted", "f1_macro"}
    assert all(event[k] == m[k] for k in figures)


# --- a search: its console lines, trials.csv, search.json, report ------------------------------------------------


def make_search(tmp_path, task, monitor, older_trial=False):
    """A search of 3 trials over train.lr: trials 0 and 2 finished (trial 2 from before the true names when
    `older_trial`), trial 1 stopped by the scheduler. Returns (search, place, rows, best)."""
    from reuters_ray.run.trials import STOPPED_FILE, check_search, read_search, trial_rows, write_results, write_search

    base = config(task, monitor, str(tmp_path / "runs"))
    (tmp_path / "search.yaml").write_text(yaml.safe_dump({"trials": 3, "space": {"train.lr": {"choice": [1e-4]}}}))
    search = read_search(tmp_path / "search.yaml", base)
    place, trials, _ = check_search(base, search, "s")
    write_search(place, search, base, trials)
    for i in (0, 2):
        m = run_of(task, monitor)[1] if i == 0 or not older_trial else old_run(task, monitor)[0]
        for f in m["folds"]:
            f["val_monitor"] += 0.01 * i
        folder = tmp_path / "runs" / "s" / f"trial_{i}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(m))
        (folder / "report.md").write_text("done")
    stopped = {"score": 0.25, "epochs": 1, "wall_s": 12.0, "stopped_early": True}
    (tmp_path / "runs" / "s" / "trial_1").mkdir()
    (tmp_path / "runs" / "s" / "trial_1" / STOPPED_FILE).write_text(json.dumps(stopped))
    rows = trial_rows(place, trials)
    return search, place, rows, write_results(place, search, rows)


@pytest.mark.parametrize("task,monitor", SOME)
def test_a_search_names_its_score_and_test_figures(task, monitor, tmp_path):
    from reuters_ray.recipes.search import _say_results
    from reuters_ray.run.trials import round_line

    search, place, rows, best = make_search(tmp_path, task, monitor)
    key, name, m = KEY[task, monitor], NAME[task, monitor], run_of(task, monitor)[1]
    score_name = f"folds' mean best validation {name}"
    score = np.mean([f["val_monitor"] for f in m["folds"]]) + 0.02
    assert search.score_name == score_name and best["trial"] == 2 and best["score"] == pytest.approx(score)
    oof = "f1_micro" if task == "multi" else "f1_weighted"
    csv = (tmp_path / "runs" / "s" / "trials.csv").read_text().splitlines()
    assert (
        csv[0] == f"trial,run,train.lr,status,score_mean_best_val_{key},epochs,wall_s,stopped_early,out_of_fold_{oof}"
    )
    record = json.loads((tmp_path / "runs" / "s" / "search.json").read_text())
    assert record["score_of"] == {"monitor": key, "name": score_name}
    test = ["f1_micro", "f1_macro", "f1_samples", "subset_accuracy", "hamming_loss"] if task == "multi" else None
    test = test or ["accuracy", "f1_weighted", "f1_macro"]
    assert list(record["best"]["test"]) == test and record["best"]["test"] == {k: m[k] for k in test}
    assert record["best"][f"out_of_fold_{oof}"] == m["out_of_fold"][oof]
    md = (tmp_path / "runs" / "s" / "report.md").read_text()
    assert table_header(md, "| trial |") == f"| trial | train.lr | status | score ({score_name}) | epochs | wall |"
    assert f"A trial's score is its {score_name} (train.monitor: what the folds stop on)" in md
    figures = (
        f"micro-F1 {m['f1_micro']:.4f}, macro-F1 {m['f1_macro']:.4f}, samples-F1 {m['f1_samples']:.4f}, subset "
        f"accuracy {m['subset_accuracy']:.4f}, Hamming loss {m['hamming_loss']:.4f}"
        if task == "multi"
        else f"accuracy {m['accuracy']:.4f}, weighted F1 {m['f1_weighted']:.4f}, macro F1 {m['f1_macro']:.4f}"
    )
    oof_name = "micro-F1" if task == "multi" else "weighted F1"
    assert (
        f"score {score:.4f} ({score_name}), out-of-fold {oof_name} {m['out_of_fold'][oof]:.4f}. Its test figures, of "
        f"the chosen trial alone (the test split chose nothing): {figures}."
    ) in md
    assert f"Score ({score_name}) against train.lr" in md
    out = io.StringIO()
    _say_results(Console("text", out), place, search, rows, best)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        f"trial 2: finished, score {score:.4f} ({score_name}), 3 epochs (train.lr=0.0001)",
        f"trial 0: finished, score {score - 0.02:.4f} ({score_name}), 3 epochs (train.lr=0.0001)",
        f"trial 1: stopped, score 0.2500 ({score_name}), 1 epoch (train.lr=0.0001)",
    ]
    assert lines[3].startswith(
        f"search s: best trial 2 (score {score:.4f}, {score_name}; its test figures: {figures});"
    )
    out = io.StringIO()
    _say_results(Console("json", out), place, search, rows, best)
    done = json.loads(out.getvalue().splitlines()[-1])
    assert done["event"] == "done" and (done["score"], done["score_of"]) == (best["score"], score_name)
    assert round_line(search, 1, 2, 0.5) == f"trial 1: epoch 2, score 0.5000 ({score_name} up to epoch 2)"


def test_a_search_resumed_over_an_older_multi_label_trial_reads_its_subset_accuracy(tmp_path):
    _, _, rows, best = make_search(tmp_path, "multi", None, older_trial=True)
    m, _ = old_run("multi", None)
    assert best["trial"] == 2 and best["test"]["subset_accuracy"] == m["accuracy"]
    assert "accuracy" not in best["test"]


def test_a_trials_rounds_are_scored_on_the_monitored_figure():
    import queue

    from reuters_ray.recipes.search import _RoundConsole

    cfg = config("multi", "accuracy")
    a, b = fold_progress(cfg, 0)["history"], fold_progress(cfg, 1)["history"]
    rounds = queue.Queue()
    console = _RoundConsole(rounds, 2)
    for ra, rb in zip(a, b):
        console.epoch(ra)
        console.epoch(rb)
    got = [rounds.get_nowait() for _ in range(3)]
    best = [[max(r["val/subset_accuracy"] for r in h[:e]) for h in (a, b)] for e in (1, 2, 3)]
    assert got == [{"score": pytest.approx(np.mean(x)), "epoch": e} for e, x in zip((1, 2, 3), best)]


# --- the baseline verb -----------------------------------------------------------------------------------------


def test_the_baseline_verb_names_a_multi_label_runs_subset_accuracy(tmp_path, capsys):
    from reuters_ray.cli import main

    rng = np.random.default_rng(0)
    words = {"grain": "wheat harvest tonnes crop", "oil": "crude barrel opec refinery", "ship": "port vessel cargo"}
    rows = []
    for i in range(120):
        topics = [t for t in words if rng.random() < 0.4] or [list(words)[i % 3]]
        text = " ".join(w for t in topics for w in rng.choice(words[t].split(), 3)) + " said the report today"
        rows.append({"text": text, "label": "|".join(topics)})
    pd.DataFrame(rows).to_csv(tmp_path / "news.csv", index=False)
    flags = ["--data.source", "table", "--data.path", str(tmp_path / "news.csv"), "--data.task", "multi"]
    flags += ["--data.min_samples", "5"]
    assert main(["baseline", *flags, "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert main(["baseline", *flags]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(
        f"test ({m['n_test']} texts, 3 topics): micro-F1 {m['f1_micro']:.4f}, macro-F1 {m['f1_macro']:.4f}, "
        f"samples-F1 {m['f1_samples']:.4f}, subset accuracy {m['subset_accuracy']:.4f}, Hamming loss "
        f"{m['hamming_loss']:.4f}"
    )
    assert m["accuracy"] == m["subset_accuracy"]  # metrics.json's key for its earlier readers
