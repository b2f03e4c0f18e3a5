"""What the driver prints while a run goes: plain lines for people, JSON lines for scripts, or almost nothing.

    text   the run's setup, one table row per fold epoch (as the seed's callback printed them) followed by a
           progress line (each fold's epoch, the best validation figure it follows so far, time left), and the result
    json   one JSON object per line: {"event": "info"|"epoch"|"restart"|"done", ...}
    quiet  the result line only (errors go to stderr in every mode)
No Ray here: the runner feeds it the rows its folds report.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from reuters_ray import rows as R

MODES = ("text", "json", "quiet")

# The per-epoch table: the columns of the seed's callback, each named for its figure: the validation split's accuracy,
# weighted precision/recall/F1 and macro F1. (title, width, format, key of the epoch row)
TABLE = [
    ("fold", 4, "d", R.FOLD),
    ("epoch", 5, "d", R.EPOCH),
    ("train loss", 10, ".4f", R.TRAIN_LOSS),
    ("val loss", 8, ".4f", R.VAL_LOSS),
    ("val accuracy", 12, ".4f", R.VAL_ACCURACY),
    ("val weighted P", 14, ".4f", R.VAL_PRECISION),
    ("val weighted R", 14, ".4f", R.VAL_RECALL),
    ("val weighted F1", 15, ".4f", R.VAL_F1),
    ("val macro F1", 12, ".4f", R.VAL_F1_MACRO),
    ("s", 6, ".1f", R.EPOCH_S),
]
# Multi-label folds (their rows have val/hamming_loss): subset accuracy, micro precision/recall/F1, macro F1.
TABLE_MULTI = TABLE[:4] + [
    ("val subset accuracy", 19, ".4f", R.VAL_SUBSET_ACCURACY),
    ("val micro P", 11, ".4f", R.VAL + "precision_micro"),
    ("val micro R", 11, ".4f", R.VAL + "recall_micro"),
    ("val micro-F1", 12, ".4f", R.VAL + "f1_micro"),
    ("val macro-F1", 12, ".4f", R.VAL_F1_MACRO),
    ("s", 6, ".1f", R.EPOCH_S),
]


def format_row(m: dict[str, Any] | None = None, multi_label: bool = False) -> str:
    """One line of the per-epoch table; the header when `m` is None. The best epoch so far is marked with *.
    Multi-label rows (or `multi_label` for the header) get TABLE_MULTI's columns."""
    table = TABLE_MULTI if multi_label or (m is not None and R.VAL + "hamming_loss" in m) else TABLE
    if m is None:
        return " | ".join(title.rjust(width) for title, width, _, _ in table)
    line = " | ".join(format(m[key], spec).rjust(width) for _, width, spec, key in table)
    return line + (" *" if m[R.BEST_EPOCH] == m[R.EPOCH] else "")


class Console:
    def __init__(self, mode: str = "text", stream: TextIO | None = None):
        if mode not in MODES:
            raise ValueError(f"console mode must be one of {MODES}, got {mode!r}")
        self.mode, self.stream = mode, stream or sys.stdout
        self.folds: dict[int, dict[str, Any]] = {}  # fold -> its latest epoch row
        self.expected: set[int] = set()  # the folds this run trains (runner); those without a row yet are waiting
        # Called with every epoch row before it is shown (experiment tracking, live metrics): one that raises is
        # dropped with one warning, and the run goes on.
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._header_shown = False

    def _emit(self, event: str, text: str | None, fields: dict[str, Any]) -> None:
        if self.mode == "json":
            print(
                json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str),
                file=self.stream,
                flush=True,
            )
        elif self.mode == "text" and text is not None:
            print(text, file=self.stream, flush=True)

    def info(self, text: str, **fields: Any) -> None:
        self._emit("info", text, {"message": text, **fields})

    def warning(self, text: str, **fields: Any) -> None:
        """One line on stderr in every mode ("reuters-ray: warning: ..."), and a "warning" event in JSON mode."""
        print(f"reuters-ray: warning: {text}", file=sys.stderr, flush=True)
        if self.mode == "json":
            self._emit("warning", None, {"message": text, **fields})

    def tell_listeners(self, row: dict[str, Any]) -> None:
        for listen in list(self.listeners):
            try:
                listen(row)
            except Exception as e:  # noqa: BLE001 (watching a run never ends it)
                self.listeners.remove(listen)
                self.warning(f"{getattr(listen, '__qualname__', listen)} stopped: {type(e).__name__}: {e}")

    def epoch(self, row: dict[str, Any]) -> None:
        """One fold's epoch row (reuters_ray.rows), told to the listeners, and, in text mode, the progress of all
        folds."""
        self.tell_listeners(row)
        last = self.folds.get(row[R.FOLD])
        if last is not None and row.get(R.RESTARTS, 0) > last.get(R.RESTARTS, 0):
            self._emit(
                "restart",
                f"fold {row[R.FOLD]}: restarted from its checkpoint after epoch {row[R.EPOCH] - 1}",
                {"fold": row[R.FOLD], "after_epoch": row[R.EPOCH] - 1},
            )
        self.folds[row[R.FOLD]] = row
        if self.mode == "text" and not self._header_shown:
            self._header_shown = True
            print(format_row(multi_label=R.VAL + "hamming_loss" in row), file=self.stream)
        self._emit("epoch", format_row(row), {k: v for k, v in row.items() if not k.startswith(R.WORKER)})
        if self.mode == "text":
            print(self.progress_line(), file=self.stream, flush=True)

    def progress_line(self) -> str:
        """e.g. `progress, best val weighted F1: fold 0 2/3 0.6123 | fold 1 1/3 0.4410 | at most 1 min 10 s left`:
        each fold's epoch and best validation figure so far of the one its folds follow (train.monitor); folds that
        have not reported an epoch yet (queued by Ray for room on the cluster, or starting) are named as waiting."""
        parts, left, names = [], 0.0, set()
        for k in sorted(self.folds):
            r = self.folds[k]
            names.add(R.NAMES[r.get(R.MONITOR, "f1_weighted")])
            parts.append(
                f"fold {k} {r[R.EPOCH]}/{r[R.MAX_EPOCHS]}{' done' if r[R.FINISHED] else ''} {r[R.best_key(r)]:.4f}"
            )
            if not r[R.FINISHED]:  # folds run at once: the slowest one decides; early stopping may end it sooner
                left = max(left, r[R.EPOCH_S] * (r[R.MAX_EPOCHS] - r[R.EPOCH]))
        waiting = sorted(self.expected - set(self.folds))
        if waiting:
            parts.append(f"{'folds' if len(waiting) > 1 else 'fold'} {', '.join(map(str, waiting))} waiting")
        if any(not r[R.FINISHED] for r in self.folds.values()):
            end = f"at most {duration(left)} left" + (" for the running folds" if waiting else "")
        else:
            end = "waiting for the other folds" if waiting else "all folds done"
        named = f", best val {' / '.join(sorted(names))}" if names else ""
        return f"progress{named}: " + " | ".join(parts) + " | " + end

    def done(self, text: str, **fields: Any) -> None:
        if self.mode == "quiet":
            print(text, file=self.stream, flush=True)
        self._emit("done", text, {"message": text, **fields})


def duration(seconds: float) -> str:
    """12 s, 4 min 29 s, 1 h 5 min: how the console and the report write times."""
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60} min" if s >= 3600 else f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"
