"""The run report: report.md and a self-contained report.html (figures inlined), rebuilt from a run folder's files.

    reuters-ray report RUN_DIR

One content model (sections of paragraphs, tables, figures and code) rendered twice, so both files carry the
same numbers, each as metrics.json holds it rounded to 4 decimals. Figures are PNGs beside the reports:
confusion_matrix.png, f1_vs_support.png, training_curves.png. No Ray here.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from reuters_ray import rows as R
from reuters_ray.console import duration
from reuters_ray.errors import DataError
from reuters_ray.run.figures import confusion_figure, curves_figure, f1_support_figure, monitor_of
from reuters_ray.storage import write_atomic

FIGURES = ("confusion_matrix.png", "f1_vs_support.png", "training_curves.png")


def fmt(x: float) -> str:
    """How every metric appears in the report."""
    return f"{x:.4f}"


def figure(d: dict[str, Any], key: str) -> float:
    """d[key] of metrics.json; a multi-label run's subset accuracy written before it had its own key: d["accuracy"]
    (a fold's: "val_accuracy"). Raises KeyError when neither is there."""
    if key not in d and key.endswith("subset_accuracy"):
        return d[key.replace("subset_accuracy", "accuracy")]
    return d[key]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    numeric: tuple[int, ...] = ()  # right-aligned columns


@dataclass
class Figure:
    file: str
    caption: str


@dataclass
class Code:
    text: str


Block = str | Table | Figure | Code  # a str is a paragraph (markdown emphasis and `code` allowed)


# --- loading --------------------------------------------------------------------------------------------------


def load_run(run_dir: Path) -> dict[str, Any]:
    """The files a report is built from. Raises DataError naming the first one missing."""
    run_dir = Path(run_dir)
    need = ["metrics.json", "config.yaml", "provenance.json", "history.csv"]
    for name in need:
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir / name} is missing: is {run_dir} a finished reuters-ray run folder?")
    return {
        "metrics": json.loads((run_dir / "metrics.json").read_text()),
        "config": yaml.safe_load((run_dir / "config.yaml").read_text()),
        "provenance": json.loads((run_dir / "provenance.json").read_text()),
        "history": pd.read_csv(run_dir / "history.csv"),
    }


# --- figures --------------------------------------------------------------------------------------------------


# --- content --------------------------------------------------------------------------------------------------


def _seconds(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} s"


def _number(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def wall_time(m: dict[str, Any]) -> str:
    """The run's wall time and, where recorded, its phases."""
    text = f"{duration(m['wall_s'])} for the run up to its outputs"
    phases = [
        ("data and tokenization", "data_s"),
        ("Ray start-up after the data (a run starts Ray while it tokenizes)", "ray_start_s"),
        ("folds", "folds_s"),
        ("ensemble", "ensemble_s"),
        ("linear model (baseline, blend; fitted while the folds train)", "baseline_s"),
    ]
    timing = m.get("timing") or {}
    if timing:
        text += ": " + ", ".join(f"{label} {timing[k]:.1f} s" for label, k in phases if k in timing)
    return text


def confused_pairs(cm: np.ndarray, names: list[str], top: int = 10) -> list[tuple[str, str, int, float]]:
    """(true, predicted, count, share of the true class) of the largest off-diagonal cells, largest first."""
    cells = [(int(cm[i, j]), i, j) for i in range(len(names)) for j in range(len(names)) if i != j and cm[i, j] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(names[i], names[j], n, n / cm[i].sum()) for n, i, j in cells[:top]]


Section = tuple[str, list[Block]]


def build_sections(run: dict[str, Any]) -> tuple[str, list[Section]]:
    """(title, sections) of a run's report, from load_run's files: one function per section, in this order."""
    sections = [result_section, folds_section, per_class_section, confusion_section, setup_section, config_section]
    if run["metrics"].get("task") == "multi":
        sections = [result_section, folds_section, per_topic_section, errors_section, setup_section, config_section]
    return f"reuters-ray run {run['metrics']['run']}", [section(run) for section in sections]


def _blend(m: dict[str, Any]) -> dict[str, Any] | None:
    return m.get("blend") if m.get("predictor") == "blend" else None


def result_section(run: dict[str, Any]) -> Section:
    """The test figures of the predictor, the ensemble and the baseline, what they mean, and the restarts."""
    m, cfg = run["metrics"], run["config"]
    folds, base, blend, ens = m["folds"], m.get("baseline"), _blend(m), m.get("ensemble", m)
    keys = ("accuracy", "f1_weighted", "f1_macro", "precision_weighted", "recall_weighted")
    names = ["accuracy", "weighted F1", "macro F1", "weighted precision", "weighted recall"]
    if m.get("task") == "multi":
        keys = ("f1_micro", "f1_macro", "f1_samples", "f1_weighted", "subset_accuracy", "hamming_loss")
        names = ["micro-F1", "macro-F1", "samples-F1", "weighted F1", "subset accuracy", "Hamming loss"]
    table = Table(["model", *(f"test {n}" for n in names)], [], tuple(range(1, len(keys) + 1)))
    cells = lambda d: [fmt(figure(d, k)) for k in keys]  # noqa: E731
    student = m.get("predictor") == "student"
    if student:  # the student, then its teacher's predictor and ensemble: the same test split
        t, layers = m["teacher"], cfg["model"].get("layers")
        table.rows.append(
            [f"student: {cfg['model']['name']}{'' if layers is None else f', first {layers} layers'}", *cells(m)]
        )
        table.rows.append([f"teacher: run {t['run']}'s {t['predictor']}", *cells(t)])
    if blend:
        w = blend["weight"]
        table.rows.append([f"blend: {w:.2f} x ensemble + {1 - w:.2f} x linear model", *cells(m)])
    if student:
        name = f"teacher's ensemble of {m['teacher']['folds']} fold models ({m['teacher']['model']})"
        table.rows.append([name, *cells(ens)])
    else:
        name = f"ensemble of {len(folds)} fold models ({cfg['model']['name']})"
        table.rows.append([name, *cells(ens)])
    if base:
        table.rows.append([f"baseline: {base['name']}", *cells(base)])
    restarts = [(f["fold"], r) for f in folds for r in f.get("restarts", [])]
    if restarts:
        said = "; ".join(
            f"fold {k}: {r['kind']} after epoch {r['after_epoch']}"
            + (f" with {r['workers'][1]} worker(s) instead of {r['workers'][0]}" if "workers" in r else "")
            for k, r in restarts
        )
        restarts_note = (
            f"**Restarts:** {said}. Each continued from its last checkpoint (or started over where none loaded)."
        )
    else:
        restarts_note = "Restarts: none; every fold trained in one go."
    summary = _student_summary(m) if student else _summary(m)
    return "Result", [table, summary, *_overlap_notes(m), restarts_note]


def _overlap_notes(m: dict[str, Any]) -> list[str]:
    """metrics.json's "test_unseen" (test texts that are training texts, and the figures without them) and
    "fold_copies" (validation rows that are training texts of their own fold), as report paragraphs."""
    notes, u, copies = [], m.get("test_unseen"), m.get("fold_copies")
    if u:
        multi = m.get("task") == "multi"
        names = {
            "accuracy": "accuracy",
            "f1_weighted": "weighted F1",
            "f1_micro": "micro-F1",
            "f1_samples": "samples-F1",
        }
        names["f1_macro"] = "macro-F1" if multi else "macro F1"
        figures = ", ".join(f"{names[k]} {fmt(v)}" for k, v in u.items() if k in names)
        notes.append(
            f"**Test texts that are training texts:** {u['shared_with_training']} of {m['n_test']} (the same text "
            f"after cleaning); the figures above count them as held out. On the {u['n']} test texts that are not "
            f"training texts: {figures}."
        )
    if copies:
        per = ", ".join(f"fold {c['fold']} {c['also_training_texts']} of {c['validation_rows']}" for c in copies)
        notes.append(
            f"**Validation rows that are training texts of their own fold:** {per} (`fold_copies` in metrics.json "
            "names them): the validation figures, and what was chosen on them, count them as held out."
        )
    return notes


def _student_summary(m: dict[str, Any]) -> str:
    """What a student run's result table means: what it learnt from, how it stopped, the gap to its teacher."""
    t, d = m["teacher"], m["distill"]
    key, name = ("f1_micro", "micro-F1") if m.get("task") == "multi" else ("f1_weighted", "weighted F1")
    delta = m[key] - t[key]
    text = (
        f"{m['n_test']} test texts, {len(m['label_names'])} {'topics' if m.get('task') == 'multi' else 'classes'}. "
        f"One student model, distilled from run {t['run']} ({t['source']}): trained on {d['train']} training texts "
        f"with the loss {d['alpha']:g} x the focal loss on their labels + {1 - d['alpha']:g} x the soft-target loss "
        f"(temperature {d['temperature']:g}) on {d['soft_targets']} (soft_targets.parquet: each text scored by models "
        f"that never trained on it); {d['validation']} training texts held out for its early stopping"
        + (" and its thresholds" if m.get("task") == "multi" else "")
        + f", never the test split. Its test {name} is {fmt(abs(delta))} {'above' if delta >= 0 else 'below'} the "
        f"teacher's."
    )
    return text


def _summary(m: dict[str, Any]) -> str:
    """What the result table means: the ensemble, the blend and how its weight was chosen, the baseline's gap, and
    the out-of-fold figures."""
    folds, base, blend = m["folds"], m.get("baseline"), _blend(m)
    if m.get("task") == "multi":
        return _summary_multi(m)
    text = (
        f"{m['n_test']} test texts, {len(m['label_names'])} classes. The ensemble averages the logits of the "
        f"{len(folds)} fold models; each was trained on {len(folds) - 1}/{len(folds)} of the training split."
    )
    if blend:
        o, w = blend["out_of_fold"], blend["weight"]
        text += (
            f" The run's predictions (predictions.parquet, the per-class figures below) are the blend: {w:.2f} times"
            f" the ensemble's probabilities plus {1 - w:.2f} times those of the linear model (the baseline's TF-IDF +"
            f" linear SVM, calibrated by a softmax temperature of {blend['temperature']:.3g}). The weight was chosen"
            f" on out-of-fold predictions of the training split, never on the test split: weighted F1 out of fold"
            f" {fmt(o['blend']['f1_weighted'])} for the blend, {fmt(o['ensemble']['f1_weighted'])} for the fold"
            f" models, {fmt(o['linear']['f1_weighted'])} for the linear model (log loss {o['blend']['log_loss']:.4f},"
            f" {o['ensemble']['log_loss']:.4f}, {o['linear']['log_loss']:.4f})."
        )
    if base:
        delta = m["f1_weighted"] - base["f1_weighted"]
        text += (
            f" Test weighted F1 of the {'blend' if blend else 'ensemble'} {'above' if delta >= 0 else 'below'} the"
            f" baseline's by {fmt(abs(delta))}."
        )
    if oof := m.get("out_of_fold"):
        mean = oof["folds_mean"]
        text += (
            f" Out of fold (each of the {oof['n']} training texts scored by the fold model that did not train on it,"
            f" oof_predictions.parquet): accuracy {fmt(oof['accuracy'])}, weighted F1 {fmt(oof['f1_weighted'])},"
            f" macro F1 {fmt(oof['f1_macro'])}; the folds' mean validation figures at their best epochs:"
            f" {fmt(mean['accuracy'])},"
            f" {fmt(mean['f1_weighted'])}, {fmt(mean['f1_macro'])}."
        )
    return text


def _decision_text(d: dict[str, Any]) -> str:
    own = sum(d["own"])
    return (
        f"thresholds chosen out of fold: {own} topic(s) with at least {d['min_positives']} training positives have "
        f"their own, the other {len(d['own']) - own} share the global {d['global']:.2f}"
        + ("; a text with no topic above its threshold gets its most probable one" if d["at_least_one"] else "")
    )


def _summary_multi(m: dict[str, Any]) -> str:
    """_summary for multi-label runs: label sets, thresholds, the blend, the baseline's gap, out of fold."""
    folds, base, blend, d = m["folds"], m.get("baseline"), _blend(m), m["decision"]
    text = (
        f"{m['n_test']} test texts, {len(m['label_names'])} topics, multi-label ({m['labels_per_text']['true']:.2f} "
        f"topics per text, {m['labels_per_text']['predicted']:.2f} predicted). The ensemble averages the logits of "
        f"the {len(folds)} fold models; each topic's probability is the sigmoid of its averaged logit. Label sets: "
        f"{_decision_text(d)} (out of fold micro-F1 {fmt(d['out_of_fold']['at_0.5']['f1_micro'])} at 0.5, "
        f"{fmt(d['out_of_fold']['chosen']['f1_micro'])} at the chosen thresholds)."
    )
    if blend:
        o, w = blend["out_of_fold"], blend["weight"]
        text += (
            f" The run's predictions are the blend: {w:.2f} times the ensemble's probabilities plus {1 - w:.2f} times"
            f" those of the linear model (one linear SVM per topic, Platt-scaled out of fold). The weight was chosen"
            f" out of fold: micro-F1 {fmt(o['blend']['f1_micro'])} for the blend, {fmt(o['ensemble']['f1_micro'])}"
            f" for the fold models, {fmt(o['linear']['f1_micro'])} for the linear model (each at its best global"
            f" threshold)."
        )
    if base:
        delta = m["f1_micro"] - base["f1_micro"]
        text += (
            f" Test micro-F1 of the {'blend' if blend else 'ensemble'} {'above' if delta >= 0 else 'below'} the"
            f" baseline's (its own SVM decisions) by {fmt(abs(delta))}; macro-F1 {fmt(m['f1_macro'])} against"
            f" {fmt(base['f1_macro'])}."
        )
    if oof := m.get("out_of_fold"):
        text += (
            f" Out of fold (the ensemble's, oof_predictions.parquet): micro-F1 {fmt(oof['f1_micro'])}, macro-F1"
            f" {fmt(oof['f1_macro'])}, subset accuracy {fmt(figure(oof, 'subset_accuracy'))}."
        )
    return text


def per_topic_section(run: dict[str, Any]) -> Section:
    """Multi-label: each topic's precision, recall, F1, support, missed and false texts, sorted by support."""
    m = run["metrics"]
    ens, base, blend = m.get("ensemble", m), m.get("baseline"), _blend(m)
    headers = ["topic", "support", "precision", "recall", "F1", "missed", "false", "threshold"]
    headers += (["ensemble F1"] if blend else []) + (["baseline F1"] if base else [])
    table = Table(headers, [], tuple(range(1, len(headers))))
    order = sorted(range(len(m["per_class"])), key=lambda i: (-m["per_class"][i]["support"], m["per_class"][i]["name"]))
    for i in order:
        c = m["per_class"][i]
        table.rows.append(
            [
                c["name"],
                c["support"],
                fmt(c["precision"]),
                fmt(c["recall"]),
                fmt(c["f1"]),
                c["missed"],
                c["false"],
                f"{m['decision']['thresholds'][i]:.2f}",
            ]
            + ([fmt(ens["per_class"][i]["f1"])] if blend else [])
            + ([fmt(base["per_class"][i]["f1"])] if base else [])
        )
    note = (
        "Missed: test texts with the topic that the predictor did not give it (false negatives); false: texts given "
        "the topic without having it (false positives)."
    )
    return "Per topic", [table, note, Figure("f1_vs_support.png", "Per-topic F1 against the number of test texts.")]


def errors_section(run: dict[str, Any]) -> Section:
    """Multi-label: the topic pairs most often predicted for each other (a true topic missed on a text that got
    the other instead)."""
    m = run["metrics"]
    pairs = Table(
        ["true topic (missed)", "predicted instead", "texts"],
        [[p["true"], p["predicted"], p["texts"]] for p in m["confused_pairs"]],
        (2,),
    )
    return "Confused topics", [
        "Topic pairs most often predicted for each other: on each counted text the first topic was missed and the "
        "second given without being true.",
        pairs if pairs.rows else "none: no text had a topic missed and another given in its place.",
    ]


def folds_section(run: dict[str, Any]) -> Section:
    """The seed's section 5: each fold's figures and nodes, the training curves, where each fold's time went."""
    m, monitor = run["metrics"], R.NAMES[monitor_of(run["config"])]
    folds, ens = m["folds"], m.get("ensemble", m)
    acc = "subset_accuracy" if m.get("task") == "multi" else "accuracy"  # the val_ figures: at the best epoch
    table = Table(
        [
            "fold",
            f"best epoch (by val {monitor})",
            "epochs run",
            f"val {R.NAMES[acc]}",
            "val weighted F1",
            "val macro F1",
            "test weighted F1 alone",
            "restarts",
            "workers",
            "node(s)",
        ],
        [
            [
                f["fold"],
                f["best_epoch"],
                f["epochs_run"],
                fmt(figure(f, "val_" + acc)),
                fmt(f["val_f1_weighted"]),
                fmt(f["val_f1_macro"]),
                fmt(f["test_f1_weighted"]),
                len(f.get("restarts", [])),
                ", ".join(map(str, f.get("worker_counts") or [f.get("workers", 1)])),  # two: a resume changed them
                # Ray's node ids, shortened as the dashboard shows them: every node the fold's workers trained on
                ", ".join(n[:12] for n in f.get("node_ids") or [f.get("node_id") or "n/a"]),
            ]
            for f in folds
        ],
        (0, 1, 2, 3, 4, 5, 6, 7, 8),
    )
    key, name = ("f1_micro", "micro-F1") if m.get("task") == "multi" else ("f1_weighted", "weighted F1")
    if m.get("task") == "multi":  # micro-F1 beside the table's weighted F1: the multi-label figure
        table.headers[4:4] = ["val micro-F1"]
        table.headers.insert(8, "test micro-F1 alone")
        table.numeric = tuple(range(11))
        for row, f in zip(table.rows, folds):
            row[4:4] = [fmt(f["val_f1_micro"])]
            row.insert(8, fmt(f["test_f1_micro"]))
    note = (
        f"Each fold keeps the model of its best epoch, the one of its best validation {monitor} (train.monitor); "
        f"the val figures are that epoch's. The folds' mean validation {name} at their best epochs "
        f"{fmt(np.mean([f['val_' + key] for f in folds]))}; the ensemble's test {name} {fmt(ens[key])} against "
        f"{fmt(max(f['test_' + key] for f in folds))} for the best single fold."
    )
    if m.get("predictor") == "student":
        note = 'The student is the one row ("fold 0"): validation on its held-out slice of the training split.'
    curves = Figure(
        "training_curves.png",
        f"Training curves: loss and validation {monitor} per epoch, one colour per fold.",
    )
    time_note = (
        "Where each fold's time went, summed over its epochs: set-up (the model built and moved to its device, "
        "a checkpoint loaded; once per worker start), training steps, validation, writing checkpoints "
        "(weights, optimizer state, best model) and reporting them into Ray storage (the last epoch's report is "
        "not counted: it happens after its own checkpoint is written). Throughput is training examples and "
        "real (non-pad) tokens per second of training time, summed over a fold's workers (its rank 0's times)."
    )
    return "Folds", [table, note, curves, _time_table(folds), time_note]


def _time_table(folds: list[dict[str, Any]]) -> Table:
    return Table(
        [
            "fold",
            "wall",
            "set-up",
            "training",
            "validation",
            "checkpoint write",
            "checkpoint report",
            "examples/s",
            "tokens/s",
            "peak GPU memory",
        ],
        [
            [
                f["fold"],
                duration(f.get("wall_s", f["train_s"])),
                *(_seconds(f.get(k)) for k in ("setup_s", "train_s", "val_s", "checkpoint_s", "report_s")),
                _number(f.get("examples_per_s"), ".1f"),
                _number(f.get("tokens_per_s"), ",.0f"),
                "n/a" if f.get("peak_gpu_gib") is None else f"{f['peak_gpu_gib']:.2f} GiB",
            ]
            for f in folds
        ],
        (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    )


def per_class_section(run: dict[str, Any]) -> Section:
    """Each class's precision, recall, F1 and support (and the ensemble's and the baseline's F1 beside them)."""
    m = run["metrics"]
    ens, base, blend = m.get("ensemble", m), m.get("baseline"), _blend(m)
    headers = ["class", "precision", "recall", "F1", "support"]
    headers += (["ensemble F1"] if blend else []) + (["baseline F1"] if base else [])
    table = Table(headers, [], tuple(range(1, len(headers))))
    for i, c in enumerate(m["per_class"]):
        table.rows.append(
            [c["name"], fmt(c["precision"]), fmt(c["recall"]), fmt(c["f1"]), c["support"]]
            + ([fmt(ens["per_class"][i]["f1"])] if blend else [])
            + ([fmt(base["per_class"][i]["f1"])] if base else [])
        )
    return "Per class", [table, Figure("f1_vs_support.png", "Per-class F1 against the number of test examples.")]


def confusion_section(run: dict[str, Any]) -> Section:
    """The confusion matrix and the most confused pairs."""
    m = run["metrics"]
    pairs = Table(
        ["true class", "predicted as", "count", "share of the true class"],
        [
            [t, p, n, f"{share:.1%}"]
            for t, p, n, share in confused_pairs(np.array(m["confusion_matrix"]), m["label_names"])
        ],
        (2, 3),
    )
    caption = "Confusion matrix: rows are true classes, columns predictions; colour is the share of the row."
    return "Confusion", [
        Figure("confusion_matrix.png", caption),
        "Most confused pairs (largest off-diagonal cells):",
        pairs if pairs.rows else "none: every test text was classified correctly.",
    ]


def setup_section(run: dict[str, Any]) -> Section:
    """Where the data came from, how the folds computed and on what, and the preprocessing steps."""
    m, cfg, prov = run["metrics"], run["config"], run["provenance"]
    dc, tc, folds = cfg["data"], cfg["train"], m["folds"]
    setup = Table(
        ["", ""],
        [
            ["data source", f"{prov.get('source', dc['source'])}: {prov.get('path', dc.get('path') or '')}"],
            ["text mode", str(prov.get("text_mode", dc.get("text", "")))],
            ["checksums", str(prov.get("checksums", "n/a"))],
            ["split", json.dumps(prov["split"]) if "split" in prov else "n/a"],
            ["model", cfg["model"]["name"]],
            [
                "profile",
                f"{tc['profile']}; precision {folds[0].get('precision', tc['precision'])}, gradient checkpointing "
                f"{'on' if folds[0].get('gradient_checkpointing') else 'off'}, max_length {dc['max_length']}",
            ],
            [
                "training",
                f"lr {tc['lr']}, batch {tc['batch_size']} x {tc['grad_accum']}, up to {tc['max_epochs']} epochs, "
                f"patience {tc['patience']}, focal gamma {tc['focal_gamma']}, label smoothing {tc['label_smoothing']}",
            ],
            [
                "hardware",
                "; ".join(sorted({f"{f.get('device', '?')} on {f.get('host', '?')}" for f in folds}))
                + (f"; Ray cluster {json.dumps(m['cluster'])}" if "cluster" in m else ""),
            ],
            ["wall time", wall_time(m)],
        ],
    )
    steps = Table(
        ["step", "parameters", "removed train", "removed test", "train after", "test after"],
        [
            [
                s["step"],
                _step_params(s["params"]),
                s["removed"]["train"],
                s["removed"]["test"],
                s["after"]["train"],
                s["after"]["test"],
            ]
            for s in prov.get("steps", [])
        ],
        (2, 3, 4, 5),
    )
    return "Setup and provenance", [setup, "Preprocessing steps, in order:", steps]


def _step_params(params: dict[str, Any]) -> str:
    """A preprocessing step's parameters in one cell: long lists (dropped classes, rows, ids) counted or cut."""
    text = ", ".join(f"{k}={v}" for k, v in params.items() if k not in ("dropped_classes", "rows", "ids"))
    if "dropped_classes" in params:
        text += f", dropped {len(params['dropped_classes'])} classes"
    for file, rows in params.get("rows", {}).items():
        if rows:
            text += f", {Path(file).name} rows {', '.join(map(str, rows[:10]))}{' ...' if len(rows) > 10 else ''}"
    dropped = [i for ids in params.get("ids", {}).values() for i in ids]
    if dropped:
        text += f", ids {', '.join(dropped[:10])}{' ...' if len(dropped) > 10 else ''}"
    return text


def config_section(run: dict[str, Any]) -> Section:
    """The resolved config, as `--config` takes it back."""
    return "Config", [
        "The resolved config of this run (`reuters-ray cv --config` takes it back):",
        Code(yaml.safe_dump(run["config"], sort_keys=True)),
    ]


# --- rendering ------------------------------------------------------------------------------------------------


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for name, blocks in sections:
        out += [f"## {name}", ""]
        for b in blocks:
            if isinstance(b, Table):
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---:" if i in b.numeric else "---" for i in range(len(b.headers))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            elif isinstance(b, Figure):
                out.append(f"![{b.caption}]({b.file})")
            elif isinstance(b, Code):
                out += ["```yaml", b.text.rstrip(), "```"]
            else:
                out.append(b)
            out.append("")
    return "\n".join(out)


CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a; max-width: 1100px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d5dbe1; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e8ec; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:hover { background: #f8fafb; } figure { margin: 1em 0; } figure img { height: auto; border: 1px solid #e4e8ec; }
figcaption { color: #58636e; font-size: 0.85em; } pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
code { background: #f0f2f4; padding: 0 0.25em; border-radius: 3px; } pre code { background: none; padding: 0; }
nav a { margin-right: 1em; } figure img { max-width: min(100%, 950px); }
"""


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` in a paragraph, as HTML (the rest escaped)."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, sections: list[Section], run_dir: Path) -> str:
    def anchor(name: str) -> str:
        return name.lower().replace(" ", "-")

    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>" + "".join(f'<a href="#{anchor(n)}">{html.escape(n)}</a>' for n, _ in sections) + "</nav>",
    ]
    for name, blocks in sections:
        out.append(f'<h2 id="{anchor(name)}">{html.escape(name)}</h2>')
        for b in blocks:
            if isinstance(b, Table):

                def cls(i: int, numeric: tuple[int, ...] = b.numeric) -> str:
                    return ' class="num"' if i in numeric else ""

                head = "".join(f"<th{cls(i)}>{html.escape(str(h))}</th>" for i, h in enumerate(b.headers))
                head = f"<thead><tr>{head}</tr></thead>" if any(b.headers) else ""  # a key-value table has none
                body = "".join(
                    "<tr>" + "".join(f"<td{cls(i)}>{html.escape(str(c))}</td>" for i, c in enumerate(row)) + "</tr>"
                    for row in b.rows
                )
                out.append(f"<table>{head}<tbody>{body}</tbody></table>")
            elif isinstance(b, Figure):
                data = base64.b64encode((run_dir / b.file).read_bytes()).decode()
                out.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.caption)}">'
                    f"<figcaption>{html.escape(b.caption)}</figcaption></figure>"
                )
            elif isinstance(b, Code):
                out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
            else:
                out.append(f"<p>{_inline(b)}</p>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir: Path) -> list[Path]:
    """Writes the figures, report.html and report.md (last) into `run_dir`; returns their paths."""

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    m = run["metrics"]
    predictor = m.get("predictor") if m.get("predictor") in ("blend", "student") else "ensemble"
    written = []
    multi = m.get("task") == "multi"  # no confusion matrix: a text's topics are not one cell
    for name, draw in zip(
        FIGURES,
        (
            lambda p: confusion_figure(np.array(m["confusion_matrix"]), m["label_names"], p, predictor),
            lambda p: f1_support_figure(m["per_class"], (m.get("baseline") or {}).get("per_class"), p, predictor),
            lambda p: curves_figure(run["history"], p, monitor_of(run["config"])),
        ),
    ):
        if multi and name == "confusion_matrix.png":
            continue
        png = io.BytesIO()
        draw(png)
        write_atomic(run_dir / name, png.getvalue())
        written.append(run_dir / name)
    title, sections = build_sections(run)
    write_atomic(run_dir / "report.html", render_html(title, sections, run_dir))
    write_atomic(run_dir / "report.md", render_markdown(title, sections))
    return [*written, run_dir / "report.html", run_dir / "report.md"]
