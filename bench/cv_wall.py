"""Wall time of a whole CV run (driver, 3 folds, ensemble), folds concurrent against folds one after another.

    .venv/bin/python bench/cv_wall.py [--config configs/tiny-cpu.yaml] [--gpu]

Runs `jobs/cv.py` twice in fresh processes (each starts its own local Ray): once with every fold reserving the
whole machine (CPU) or a whole GPU (--gpu), so Ray runs them one after another, once with 1/folds each, so they
run at once. Prints both wall times (metrics.json's wall_s, Ray start-up excluded) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, machine


def run(config: str, flags: list[str]) -> tuple[float, float, dict]:
    storage = tempfile.mkdtemp()
    t = time.perf_counter()
    cmd = [sys.executable, str(REPO / "jobs" / "cv.py"), "--config", config, "--cv.storage_path", storage, *flags]
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    total = time.perf_counter() - t
    (run_dir,) = [p for p in Path(storage).iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return total, metrics["wall_s"], metrics


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "tiny-cpu.yaml"))
    p.add_argument("--gpu", action="store_true", help="share a GPU between folds instead of CPU cores")
    a = p.parse_args()
    folds = yaml.safe_load(Path(a.config).read_text()).get("cv", {}).get("folds", 3)
    cpus = os.cpu_count()
    if a.gpu:
        modes = {
            "one after another": ["--cv.gpus_per_fold", "1"],
            "concurrent": ["--cv.gpus_per_fold", f"{1 / folds:.4f}"],
        }
    else:
        usable = cpus - 0.1  # the fold trials hold a sliver each
        modes = {
            "one after another": ["--cv.cpus_per_fold", f"{usable:.2f}"],
            "concurrent": ["--cv.cpus_per_fold", f"{usable / folds:.4f}"],
        }
    print(f"machine: {machine()}; config {a.config}")
    walls = {}
    for mode, flags in modes.items():
        total, wall, m = run(a.config, flags)
        walls[mode] = wall
        print(f"{mode:>18}: run {wall:6.1f} s (process {total:6.1f} s), weighted F1 {m['f1_weighted']:.4f}")
    print(f"one after another / concurrent wall time: {walls['one after another'] / walls['concurrent']:.2f}x")


if __name__ == "__main__":
    main()
