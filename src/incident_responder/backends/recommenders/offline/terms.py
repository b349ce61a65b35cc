"""The terms a step shares with a log: stemmed content words, CamelCase identifiers with
their parts; rarer shared terms weigh more (IDF over the candidate steps)."""

from __future__ import annotations

import functools
import re

from incident_responder.text.terms import camel_parts

_WORD_RE = re.compile(r"[^\W_]+")

_STOPWORDS = frozenset(
    {
        "the",
        "and",
        "for",
        "with",
        "from",
        "that",
        "this",
        "these",
        "those",
        "not",
        "are",
        "was",
        "were",
        "has",
        "have",
        "had",
        "but",
        "you",
        "your",
        "our",
        "its",
        "into",
        "onto",
        "than",
        "then",
        "when",
        "what",
        "which",
        "who",
        "whom",
        "will",
        "would",
        "can",
        "could",
        "should",
        "all",
        "any",
        "each",
        "some",
        "such",
        "only",
        "also",
        "more",
        "most",
        "other",
        "out",
        "over",
        "under",
        "after",
        "before",
        "once",
        "been",
        "being",
        "does",
        "did",
        "doing",
        "there",
        "here",
        "they",
        "them",
        "their",
        "about",
        "above",
        "below",
        "again",
        "very",
        "just",
        "off",
        "per",
        "via",
        "use",
        "used",
        "using",
        "run",
        "see",
    }
)
_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    return word


@functools.lru_cache(maxsize=16384)
def _word_terms(word: str) -> tuple[str, ...]:
    parts = [word]
    if not word.islower() and not word.isupper():
        parts.extend(camel_parts(word))
    out: list[str] = []
    for part in parts:
        token = part.lower()
        if len(token) < 3 or token in _STOPWORDS or (token.isdigit() and len(token) > 5):
            continue
        out.append(_stem(token))
    return tuple(out)


def terms(text: str) -> frozenset[str]:
    """Stemmed content words of ``text``; CamelCase identifiers also contribute their parts."""
    out: set[str] = set()
    for word in _WORD_RE.findall(text):
        out.update(_word_terms(word))
    return frozenset(out)
