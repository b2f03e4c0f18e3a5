"""ONNX export of a finished run's predictor (reuters_ray.ensemble loads it back: Ensemble.load).

    reuters-ray export --run RUN --out DIR [--int8]

DIR/model.onnx        one graph: the fold models side by side, their logits averaged (inputs input_ids and
                      attention_mask, int64 [batch, sequence], both dimensions dynamic; outputs logits [batch, K]
                      and probabilities [batch, K]: their softmax, or for a multi-label run each topic's sigmoid,
                      before any blend with the linear model)
DIR/model.int8.onnx   with --int8: the same graph with dynamically quantized INT8 weights (onnxruntime)
DIR/tokenizer/        the run's tokenizer (Hugging Face files)
DIR/linear/           a blended run's linear model (reuters_ray.baseline), blended as the run did
DIR/manifest.json     format tag, the run's name, config hash and test metrics, label names, max_length, the blend
                      weight, the task and a multi-label run's thresholds, and the SHA-256 of every graph, checked
                      on load

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

from reuters_ray.errors import DataError
from reuters_ray.storage import sha256_file

FORMAT = "reuters-ray-export/1"
RECIPE = 3  # how the graphs are made; changes with them, so cached exports of an older recipe are made again
GRAPHS = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
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
            "task": "multi" if predictor.multi_label else "single",
            "decision": predictor.decision,
            "opset": OPSET,
            "recipe": RECIPE,
            "graphs": {name: sha256_file(tmp / name) for name in GRAPHS.values() if (tmp / name).exists()},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.chmod(0o755)  # mkdtemp made it private
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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
    from reuters_ray.storage import cache_root, finished_run

    metrics = ((local or finished_run(str(run_dir))) / "metrics.json").read_bytes()
    key = hashlib.sha256(f"{run_dir}\0{RECIPE}\0".encode() + metrics).hexdigest()[:16]
    return cache_root() / "exports" / key
