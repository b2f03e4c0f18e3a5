"""Shared fixtures. Tests read the real Reuters-21578 files from ../shared/data/reuters21578
(override with $REUTERS21578_PATH) and never touch the network."""

import os
from pathlib import Path

# Before transformers/huggingface_hub are imported: a hub lookup must fail fast, not wait on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from reuters_ray.config import REUTERS_PATH_ENV  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REUTERS_DIR = Path(os.environ.get(REUTERS_PATH_ENV) or REPO.parent / "shared" / "data" / "reuters21578")


@pytest.fixture(scope="session")
def reuters_dir() -> Path:
    if not any(REUTERS_DIR.glob("reut2-*.sgm")):
        pytest.fail(f"Reuters-21578 not found in {REUTERS_DIR}; set ${REUTERS_PATH_ENV} to its folder")
    return REUTERS_DIR


@pytest.fixture(scope="session")
def reuters(reuters_dir):
    """Reuters-46 from the raw files, title+body text (loaded once per session)."""
    from reuters_ray.data.reuters21578 import load_reuters21578

    return load_reuters21578(str(reuters_dir))


@pytest.fixture(scope="session")
def reuters_keras_text(reuters_dir):
    from reuters_ray.data.reuters21578 import load_reuters21578

    return load_reuters21578(str(reuters_dir), text="keras")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from reuters_ray.models import load_tokenizer

    return load_tokenizer("minilm-offline")
