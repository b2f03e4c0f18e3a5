"""A fold's training step on CPU, four ways in one run: fp32 or bf16 autocast, torch's foreach or fused AdamW; what
reuters_ray.fold.plan chooses on CPU (bf16 where the CPU has AMX, the fused AdamW) against what it chose before
(fp32, foreach AdamW) and what Hugging Face's Trainer does by default on CPU (fp32, fused AdamW).

    .venv/bin/python bench/cpu_step.py                  # the quick config's shape: MiniLM, 16 x 32 tokens
    .venv/bin/python bench/cpu_step.py --threads 1 --steps 30

One process, the model of configs/quick-cpu.yaml (the offline MiniLM, 18 classes), random token ids of the config's
max_length, a forward, the loss, a backward, gradient clipping and the optimizer step, after warm-up steps. Prints
examples/s of each way and each one's ratio to fp32 + foreach. Timings are this machine's; docs/results.md keeps them
with the command.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from reuters_ray.config import load_config
from reuters_ray.fold.models import build_model
from reuters_ray.fold.plan import cpu_has_amx_bf16

WAYS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/quick-cpu.yaml", help="the run config whose shape is timed (YAML)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each way (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    args = p.parse_args(argv)
    if min(args.threads, args.steps) < 1 or args.warmup < 0:
        p.error("--threads and --steps must be >= 1, --warmup >= 0")
    return args


def examples_per_s(cfg, precision: str, fused: bool, steps: int, warmup: int) -> float:
    """Training examples per second of `steps` steps of a fresh model (seeded), batch train.batch_size."""
    torch.manual_seed(0)
    model = build_model(cfg.model.name, [str(k) for k in range(18)], cfg.model.hidden_dropout).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, fused=fused or None)
    batch, width = cfg.train.batch_size, cfg.data.max_length
    ids = torch.randint(1000, 30000, (batch, width), generator=torch.Generator().manual_seed(0))
    mask, labels = torch.ones(batch, width, dtype=torch.bool), torch.arange(batch) % 18
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step() -> None:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = model(input_ids=ids, attention_mask=mask).logits
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()  # each way loads the model: its load report once is enough (none)
    transformers.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    print(f"bench/cpu_step.py: {cfg.model.name}, {cfg.train.batch_size} x {cfg.data.max_length} tokens, "
          f"{args.threads} thread(s), AMX bf16: {cpu_has_amx_bf16()}")  # fmt: skip
    base = None
    for precision, fused in WAYS:
        rate = examples_per_s(cfg, precision, fused, args.steps, args.warmup)
        base = base or rate
        adamw = "fused" if fused else "foreach"
        print(f"  {precision} + {adamw:7} AdamW: {rate:6.1f} examples/s ({rate / base:.2f}x fp32 + foreach)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
