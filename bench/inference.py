"""Ensemble inference (length-sorted batches, inference_mode, large batches) against a plain padded-300 loop.

    .venv/bin/python bench/inference.py [--docs 400] [--folds 3]

Three small-bert-random fold models (different random weights), real Reuters-18 test wires. The plain loop is
what the seed did: batches of 32 in data order, every wire padded to 300, torch.no_grad. Both average the
fold models' logits; the script checks they agree and prints docs/s and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from common import machine, reuters18_tokens, sync

from reuters_ray.ensemble import Ensemble
from reuters_ray.models import build_model


@torch.no_grad()
def plain_loop(models, tokens, batch=32) -> np.ndarray:
    out = []
    for start in range(0, len(tokens), batch):
        ids = torch.from_numpy(tokens.ids[start : start + batch].astype(np.int64))
        mask = torch.arange(ids.shape[1])[None] < torch.from_numpy(tokens.lengths[start : start + batch])[:, None]
        out.append(np.mean([m(input_ids=ids, attention_mask=mask).logits.numpy() for m in models], axis=0))
    return np.concatenate(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=400)
    p.add_argument("--folds", type=int, default=3)
    a = p.parse_args()
    tokens, _, names = reuters18_tokens(a.docs, split="test")
    dirs = []
    for k in range(a.folds):
        torch.manual_seed(k)
        d = tempfile.mkdtemp()
        build_model("small-bert-random", names).save_pretrained(d)
        dirs.append(d)
    ens = Ensemble(dirs, device="cpu")
    models = [m.eval() for m in ens.models]
    print(
        f"machine: {machine()}; {a.folds} x small-bert-random, {len(tokens)} Reuters-18 test wires (mean {tokens.lengths.mean():.0f} tokens)"
    )
    plain_loop(models, type(tokens)(tokens.ids[:32], tokens.lengths[:32], tokens.pad_id))  # warm-up
    sync()
    t = time.perf_counter()
    ref = plain_loop(models, tokens)
    plain_s = time.perf_counter() - t
    t = time.perf_counter()
    mean, pred = Ensemble.combine(ens.fold_logits(tokens))
    ens_s = time.perf_counter() - t
    diff = np.abs(mean - ref).max()
    agree = (pred == ref.argmax(1)).mean()
    print(f"  plain padded-300 loop: {len(tokens) / plain_s:7.1f} docs/s ({plain_s:.1f} s)")
    print(f"  reuters-ray ensemble:  {len(tokens) / ens_s:7.1f} docs/s ({ens_s:.1f} s)")
    print(f"  same predictions: max |logit difference| {diff:.2e}, argmax agreement {agree:.4f}")
    print(f"ensemble / plain inference throughput: {plain_s / ens_s:.2f}x")


if __name__ == "__main__":
    main()
