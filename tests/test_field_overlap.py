"""Inputs from the field, part 3 (issue 41): the same text on both sides of a split is named, in every command that
splits or reads a test file (`data summary`, `baseline`, `cv` and a search's check of its base config, `distill`),
and the test figures are given again on the test texts that are not training texts. Texts are compared after the
run's own cleaning. The example: a table of 150 texts with random labels, each row written twice."""

import json

import numpy as np
import pandas as pd
import pytest

from reuters_ray.cli import main
from reuters_ray.data.overlap import fold_leaks, overlap_notes, repeated_rows, shared_test_rows


@pytest.fixture(scope="module")
def random_tables(tmp_path_factory):
    """once.csv: 150 texts of 12 random words with random labels a/b/c (nothing to learn); twice.csv: the same rows,
    each written twice (as a careless export or a concatenation does)."""
    folder = tmp_path_factory.mktemp("overlap")
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(400)]
    df = pd.DataFrame(
        {"text": [" ".join(rng.choice(vocab, 12)) for _ in range(150)], "label": rng.choice(["a", "b", "c"], 150)}
    )
    df.to_csv(folder / "once.csv", index=False)
    pd.concat([df, df]).to_csv(folder / "twice.csv", index=False)
    return folder


def _table(path) -> list[str]:
    return ["--data.source", "table", "--data.path", str(path), "--data.min_samples", "1"]


def test_baseline_names_the_test_texts_it_trained_on_and_scores_the_others(random_tables, capsys):
    assert main(["baseline", *_table(random_tables / "once.csv")]) == 0
    once = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("warning") for line in once)
    assert once[-1] == "test (30 texts): accuracy 0.4333, weighted F1 0.4331, macro F1 0.4327"  # chance: 1 in 3

    assert main(["baseline", *_table(random_tables / "twice.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "warning: 42 of 60 test texts (70%) are also training texts (the same text after cleaning; test ids 13, 17, "
        "19, 21, 25, 36, 40, 51, 56, 79 and 32 more): the test figures count them as held out, which flatters a model "
        "that remembers its training texts; the baseline also scores the 18 test texts that are not training texts"
    )
    assert out[-1] == (
        "test (60 texts): accuracy 0.7333, weighted F1 0.7276, macro F1 0.7239; on the 18 test texts that are not "
        "training texts: accuracy 0.1111, weighted F1 0.0635, macro F1 0.0952"
    )
    assert main(["baseline", "--json", *_table(random_tables / "twice.csv")]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["test_unseen"] == {
        "n": 18,
        "shared_with_training": 42,
        "accuracy": pytest.approx(2 / 18),
        "f1_weighted": pytest.approx(0.0635, abs=5e-5),
        "f1_macro": pytest.approx(0.0952, abs=5e-5),
    }
    assert m["notes"][1] == out[1]


def test_data_summary_names_them_and_the_copies_inside_the_training_split(random_tables, capsys):
    assert main(["data", "summary", *_table(random_tables / "twice.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("warning: 42 of 60 test texts (70%) are also training texts") and out[1].endswith(
        "; `reuters-ray baseline` or `cv` also scores the 18 test texts that are not training texts"
    )
    assert out[2] == (
        "warning: 99 training texts are copies of another training text (99 texts written more than once, after "
        "cleaning; ids 150, 151, 152, 154, 155, 158, 159, 160, 162, 165 and 89 more): a fold's validation rows may "
        "hold copies of its training rows"
    )
    assert main(["data", "summary", "--json", *_table(random_tables / "twice.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["notes"][1:3] == out[1:3]


def test_cv_and_a_search_name_each_folds_copies_before_ray(random_tables, tmp_path):
    """check_input: what `cv` (and `tune`, for its base config) checks and says before anything is written."""
    from reuters_ray.config import CVConfig, DataConfig, ModelConfig, RunConfig
    from reuters_ray.run.inputs import check_input
    from reuters_ray.run.outputs import _fold_copies

    cfg = RunConfig(
        data=DataConfig(source="table", path=str(random_tables / "twice.csv"), min_samples=1, max_length=16),
        model=ModelConfig(name="tiny-bert-random"),
        cv=CVConfig(folds=3, storage_path=str(tmp_path / "runs")),
    )
    prep = check_input(cfg, tokenize_now=False)
    leaks = fold_leaks(prep.ds.train_texts, prep.folds)
    assert [len(rows) for rows in leaks] == [43, 35, 40]  # of 80 validation rows each: near half are copies
    test_line, fold_line = prep.notes
    assert test_line.startswith("warning: 42 of 60 test texts (70%)") and test_line.endswith(
        "; the run also scores the 18 test texts that are not training texts"
    )
    assert fold_line.startswith(
        "warning: the fold's validation rows hold texts that are also its training rows (fold 0 43 of 80, fold 1 35 "
        "of 80, fold 2 40 of 80; ids "
    )
    assert fold_line.endswith(
        "): validation figures, and what is chosen on them (the best epoch, early stopping, the blend's weight, "
        "multi-label thresholds), count them as held out"
    )
    assert not (tmp_path / "runs").exists()
    for k, (train_idx, val_idx) in enumerate(prep.folds):  # each leak is a validation row with its copy in training
        train = {prep.ds.train_texts[i] for i in train_idx}
        assert all(prep.ds.train_texts[i] in train for i in leaks[k]) and set(leaks[k]) <= set(val_idx)
    # what the run's metrics.json (run_record: a cross-validation's and a student's) and report keep of it
    from reuters_ray.run.report import _overlap_notes

    copies = _fold_copies(prep)["fold_copies"]
    assert [(c["fold"], c["validation_rows"], c["also_training_texts"]) for c in copies] == [
        (0, 80, 43), (1, 80, 35), (2, 80, 40)
    ]  # fmt: skip
    assert copies[0]["ids"] == [prep.ds.train_ids[i] for i in leaks[0]]
    assert _overlap_notes({"fold_copies": copies}) == [
        "**Validation rows that are training texts of their own fold:** fold 0 43 of 80, fold 1 35 of 80, fold 2 40 "
        "of 80 (`fold_copies` in metrics.json names them): the validation figures, and what was chosen on them, count "
        "them as held out."
    ]


def test_a_test_file_holding_training_texts_after_cleaning(tmp_path, capsys):
    """data.test_path: a test file with two training texts, one spelled in other case and spacing (the run's
    cleaning makes them one), a third with another label than its training copy, and a fourth that only resembles
    one (not counted)."""
    train = pd.DataFrame(
        {
            "text": [f"story {i} about {w}" for i in range(20) for w in ("oil", "wheat")],
            "label": ["crude", "grain"] * 20,
        }
    )
    texts = [
        "Story 3  about OIL",
        "story 4 about wheat",
        "story 4 about wheat.",
        "a new story about oil",
        "story 5 about oil",
    ]
    test = pd.DataFrame({"text": texts, "label": ["crude", "grain", "grain", "crude", "grain"]})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    args = [*_table(tmp_path / "train.csv"), "--data.test_path", str(tmp_path / "test.jsonl")]
    assert main(["baseline", *args]) == 0
    out = capsys.readouterr().out
    assert (
        "warning: 3 of 5 test texts (60%) are also training texts (the same text after cleaning; test ids 0, 1, 4): 2 "
        "with their training copy's labels (which flatters a model that remembers its training texts), 1 with others "
        "(the data disagrees with itself); the test figures count them as held out; the baseline also scores the 2 "
        "test texts that are not training texts"
    ) in out
    assert "; on the 2 test texts that are not training texts: accuracy " in out


def test_data_summary_shows_the_sample_a_run_trains_on(reuters_dir, capsys):
    """data.train_sample and test_sample: the class table and the first lines are those of what a run uses."""
    args = [
        "data",
        "summary",
        "--data.path",
        str(reuters_dir),
        "--data.train_sample",
        "750",
        "--data.test_sample",
        "300",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("kept a stratified sample of 750 of 8227 training texts") for line in out)
    (total,) = [line for line in out if line.split()[:1] == ["total"]]
    assert total.split() == ["total", "750", "300"]
    assert any(line.startswith("warning: 1 of 300 test texts (0.3%) are also training texts") for line in out)


def test_the_reuters_splits_counts(reuters, reuters_keras_text):
    """Reuters-21578 itself: wires that repeat a wire word for word. Keras's text (a brief without a body gets a
    later wire's body) makes four times as many."""
    from reuters_ray.data.preprocess import preprocess

    for ds, shared, copies in ((reuters, 41, 80), (reuters_keras_text, 196, 467)):
        ds = preprocess(ds, 50)
        assert (len(ds.train_texts), len(ds.test_texts)) == (8227, 2043)
        assert len(shared_test_rows(ds.train_texts, ds.test_texts)) == shared
        assert len(repeated_rows(ds.train_texts)) == copies
        assert overlap_notes(ds)[0].startswith(f"warning: {shared} of 2043 test texts ({shared / 2043:.0%}) are also")
