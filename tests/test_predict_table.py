"""Tables in, tables out (issue 43): `reuters-ray predict --table IN --out OUT` on the shared tiny run
(conftest.finished_run). The run's own test wires as a table, rows shuffled and one blank text added: every row and
column comes back in order with the run's own test predictions (predictions.parquet) added; CSV, TSV and JSON Lines
in and out, --top-k columns; each bad input one line and exit status 2 before any scoring, nothing written; and the
ray-data engine on the tests' Ray head writes what the local engine writes."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from reuters_ray.cli import main
from reuters_ray.config import RunConfig, from_dict
from reuters_ray.predictor.ensemble import Ensemble
from reuters_ray.predictor.tables import answer_table

BLANK_ID = "blank"


@pytest.fixture(scope="module")
def wires(finished_run, tmp_path_factory):
    """(folder, the table as a DataFrame): the run's 200 test wires (preprocessed as the run did) with their ids,
    rows shuffled, a numeric column beside them and a blank text at row 7, written as wires.parquet."""
    from reuters_ray.data.preprocess import prepare

    cfg = from_dict(RunConfig, yaml.safe_load((finished_run / "config.yaml").read_text()))
    ds = prepare(cfg.data)
    frame = pd.DataFrame({"id": ds.test_ids, "text": ds.test_texts, "n": np.arange(len(ds.test_ids))})
    frame = frame.sample(frac=1, random_state=3).reset_index(drop=True)
    blank = pd.DataFrame({"id": [BLANK_ID], "text": ["  \t "], "n": [-1]})
    frame = pd.concat([frame.iloc[:7], blank, frame.iloc[7:]], ignore_index=True)
    folder = tmp_path_factory.mktemp("tables")
    frame.to_parquet(folder / "wires.parquet", index=False)
    return folder, frame


@pytest.fixture(scope="module")
def labelled(finished_run, wires, tmp_path_factory):
    """`predict --table wires.parquet --out labelled.parquet` (the local engine), read back, and its stdout."""
    folder, _ = wires
    out = tmp_path_factory.mktemp("out") / "labelled.parquet"
    code, stdout = predict(finished_run, "--table", str(folder / "wires.parquet"), "--out", str(out))
    assert code == 0
    return pd.read_parquet(out), stdout, out


def plain(values) -> list:
    """Cells as Python values, a missing one (None, NaN: pandas' null string, "": an empty CSV cell) as None."""
    return [None if v is None or v != v or v == "" else v for v in values]


def predict(run, *flags) -> tuple[int, str]:
    """main(["predict", "--run", run, *flags]) in this process: (exit status, stdout)."""
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["predict", "--run", str(run), *map(str, flags)])
    return code, stdout.getvalue()


def test_a_parquet_table_comes_back_whole_in_order_with_the_runs_own_predictions(finished_run, wires, labelled):
    _, frame = wires
    out, stdout, path = labelled
    names = json.loads((finished_run / "metrics.json").read_text())["label_names"]
    assert list(out.columns) == ["id", "text", "n", "label", *[f"p_{n}" for n in names]]
    assert out["id"].tolist() == frame["id"].tolist() and out["n"].tolist() == frame["n"].tolist()
    assert out["text"].tolist() == frame["text"].tolist()
    assert stdout.splitlines() == [f"wrote {len(frame)} rows to {path} (1 with no text)"]
    # the blank text: the "no text" answer, no label and no probabilities
    row = out[out["id"] == BLANK_ID].iloc[0]
    assert plain([row["label"]]) == [None] and row[[f"p_{n}" for n in names]].isna().all()
    # every other row: the run's own test prediction, its probabilities those of predictions.parquet (float32)
    run = pd.read_parquet(finished_run / "predictions.parquet").set_index("id")
    scored = out[out["id"] != BLANK_ID].set_index("id")
    assert scored["label"].tolist() == run.loc[scored.index, "predicted_label"].tolist()
    for n in names:
        assert np.abs(scored[f"p_{n}"].to_numpy() - run.loc[scored.index, f"p_{n}"].to_numpy()).max() < 1e-6
    assert out.dtypes[f"p_{names[0]}"] == np.float64


def test_csv_tsv_and_json_lines_in_and_out_and_top_k_columns(finished_run, wires, labelled, tmp_path):
    """The same wires as CSV, TSV and JSON Lines, each in and out, answer as the Parquet table; --top-k 2 puts the two
    most probable labels (Ensemble.answers') and their probabilities in place of the p_<label> columns."""
    _, frame = wires
    want, _, _ = labelled
    frame.to_csv(tmp_path / "wires.csv", index=False)
    frame.to_csv(tmp_path / "wires.tsv", sep="\t", index=False)
    frame.to_json(tmp_path / "wires.jsonl", orient="records", lines=True, force_ascii=False)
    assert predict(finished_run, "--table", tmp_path / "wires.csv", "--out", tmp_path / "out.jsonl")[0] == 0
    assert predict(finished_run, "--table", tmp_path / "wires.jsonl", "--out", tmp_path / "out.tsv")[0] == 0
    flags = ["--top-k", 2, "--text-column", "text", "--batch-size", 16]
    assert predict(finished_run, "--table", tmp_path / "wires.tsv", "--out", tmp_path / "top.csv", *flags)[0] == 0
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    tsv = pd.read_csv(tmp_path / "out.tsv", sep="\t", dtype=str, keep_default_na=False)
    for got in (pd.DataFrame(rows), tsv):
        assert got["id"].astype(str).tolist() == frame["id"].astype(str).tolist()
        assert got["text"].tolist() == frame["text"].tolist()  # a CSV cell comes back as written
        assert plain(got["label"]) == plain(want["label"])  # blank: null (JSON), empty (TSV)
    p = pd.DataFrame(rows)[[c for c in want.columns if c.startswith("p_")]].to_numpy(dtype=np.float64)
    assert np.allclose(p, want[[c for c in want.columns if c.startswith("p_")]].to_numpy(), atol=1e-12, equal_nan=True)
    top = pd.read_csv(tmp_path / "top.csv", dtype={"id": str})
    assert list(top.columns) == ["id", "text", "n", "label", "top_1_label", "top_1_p", "top_2_label", "top_2_p"]
    ens = Ensemble.load(finished_run)
    texts = frame["text"].tolist()
    answers = ens.answers(texts, 2)
    assert plain(top["top_1_label"]) == [a["label"] for a in answers]
    for i in (0, 1):
        p = [a["top"][i]["p"] if a["top"] else np.nan for a in answers]
        assert np.allclose(top[f"top_{i + 1}_p"], p, atol=1e-6, equal_nan=True)
        assert plain(top[f"top_{i + 1}_label"]) == [a["top"][i]["label"] if a["top"] else None for a in answers]


def test_answer_table_is_the_ensembles_answers(finished_run):
    ens = Ensemble.load(finished_run)
    texts = ["Oil prices rose sharply after OPEC agreed to cut output", "", None, "Wheat exports fell"]
    table = answer_table(ens, texts, top_k=3)
    assert table.schema.field("label").type == pa.string() and table.num_rows == 4
    answers = ens.answers(["" if t is None else t for t in texts], 3)
    assert table.column("label").to_pylist() == [a["label"] for a in answers]
    assert table.column("top_3_label").to_pylist() == [a["top"][2]["label"] if a["top"] else None for a in answers]
    probs = answer_table(ens, texts).to_pandas()[[f"p_{n}" for n in ens.label_names]].to_numpy()
    assert np.array_equal(probs, ens.predict_proba(["" if t is None else t for t in texts]), equal_nan=True)


def test_bad_input_is_one_line_before_any_scoring_and_nothing_is_written(finished_run, wires, tmp_path, capsys):
    folder, frame = wires
    table = folder / "wires.parquet"
    out = tmp_path / "out.parquet"
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    frame.rename(columns={"text": "body"}).to_csv(tmp_path / "body.csv", index=False)
    frame.assign(label="x").to_parquet(tmp_path / "clash.parquet")
    (tmp_path / "taken.csv").write_text("keep me\n")
    cases = [
        (["--table", tmp_path / "missing.csv", "--out", out], f"{tmp_path / 'missing.csv'}: no such file"),
        (["--table", tmp_path / "garbage.parquet", "--out", out], f"{tmp_path / 'garbage.parquet'}: cannot read it"),
        (
            ["--table", tmp_path / "body.csv", "--out", out],
            f"{tmp_path / 'body.csv'}: no column 'text' (columns found: 'id', 'body', 'n'); name the text column "
            "with --text-column",
        ),
        (["--table", table, "--out", tmp_path / "taken.csv"], "already exists; predict never overwrites"),
        (["--table", table, "--out", tmp_path / "out.xlsx"], "unknown table format '.xlsx'"),
        (["--table", table], "--table needs --out OUT"),
        (["--out", out], "--out is for --table IN"),
        (["--text-column", "body", "Oil prices rose"], "--text-column is for --table IN"),
        (["--table", table, "--out", out, "Oil prices rose"], "give --table or texts"),
        (["--table", table, "--out", out, "--file", tmp_path / "taken.csv"], "give --table or texts"),
        (["--table", tmp_path / "clash.parquet", "--out", out], "already has the column(s) 'label' that predict adds"),
        (["--table", table, "--out", tmp_path / "scored.csv", "--engine", "ray-data"], "writes Parquet files into a"),
    ]
    for flags, message in cases:
        capsys.readouterr()
        assert main(["predict", "--run", str(finished_run), *map(str, flags)]) == 2, flags
        captured = capsys.readouterr()
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, (flags, captured.err)
        assert captured.err.startswith("reuters-ray: error: ") and message in captured.err, (flags, captured.err)
    assert (tmp_path / "taken.csv").read_text() == "keep me\n"
    assert not out.exists() and not (tmp_path / "scored.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["body.csv", "clash.parquet", "garbage.parquet", "taken.csv"]


def test_the_ray_data_engine_writes_what_the_local_engine_writes(finished_run, wires, labelled, tmp_path):
    """On the tests' Ray head (RAY_ADDRESS): Parquet files in the folder OUT, read back in order, equal to the local
    engine's table (labels exact, probabilities within 1e-6)."""
    folder, frame = wires
    want, _, _ = labelled
    out = tmp_path / "scored"
    code, stdout = predict(
        finished_run, "--table", folder / "wires.parquet", "--out", out, "--engine", "ray-data", "--batch-size", 32
    )
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"part-{n:05d}.parquet" for n in range(len(files))] and len(files) >= 2
    assert stdout.startswith(f"wrote {len(frame)} rows to {out} ({len(files)} Parquet files")
    assert [p.name for p in tmp_path.iterdir()] == ["scored"]  # no temporary folder left
    got = pq.read_table(out).to_pandas()
    assert list(got.columns) == list(want.columns)
    assert got["id"].tolist() == want["id"].tolist() and got["n"].tolist() == want["n"].tolist()
    assert plain(got["label"]) == plain(want["label"])
    p = [c for c in want.columns if c.startswith("p_")]
    assert np.allclose(got[p].to_numpy(), want[p].to_numpy(), rtol=0, atol=1e-6, equal_nan=True)
