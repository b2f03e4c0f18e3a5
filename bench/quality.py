"""What the full recipe scores, without Ray: the very code the Ray workers run (issue 13).

    python3 bench/quality.py --out $OUT --model .device/minilm --data .device/data/reuters21578.tar.gz   # GPU
    .venv/bin/python bench/quality.py --out /tmp/quality --dry                                            # CPU

For each step: the preprocessed Reuters-18 split, tokenized once; `train_fold` on each of the 3 stratified folds
(one process each, sharing the GPU as the Ray job's folds do); the `Ensemble` of the three best models on the test
split; the TF-IDF + LinearSVC baseline on the same split; and the run's predictor, the blend, exactly as the runner
makes it (reuters_ray.run: the linear model fitted per fold and on everything while the folds train, the weight
chosen on the folds' out-of-fold logits, blend_phase). Steps 1 and 2 run at the same time (six fold
processes), then step 3:
  1. title+body text, the config's defaults (the recipe: lr 3e-5, warmup 15%, cosine, batch 32, up to 20 epochs,
     patience 7 on validation weighted F1, dropout 0.3, focal gamma 0.5, class weights, smoothing 0.05,
     max_length 300, default profile, bf16 on the GPU);
  2. keras text, the same;
  3. if time remains, one title+body variant that step 1's VALIDATION figures argue for (never the test split):
     a higher learning rate (1e-4) when the folds were still improving near the last epoch, else max_length 512
     for the wires longer than 300 tokens. The better of 1 and 3 is the one with the higher mean validation F1.
The run stops its last step in time (--budget). Writes quality.json (every figure), summary.txt and logs.tar.gz.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from reuters_ray import rows as R  # noqa: E402


def prepare_step(work: Path, cfg_dict: dict) -> dict:
    """Loads, preprocesses and tokenizes one step's data into work/ (tokens.npz + spec.json) for the fold workers."""
    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.data.features import class_weights, stratified_folds, tokenize
    from reuters_ray.data.preprocess import prepare
    from reuters_ray.fold.models import load_tokenizer

    cfg = from_dict(RunConfig, cfg_dict)
    ds = prepare(cfg.data)
    tokenizer = load_tokenizer(cfg.data.tokenizer or cfg.model.name)
    tokens = tokenize(ds.train_texts + ds.test_texts, tokenizer, cfg.data.max_length)
    n = len(ds.train_texts)
    folds = stratified_folds(ds.train_labels, cfg.cv.folds, cfg.train.seed)
    arrays = {
        "ids": tokens.ids,
        "lengths": tokens.lengths,
        "train_labels": ds.train_labels,
        "test_labels": ds.test_labels,
    }
    for k, (tr, va) in enumerate(folds):
        arrays[f"train_{k}"], arrays[f"val_{k}"] = tr, va
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "tokens.npz", **arrays)
    spec = {
        "config": cfg.to_dict(),
        "n_train": n,
        "pad_id": tokens.pad_id,
        "label_names": ds.label_names,
        "class_weights": class_weights(ds.train_labels, ds.num_classes).tolist(),
        "folds": cfg.cv.folds,
        "truncated_share": float((tokens.lengths[:n] >= cfg.data.max_length).mean()),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    return {"ds": ds, "tokens": tokens, "spec": spec, "folds": folds}


def fold_worker(work: Path, fold: int) -> None:
    """One fold: train_fold exactly as the Ray worker calls it; writes fold_<k>.json with its history."""
    import torch

    from reuters_ray.config import RunConfig, from_dict
    from reuters_ray.data.features import TokenArrays
    from reuters_ray.fold.train import FoldData, train_fold

    spec = json.loads((work / "spec.json").read_text())
    z = np.load(work / "tokens.npz")
    n = spec["n_train"]
    tokens = TokenArrays(z["ids"][:n], z["lengths"][:n], spec["pad_id"])
    data = FoldData(
        tokens,
        z["train_labels"],
        z[f"train_{fold}"],
        z[f"val_{fold}"],
        np.array(spec["class_weights"], dtype=np.float32),
        spec["label_names"],
    )
    cfg = from_dict(RunConfig, spec["config"])
    t = time.perf_counter()
    from reuters_ray.console import format_row

    print(format_row(), flush=True)
    res = train_fold(
        cfg,
        data,
        work / f"fold_{fold}",
        fold=fold,
        gpu_share=1.0 / spec["folds"],
        report=lambda row, _: print(format_row(row), flush=True),
        log=lambda m: print(m, flush=True),
    )
    last = sorted((work / f"fold_{fold}").glob("epoch_*"))[-1]
    best_dir = last / "best"  # every checkpoint carries the best model so far; the last one is final
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    (work / f"fold_{fold}.json").write_text(
        json.dumps(
            {
                "history": res.history,
                "best_epoch": res.best_epoch,
                "best_dir": str(best_dir),
                "wall_s": time.perf_counter() - t,
                "peak_gpu_gib": peak,
            }
        )
    )


def start_folds(work: Path, folds: int) -> list[subprocess.Popen]:
    """One worker process per fold, all at once (they share the GPU, as the Ray job's folds do)."""
    procs = []
    for k in range(folds):
        log = open(work / f"fold_{k}.log", "w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--fold-worker", str(work), str(k)]
        procs.append(
            subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1")
            )
        )
    return procs


def wait(procs: list[subprocess.Popen], deadline: float) -> None:
    """Waits until every process ends or the deadline passes; then stops the rest."""
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def run_steps(steps: list[tuple[str, dict]], work_root: Path, deadline: float) -> list[dict]:
    """Steps whose folds all run at once: data for each, every fold process started, then the ensembles and
    baselines. Figures per step."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from reuters_ray.config import PROFILES, RunConfig, from_dict
    from reuters_ray.console import Console
    from reuters_ray.data.features import TokenArrays
    from reuters_ray.fold.inference import TorchFolds
    from reuters_ray.fold.plan import resolve_precision
    from reuters_ray.run.folds import out_of_fold_logits
    from reuters_ray.scoring.evaluate import blend_phase, fit_linear
    from reuters_ray.scoring.metrics import classification_metrics, evaluate_scores, softmax
    from reuters_ray.storage import LOCAL

    started = []
    for name, cfg in steps:
        t0 = time.perf_counter()
        work = work_root / name.split(":")[0].replace("+", "_").replace(" ", "_")
        prep = prepare_step(work, cfg)
        out = {
            "step": name,
            "train": prep["spec"]["n_train"],
            "test": len(prep["ds"].test_texts),
            "truncated_share": prep["spec"]["truncated_share"],
            "max_length": cfg["data"].get("max_length", 300),
            "data_s": time.perf_counter() - t0,
        }
        procs = start_folds(work, prep["spec"]["folds"])
        # the linear model's fits while the folds train, as run_cv does (fit_linear in a driver thread)
        linear = ThreadPoolExecutor(1).submit(fit_linear, prep["ds"], prep["folds"])
        started.append((out, prep, work, procs, time.perf_counter(), linear))
    figures = []
    for out, prep, work, procs, t, linear in started:
        wait(procs, deadline)
        out["folds_s"] = time.perf_counter() - t
        ds, tokens, spec = prep["ds"], prep["tokens"], prep["spec"]
        folds = []
        for k in range(spec["folds"]):
            if not (work / f"fold_{k}.json").exists():
                log = (work / f"fold_{k}.log").read_text()[-1500:] if (work / f"fold_{k}.log").exists() else ""
                folds.append({"fold": k, "finished": False, "log_tail": log})
                continue
            r = json.loads((work / f"fold_{k}.json").read_text())
            h = r["history"]
            best = h[r["best_epoch"] - 1]
            folds.append(
                {
                    "fold": k,
                    "finished": True,
                    "best_epoch": r["best_epoch"],
                    "epochs_run": len(h),
                    "val_accuracy": best[R.VAL_ACCURACY],
                    "val_f1_weighted": best[R.VAL_F1],
                    "val_f1_macro": best[R.VAL_F1_MACRO],
                    "train_s": sum(x[R.TRAIN_S] for x in h),
                    "epoch_s": [round(x[R.EPOCH_S], 2) for x in h],
                    "wall_s": r["wall_s"],
                    "peak_gpu_gib": r["peak_gpu_gib"],
                    "val_f1_by_epoch": [round(x[R.VAL_F1], 4) for x in h],
                    "best_dir": r["best_dir"],
                }
            )
        out["folds"] = folds
        figures.append(out)
        if not all(f["finished"] for f in folds):
            out["cut"] = "deadline: not every fold finished"
            continue
        out["mean_val_f1_weighted"] = float(np.mean([f["val_f1_weighted"] for f in folds]))
        t = time.perf_counter()
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        ens = TorchFolds(
            [f["best_dir"] for f in folds],
            device=str(device),
            precision=resolve_precision("auto", PROFILES["default"], device),
        )
        n = spec["n_train"]
        fold_logits = ens.fold_logits(TokenArrays(tokens.ids[n:], tokens.lengths[n:], tokens.pad_id))
        mean = fold_logits.mean(axis=0)  # the ensemble's vote, as TorchFolds.mean_logits
        out["ensemble"] = evaluate_scores(ds.test_labels, mean, ds.label_names)
        for f, logits in zip(folds, fold_logits):
            f["test"] = classification_metrics(ds.test_labels, logits.argmax(1), len(ds.label_names))
        out["ensemble_s"] = time.perf_counter() - t
        t = time.perf_counter()
        oof_logits = out_of_fold_logits(LOCAL, [f["best_dir"] for f in folds], prep["folds"], n)
        run_cfg = from_dict(RunConfig, spec["config"])
        scored = blend_phase(run_cfg, ds, linear.result(), oof_logits, out["ensemble"], softmax(mean), Console("quiet"))
        out["baseline"] = scored.metrics.pop("baseline")
        out["blend"] = scored.metrics
        out["linear_fit_s"] = scored.linear_s
        out["blend_s"] = time.perf_counter() - t
    return figures


def choose_variant(first: dict, max_epochs: int) -> tuple[str, dict]:
    """The variant step 1's validation figures argue for: still improving at the end -> higher lr, else longer texts."""
    late = np.mean([f["best_epoch"] for f in first["folds"]]) >= max_epochs - 2
    if late:
        return "lr 1e-4 (the folds' best epochs came within 2 of the last: still learning when the schedule ended)", {
            "train": {"lr": 1e-4}
        }
    return (
        f"max_length 512 (best epochs well before the end; {first['truncated_share']:.1%} of training wires were cut at {first['max_length']} tokens)",
        {"data": {"max_length": 512}},
    )


def merge(a: dict, b: dict) -> dict:
    out = json.loads(json.dumps(a))
    for section, values in b.items():
        out.setdefault(section, {}).update(values)
    return out


def summarize(fig: dict) -> str:
    lines = [f"machine: {fig['machine']}"]
    keys = ("accuracy", "f1_weighted", "f1_macro")
    for s in fig["steps"]:
        lines.append(
            f"== {s['step']}: {s.get('train')} train / {s.get('test')} test, folds {s.get('folds_s', 0):.0f} s"
            + (f", CUT ({s['cut']})" if "cut" in s else "")
        )
        for f in s.get("folds", []):
            if f["finished"]:
                lines.append(
                    f"  fold {f['fold']}: best epoch {f['best_epoch']}/{f['epochs_run']}, val acc {f['val_accuracy']:.4f} wF1 {f['val_f1_weighted']:.4f} "
                    f"mF1 {f['val_f1_macro']:.4f}"
                    + (", test alone " + " ".join(f"{f['test'][k]:.4f}" for k in keys) if "test" in f else "")
                    + f", {f['wall_s']:.0f} s"
                )
            else:
                lines.append(f"  fold {f['fold']}: not finished")
        for who in ("blend", "ensemble", "baseline"):
            if who in s:
                lines.append(
                    f"  {who}: accuracy {s[who]['accuracy']:.4f}, weighted F1 {s[who]['f1_weighted']:.4f}, macro F1 {s[who]['f1_macro']:.4f}"
                )
        if "blend" in s:
            b, oof = s["blend"]["blend"], s["blend"]["blend"]["out_of_fold"]
            lines.append(
                f"  blend weight {b['weight']:.2f} on the ensemble, chosen out of fold (weighted F1 blend "
                f"{oof['blend']['f1_weighted']:.4f}, ensemble {oof['ensemble']['f1_weighted']:.4f}, linear "
                f"{oof['linear']['f1_weighted']:.4f}); linear model fitted in {s['linear_fit_s']:.0f} s"
            )
            pc = " ".join(
                f"{x['name']} {x['f1']:.2f}/{e['f1']:.2f}/{y['f1']:.2f}"
                for x, e, y in zip(s["blend"]["per_class"], s["ensemble"]["per_class"], s["baseline"]["per_class"])
            )
            lines.append(f"  per-class F1 blend/ensemble/baseline: {pc}")
    if "variant" in fig:
        lines.append(f"variant: {fig['variant']}; chosen by validation: {fig.get('chosen', 'n/a')}")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--fold-worker":
        return fold_worker(Path(sys.argv[2]), int(sys.argv[3]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="minilm-offline", help="model folder or alias (pretrained MiniLM)")
    p.add_argument(
        "--data", help="Reuters-21578 folder or .tar.gz (default: $REUTERS21578_PATH, ../shared/data/reuters21578)"
    )
    p.add_argument("--budget", type=float, default=340, help="seconds for everything; the last step is stopped in time")
    p.add_argument("--dry", action="store_true", help="CPU dry run: small samples, short schedule")
    a = p.parse_args()
    t_start = time.monotonic()
    end = t_start + a.budget
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = Path(a.out)
    work_root = Path("/tmp/quality-work")
    shutil.rmtree(work_root, ignore_errors=True)
    from common import reuters_path

    data = a.data or reuters_path()
    base = {"data": {"path": data}, "model": {"name": a.model}}
    if a.dry:
        base = merge(
            base,
            {
                "data": {"train_sample": 240, "test_sample": 150, "max_length": 64},
                "train": {"max_epochs": 2, "patience": 2},
            },
        )
    import torch
    import transformers

    fig: dict = {
        "machine": f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {os.cpu_count()} CPUs",
        "model": a.model,
        "steps": [],
    }
    print(fig["machine"], flush=True)

    # Both text modes at once (six fold processes on the GPU): neither waits on the other, so a slow first
    # mode cannot squeeze the second out of the budget.
    plan = [
        ("title+body", merge(base, {"data": {"text": "title+body"}})),
        ("keras", merge(base, {"data": {"text": "keras"}})),
    ]
    fig["steps"] += run_steps(plan, work_root, end - 15)
    print(summarize(fig), flush=True)
    first = fig["steps"][0]
    from reuters_ray.config import TrainConfig

    if "ensemble" in first and end - time.monotonic() > 60:
        why, change = choose_variant(first, base.get("train", {}).get("max_epochs", TrainConfig.max_epochs))
        fig["variant"] = why
        (v,) = run_steps(
            [("title+body variant: " + why.split(" (")[0], merge(plan[0][1], change))], work_root, end - 10
        )
        fig["steps"].append(v)
        if "mean_val_f1_weighted" in v:
            fig["chosen"] = (
                "variant" if v["mean_val_f1_weighted"] > first["mean_val_f1_weighted"] else "recipe defaults"
            )
    fig["wall_s"] = time.monotonic() - t_start
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(fig, indent=1, default=str))
    summary = summarize(fig)
    (out / "summary.txt").write_text(summary)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for f in sorted(work_root.rglob("fold_*.log")) + sorted(work_root.rglob("fold_*.json")):
            tar.add(f, arcname=str(f.relative_to(work_root)))
    print(summary, flush=True)


if __name__ == "__main__":
    main()
