"""Peak memory of one training step with gradient checkpointing on and off (CPU, Small BERT architecture).

    .venv/bin/python bench/grad_ckpt_memory.py [--batch 8] [--length 300] [--steps 2]

Each variant runs in its own process: peak resident memory (ru_maxrss) minus the memory held before the first
step (model, optimizer not yet stepped, one batch of real Reuters wires padded to --length, as the seed did).
Prints both figures and their ratio. A benchmark, not a test: figures go to docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(checkpointing: bool, batch: int, length: int, steps: int) -> dict:
    import torch

    from reuters_ray.data.features import tokenize
    from reuters_ray.data.preprocess import preprocess
    from reuters_ray.data.reuters21578 import load_reuters21578
    from reuters_ray.fold.loss import focal_loss
    from reuters_ray.fold.models import build_model, load_tokenizer
    from reuters_ray.fold.train import collate

    torch.manual_seed(0)
    from common import reuters_path

    path = reuters_path()
    ds = preprocess(load_reuters21578(path))
    tokens = tokenize(ds.train_texts[:batch], load_tokenizer("small-bert-random"), length)
    model = build_model("small-bert-random", ds.label_names, gradient_checkpointing=checkpointing)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
    b = collate(tokens, ds.train_labels[:batch], torch.arange(batch).numpy(), "max_length", torch.device("cpu"))
    base = rss_mib()
    for _ in range(steps):
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        focal_loss(logits, b["labels"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "checkpointing": checkpointing,
        "before_mib": round(base, 1),
        "peak_mib": round(peak, 1),
        "step_peak_mib": round(peak - base, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child == "on", a.batch, a.length, a.steps)))
        return
    rows = {}
    for variant in ("off", "on"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--batch",
            str(a.batch),
            "--length",
            str(a.length),
            "--steps",
            str(a.steps),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows[variant] = json.loads(out)
        print(f"gradient checkpointing {variant:>3}: {rows[variant]}")
    ratio = rows["off"]["step_peak_mib"] / rows["on"]["step_peak_mib"]
    print(f"small-bert-random, batch {a.batch} x length {a.length}, CPU: training-step memory off/on = {ratio:.2f}x")


if __name__ == "__main__":
    main()
