"""The fold loop without Ray: N plain processes at once, each training fold 0 of a config for some epochs with T
torch threads, against which the same folds under Ray (their epoch rows' train/examples_per_s) are compared.

    .venv/bin/python bench/fold_processes.py --procs 3 --threads 1     # three folds' worth on two cores
    .venv/bin/python bench/fold_processes.py --procs 1 --threads 2

Prints each process's training examples/s and their sum (the machine's), and its validation seconds. Timings are this
machine's; docs/results.md keeps them with the command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/quick-cpu.yaml", help="the run config (YAML)")
    p.add_argument("--procs", type=int, default=3, help="processes at once (default: 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads in each (default: 1)")
    p.add_argument("--epochs", type=int, default=1, help="epochs each trains (default: 1)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process: train once, print JSON
    args = p.parse_args(argv)
    if min(args.procs, args.threads, args.epochs) < 1:
        p.error("--procs, --threads and --epochs must be >= 1")
    return args


def train_once(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from reuters_ray import rows as R
    from reuters_ray.config import load_config
    from reuters_ray.fold.train import FoldData, train_fold
    from reuters_ray.run.inputs import check_input

    cfg = load_config(args.config, train={"max_epochs": args.epochs})
    prep = check_input(cfg)
    train_idx, val_idx = prep.folds[0]
    data = FoldData(prep.tokens, prep.ds.train_labels, train_idx, val_idx, prep.weights, prep.ds.label_names)
    result = train_fold(cfg, data, tempfile.mkdtemp(), log=lambda s: None)
    rows = result.history
    return {
        "examples_per_s": sum(r[R.EXAMPLES_PER_S] for r in rows) / len(rows),
        "val_s": sum(r[R.VAL_S] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(train_once(args)))
        return 0
    cmd = [sys.executable, __file__, "--one", "--config", args.config, "--threads", str(args.threads)]
    cmd += ["--epochs", str(args.epochs)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(args.procs)
    ]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    each = ", ".join(f"{r['examples_per_s']:.1f}" for r in results)
    val = ", ".join(f"{r['val_s']:.1f}" for r in results)
    total = sum(r["examples_per_s"] for r in results)
    wall = time.perf_counter() - started
    print(f"{args.procs} process(es) x {args.threads} thread(s): examples/s {each} (the machine: {total:.1f}); "
          f"validation {val} s; {wall:.1f} s in all")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
