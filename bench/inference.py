"""Ensemble inference (length-sorted batches, inference_mode, large batches) against a plain padded-300 loop;
with --run, a finished run's fold models by torch against their ONNX export, fp32 and INT8.

    .venv/bin/python bench/inference.py [--docs 400] [--folds 3]
    .venv/bin/python bench/inference.py --run runs/quick [--repeat 3]
    .venv/bin/python bench/inference.py --run runs/quick --student runs/quick-student [--student ...] [--repeat 3]

Without --run: three small-bert-random fold models (different random weights), real Reuters-18 test wires. The
plain loop is what the seed did: batches of 32 in data order, every wire padded to 300, torch.no_grad. Both
average the fold models' logits; the script checks they agree and prints docs/s and the ratio.

With --run: the run's own test texts (its config.yaml), tokenized once; the averaged fold logits by torch
(Ensemble), by the ONNX graph and by its INT8 twin (exported into a temporary folder), each timed over --repeat
passes after a warm-up; docs/s, max |logit difference| and label agreement against torch, and the ratios.

With --student (student runs of the --run teacher: `reuters-ray distill`): whole predictors answering raw texts
(predict_proba: cleaning, tokenization, the models, a blended teacher's linear model), the teacher and each student by
torch, ONNX and ONNX INT8, on the teacher's test texts, every one timed in this one process; docs/s, each one's ratio
to the teacher's torch docs/s, and its test accuracy and label agreement with the teacher (torch).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from common import machine, reuters18_tokens, sync

from reuters_ray.fold.inference import TorchFolds
from reuters_ray.fold.models import build_model
from reuters_ray.predictor.ensemble import Ensemble


@torch.no_grad()
def plain_loop(models, tokens, batch=32) -> np.ndarray:
    out = []
    for start in range(0, len(tokens), batch):
        ids = torch.from_numpy(tokens.ids[start : start + batch].astype(np.int64))
        mask = torch.arange(ids.shape[1])[None] < torch.from_numpy(tokens.lengths[start : start + batch])[:, None]
        out.append(np.mean([m(input_ids=ids, attention_mask=mask).logits.numpy() for m in models], axis=0))
    return np.concatenate(out)


def timed(fn, repeat: int) -> tuple[np.ndarray, float]:
    """(fn's result, its best wall time over `repeat` runs) after one warm-up run."""
    out, best = fn(), float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def run_backends(run: str, repeat: int) -> None:
    import yaml

    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.data.features import tokenize
    from reuters_ray.data.preprocess import prepare

    cfg = from_dict(RunConfig, yaml.safe_load(open(f"{run}/config.yaml")))
    texts = prepare(cfg.data).test_texts
    ens = Ensemble.from_run(run, device="cpu")
    tokens = tokenize(texts, ens.tokenizer, ens.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ens.export(f"{tmp}/export", int8=True)
        export_s = time.perf_counter() - t
        print(
            f"machine: {machine()}; run {run}: {len(ens.models)} fold models of {cfg.model.name}, {len(texts)} test "
            f"texts (mean {tokens.lengths.mean():.0f} tokens, max_length {ens.max_length}); export + INT8 {export_s:.0f} s"
        )
        ref, torch_s = timed(lambda: ens.mean_logits(tokens), repeat)
        print(f"  torch (batch {ens.batch_size}):      {len(texts) / torch_s:7.1f} docs/s")
        rates = {}
        for backend in ("onnx", "onnx-int8"):
            onnx_ens = Ensemble.from_export(f"{tmp}/export", backend)
            out, s = timed(lambda e=onnx_ens: e.mean_logits(tokens), repeat)
            rates[backend] = torch_s / s
            print(
                f"  {backend:9} (batch {onnx_ens.batch_size}):  {len(texts) / s:7.1f} docs/s; max |logit difference| "
                f"{np.abs(out - ref).max():.2e}, label agreement {(out.argmax(1) == ref.argmax(1)).mean():.4f}"
            )
    print(f"onnx / torch docs/s: {rates['onnx']:.2f}x; onnx-int8 / torch docs/s: {rates['onnx-int8']:.2f}x")


def run_students(run: str, students: list[str], repeat: int) -> None:
    import json

    import yaml

    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.data.preprocess import prepare

    cfg = from_dict(RunConfig, yaml.safe_load(open(f"{run}/config.yaml")))
    ds = prepare(cfg.data)
    texts, y = ds.test_texts, ds.test_labels
    print(f"machine: {machine()}; teacher {run} ({cfg.model.name}), {len(texts)} test texts, best of {repeat} passes")
    base, ref = None, None
    with tempfile.TemporaryDirectory() as tmp:
        for k, folder in enumerate([run, *students]):
            m = json.loads(open(f"{folder}/metrics.json").read())
            what = f"{m.get('predictor', 'ensemble')} of {len(m['folds'])} fold model(s)"
            if m.get("predictor") == "student":
                c = yaml.safe_load(open(f"{folder}/config.yaml"))["model"]
                what = f"student {c['name']}" + ("" if c.get("layers") is None else f", {c['layers']} layers")
            torch_ens = Ensemble.from_run(folder, device="cpu")
            params = sum(p.numel() for model in torch_ens.models for p in model.parameters()) / 1e6
            torch_ens.export(f"{tmp}/{k}", int8=True)
            print(f"{folder}: {what}, {params:.1f} M parameters")
            for backend in ("torch", "onnx", "onnx-int8"):
                ens = torch_ens if backend == "torch" else Ensemble.from_export(f"{tmp}/{k}", backend)
                probs, s = timed(lambda e=ens: e.predict_proba(texts), repeat)
                pred = probs.argmax(1)
                if base is None:
                    base, ref = s, pred
                print(
                    f"  {backend:9}: {len(texts) / s:7.1f} docs/s ({base / s:5.2f}x the teacher's torch); accuracy "
                    f"{(pred == y).mean():.4f}, label agreement with the teacher {(pred == ref).mean():.4f}"
                )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=400)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--run", help="a finished run folder: torch against its ONNX export (fp32, INT8)")
    p.add_argument("--repeat", type=int, default=3, help="with --run: timed passes per backend (best is kept)")
    p.add_argument("--student", action="append", default=[], help="with --run: a student run of it (repeatable)")
    a = p.parse_args()
    if a.run and a.student:
        return run_students(a.run, a.student, a.repeat)
    if a.run:
        return run_backends(a.run, a.repeat)
    tokens, _, names = reuters18_tokens(a.docs, split="test")
    dirs = []
    for k in range(a.folds):
        torch.manual_seed(k)
        d = tempfile.mkdtemp()
        build_model("small-bert-random", names).save_pretrained(d)
        dirs.append(d)
    folds = TorchFolds(dirs, device="cpu")
    models = [m.eval() for m in folds.models]
    print(
        f"machine: {machine()}; {a.folds} x small-bert-random, {len(tokens)} Reuters-18 test wires (mean {tokens.lengths.mean():.0f} tokens)"
    )
    plain_loop(models, type(tokens)(tokens.ids[:32], tokens.lengths[:32], tokens.pad_id))  # warm-up
    sync()
    t = time.perf_counter()
    ref = plain_loop(models, tokens)
    plain_s = time.perf_counter() - t
    t = time.perf_counter()
    mean = folds.mean_logits(tokens)
    pred = mean.argmax(axis=1)
    ens_s = time.perf_counter() - t
    diff = np.abs(mean - ref).max()
    agree = (pred == ref.argmax(1)).mean()
    print(f"  plain padded-300 loop: {len(tokens) / plain_s:7.1f} docs/s ({plain_s:.1f} s)")
    print(f"  reuters-ray ensemble:  {len(tokens) / ens_s:7.1f} docs/s ({ens_s:.1f} s)")
    print(f"  same predictions: max |logit difference| {diff:.2e}, argmax agreement {agree:.4f}")
    print(f"ensemble / plain inference throughput: {plain_s / ens_s:.2f}x")


if __name__ == "__main__":
    main()
