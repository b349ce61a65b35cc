"""Markdown line syntax shared by the runbook chunker and the offline recommender.

Every function here does work linear in its input: no pattern can scan one stretch of text
again from many starting points (trailing runs are peeled with ``str.rstrip``, never with a
lazy group followed by ``[ \\t]*$``).
"""

from __future__ import annotations

import re

# An ATX heading: up to three spaces, 1-6 "#", then a space or the end of the line.
_ATX_RE = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]++(.*+))?$")
# A code fence opener: ``` or ~~~ (three or more), possessive so a long run is never re-split.
FENCE_RE = re.compile(r"^ {0,3}(`{3,}+|~{3,}+)")
_FRONT_TITLE_RE = re.compile(r"^title[ \t]*+[:=][ \t]*+(.*+)")

MAX_HEADING_CHARS = 300  # of one heading's text; a longer heading is cut (it is a title, not a body)


def split_front_matter(content: str) -> tuple[str, str]:
    """Return ``(front_matter, body)``; front matter is ``""`` when there is none (or it is unclosed).

    YAML (``---``) and TOML (``+++``) front matter at the top are recognized."""
    text = content.lstrip("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines:
        return "", text
    delim = lines[0].strip()
    if delim not in ("---", "+++"):
        return "", text
    for i in range(1, len(lines)):
        if lines[i].strip() == delim:
            return "".join(lines[1:i]), "".join(lines[i + 1 :])
    return "", text


def front_matter_title(front: str) -> str | None:
    """The ``title`` of front matter (YAML ``title: x`` or TOML ``title = "x"``), unquoted."""
    for line in front.splitlines():
        match = _FRONT_TITLE_RE.match(line)
        if match:
            title = match.group(1).strip(" \t").strip().strip("\"'").strip()
            return title or None
    return None


def atx_heading(line: str) -> tuple[int, str] | None:
    """``(level, text)`` of an ATX heading line, closing ``#`` run removed; None if not a heading."""
    match = _ATX_RE.match(line)
    if match is None:
        return None
    return len(match.group(1)), strip_closing_hashes(match.group(2) or "")[:MAX_HEADING_CHARS]


def strip_closing_hashes(text: str) -> str:
    """Heading text without its optional closing sequence (``## Title ##`` -> ``Title``) and
    surrounding blanks; a ``#`` run only closes a heading after a space or as the whole text."""
    body = text.rstrip(" \t")
    rest = body.rstrip("#")
    if rest == body:
        return body.strip()
    if not rest or rest[-1] in " \t":
        return rest.strip()
    return body.strip()
