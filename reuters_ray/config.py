"""Typed configuration: dataclasses with commented defaults, built from YAML or `key=value` flags.

Unknown keys and values of the wrong type are errors that name the key, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reuters_ray.errors import ConfigError

# Environment variable pointing at a local Reuters-21578 folder or archive (used when `path` is unset).
REUTERS_PATH_ENV = "REUTERS21578_PATH"


@dataclass
class DataConfig:
    # Where the texts come from: "reuters21578" (the raw SGML distribution), "keras" (Keras's
    # reuters.npz, needs the `keras` extra to download) or "table" (your own CSV/Parquet/JSONL).
    source: str = "reuters21578"
    # reuters21578: a folder of reut2-*.sgm or reuters21578.tar.gz; unset -> $REUTERS21578_PATH, else download.
    # table: the training file (or the whole file, split by test_size).
    path: str | None = None
    # "single": one label per text (the seed's task). "multi": a set of labels per text (Reuters' topics, tags):
    # sigmoid outputs, thresholds chosen out of fold, micro-/macro-F1 (docs/data.md, "Multi-label").
    task: str = "single"
    # reuters21578 only: "keras" (Keras's Reuters-46 split, the seed's) or "modapte" (LEWISSPLIT TRAIN/TEST of the
    # wires with TOPICS="YES": the standard benchmark split; with task multi every topic of a wire is kept).
    split: str = "keras"
    # table only, task multi, CSV/TSV: what separates the labels of one cell ("sport|politics"). JSONL and Parquet
    # cells hold lists.
    label_delimiter: str = "|"
    # reuters21578 only. "title+body": each wire's own title and body (correct). "keras": the next
    # <BODY> after the wire's <TOPICS>, as Keras built its data set (975 wires get a later wire's body).
    text: str = "title+body"
    # Downloads land here (default ~/.cache/reuters-ray, or Keras's own cache for source "keras").
    cache_dir: str | None = None
    # table only: a separate test file; unset -> a seeded stratified split of `path` by test_size.
    test_path: str | None = None
    text_column: str = "text"  # table only: the column holding the text
    label_column: str = "label"  # table only: the column holding the label (read as written: '001' stays '001')
    # table only, CSV/TSV: the delimiter ("\t" or "tab" for a tab). Unset: the one whose split of the header holds
    # text_column and label_column (the file type's own first, then ; , tab |); the run says which it used.
    delimiter: str | None = None
    test_size: float = 0.2  # table without test_path: the held-out share
    # Seed of the train/test split: 113 is Keras's, which the reuters21578 source reproduces.
    split_seed: int = 113
    # keras only: keep the most frequent words, others decode to [UNK] (10000 gives the seed's texts).
    keras_num_words: int | None = 10000
    # Drop classes with fewer training examples than this (the seed: 50 -> 18 Reuters topics).
    min_samples: int = 50
    # Drop texts with fewer words than this after cleaning (the seed: 3 whitespace tokens). In scripts written
    # without spaces (Chinese, Japanese, Thai, ...) each character counts as a word, as BERT's tokenizer splits them.
    min_tokens: int = 3
    # Tokens per text after WordPiece, [CLS] and [SEP] included; longer texts are truncated.
    max_length: int = 300
    # Tokenizer: a hub id, a local folder, or an offline alias (see reuters_ray.fold.models). Unset: the model's own.
    tokenizer: str | None = None
    # Stratified samples of the (preprocessed) splits, seeded by split_seed, for quick runs. Unset: everything.
    train_sample: int | None = None
    test_sample: int | None = None

    def __post_init__(self) -> None:
        if self.delimiter in ("\\t", "tab"):  # a tab is hard to type in a flag
            self.delimiter = "\t"
        checks = [
            (self.source in ("reuters21578", "keras", "table"), "source", "one of reuters21578, keras, table"),
            (self.task in ("single", "multi"), "task", "single or multi"),
            (self.split in ("keras", "modapte"), "split", "keras or modapte"),
            (
                self.split == "keras" or self.source == "reuters21578",
                "split",
                "keras unless data.source is reuters21578 (modapte is a split of the raw Reuters-21578 files)",
            ),
            (
                self.task == "single" or self.source != "keras",
                "task",
                "single with the keras source (Keras's reuters.npz has one topic per wire; for several use "
                "data.source reuters21578 with data.split modapte)",
            ),
            (
                len(self.label_delimiter) >= 1 and not set(self.label_delimiter) & set('"\r\n'),
                "label_delimiter",
                "one or more characters other than quotes and line breaks",
            ),
            (self.text in ("title+body", "keras"), "text", "title+body or keras"),
            (0.0 < self.test_size < 1.0, "test_size", "between 0 and 1"),
            (self.min_samples >= 1, "min_samples", ">= 1"),
            (self.min_tokens >= 0, "min_tokens", ">= 0"),
            (self.max_length >= 8, "max_length", ">= 8 (room for [CLS], [SEP] and some text)"),
            (self.keras_num_words is None or self.keras_num_words > 3, "keras_num_words", "> 3 or unset"),
            (self.train_sample is None or self.train_sample > 0, "train_sample", "> 0 or unset"),
            (self.test_sample is None or self.test_sample > 0, "test_sample", "> 0 or unset"),
            (
                self.delimiter is None or (len(self.delimiter) == 1 and self.delimiter not in '"\r\n'),
                "delimiter",
                "one character other than a quote or a line break (\\t or tab for a tab), or unset",
            ),
        ]
        _check(self, "data", checks)

    def resolved_path(self) -> str | None:
        """The data path after the environment fallback (reuters21578 only)."""
        if self.path is None and self.source == "reuters21578":
            return os.environ.get(REUTERS_PATH_ENV) or None
        return self.path


@dataclass
class ModelConfig:
    # A hub id, a local Hugging Face folder, or an alias: minilm-offline (pretrained MiniLM-L6 shipped in a pip
    # package), small-bert-random (Small BERT's architecture, random init), tiny-bert-random (L-2/H-64, tests).
    name: str = "google/bert_uncased_L-4_H-512_A-8"
    hidden_dropout: float = 0.3  # the seed's; high for a 4-layer model, it fights overfitting on 8k wires
    attention_dropout: float = 0.1  # dropout on attention probabilities
    # Recompute activations in the backward pass: less memory, about a third more compute. Unset: the profile
    # decides (seed: on; default: on only on a GPU with under 8 GiB for this fold, off on CPU).
    gradient_checkpointing: bool | None = None
    # Keep only the encoder's first N transformer layers (a smaller, faster model: a distilled student's usual
    # choice; the top layers dropped, which kept the most of BERT's GLUE figures among the layer choices compared by
    # Sajjad et al. 2023, "On the effect of dropping layers of pre-trained transformer models"). Unset: all.
    layers: int | None = None

    def __post_init__(self) -> None:
        _check(
            self,
            "model",
            [
                (0.0 <= self.hidden_dropout < 1.0, "hidden_dropout", "in [0, 1)"),
                (0.0 <= self.attention_dropout < 1.0, "attention_dropout", "in [0, 1)"),
                (self.layers is None or self.layers >= 1, "layers", ">= 1 or unset"),
            ],
        )


@dataclass
class Profile:
    """How a fold computes, not what: both profiles make the same updates from the same examples."""

    pad_to: str  # "max_length" (every batch padded to max_length) or "longest" (to the batch's longest, x8)
    group_by_length: bool  # batches of similar lengths (random within buckets), so padding stays small
    merge_accumulation: bool  # one micro-batch of batch_size x grad_accum instead of grad_accum small ones
    gradient_checkpointing: bool | None  # None: decided by memory (see decide_checkpointing)
    fp16_on_cuda: bool  # the seed's T4 had no bf16; its profile keeps fp16 everywhere
    fused_adamw: bool  # torch's fused AdamW step (CUDA and CPU kernels): the same update, 1.35x a CPU step's speed


PROFILES = {
    "seed": Profile(
        pad_to="max_length",
        group_by_length=False,
        merge_accumulation=False,
        gradient_checkpointing=True,
        fp16_on_cuda=True,
        fused_adamw=False,
    ),
    "default": Profile(
        pad_to="longest",
        group_by_length=True,
        merge_accumulation=True,
        gradient_checkpointing=None,
        fp16_on_cuda=False,
        fused_adamw=True,
    ),
}


MONITORS = ("f1_weighted", "f1_macro", "f1_micro", "accuracy")


def monitor_key(monitor: str | None, task: str | None) -> str:
    """The key, in the validation figures (reuters_ray.rows.NAMES), of what early stopping follows: train.monitor
    `monitor`, unset: f1_weighted for data.task single, f1_micro for multi; a multi-label run's "accuracy" is its
    subset accuracy, keyed subset_accuracy."""
    multi = task == "multi"
    if monitor is None:
        return "f1_micro" if multi else "f1_weighted"
    return "subset_accuracy" if multi and monitor == "accuracy" else monitor


@dataclass
class TrainConfig:
    # "seed": the seed report to the letter (pad every text to max_length, gradient checkpointing, fp16 on
    # CUDA). "default": the same math, padded per batch and in bf16 where the GPU has it.
    profile: str = "default"
    lr: float = 3e-5  # peak learning rate (the seed's, fixed, no search)
    weight_decay: float = 0.01  # AdamW; never on biases and LayerNorm weights
    warmup_ratio: float = 0.15  # share of all optimizer steps spent warming up, then cosine decay to 0
    batch_size: int = 8  # micro-batch
    grad_accum: int = 4  # micro-batches per optimizer step: 8 x 4 = 32 examples per update
    max_epochs: int = 20  # upper bound; early stopping usually ends a fold sooner
    patience: int = 7  # early stopping: epochs without a gain of the monitored metric of more than min_delta
    # The early-stopping (and best-model) metric of validation: f1_weighted, f1_macro, f1_micro or accuracy (for
    # data.task multi: subset accuracy). Unset: f1_weighted for task single, f1_micro for task multi.
    monitor: str | None = None
    min_delta: float = 1e-4
    focal_gamma: float = 0.5  # focal loss focusing: 0 is plain (weighted, smoothed) cross-entropy
    label_smoothing: float = 0.05  # share of each target spread evenly over all classes
    max_grad_norm: float = 1.0  # as Hugging Face Trainer, which the seed used; 0 turns clipping off
    # auto: bf16 autocast where the GPU supports it, fp16 + GradScaler on older GPUs; on CPU bf16 autocast for the
    # training steps where the CPU has AMX bf16 matrix units (Intel Sapphire Rapids and later; the seed profile keeps
    # fp32), else fp32. Validation and prediction on CPU stay fp32, as the predictor and its exports answer.
    precision: str = "auto"
    seed: int = 42  # fold k trains with seed + k
    # Validation/ensemble batch (length-sorted, no gradients). Unset: 256 on a GPU, 16 on CPU, where small
    # batches ran faster (cache-sized; bench/inference.py).
    eval_batch_size: int | None = None
    keep_checkpoints: int = 5  # latest epoch checkpoints kept per fold; the best model is always kept
    # Write a resumable checkpoint every this many epochs, and always after the last. Each one holds the weights,
    # the optimizer state and the best model so far (about 440 MB for Small BERT); a resume replays the epochs
    # since the last one, so a larger value trades re-done epochs after a failure for less time writing.
    checkpoint_every: int = 1
    # And at most one every this many seconds of the fold's training (counted from its first step, then from the
    # last checkpoint); 0: every checkpoint_every epochs. Unset: 30 on a GPU, where an epoch of Small BERT takes about
    # 5 s and a checkpoint 0.6 s of it (docs/results.md), so a failure re-does at most about 30 s; 0 on CPU, where an
    # epoch is long next to its checkpoint.
    checkpoint_every_s: float | None = None
    # torch.compile the model's forward (dynamic shapes). Off until it is measured to pay off on a GPU (not yet:
    # docs/results.md, H100).
    compile: bool = False

    def __post_init__(self) -> None:
        _check(
            self,
            "train",
            [
                (self.profile in ("default", "seed"), "profile", "default or seed"),
                (self.lr > 0, "lr", "> 0"),
                (self.weight_decay >= 0, "weight_decay", ">= 0"),
                (0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "in [0, 1)"),
                (self.batch_size >= 1, "batch_size", ">= 1"),
                (self.grad_accum >= 1, "grad_accum", ">= 1"),
                (self.max_epochs >= 1, "max_epochs", ">= 1"),
                (self.patience >= 1, "patience", ">= 1"),
                (self.monitor in MONITORS + (None,), "monitor", "one of " + ", ".join(MONITORS) + ", or unset"),
                (self.min_delta >= 0, "min_delta", ">= 0"),
                (self.focal_gamma >= 0, "focal_gamma", ">= 0"),
                (0.0 <= self.label_smoothing < 1.0, "label_smoothing", "in [0, 1)"),
                (self.max_grad_norm >= 0, "max_grad_norm", ">= 0"),
                (self.precision in ("auto", "bf16", "fp16", "fp32"), "precision", "auto, bf16, fp16 or fp32"),
                (self.eval_batch_size is None or self.eval_batch_size >= 1, "eval_batch_size", ">= 1 or unset"),
                (self.keep_checkpoints >= 1, "keep_checkpoints", ">= 1"),
                (self.checkpoint_every >= 1, "checkpoint_every", ">= 1"),
                (
                    self.checkpoint_every_s is None or self.checkpoint_every_s >= 0,
                    "checkpoint_every_s",
                    ">= 0 or unset",
                ),
            ],
        )


@dataclass
class CVConfig:
    folds: int = 3  # stratified folds over the training split; one model each, ensembled on the test split
    # Run name: the folder in storage_path, and what makes a rerun resume. Unset: derived from the config.
    name: str | None = None
    # Where runs live: a local folder, or a URI Ray and pyarrow understand (s3://bucket/runs, gs://...).
    storage_path: str = "runs"
    # GPUs for each of a fold's workers: unset = 1 when the cluster has a GPU per worker, an equal share when it has
    # fewer, 0.01 of each card left to the ensemble (three one-worker folds share one GPU at 0.33 each and run at
    # once: share_of_gpu), 0 without GPUs. Set it to run folds one after another instead.
    gpus_per_fold: float | None = None
    # CPUs each of a fold's workers reserves (fractions let folds share cores). Unset: 1 on a cluster with GPUs (the
    # GPU does the work); without GPUs the nodes' CPUs shared by every fold worker at once, the largest share with
    # which they all fit (share_of_cpus: 3 folds on 2 cores 0.66 each, on 16 cores 5.33). All at once, each fold's
    # Ray Train start-up is paid together: on 2 cores three folds at once beat two and then one, or one by one
    # (docs/results.md, issue 45). A search's trials: 1, unless set.
    cpus_per_fold: float | None = None
    # Data-parallel workers per fold (Ray Train workers, gradients all-reduced: NCCL on GPUs, gloo on CPU), each with
    # cv.gpus_per_fold of a GPU and cv.cpus_per_fold CPUs, on any nodes; every batch is split evenly over them, so a
    # fold makes the same updates as with one worker (train.batch_size x grad_accum examples per step).
    workers_per_fold: int = 1
    max_failures: int = 2  # restarts of a fold whose worker dies; each continues from its last checkpoint
    baseline: bool = True  # also fit and score the TF-IDF + linear SVM baseline on the same split (seconds, CPU)
    # The run's predictor: w * the ensemble's probabilities + (1 - w) * the baseline's (calibrated), w chosen on
    # out-of-fold predictions, never on the test split (reuters_ray.scoring.blend). false: the seed's pure ensemble.
    blend: bool = True
    # data.task multi: a topic with at least this many training positives gets a threshold of its own, chosen on the
    # out-of-fold probabilities; the others share one global threshold chosen the same way (one number fitted on
    # every topic's rows: a topic with a handful of positives would overfit a threshold of its own).
    threshold_min_positives: int = 30
    # data.task multi: a text whose probabilities all fall below their thresholds still gets its most probable topic
    # (every Reuters wire of ModApte has one).
    at_least_one: bool = True

    def __post_init__(self) -> None:
        _check(
            self,
            "cv",
            [
                (self.folds >= 2, "folds", ">= 2"),
                (self.gpus_per_fold is None or self.gpus_per_fold >= 0, "gpus_per_fold", ">= 0 or unset"),
                (self.cpus_per_fold is None or self.cpus_per_fold > 0, "cpus_per_fold", "> 0 or unset"),
                (self.workers_per_fold >= 1, "workers_per_fold", ">= 1"),
                (self.max_failures >= 0, "max_failures", ">= 0"),
                (self.threshold_min_positives >= 1, "threshold_min_positives", ">= 1"),
                (
                    # a folder in storage_path, also inside a URI and on one line of the console: no path separators,
                    # no ? # % (a URI's), no control characters, no spaces at either end, not . or ..
                    self.name is None or folder_name(self.name),
                    "name",
                    "a folder name without / \\ ? # %, control characters or spaces at its ends (and not . or ..)",
                ),
            ],
        )


@dataclass
class DistillConfig:
    """A student run (`reuters-ray distill`): one model trained on the true labels and on a teacher run's predictor."""

    # The teacher: a finished run folder or storage URI (`reuters-ray distill --run`). Unset: not a student run.
    teacher: str | None = None
    # Softens the teacher's and the student's outputs in the soft-target loss (Hinton et al. 2015, "Distilling the
    # Knowledge in a Neural Network"); that loss is scaled by temperature^2 so its gradients keep their size.
    temperature: float = 2.0
    # The student's loss: alpha x the focal loss on the true labels + (1 - alpha) x the soft-target loss on the
    # teacher's out-of-fold probabilities.
    alpha: float = 0.5
    # Share of the training split held out (stratified, seeded by train.seed) for the student's early stopping and,
    # for data.task multi, its thresholds. Never the test split.
    val_share: float = 0.1
    # More texts for the student, with the teacher's probabilities as their only targets: "unlabeled" takes the
    # Reuters-21578 wires the run's data left out (other topics, no topics, training wires left out by a sample;
    # never a wire of the test split or with a test text's words), scored by the teacher's whole predictor. "none":
    # the training split alone. data.source reuters21578 only.
    transfer: str = "none"
    # At most this many transfer texts (a seeded random draw). Unset: every one.
    transfer_sample: int | None = None

    def __post_init__(self) -> None:
        _check(
            self,
            "distill",
            [
                (self.transfer in ("none", "unlabeled"), "transfer", "none or unlabeled"),
                (self.transfer_sample is None or self.transfer_sample >= 1, "transfer_sample", ">= 1 or unset"),
                (self.temperature > 0, "temperature", "> 0"),
                (0.0 <= self.alpha <= 1.0, "alpha", "in [0, 1]"),
                (0.0 < self.val_share < 0.5, "val_share", "between 0 and 0.5"),
            ],
        )


@dataclass
class TrackConfig:
    """Experiment tracking (reuters_ray.track): what the driver logs to MLflow. Live metrics in Ray's dashboard need
    no setting (every run publishes them)."""

    # Log the run to MLflow (the `track` extra: pip install 'reuters-ray[track]'): one MLflow run per reuters-ray run,
    # a nested run per fold with every epoch's figures, the test figures, the report and the predictor as an MLflow
    # model. A resumed run continues its MLflow run (its id is kept in the run folder's tracking.json).
    mlflow: bool = False
    # MLflow's tracking URI. Unset: MLFLOW_TRACKING_URI, else MLflow's own default (MLflow 3: sqlite:///mlflow.db in
    # the current folder, which `mlflow ui` started in the same folder shows).
    uri: str | None = None
    experiment: str = "reuters-ray"  # the MLflow experiment the runs go to (made when missing)
    # Also register the predictor's MLflow model under this name in MLflow's model registry. Unset: logged only.
    register: str | None = None
    # Log the predictor as an MLflow model (a pyfunc: a copy of the fold models, tokenizer and linear model).
    log_model: bool = True

    def __post_init__(self) -> None:
        _check(
            self,
            "track",
            [
                (bool(self.experiment.strip()), "experiment", "a name"),
                (self.register is None or bool(self.register.strip()), "register", "a name or unset"),
                (self.mlflow or self.register is None, "register", "unset unless track.mlflow is true"),
            ],
        )


def forward_passes(tc: TrainConfig) -> tuple[int, int]:
    """(examples per forward pass over all of a fold's workers, forward passes per optimizer step) in profile
    tc.profile: the same batch_size x grad_accum examples per step either way."""
    if PROFILES[tc.profile].merge_accumulation:
        return tc.batch_size * tc.grad_accum, 1
    return tc.batch_size, tc.grad_accum


def check_workers(tc: TrainConfig, workers: int) -> None:
    """Raises ConfigError when a forward pass's examples cannot be split evenly over `workers` data-parallel
    workers (each takes an equal share of every batch, so that the fold makes the updates one worker would)."""
    micro, accum = forward_passes(tc)
    if micro % workers:
        what = "train.batch_size" if accum > 1 else "train.batch_size x train.grad_accum"
        raise ConfigError(
            f"config: cv.workers_per_fold={workers} cannot split {what} = {micro} examples per forward pass (train."
            f"profile {tc.profile}) evenly over its workers; use a number of workers that divides {micro}"
        )


def folder_name(name: str) -> bool:
    return (
        bool(name)
        and name == name.strip()
        and name not in (".", "..")
        and not re.search(r"[/\\?#%\x00-\x1f\x7f]", name)
    )


@dataclass
class RunConfig:
    """Everything a run needs; saved with every run."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    cv: CVConfig = dataclasses.field(default_factory=CVConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)

    def __post_init__(self) -> None:
        check_workers(self.train, self.cv.workers_per_fold)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def multi_label(self) -> bool:
        return self.data.task == "multi"

    @property
    def student(self) -> bool:
        """Whether this is a student run (distill.teacher set): one model, trained as `fold 0` in <run>/student."""
        return self.distill.teacher is not None

    def monitor(self) -> str:
        """The validation figure early stopping and the best model follow, by its key (monitor_key)."""
        return monitor_key(self.train.monitor, self.data.task)

    def with_absolute_paths(self) -> RunConfig:
        """This config with its local paths made absolute from the current folder: the data and test files, the
        caches, the storage path, and a model or tokenizer given as a local folder. For a config run by a process
        whose working folder differs (a search's trial: Ray Tune runs each trial in a folder of its own)."""

        def absolute(path: str | None, must_exist: bool = False) -> str | None:
            if path is None or "://" in path or (must_exist and not os.path.exists(os.path.expanduser(path))):
                return path
            return os.path.abspath(os.path.expanduser(path))

        d = self.data
        data = dataclasses.replace(
            d,
            path=absolute(d.resolved_path()),
            test_path=absolute(d.test_path),
            cache_dir=absolute(d.cache_dir),
            tokenizer=absolute(d.tokenizer, must_exist=True),
        )
        model = dataclasses.replace(self.model, name=absolute(self.model.name, must_exist=True))
        cv = dataclasses.replace(self.cv, storage_path=absolute(self.cv.storage_path))
        return dataclasses.replace(self, data=data, model=model, cv=cv)


def field_docs(cls: type) -> dict[str, str]:
    """Each field's comment in the class source (the lines above it and its trailing comment): the --help text.
    The class's lines are found in its module's file by name, not by inspect.getsource, whose ast.parse raised
    CPython 3.11's "AST constructor recursion depth mismatch" SystemError once while a Ray Data thread ran."""
    import inspect
    import itertools
    import re

    lines = Path(inspect.getsourcefile(cls)).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"class {cls.__name__}\b", line))
    body = itertools.takewhile(lambda line: not line or line[0] in " \t#", lines[start + 1 :])
    docs, pending = {}, []
    for line in body:
        stripped = line.strip()
        m = re.match(r"(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", stripped)
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# "))
        elif m and not stripped.startswith(("def ", "return")):
            docs[m.group(1)] = " ".join(pending + ([m.group(2)] if m.group(2) else []))
            pending = []
        else:
            pending = []
    return docs


def _check(obj: Any, section: str, checks: list[tuple[bool, str, str]]) -> None:
    for ok, name, want in checks:
        if not ok:
            raise ConfigError(f"config: {section}.{name} must be {want}, got {getattr(obj, name)!r}")


def _takes_str(tp: Any) -> bool:
    """Whether annotation `tp` is str or a union holding str (str | None)."""
    return tp is str or (typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks `value` against a (simple) annotation. A string for a string field is taken verbatim (only "" unsets
    an optional one): "news #2.csv" is a file name, not YAML with a comment. A string for a typed field (a flag's
    value) is read as a YAML scalar: "1e-4", "null", "true"."""
    if isinstance(value, str) and _takes_str(tp):
        return None if value == "" and type(None) in typing.get_args(tp) else value
    if isinstance(value, str):
        try:
            return _check_type(_scalar(value), tp, where)
        except ValueError:  # ConfigError too: the message shows what was written, not how it was read
            raise ConfigError(f"config: {where} must be {_type_name(tp)}, got {value!r}") from None
    return _check_type(value, tp, where)


_INT, _FLOAT = re.compile(r"[+-]?[0-9]+"), re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_WORDS = {
    "true": True,
    "false": False,
    "yes": True,
    "no": False,
    "on": True,
    "off": False,
    "null": None,
    "none": None,
    "~": None,
    "": None,
}


def _scalar(text: str) -> Any:
    """A flag's value for a typed field: a decimal integer ("010" is 10, not YAML 1.1's octal 8), a decimal float
    ("1e-4"), true/false/yes/no/on/off, null/none/~ or nothing; else the text itself (refused by the type check)."""
    t = text.strip()
    if _INT.fullmatch(t):
        return int(t)
    if _FLOAT.fullmatch(t):
        return float(t)
    return _WORDS.get(t.lower(), text)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"config: {where} must be {_type_name(tp)}, got {value!r}{_quote_hint(value, tp)}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config: {where} must be a finite float, got {value!r}")
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"config: {where} must be {_type_name(tp)}, got {value!r}{_quote_hint(value, tp)}")
    return value


def _type_name(tp: Any) -> str:
    """'float', 'str or unset', ...: an annotation as the messages say it."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    names = [{"str": "a string"}.get(a.__name__, a.__name__) for a in args if a is not type(None)]
    return " or ".join(names) + (" or unset" if type(None) in args else "")


def _quote_hint(value: Any, tp: Any) -> str:
    """For a YAML file's number or boolean given to a string field: how to write it as a string."""
    if _takes_str(tp) and isinstance(value, (int, float, bool, datetime.date)):
        return " (YAML read it as a number, boolean or date: quote it in the file)"
    return ""


def from_dict(cls: type, mapping: dict[str, Any] | None, where: str = "") -> Any:
    """Builds dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    mapping = dict(mapping or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ConfigError(
            f"config: unknown key(s) {', '.join(where + k for k in unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in mapping.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"config: {where}{name} must be a mapping of its keys, got {value!r}")
            kwargs[name] = from_dict(tp, value, where=f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, where + name)
    return cls(**kwargs)


def load_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """Reads a YAML file (a config, or what `what` names) into a mapping (an empty file is an empty mapping).
    Raises ConfigError in one line naming the file, and the line and column of a YAML error."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what}: {path} is not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise ConfigError(f"{what}: {path} is not valid YAML: {problem}{where}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{what}: {path} must hold a mapping of keys to values")
    return data or {}


def load_config(path: str | Path | None = None, **overrides: dict[str, Any]) -> RunConfig:
    """The RunConfig of YAML file `path` (None: every default) with `overrides` over it, one mapping per section:
    load_config("configs/quick-cpu.yaml", cv={"name": "quick"}, train={"max_epochs": 1}). Values are checked as
    the command line's are (strings such as "1e-4" are converted). Raises ConfigError naming the file, key or type."""
    values: dict[str, Any] = load_yaml(path) if path is not None else {}
    for section, keys in overrides.items():
        if not isinstance(keys, dict):
            raise ConfigError(f"config: {section} must be a mapping of its keys, got {keys!r}")
        kept = values.get(section)
        values[section] = {**(kept if isinstance(kept, dict) else {}), **keys}
    return from_dict(RunConfig, values)
