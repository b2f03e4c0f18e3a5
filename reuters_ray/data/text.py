"""Text that is not Unicode: lone surrogates (JSON's "\\ud800", or bytes Python kept with surrogateescape), which no
tokenizer reads and no UTF-8 file holds. No dependencies: the table reader, the predictor and the service use it.
"""

from __future__ import annotations

import re

SURROGATE = re.compile("[\ud800-\udfff]")


def unreadable_texts(texts: list[str]) -> list[int]:
    """Indices of the texts that hold a lone surrogate (e.g. JSON's "\\ud800", or bytes Python kept with
    surrogateescape): not Unicode any tokenizer can read."""
    return [i for i, t in enumerate(texts) if SURROGATE.search(t)]


def readable_texts(texts: list[str]) -> list[str]:
    """`texts` with every lone surrogate replaced by U+FFFD, and a warning naming the texts' indices."""
    bad = unreadable_texts(texts)
    if bad:
        import warnings

        warnings.warn(f"texts {_indices(bad)}: lone surrogates (not Unicode) replaced by U+FFFD", stacklevel=3)
    return [SURROGATE.sub("\ufffd", t) for t in texts] if bad else list(texts)


def _indices(rows: list[int], shown: int = 20) -> str:
    return ", ".join(map(str, rows[:shown])) + (" ..." if len(rows) > shown else "")
