"""Training throughput of the `seed` profile against the `default` profile, in one process.

    .venv/bin/python bench/train_throughput.py [--model small-bert-random] [--steps 10] [--epochs 2] [--json F]

Same model architecture and initial weights, the same sample of real Reuters-18 wires, the same number of
optimizer steps of 32 examples (seed: 8 x 4 accumulation, padded to 300, gradient checkpointing; default:
32 x 1, length-grouped, padded to the batch's longest). Prints examples/s, real (non-pad) tokens/s, the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, reuters18_tokens, sync

from reuters_ray import rows as R
from reuters_ray.config import ModelConfig, RunConfig, TrainConfig
from reuters_ray.data.features import class_weights
from reuters_ray.fold.train import FoldData, train_fold


def run(profile: str, model: str, data: FoldData, epochs: int) -> tuple[float, float, float]:
    cfg = RunConfig(model=ModelConfig(name=model), train=TrainConfig(profile=profile, max_epochs=epochs))
    sync()
    res = train_fold(cfg, data, tempfile.mkdtemp(), log=lambda s: None)
    rows = res.history
    # the training part of each epoch only (validation and checkpoint time excluded): examples/s as measured in the loop
    ex = np.mean([r[R.EXAMPLES_PER_S] for r in rows[1:]] if len(rows) > 1 else [rows[0][R.EXAMPLES_PER_S]])
    tok = np.mean([r[R.TOKENS_PER_S] for r in rows[1:]] if len(rows) > 1 else [rows[0][R.TOKENS_PER_S]])
    return ex, tok, rows[-1][R.VAL_F1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small-bert-random")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps of 32 examples per epoch")
    p.add_argument("--epochs", type=int, default=2, help="the first epoch is the warm-up and is not counted")
    p.add_argument(
        "--tokenizer", default="small-bert-random", help="an alias or a local tokenizer folder (same vocabulary)"
    )
    p.add_argument("--json", help="also write the figures to this JSON file")
    a = p.parse_args()
    n = 32 * a.steps
    tokens, labels, names = reuters18_tokens(n + 64, tokenizer=a.tokenizer)
    data = FoldData(tokens, labels, np.arange(n), np.arange(n, n + 64), class_weights(labels, len(names)), names)
    real = tokens.lengths[:n].mean()
    print(
        f"machine: {machine()}; {a.model}; {n} training wires (mean {real:.0f} tokens), {a.steps} steps of 32 per epoch"
    )
    results = {}
    for profile in ("seed", "default"):
        t = time.perf_counter()
        results[profile] = run(profile, a.model, data, a.epochs)
        ex, tok, _ = results[profile]
        print(f"{profile:>8}: {ex:8.2f} examples/s  {tok:10.0f} real tokens/s   ({time.perf_counter() - t:.0f} s)")
    ratio = results["default"][0] / results["seed"][0]
    print(f"default / seed training throughput: {ratio:.2f}x")
    if a.json:
        figures = {p: {"examples_per_s": r[0], "tokens_per_s": r[1]} for p, r in results.items()}
        Path(a.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "model": a.model,
                    "steps": a.steps,
                    "epochs": a.epochs,
                    **figures,
                    "default_over_seed": ratio,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
