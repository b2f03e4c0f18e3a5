"""The peer: the k-fold loop a careful user writes by hand around Hugging Face's Trainer (what transformers#15381
tells people to do), on a reuters-ray config's exact data sample, model, max_length, epochs, learning rate, batch
size and seed. bench/peer.py runs it as a whole process beside `jobs/cv.py` and compares.

    .venv/bin/python bench/peer_trainer.py --config configs/quick-cpu.yaml [--data.path ...]

scikit-learn's StratifiedKFold over the training split; per fold a fresh AutoModelForSequenceClassification, Trainer
with dynamic padding (DataCollatorWithPadding), AdamW, a cosine schedule with 15% warm-up, an evaluation and a
checkpoint each epoch and the best epoch by validation weighted F1 (load_best_model_at_end), plain cross-entropy;
the folds one after another (all cores each), the test logits of the fold models averaged at the end. bf16 on a GPU
that has it. The sample is reuters-ray's own `prepare` of the config's data section, so both sides see the same
texts. Prints one line: `PEER {json}` with the test accuracy, weighted and macro F1 of the fold ensemble.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from reuters_ray import load_config
from reuters_ray.data.preprocess import prepare
from reuters_ray.fold.models import packaged_minilm_path

WARMUP_RATIO = 0.15


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a reuters-ray run config (YAML); unset: the defaults (the full recipe)")
    p.add_argument("--data.path", dest="data_path", help="the data folder or file, overriding the config's")
    p.add_argument("--model.name", dest="model_name", help="the model, overriding the config's")
    p.add_argument(
        "--bf16-on-cpu",
        action="store_true",
        help="Trainer's bf16=True on CPU too (what a user would have to know to set; reuters-ray does it on AMX CPUs)",
    )
    return p.parse_args(argv)


class Texts(torch.utils.data.Dataset):
    """Tokenized texts (a list of dicts, as Trainer takes them) with their labels."""

    def __init__(self, encodings, labels):
        self.encodings, self.labels = encodings, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.encodings["input_ids"][i], "labels": int(self.labels[i])}


def figures(labels, logits) -> dict[str, float]:
    pred = np.asarray(logits).argmax(-1)
    return {
        "accuracy": accuracy_score(labels, pred),
        "f1_weighted": f1_score(labels, pred, average="weighted", zero_division=0),
        "f1_macro": f1_score(labels, pred, average="macro", zero_division=0),
    }


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    overrides = {"data": {"path": args.data_path}} if args.data_path else {}
    if args.model_name:
        overrides["model"] = {"name": args.model_name}
    cfg = load_config(args.config, **overrides)
    name = str(packaged_minilm_path()) if cfg.model.name == "minilm-offline" else cfg.model.name
    ds = prepare(cfg.data)
    tokenizer = AutoTokenizer.from_pretrained(name)
    encode = lambda texts: tokenizer(texts, truncation=True, max_length=cfg.data.max_length)  # noqa: E731
    train_enc, test_enc = encode(ds.train_texts), encode(ds.test_texts)
    labels, test_labels = np.asarray(ds.train_labels), np.asarray(ds.test_labels)
    test = Texts(test_enc, test_labels)
    cuda = torch.cuda.is_available()
    bf16 = (cuda and torch.cuda.is_bf16_supported()) or (not cuda and args.bf16_on_cpu)
    folds = StratifiedKFold(n_splits=cfg.cv.folds, shuffle=True, random_state=cfg.train.seed)
    test_logits = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (train_idx, val_idx) in enumerate(folds.split(np.zeros(len(labels)), labels)):
            subset = lambda idx: Texts({"input_ids": [train_enc["input_ids"][i] for i in idx]}, labels[idx])  # noqa: E731
            model = AutoModelForSequenceClassification.from_pretrained(
                name, num_labels=ds.num_classes, hidden_dropout_prob=cfg.model.hidden_dropout
            )
            trainer = Trainer(
                model=model,
                args=TrainingArguments(
                    output_dir=f"{tmp}/fold_{k}",
                    num_train_epochs=cfg.train.max_epochs,
                    learning_rate=cfg.train.lr,
                    per_device_train_batch_size=cfg.train.batch_size,
                    per_device_eval_batch_size=64,
                    gradient_accumulation_steps=cfg.train.grad_accum,
                    lr_scheduler_type="cosine",
                    warmup_steps=WARMUP_RATIO,  # transformers 5: a float in [0, 1) is a share of the steps
                    weight_decay=0.01,
                    eval_strategy="epoch",
                    save_strategy="epoch",
                    save_total_limit=1,
                    load_best_model_at_end=True,
                    metric_for_best_model="f1_weighted",
                    seed=cfg.train.seed,
                    bf16=bf16,
                    use_cpu=not cuda,
                    report_to="none",
                    logging_strategy="no",
                    disable_tqdm=True,
                ),
                train_dataset=subset(train_idx),
                eval_dataset=subset(val_idx),
                data_collator=DataCollatorWithPadding(tokenizer),
                compute_metrics=lambda p: figures(p.label_ids, p.predictions),
            )
            trainer.train()
            test_logits.append(trainer.predict(test).predictions.astype(np.float64))
            print(f"fold {k}: done at {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    ensemble = figures(test_labels, np.mean(test_logits, axis=0))
    print("PEER " + json.dumps({**ensemble, "wall_s": time.perf_counter() - started, "n_test": len(test_labels)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
