"""Share of real (non-pad) tokens and class mixing of training batches: random against length-grouped.

    .venv/bin/python bench/padding.py [--batch 32]

All preprocessed Reuters-18 training wires (title+body), the uncased BERT tokenizer, max_length 300. Cost is the
token slots computed relative to padding every wire to 300; class mixing is the mean share of a batch's
largest class (lower = more mixed).
"""

from __future__ import annotations

import argparse

import numpy as np
from common import reuters18_tokens

from reuters_ray.train import length_grouped_batches, micro_batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    a = p.parse_args()
    tokens, labels, _ = reuters18_tokens(10**9)
    lengths, idx = tokens.lengths, np.arange(len(tokens))

    def row(name, batches):
        slots = sum(len(b) * min(300, -(-int(lengths[b].max()) // 8) * 8) for b in batches)
        mix = np.mean([np.bincount(labels[b]).max() / len(b) for b in batches])
        print(
            f"{name:>28}: real tokens {lengths.sum() / slots:6.1%}, cost vs pad-to-300 {slots / (len(idx) * 300):6.1%}, "
            f"largest class share per batch {mix:.3f}"
        )

    print(f"{len(idx)} wires, mean {lengths.mean():.0f} tokens, batch {a.batch}")
    slots300 = len(idx) * 300
    print(f"{'random, padded to 300':>28}: real tokens {lengths.sum() / slots300:6.1%}, cost vs pad-to-300 100.0%")
    row("random, padded to longest", micro_batches(idx, a.batch, 0))
    for pool in (8, 50):
        row(f"length-grouped, pool {pool}", length_grouped_batches(idx, lengths, a.batch, 0, pool))


if __name__ == "__main__":
    main()
