"""ONNX export of a finished run's predictor (reuters_ray.predictor.ensemble loads it back: Ensemble.load).

    reuters-ray export --run RUN --out DIR [--int8]

DIR/model.onnx        one graph: the fold models side by side, their logits averaged (inputs input_ids and
                      attention_mask, int64 [batch, sequence], both dimensions dynamic; outputs logits [batch, K]
                      and probabilities [batch, K]: their softmax, or for a multi-label run each topic's sigmoid,
                      before any blend with the linear model). Of a blended run it is one PART of the predictor (the
                      fold ensemble), else the whole predictor; its ONNX metadata (onnxruntime's get_modelmeta())
                      says which and where the recipe is
DIR/model.int8.onnx   with --int8: the same graph with dynamically quantized INT8 weights (onnxruntime)
DIR/tokenizer/        the run's tokenizer (Hugging Face files)
DIR/linear/           a blended run's linear model (reuters_ray.scoring.baseline), blended as the run did
DIR/manifest.json     format tag, the run's name, config hash and test metrics (the predictor's: test_metrics_of),
                      label names, max_length, the blend weight, the task and a multi-label run's thresholds (of the
                      predictor's probabilities), the SHA-256 of every graph, checked on load; and how to answer as
                      the predictor does without reuters-ray: "parts" (the graph, and a blended run's linear model
                      with its exact recipe), "input" (the text cleaning and tokenization), "combine" (the blend,
                      the answer, what the decision applies to)
DIR/README.md         the same for a reader, with a Python recipe (onnxruntime, transformers, numpy, scikit-learn,
                      safetensors; no reuters_ray) that gives the predictor's answers and probabilities

Exported with torch.onnx.export (transformers 5 has no transformers.onnx; optimum does not install beside it).
Loading reads JSON, ONNX protobufs and safetensors: nothing in an export folder runs code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from reuters_ray.data.preprocess import TOKEN_ARTIFACTS, WHITESPACE
from reuters_ray.data.text import SURROGATE
from reuters_ray.errors import DataError
from reuters_ray.fold.card import CardFigure, card_metadata
from reuters_ray.scoring.baseline import FORMAT as LINEAR_FORMAT
from reuters_ray.scoring.baseline import NGRAMS, VOCABULARY_FILE, WEIGHTS_FILE
from reuters_ray.storage import cache_root, finished_run, sha256_file

FORMAT = "reuters-ray-export/1"
RECIPE = 4  # how an export is made (4: README.md, the manifest's recipe, the graphs' metadata); a cached export of
# an older recipe is made again
GRAPHS = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
README = "README.md"
BACKENDS = ("torch", *GRAPHS)
OPSET = 17
# the test figures a manifest carries: single-label, multi-label
_KEYS = {False: ("accuracy", "f1_weighted", "f1_macro"), True: ("f1_micro", "f1_macro", "f1_samples", "accuracy")}


def _mean_of_folds(models, multi_label: bool = False):
    import torch

    class MeanOfFolds(torch.nn.Module):
        """The ensemble as one module: every fold model on the same batch, logits averaged (Ensemble.mean_logits),
        and their probabilities (softmax, or sigmoid for a multi-label run)."""

        def __init__(self):
            super().__init__()
            self.folds = torch.nn.ModuleList(models)

        def forward(self, input_ids, attention_mask):
            logits = [m(input_ids=input_ids, attention_mask=attention_mask).logits for m in self.folds]
            mean = torch.stack(logits).mean(dim=0)
            return mean, torch.sigmoid(mean) if multi_label else torch.softmax(mean, dim=-1)

    return MeanOfFolds().eval()


def _export_graph(models, path: Path, multi_label: bool = False) -> None:
    """The TorchScript exporter (dynamo=False, opset 17), attention as plain MatMul/Softmax ("eager": the pattern
    onnxruntime's BERT optimizer fuses for the INT8 graph; Hugging Face's SDPA attention exports to a graph it
    cannot fuse). Measured on the quick run's MiniLM folds (docs/results.md): this exporter's graph runs faster in
    onnxruntime than the dynamo exporter's and exports in 6 s instead of 48. Deprecated in torch 2.x, not removed;
    torch.onnx.export(dynamo=True) is the way back if it goes."""
    import warnings

    import torch

    for m in models:
        m.set_attn_implementation("eager")  # same logits as SDPA (within 1e-6)
    module = _mean_of_folds(models, multi_label)
    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits", "probabilities"],
            dynamic_axes={**dynamic, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _quantize(fp32: Path, int8: Path, num_heads: int, hidden_size: int) -> None:
    """The INT8 graph, for onnxruntime: the fp32 graph fused by onnxruntime's BERT optimizer (attention, skip
    LayerNorm, GELU with the tanh approximation), then dynamic INT8 weights with one scale per output channel in
    7 bits (reduce_range: x86 without VNNI multiplies u8 by s8 in saturating 16-bit pairs). Measured on the quick
    run's MiniLM folds (docs/results.md): 1.2x faster than quantizing the unfused graph, 99.3-99.7% of torch's
    labels kept. Model files written by us, read back by onnxruntime's tools: nothing here unpickles."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_embed_layer_norm = False  # its fusion fails on this graph (KeyError, onnxruntime 1.32); ~0.1%
    options.enable_gelu_approximation = True
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)  # the optimizer's and quantize_dynamic's advice, on the root logger
    try:
        fused = optimize_model(
            str(fp32),
            model_type="bert",
            num_heads=num_heads,
            hidden_size=hidden_size,
            opt_level=0,  # the fusions only; onnxruntime applies its own graph optimizations when it loads
            optimization_options=options,
        )
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / "fused.onnx"
            fused.save_model_to_file(str(plain))
            quantize_dynamic(
                str(plain),
                str(int8),
                weight_type=QuantType.QInt8,
                per_channel=True,
                reduce_range=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # types of the fused ops' outputs
            )
    finally:
        root.setLevel(level)


def export_predictor(predictor, out_dir: str | Path, int8: bool = False) -> Path:
    """Exports `predictor` (a torch ensemble.Ensemble of a finished run: Ensemble.from_run) into `out_dir`, which
    must not exist yet (or be empty). Written under a temporary name and renamed: a failed export leaves nothing.
    Raises DataError when `out_dir` holds something."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: already exists and is a file; export into a new folder")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: already exists and is not empty; export into a new folder")
    run = predictor.run_dir
    metrics = json.loads((run / "metrics.json").read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        models = predictor.models
        _export_graph(models, tmp / GRAPHS["onnx"], predictor.multi_label)
        if int8:
            arch = models[0].config
            _quantize(tmp / GRAPHS["onnx"], tmp / GRAPHS["onnx-int8"], arch.num_attention_heads, arch.hidden_size)
        predictor.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if predictor.linear is not None:
            shutil.copytree(run / "linear", tmp / "linear")
        graphs = [name for name in GRAPHS.values() if (tmp / name).exists()]
        how = how_to_predict(predictor, metrics, graphs)
        for name in graphs:
            _stamp(tmp / name, how, metrics.get("run", run.name))
        manifest = {
            "format": FORMAT,
            "run": metrics.get("run", run.name),
            "config_sha256": hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest(),
            "predictor": metrics.get("predictor", "ensemble"),
            "blend_weight": predictor.blend_weight if predictor.linear is not None else None,
            "label_names": predictor.label_names,
            "max_length": predictor.max_length,
            "folds": len(models),
            "test_metrics": {k: metrics[k] for k in _KEYS[predictor.multi_label] if k in metrics},
            "test_metrics_of": "predictor",  # metrics.json's top level: the blend's figures for a blended run
            "task": "multi" if predictor.multi_label else "single",
            "decision": predictor.decision,
            "opset": OPSET,
            "recipe": RECIPE,
            "graphs": {name: sha256_file(tmp / name) for name in graphs},
            **how,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (tmp / README).write_text(export_card(run, manifest) + readme(manifest), encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.chmod(0o755)  # mkdtemp made it private
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export_card(run: Path, manifest: dict) -> str:
    """The export README's model-card metadata (reuters_ray.fold.card): the predictor's test figures in its
    model-index, the base model and data set from the run's config.yaml."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    fingerprint = json.loads(p.read_text()) if (p := run / "data_fingerprint.json").is_file() else {}
    return card_metadata(
        title=f"{manifest['run']} export ({manifest['predictor']})",
        base_model=config["model"]["name"],
        data={**config["data"], **fingerprint},
        results=[CardFigure(k, v) for k, v in manifest["test_metrics"].items()],
    )


def how_to_predict(predictor, metrics: dict, graphs: list[str]) -> dict:
    """The manifest's "parts", "input" and "combine": what the graph is (the fold ensemble, one part of a blended
    run's predictor; else the whole predictor), a blended run's linear model with its exact recipe, the cleaning
    and tokenization of a text, and how the parts give the predictor's probabilities and answer. Every value a
    program needs is here (patterns, files, numbers); the strings say the same for a reader."""
    from sklearn.feature_extraction.text import CountVectorizer

    multi, lm = predictor.multi_label, predictor.linear
    squash = "each label's sigmoid (labels independent)" if multi else "their softmax over the labels"
    student = metrics.get("predictor") == "student"
    models = "the student model" if student else f"{len(predictor.models)} fold models, their logits averaged"
    graph = {
        "files": graphs,
        "part": "ensemble" if lm is not None else "predictor",
        "of": models,
        "is": (
            f"the fold ensemble ({models}), one part of the predictor: its probabilities are blended with linear/'s "
            "(combine) before any answer; thresholding or arg-maxing them alone does not give the predictor's answers"
            if lm is not None
            else f"the whole predictor ({models}): its probabilities are the predictor's"
        ),
        "inputs": {"input_ids": "int64 [batch, sequence]", "attention_mask": "int64 [batch, sequence], 1 on tokens"},
        "outputs": {"logits": f"float32 [batch, K]: {models}", "probabilities": f"float32 [batch, K]: {squash}"},
    }
    linear = None
    if lm is not None:
        ens = metrics.get("ensemble", {})
        own = ens.get("decision") if multi else None  # chosen on the ensemble's own out-of-fold probabilities
        graph["alone"] = {  # the graph used on its own: its own test figures, and its own thresholds (multi-label)
            "test_metrics": {k: ens[k] for k in _KEYS[multi] if k in ens},
            "decision": {k: own[k] for k in ("thresholds", "at_least_one")} if own else None,
        }
        linear = {
            "part": "linear",
            "weights": f"linear/{WEIGHTS_FILE}",  # safetensors: idf [V], coef [C, V], intercept [C], classes [C]
            "vocabulary": f"linear/{VOCABULARY_FILE}",  # JSON list: the term of each of the V columns
            "format": LINEAR_FORMAT,
            "ngram_range": list(NGRAMS),
            "lowercase": True,
            "token_pattern": CountVectorizer().token_pattern,
            "features": "scikit-learn CountVectorizer(ngram_range, lowercase, token_pattern, vocabulary={term: its "
            "column}) counts of the cleaned text; each count c becomes 1 + ln(c); times idf; each row L2-normed",
            "scores": "features @ coef.T + intercept, into columns `classes` of an [N, K] array of -inf",
            "probabilities": "sigmoid(scores / temperature + bias)" if multi else "softmax(scores / temperature)",
            "temperature": lm.temperature,
            **({"bias": lm.bias} if multi else {}),
        }
    w = predictor.blend_weight if lm is not None else None
    return {
        "parts": {"graph": graph, "linear": linear},
        "input": text_input(predictor.max_length),
        "combine": {
            "blend_weight": w,
            "probabilities": f"{w} * graph probabilities + (1 - {w}) * linear probabilities"
            if lm is not None
            else "graph probabilities",
            "answer": "the labels whose probability >= decision.thresholds (one per label), most probable first; "
            "with decision.at_least_one a text with none gets its most probable label"
            if multi
            else "the label of the highest probability (the first on a tie)",
            "decision_applies_to": "the predictor's probabilities (combine.probabilities), never the graph's alone"
            if lm is not None
            else "the predictor's probabilities: the graph's",
            "readme": README,
        },
    }


def text_input(max_length: int) -> dict:
    """The manifest's "input": a text's way into the graph and the linear model, as Ensemble.predict_proba reads it
    (text.readable_texts, preprocess.clean_text, features.tokenize), with the very patterns those use."""

    return {
        "clean": [  # in order; "sub": re.sub(pattern, repl, text), case-insensitive where ignore_case
            {"op": "sub", "pattern": SURROGATE.pattern, "repl": "\ufffd", "ignore_case": False},
            {"op": "lower"},
            {"op": "sub", "pattern": TOKEN_ARTIFACTS.pattern, "repl": " ", "ignore_case": True},
            {"op": "sub", "pattern": WHITESPACE.pattern, "repl": " ", "ignore_case": False},
            {"op": "strip"},
        ],
        "tokenizer": "tokenizer/",
        "max_length": max_length,
        "tokens": "the tokenizer's [CLS] text [SEP] of the cleaned text, truncated to max_length tokens; a batch "
        "padded with its pad id, attention_mask 0 there; no token_type_ids",
        "no_text": "a text of 2 tokens or fewer ([CLS] and [SEP] alone) gets no answer and no probabilities",
    }


def _stamp(graph: Path, how: dict, run: str) -> None:
    """Writes into `graph` (an ONNX file) what it is, for anyone who opens it alone: its doc_string and
    metadata_props (onnxruntime: session.get_modelmeta().description and .custom_metadata_map)."""
    import onnx

    model = onnx.load(str(graph))
    part, combine = how["parts"]["graph"]["part"], how["combine"]
    model.doc_string = (
        f"reuters-ray run {run}: {how['parts']['graph']['is']}. The predictor's probabilities: "
        f"{combine['probabilities']}; its decision applies to those. The recipe: manifest.json (parts, input, "
        f"combine) and {README} beside this file."
    )
    props = {
        "reuters_ray.run": run,
        "reuters_ray.part": part,
        "reuters_ray.predictor_probabilities": combine["probabilities"],
        "reuters_ray.decision_applies_to": combine["decision_applies_to"],
        "reuters_ray.manifest": "manifest.json",
        "reuters_ray.readme": README,
    }
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(graph))


def read_manifest(export_dir: str | Path, backend: str) -> dict:
    """The manifest of an export folder, after checking it is one of ours and that the graph for `backend` is there
    and unchanged. Raises DataError naming the folder or file."""
    folder = Path(export_dir)
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{folder}: no manifest.json; is it a folder made by `reuters-ray export`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: damaged ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a reuters-ray export (format {FORMAT!r} expected)")
    name = GRAPHS[backend]
    if name not in manifest.get("graphs", {}):
        hint = " (export it with --int8)" if backend == "onnx-int8" else ""
        raise DataError(f"{folder}: this export has no {name}{hint}")
    graph = folder / name
    if not graph.is_file() or sha256_file(graph) != manifest["graphs"][name]:
        raise DataError(f"{graph}: missing or damaged (its SHA-256 differs from manifest.json's)")
    return manifest


def export_cache_dir(run_dir: str | Path, local: Path | None = None) -> Path:
    """Where cached_export keeps the export of run `run_dir`: $REUTERS_RAY_CACHE (default ~/.cache/reuters-ray)
    /exports/<hash of the run's location, the export RECIPE and the run's metrics.json>, so a resumed or rerun run,
    or a newer way of exporting, gets a new export. `local`: the run's local copy, when the caller has it already.
    Raises DataError naming `run_dir` when it is not a finished run."""

    metrics = ((local or finished_run(str(run_dir))) / "metrics.json").read_bytes()
    key = hashlib.sha256(f"{run_dir}\0{RECIPE}\0".encode() + metrics).hexdigest()[:16]
    return cache_root() / "exports" / key


# The README's Python recipe: the predictor's answers from the export folder alone, driven by manifest.json (every
# number and pattern read from it), mirroring Ensemble.predict_proba and answer_of step by step. No reuters_ray.
RECIPE_PY = '''\
"""The predictor of a reuters-ray export folder, without reuters-ray: python recipe.py EXPORT_DIR "text" ..."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from safetensors import safe_open
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.preprocessing import normalize
from transformers import AutoTokenizer


def clean(text, steps):
    """The text as training saw it: manifest.json's input.clean steps, in order."""
    for step in steps:
        if step["op"] == "lower":
            text = text.lower()
        elif step["op"] == "strip":
            text = text.strip()
        else:  # "sub"
            flags = re.IGNORECASE if step["ignore_case"] else 0
            text = re.sub(step["pattern"], step["repl"], text, flags=flags)
    return text


def linear_probabilities(folder, part, texts, num_labels, multi_label):
    """[N, K] the linear model's probabilities of cleaned texts (manifest.json's parts.linear)."""
    with safe_open(str(folder / part["weights"]), framework="numpy") as f:
        idf, coef, intercept, classes = (f.get_tensor(k) for k in ("idf", "coef", "intercept", "classes"))
    terms = json.loads((folder / part["vocabulary"]).read_text(encoding="utf-8"))
    counter = CountVectorizer(
        ngram_range=tuple(part["ngram_range"]), lowercase=part["lowercase"], token_pattern=part["token_pattern"],
        vocabulary={t: i for i, t in enumerate(terms)},
    )
    x = counter.transform(texts).astype(np.float64)
    x.data = np.log(x.data) + 1.0  # sublinear tf
    x = normalize(x.multiply(idf).tocsr())  # tf-idf, each row L2-normed
    scores = np.full((len(texts), num_labels), -np.inf)  # a label the model never saw: probability 0
    scores[:, classes] = x @ coef.T + intercept
    z = scores / part["temperature"]
    if multi_label:
        return np.exp(-np.logaddexp(0.0, -(z + part["bias"])))  # sigmoid
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # softmax


def predict(texts, export_dir=".", graph="model.onnx"):
    """(answers, probabilities) of the run's predictor for a list of texts. answers[i]: text i's label (a
    multi-label run: its list of labels, most probable first), None for a text with nothing to read;
    probabilities: [N, K] float64 in manifest.json's label_names order, a row of NaN for such a text."""
    folder = Path(export_dir)
    m = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    names, multi = m["label_names"], m["task"] == "multi"
    cleaned = [clean(t, m["input"]["clean"]) for t in texts]
    probs = np.full((len(texts), len(names)), np.nan)
    tokenizer = AutoTokenizer.from_pretrained(str(folder / m["input"]["tokenizer"]))
    enc = tokenizer(cleaned, truncation=True, max_length=m["input"]["max_length"], padding=True,
                    return_token_type_ids=False, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    rows = np.flatnonzero(mask.sum(axis=1) > 2)  # more than [CLS] and [SEP]: the others get no answer
    if len(rows):
        session = ort.InferenceSession(str(folder / graph), providers=["CPUExecutionProvider"])
        (p,) = session.run(["probabilities"], {"input_ids": ids[rows], "attention_mask": mask[rows]})
        p = p.astype(np.float64)  # the graph's part
        linear = m["parts"]["linear"]
        if linear is not None:  # a blended run: w * graph + (1 - w) * linear
            w = m["combine"]["blend_weight"]
            p = w * p + (1 - w) * linear_probabilities(folder, linear, [cleaned[i] for i in rows], len(names), multi)
        probs[rows] = p
    answers = []
    for row in probs:
        if np.isnan(row).any():
            answers.append(None)
            continue
        order = np.argsort(-row, kind="stable")
        if not multi:
            answers.append(names[order[0]])
            continue
        chosen = row >= np.asarray(m["decision"]["thresholds"])  # the predictor's probabilities, never the graph's
        if m["decision"]["at_least_one"] and not chosen.any():
            chosen[order[0]] = True
        answers.append([names[i] for i in order if chosen[i]])
    return answers, probs


if __name__ == "__main__":
    answers, probabilities = predict(sys.argv[2:], sys.argv[1])
    for text, answer in zip(sys.argv[2:], answers):
        print(answer, text, sep="\\t")
'''


def readme(manifest: dict) -> str:
    """The export's README.md: what is in the folder, what the graph is (a blended run's fold ensemble: one part;
    else the whole predictor), the predictor's answer step by step, RECIPE_PY, the graph alone, the test figures."""
    m, graph, linear = manifest, manifest["parts"]["graph"], manifest["parts"]["linear"]
    multi, w = m["task"] == "multi", m["blend_weight"]
    files = [f"| `{GRAPHS['onnx']}` | the graph (fp32): {graph['is']} |"]
    if GRAPHS["onnx-int8"] in m["graphs"]:
        files.append(f"| `{GRAPHS['onnx-int8']}` | the same graph with INT8 weights (onnxruntime, CPU) |")
    files.append("| `tokenizer/` | the run's tokenizer (Hugging Face files) |")
    if linear is not None:
        files.append(f"| `{linear['weights']}`, `{linear['vocabulary']}` | the linear model (TF-IDF + linear SVM) |")
    files.append(
        "| `manifest.json` | labels, max_length, blend weight, decision, test figures, the graphs' SHA-256, and the "
        "recipe as data (`parts`, `input`, `combine`) |"
    )
    files.append(f"| `{README}` | this file |")
    squash = "each label's sigmoid" if multi else "the softmax over the labels"
    decision = " (`decision` in manifest.json: per-label thresholds, at_least_one)" if multi else ""
    if linear is not None:
        what = (
            f"**The graph is not the whole predictor.** Its `probabilities` output ({squash}) comes from {graph['of']}: "
            f"the fold ensemble, one part. The run's predictor blends it with the linear model in `linear/`:\n\n"
            f"    predictor probabilities = {w} * graph probabilities + (1 - {w}) * linear probabilities\n\n"
            f"and its answers{decision} are read from those blended probabilities. Thresholding or arg-maxing the "
            "graph's probabilities alone does not give the predictor's answers."
        )
    else:
        what = (
            f"**The graph is the whole predictor** ({graph['of']}): its `probabilities` output ({squash}) are the "
            f"predictor's probabilities, from which its answers{decision} are read."
        )
    steps = [
        "1. Clean each text as training did (manifest.json `input.clean`, in order): lone surrogates become U+FFFD; "
        "lowercase; `[start]`, `[unk]`, `[pad]`, `[unused]` (any case) become a space; runs of whitespace one space; "
        "strip.",
        f"2. Tokenize the cleaned text with `tokenizer/`: `[CLS] ... [SEP]`, truncated to {m['max_length']} tokens "
        "(`input.max_length`); pad a batch with the pad id, `attention_mask` 0 there. A text left with `[CLS]` and "
        "`[SEP]` alone gets no answer.",
        f"3. Run `{GRAPHS['onnx']}`: inputs `input_ids`, `attention_mask` (int64 [batch, sequence]); output "
        f"`probabilities` [batch, {len(m['label_names'])}], columns in `label_names` order.",
    ]
    if linear is not None:
        steps.append(
            "4. The linear model on the cleaned text (`parts.linear`): scikit-learn's CountVectorizer of word 1-2 "
            "grams with the terms of `vocabulary.json` as columns, each count c as 1 + ln(c), times `idf`, each row "
            f"L2-normed; scores `x @ coef.T + intercept` in the columns `classes` (-inf elsewhere); probabilities "
            f"{linear['probabilities']} with `temperature` {linear['temperature']}"
            + (f" and `bias` {linear['bias']}" if multi else "")
            + f". Blend: {w} * graph + (1 - {w}) * linear."
        )
    steps.append(f"{len(steps) + 1}. The answer: {m['combine']['answer']}.")
    alone = ""
    if linear is not None:
        alone = (
            "\n## The graph alone\n\nUsed on its own, the graph is the fold ensemble, a predictor of its own, not the "
            "run's: its own test figures are `parts.graph.alone.test_metrics` "
            f"({_figures(graph['alone']['test_metrics'])})"
            + (", its own thresholds `parts.graph.alone.decision`" if multi else "")
            + ". Those are not the predictor's.\n"
        )
    return _README.format(
        run=m["run"],
        predictor=m["predictor"],
        files="\n".join(files),
        what=what,
        steps="\n".join(steps),
        recipe=RECIPE_PY,
        alone=alone,
        figures=_figures(m["test_metrics"]),
        blend=" (the blend of the graph with `linear/`)" if linear is not None else "",
    )


def _figures(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "none recorded"


_README = """# reuters-ray export of run {run}

The predictor ({predictor}) of run `{run}` for onnxruntime, made by `reuters-ray export`.

| file | what it is |
|---|---|
{files}

## What the graph is

{what}

## The predictor's answer, step by step

{steps}

## In Python, without reuters-ray

`pip install onnxruntime transformers numpy scikit-learn safetensors`, then save this as `recipe.py`:

```python
{recipe}```

`predict(texts, "path/to/this/folder")` gives the predictor's answers and probabilities, as `reuters-ray predict`
does; `graph="model.int8.onnx"` scores with the INT8 graph instead (its answers agree with the fp32 graph's on
nearly every text, not all). From a shell: `python recipe.py path/to/this/folder "some text" "another"`.
{alone}
## Test figures

`test_metrics` in manifest.json are the predictor's{blend} on the run's test split: {figures}.

## With reuters-ray

`reuters-ray predict --run path/to/this/folder "some text"` or, in Python,
`Ensemble.load("path/to/this/folder").predict(texts)` (reuters_ray.predictor.ensemble) answer the same.
"""
