"""How a stopped run ends (issue 41): seconds from the signal to the command's exit, against the seconds its folds
would still have trained.

    .venv/bin/python bench/stop.py --signal SIGINT --group        # Ctrl-C in a terminal: the process group
    .venv/bin/python bench/stop.py --signal SIGTERM               # `timeout`, `kill`: the command alone

Runs `jobs/cv.py --config CONFIG` (default the quick CPU run, 3 folds x 3 epochs; its own local Ray) in a new
session, sends the signal one second after the first epoch row, and prints the command's status, its last line,
the seconds to its exit, the epochs each fold had registered, and the ratio of the stop's seconds to what the
folds' remaining epochs would have taken at their registered epochs' pace (before issue 41 the driver waited for
the folds to train to their end).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import machine

from reuters_ray import rows as R

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--signal", default="SIGINT", choices=["SIGINT", "SIGTERM", "SIGHUP"])
    p.add_argument("--group", action="store_true", help="send it to the command's process group (a terminal's Ctrl-C)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "reuters21578"))
    p.add_argument("--config", default=str(REPO / "configs" / "quick-cpu.yaml"))
    a = p.parse_args()
    folds, epochs_max = 3, 3
    storage = tempfile.mkdtemp(prefix="bench-stop-")
    cmd = [sys.executable, str(REPO / "jobs" / "cv.py"), "--config", a.config, "--cv.folds", str(folds),
           "--train.max_epochs", str(epochs_max), "--data.path", a.data, "--cv.storage_path", storage]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    for line in proc.stdout:
        if line.startswith("progress"):
            break
    time.sleep(1.0)
    sent = time.monotonic()
    (os.killpg if a.group else os.kill)(proc.pid, getattr(signal, a.signal))
    proc.wait(timeout=300)
    stop_s = time.monotonic() - sent
    run = next(Path(storage).iterdir())
    epochs, left_s = [], 0.0
    for k in range(folds):
        path = run / f"fold_{k}" / "checkpoint_manager_snapshot.json"  # none: the fold registered no epoch
        done = [c["metrics"] for c in json.loads(path.read_text())["checkpoint_results"]] if path.exists() else []
        epochs.append(max((m[R.EPOCH] for m in done), default=0))
        pace = max((m[R.EPOCH_S] for m in done), default=0.0)
        left_s = max(left_s, (epochs_max - epochs[-1]) * pace)  # the folds train at once: the longest is left
    print(f"machine: {machine()}")
    print(f"{a.signal}{' to the process group' if a.group else ''}: status {proc.returncode}, last line "
          f"{err[-1].strip()!r}")  # fmt: skip
    print(f"stopped in {stop_s:.1f} s; folds' registered epochs {epochs} of {epochs_max}; their remaining epochs would "
          f"have taken about {left_s:.1f} s of training (ratio {stop_s / max(left_s, 1e-9):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
