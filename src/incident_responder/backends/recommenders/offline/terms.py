"""The terms a step shares with a log: stemmed content words, CamelCase identifiers with
their parts; rarer shared terms weigh more (IDF over the candidate steps).

Stop words, stemming and the CamelCase split are runbook retrieval's (``text.terms``).
"""

from __future__ import annotations

import functools
import re

from incident_responder.text.terms import STOPWORDS, camel_parts, stem

_WORD_RE = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=16384)
def _word_terms(word: str) -> tuple[str, ...]:
    parts = [word]
    if not word.islower() and not word.isupper():
        parts.extend(camel_parts(word))
    out: list[str] = []
    for part in parts:
        token = part.lower()
        if len(token) < 3 or token in STOPWORDS or (token.isdigit() and len(token) > 5):
            continue
        out.append(stem(token))
    return tuple(out)


def terms(text: str) -> frozenset[str]:
    """Stemmed content words of ``text``; CamelCase identifiers also contribute their parts."""
    out: set[str] = set()
    for word in _WORD_RE.findall(text):
        out.update(_word_terms(word))
    return frozenset(out)
