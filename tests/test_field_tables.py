"""Inputs from the field, part 1 (issue 26): tables, settings and resumed runs as users bring them. One test (or
more) per kind, each holding the right value: labels spelled as written, settings taken verbatim, what a run can
check before training checked before Ray, text length in words, a resumed run's data, the delimiter, the BOM."""

import dataclasses
import hashlib
import json
import typing

import numpy as np
import pandas as pd
import pytest
import yaml

from reuters_ray.cli import build_parser, main, run_config_from_args
from reuters_ray.config import DataConfig, RunConfig
from reuters_ray.data.preprocess import count_words, prepare
from reuters_ray.data.table import load_table
from reuters_ray.errors import ConfigError, DataError

WORDS = "oil wheat shares bank rates trade ship coffee gold sugar cocoa steel".split()


def own_words(k):
    """The two words every text of the k-th label of codes_table holds."""
    return WORDS[2 * k % len(WORDS)], WORDS[(2 * k + 1) % len(WORDS)]


def codes_table(labels=("01", "1", "2"), n=30, seed=0):
    """n rows per label: texts of a few words, each label with two words of its own, so a model can tell them."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, label in enumerate(labels):
        own = own_words(k)
        for i in range(n):
            words = [*own, *rng.choice(WORDS, 4)]
            rng.shuffle(words)
            rows.append({"text": " ".join(words) + f" story {i}", "label": label})
    return pd.DataFrame(rows)


def write(df, path, fmt=None, sep=",", bom=False):
    """`df` as CSV/TSV/JSONL/Parquet at `path` (format from the suffix), with a UTF-8 byte-order mark if `bom`."""
    fmt = fmt or path.suffix.lstrip(".")
    if fmt == "parquet":
        df.to_parquet(path)
        return path
    if fmt == "jsonl":
        text = "\n".join(json.dumps(r, ensure_ascii=False) for r in df.to_dict("records")) + "\n"
    else:
        text = df.to_csv(index=False, sep="\t" if fmt == "tsv" else sep)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


# --- 1. labels keep their identity and spelling ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_label_codes_keep_their_spelling_in_every_format(tmp_path, fmt):
    written = ("01", "1", "2", "001")
    path = write(codes_table(written), tmp_path / f"codes.{fmt}")
    ds = load_table(str(path), test_size=0.2, seed=3)
    assert ds.label_names == ["001", "01", "1", "2"]  # integer codes by value, then spelling; none merged
    assert ds.counts("train").tolist() == [24, 24, 24, 24] and ds.counts("test").tolist() == [6, 6, 6, 6]
    for text, y in zip(ds.train_texts + ds.test_texts, [*ds.train_labels, *ds.test_labels]):
        assert set(own_words(written.index(ds.label_names[y]))) <= set(text.split())  # each row its own label


def test_json_numbers_keep_their_spelling_and_a_number_written_like_a_string_is_one_class_said_so(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"text": f"wheat story {i} here", "label": 1} for i in range(10)]
    rows += [{"text": f"wheat story {i} there", "label": "1"} for i in range(10)]
    rows += [{"text": f"gold story {i} here", "label": 1.0} for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))  # numbers and strings only (pandas loses the types)
    ds = load_table(str(path), test_size=0.25)
    assert ds.label_names == ["1", "1.0"] and (ds.counts("train") + ds.counts("test")).tolist() == [20, 10]
    assert ds.notes() == [f"{path}: column 'label' holds the number 1 and the string \"1\": one class '1'"]
    rows += [{"text": f"bank story {i} here", "label": True} for i in range(10)]
    rows += [{"text": f"bank story {i} there", "label": "true"} for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_table(str(path), test_size=0.25)
    assert ds.label_names == ["1", "1.0", "true"]
    assert (ds.counts("train") + ds.counts("test")).tolist() == [20, 10, 20]
    assert ds.notes()[1] == f"{path}: column 'label' holds the boolean true and the string \"true\": one class 'true'"


def test_cells_that_are_no_text_are_refused_or_read_as_written(tmp_path):
    """A list as a text, bytes that are not UTF-8, a lone surrogate: refused naming the rows. Parquet's binary texts
    are UTF-8, its float32 labels print as written (was: texts "['crop', 'wheat']" and "b'...'", a label
    0.10000000149011612)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"text": ["crop", "wheat"] if i == 3 else f"story {i} of wheat", "label": "ab"[i % 2]} for i in range(10)]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"list.jsonl: column 'text' holds a list or mapping in data rows 4$"):
        load_table(str(tmp_path / "list.jsonl"))
    texts = pa.array([f"story {i} of wheat".encode() for i in range(20)], pa.binary())
    pq.write_table(pa.table({"text": texts, "label": pa.array([0.1, 0.2] * 10, pa.float32())}), tmp_path / "b.parquet")
    ds = load_table(str(tmp_path / "b.parquet"))
    assert ds.label_names == ["0.1", "0.2"] and sorted(ds.train_texts + ds.test_texts)[0] == "story 0 of wheat"
    bad = pa.array([b"\xff\xfe" if i == 2 else b"x" for i in range(20)], pa.binary())
    pq.write_table(pa.table({"text": texts, "label": bad}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet: column 'label' holds bytes that are not UTF-8 in data rows 3$"):
        load_table(str(tmp_path / "bad.parquet"))
    (tmp_path / "s.jsonl").write_text('{"text": "a b c", "label": "x"}\n{"text": "a b c", "label": "\\ud800"}\n')
    with pytest.raises(
        DataError, match=r"s.jsonl: line 2: 'label' holds text that is not Unicode \(a lone surrogate\)"
    ):
        load_table(str(tmp_path / "s.jsonl"))


def test_a_label_is_one_line(tmp_path):
    df = codes_table(("a", "b"))
    df.loc[[4, 7], "label"] = ["a\nb", "x\ty"]
    with pytest.raises(
        DataError, match=r"lines.csv: column 'label' holds a line break, tab or other control .* rows 5, 8$"
    ):
        load_table(str(write(df, tmp_path / "lines.csv")))


def test_parquet_integer_labels_are_ordered_by_value_and_spelled_as_json_writes_them(tmp_path):
    df = codes_table(("a", "b", "c"))
    df["label"] = np.repeat([10, 2, 1], 30)
    ds = load_table(str(write(df, tmp_path / "ints.parquet")))
    assert ds.label_names == ["1", "2", "10"]
    first = [t.split() for t, y in zip(ds.train_texts, ds.train_labels) if y == 0]  # "1": the third label written
    assert len(first) == 24 and all(set(own_words(2)) <= set(t) for t in first)


def test_labels_that_differ_only_in_case_or_spaces_stay_apart_and_are_named(tmp_path):
    path = write(codes_table(("Sports", "sports", " sports", "news")), tmp_path / "case.csv")
    ds = load_table(str(path))
    assert ds.label_names == [" sports", "Sports", "news", "sports"]
    assert ds.notes()[1] == (
        f"warning: {path}: column 'label' has labels that differ only in case, spaces, invisible characters or "
        "Unicode form, ' sports', 'Sports', 'sports': kept as 3 classes (fix the table if they are one)"
    )
    # the same for Unicode's forms: NFC and NFD, a full-width letter, a zero-width space (shown escaped)
    path = write(codes_table(("caf\u00e9", "cafe\u0301", "\uff43af\u00e9", "\u200bcaf\u00e9")), tmp_path / "u.jsonl")
    (note,) = load_table(str(path)).notes()
    assert note.endswith(
        "'cafe\\u0301', 'caf\u00e9', '\\u200bcaf\u00e9', '\uff43af\u00e9': kept as 4 classes (fix the table if they are one)"
    )
    numbers = write(codes_table(("10.0", "2.0", "1.5", "1.0")), tmp_path / "floats.csv")
    assert load_table(str(numbers)).label_names == ["1.0", "1.5", "2.0", "10.0"]  # by value


def test_a_list_as_a_label_and_repeated_ids_are_refused_naming_the_rows(tmp_path):
    path = tmp_path / "tags.jsonl"
    rows = [{"text": f"story {i} words", "label": "a" if i % 2 else ["a", "b"]} for i in range(8)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(
        DataError,
        match=r"tags.jsonl: column 'label' holds a list or mapping in data rows 1, 3, 5, 7; for several labels per "
        r"text use --data.task multi$",
    ):
        load_table(str(path))
    df = codes_table(("a", "b"), n=4)
    df["id"] = [f"x{i % 5}" for i in range(8)]
    with pytest.raises(DataError, match=r"ids.csv: column 'id' repeats 'x0' in data rows 1, 6; ids name rows"):
        load_table(str(write(df, tmp_path / "ids.csv")))


@pytest.mark.runs  # a whole run through Ray: CI's last step, beside the multi-label runs (the default suite's time)
def test_a_runs_outputs_keep_the_label_spellings_and_other_data_under_its_name_is_refused(ray_head, tmp_path, capsys):
    """Kinds 1 and 5 on one real run (tiny model, 2 folds x 1 epoch, the driver in this process): every output of a
    table with the codes 001, 01, 1, 2 spells them so; then the table gains rows and a class and the same command is
    refused before Ray, the run folder byte for byte as it was."""
    table = write(codes_table(("001", "01", "1", "2"), n=20), tmp_path / "codes.csv")
    cmd = ["cv", "--data.source", "table", "--data.path", str(table), "--data.min_samples", "5", "--data.max_length",
           "16", "--model.name", "tiny-bert-random", "--train.max_epochs", "1", "--train.batch_size", "16",
           "--train.grad_accum", "1", "--cv.folds", "2", "--cv.cpus_per_fold", "0.5", "--cv.storage_path",
           str(tmp_path / "runs"), "--cv.name", "codes", "--quiet"]  # fmt: skip
    assert main(cmd) == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "codes"
    names = ["001", "01", "1", "2"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["label_names"] == names and [c["name"] for c in metrics["per_class"]] == names
    assert (run / "per_class.csv").read_text().splitlines()[1].startswith("0,001,")
    assert (run / "confusion_matrix.csv").read_text().splitlines()[0] == "true \\ predicted,001,01,1,2"
    for name in ("predictions.parquet", "oof_predictions.parquet"):
        pred = pd.read_parquet(run / name)
        assert [c for c in pred.columns if c.startswith("p_")] == [f"p_{n}" for n in names]
        assert set(pred["true_label"]) == set(names) and set(pred["predicted_label"]) <= set(names)
    for k in range(2):
        config = json.loads((run / "models" / f"fold_{k}" / "config.json").read_text())
        assert config["id2label"] == {str(i): n for i, n in enumerate(names)}
    assert "| 001 |" in (run / "report.md").read_text()
    capsys.readouterr()
    assert main(["predict", "--run", str(run), "--json", "wheat oil story"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in names

    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}
    write(pd.concat([codes_table(("001", "01", "1", "2"), n=20), codes_table(("3",), n=40, seed=5)]), table)
    assert main(cmd) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"reuters-ray: error: run 'codes' in {tmp_path / 'runs'} was made with other data (64 train / 16 test texts, "
        "4 classes, sha256 "
    )
    assert "; now 96 train / 24 test texts, 5 classes, sha256 " in line
    assert line.endswith("); use the same data to resume it, or another cv.name")
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.rglob("*")) if p.is_file()}
    assert after == before


# --- 2. string settings are taken verbatim -----------------------------------------------------------------------

NASTY = ["news #2.csv", "a: b", "*star", "&anchor", "!tag", "[1, 2]", "{x: 1}", "%x", "@at", "`tick", "| pipe",
         "> fold", "'quoted'", '"double"', "null", "~", "true", "007", "1e-4", "- item", "? key"]  # fmt: skip


def string_fields():
    hints = typing.get_type_hints(RunConfig)
    for section in dataclasses.fields(RunConfig):
        cls = hints[section.name]
        for name, tp in typing.get_type_hints(cls).items():
            if tp is str or str in typing.get_args(tp):
                yield section.name, name


def test_every_string_flag_takes_its_value_verbatim():
    fields = list(string_fields())
    assert ("data", "path") in fields and ("cv", "storage_path") in fields and len(fields) >= 13
    parser = build_parser()
    for section, name in fields:
        for value in NASTY:
            verb = ["distill", "--run", "r"] if section == "distill" else ["cv"]  # its flags are distill's own
            args = parser.parse_args([*verb, f"--{section}.{name}", value])
            try:
                cfg = run_config_from_args(args)
            except ConfigError as e:  # fields with a fixed set of values, and cv.name's folder rule: one line
                assert str(e).startswith(f"config: {section}.{name} must be "), (section, name, value, e)
                continue
            assert getattr(getattr(cfg, section), name) == value, (section, name, value)


def test_a_data_path_with_a_hash_loads_that_file(tmp_path, capsys):
    path = write(codes_table(("a", "b")), tmp_path / "news #2.csv")
    assert main(["data", "summary", "--data.source", "table", "--data.path", str(path), "--data.min_samples", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{path}: read as CSV with delimiter comma (the file's own)"
    assert f'"path": "{path}"' in out


@pytest.mark.parametrize("value", ["*x", "&a", "[1", "{a", "!!python/object:os.system"])
def test_a_typed_flag_that_yaml_cannot_read_is_one_line(value, capsys):
    assert main(["data", "summary", "--data.min_samples", value]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == f"reuters-ray: error: config: data.min_samples must be int, got {value!r}"


def test_a_yaml_number_for_a_string_field_says_to_quote_it(tmp_path):
    with pytest.raises(ConfigError, match=r"cv.name must be a string or unset, got 2021 \(YAML read it as a number"):
        run_config_from_args(
            build_parser().parse_args(["cv", "--config", str(write_yaml(tmp_path, "cv:\n  name: 2021\n"))])
        )


def write_yaml(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


# --- 3. a run checks what it can before training ------------------------------------------------------------------


@pytest.fixture(scope="module")
def short_model(tmp_path_factory):
    """A local Hugging Face folder: a BERT with 64 positions and a 1,000-token vocabulary (random weights)."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("short-bert")
    config = BertConfig(vocab_size=1000, max_position_embeddings=64, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64)  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_a_longer_max_length_or_a_larger_tokenizer_than_the_model_takes_is_refused(short_model, tmp_path, capsys):
    """Checked with the model's config before Ray (cv and its bad-input table: tests/test_bad_input.py)."""
    from reuters_ray.fold.models import check_fits, load_tokenizer

    tok = load_tokenizer("minilm-offline")
    with pytest.raises(
        ConfigError, match=r"^data.max_length=600 but model 'tiny-bert-random' reads at most 512 tokens"
    ):
        check_fits("tiny-bert-random", 600, tok)
    with pytest.raises(ConfigError, match=rf"^data.max_length=128 but model '{short_model}' reads at most 64 tokens"):
        check_fits(str(short_model), 128, tok)
    with pytest.raises(ConfigError, match=r"data.tokenizer 'minilm-offline' has 30522 tokens but model .* knows 1000"):
        check_fits(str(short_model), 64, tok, "minilm-offline")
    check_fits("minilm-offline", 512, tok)


def test_the_fold_loop_refuses_tokens_longer_than_the_model_reads(short_model, tmp_path):
    from reuters_ray.config import ModelConfig, TrainConfig
    from reuters_ray.data.features import TokenArrays
    from reuters_ray.fold.train import FoldData, train_fold

    tokens = TokenArrays(np.ones((4, 80), dtype=np.uint16), np.full(4, 80, dtype=np.int32), 0)
    data = FoldData(tokens, np.array([0, 1, 0, 1]), np.array([0, 1]), np.array([2, 3]), np.ones(2, "f4"), ["a", "b"])
    cfg = RunConfig(model=ModelConfig(name=str(short_model)), train=TrainConfig(max_epochs=1))
    with pytest.raises(ConfigError, match="tokens of length 80 but model .* reads at most 64"):
        train_fold(cfg, data, tmp_path / "fold", log=lambda s: None)
    assert not list((tmp_path / "fold").glob("epoch_*"))


def codes_text_table(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "text": [" ".join(map(str, rng.integers(0, 4, 8))) for _ in range(90)],
            "label": np.repeat(["x", "y", "z"], 30),
        }
    )
    return write(df, tmp_path / "codes.csv")


def test_texts_that_give_tfidf_no_terms_are_refused_before_the_folds_by_cv_and_baseline(tmp_path, capsys):
    path = codes_text_table(tmp_path)
    flags = ["--data.source", "table", "--data.path", str(path), "--data.min_samples", "2"]
    assert main(["baseline", *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("reuters-ray: error: the linear model (TF-IDF (word 1-2 grams")
    assert line.endswith("cannot be fitted on the training split: no word of 2 or more characters occurs in 2 or more "
                         "texts (texts of one-character codes give TF-IDF no terms)")  # fmt: skip
    storage = tmp_path / "runs"
    assert main(["cv", *flags, "--model.name", "tiny-bert-random", "--cv.storage_path", str(storage)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("; to train without it: --cv.blend false --cv.baseline false") and not storage.exists()


def test_without_the_linear_model_such_texts_pass_the_check(ray_head, tmp_path, capsys):
    """--cv.blend false --cv.baseline false: the check is not made; this run stops at the next check instead (a fold
    asks for more CPUs than the tests' head has), once connected to Ray."""
    flags = ["--data.source", "table", "--data.path", str(codes_text_table(tmp_path)), "--data.min_samples", "2"]
    assert main(["cv", *flags, "--model.name", "tiny-bert-random", "--cv.blend", "false", "--cv.baseline", "false",
                 "--cv.storage_path", str(tmp_path / "runs"), "--cv.cpus_per_fold", "64"]) == 2  # fmt: skip
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("does not fit this Ray cluster's 2 CPUs")


def test_a_linear_model_that_fails_after_the_folds_says_they_are_kept():
    from reuters_ray.data.dataset import TextDataset
    from reuters_ray.scoring.evaluate import fit_linear

    ds = TextDataset(["a b", "c d", "e f", "g h"], np.array([0, 1, 0, 1]), [], np.array([], int), ["x", "y"],
                     ["0", "1", "2", "3"], [])  # fmt: skip
    folds = [(np.array([0, 1]), np.array([2, 3])), (np.array([2, 3]), np.array([0, 1]))]
    with pytest.raises(DataError, match=r"the folds are kept: rerun the same command with --cv.blend false"):
        fit_linear(ds, folds)


# --- 4. text length in the units the model reads ------------------------------------------------------------------


def test_words_count_characters_of_scripts_written_without_spaces():
    assert count_words("Oil prices rose") == 3 and count_words("3 0 2 1") == 4 and count_words("  ") == 0
    assert count_words("石油价格上涨") == 6 and count_words("Oil 价格上涨") == 5 and count_words("iPhone价格") == 3
    assert count_words("東京の株価が上がった") == 10 and count_words("ราคาน้ำมัน") >= 3


def test_chinese_rows_are_kept_and_short_texts_are_named_in_the_first_lines(tmp_path, capsys):
    english = [{"text": f"crude oil prices rose {i} percent in early trade today", "label": "en"} for i in range(60)]
    chinese = [
        {"text": f"今天石油价格在早盘交易中上涨了百分之{i}，市场人士表示供应紧张", "label": "zh"} for i in range(45)
    ]
    short = [{"text": "oil up", "label": "en"}, {"text": "上涨", "label": "zh"}]
    path = write(pd.DataFrame(english + chinese + short), tmp_path / "mixed.jsonl")
    ds = prepare(DataConfig(source="table", path=str(path), min_samples=2, test_size=0.2))
    assert len(ds.train_texts) + len(ds.test_texts) == 105  # every row but the two short ones
    assert ds.label_names == ["en", "zh"] and (ds.counts("train") + ds.counts("test")).tolist() == [60, 45]
    (step,) = [s for s in ds.provenance["steps"] if s["step"] == "drop_short_texts"]
    dropped = sorted(step["params"]["ids"]["train"] + step["params"]["ids"]["test"])
    assert dropped == ["105", "106"]
    assert main(["data", "summary", "--data.source", "table", "--data.path", str(path), "--data.min_samples", "2"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("warning: dropped")]
    assert len(line) == 1 and line[0].startswith("warning: dropped 2 text(s) with fewer than data.min_tokens=3 words")
    assert line[0].endswith(": ids " + ", ".join(step["params"]["ids"]["train"] + step["params"]["ids"]["test"]))


# --- 6. the delimiter, 7. a byte-order mark ------------------------------------------------------------------------


def test_a_semicolon_csv_is_read_with_its_delimiter_and_says_so(tmp_path):
    df = codes_table(("a", "b"))
    df["score"] = ["1,5"] * len(df)  # a decimal comma, as such spreadsheets write
    path = write(df, tmp_path / "semi.csv", sep=";")
    ds = load_table(str(path))
    assert ds.label_names == ["a", "b"] and len(ds.train_texts) + len(ds.test_texts) == 60
    assert ds.provenance["read"] == {"format": "csv", "delimiter": ";", "delimiter_from": "detected from the header"}
    assert ds.notes()[0] == f"{path}: read as CSV with delimiter semicolon (detected from the header)"
    pipe = write(df, tmp_path / "pipe.csv", sep="|")
    assert load_table(str(pipe)).provenance["read"]["delimiter"] == "|"
    given = load_table(str(pipe), delimiter="|").provenance["read"]
    assert given == {"format": "csv", "delimiter": "|", "delimiter_from": "data.delimiter"}
    with pytest.raises(
        DataError,
        match=r"pipe.csv: no column 'text', 'label' \(columns: text\|label\|score\); .*, or give data.delimiter \(read with ';'\)$",
    ):
        load_table(str(pipe), delimiter=";")
    assert DataConfig(delimiter="tab").delimiter == DataConfig(delimiter="\\t").delimiter == "\t"
    with pytest.raises(ConfigError, match="data.delimiter must be one character"):
        DataConfig(delimiter=";;")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_every_text_format_reads_a_byte_order_mark(tmp_path, fmt):
    df, held_out = codes_table(("a", "b")), codes_table(("a", "b"), n=10, seed=1)
    plain = load_table(str(write(df, tmp_path / f"plain.{fmt}")), test_path=str(write(held_out, tmp_path / f"t.{fmt}")))
    marked = load_table(
        str(write(df, tmp_path / f"bom.{fmt}", bom=True)),
        test_path=str(write(held_out, tmp_path / f"tb.{fmt}", bom=True)),
    )
    for field in ("train_texts", "test_texts", "label_names", "train_ids", "test_ids"):
        assert getattr(marked, field) == getattr(plain, field), field


def test_utf16_and_a_line_that_is_not_json_are_named(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_bytes(codes_table(("a", "b")).to_csv(index=False).encode("utf-16"))
    with pytest.raises(DataError, match="wide.csv: UTF-16 text .* re-save it as UTF-8"):
        load_table(str(path))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a b c", "label": "x"}\n\n{"text": "d e f", label: "y"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 3 is not JSON \(Expecting property name"):
        load_table(str(bad))
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\nsome text,a\ncaf\xe9 au lait,b\n".encode("latin-1"))
    with pytest.raises(
        DataError,
        match=r"latin.csv: not UTF-8 text \(line 3, byte 26: invalid continuation byte\); re-save it as UTF-8$",
    ):
        load_table(str(latin))


def test_utf16_without_a_mark_utf32_a_repeated_column_and_the_training_file_as_test_file_are_named(tmp_path):
    csv_text = codes_table(("a", "b")).to_csv(index=False)
    (tmp_path / "le.csv").write_bytes(csv_text.encode("utf-16-le"))
    with pytest.raises(DataError, match=r"le.csv: UTF-16 or UTF-32 text \(every other byte of its start is NUL\)"):
        load_table(str(tmp_path / "le.csv"))
    (tmp_path / "wide.csv").write_bytes(csv_text.encode("utf-32"))
    with pytest.raises(DataError, match=r"wide.csv: UTF-32 text \(it starts with a UTF-32 byte-order mark\)"):
        load_table(str(tmp_path / "wide.csv"))
    (tmp_path / "twice.csv").write_text(
        csv_text.replace("text,label", "text,label,label", 1).replace("\n", ",x\n")[:-2]
    )
    with pytest.raises(DataError, match=r"twice.csv: the header repeats the column name\(s\) 'label' \(columns 2, 3\)"):
        load_table(str(tmp_path / "twice.csv"))
    path = write(codes_table(("a", "b")), tmp_path / "train.csv")
    with pytest.raises(DataError, match=r"train.csv: data.test_path holds the same bytes as data.path"):
        load_table(str(path), test_path=str(path))


def test_a_json_string_with_a_unicode_line_separator_is_one_row(tmp_path):
    path = tmp_path / "sep.jsonl"
    rows = [{"text": f"oil\u2028prices {i} rose", "label": "ab"[i % 2]} for i in range(10)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    ds = load_table(str(path), test_size=0.2)
    assert len(ds.train_texts) + len(ds.test_texts) == 10 and "\u2028" in ds.train_texts[0]


def test_the_config_a_run_saves_reads_back_verbatim(tmp_path):
    cfg = run_config_from_args(build_parser().parse_args(["cv", "--data.path", "news #2.csv", "--cv.name", "a: b"]))
    back = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=True))
    assert back["data"]["path"] == "news #2.csv" and back["cv"]["name"] == "a: b"


def test_typed_flags_are_decimal_and_finite_and_run_names_one_line():
    parse = build_parser().parse_args
    cfg = run_config_from_args(parse(["cv", "--train.seed", "010", "--train.lr", "3e-5", "--train.compile", "yes"]))
    assert (cfg.train.seed, cfg.train.lr, cfg.train.compile) == (10, 3e-5, True)  # not YAML 1.1's octal 8
    for flag, value in (("--train.max_epochs", "1:00"), ("--train.lr", "inf"), ("--train.lr", "nan")):
        with pytest.raises(ConfigError, match=rf"^config: train.{flag.split('.')[1]} must be"):
            run_config_from_args(parse(["cv", flag, value]))
    with pytest.raises(ConfigError, match=r"lr must be a finite float, got inf"):
        from reuters_ray.config import TrainConfig, from_dict

        from_dict(TrainConfig, {"lr": float("inf")})
    for name in ("a\nb", " padded", "a%2Fb", "tab\there"):
        with pytest.raises(ConfigError, match=r"cv.name must be a folder name without"):
            run_config_from_args(parse(["cv", "--cv.name", name]))


def test_a_derived_run_name_follows_the_data():
    from reuters_ray.run.place import run_name

    cfg = RunConfig()
    assert run_name(cfg, "a" * 64) != run_name(cfg, "b" * 64) and run_name(cfg, "a" * 64) == run_name(cfg, "a" * 64)
    named = RunConfig(cv=dataclasses.replace(cfg.cv, name="mine"))
    assert run_name(named, "a" * 64) == run_name(named, "b" * 64) == "mine"  # a cv.name is the user's: refused there
