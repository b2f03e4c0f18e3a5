"""What a fold's second data-parallel worker costs or gains: one fold trained by one worker and by two (cv.workers_per_fold
2), with the same effective batch, as local processes joined by gloo, the way Ray Train's workers of a fold are
(reuters_ray.fold.parallel.run_local; Ray itself adds only its start-up, measured in docs/results.md).

    .venv/bin/python bench/workers.py [--model minilm-offline] [--n 600] [--max-length 128] [--epochs 3]
                                      [--batch 32] [--device cpu]

Three runs of the same fold (n Reuters-18 wires split 2:1 into train/validation):
  A  one worker with T torch threads (T = cores / 2)
  B  two workers with T threads each (every core busy)
  C  one worker with 2T threads (the same cores as B)
Prints each run's steady epoch (median over the epochs after the first: training and validation seconds, examples/s
over all workers) and the ratios B/A and B/C. With --device cuda both workers share the one GPU (gloo all-reduces
CUDA tensors; NCCL refuses two ranks on one device): the cost of splitting a card, not what two cards would give.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from common import machine, np, reuters18_tokens
from sklearn.model_selection import train_test_split

from reuters_ray import rows as R
from reuters_ray.config import CVConfig, ModelConfig, RunConfig, TrainConfig
from reuters_ray.data.features import class_weights
from reuters_ray.fold.parallel import run_local
from reuters_ray.fold.train import FoldData, train_fold


def fold(cfg: RunConfig, data: FoldData, out: str, device: str, share: float) -> list[dict]:
    """One worker's part of the fold (run_local's function): its epoch rows."""
    return train_fold(cfg, data, Path(out), device=device, gpu_share=share, log=lambda _: None).history


def steady(rows: list[dict]) -> dict[str, float]:
    later = rows[1:] or rows  # the first epoch pays one-off costs (allocator, kernels' first shapes)
    return {k: statistics.median(r[k] for r in later) for k in (R.TRAIN_S, R.VAL_S, R.EXAMPLES_PER_S)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm-offline")
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=32, help="examples per optimizer step (batch_size; grad_accum 1)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    tokenizer = "minilm-offline" if a.model == "minilm-offline" else "small-bert-random"
    tokens, labels, names = reuters18_tokens(a.n, max_length=a.max_length, tokenizer=tokenizer)
    tr, va = train_test_split(np.arange(a.n), test_size=1 / 3, stratify=labels, random_state=0)
    data = FoldData(tokens, labels, tr, va, class_weights(labels[tr], len(names)), names)
    train = TrainConfig(batch_size=a.batch, grad_accum=1, max_epochs=a.epochs, patience=a.epochs)
    cfg = RunConfig(model=ModelConfig(name=a.model), train=train, cv=CVConfig(workers_per_fold=2))
    threads = max(1, (os.cpu_count() or 2) // 2)
    print(f"machine: {machine()}; {a.model}, {len(tr)} train / {len(va)} validation wires, {a.max_length} tokens, "
          f"batch {a.batch}, {a.epochs} epochs, device {a.device}")  # fmt: skip
    runs = {}
    for name, workers, t in (("A", 1, threads), ("B", 2, threads), ("C", 1, 2 * threads)):
        with tempfile.TemporaryDirectory() as out:
            rows = run_local(fold, workers, cfg, data, out, a.device, 1.0 / workers, threads=t)[0]
        runs[name] = s = steady(rows)
        print(f"{name}: {workers} worker(s) x {t} thread(s): training {s[R.TRAIN_S]:.2f} s/epoch "
              f"({s[R.EXAMPLES_PER_S]:.1f} examples/s), validation {s[R.VAL_S]:.2f} s")  # fmt: skip
    for other in ("A", "C"):
        ratio = runs["B"][R.TRAIN_S] / runs[other][R.TRAIN_S]
        print(f"training time, two workers / {other}: {ratio:.2f}x")
    print(f"validation time, two workers / C: {runs['B'][R.VAL_S] / runs['C'][R.VAL_S]:.2f}x")


if __name__ == "__main__":
    main()
