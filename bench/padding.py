"""Share of real (non-pad) tokens and class mixing of training batches: random against length-grouped.

    .venv/bin/python bench/padding.py [--batch 32] [--multiple 8 32 64]

All preprocessed Reuters-18 training wires (title+body), the uncased BERT tokenizer, max_length 300. Cost is the
token slots computed relative to padding every wire to 300; class mixing is the mean share of a batch's
largest class (lower = more mixed). --multiple: widths rounded up to these multiples (the default profile's
train.pad_multiple); each distinct width is a new shape for the GPU's kernels (a one-off cost on first use).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import reuters18_tokens

from reuters_ray.fold.optim import length_grouped_batches, micro_batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--multiple", type=int, nargs="+", default=[8])
    a = p.parse_args()
    tokens, labels, _ = reuters18_tokens(10**9)
    lengths, idx = tokens.lengths, np.arange(len(tokens))

    def row(name, batches, multiple=8):
        widths = [min(300, -(-int(lengths[b].max()) // multiple) * multiple) for b in batches]
        slots = sum(len(b) * w for b, w in zip(batches, widths))
        mix = np.mean([np.bincount(labels[b]).max() / len(b) for b in batches])
        print(
            f"{name:>28}: real tokens {lengths.sum() / slots:6.1%}, cost vs pad-to-300 {slots / (len(idx) * 300):6.1%}, "
            f"largest class share per batch {mix:.3f}, {len(set(widths))} widths"
        )

    print(f"{len(idx)} wires, mean {lengths.mean():.0f} tokens, batch {a.batch}")
    slots300 = len(idx) * 300
    print(f"{'random, padded to 300':>28}: real tokens {lengths.sum() / slots300:6.1%}, cost vs pad-to-300 100.0%")
    row("random, padded to longest", micro_batches(idx, a.batch, 0))
    for pool in (8, 50):
        for m in a.multiple:
            row(f"length-grouped, pool {pool}, x{m}", length_grouped_batches(idx, lengths, a.batch, 0, pool), m)


if __name__ == "__main__":
    main()
