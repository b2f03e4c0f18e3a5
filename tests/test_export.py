"""ONNX export of the shared tiny run (conftest.finished_run, a blended run): one graph that averages the fold
models, its INT8 twin, the cache `predict --backend` reads, and folders that are not whole exports refused; the
export used as an onnxruntime user would, outside reuters-ray, by the recipe of its own README (run_readme_recipe;
the multi-label export: test_multilabel_run.py)."""

import hashlib
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from reuters_ray.cli import main
from reuters_ray.config import RunConfig, from_dict
from reuters_ray.data.features import tokenize
from reuters_ray.errors import DataError
from reuters_ray.predictor.ensemble import Ensemble
from reuters_ray.predictor.export import export_cache_dir

# Run in a fresh interpreter outside the repository: every import of reuters_ray fails, as on a machine without it.
_HARNESS = """
import json, sys
sys.modules["reuters_ray"] = None
try:
    import reuters_ray
    sys.exit("reuters_ray is importable")
except ImportError:
    pass
import recipe
texts = json.load(open("texts.json"))
out = {}
for graph in sys.argv[2:]:
    answers, probs = recipe.predict(texts, sys.argv[1], graph)
    out[graph] = {"answers": answers, "probabilities": probs.tolist()}
loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "reuters_ray" and v is not None)
json.dump({"graphs": out, "modules": loaded}, sys.stdout)
"""


def readme_recipe(export_dir) -> str:
    """The one Python block of the export's README.md."""
    (code,) = re.findall(r"```python\n(.*?)```", (export_dir / "README.md").read_text(encoding="utf-8"), re.S)
    return code


def run_readme_recipe(export_dir, texts, work_dir, graphs=("model.onnx",)) -> dict:
    """{graph: (answers, [N, K] probabilities)} of the recipe in the export's own README, saved as recipe.py in
    `work_dir` (outside the repository) and run there, once for all `graphs`, by a Python where reuters_ray cannot be
    imported, on `texts` (given as JSON)."""
    work_dir.mkdir(exist_ok=True)
    (work_dir / "recipe.py").write_text(readme_recipe(export_dir))
    (work_dir / "texts.json").write_text(json.dumps(texts))
    cmd = [sys.executable, "-c", _HARNESS, str(export_dir), *graphs]
    out = subprocess.run(cmd, cwd=work_dir, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout)
    assert got["modules"] == []  # nothing of reuters_ray was loaded
    return {g: (r["answers"], np.array(r["probabilities"], dtype=np.float64)) for g, r in got["graphs"].items()}


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    assert main(["export", "--run", str(finished_run), "--out", str(out), "--int8"]) == 0
    return out


@pytest.fixture(scope="module")
def test_texts(finished_run):
    """The run's 200 test texts, preprocessed as the run did (its config.yaml)."""
    from reuters_ray.data.preprocess import prepare

    cfg = from_dict(RunConfig, yaml.safe_load((finished_run / "config.yaml").read_text()))
    return prepare(cfg.data).test_texts


def test_the_onnx_graph_scores_as_the_torch_ensemble(finished_run, exported, test_texts):
    torch_ens = Ensemble.from_run(finished_run, device="cpu")
    tokens = tokenize(test_texts, torch_ens.tokenizer, torch_ens.max_length)
    ref = torch_ens.mean_logits(tokens)
    fp32, int8 = Ensemble.from_export(exported, "onnx"), Ensemble.from_export(exported, "onnx-int8")
    np.testing.assert_allclose(fp32.mean_logits(tokens), ref, atol=1e-4)
    agree = (int8.mean_logits(tokens).argmax(axis=1) == ref.argmax(axis=1)).mean()
    assert agree >= 0.98, agree  # 1.0 seen (torch 2.13, onnxruntime 1.32)
    # the whole predictor, blend with the linear model included, answers as the run's own does
    for onnx_ens in (fp32, int8):
        assert onnx_ens.linear is not None and onnx_ens.blend_weight == torch_ens.blend_weight
    assert fp32.predict(test_texts[:50]) == torch_ens.predict(test_texts[:50])
    np.testing.assert_allclose(fp32.predict_proba(test_texts[:50]), torch_ens.predict_proba(test_texts[:50]), atol=1e-5)
    # batch and sequence length are free: one text of 5 tokens, then 3 texts up to max_length
    session = fp32.onnx.session
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert all(isinstance(d, str) for i in session.get_inputs() for d in i.shape)  # symbolic, not fixed
    assert fp32.predict_proba(["oil"]).shape == (1, 18) and fp32.predict_proba(test_texts[:3]).shape == (3, 18)


def test_the_manifest_says_where_the_export_comes_from(finished_run, exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert manifest["format"] == "reuters-ray-export/1" and manifest["run"] == finished_run.name
    assert manifest["config_sha256"] == hashlib.sha256((finished_run / "config.yaml").read_bytes()).hexdigest()
    assert manifest["test_metrics"] == {k: metrics[k] for k in ("accuracy", "f1_weighted", "f1_macro")}
    assert manifest["label_names"] == metrics["label_names"] and manifest["max_length"] == 64
    assert (manifest["predictor"], manifest["blend_weight"], manifest["folds"]) == (
        "blend",
        metrics["blend"]["weight"],
        2,
    )
    for name, digest in manifest["graphs"].items():
        assert hashlib.sha256((exported / name).read_bytes()).hexdigest() == digest
    import onnx

    # INT8: every layer with a weight matrix is integer: each attention (its Q, K, V projections and the
    # scores) fused into one QAttention, every other dense layer an integer MatMul; nothing float is left to multiply
    fp32, int8 = (onnx.load(str(exported / n)) for n in ("model.onnx", "model.int8.onnx"))
    weights = {i.name for i in fp32.graph.initializer}
    dense = [n for n in fp32.graph.node if n.op_type == "Gemm" or (n.op_type == "MatMul" and n.input[1] in weights)]
    assert len(dense) == 2 * (2 * 6 + 2)  # 2 folds x (2 layers x 6 dense + pooler + classifier)
    ops = [n.op_type for n in int8.graph.node]
    assert ops.count("QAttention") == 2 * 2  # 2 folds x 2 layers
    assert ops.count("MatMulInteger") == len(dense) - 3 * ops.count("QAttention")
    assert ops.count("MatMul") == ops.count("Gemm") == 0
    assert not list(exported.parent.glob(".tiny.*"))  # the temporary folder was renamed, nothing left beside it


def test_predict_backend_reads_the_cached_export(finished_run, exported, tmp_path, capsys, monkeypatch):
    """`predict --backend onnx-int8` answers as torch does, from the export in the cache (put there from the
    fixture's export instead of exporting again: 12 s here)."""
    monkeypatch.setenv("REUTERS_RAY_CACHE", str(tmp_path))
    shutil.copytree(exported, export_cache_dir(finished_run))
    texts = ["Oil prices rose sharply after OPEC cut output", "The company reported quarterly earnings of 1.20 dlrs"]
    rows = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        capsys.readouterr()
        assert main(["predict", "--run", str(finished_run), "--json", "--backend", backend, *texts]) == 0
        rows[backend] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for backend in ("onnx", "onnx-int8"):
        assert [r["label"] for r in rows[backend]] == [r["label"] for r in rows["torch"]]
        for a, b in zip(rows[backend], rows["torch"]):
            np.testing.assert_allclose([t["p"] for t in a["top"]], [t["p"] for t in b["top"]], atol=2e-3)
    assert [p.name for p in (tmp_path / "exports").iterdir()] == [export_cache_dir(finished_run).name]


def test_damaged_or_foreign_exports_are_refused(finished_run, exported, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    graph = copy / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:4096])  # a truncated upload
    with pytest.raises(DataError, match=r"model.onnx: missing or damaged \(its SHA-256 differs"):
        Ensemble.from_export(copy, "onnx")
    Ensemble.from_export(copy, "onnx-int8")  # the other graph is whole
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["graphs"]["model.int8.onnx"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"has no model.int8.onnx \(export it with --int8\)"):
        Ensemble.from_export(copy, "onnx-int8")
    (copy / "manifest.json").write_text(json.dumps({**manifest, "format": "someone-else/1"}))
    with pytest.raises(DataError, match="not a reuters-ray export"):
        Ensemble.from_export(copy, "onnx")
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match=r"manifest.json: damaged"):
        Ensemble.from_export(copy, "onnx")
    with pytest.raises(DataError, match=r"no manifest.json; is it a folder made by `reuters-ray export`\?"):
        Ensemble.from_export(tmp_path, "onnx")
    # exporting into a folder that holds something: refused before any work, nothing written
    before = sorted(p.name for p in copy.iterdir())
    assert main(["export", "--run", str(finished_run), "--out", str(copy)]) == 2
    assert "already exists and is not empty; export into a new folder" in capsys.readouterr().err
    assert sorted(p.name for p in copy.iterdir()) == before


def graph_alone(export_dir, texts, ens) -> np.ndarray:
    """[N, K] the `probabilities` output of export_dir's model.onnx for `texts` (none blank), read alone: what a user
    who ignores the rest of the export gets."""
    import onnxruntime as ort

    tokens = tokenize(texts, ens.tokenizer, ens.max_length)
    ids, lengths = tokens.ids.astype(np.int64), tokens.lengths
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    session = ort.InferenceSession(str(export_dir / "model.onnx"))
    return session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0]


# Texts a user sends beside the test split's: blank, markers alone, markers and capitals and a tab to clean, a lone
# surrogate (not Unicode: replaced by U+FFFD, with a warning, as Ensemble does).
ODD_TEXTS = ["", "  [UNK] [pad]\t", "OIL PRICES [UNK] rose\tSHARPLY after OPEC cut output", "crude \ud800 oil exports"]


def test_the_readme_recipe_answers_as_predict_without_reuters_ray(finished_run, exported, test_texts, tmp_path, capsys):
    """The issue's case: the export used as an onnxruntime user would, outside reuters-ray, from its own folder
    alone (README's recipe, manifest.json): the graph's probabilities are the fold ensemble's part, blended with the
    linear model as manifest.json says, give `reuters-ray predict`'s labels and probabilities; the INT8 graph's
    labels within the INT8 tolerance above. Arg-maxing the graph alone does not (what the README warns of)."""
    texts = test_texts + ODD_TEXTS
    ens = Ensemble.from_run(finished_run, device="cpu")
    k = len(ens.label_names)
    with pytest.warns(UserWarning, match="lone surrogates"):
        want, want_p = ens.answers(texts, k), ens.predict_proba(texts)
    plain = texts[:-1]  # a lone surrogate cannot be a command-line argument
    assert main(["predict", "--run", str(finished_run), "--json", "--top-k", str(k), *plain]) == 0
    cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # predict scores --batch-size texts at a time and answers() these 204 at once: batches padded to other lengths
    # differ by float noise (1e-7), which can flip a probability's 6th decimal (seen: 0.048135 against 0.048136)
    assert [(a["label"], a.get("note")) for a in cli] == [(a["label"], a.get("note")) for a in want[:-1]]
    for a, b in zip(cli, want):
        assert {t["label"]: t["p"] for t in a["top"]} == pytest.approx({t["label"]: t["p"] for t in b["top"]}, abs=2e-6)
    labels = [a["label"] for a in want]
    assert labels[200:202] == [None, None] and None not in labels[:200] + labels[202:]

    by_graph = run_readme_recipe(exported, texts, tmp_path / "user", ("model.onnx", "model.int8.onnx"))
    got, got_p = by_graph["model.onnx"]
    assert got == labels
    np.testing.assert_allclose(got_p, want_p, atol=1e-5)  # NaN rows (no text) alike
    for a, row in zip(cli, got_p):  # predict --json's probabilities, rounded to 6 decimals
        for t in a["top"]:
            assert abs(row[ens.label_names.index(t["label"])] - t["p"]) <= 1e-5
    int8, _ = by_graph["model.int8.onnx"]
    assert int8[200:202] == [None, None]
    agree = np.mean([a == b for a, b in zip(int8, labels) if b is not None])
    assert agree >= 0.98, agree

    # the graph alone, arg-maxed: the fold ensemble's answers, not the predictor's
    alone = [ens.label_names[i] for i in graph_alone(exported, test_texts, ens).argmax(axis=1)]
    assert sum(a != b for a, b in zip(alone, labels)) > 0  # most of the 200 here: this tiny ensemble learnt little


def test_manifest_graph_metadata_and_readme_say_the_graph_is_the_fold_ensemble_part(finished_run, exported):
    """What a user reads from the export says exactly which part the graph is and how to get the predictor's answer:
    manifest.json (parts, input, combine: values a program uses), the graphs' own ONNX metadata, README.md."""
    import onnxruntime as ort

    from reuters_ray.data.preprocess import clean_text
    from reuters_ray.data.text import readable_texts
    from reuters_ray.scoring.baseline import LinearModel

    m = json.loads((exported / "manifest.json").read_text())
    metrics = json.loads((finished_run / "metrics.json").read_text())
    w, lm = metrics["blend"]["weight"], LinearModel.load(finished_run / "linear")
    graph, linear, combine = m["parts"]["graph"], m["parts"]["linear"], m["combine"]
    assert (m["recipe"], m["test_metrics_of"], graph["part"]) == (4, "predictor", "ensemble")
    assert graph["files"] == ["model.onnx", "model.int8.onnx"] and combine["blend_weight"] == m["blend_weight"] == w
    assert graph["alone"] == {
        "test_metrics": {k: metrics["ensemble"][k] for k in ("accuracy", "f1_weighted", "f1_macro")},
        "decision": None,
    }
    formula = f"{w} * graph probabilities + (1 - {w}) * linear probabilities"
    assert combine["probabilities"] == formula and "never the graph's alone" in combine["decision_applies_to"]
    assert (linear["temperature"], linear["ngram_range"], linear["probabilities"]) == (
        lm.temperature,
        [1, 2],
        "softmax(scores / temperature)",
    )
    assert (
        "bias" not in linear
        and (exported / linear["weights"]).is_file()
        and (exported / linear["vocabulary"]).is_file()
    )
    assert m["input"]["max_length"] == m["max_length"] == 64
    # the cleaning steps, as README's recipe applies them, are clean_text's (lone surrogates replaced first)
    recipe: dict = {}
    exec(readme_recipe(exported), recipe)
    odd = [*ODD_TEXTS, "Tabs\tand\u00a0nbsp [START]x[Unused] 价格上涨 ", "\u2028line\u2029 [PAD][pad]"]
    with pytest.warns(UserWarning, match="lone surrogates"):
        want = [clean_text(t) for t in readable_texts(odd)]
    assert [recipe["clean"](t, m["input"]["clean"]) for t in odd] == want
    for name in graph["files"]:  # the graph opened alone says what it is and where the recipe is
        meta = ort.InferenceSession(str(exported / name)).get_modelmeta()
        props = meta.custom_metadata_map
        assert (props["reuters_ray.part"], props["reuters_ray.predictor_probabilities"]) == ("ensemble", formula)
        assert (props["reuters_ray.manifest"], props["reuters_ray.readme"]) == ("manifest.json", "README.md")
        assert "one part of the predictor" in meta.description and formula in meta.description
    readme = (exported / "README.md").read_text()
    assert (
        "**The graph is not the whole predictor.**" in readme and f"    predictor probabilities = {formula}" in readme
    )
    assert f"temperature` {lm.temperature}" in readme and "## The graph alone" in readme


def test_an_export_made_before_the_recipe_still_loads(finished_run, exported, tmp_path, test_texts):
    """An export of recipe 3 (no README.md, no parts/input/combine, graphs without metadata) loads and answers as
    before: Ensemble.from_export reads only the keys it always had."""
    import onnx

    old = tmp_path / "old"
    shutil.copytree(exported, old, ignore=shutil.ignore_patterns("README.md", "model.int8.onnx"))
    model = onnx.load(str(old / "model.onnx"))
    del model.metadata_props[:]
    model.doc_string = ""
    onnx.save(model, str(old / "model.onnx"))
    m = json.loads((old / "manifest.json").read_text())
    for key in ("parts", "input", "combine", "test_metrics_of"):
        del m[key]
    m.update(recipe=3, graphs={"model.onnx": hashlib.sha256((old / "model.onnx").read_bytes()).hexdigest()})
    (old / "manifest.json").write_text(json.dumps(m))
    assert Ensemble.load(old).predict(test_texts[:20]) == Ensemble.from_export(exported).predict(test_texts[:20])
