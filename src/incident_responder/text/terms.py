"""Words of a text as search terms: CamelCase and snake_case identifiers split into their
parts, English function words dropped, words lightly stemmed.

The one home of these rules: ``STOPWORDS``, ``stem`` and ``camel_parts`` are also what the
offline recommender's terms are made of. ``tokenize`` is what runbook retrieval indexes and
queries with (BM25); ``normalize_name`` is the key that alert names are compared by.
"""

from __future__ import annotations

import re

# English function words, and verbs that nearly every runbook step uses ("run", "use", "see").
# "down" and "up" are kept: they carry meaning in alert names.
# fmt: off
STOPWORDS = frozenset({
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any",
    "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
    "but", "by", "can", "could", "did", "do", "does", "doing", "during", "e", "each", "eg",
    "etc", "few", "for", "from", "further", "g", "had", "has", "have", "having", "he", "her",
    "here", "hers", "him", "his", "how", "i", "ie", "if", "in", "into", "is", "it", "its", "itself",
    "just", "may", "me", "might", "more", "most", "must", "my", "no", "nor", "not", "now", "of",
    "off", "on", "once", "only", "onto", "or", "other", "our", "ours", "out", "over", "own", "per",
    "run", "same", "see", "shall", "she", "should", "so", "some", "such", "than", "that", "the",
    "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through", "to",
    "too", "under", "until", "use", "used", "using", "very", "via", "was", "we", "were",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you",
    "your", "yours",
})
# fmt: on

_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:[_\-][A-Za-z0-9]+)*")
_CAMEL_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_NORM_RE = re.compile(r"[^a-z0-9]+")
_SEPARATORS_RE = re.compile(r"[_\-]+")
_MAX_SUBCOMPOUND_PARTS = 8


def stem(word: str) -> str:
    """A deliberately tiny suffix stripper (plural, -ing, -ed, -ation, trailing e) for a lowercase word.

    Words of four letters or fewer, and words that are not all letters, are kept as they are.
    At most one suffix is cut, so the cost is linear in the word's length.
    """
    if len(word) <= 4 or not word.isalpha():
        return word
    for suffix, repl in (
        ("ations", ""),
        ("ation", ""),
        ("ies", "y"),
        ("sses", "ss"),
        ("ing", ""),
        ("ed", ""),
        ("es", "e"),
        ("s", ""),
    ):
        if word.endswith(suffix) and not (suffix == "s" and word.endswith(("ss", "us", "is"))):
            cut = word[: len(word) - len(suffix)] + repl
            if len(cut) >= 3:
                word = cut
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]
    return word


def split_identifier(word: str) -> list[str]:
    """``KubeAPIDown`` -> ``[Kube, API, Down]``; ``kube_pod-crash`` -> ``[kube, pod, crash]``."""
    parts: list[str] = []
    for piece in _SEPARATORS_RE.split(word):
        parts.extend(camel_parts(piece))
    return parts


def camel_parts(word: str) -> list[str]:
    """``KubeAPIDown`` -> ``[Kube, API, Down]`` (digit runs are parts of their own)."""
    return _CAMEL_RE.findall(word)


def tokenize(text: str, *, subcompounds: bool = True) -> list[str]:
    """Lowercased, lightly stemmed word tokens; compound identifiers also keep their joined form.

    With ``subcompounds`` a compound also yields every contiguous run of two or more of its parts
    (``KubeAPIDown`` -> ``kubeapi``, ``apidown``, ``kubeapidown``), so that a log naming a component
    (``KubeAPI has disappeared``) meets the alert named after it.
    """
    tokens: list[str] = []
    for match in _WORD_RE.finditer(text):
        word = match.group(0)
        parts = [p.lower() for p in split_identifier(word)]
        words = [p for p in parts if p not in STOPWORDS and not p.isdigit() and len(p) > 1]
        tokens.extend(stem(p) for p in words)
        if len(parts) > 1:
            n = len(parts)
            spans = [(0, n)]
            if subcompounds and n <= _MAX_SUBCOMPOUND_PARTS:
                spans += [(i, j) for i in range(n) for j in range(i + 2, n + 1) if (i, j) != (0, n)]
            for i, j in spans:
                joined = "".join(parts[i:j])
                if not joined.isdigit() and len(joined) > 3:
                    tokens.append(joined)
    return tokens


def normalize_name(name: str) -> str:
    """Case- and separator-insensitive key for alert names: ``Kube-Pod_crash`` -> ``kubepodcrash``."""
    return _NORM_RE.sub("", name.lower())
