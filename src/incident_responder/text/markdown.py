"""Markdown line syntax shared by the runbook chunker and the offline recommender.

Every function here does work linear in its input: no pattern can scan one stretch of text
again from many starting points (trailing runs are peeled with ``str.rstrip``, never with a
lazy group followed by ``[ \\t]*$``).
"""

from __future__ import annotations

import html
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


# --------------------------------------------------------------------------- inline text
# Every variable-length part below is bounded, so that no input makes cleaning quadratic.
_CODE_SPAN_RE = re.compile(r"(``.{1,1000}?``|`[^`]{1,1000}`)")
_IMAGE_RE = re.compile(r"!\[([^\]]{0,300})\]\([^)]{0,1000}\)")
_LINK_RE = re.compile(r"\[([^\]]{1,300})\]\([^)]{0,1000}\)")
_REF_LINK_RE = re.compile(r"\[([^\]^][^\]]{0,300})\]\[[^\]]{0,100}\]")
_FOOTNOTE_RE = re.compile(r"\[\^[^\]]{0,100}\]")
_AUTOLINK_RE = re.compile(r"<((?:https?|ftp|mailto):[^>\s]{1,1000})>")
_TAG_RE = re.compile(r"</?([A-Za-z][A-Za-z0-9]{0,20})[^<>]{0,500}>")
# Only real HTML tags are dropped (block ones leave a space): "<pod>" in prose is a placeholder.
_BLOCK_TAG_RE = re.compile(r"br|p|div|li|ul|ol|tr|td|th|table|details|summary|hr|pre|blockquote|h[1-6]")
_INLINE_TAG_RE = re.compile(
    r"a|b|i|u|s|q|em|strong|code|span|kbd|mark|small|sub|sup|img|font|del|ins|abbr|tt|var|samp|cite"
    r"|thead|tbody|caption|dl|dt|dd"
)
_STRONG_RE = re.compile(r"(\*\*|__)(?=\S)(.{1,300}?)(?<=\S)\1")
_EM_STAR_RE = re.compile(r"(?<![\w*])\*(?=[^\s*])(.{1,300}?)(?<=[^\s*])\*(?![\w*])")
_EM_UNDERSCORE_RE = re.compile(r"(?<![\w_])_(?=[^\s_])(.{1,300}?)(?<=[^\s_])_(?![\w_])")
_STRIKE_RE = re.compile(r"~~(.{1,300}?)~~")
_ESCAPE_RE = re.compile(r"\\([!-/:-@\[-`{-~])")  # a backslash before ASCII punctuation
_ESCAPED_BASE = 0xF0000  # escaped characters are parked in a private-use plane while cleaning
_PROTECTED_RE = re.compile("[\U000f0000-\U000f007f]")
SPACE_RE = re.compile(r"\s+")


def _protect(match: re.Match[str]) -> str:
    return chr(_ESCAPED_BASE + ord(match.group(1)))


def _unprotect(piece: str, *, keep_backslash: bool) -> str:
    prefix = "\\" if keep_backslash else ""
    return _PROTECTED_RE.sub(lambda m: prefix + chr(ord(m.group(0)) - _ESCAPED_BASE), piece)


def _tag(match: re.Match[str]) -> str:
    name = match.group(1).lower()
    if _BLOCK_TAG_RE.fullmatch(name):
        return " "
    return "" if _INLINE_TAG_RE.fullmatch(name) else match.group(0)


def plain_inline(text: str) -> str:
    """Inline Markdown to plain text: links -> their text, emphasis and HTML dropped, code spans
    kept verbatim, whitespace collapsed."""
    escaped = "\\" in text
    if escaped:  # backslash escapes: park the escaped characters out of reach of the other rules
        text = _ESCAPE_RE.sub(_protect, text)
    pieces = _CODE_SPAN_RE.split(text) if "`" in text else [text]
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i % 2:  # a code span: keep it verbatim, on one line
            piece = SPACE_RE.sub(" ", piece)
            out.append(_unprotect(piece, keep_backslash=True) if escaped else piece)
            continue
        if "[" in piece:
            piece = _IMAGE_RE.sub(r"\1", piece)
            piece = _LINK_RE.sub(r"\1", piece)
            piece = _REF_LINK_RE.sub(r"\1", piece)
            piece = _FOOTNOTE_RE.sub("", piece)
        if "<" in piece:
            piece = _AUTOLINK_RE.sub(r"\1", piece)
            piece = _TAG_RE.sub(_tag, piece)
        if "*" in piece or "_" in piece:
            piece = _STRONG_RE.sub(r"\2", piece)
            piece = _EM_STAR_RE.sub(r"\1", piece)
            piece = _EM_UNDERSCORE_RE.sub(r"\1", piece)
        if "~~" in piece:
            piece = _STRIKE_RE.sub(r"\1", piece)
        if "&" in piece:
            piece = html.unescape(piece)
        out.append(_unprotect(piece, keep_backslash=False) if escaped else piece)
    return SPACE_RE.sub(" ", "".join(out)).strip()
