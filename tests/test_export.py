"""ONNX export of the shared tiny run (conftest.finished_run, a blended run): one graph that averages the fold
models, its INT8 twin, the cache `predict --backend` reads, and folders that are not whole exports refused."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import yaml

from reuters_ray.cli import main
from reuters_ray.config import RunConfig, from_dict
from reuters_ray.ensemble import Ensemble
from reuters_ray.errors import DataError
from reuters_ray.export import export_cache_dir
from reuters_ray.features import tokenize


@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "tiny"
    assert main(["export", "--run", str(finished_run), "--out", str(out), "--int8"]) == 0
    return out


@pytest.fixture(scope="module")
def test_texts(finished_run):
    """The run's 200 test texts, preprocessed as the run did (its config.yaml)."""
    from reuters_ray.preprocess import prepare

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
