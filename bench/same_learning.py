"""Does the fast `default` profile learn what the `seed` profile learns? Both on the same short schedule.

    .venv/bin/python bench/same_learning.py [--seeds 3] [--epochs 10]

tiny-bert-random (CPU-sized), the 6 Reuters topics with >= 300 training wires, 600 wires split 400/200,
batch 8 x 2 accumulation (the default profile runs it as 16 x 1), lr 3e-3, max_length 128, seeds 0..n-1.
Prints each seed's best validation weighted F1 per profile, the means, and the spread between seeds.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from common import machine, reuters_path
from sklearn.model_selection import train_test_split

from reuters_ray.config import ModelConfig, RunConfig, TrainConfig
from reuters_ray.data.features import class_weights, tokenize
from reuters_ray.data.preprocess import preprocess
from reuters_ray.data.reuters21578 import load_reuters21578
from reuters_ray.fold.models import load_tokenizer
from reuters_ray.fold.train import FoldData, train_fold


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args()
    path = reuters_path()
    ds = preprocess(load_reuters21578(path), min_samples=300)
    rows, _ = train_test_split(np.arange(len(ds.train_texts)), train_size=600, stratify=ds.train_labels, random_state=0)
    labels = ds.train_labels[rows]
    tokens = tokenize([ds.train_texts[i] for i in rows], load_tokenizer("tiny-bert-random"), 128)
    tr, va = train_test_split(np.arange(600), test_size=1 / 3, stratify=labels, random_state=0)
    data = FoldData(tokens, labels, tr, va, class_weights(labels[tr], ds.num_classes), ds.label_names)
    print(f"machine: {machine()}")
    scores = {"seed": [], "default": []}
    for s in range(a.seeds):
        for profile in scores:
            cfg = RunConfig(
                model=ModelConfig(name="tiny-bert-random", hidden_dropout=0.1),
                train=TrainConfig(
                    profile=profile, lr=3e-3, batch_size=8, grad_accum=2, max_epochs=a.epochs, patience=a.epochs, seed=s
                ),
            )
            res = train_fold(cfg, data, tempfile.mkdtemp(), log=lambda m: None)
            scores[profile].append(res.best_score)
            print(f"seed {s} {profile:>8}: best val weighted F1 {res.best_score:.4f} (epoch {res.best_epoch})")
    for profile, v in scores.items():
        print(f"{profile:>8}: mean {np.mean(v):.4f}, std between seeds {np.std(v, ddof=1) if len(v) > 1 else 0:.4f}")
    print(f"default - seed: {np.mean(scores['default']) - np.mean(scores['seed']):+.4f}")


if __name__ == "__main__":
    main()
