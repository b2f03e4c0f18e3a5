"""The report, the baseline and predictions, checked on the tiny real run (conftest.finished_run)."""

import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reuters_ray.cli import main
from reuters_ray.config import DataConfig, from_dict
from reuters_ray.predictor.ensemble import Ensemble
from reuters_ray.run.report import FIGURES, confused_pairs

SCRIPT = str(Path(sys.executable).parent / "reuters-ray")


def reuters_ray(*args):
    """The installed command, in its own process, as a user runs it."""
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=300)


@dataclass
class Ran:
    code: int
    out: str
    err: str


def cli(capsys, *args) -> Ran:
    """The same command in this process (reuters_ray.cli.main): no new process importing torch."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return Ran(code, out.out, out.err)


def md_table(md: str, header_start: str) -> list[list[str]]:
    """The rows of the markdown table whose header line starts with `header_start`."""
    lines = md.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def html_rows(page: str) -> list[list[str]]:
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", page)]


def test_report_files_figures_and_numbers_equal_metrics_json(finished_run):
    run = finished_run
    m = json.loads((run / "metrics.json").read_text())
    for name in FIGURES:  # real PNGs that decode, of a readable size
        with Image.open(run / name) as im:
            im.load()
            assert im.format == "PNG" and im.width >= 500 and im.height >= 350
    md, page = (run / "report.md").read_text(), (run / "report.html").read_text()
    f4 = lambda x: f"{x:.4f}"  # noqa: E731
    keys = ("accuracy", "f1_weighted", "f1_macro", "precision_weighted", "recall_weighted")
    blend, ensemble, baseline = md_table(md, "| model |")  # the run's predictor first, then the two it blends
    w = m["blend"]["weight"]
    assert blend == [f"blend: {w:.2f} x ensemble + {1 - w:.2f} x linear model", *(f4(m[k]) for k in keys)]
    assert ensemble[0].startswith("ensemble of 2 fold models") and ensemble[1:] == [f4(m["ensemble"][k]) for k in keys]
    assert baseline[0].startswith("baseline: TF-IDF") and baseline[1:] == [f4(m["baseline"][k]) for k in keys]
    b = m["blend"]["out_of_fold"]  # what chose the weight, in the result's text
    assert (
        f"weighted F1 out of fold {f4(b['blend']['f1_weighted'])} for the blend, {f4(b['ensemble']['f1_weighted'])}"
        f" for the fold models, {f4(b['linear']['f1_weighted'])} for the linear model"
    ) in md
    o = m["out_of_fold"]  # out-of-fold figures beside the folds' mean, in the result's text
    assert (
        f"oof_predictions.parquet): accuracy {f4(o['accuracy'])}, weighted F1 {f4(o['f1_weighted'])}, "
        f"macro F1 {f4(o['f1_macro'])}; the folds' mean validation figures at their best epochs: "
        f"{f4(o['folds_mean']['accuracy'])}"
    ) in md
    folds = md_table(md, "| fold |")
    assert [[int(r[0]), int(r[1]), r[4], r[6]] for r in folds] == [
        [f["fold"], f["best_epoch"], f4(f["val_f1_weighted"]), f4(f["test_f1_weighted"])] for f in m["folds"]
    ]
    # where each fold's time went, as folds.csv / metrics.json say, and the run's phases
    times = md_table(md, "| fold | wall |")
    assert [[int(r[0]), r[2], r[3], r[4], r[5]] for r in times] == [
        [
            f["fold"],
            f"{f['setup_s']:.1f} s",
            f"{f['train_s']:.1f} s",
            f"{f['val_s']:.1f} s",
            f"{f['checkpoint_s']:.1f} s",
        ]
        for f in m["folds"]
    ]
    assert all(f["setup_s"] > 0 and f["train_s"] > 0 and f["checkpoint_s"] > 0 for f in m["folds"])
    assert all(f["examples_per_s"] > 0 for f in m["folds"])
    assert set(m["timing"]) == {"data_s", "ray_start_s", "folds_s", "ensemble_s", "baseline_s"}
    assert f"folds {m['timing']['folds_s']:.1f} s" in md
    per_class = md_table(md, "| class |")
    assert [r[0] for r in per_class] == m["label_names"]
    assert [[r[3], int(r[4]), r[5], r[6]] for r in per_class] == [
        [f4(c["f1"]), c["support"], f4(e["f1"]), f4(b["f1"])]
        for c, e, b in zip(m["per_class"], m["ensemble"]["per_class"], m["baseline"]["per_class"])
    ]
    # the HTML carries the same rows
    rows = html_rows(page)
    for row in (blend, ensemble, baseline, *folds, *per_class):
        assert row in rows, row
    # confused pairs as the confusion matrix says
    pairs = md_table(md, "| true class |")
    expected = confused_pairs(np.array(m["confusion_matrix"]), m["label_names"])
    assert [(t, p, int(n)) for t, p, n, _ in pairs] == [(t, p, n) for t, p, n, _ in expected]
    # provenance and setup: the filter step and its counts, the model and the hardware
    assert "| filter_rare_classes |" in md and "| subsample |" in md and "tiny-bert-random" in md and "cpu (" in md
    # self-contained: the figures are inlined, nothing is fetched
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(?!data:|#)', page)


def test_report_command_rebuilds_the_report(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy, ignore=shutil.ignore_patterns("fold_*", "models"))
    for name in ("report.md", "report.html", *FIGURES):
        (copy / name).unlink()
    out = reuters_ray("report", str(copy))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(copy / n) for n in (*FIGURES, "report.html", "report.md")]
    md = (copy / "report.md").read_text()
    assert md == (finished_run / "report.md").read_text().replace(str(finished_run), str(copy))
    out = reuters_ray("report", str(tmp_path / "nothing"))
    assert out.returncode == 2 and "nothing/metrics.json is missing" in out.stderr


def run_test_texts(run):
    """The run's test texts in predictions.parquet's order, prepared again from the run's own data config."""
    import yaml

    from reuters_ray.data.preprocess import prepare

    ds = prepare(from_dict(DataConfig, yaml.safe_load((run / "config.yaml").read_text())["data"]))
    return ds.test_texts, ds.test_ids


def test_ensemble_from_run_reproduces_the_runs_predictions(finished_run):
    texts, ids = run_test_texts(finished_run)
    pred = pd.read_parquet(finished_run / "predictions.parquet")
    assert pred["id"].tolist() == ids
    ens = Ensemble.from_run(finished_run, device="cpu")
    probs = ens.predict_proba(texts)
    m = json.loads((finished_run / "metrics.json").read_text())
    names = m["label_names"]
    assert ens.linear is not None and ens.blend_weight == m["blend"]["weight"]  # the run's own predictor: the blend
    assert ens.label_names == names and probs.shape == (200, 18)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, pred[[f"p_{n}" for n in names]].to_numpy(), atol=1e-5)
    assert ens.predict(texts[:5]) == pred["predicted_label"].tolist()[:5]


def test_predict_command_text_json_file_and_stdin(finished_run, tmp_path, capsys, monkeypatch):
    names = json.loads((finished_run / "metrics.json").read_text())["label_names"]
    texts = [
        "Oil prices rose sharply after OPEC cut output",
        "The company reported quarterly earnings per share of 1.20 dlrs",
    ]
    # in this process (README's commands run the installed `reuters-ray` in its own: test_readme)
    out = cli(capsys, "predict", "--run", str(finished_run), "--json", "--top-k", "4", *texts)
    assert out.code == 0, out.err
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["text"] for r in rows] == texts
    for r in rows:
        assert r["label"] in names and len(r["top"]) == 4 and r["top"][0]["label"] == r["label"]
        ps = [t["p"] for t in r["top"]]
        assert ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1 + 1e-6
    full = cli(capsys, "predict", "--run", str(finished_run), "--json", "--top-k", "18", *texts)
    for line in full.out.splitlines():  # all classes: the probabilities sum to 1
        assert sum(t["p"] for t in json.loads(line)["top"]) == pytest.approx(1.0, abs=1e-4)
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")  # blank lines are texts too: test_field_predict
    from_file = cli(capsys, "predict", "--run", str(finished_run), "--file", str(tmp_path / "texts.txt"))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts)))
    from_stdin = cli(capsys, "predict", "--run", str(finished_run), "-")
    assert from_file.code == 0 and from_file.out == from_stdin.out
    lines = from_file.out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [r["label"] for r in rows]
    bad = cli(capsys, "predict", "--run", str(tmp_path), "some text")
    assert bad.code == 2 and "is it a finished reuters-ray run folder?" in bad.err
    bad = cli(capsys, "predict", "--run", str(finished_run), "--batch-size", "0", "some text")
    assert bad.code == 2 and bad.err.strip() == "reuters-ray: error: --batch-size must be >= 1, got 0"


def test_baseline_command_matches_the_runs_baseline(finished_run, capsys):
    m = json.loads((finished_run / "metrics.json").read_text())
    out = cli(capsys, "baseline", "--config", str(finished_run / "config.yaml"), "--json")
    assert out.code == 0, out.err
    alone = json.loads(out.out)
    for key in ("accuracy", "f1_weighted", "f1_macro", "confusion_matrix"):
        assert alone[key] == m["baseline"][key], key
    # a real baseline on this sample: far above always predicting earn (79 of the 200 test wires)
    from conftest import majority_f1

    y = np.array(
        [m["label_names"].index(t) for t in pd.read_parquet(finished_run / "predictions.parquet")["true_label"]]
    )
    assert m["baseline"]["f1_weighted"] > 0.8 > 3 * majority_f1(y, 18)
