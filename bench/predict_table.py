"""`reuters-ray predict --table` two ways on the same tables: --engine local (one process) against --engine ray-data
(Ray Data's map_batches over a pool of predictor actors), each a whole command from start to its written output.

    .venv/bin/python bench/predict_table.py --run runs/tiny --rows 2000 20000 200000

Each table repeats the run's own test texts (its predictions.parquet ids, texts from its data) up to --rows rows,
with an id column, written once as Parquet under --work. Prints, per size and engine: wall seconds, docs/s, the
driver's peak resident memory (the command's own process, from wait4: a Ray Data run's actors live in Ray's worker
processes, not in it), and the ratio ray-data / local of docs/s. Timings are this machine's: docs/results.md keeps
them with the command. With RAY_ADDRESS set, the ray-data engine joins that cluster; else each command starts a
local Ray (its start-up counted, as a user's first command pays it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a finished run folder (its test texts are the table's rows)")
    p.add_argument("--rows", type=int, nargs="+", default=[2000, 20000], help="table sizes (rows)")
    p.add_argument("--engines", nargs="+", default=["local", "ray-data"], choices=["local", "ray-data"])
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"])
    p.add_argument("--work", default="/tmp/reuters-ray-bench-tables", help="where the tables and outputs go")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.rows):
        p.error(f"--rows must be >= 1, got {args.rows}")
    if not (Path(args.run) / "metrics.json").is_file():
        p.error(f"--run {args.run}: not a finished run folder (no metrics.json)")
    return args


def make_table(run: Path, rows: int, work: Path) -> Path:
    """A Parquet table of `rows` rows: the run's test texts repeated, ids 0..rows-1 (made once per size)."""
    import pandas as pd
    import yaml

    from reuters_ray import load_config
    from reuters_ray.data.preprocess import prepare

    path = work / f"table-{rows}.parquet"
    if not path.is_file():
        cfg = load_config(None, **yaml.safe_load((run / "config.yaml").read_text()))
        texts = prepare(cfg.data).test_texts
        frame = pd.DataFrame({"id": range(rows), "text": [texts[i % len(texts)] for i in range(rows)]})
        frame.to_parquet(path, index=False)
    return path


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, the process's own peak RSS in MiB) of one command; raises on a non-zero exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"run {args.run}, backend {args.backend}; engines {', '.join(args.engines)}")
    for rows in args.rows:
        table = make_table(Path(args.run), rows, work)
        speed = {}
        for engine in args.engines:
            out = work / (f"out-{rows}-{engine}" + ("" if engine == "ray-data" else ".parquet"))
            shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
            cmd = [str(BIN / "reuters-ray"), "predict", "--run", args.run, "--table", str(table), "--text-column",
                   "text", "--out", str(out), "--engine", engine, "--backend", args.backend, "--top-k", "3"]  # fmt: skip
            wall, peak = timed(cmd)
            speed[engine] = rows / wall
            print(f"{rows:>8} rows  {engine:<9} {wall:8.1f} s  {rows / wall:9.1f} docs/s  driver peak {peak:7.0f} MiB")
        if len(speed) == 2:
            print(f"{rows:>8} rows  ray-data / local docs/s: {speed['ray-data'] / speed['local']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
