"""What a new batch shape costs the first time a GPU sees it, and which attention kernels run (issue 12).

    python3 bench/shape_warmup.py --json out.json          # on a GPU: small-bert-random, batch 32, bf16
    .venv/bin/python bench/shape_warmup.py --model tiny-bert-random   # a CPU dry run

On the H100 a fold's first epoch took 17-19 s more than later ones, about 0.4 s per new padded width. This times,
in one process, the first and the second training step (forward, focal loss, backward, clipping, fused AdamW)
at widths not seen before, in two settings that each get their own fresh widths: PyTorch's default attention
backends, then with the cuDNN attention backend turned off (it builds a plan per new shape). Also: the first and
second validation pass (batch 256, inference mode) at new widths, one steady step, and the attention kernels the
profiler sees. Prints one line per figure and the ratio of the per-width costs (default / cuDNN off).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from reuters_ray.fold.loss import focal_loss
from reuters_ray.fold.models import build_model


def batch(n: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids with real padding (half the rows shorter), so attention gets a mask as in training."""
    g = torch.Generator().manual_seed(width)
    ids = torch.randint(1000, 30000, (n, width), generator=g)
    lengths = torch.where(torch.arange(n) % 2 == 0, width, max(1, width - 7))
    mask = torch.arange(width)[None, :] < lengths[:, None]
    return ids.to(device), mask.to(device), torch.randint(0, 18, (n,), generator=g).to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small-bert-random")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else None
    labels = [f"c{i}" for i in range(18)]
    model = build_model(a.model, labels, 0.1, 0.1).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, fused=device.type == "cuda" or None)
    alpha = torch.ones(18, device=device)

    def timed(fn) -> float:
        """Seconds of fn(), the device's queued work included."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def step(width: int) -> float:  # one training step: forward, focal loss, backward, clipping, AdamW
        ids, mask, y = batch(32, width, device)

        def run() -> None:
            model.train()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(input_ids=ids, attention_mask=mask).logits
            (focal_loss(logits, y, alpha, 0.5, 0.05, reduction="sum") / 32).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        return timed(run)

    @torch.inference_mode()
    def evaluate(width: int) -> float:  # one validation batch of 256
        ids, mask, _ = batch(256, width, device)

        def run() -> None:
            model.eval()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                model(input_ids=ids, attention_mask=mask).logits.float().cpu()

        return timed(run)

    fig: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
    }
    t = time.perf_counter()
    step(64)  # CUDA context, first kernels: not a per-shape cost
    fig["very_first_step_s"] = time.perf_counter() - t
    step(64)
    fig["steady_step_s_at_64"] = min(step(64) for _ in range(5))

    def new_widths(name: str, widths: list[int], fn) -> None:
        firsts, seconds = [], []
        for w in widths:
            firsts.append(fn(w))
            seconds.append(fn(w))
        extra = [f - s for f, s in zip(firsts, seconds)]
        fig[name] = {
            "widths": widths,
            "first_s": firsts,
            "second_s": seconds,
            "extra_per_width_s": float(np.mean(extra)),
        }
        print(f"{name}: first-use extra per new width {np.mean(extra) * 1e3:.1f} ms (widths {widths})", flush=True)

    new_widths("train_default", [72, 80, 88, 96, 104, 112], step)
    new_widths("eval_default", [120, 136, 152, 168], evaluate)
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)
        new_widths("train_cudnn_sdp_off", [184, 192, 200, 208, 216, 224], step)
        new_widths("eval_cudnn_sdp_off", [232, 248, 264, 280], evaluate)
        torch.backends.cuda.enable_cudnn_sdp(True)
        d, o = fig["train_default"]["extra_per_width_s"], fig["train_cudnn_sdp_off"]["extra_per_width_s"]
        fig["train_default_over_cudnn_off"] = d / o if o > 0 else None
        print(f"per-width first-use cost, default / cuDNN attention off: {fig['train_default_over_cudnn_off']}")
        # which attention kernels run at a seen width, by the profiler's CUDA time
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step(72)
        names = [(e.key, e.device_time_total) for e in prof.key_averages()]
        attn = [n for n in names if any(k in n[0].lower() for k in ("attention", "fmha", "flash", "cudnn", "sdpa"))]
        fig["attention_kernels"] = sorted(attn, key=lambda n: -n[1])[:8]
        fig["top_kernels"] = sorted(names, key=lambda n: -n[1])[:8]
        print("attention kernels:", fig["attention_kernels"], flush=True)
    print(json.dumps({k: v for k, v in fig.items() if not isinstance(v, dict)}, default=str), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(fig, f, indent=1, default=str)


if __name__ == "__main__":
    main()
