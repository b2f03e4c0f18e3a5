"""Bad input to `reuters-ray cv`: one clear error line naming the file, field or flag, exit status 2, and nothing
written (the storage folder is not even created). All of it is caught before Ray starts."""

import json

import pandas as pd
import pytest
from conftest import copy_reuters

from reuters_ray.cli import main


def news(n=12, labels=("sports", "markets", "weather")):
    return pd.DataFrame(
        [{"text": f"{lab} story number {i} with words", "label": lab} for lab in labels for i in range(n)]
    )


def table(tmp_path, name, df=None, raw: bytes | None = None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    elif name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in df.to_dict("records")))
    else:
        df.to_csv(path, index=False)
    return ["--data.source", "table", "--data.path", str(path), "--data.min_samples", "2"]


def garbled_sgm(tmp_path, reuters_dir):
    folder = copy_reuters(reuters_dir, tmp_path)
    f = folder / "reut2-007.sgm"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return ["--data.path", str(folder)]


def with_nan_label(tmp_path):
    df = news()
    df.loc[4, "label"] = None
    return table(tmp_path, "nan.csv", df)


def with_empty_text(tmp_path):
    df = news()
    df["text"] = "  "
    return table(tmp_path, "empty.csv", df)


def unseen_test_labels(tmp_path):
    table(tmp_path, "test.csv", news(labels=("sports", "markets", "gardening")))
    return table(tmp_path, "train.csv", news()) + ["--data.test_path", str(tmp_path / "test.csv")]


def storage_under_a_file(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    return table(tmp_path, "ok.csv", news()) + ["--cv.storage_path", str(tmp_path / "a-file" / "runs")]


CASES = {
    "missing data path": (lambda t, r: ["--data.path", str(t / "nowhere")], "data path {t}/nowhere does not exist"),
    "garbled sgm": (garbled_sgm, "reut2-007.sgm: truncated or garbled"),
    "non-UTF-8 table": (
        lambda t, r: table(t, "latin.csv", raw="text,label\ncaf\xe9 au lait,food\n".encode("latin-1")),
        "latin.csv: not UTF-8",
    ),
    "missing column": (
        lambda t, r: table(t, "cols.csv", news().rename(columns={"label": "topic"})),
        "cols.csv: no column 'label'",
    ),
    "no text at all": (lambda t, r: with_empty_text(t), "empty.csv: column 'text' holds no text in any of its"),
    "NaN label": (lambda t, r: with_nan_label(t), "nan.csv: column 'label' has 1 missing label(s), data rows 5"),
    "single class": (lambda t, r: table(t, "one.jsonl", news(labels=("only",))), "single class"),
    "class smaller than folds": (
        lambda t, r: table(t, "few.csv", pd.concat([news(), news(3, labels=("rare",))])) + ["--cv.folds", "3"],
        "3-fold cross-validation needs at least 3 training examples per class; too few in: 'rare' (2)",
    ),
    "unseen test labels": (
        lambda t, r: unseen_test_labels(t),
        "test.csv: test labels never seen in training: 'gardening'",
    ),
    "max_length 0": (
        lambda t, r: ["--data.max_length", "0"],
        "data.max_length must be >= 8 (room for [CLS], [SEP] and some text), got 0",
    ),
    "max_length beyond the model's positions": (
        lambda t, r: ["--data.max_length", "600"],
        "data.max_length=600 but model 'tiny-bert-random' reads at most 512 tokens (max_position_embeddings)",
    ),
    "texts that give TF-IDF no terms": (
        lambda t, r: table(t, "codes.csv", news().assign(text=[f"{i % 4} {i % 3} 1 0" for i in range(36)])),
        "cannot be fitted on the training split: no word of 2 or more characters occurs in 2 or more texts",
    ),
    "a typed flag YAML cannot read": (lambda t, r: ["--train.lr", "*x"], "config: train.lr must be float, got '*x'"),
    "batch size 0": (lambda t, r: ["--train.batch_size", "0"], "train.batch_size must be >= 1, got 0"),
    "one fold": (lambda t, r: ["--cv.folds", "1"], "cv.folds must be >= 2, got 1"),
    "workers that cannot split a batch": (
        lambda t, r: ["--cv.workers_per_fold", "3"],
        "config: cv.workers_per_fold=3 cannot split train.batch_size x train.grad_accum = 32 examples per forward "
        "pass (train.profile default) evenly over its workers; use a number of workers that divides 32",
    ),
    "workers that cannot split the seed profile's micro-batch": (
        lambda t, r: ["--train.profile", "seed", "--cv.workers_per_fold", "16"],
        "cv.workers_per_fold=16 cannot split train.batch_size = 8 examples per forward pass (train.profile seed)",
    ),
    "no workers": (lambda t, r: ["--cv.workers_per_fold", "0"], "cv.workers_per_fold must be >= 1, got 0"),
    "unknown model offline": (
        lambda t, r: ["--model.name", "google/no-such-bert"],
        "model.name 'google/no-such-bert' cannot be loaded",
    ),
    "unwritable storage path": (
        lambda t, r: storage_under_a_file(t),
        "cv.storage_path '{t}/a-file/runs' cannot be written",
    ),
    "storage URI pyarrow refuses": (
        lambda t, r: table(t, "ok.csv", news()) + ["--cv.storage_path", "s3://bkt/runs?colour=blue"],
        "cv.storage_path 's3://bkt/runs?colour=blue': Unexpected query parameter in S3 URI: 'colour'",
    ),
    "config file missing": (lambda t, r: ["--config", str(t / "nope.yaml")], "config: cannot read {t}/nope.yaml"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_error_and_writes_nothing(case, tmp_path, reuters_dir, capsys):
    make, expected = CASES[case]
    args = make(tmp_path, reuters_dir)
    storage = ["--cv.storage_path", str(tmp_path / "runs")] if "--cv.storage_path" not in args else []
    before = sorted(p.name for p in tmp_path.iterdir())
    assert (
        main(["cv", "--data.path", str(reuters_dir), "--model.name", "tiny-bert-random", *args, *storage, "--quiet"])
        == 2
    )
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("reuters-ray: error: ") and expected.format(t=tmp_path) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run folder, no storage folder
