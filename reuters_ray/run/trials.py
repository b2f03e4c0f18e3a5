"""Hyperparameter search over cross-validation, without Ray: the search file, its trials and its results.

    reuters-ray tune --config base.yaml --search search.yaml

A search file names which config keys vary and how, how many trials, how many at once, the seed, and the early-
stopping scheduler's two numbers. Its trials are drawn from the seed alone (numpy's generator), so a rerun of the
same command derives the same trials: nothing of Ray Tune's own (pickled) experiment state is ever read back. Each
trial is one k-fold cross-validation of the run config with its values, in <storage>/<search>/trial_<i>/, a normal run
folder. Its score is chosen on the training split only: the folds' mean best validation figure of the one they stop
on (train.monitor: weighted F1 by default, micro-F1 for multi-label data), named so wherever it is shown.

The search file (YAML), every key but `space` optional:

    trials: 8                  # how many configs to try
    max_concurrent: 2          # trials at once; unset: as many as the cluster has room for
    seed: 0                    # draws the trials
    grace_epochs: 1            # ASHA: no trial is stopped before this many epochs
    reduction_factor: 2        # ASHA: at each rung, the best 1/reduction_factor of the trials go on
    space:                     # key: {distribution: arguments}
      train.lr: {log_uniform: [1.0e-4, 1.0e-3]}
      model.hidden_dropout: {uniform: [0.0, 0.3]}
      data.max_length: {integer: [24, 64]}       # both ends included
      train.batch_size: {choice: [8, 16, 32]}
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reuters_ray.config import RunConfig, folder_name, from_dict, load_yaml
from reuters_ray.errors import ConfigError
from reuters_ray.rows import NAMES
from reuters_ray.run.figures import pyplot, save_png
from reuters_ray.run.place import check_writable, result_config
from reuters_ray.run.report import Figure, Table, figure, render_html, render_markdown
from reuters_ray.storage import LOCAL, read_bytes, read_text, storage_location, uri_join, write_atomic

# What a search may vary: what a fold computes from. Not where a run lives or how it is placed (cv.*), nor what the
# data is (a different data set would make the trials' scores incomparable); data.max_length reads the same data.
SEARCHABLE = {
    "train": (
        "lr",
        "weight_decay",
        "warmup_ratio",
        "batch_size",
        "grad_accum",
        "max_epochs",
        "patience",
        "min_delta",
        "focal_gamma",
        "label_smoothing",
        "max_grad_norm",
        "seed",
    ),
    "model": ("hidden_dropout", "attention_dropout"),
    "data": ("max_length", "min_tokens"),
}
DISTRIBUTIONS = ("log_uniform", "uniform", "integer", "choice")
MAX_TRIALS = 1000  # every trial is checked before anything starts, and each is a whole k-fold run
TRIAL_PREFIX = "trial_"


@dataclass(frozen=True)
class Dist:
    """One key's distribution: log_uniform/uniform [low, high) floats, integer [low, high] both included, or one of
    `values`."""

    kind: str
    args: tuple

    def draw(self, rng: np.random.Generator) -> Any:
        if self.kind == "log_uniform":
            low, high = self.args
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        if self.kind == "uniform":
            return float(rng.uniform(*self.args))
        if self.kind == "integer":
            return int(rng.integers(self.args[0], self.args[1] + 1))
        return self.args[int(rng.integers(len(self.args)))]


@dataclass(frozen=True)
class Search:
    """A parsed search file (module docstring)."""

    space: dict[str, Dist]
    trials: int = 8
    max_concurrent: int | None = None
    seed: int = 0
    grace_epochs: int = 1
    reduction_factor: int = 2
    source: dict[str, Any] = field(default_factory=dict, compare=False)  # the file as read, for search.json
    # what the folds stop on, by its key (the base config's RunConfig.monitor(); a search cannot vary it): the score
    monitor: str = field(default="f1_weighted", compare=False)

    @property
    def monitor_name(self) -> str:
        """The monitored figure's name (rows.NAMES): "micro-F1", "weighted F1", "subset accuracy", ..."""

        return NAMES[self.monitor]

    @property
    def score_name(self) -> str:
        """What a trial's score is: "folds' mean best validation micro-F1"."""
        return f"folds' mean best validation {self.monitor_name}"

    @property
    def score_column(self) -> str:
        """trials.csv's header of the score: score_mean_best_val_<monitor>, e.g. score_mean_best_val_f1_micro."""
        return f"score_mean_best_val_{self.monitor}"


def read_search(path: str | Path, base: RunConfig) -> Search:
    """The search file at `path`, checked against the run config `base`. Raises ConfigError naming the key at fault:
    an unknown key, one a search may not vary, an unknown distribution, an empty range, a distribution the key's
    type cannot take, a value the config refuses."""
    data = load_yaml(path, what="search")
    where = f"search {path}"
    known = {"trials", "max_concurrent", "seed", "grace_epochs", "reduction_factor", "space"}
    if unknown := sorted(set(data) - known):
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"{where}: `space` must map config keys to distributions, e.g. train.lr: {{log_uniform: [1.0e-5, 1.0e-3]}}"
        )
    numbers = {k: data[k] for k in known - {"space"} if k in data}
    for k, v in numbers.items():
        low = 0 if k == "seed" else 1
        if not (v is None and k == "max_concurrent") and (not isinstance(v, int) or isinstance(v, bool) or v < low):
            raise ConfigError(f"{where}: {k} must be an integer >= {low}, got {v!r}")
    if numbers.get("trials", 1) > MAX_TRIALS:
        raise ConfigError(
            f"{where}: trials must be at most {MAX_TRIALS} (each is a whole k-fold run), got {numbers['trials']}"
        )
    if numbers.get("reduction_factor", 2) < 2:
        raise ConfigError(f"{where}: reduction_factor must be >= 2, got {numbers['reduction_factor']}")
    dists = {key: _dist(where, key, spec, base) for key, spec in space.items()}
    return Search(space=dists, source=data, monitor=base.monitor(), **numbers)


def _dist(where: str, key: str, spec: Any, base: RunConfig) -> Dist:
    section, _, name = str(key).partition(".")
    hints = typing.get_type_hints(RunConfig)
    sections = {f.name for f in dataclasses.fields(RunConfig)}
    if section not in sections or name not in {f.name for f in dataclasses.fields(hints[section])}:
        raise ConfigError(f"{where}: {key}: not a config key (section.key, e.g. train.lr)")
    if name not in SEARCHABLE.get(section, ()):
        allowed = ", ".join(f"{s}.{k}" for s, ks in SEARCHABLE.items() for k in ks)
        raise ConfigError(
            f"{where}: {key} cannot vary in a search (it places the run or changes its data); keys that can: {allowed}"
        )
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: {key}: give one distribution, {{{' | '.join(DISTRIBUTIONS)}: ...}}, got {spec!r}")
    kind, args = next(iter(spec.items()))
    tp = typing.get_type_hints(hints[section])[name]
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: {key}: choice takes a non-empty list of values, got {args!r}")
        for value in args:  # each value must make a valid config
            _with(base, {key: value}, f"{where}: {key}: choice {value!r}")
        return Dist(kind, tuple(args))
    if isinstance(args, list) and tp is float:  # YAML reads 1e-5 (no dot) as a string; the config takes it as 1e-05
        args = [_float_text(a) for a in args]
    if not (isinstance(args, list) and len(args) == 2 and all(_is_number(a) for a in args)):
        raise ConfigError(f"{where}: {key}: {kind} takes [low, high], two numbers, got {args!r}")
    low, high = args
    if kind == "integer" and tp is not int:
        raise ConfigError(
            f"{where}: {key} is a float key: give {{uniform: [low, high]}}, log_uniform or a choice, not integer"
        )
    if kind == "integer" and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: {key}: integer takes integer ends, got {args!r}")
    if kind in ("uniform", "log_uniform") and tp is not float:
        raise ConfigError(f"{where}: {key} is an integer key: give {{integer: [low, high]}} or a choice, not {kind}")
    if not low < high if kind != "integer" else not low <= high:
        raise ConfigError(f"{where}: {key}: an empty range [{low}, {high}]")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: {key}: log_uniform needs low > 0, got {low}")
    # the config takes the range's values: both ends (high excluded for a float range: its largest float below)
    for end in (low, high if kind == "integer" else float(np.nextafter(high, low))):
        _with(base, {key: float(end) if tp is float else end}, f"{where}: {key}: [{low}, {high}]")
    return Dist(kind, (float(low), float(high)) if tp is float else (int(low), int(high)))


def _float_text(x: Any) -> Any:
    """A string YAML did not read as a number ('1e-5') as its float; anything else as it is."""
    if isinstance(x, str):
        try:
            return float(x)
        except ValueError:
            return x
    return x


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _with(base: RunConfig, values: dict[str, Any], where: str) -> RunConfig:
    """`base` with `values` ({"train.lr": 1e-4}) set, validated as a config file is."""
    d = copy.deepcopy(base.to_dict())
    for key, value in values.items():
        section, _, name = key.partition(".")
        d[section][name] = value
    try:
        return from_dict(RunConfig, d)
    except ConfigError as e:
        raise ConfigError(f"{where}: {str(e).removeprefix('config: ')}") from None


def draw_trials(search: Search) -> list[dict[str, Any]]:
    """Each trial's values ({key: value}), drawn from search.seed: the same search file gives the same trials."""
    rng = np.random.default_rng(search.seed)
    return [{key: dist.draw(rng) for key, dist in search.space.items()} for _ in range(search.trials)]


# A search's trials share the cluster, so cv.cpus_per_fold unset is not the whole cluster's share (share_of_cpus) but
# this, for each trial's folds alike: what the search reserves for a trial.
TRIAL_CPUS_PER_FOLD = 1.0


def trial_cpus_per_fold(cv) -> float:
    """The CPUs of each fold worker of a search's trial: cv.cpus_per_fold, or TRIAL_CPUS_PER_FOLD when unset."""
    return TRIAL_CPUS_PER_FOLD if cv.cpus_per_fold is None else cv.cpus_per_fold


def trial_config(base: RunConfig, values: dict[str, Any], search_name: str, storage: str, trial: int) -> RunConfig:
    """Trial `trial`'s run config: `base` with its values, its run folder <storage>/<search_name>/trial_<i>."""
    cfg = _with(base, values, f"trial {trial}")

    cv = dataclasses.replace(
        cfg.cv,
        name=f"{TRIAL_PREFIX}{trial}",
        storage_path=uri_join(storage, search_name),
        cpus_per_fold=trial_cpus_per_fold(cfg.cv),
    )
    track = dataclasses.replace(cfg.track, mlflow=False, register=None)  # the search's driver logs its trials
    return dataclasses.replace(cfg, cv=cv, track=track)


def score_of_folds(fold_table: list[dict[str, Any]]) -> float:
    """A trial's score: its folds' mean best validation figure of the metric they stopped on (train.monitor: weighted
    F1 by default, micro-F1 for multi-label data), the training split alone, as ASHA ranked the trials' rounds."""
    return float(np.mean([f.get("val_monitor", f["val_f1_weighted"]) for f in fold_table]))


def round_line(search: Search, trial: int, epoch: int, score: float) -> str:
    """The search's console line for a trial's epoch round (every fold has reported `epoch`)."""
    return f"trial {trial}: epoch {epoch}, score {score:.4f} ({search.score_name} up to epoch {epoch})"


def summary(values: dict[str, Any]) -> str:
    """`train.lr=0.00031, model.hidden_dropout=0.12`: a trial's values in one line."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def search_json(search: Search, base: RunConfig, trials: list[dict[str, Any]]) -> str:
    return json.dumps({"search": search.source, "base": base.to_dict(), "trials": trials}, indent=1, sort_keys=True)


# --- the search folder: its trials' states and results --------------------------------------------------------

SEARCH_FILE, STOPPED_FILE, BEST = "search.json", "stopped.json", "best"


@dataclass(frozen=True)
class SearchPlace:
    """Where a search lives: its name, the filesystem, its folder on it, and its URI (<cv.storage_path>/<name>)."""

    name: str
    fs: Any
    path: str
    uri: str
    storage: str  # cv.storage_path: the trials' run folders are <storage>/<name>/trial_<i>

    def at(self, *parts: str) -> str:
        return "/".join([self.path, *parts])


def search_place(storage: str, name: str) -> SearchPlace:
    """The place of search `name` in cv.storage_path `storage`. Raises ConfigError for a name that is no folder name
    or a storage path pyarrow does not take."""

    if not folder_name(name):
        raise ConfigError(
            f"search name {name!r}: a folder name without / \\ ? # %, control characters or spaces at its ends"
        )
    try:
        fs, base_path, base_uri = storage_location(storage)
    except (ValueError, OSError) as e:
        raise ConfigError(f"cv.storage_path {storage!r}: {e}") from None
    return SearchPlace(name, fs, f"{base_path}/{name}", uri_join(base_uri, name), storage)


def check_search(base: RunConfig, search: Search, name: str) -> tuple[SearchPlace, list[dict[str, Any]], bool]:
    """(the search's place, its trials' values, whether it is resumed), reading only. Every trial's config is
    checked, and a search folder that holds another search (another search file's trials or another base config)
    is refused in one line. Raises ConfigError."""

    place = search_place(base.cv.storage_path, name)
    trials = draw_trials(search)
    for i, values in enumerate(trials):  # every trial a valid config, before anything is written
        trial_config(base, values, name, base.cv.storage_path, i)
    kept = read_text(place.fs, place.at(SEARCH_FILE))
    resumed = kept is not None
    if resumed:
        old = json.loads(kept)
        same = old["search"] == search.source and result_config(old["base"]) == result_config(base.to_dict())
        if not same:
            raise ConfigError(
                f"search {name!r} in {base.cv.storage_path} was made with another search file or base config; use the "
                f"same ones to continue it, or another search name (--search-name)"
            )
    return place, trials, resumed


def write_search(place: SearchPlace, search: Search, base: RunConfig, trials: list[dict[str, Any]]) -> None:
    """search.json: the search file as read, the base config and the trials' values. Raises ConfigError when the
    storage cannot be written."""

    check_writable(place.fs, place.path, base.cv.storage_path)
    write_atomic(place.at(SEARCH_FILE), search_json(search, base, trials), place.fs)


def trial_status(place: SearchPlace, trial: int) -> str:
    """ "finished" (its run folder holds report.md), "stopped" (the scheduler ended it: stopped.json) or "to run"."""

    folder = f"{TRIAL_PREFIX}{trial}"
    if read_bytes(place.fs, place.at(folder, "report.md")) is not None:
        return "finished"
    if read_bytes(place.fs, place.at(folder, STOPPED_FILE)) is not None:
        return "stopped"
    return "to run"


def mark_stopped(place: SearchPlace, trial: int, score: float, rounds: int, wall_s: float) -> None:

    record = {"score": score, "epochs": rounds, "wall_s": wall_s, "stopped_early": True}
    write_atomic(place.at(f"{TRIAL_PREFIX}{trial}", STOPPED_FILE), json.dumps(record), place.fs)


# A finished trial's test figures (search.json, the chosen trial's line), by its metrics.json's task: key, name
TEST_FIGURES = {
    "single": {"accuracy": "accuracy", "f1_weighted": "weighted F1", "f1_macro": "macro F1"},
    "multi": {
        "f1_micro": "micro-F1",
        "f1_macro": "macro-F1",
        "f1_samples": "samples-F1",
        "subset_accuracy": "subset accuracy",
        "hamming_loss": "Hamming loss",
    },
}


def trial_rows(place: SearchPlace, trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trial, read back from its files: its values, status, score (score_of_folds: finished trials from
    their metrics.json, stopped ones as the scheduler saw them), epochs run, wall seconds, and a finished trial's
    test figures (TEST_FIGURES, for the chosen trial alone in the report) and out-of-fold weighted F1 (multi-label:
    micro-F1, out_of_fold_f1_micro)."""

    rows = []
    for i, values in enumerate(trials):
        folder, status = f"{TRIAL_PREFIX}{i}", trial_status(place, i)
        row = {"trial": i, "run": folder, **values, "status": status, "score": None, "epochs": None, "wall_s": None}
        if status == "finished":
            m = json.loads(read_text(place.fs, place.at(folder, "metrics.json")))
            task, folds = m.get("task", "single"), m["folds"]
            oof = "f1_micro" if task == "multi" else "f1_weighted"
            row.update(score=score_of_folds(folds), epochs=max(f["epochs_run"] for f in folds), wall_s=m["wall_s"])
            row.update(stopped_early=False, test={k: figure(m, k) for k in TEST_FIGURES[task]})
            row[f"out_of_fold_{oof}"] = m["out_of_fold"][oof]
        elif status == "stopped":
            row.update(json.loads(read_text(place.fs, place.at(folder, STOPPED_FILE))))
        rows.append(row)
    return rows


def best_trial(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished trial with the highest score (ties: the lower trial number); None when none finished."""
    finished = [r for r in rows if r["status"] == "finished"]
    return max(finished, key=lambda r: (r["score"], -r["trial"])) if finished else None


def write_results(place: SearchPlace, search: Search, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The search's results beside its trials: trials.csv (the score under search.score_column), search.json (the
    trials' values and results, the score under "score" and what it is under "score_of"), report.md / report.html
    (the trials sorted by score, the score against each searched key, the chosen trial's test figures), and `best`,
    naming the best finished trial's run folder (a link; in a bucket, a file holding its name, which predict, export
    and serve follow). Returns the best trial's row."""
    import io

    import pandas as pd

    best = best_trial(rows)
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "test"} for r in rows])
    write_atomic(
        place.at("trials.csv"), table.rename(columns={"score": search.score_column}).to_csv(index=False), place.fs
    )
    kept = json.loads(place.fs.open_input_stream(place.at(SEARCH_FILE)).read())
    score_of = {"monitor": search.monitor, "name": search.score_name}
    record = {**kept, "score_of": score_of, "results": rows, "best": best}
    write_atomic(place.at(SEARCH_FILE), json.dumps(record, indent=1, default=str), place.fs)
    keys = list(search.space)
    ranked = sorted(rows, key=lambda r: (r["score"] is None, -(r["score"] or 0.0), r["trial"]))
    results = Table(
        ["trial", *keys, "status", f"score ({search.score_name})", "epochs", "wall"],
        [
            [
                r["trial"],
                *(_fmt(r[k]) for k in keys),
                r["status"],
                _fmt(r["score"]),
                r["epochs"] or "",
                f"{r['wall_s']:.0f} s" if r["wall_s"] else "",
            ]
            for r in ranked
        ],
        (0, len(keys) + 2, len(keys) + 3, len(keys) + 4),
    )
    with tempfile.TemporaryDirectory() as tmp:
        figures = []
        for key in keys:
            png = io.BytesIO()
            _score_figure(rows, key, png, search.score_name)
            name = f"score_vs_{key.replace('.', '_')}.png"
            (Path(tmp) / name).write_bytes(png.getvalue())
            write_atomic(place.at(name), png.getvalue(), place.fs)
            caption = f"Score ({search.score_name}) against {key}: each point a trial (x: stopped early)."
            figures.append(Figure(name, caption))
        chosen = _chosen_section(best, search)
        sections = [("Trials", [_intro(search, rows), results, *figures]), chosen]
        title = f"reuters-ray search {place.name}"
        write_atomic(place.at("report.html"), render_html(title, sections, Path(tmp)), place.fs)
        write_atomic(place.at("report.md"), render_markdown(title, sections), place.fs)
    if best is not None:
        _point_best(place, best["run"], LOCAL)
    return best


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else "" if x is None else str(x)


def _intro(search: Search, rows: list[dict[str, Any]]) -> str:
    stopped = sum(r["status"] == "stopped" for r in rows)
    return (
        f"{len(rows)} trials drawn from seed {search.seed}, each a whole k-fold cross-validation. A trial's score is "
        f"its {search.score_name} (train.monitor: what the folds stop on): the training split alone; the test split "
        f"ranks and stops nothing. ASHA (grace {search.grace_epochs} epoch(s), reduction factor "
        f"{search.reduction_factor}) stopped {stopped} trial(s) early."
    )


def named_test_figures(test: dict[str, float]) -> str:
    """A finished trial's test figures, each named (TEST_FIGURES): "accuracy 0.9133, weighted F1 0.9123, ..."."""
    names = TEST_FIGURES["multi" if "f1_micro" in test else "single"]
    return ", ".join(f"{names[k]} {test[k]:.4f}" for k in names)


def _chosen_section(best: dict[str, Any] | None, search: Search):
    if best is None:
        return "Chosen trial", ["No trial has finished yet."]
    oof = "micro-F1" if "out_of_fold_f1_micro" in best else "weighted F1"
    oof_value = best.get("out_of_fold_f1_micro", best.get("out_of_fold_f1_weighted"))
    return "Chosen trial", [
        f"Trial {best['trial']} (`{best['run']}`, {summary({k: v for k, v in best.items() if '.' in k})}): score "
        f"{best['score']:.4f} ({search.score_name}), out-of-fold {oof} {oof_value:.4f}. Its test figures, of the "
        f"chosen trial alone (the test split chose nothing): {named_test_figures(best['test'])}. Its run folder is a whole "
        f"run: `{best['run']}/report.html`."
    ]


def _score_figure(rows: list[dict[str, Any]], key: str, out, name: str) -> None:
    """Each trial's score (`name`: what it is) against its value of `key`, as a PNG into `out`."""

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for r in rows:
        if r["score"] is not None:
            ax.scatter([r[key]], [r["score"]], marker="x" if r["status"] == "stopped" else "o", color="C0")
            ax.annotate(str(r["trial"]), (r[key], r["score"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if key.endswith(".lr"):
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"score: {name}", fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, out)


def _point_best(place: SearchPlace, run: str, local_fs) -> None:
    """`best` beside the trials: a relative link on a local disk, a file holding the run's folder name in a bucket."""
    import os

    if place.fs.type_name == local_fs.type_name:
        link = Path(place.path) / BEST
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(run, link)
    else:
        write_atomic(place.at(BEST), run + "\n", place.fs)
