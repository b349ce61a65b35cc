"""The kind of a runbook section, from its heading: diagnosis, mitigation, verification, ...

Phrases are looked for first, then each word of the heading in order against the stems
(the first word that matches decides, so "Diagnosis and mitigation" is diagnosis).
"""

from __future__ import annotations

import re
from enum import IntEnum

_WORD_RE = re.compile(r"[^\W_]+")


class Kind(IntEnum):
    """The kind of section a step comes from, in the order steps are listed."""

    DIAGNOSE = 0
    MITIGATE = 1
    VERIFY = 2
    OTHER = 3
    ESCALATE = 4
    INFO = 5


ACTION_KINDS = frozenset({Kind.DIAGNOSE, Kind.MITIGATE, Kind.VERIFY})
LABELS: dict[Kind, str] = {
    Kind.DIAGNOSE: "Check",
    Kind.MITIGATE: "Fix",
    Kind.VERIFY: "Verify",
    Kind.ESCALATE: "Escalate",
    Kind.INFO: "Note",
}

# Heading vocabulary. Phrases are looked for first, then each word of the heading in order against
# the stems (the first word that matches decides, so "Diagnosis and mitigation" is diagnosis).
_PHRASES: tuple[tuple[str, Kind], ...] = (
    ("what to do", Kind.MITIGATE),
    ("how to fix", Kind.MITIGATE),
    ("next steps", Kind.MITIGATE),
    ("roll back", Kind.MITIGATE),
    ("root cause", Kind.DIAGNOSE),
    ("how to check", Kind.DIAGNOSE),
    ("who to call", Kind.ESCALATE),
    ("on call", Kind.ESCALATE),
    ("see also", Kind.INFO),
)
_STEMS: tuple[tuple[str, Kind], ...] = (
    ("diagnos", Kind.DIAGNOSE),
    ("investigat", Kind.DIAGNOSE),
    ("troubleshoot", Kind.DIAGNOSE),
    ("triag", Kind.DIAGNOSE),
    ("debug", Kind.DIAGNOSE),
    ("analys", Kind.DIAGNOSE),
    ("identif", Kind.DIAGNOSE),
    ("inspect", Kind.DIAGNOSE),
    ("check", Kind.DIAGNOSE),
    ("mitigat", Kind.MITIGATE),
    ("remediat", Kind.MITIGATE),
    ("resolution", Kind.MITIGATE),
    ("resolv", Kind.MITIGATE),
    ("fix", Kind.MITIGATE),
    ("workaround", Kind.MITIGATE),
    ("recover", Kind.MITIGATE),
    ("rollback", Kind.MITIGATE),
    ("restor", Kind.MITIGATE),
    ("repair", Kind.MITIGATE),
    ("solution", Kind.MITIGATE),
    ("action", Kind.MITIGATE),
    ("step", Kind.MITIGATE),
    ("procedure", Kind.MITIGATE),
    ("immediate", Kind.MITIGATE),
    ("verif", Kind.VERIFY),
    ("validat", Kind.VERIFY),
    ("confirm", Kind.VERIFY),
    ("escalat", Kind.ESCALATE),
    ("contact", Kind.ESCALATE),
    ("oncall", Kind.ESCALATE),
    ("owner", Kind.ESCALATE),
    ("paging", Kind.ESCALATE),
    ("symptom", Kind.INFO),
    ("impact", Kind.INFO),
    ("overview", Kind.INFO),
    ("background", Kind.INFO),
    ("context", Kind.INFO),
    ("summary", Kind.INFO),
    ("description", Kind.INFO),
    ("about", Kind.INFO),
    ("signal", Kind.INFO),
    ("alert", Kind.INFO),
    ("detect", Kind.INFO),
    ("cause", Kind.INFO),
    ("reference", Kind.INFO),
    ("link", Kind.INFO),
)


def classify(heading: str) -> Kind | None:
    """The kind of a section from its heading text, or None if the heading says nothing."""
    words = _WORD_RE.findall(heading.lower())
    joined = " ".join(words)
    padded = f" {joined} "
    for phrase, kind in _PHRASES:
        if f" {phrase} " in padded:
            return kind
    for word in words:
        for stem, kind in _STEMS:
            if word.startswith(stem):
                return kind
    return None


def heading_kind(heading: str, title: str) -> Kind:
    """The kind of a chunk from its heading path ("Title > Mitigation > Short term")."""
    parts = [p.strip(" \t#") for p in heading.split(">")]
    parts = [p for p in parts if p]
    wanted = title.strip().casefold()
    named = [
        p
        for i, p in enumerate(parts)
        # The first part is the runbook title (when it is known, only if it equals it).
        if not (p.casefold() == wanted or (i == 0 and len(parts) > 1 and not wanted))
    ]
    for part in reversed(named):
        kind = classify(part)
        if kind is not None:
            return kind
    return Kind.OTHER
