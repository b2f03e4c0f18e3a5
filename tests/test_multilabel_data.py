"""Multi-label data (data.task multi): the ModApte split of the raw Reuters-21578 files against the published
ModApte-90 figures, multi-label tables, and the preprocessing of multi-hot labels (docs/data.md, "Multi-label")."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from reuters_ray.config import DataConfig, RunConfig, from_dict
from reuters_ray.data.dataset import TextDataset
from reuters_ray.data.preprocess import drop_short_texts, filter_rare_classes, preprocess, subsample
from reuters_ray.data.reuters21578 import load_reuters21578
from reuters_ray.data.table import load_table
from reuters_ray.errors import ConfigError, DataError

# The 25 topics of ModApte's training wires that no test wire has (training count in brackets in the note)
TRAIN_ONLY = {
    "austdlr": 4, "can": 3, "castorseed": 1, "citruspulp": 1, "corn-oil": 1, "cornglutenfeed": 2, "cruzado": 1,
    "dkr": 1, "fishmeal": 2, "inventories": 5, "lin-meal": 1, "linseed": 2, "lit": 1, "peseta": 1, "plywood": 4,
    "pork-belly": 3, "rape-meal": 1, "red-bean": 1, "ringgit": 1, "rupiah": 1, "saudriyal": 3, "skr": 1, "stg": 17,
    "tapioca": 3, "wool": 2,
}  # fmt: skip
TOP_10 = [("earn", 2877, 1087), ("acq", 1650, 719), ("money-fx", 538, 179), ("grain", 433, 149), ("crude", 389, 189),
          ("trade", 369, 117), ("interest", 347, 131), ("wheat", 212, 71), ("ship", 197, 89), ("corn", 181, 56)]  # fmt: skip
RAREST_5 = ["castor-oil", "groundnut-oil", "lin-oil", "rye", "sun-meal"]  # 2 wires each
TEST_14832 = ["corn", "grain", "rice", "rubber", "sugar", "tin", "trade"]


@pytest.fixture(scope="module")
def modapte(reuters_dir):
    """The raw ModApte split, every topic of a wire (parsed once for the module)."""
    return load_reuters21578(str(reuters_dir), split="modapte", task="multi")


@pytest.fixture(scope="module")
def modapte90(modapte):
    return preprocess(modapte, min_samples=1)


# --- Reuters-21578, ModApte ----------------------------------------------------------------------------------------


@pytest.mark.multilabel  # parses every Reuters file: with the multi-label run's tests, out of the default suite
def test_modapte_split_before_preprocessing(modapte):
    assert (len(modapte.train_texts), len(modapte.test_texts)) == (9603, 3299)
    assert modapte.multi_label and modapte.train_labels.dtype == np.uint8 and modapte.train_labels.shape == (9603, 118)
    assert modapte.label_names == sorted(modapte.label_names)  # alphabetical
    prov = modapte.provenance
    assert prov["split"]["name"] == "modapte" and prov["split"]["seed"] is None
    assert prov["modapte"]["topics_yes"] == 13476 and prov["modapte"]["not_used"] == 574
    assert prov["modapte"]["without_topics"] == {"train": 1828, "test": 280}
    assert int((modapte.train_labels.sum(axis=1) == 0).sum()) == 1828  # kept as rows of zeros for preprocessing
    # Where each wire's text comes from: a brief is its title alone, an unprocessed wire its whole <TEXT>
    assert prov["modapte"]["text_sources"] == {
        "train": {"title and body": 8762, "title only": 787, "whole text": 54},
        "test": {"title and body": 3009, "title only": 276, "whole text": 14},
    }
    assert all(t.strip() for t in modapte.train_texts + modapte.test_texts)
    assert prov["modapte"]["repeated_topics"] == [
        {"id": "5467", "topics": ["corn"]},
        {"id": "19918", "topics": ["trade"]},
    ]
    assert prov["topics_need_test_wire"] is True


@pytest.mark.multilabel  # parses every Reuters file: with the multi-label run's tests, out of the default suite
def test_modapte_90_counts_and_the_one_wire_nltk_lacks(modapte90, reuters_dir):
    ds = modapte90
    # Published (NLTK's ApteMod corpus): 7,769 training / 3,019 test wires, 90 topics. The one difference is NEWID
    # 1199, a brief (topic trade) that NLTK's cats.txt does not list; every other wire and topic agrees.
    assert (len(ds.train_texts), len(ds.test_texts), ds.num_classes) == (7770, 3019, 90)
    i = ds.train_ids.index("1199")
    assert ds.label_sets("train")[i] == ["trade"]
    assert ds.train_texts[i] == "rostenkowski says he will oppose protectionist trade bill in u.s. house"
    # It is the only TOPICS="YES" wire whose <REUTERS> tag carries the extra CSECS attribute (the likely reason a
    # tag parser of the ApteMod conversion skipped it)
    wires = [m.groups() for f in sorted(reuters_dir.glob("reut2-*.sgm"))
             for m in re.finditer(r"(<REUTERS [^>]*>)(.*?)</REUTERS>", f.read_text("latin-1"), re.S)]  # fmt: skip
    newid = {tag: re.search(r'NEWID="(\d+)"', tag)[1] for tag, _ in wires}
    assert [newid[tag] for tag, _ in wires if 'TOPICS="YES"' in tag and "CSECS" in tag] == ["1199"]
    # 47 of the 7,770 are unprocessed wires (no <TITLE>/<BODY>), and they keep their text
    unprocessed = {newid[tag] for tag, body in wires if '<TEXT TYPE="UNPROC">' in body}
    kept = [t for i, t in zip(ds.train_ids, ds.train_texts) if i in unprocessed]
    assert len(kept) == 47 and all(len(t.split()) >= 3 for t in kept)
    # NLTK's README: 90 topics, 36.7% of the documents in the most common one, five topics with 2 documents each,
    # 1.235 topics per document; NLTK's book: training/9865 and test/14832
    both = ds.counts("train") + ds.counts("test")
    assert sorted(n for n, c in zip(ds.label_names, both) if c == 2) == RAREST_5
    assert round(both.max() / 10789, 3) == 0.367 and round(both.sum() / 10789, 3) == 1.235
    assert ds.label_sets("train")[ds.train_ids.index("9865")] == ["barley", "corn", "grain", "wheat"]
    assert ds.label_sets("test")[ds.test_ids.index("14832")] == TEST_14832
    assert [
        (ds.label_names[k], int(ds.counts("train")[k]), int(ds.counts("test")[k]))
        for k in np.argsort(-ds.counts("train"), kind="stable")[:10]
    ] == TOP_10
    assert (ds.counts("train") >= 1).all() and (ds.counts("test") >= 1).all()


@pytest.mark.multilabel  # parses every Reuters file: with the multi-label run's tests, out of the default suite
def test_modapte_90_preprocessing_steps_and_notes(modapte90):
    steps = {s["step"]: s for s in modapte90.provenance["steps"]}
    assert list(steps) == ["filter_rare_classes", "drop_topics_without_test_wire", "clean_texts", "drop_short_texts"]
    rare = steps["filter_rare_classes"]
    assert [d["name"] for d in rare["params"]["dropped_classes"]] == ["cottonseed", "f-cattle", "sfr"]  # test only
    assert rare["removed"] == rare["params"]["rows_without_kept_topic"] == {"train": 1828, "test": 280}
    untested = steps["drop_topics_without_test_wire"]
    assert {d["name"]: d["train"] for d in untested["params"]["dropped_classes"]} == TRAIN_ONLY
    assert untested["removed"] == {"train": 5, "test": 0}  # wires whose only topics are never tested
    assert steps["drop_short_texts"]["removed"] == {"train": 0, "test": 0}
    notes = modapte90.notes()
    assert notes[0] == (
        "dropped 3 class(es) with fewer than data.min_samples=1 training positives (training count in brackets): "
        "cottonseed (0), f-cattle (0), sfr (0)"
    )
    assert notes[1] == (
        "dropped 2108 text(s) without any kept topic at filter_rare_classes (train 1828, test 280): they have no topic "
        "at all"
    )
    assert notes[2].startswith("dropped 25 topic(s) without a test text (training count in brackets): austdlr (4), ")
    assert notes[3] == (
        "dropped 5 text(s) without any kept topic at drop_topics_without_test_wire (train 5, test 0): each of their "
        "topics lacks a test text (ModApte-90's rule)"
    )


@pytest.mark.multilabel  # parses every Reuters file: with the multi-label run's tests, out of the default suite
def test_modapte_single_label_is_the_first_topic(reuters_dir, modapte):
    ds = load_reuters21578(str(reuters_dir), split="modapte", task="single", seed=1)  # the seed does not apply
    assert (len(ds.train_texts), len(ds.test_texts), ds.num_classes) == (7775, 3019, 81)
    assert ds.train_labels.dtype == np.int64 and ds.label_names == sorted(ds.label_names)
    multi_rows = dict(zip(modapte.train_ids, modapte.label_sets("train")))
    i = ds.train_ids.index("9865")  # <TOPICS> lists grain first
    assert ds.label_names[ds.train_labels[i]] == "grain" and multi_rows["9865"] == ["barley", "corn", "grain", "wheat"]
    assert set(ds.train_ids) == {k for k, v in multi_rows.items() if v}  # every wire with a topic, no other
    again = preprocess(ds, min_samples=1)
    assert (len(again.train_texts), len(again.test_texts), again.num_classes) == (7775, 3011, 78)


def test_modapte_refuses_keras_text_and_keras_split_refuses_multi(reuters_dir):
    with pytest.raises(DataError, match=r"^data.text keras is Keras's reading .* use data.text title\+body$"):
        load_reuters21578(str(reuters_dir), text="keras", split="modapte", task="multi")
    with pytest.raises(DataError, match=r"^data.task multi needs data.split modapte"):
        load_reuters21578(str(reuters_dir), split="keras", task="multi")


def test_multi_with_the_keras_source_is_refused_in_one_line():
    expected = (
        "config: data.task must be single with the keras source (Keras's reuters.npz has one topic per wire; for "
        "several use data.source reuters21578 with data.split modapte), got 'multi'"
    )
    with pytest.raises(ConfigError) as e:
        DataConfig(source="keras", task="multi")
    assert str(e.value) == expected
    with pytest.raises(ConfigError) as e:
        from_dict(RunConfig, {"data": {"source": "keras", "task": "multi"}})
    assert str(e.value) == expected and "\n" not in str(e.value)


@pytest.mark.multilabel  # parses every Reuters file: with the multi-label run's tests, out of the default suite
def test_subsample_keeps_every_topics_share(modapte90):
    ds = modapte90
    sample = subsample(ds, 1000, 500, seed=113)
    step = sample.provenance["steps"][-1]  # the topics the sample holds no training text of are dropped after it
    assert step["step"] == "drop_topics_without_training_text" and step["params"]["classes_after"] == 71
    assert all(
        ds.counts("train")[ds.label_names.index(d["name"])] * 1000 / 7770 < 1.5
        for d in step["params"]["dropped_classes"]
    )
    assert step["removed"]["train"] == 0 and len(sample.train_texts) == 1000
    assert len(sample.test_texts) == 500 - step["removed"]["test"]
    assert any("left without a training text by data.train_sample=1000" in line for line in sample.notes())
    drawn = sample.provenance["steps"][-2]["after"]
    assert drawn == {"train": 1000, "test": 500}
    kept = [ds.label_names.index(n) for n in sample.label_names]
    share = ds.counts("train")[kept] * 1000 / 7770
    assert np.abs(sample.counts("train") - share).max() < 1.5  # every kept topic within 1.5 texts of its share
    assert [int(sample.counts("train")[sample.label_names.index(n)]) for n, _, _ in TOP_10] == [
        370,
        212,
        69,
        55,
        49,
        47,
        45,
        27,
        25,
        23,
    ]
    # a plain random sample of the same size is off by 25 texts for some topic
    rows = np.random.RandomState(113).choice(len(ds.train_texts), 1000, replace=False)
    assert np.abs(ds.train_labels[rows].sum(axis=0) - ds.counts("train") * 1000 / 7770).max() > 25
    assert subsample(ds, 1000, 500, seed=113).train_ids == sample.train_ids  # seeded
    assert subsample(ds, 1000, 500, seed=7).train_ids != sample.train_ids


# --- tables --------------------------------------------------------------------------------------------------------


def write(path, rows):
    """A table file of `rows` (dicts): CSV through the csv module's quoting, JSON Lines, or Parquet."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


TRAIN_ROWS = [("a", "rain stops the match", "weather|sport"), ("b", "the vote is counted", "politics"),
              ("c", "storm delays the ballot", "weather | politics"), ("d", "cup final tonight", "sport"),
              ("e", "minister opens the stadium", "politics|sport|")]  # fmt: skip
TEST_ROWS = [("f", "snow on the pitch", "sport|weather"), ("g", "budget passes", "politics")]
MATRIX_TRAIN = [[0, 1, 1], [1, 0, 0], [1, 0, 1], [0, 1, 0], [1, 1, 0]]  # politics, sport, weather
MATRIX_TEST = [[0, 1, 1], [1, 0, 0]]


def as_rows(rows, lists: bool):
    return [
        {"id": i, "text": t, "label": [x.strip() for x in lab.split("|") if x.strip()] if lists else lab}
        for i, t, lab in rows
    ]


@pytest.mark.parametrize("suffix,lists", [(".csv", False), (".jsonl", True), (".parquet", True), (".jsonl", False)])
def test_three_topic_table_loads_to_the_exact_multi_hot_matrix(tmp_path, suffix, lists):
    train = write(tmp_path / f"train{suffix}", as_rows(TRAIN_ROWS, lists))
    test = write(tmp_path / f"test{suffix}", as_rows(TEST_ROWS, lists))
    ds = load_table(train, test_path=test, task="multi")
    assert ds.label_names == ["politics", "sport", "weather"] and ds.multi_label
    assert ds.train_labels.dtype == np.uint8
    assert ds.train_labels.tolist() == MATRIX_TRAIN and ds.test_labels.tolist() == MATRIX_TEST
    assert ds.train_ids == ["a", "b", "c", "d", "e"] and ds.test_ids == ["f", "g"]
    assert ds.provenance["task"] == "multi" and not any("every row has one label" in n for n in ds.notes())


def test_another_label_delimiter(tmp_path):
    rows = [{"text": t, "label": lab.replace("|", ";")} for _, t, lab in TRAIN_ROWS]
    test = [{"text": t, "label": lab.replace("|", ";")} for _, t, lab in TEST_ROWS]
    train, test = write(tmp_path / "tr.csv", rows), write(tmp_path / "te.csv", test)
    ds = load_table(train, test_path=test, task="multi", label_delimiter=";")
    assert ds.train_labels.tolist() == MATRIX_TRAIN and ds.test_labels.tolist() == MATRIX_TEST
    assert ds.provenance["label_delimiter"] == ";"
    with pytest.raises(
        DataError,
        match=r"tr.csv: column 'label': no label cell holds data.label_delimiter '\|', but 4 of 7 cells of \S+tr.csv "
        r"and \S+te.csv hold a semicolon \(data row 1 of \S+tr.csv: 'weather;sport'\); if it separates the labels, "
        r"set --data.label_delimiter ';'; if each cell is one label, use --data.task single$",
    ):
        load_table(train, test_path=test, task="multi")  # both files read at "|": refused before any split


def test_rows_without_a_label_are_dropped_with_a_note(tmp_path):
    rows = as_rows(TRAIN_ROWS, lists=False) + [{"id": "x", "text": "no label here", "label": ""},
                                                 {"id": "y", "text": "only the delimiter", "label": " | "}]  # fmt: skip
    test = as_rows(TEST_ROWS, lists=True) + [
        {"id": "z", "text": "an empty list", "label": []},
        {"id": "w", "text": "null", "label": None},
    ]
    ds = load_table(write(tmp_path / "tr.csv", rows), test_path=write(tmp_path / "te.jsonl", test), task="multi")
    assert ds.train_ids == ["a", "b", "c", "d", "e"] and ds.test_ids == ["f", "g"]
    step = ds.provenance["steps"][-1]
    assert step["step"] == "drop_unlabelled_rows" and step["removed"] == {"train": 2, "test": 2}
    assert [n for n in ds.notes() if "without a label" in n] == [
        f"warning: {tmp_path / 'tr.csv'}: dropped 2 row(s) without a label in column 'label', data rows 6, 7",
        f"warning: {tmp_path / 'te.jsonl'}: dropped 2 row(s) without a label in column 'label', data rows 3, 4",
    ]
    with pytest.raises(DataError, match=r"none.csv: column 'label' holds no label in any of its 2 rows$"):
        load_table(write(tmp_path / "none.csv", rows[-2:]), task="multi")
    with pytest.raises(
        DataError, match=r"column 'label' has 1 missing label\(s\), data rows 6$"
    ):  # task single: refused
        load_table(str(tmp_path / "tr.csv"))


def test_one_label_per_row_gives_one_warning(tmp_path):
    rows = [{"text": f"{lab} story {i}", "label": lab} for i in range(5) for lab in ("sport", "politics")]
    train, test = write(tmp_path / "tr.csv", rows), write(tmp_path / "te.csv", rows[:4])
    ds = load_table(train, test_path=test, task="multi")
    warned = [n for n in ds.notes() if "every row has one label" in n]
    assert warned == [
        f"warning: {train} and {test}: column 'label': every row has one label (data.label_delimiter is '|'); "
        f"data.task single may be what you want"
    ]
    assert ds.train_labels.shape == (10, 2)


def test_one_file_is_split_by_seeded_multilabel_stratification(tmp_path):
    def topics(i):
        on = (i % 2, i % 3 == 0, i % 5 == 0, 1 - i % 2)
        return "|".join(t for t, yes in zip(("energy", "markets", "policy", "tech"), on) if yes)

    rows = [{"id": f"r{i}", "text": f"story {i}", "label": topics(i)} for i in range(60)]
    path = write(tmp_path / "news.csv", rows)
    ds = load_table(path, task="multi", test_size=0.25, seed=3)
    assert (len(ds.train_texts), len(ds.test_texts)) == (45, 15)
    assert ds.counts("train").tolist() == [22, 15, 9, 23] and ds.counts("test").tolist() == [8, 5, 3, 7]
    assert load_table(path, task="multi", test_size=0.25, seed=3).test_ids == ds.test_ids
    assert load_table(path, task="multi", test_size=0.25, seed=4).test_ids != ds.test_ids
    rare = rows + [{"id": "solo", "text": "one of a kind", "label": "energy|space"}]
    with pytest.raises(
        DataError, match=r"at least 2 examples per label; only 1 for 'space'\. Add examples or give data.test_path$"
    ):
        load_table(write(tmp_path / "rare.csv", rare), task="multi")


def test_test_labels_never_seen_in_training_and_bad_cells(tmp_path):
    train = write(tmp_path / "tr.jsonl", as_rows(TRAIN_ROWS, lists=True))
    test = write(tmp_path / "te.jsonl", [{"text": "new topic", "label": ["sport", "science"]}])
    with pytest.raises(DataError, match=r"te.jsonl: test labels never seen in training: 'science'$"):
        load_table(train, test_path=test, task="multi")
    nested = write(
        tmp_path / "nested.jsonl", [{"text": "x y", "label": ["a", ["b"]]}, {"text": "z", "label": {"k": 1}}]
    )
    with pytest.raises(
        DataError, match=r"nested.jsonl: column 'label' holds a list or mapping inside a list in data rows 1$"
    ):
        load_table(nested, task="multi")
    tab = write(tmp_path / "tab.jsonl", [{"text": "x y", "label": ["a\tb"]}])
    with pytest.raises(DataError, match=r"tab.jsonl: column 'label' holds a line break, tab .* in data rows 1$"):
        load_table(tab, task="multi")


# --- preprocessing of multi-hot labels -----------------------------------------------------------------------------


def small(train_rows, test_rows, names=("a", "b", "c")):
    """A multi-label TextDataset of (text, labels) rows."""

    def hot(rows):
        return np.array([[int(n in labs) for n in names] for _, labs in rows], dtype=np.uint8).reshape(-1, len(names))

    return TextDataset(
        train_texts=[t for t, _ in train_rows], train_labels=hot(train_rows),
        test_texts=[t for t, _ in test_rows], test_labels=hot(test_rows), label_names=list(names),
        train_ids=[f"tr{i}" for i in range(len(train_rows))], test_ids=[f"te{i}" for i in range(len(test_rows))],
    )  # fmt: skip


def test_filter_rare_classes_drops_topics_then_rows_left_without_one():
    ds = small(
        [("one two three", "ab"), ("four five six", "a"), ("seven eight nine", "c"), ("ten eleven twelve", "b")],
        [("x y z", "c"), ("p q r", "ac"), ("s t u", "b")],
    )
    out = filter_rare_classes(ds, min_samples=2)  # c has 1 training positive
    assert out.label_names == ["a", "b"]
    assert out.train_labels.tolist() == [[1, 1], [1, 0], [0, 1]] and out.train_ids == ["tr0", "tr1", "tr3"]
    assert out.test_labels.tolist() == [[1, 0], [0, 1]] and out.test_ids == ["te1", "te2"]
    step = out.provenance["steps"][-1]
    assert step["removed"] == {"train": 1, "test": 1} and step["params"]["dropped_classes"] == [
        {"name": "c", "train": 1, "test": 2}
    ]
    assert out.notes()[-1] == (
        "dropped 2 text(s) without any kept topic at filter_rare_classes (train 1, test 1): only topics below "
        "data.min_samples=2 (a lower value keeps them)"
    )
    with pytest.raises(DataError, match=r"^data.min_samples=3 leaves 0 class\(es\) with enough training examples"):
        filter_rare_classes(ds, min_samples=3)


def test_drop_short_texts_on_multi_hot_labels():
    ds = small([("one two three", "ab"), ("four", "a"), ("seven eight nine", "b"), ("ten", "c")], [("x y z", "a")])
    with pytest.raises(DataError, match=r"data.min_tokens=3 removes every training example of: c$"):
        drop_short_texts(ds, min_tokens=3)
    out = drop_short_texts(ds, min_tokens=1)
    assert out.train_labels.shape == (4, 3)
    two = small([("one two three", "ab"), ("four", "a"), ("seven eight nine", "b")], [("x y z", "a")], names=("a", "b"))
    kept = drop_short_texts(two, min_tokens=3)
    assert kept.train_labels.tolist() == [[1, 1], [0, 1]] and kept.train_ids == ["tr0", "tr2"]
    assert kept.notes() == [
        "warning: dropped 1 text(s) with fewer than data.min_tokens=3 words (train 1, test 0): ids tr1"
    ]
