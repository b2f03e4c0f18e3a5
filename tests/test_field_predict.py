"""Inputs from the field, part 2 (issue 27): what `predict` and Python make of the texts users send, and caches that
several processes fill at once. The service's own kinds: test_serve.py. One rule everywhere: every text gets an
answer, in order; a blank text (nothing left after the training's cleaning) gets {"label": null, "note": "no text"}."""

import io
import json
import os
import subprocess
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import BIN

from reuters_ray.cli import main
from reuters_ray.predictor.ensemble import Ensemble

Out = namedtuple("Out", "code out err")

# 7 lines: blank ones, one of spaces, one of Keras markers only, a CRLF ending, and inside one line the characters
# Python's splitlines() would split at (U+2028, form feed, file separator, NEL); no newline after the last.
LINES = ["Oil prices rose sharply after OPEC cut output", "", "Wheat exports to the Soviet Union fell", "   ",
         "[UNK] [PAD]", "Gold\u2028prices\x0cclimbed\x1c in London\x85 trading", "Quarterly earnings per share rose"]  # fmt: skip
RAW = ("\n".join(LINES[:5]) + "\n" + LINES[5] + "\r\n" + LINES[6]).encode()
BLANK = [1, 3, 4]


def predict(capsys, monkeypatch, run, *args, stdin: bytes | None = None) -> Out:
    if stdin is not None:
        monkeypatch.setattr(
            "sys.stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8", errors="surrogateescape")
        )
    capsys.readouterr()
    code = main(["predict", "--run", str(run), *args])
    out, err = capsys.readouterr()
    return Out(code, out, err)


def test_every_line_gets_its_answer_in_order(finished_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "texts.txt").write_bytes(RAW)
    ens = Ensemble.from_run(finished_run, device="cpu")
    expected = ens.predict(LINES)
    assert [expected[i] for i in BLANK] == [None] * 3 and None not in [expected[i] for i in (0, 2, 5, 6)]
    as_json = predict(capsys, monkeypatch, finished_run, "--json", "--file", str(tmp_path / "texts.txt"))
    assert as_json.code == 0 and as_json.err == ""
    rows = [json.loads(line) for line in as_json.out.splitlines()]  # U+2028, NEL... escaped: one line each
    assert [r["text"] for r in rows] == LINES and [r["label"] for r in rows] == expected
    assert [r for i, r in enumerate(rows) if i in BLANK] == [
        {"text": LINES[i], "label": None, "top": [], "note": "no text"} for i in BLANK
    ]
    as_text = predict(capsys, monkeypatch, finished_run, "--file", str(tmp_path / "texts.txt"))
    lines = as_text.out.splitlines()
    assert (
        len(lines) == 7
        and all(line.count("\t") == 2 for line in lines)
        and [line.split("\t")[0] for line in lines] == [e or "-" for e in expected]
    )
    assert all(lines[i].startswith("-\t(no text)\t") for i in BLANK)
    from_stdin = predict(capsys, monkeypatch, finished_run, "-", stdin=RAW)
    assert from_stdin.code == 0 and from_stdin.out == as_text.out  # standard input reads the same lines
    args = predict(capsys, monkeypatch, finished_run, "--json", "", "oil prices rose")  # arguments: one text each
    assert [json.loads(line)["label"] for line in args.out.splitlines()] == [None, ens.predict(["oil prices rose"])[0]]
    empty = predict(capsys, monkeypatch, finished_run, "-", stdin=b"")
    assert empty.code == 2 and empty.err.strip() == (
        "reuters-ray: error: no texts to predict: give TEXT arguments, --file F or - for standard input"
    )


def test_bytes_that_are_not_utf8_are_replaced_and_named(finished_run, capsys, monkeypatch):
    out = predict(capsys, monkeypatch, finished_run, "--json", "-", stdin=b"Caf\xe9 prices rose\nfine\nbad \xff\xfe\n")
    assert out.code == 0
    assert [json.loads(line)["text"] for line in out.out.splitlines()] == [
        "Caf\ufffd prices rose",
        "fine",
        "bad \ufffd\ufffd",
    ]
    assert out.err == "reuters-ray: warning: lines 1, 3: bytes that are not UTF-8 replaced by U+FFFD\n"
    # an argument the shell could not decode reaches Python with surrogates (PEP 383): its bytes, replaced alike
    arg = predict(capsys, monkeypatch, finished_run, "--json", "fine", os.fsdecode(b"Caf\xe9 prices"))
    assert arg.code == 0 and json.loads(arg.out.splitlines()[1])["text"] == "Caf\ufffd prices"
    assert arg.err == "reuters-ray: warning: argument 2: bytes that are not UTF-8 replaced by U+FFFD\n"
    assert predict(capsys, monkeypatch, finished_run, "x", stdin=None).code == 0


def test_python_answers_blank_and_unreadable_texts_by_the_same_rule(finished_run):
    ens = Ensemble.from_run(finished_run, device="cpu")
    texts = ["", "\ud800 oil prices rose", "oil prices rose", " [UNK] "]
    with pytest.warns(UserWarning, match=r"texts 1: lone surrogates \(not Unicode\) replaced by U\+FFFD"):
        labels = ens.predict(texts)
    assert labels[0] is None and labels[3] is None and labels[1] in ens.label_names
    with pytest.warns(UserWarning):
        probs = ens.predict_proba(texts)
    assert np.isnan(probs[[0, 3]]).all() and np.allclose(probs[[1, 2]].sum(axis=1), 1.0)
    # alone or beside a longer text (another padded length): the same within float32 rounding (7e-9 seen)
    np.testing.assert_allclose(probs[2], ens.predict_proba(["oil prices rose"])[0], rtol=1e-6)
    assert ens.answers(["", "oil"], k=2)[0] == {"label": None, "top": [], "note": "no text"}
    assert len(ens.answers(["", "oil"], k=2)[1]["top"]) == 2
    with pytest.raises(TypeError, match=r"texts must be a list of strings, not one string"):
        ens.predict("oil prices rose")
    with pytest.raises(TypeError, match=r"texts 1: not strings \(int\)"):
        ens.predict(["oil", 3])


def test_two_processes_filling_the_export_cache_at_once_both_answer(finished_run, tmp_path):
    """`predict --backend onnx-int8` twice at once on a run with no export yet: each exports into a private folder,
    one rename publishes it, the other uses the winner's (was: the second died, OSError Directory not empty)."""
    env = {**os.environ, "REUTERS_RAY_CACHE": str(tmp_path / "cache")}
    cmd = [str(BIN / "reuters-ray"), "predict", "--run", str(finished_run), "--backend", "onnx-int8", "--json",
           "Oil prices rose sharply", "Quarterly earnings rose"]  # fmt: skip
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert outs[0][0] == outs[1][0] and len(outs[0][0].splitlines()) == 2
    (export,) = (tmp_path / "cache" / "exports").iterdir()  # one export, no leftovers of the loser
    assert not export.name.startswith(".") and (export / "model.int8.onnx").is_file()


def test_publish_dir_keeps_a_whole_copy_and_replaces_a_broken_one(tmp_path):
    from reuters_ray.storage import publish_dir

    def filled(name, text):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "f").write_text(text)
        return folder

    final = tmp_path / "final"
    assert publish_dir(filled("a", "first"), final, lambda p: True) == final and (final / "f").read_text() == "first"
    publish_dir(filled("b", "second"), final, lambda p: (p / "f").read_text() == "first")  # the winner's is whole
    assert (final / "f").read_text() == "first" and not (tmp_path / "b").exists()
    publish_dir(filled("c", "third"), final, lambda p: False)  # the one there is not: swapped for ours
    assert (final / "f").read_text() == "third" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_threads_fetching_one_bucket_run_at_once_get_one_whole_copy(finished_run, tmp_path):
    from conftest import moto_bucket

    from reuters_ray.storage import LOCAL, copy_dir, fetch_run

    with moto_bucket() as (uri, server_fs):
        copy_dir(str(finished_run), "bkt/runs/tiny", LOCAL, server_fs)
        cache = tmp_path / "cache"
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: fetch_run(uri("bkt/runs/tiny"), cache), range(4)))
    assert len(set(got)) == 1 and (got[0] / "models" / "fold_0" / "model.safetensors").is_file()
    assert (got[0] / "metrics.json").read_bytes() == (finished_run / "metrics.json").read_bytes()
    assert [p.name for p in (cache / "runs").iterdir()] == [got[0].name]  # no private folders left behind


def test_piping_into_a_reader_that_stops_early_is_quiet(finished_run, tmp_path):
    """`reuters-ray predict ... | head -1` on 1,200 lines (more than a pipe holds: about 100 kB of answers): no BrokenPipeError traceback."""
    (tmp_path / "many.txt").write_text("Oil prices rose sharply after OPEC cut output\n" * 1200)
    line = f"{BIN / 'reuters-ray'} predict --run {finished_run} --file {tmp_path / 'many.txt'} | head -1"
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=300)
    assert out.stdout.count("\n") == 1 and "Oil prices rose" in out.stdout and out.stderr == ""


def test_texts_the_model_reads_nothing_of_get_no_text(finished_run, capsys, monkeypatch):
    """Control characters, zero-width spaces, a soft hyphen: the tokenizer drops them all, so the model would read
    only [CLS] [SEP] (was: a label, the same as for an empty input)."""
    texts = ["\x01\x02", "\u200b\u200b", "\u00ad", "\x00", "oil prices rose"]
    out = predict(capsys, monkeypatch, finished_run, "--json", *texts[:3], texts[4])
    assert [json.loads(line)["label"] for line in out.out.splitlines()][:3] == [None, None, None]
    ens = Ensemble.from_run(finished_run, device="cpu")
    assert ens.blank_texts(texts) == [0, 1, 2, 3]
    assert ens.predict(t for t in texts) == [None] * 4 + ens.predict(texts[4:])  # any iterable, a generator too


def test_input_predict_cannot_read_is_one_line(finished_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "wide.txt").write_bytes("oil prices\nwheat\n".encode("utf-16"))
    out = predict(capsys, monkeypatch, finished_run, "--file", str(tmp_path / "wide.txt"))
    assert out.code == 2 and out.err.strip() == (
        f"reuters-ray: error: --file {tmp_path / 'wide.txt'}: UTF-16 text (it starts with a UTF-16 byte-order mark); "
        "give UTF-8 text (e.g. iconv -f UTF-16 -t UTF-8)"
    )
    out = predict(capsys, monkeypatch, finished_run, "oil", "-", stdin=b"a b c\n")
    assert out.code == 2 and "- reads the texts from standard input and stands alone" in out.err
    for device in ("cuda", "cuda:1", "tpu"):
        out = predict(capsys, monkeypatch, finished_run, "--device", device, "oil")
        assert out.code == 2 and out.err.startswith(f"reuters-ray: error: --device {device!r}: "), out.err
    out = predict(capsys, monkeypatch, finished_run, "--backend", "onnx", "--device", "cpu", "oil")
    assert out.code == 2 and "--device is for --backend torch" in out.err
    out = predict(capsys, monkeypatch, finished_run, "-", stdin=b"oil prices rose\rwheat harvest\r")
    assert out.code == 0 and len(out.out.splitlines()) == 1  # one line: lines end only at \n; the \r is escaped
    assert out.out.split("\t")[-1] == "oil prices rose\\u000dwheat harvest\n"
    assert out.err.startswith("reuters-ray: warning: line 1: a carriage return inside the text")


def test_a_private_cache_folder_left_by_a_dead_process_is_removed(tmp_path):
    import os

    from reuters_ray.storage import private_dir

    final = tmp_path / "exports" / "key"
    final.parent.mkdir()
    dead, mine = final.parent / ".key.99999999.x1", final.parent / f".key.{os.getpid()}.x2"
    dead.mkdir()
    mine.mkdir()
    made = private_dir(final)
    assert not dead.exists() and mine.exists() and made.name.startswith(f".key.{os.getpid()}.")
