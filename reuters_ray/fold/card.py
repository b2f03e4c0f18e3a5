"""Model cards: the README.md of a fold model, a student and an export, in Hugging Face's model-card format (YAML
metadata with a `model-index` of test figures, then Markdown), so a model folder pushed to a model hub explains
itself. Built with huggingface_hub's ModelCardData and EvalResult (the hub's own schema); `ModelCard.load` reads
them back. No torch, no Ray.

    card_text(title=..., base_model=..., labels=[...], data={...}, results=[CardFigure(...)], body="...") -> str
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reuters_ray.rows import NAMES

CARD = "README.md"
# data.source -> (the hub's dataset id, its name): Reuters-21578 is on the hub; a user's table is not
DATASETS = {"reuters21578": ("reuters21578", "Reuters-21578"), "keras": ("reuters21578", "Reuters-21578 (Keras)")}
METRIC_TYPES = {  # our figure's key -> (the hub's metric type, its config)
    "accuracy": ("accuracy", None),
    "subset_accuracy": ("accuracy", "subset"),
    "f1_weighted": ("f1", "weighted"),
    "f1_macro": ("f1", "macro"),
    "f1_micro": ("f1", "micro"),
    "f1_samples": ("f1", "samples"),
    "hamming_loss": ("hamming_loss", None),
}


@dataclass(frozen=True)
class CardFigure:
    """One test (or validation) figure of the card's model: its key (NAMES), value, and the split it was taken on."""

    key: str
    value: float
    split: str = "test"


def hub_model_id(name: str) -> str | None:
    """`name` when it reads as a Hugging Face hub id (owner/name) and is no local folder, else None."""
    if Path(name).exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return None
    return name


def card_metadata(*, title: str, base_model: str, data: dict[str, Any], results: list[CardFigure]) -> str:
    """A model card's YAML block (between --- lines): library transformers, text classification, the base model
    when it is a hub id, tags, and a model-index of `results` named `title` on the data set of `data` (the run's
    data section of its config)."""
    from huggingface_hub import EvalResult, ModelCardData

    source = data.get("source", "table")
    dataset_type, dataset_name = DATASETS.get(source, (source, f"{source} ({Path(str(data.get('path'))).name})"))
    evals = [
        EvalResult(
            task_type="text-classification",
            dataset_type=dataset_type,
            dataset_name=dataset_name,
            dataset_split=f.split,
            metric_type=METRIC_TYPES[f.key][0],
            metric_config=METRIC_TYPES[f.key][1],
            metric_name=NAMES[f.key],
            metric_value=round(float(f.value), 6),
        )
        for f in results
    ]
    meta = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        base_model=hub_model_id(base_model),
        tags=["reuters-ray", "text-classification", "multi-label" if data.get("task") == "multi" else "single-label"],
        model_name=title,
        eval_results=evals or None,
    )
    return f"---\n{meta.to_yaml()}\n---\n\n"


def card_text(
    *, title: str, base_model: str, labels: list[str], data: dict[str, Any], results: list[CardFigure], body: str
) -> str:
    """A model card: card_metadata, then `body` under a `# title` heading, the labels and the data's provenance.
    `data`: the run's data section of its config and its fingerprint (sha256)."""
    shown = ", ".join(f"`{x}`" for x in labels)
    source = data.get("source", "table")
    provenance = [
        f"- source: `{source}`" + (f", split `{data['split']}`" if source == "reuters21578" else ""),
        f"- data fingerprint (SHA-256 of the texts and labels): `{data.get('sha256', 'unknown')}`",
        f"- base model: `{base_model}`",
    ]
    return (
        card_metadata(title=title, base_model=base_model, data=data, results=results)
        + f"# {title}\n\n{body.strip()}\n\n## Labels ({len(labels)})\n\n{shown}\n\n## Data\n\n"
        + "\n".join(provenance)
        + "\n\nMade by reuters-ray (k-fold cross-validated BERT on Ray).\n"
    )


def predictor_figures(metrics: dict[str, Any]) -> list[CardFigure]:
    """The test figures at metrics.json's top level (the predictor's: a blend, an ensemble or a student)."""
    return [CardFigure(k, metrics[k]) for k in TEST_KEYS[metrics.get("task", "single")] if k in metrics]


TEST_KEYS = {
    "single": ("accuracy", "f1_weighted", "f1_macro"),
    "multi": ("f1_micro", "f1_macro", "f1_samples", "subset_accuracy", "hamming_loss"),
}


def predictor_table(metrics: dict[str, Any]) -> str:
    """A Markdown table of a run's test figures (metrics.json): the predictor's (what `reuters-ray predict`, `serve`
    and the export answer with), and beside it the fold ensemble's and the linear model's where the run has them."""
    keys = TEST_KEYS[metrics.get("task", "single")]
    part = metrics.get("predictor", "ensemble")
    rows = [(f"the predictor ({part})", metrics)]
    rows += [("the fold ensemble", metrics["ensemble"])] if part != "ensemble" and "ensemble" in metrics else []
    rows += [("the linear model (TF-IDF + linear SVM)", metrics["baseline"])] if "baseline" in metrics else []
    head = "| test figures | " + " | ".join(NAMES[k] for k in keys) + " |"
    lines = [head, "|" + "---|" * (len(keys) + 1)]
    lines += ["| " + name + " | " + " | ".join(_figure(m.get(k)) for k in keys) + " |" for name, m in rows]
    return "\n".join(lines)


def _figure(value) -> str:
    return "" if value is None else f"{value:.4f}"


def fold_card(metrics: dict[str, Any], config: dict[str, Any], fingerprint: dict[str, Any], k: int) -> str:
    """The model card of fold k's model (models/fold_<k>/README.md): its own test figure(s) and best validation
    figures in the model-index; the body says it is one fold of the ensemble and what the run's predictor is."""
    row = next(r for r in metrics["folds"] if r["fold"] == k)
    multi = metrics.get("task") == "multi"
    results = [CardFigure(key, row[f"test_{key}"]) for key in ("f1_weighted", "f1_micro") if f"test_{key}" in row]
    results += [
        CardFigure(key, row[f"val_{key}"], f"validation (fold {k})")
        for key in TEST_KEYS["single"]
        if f"val_{key}" in row and not multi
    ]
    n = len(metrics["folds"])
    blend = metrics.get("predictor") == "blend"
    served = (
        f"the **blend**: {metrics['blend']['weight']:.2f} x the fold ensemble's probabilities + "
        f"{1 - metrics['blend']['weight']:.2f} x the linear model's"
        if blend
        else "the fold ensemble alone"
    )
    body = (
        f"Fold {k} of run `{metrics['run']}`: one of the {n} models of a {n}-fold stratified cross-validation, trained "
        f"on the other folds' rows and stopped on its own validation fold (best epoch {row['best_epoch']}). The run's "
        f"ensemble averages the {n} fold models' logits. **This model alone is not what the run serves**: the "
        f"run's predictor (`reuters-ray predict`, `serve`, the export) is {served}.\n\n{predictor_table(metrics)}\n\n"
        f"max_length {metrics['max_length']} tokens; the tokenizer is in this folder."
    )
    return card_text(
        title=f"{metrics['run']} fold {k}",
        base_model=config["model"]["name"],
        labels=metrics["label_names"],
        data={**config["data"], **fingerprint},
        results=results,
        body=body,
    )


def student_card(metrics: dict[str, Any], config: dict[str, Any], fingerprint: dict[str, Any]) -> str:
    """The model card of a student run's model (models/student/README.md): it is the run's predictor; its test
    figures beside its teacher's."""
    t = metrics["teacher"]
    keys = TEST_KEYS[metrics.get("task", "single")]
    table = "\n".join(
        [
            "| test figures | " + " | ".join(NAMES[k] for k in keys) + " |",
            "|" + "---|" * (len(keys) + 1),
            "| this student | " + " | ".join(_figure(metrics.get(k)) for k in keys) + " |",
            f"| its teacher ({t['predictor']}) | " + " | ".join(_figure(t.get(k)) for k in keys) + " |",
        ]
    )
    body = (
        f"The student of run `{t['run']}` ({t['folds']} fold models of `{t['model']}`, predictor: {t['predictor']}): "
        f"one model trained on the true labels and on the teacher's out-of-fold probabilities (knowledge "
        f"distillation, Hinton et al. 2015; temperature {config['distill']['temperature']}, alpha "
        f"{config['distill']['alpha']}). **This model is the student run's predictor**: `reuters-ray predict` on "
        f"the run answers with it alone.\n\n{table}\n\nmax_length {metrics['max_length']} tokens; the tokenizer is "
        "in this folder."
    )
    return card_text(
        title=f"{metrics['run']}",
        base_model=config["model"]["name"],
        labels=metrics["label_names"],
        data={**config["data"], **fingerprint},
        results=predictor_figures(metrics),
        body=body,
    )
