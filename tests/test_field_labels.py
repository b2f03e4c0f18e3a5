"""Inputs from the field, issue 41: label cells read as the user meant them (kind 3), and what a task changes in the
data said in one line with counts and the setting that keeps it (kind 7). Data only: no Ray, no training."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from test_keras_source import write_keras_cache

from reuters_ray.cli import main
from reuters_ray.config import DataConfig
from reuters_ray.data.dataset import TextDataset
from reuters_ray.data.keras_reuters import NPZ_SHA256, PUBLISHED, _rule_note, load_keras_reuters
from reuters_ray.data.preprocess import filter_rare_classes, prepare
from reuters_ray.data.table import load_table
from reuters_ray.errors import DataError

# Reuters-style topic sets, five rows each: a third of the cells hold two topics
SETS = [["grain", "wheat"], ["grain"], ["wheat"], ["corn", "grain"], ["earn"], ["acq"]]
NAMES = ["acq", "corn", "earn", "grain", "wheat"]
TOTALS = [5, 5, 5, 15, 10]  # rows per topic in NAMES' order, train and test together


def sets_table(cell=lambda labels: ",".join(labels), n=5) -> pd.DataFrame:
    """n rows per topic set of SETS, row r holding SETS[r % 6]; the label cell written by `cell`."""
    rows = [
        {"id": f"r{i * len(SETS) + k}", "text": f"story {i} on {' and '.join(s)} markets", "label": cell(s)}
        for i in range(n)
        for k, s in enumerate(SETS)
    ]
    return pd.DataFrame(rows)


def write(df: pd.DataFrame, path):
    """`df` as CSV, TSV, JSON Lines or Parquet (from the suffix); list cells stay lists in JSON Lines and Parquet and
    become Python's notation in CSV/TSV, as pandas writes them."""
    fmt = path.suffix.lstrip(".")
    if fmt == "parquet":
        df.to_parquet(path)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))
    else:
        df.to_csv(path, index=False, sep="\t" if fmt == "tsv" else ",")
    return str(path)


def sets_of(ds: TextDataset) -> dict[str, set[str]]:
    """Each id's labels, train and test."""
    return {i: set(ls) for s in ("train", "test") for i, ls in zip(getattr(ds, f"{s}_ids"), ds.label_sets(s))}


def expected_sets(df: pd.DataFrame) -> dict[str, set[str]]:
    return {i: set(SETS[int(i[1:]) % len(SETS)]) for i in df["id"]}


# --- kind 3: cells of several labels -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_labels_apart_by_another_separator_are_refused_naming_it_then_read_with_it(tmp_path, fmt):
    """Was: `grain,wheat` loaded as label combinations (classes 'grain,wheat', 'corn,grain', ...) with a warning to
    use data.task single."""
    df = sets_table()
    path = write(df, tmp_path / f"topics.{fmt}")
    with pytest.raises(DataError) as e:
        load_table(path, task="multi")
    assert str(e.value) == (
        f"{path}: column 'label': no label cell holds data.label_delimiter '|', but 10 of 30 hold a comma (data row 1: "
        f"'grain,wheat'); if it separates the labels, set --data.label_delimiter ','; if each cell is one label, use "
        f"--data.task single"
    )
    ds = load_table(path, task="multi", label_delimiter=",")
    assert ds.label_names == NAMES and (ds.counts("train") + ds.counts("test")).tolist() == TOTALS
    assert sets_of(ds) == expected_sets(df)
    assert not any("every row has one label" in n for n in ds.notes())
    single = load_table(path, seed=1)  # task single: a comma is part of a class name ("Washington, D.C.")
    assert single.label_names == ["acq", "corn,grain", "earn", "grain", "grain,wheat", "wheat"]


def test_a_test_file_whose_cells_hold_another_separator_is_named(tmp_path):
    train = sets_table(lambda s: s[0])  # one topic per cell, no separator
    test = sets_table(lambda s: ";".join(s), n=1).assign(id=lambda d: "t" + d["id"])
    train_path, test_path = write(train, tmp_path / "train.csv"), write(test, tmp_path / "test.csv")
    with pytest.raises(DataError) as e:
        load_table(train_path, test_path=test_path, task="multi")
    assert str(e.value) == (
        f"{test_path}: column 'label': no label cell holds data.label_delimiter '|', but 2 of 36 cells of {train_path} "
        f"and {test_path} hold a semicolon (data row 1 of {test_path}: 'grain;wheat'); if it separates the labels, set "
        f"--data.label_delimiter ';'; if each cell is one label, use --data.task single"
    )


@pytest.mark.parametrize("lists", ["train", "test"])
@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_a_file_joining_the_other_files_labels_with_a_separator_is_named(tmp_path, lists, fmt):
    """One file writes label sets as lists (Parquet or JSON Lines lists, pandas' notation in a CSV), the other joins
    the same labels with a comma: each file alone is consistent, so only the pair shows that 'grain,wheat' is two
    labels (was: read as a class of its own, silently, or "test labels never seen in training")."""
    listed = sets_table(list)
    joined = sets_table(lambda s: ",".join(s), n=2).assign(id=lambda d: "t" + d["id"])
    paths = {
        "train": write(
            listed if lists == "train" else joined, tmp_path / f"train.{fmt if lists == 'train' else 'csv'}"
        ),
        "test": write(joined if lists == "train" else listed, tmp_path / f"test.{fmt if lists == 'test' else 'csv'}"),
    }
    other = "test" if lists == "train" else "train"
    with pytest.raises(DataError) as e:
        load_table(paths["train"], test_path=paths["test"], task="multi")
    assert str(e.value) == (
        f"{paths[other]}: column 'label': 4 of its label cells join {paths[lists]}'s labels with a comma (e.g. "
        f"'grain,wheat') while {paths[lists]} writes several labels per cell; write both files' label sets the same "
        f"way, or set --data.label_delimiter ',' (a list stays a list)"
    )
    ds = load_table(paths["train"], test_path=paths["test"], task="multi", label_delimiter=",")
    assert ds.label_names == NAMES
    assert sets_of(ds) == {**expected_sets(listed), **{i: set(SETS[int(i[2:]) % 6]) for i in joined["id"]}}


def test_a_label_with_a_comma_is_never_split(tmp_path):
    """'Washington, D.C.' is one label: kept whole by task single without a word, kept whole by task multi where the
    cells of several labels use the delimiter, and refused (not split) by task multi where no cell does."""
    places = ["Washington, D.C.", "Boston", "Paris"]
    rows = [{"text": f"news {i} from {p}", "label": p} for i in range(6) for p in places]
    single = write(pd.DataFrame(rows), tmp_path / "places.csv")
    ds = load_table(single, seed=2)
    assert ds.label_names == ["Boston", "Paris", "Washington, D.C."]
    assert ds.notes() == [f"{single}: read as CSV with delimiter comma (the file's own)"]
    with pytest.raises(
        DataError, match=r"but 6 of 18 hold a comma \(data row 1: 'Washington, D.C.'\); if it separates"
    ):
        load_table(single, task="multi")
    rows += [{"text": f"tour {i}", "label": "Washington, D.C. | Paris"} for i in range(4)]
    ds = load_table(write(pd.DataFrame(rows), tmp_path / "multi.csv"), task="multi", seed=2)
    assert ds.label_names == ["Boston", "Paris", "Washington, D.C."]
    assert sorted(map(sorted, ds.label_sets("train") + ds.label_sets("test"))).count(["Paris", "Washington, D.C."]) == 4


NOTATIONS = {
    "pandas' to_csv of a list column": ("csv", list, "Python list", "['grain', 'wheat']"),
    "JSON": ("csv", json.dumps, "JSON list", '["grain", "wheat"]'),
    "a tuple": ("csv", lambda s: str(tuple(s)), "Python tuple", "('grain', 'wheat')"),
    "a numpy array": ("tsv", lambda s: str(np.array(s)), "numpy array", "['grain' 'wheat']"),
    "numpy strings in a list": (
        "csv",
        lambda s: str(list(np.array(s))),
        "Python list",
        "[np.str_('grain'), np.str_('wheat')]",
    ),
    "Python in JSON Lines": ("jsonl", str, "Python list", "['grain', 'wheat']"),
    "a set in Parquet": ("parquet", lambda s: str(set(s)), "Python set", None),
}


@pytest.mark.parametrize("name", list(NOTATIONS))
def test_cells_in_list_notation_are_read_as_lists(tmp_path, name):
    fmt, cell, notation, first = NOTATIONS[name]
    df = sets_table(cell)
    path = write(df, tmp_path / f"lists.{fmt}")
    ds = load_table(path, task="multi", seed=4)
    assert ds.label_names == NAMES and (ds.counts("train") + ds.counts("test")).tolist() == TOTALS
    assert sets_of(ds) == expected_sets(df)
    first = first or df["label"][0]  # a set's order is Python's
    assert (
        f"{path}: column 'label' holds its labels in {notation} notation (data row 1: {first!r}): each item read "
        "as a label" in ds.notes()
    )
    (single,) = [n for n in load_table(path, seed=4).notes() if n.startswith("warning")]  # task single: said
    assert single == (
        f"warning: {path}: column 'label': 30 cell(s) hold labels in {notation} notation (data row 1: {first!r}), "
        f"read as 6 class(es) named as written; --data.task multi reads each item as a label"
    )


def test_list_items_keep_their_spelling(tmp_path):
    cells = ['["01", 1]', "['1']", "[1.50, '01']", "[]"]
    rows = [{"text": f"code {i} {c}", "label": c} for i in range(4) for c in cells]
    path = write(pd.DataFrame(rows), tmp_path / "codes.csv")
    ds = load_table(path, task="multi", seed=1)
    assert ds.label_names == ["01", "1", "1.50"]  # by value, then spelling; none merged, none rounded
    assert f"{path}: column 'label' holds the number 1 and the string \"1\": one class '1'" in ds.notes()
    assert ds.provenance["steps"][-1]["removed"] == {"train": 4, "test": 0}  # the empty lists: rows without a label


def test_cells_in_list_notation_beside_other_text_or_in_no_notation_are_refused(tmp_path):
    mixed = sets_table(lambda s: str(s) if len(s) > 1 else s[0])
    path = write(mixed, tmp_path / "mixed.csv")
    code = sets_table(str)
    code.loc[29, "label"] = f"[__import__('pathlib').Path({str(tmp_path / 'ran')!r}).touch()]"  # parsed, never run
    with pytest.raises(
        DataError, match=r"code.csv: .* in data rows 1, 2, 3, 4, 5 \.\.\. but other text in data rows 30 "
    ):
        load_table(write(code, tmp_path / "code.csv"), task="multi")
    assert not (tmp_path / "ran").exists()
    with pytest.raises(DataError) as e:
        load_table(path, task="multi")
    assert str(e.value) == (
        f"{path}: column 'label' holds labels in Python list notation (data row 1: \"['grain', 'wheat']\") in data "
        f"rows 1, 4, 7, 10, 13 ... but other text in data rows 2, 3, 5, 6, 8 ... (data row 2: 'grain'); write every "
        f"cell the same way: a list, or labels separated by data.label_delimiter '|'"
    )
    flow = {"bare": lambda s: f"[{', '.join(s)}]", "some": lambda s: f"[{', '.join(s)}]" if len(s) > 1 else s[0]}
    for name, cell in flow.items():
        bare = write(sets_table(cell), tmp_path / f"{name}.csv")  # YAML's flow style: every cell, or the lists alone
        with pytest.raises(DataError) as e:
            load_table(bare, task="multi")
        assert str(e.value) == (
            f"{bare}: column 'label' holds bracketed lists that are neither JSON nor Python notation (data row 1: "
            f"'[grain, wheat]'); write them as [\"grain\", \"wheat\"], or as labels separated by data.label_delimiter '|'"
        )


def test_the_one_label_warning_names_the_right_remedy(tmp_path):
    one = sets_table(lambda s: json.dumps(s[:1]))
    path = write(one, tmp_path / "one.csv")
    (warning,) = [n for n in load_table(path, task="multi").notes() if "every row has one label" in n]
    assert warning == (
        f"warning: {path}: column 'label': every row has one label (each list holds one item); data.task single may be "
        f"what you want, with the labels written bare"
    )


def test_task_single_says_which_cells_hold_several_labels(tmp_path):
    cells = ["grain|wheat", "grain", "wheat", "['corn', 'grain']", "earn"]
    rows = [{"text": f"story {i} {c}", "label": c} for i in range(5) for c in cells]
    path = write(pd.DataFrame(rows), tmp_path / "mixed.csv")
    ds = load_table(path, seed=3)
    assert ds.label_names == ["['corn', 'grain']", "earn", "grain", "grain|wheat", "wheat"]  # as written
    assert ds.notes()[1:] == [
        f"warning: {path}: column 'label': 5 cell(s) hold labels in Python list notation (data row 4: \"['corn', "
        f"'grain']\"), read as 1 class(es) named as written; --data.task multi reads each item as a label",
        f"warning: {path}: column 'label': 5 cell(s) hold data.label_delimiter '|' (data row 1: 'grain|wheat'), read "
        f"as 1 class(es) named as written; --data.task multi splits them into labels",
    ]


@pytest.mark.parametrize("verb", ["data summary", "baseline", "cv", "tune"])
def test_every_entry_point_refuses_such_cells_in_one_line_before_anything(tmp_path, capsys, verb):
    path = write(sets_table(), tmp_path / "topics.csv")
    (tmp_path / "search.yaml").write_text("space:\n  train.lr: {log_uniform: [1.0e-4, 1.0e-3]}\n")
    flags = ["--data.source", "table", "--data.path", path, "--data.task", "multi", "--data.min_samples", "1"]
    model = ["--model.name", "tiny-bert-random"]  # checked before the data (its config alone)
    extra = {"cv": model, "tune": [*model, "--search", str(tmp_path / "search.yaml")]}
    storage = tmp_path / "runs"
    argv = [*verb.split(), *flags, *extra.get(verb, [])]
    if verb in ("cv", "tune"):
        argv += ["--cv.storage_path", str(storage), "--quiet"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert out == "" and line == (
        f"reuters-ray: error: {path}: column 'label': no label cell holds data.label_delimiter '|', but 10 of 30 hold "
        f"a comma (data row 1: 'grain,wheat'); if it separates the labels, set --data.label_delimiter ','; if each "
        f"cell is one label, use --data.task single"
    )
    assert not storage.exists()


# --- kind 7: what a task changes in the data, said -----------------------------------------------------------------

_DOC = re.compile(r"<REUTERS ([^>]*)>(.*?)</REUTERS>", re.S)


@pytest.fixture(scope="module")
def raw_topics(reuters_dir) -> dict[str, tuple[str, str, list[str]]]:
    """NEWID -> (TOPICS attribute, LEWISSPLIT, topics listed) of every wire, read with the test's own expressions."""
    wires = {}
    for f in sorted(reuters_dir.glob("reut2-*.sgm")):
        for attrs, body in _DOC.findall(f.read_text(encoding="latin-1")):
            a = dict(re.findall(r'(\w+)="([^"]*)"', attrs))
            topics = re.findall(r"<D>(.*?)</D>", re.search(r"<TOPICS>(.*?)</TOPICS>", body, re.S).group(1))
            wires[a["NEWID"]] = (a["TOPICS"], a["LEWISSPLIT"], topics)
    assert len(wires) == 21578
    return wires


def test_modapte_with_task_single_says_which_wires_lose_topics(reuters_dir, raw_topics, capsys):
    """The issue's counts, 1,223 training and 437 test wires, hold: ModApte's wires with a topic that list another
    (NEWID 19918 lists trade twice: one topic), before preprocessing; data.min_samples then drops classes below."""
    assert main(["data", "summary", "--data.path", str(reuters_dir), "--data.split", "modapte"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "data.task single labels each ModApte wire by its first topic: 1223 training and 437 test wires lose their "
        "other topics (--data.task multi keeps every topic)",
        "ModApte: 1828 training and 280 test wires without a topic are left out (no label; --data.task multi drops "
        "them too)",
    ]
    assert lines[2].startswith(
        "dropped 65 class(es) with fewer than data.min_samples=50 training examples and their "
        "751 training and 327 test texts (training count in brackets): alum (31), "
    )
    for side, lost, without in (("TRAIN", 1223, 1828), ("TEST", 437, 280)):
        wires = [t for yes, split, t in raw_topics.values() if yes == "YES" and split == side]
        assert sum(len(set(t)) > 1 for t in wires) == lost and sum(not t for t in wires) == without


def test_keras_rules_are_said_with_their_counts(reuters, raw_topics, tmp_path):
    """Reuters-46 from the raw files and Keras's reuters.npz: one topic per wire by Keras's rule, said with the
    counts of the raw files (the npz is those wires, in that order), naming what keeps every topic."""
    assert reuters.notes()[0] == (
        "Keras's Reuters-46 rule: each wire is labelled by its first topic (1455 training and 365 test wires list "
        "other topics too), and the 139 wires whose first topic labels fewer than 15 wires are left out; --data.split "
        "modapte --data.task multi keeps every topic of a wire"
    )
    other = {s: sum(len(set(raw_topics[i][2])) > 1 for i in getattr(reuters, f"{s}_ids")) for s in ("train", "test")}
    firsts = pd.Series([t[0] for _, _, t in raw_topics.values() if t]).value_counts()
    rare = int(firsts[firsts < 15].sum())
    assert other == PUBLISHED["other_topics_113"] == {"train": 1455, "test": 365} and rare == PUBLISHED["rare"] == 139
    assert PUBLISHED["other_topics"] == 1820 and PUBLISHED["wires"] == len(reuters.train_ids + reuters.test_ids)
    assert _rule_note(NPZ_SHA256, 113) == (
        "Keras's Reuters-46 rule: each wire is labelled by its first topic (1820 of reuters.npz's 11228 wires list "
        "other topics too: 1455 training and 365 test wires), and the 139 wires whose first topic labels fewer than 15 "
        "wires are left out; --data.source reuters21578 --data.split modapte --data.task multi keeps every topic of a "
        "wire"
    )
    assert "(1820 of reuters.npz's 11228 wires list other topics too)," in _rule_note(NPZ_SHA256, 7)
    sha, md5 = write_keras_cache(tmp_path)  # another npz than Keras's: the rule, without counts
    ds = load_keras_reuters(cache_dir=str(tmp_path), npz_sha256=sha, word_index_hash=md5)
    assert ds.notes() == [
        "Keras's Reuters-46 rule: each wire is labelled by its first topic, and the wires whose first topic labels "
        "fewer than 15 wires are left out; --data.source reuters21578 --data.split modapte --data.task multi keeps "
        "every topic of a wire"
    ]


def test_samples_and_rare_classes_say_what_they_leave_out(tmp_path):
    rows = [
        {"text": f"story {i} on {lab} news", "label": lab}
        for lab, n in (("a", 40), ("b", 30), ("c", 5))
        for i in range(n)
    ]
    path = write(pd.DataFrame(rows), tmp_path / "news.csv")
    cfg = DataConfig(source="table", path=path, min_samples=6, train_sample=20, test_sample=10, split_seed=5)
    assert prepare(cfg).notes()[1:] == [
        "dropped 1 class(es) with fewer than data.min_samples=6 training examples and their 4 training and 1 test "
        "texts (training count in brackets): c (4)",
        "kept a stratified sample of 20 of 56 training texts (data.train_sample=20) and 10 of 14 test texts "
        "(data.test_sample=10), seeded by data.split_seed; unset keeps every text",
    ]


def test_multi_label_texts_left_without_a_topic_say_why():
    names = ["a", "b", "c"]

    def hot(rows):
        return np.array([[int(n in r) for n in names] for r in rows], dtype=np.uint8)

    ds = TextDataset(
        train_texts=["w x y"] * 6,
        train_labels=hot(["ab", "a", "b", "c", "", "ab"]),
        test_texts=["w x y"] * 2,
        test_labels=hot(["c", "a"]),
        label_names=names,
        train_ids=[f"r{i}" for i in range(6)],
        test_ids=["t0", "t1"],
    )
    out = filter_rare_classes(ds, min_samples=2)
    assert out.train_ids == ["r0", "r1", "r2", "r5"] and out.test_ids == ["t1"]
    assert out.notes()[-1] == (
        "dropped 3 text(s) without any kept topic at filter_rare_classes (train 2, test 1): 1 with no topic at all, 2 "
        "with only topics below data.min_samples=2 (a lower value keeps them)"
    )
