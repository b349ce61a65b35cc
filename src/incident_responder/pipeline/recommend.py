"""The offline recommender: an extractive, grounded, deterministic recommendation.

No network and no model. Every step is a line lifted from the retrieved runbook text (a list
item, a list item with the commands of the code block under it, or, for runbooks without lists,
a sentence), cleaned of Markdown noise, labelled with the kind of section it comes from
("Check: " for diagnosis, "Fix: " for mitigation, ...) and cited as ``[runbook: <id>]``.

Selection, for ``max_steps`` steps:

- per runbook, only the best available tier is used: list items under action-like headings
  (diagnosis, mitigation, verification), else list items under other non-descriptive headings
  (escalation, notes), else the first informative sentences;
- the best runbook (the first in ``chunks``) gets most of the budget, split between mitigation
  (the larger half) and diagnosis; up to a third of the budget goes to steps of other runbooks that
  share at least two terms with the log; remaining room goes to other runbooks' steps that share
  any term with the log;
- inside a group, steps are ranked by IDF-weighted term overlap with the log, ties in document order;
- output order: diagnosis, mitigation, verification, other; then runbook rank; then document order.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from incident_responder.models import Recommendation, RunbookChunk
from incident_responder.text.markdown import atx_heading

__all__ = ["SOURCE", "OfflineRecommender"]

SOURCE = "offline-extractive"

# Bounds that keep one call fast and its output readable whatever the input looks like.
_MAX_CHUNK_CHARS = 20_000
_MAX_LINE_CHARS = 2_000
_LOG_HEAD_CHARS = 8_000
_LOG_TAIL_CHARS = 8_000
_MAX_COMMANDS = 3
_MAX_COMMAND_CHARS = 300
_MAX_STEP_CHARS = 600
_MAX_RAW_CHARS = 3_000  # of one paragraph or list item, before cleaning
_MAX_SECTION_SENTENCES = 3


class _Kind(IntEnum):
    """The kind of section a step comes from, in the order steps are listed."""

    DIAGNOSE = 0
    MITIGATE = 1
    VERIFY = 2
    OTHER = 3
    ESCALATE = 4
    INFO = 5


_ACTION_KINDS = frozenset({_Kind.DIAGNOSE, _Kind.MITIGATE, _Kind.VERIFY})
_LABELS: dict[_Kind, str] = {
    _Kind.DIAGNOSE: "Check",
    _Kind.MITIGATE: "Fix",
    _Kind.VERIFY: "Verify",
    _Kind.ESCALATE: "Escalate",
    _Kind.INFO: "Note",
}

# Heading vocabulary. Phrases are looked for first, then each word of the heading in order against
# the stems (the first word that matches decides, so "Diagnosis and mitigation" is diagnosis).
_PHRASES: tuple[tuple[str, _Kind], ...] = (
    ("what to do", _Kind.MITIGATE),
    ("how to fix", _Kind.MITIGATE),
    ("next steps", _Kind.MITIGATE),
    ("roll back", _Kind.MITIGATE),
    ("root cause", _Kind.DIAGNOSE),
    ("how to check", _Kind.DIAGNOSE),
    ("who to call", _Kind.ESCALATE),
    ("on call", _Kind.ESCALATE),
    ("see also", _Kind.INFO),
)
_STEMS: tuple[tuple[str, _Kind], ...] = (
    ("diagnos", _Kind.DIAGNOSE),
    ("investigat", _Kind.DIAGNOSE),
    ("troubleshoot", _Kind.DIAGNOSE),
    ("triag", _Kind.DIAGNOSE),
    ("debug", _Kind.DIAGNOSE),
    ("analys", _Kind.DIAGNOSE),
    ("identif", _Kind.DIAGNOSE),
    ("inspect", _Kind.DIAGNOSE),
    ("check", _Kind.DIAGNOSE),
    ("mitigat", _Kind.MITIGATE),
    ("remediat", _Kind.MITIGATE),
    ("resolution", _Kind.MITIGATE),
    ("resolv", _Kind.MITIGATE),
    ("fix", _Kind.MITIGATE),
    ("workaround", _Kind.MITIGATE),
    ("recover", _Kind.MITIGATE),
    ("rollback", _Kind.MITIGATE),
    ("restor", _Kind.MITIGATE),
    ("repair", _Kind.MITIGATE),
    ("solution", _Kind.MITIGATE),
    ("action", _Kind.MITIGATE),
    ("step", _Kind.MITIGATE),
    ("procedure", _Kind.MITIGATE),
    ("immediate", _Kind.MITIGATE),
    ("verif", _Kind.VERIFY),
    ("validat", _Kind.VERIFY),
    ("confirm", _Kind.VERIFY),
    ("escalat", _Kind.ESCALATE),
    ("contact", _Kind.ESCALATE),
    ("oncall", _Kind.ESCALATE),
    ("owner", _Kind.ESCALATE),
    ("paging", _Kind.ESCALATE),
    ("symptom", _Kind.INFO),
    ("impact", _Kind.INFO),
    ("overview", _Kind.INFO),
    ("background", _Kind.INFO),
    ("context", _Kind.INFO),
    ("summary", _Kind.INFO),
    ("description", _Kind.INFO),
    ("about", _Kind.INFO),
    ("signal", _Kind.INFO),
    ("alert", _Kind.INFO),
    ("detect", _Kind.INFO),
    ("cause", _Kind.INFO),
    ("reference", _Kind.INFO),
    ("link", _Kind.INFO),
)

# Fenced blocks with these info strings hold output or data, not commands.
_NON_COMMAND_LANGS = frozenset(
    {"text", "txt", "log", "logs", "output", "plaintext", "json", "yaml", "yml", "xml", "html", "diff", "csv"}
)

_FENCE_RE = re.compile(r"^[ \t]*+(`{3,}+|~{3,}+)(.*+)")
_ITEM_RE = re.compile(r"^(\s*)(?:[-*+•]|\d{1,3}[.)])\s+(.*)$")
_RULE_RE = re.compile(r"^\s{0,3}(?:(?:-\s*){3,}|(?:\*\s*){3,}|(?:_\s*){3,}|=+\s*)$")
_QUOTE_RE = re.compile(r"^\s{0,3}(?:>\s?)+")
_TASK_RE = re.compile(r"^\[[ xX]\]\s+")
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
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
_SPACE_RE = re.compile(r"\s+")
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
_WORD_RE = re.compile(r"[^\W_]+")
_CAMEL_PART_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_KEY_RE = re.compile(r"[\W_]+")
_NON_LETTER_RE = re.compile(r"[\W\d_]+")

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
        parts.extend(_CAMEL_PART_RE.findall(word))
    out: list[str] = []
    for part in parts:
        token = part.lower()
        if len(token) < 3 or token in _STOPWORDS or (token.isdigit() and len(token) > 5):
            continue
        out.append(_stem(token))
    return tuple(out)


def _terms(text: str) -> frozenset[str]:
    """Stemmed content words of ``text``; CamelCase identifiers also contribute their parts."""
    out: set[str] = set()
    for word in _WORD_RE.findall(text):
        out.update(_word_terms(word))
    return frozenset(out)


def _classify(heading: str) -> _Kind | None:
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


def _heading_kind(heading: str, title: str) -> _Kind:
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
        kind = _classify(part)
        if kind is not None:
            return kind
    return _Kind.OTHER


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


def _clean(text: str) -> str:
    """Inline Markdown to plain text: links -> their text, emphasis and HTML dropped, code spans kept."""
    escaped = "\\" in text
    if escaped:  # backslash escapes: park the escaped characters out of reach of the other rules
        text = _ESCAPE_RE.sub(_protect, text)
    pieces = _CODE_SPAN_RE.split(text) if "`" in text else [text]
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if i % 2:  # a code span: keep it verbatim, on one line
            piece = _SPACE_RE.sub(" ", piece)
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
    return _SPACE_RE.sub(" ", "".join(out)).strip()


def _code(command: str) -> str:
    return f"`` {command} ``" if "`" in command else f"`{command}`"


def _glue(head: str, tail: str) -> str:
    if not head:
        return tail
    if not tail:
        return head
    return f"{head} {tail}" if head[-1] in ":.;,!?" else f"{head}: {tail}"


def _commands(lines: Sequence[str], lang: str) -> list[str]:
    """The commands of a fenced block: prompt lines if any (``$ cmd``), else every non-comment line."""
    if lang in _NON_COMMAND_LANGS:
        return []
    stripped = [line.strip() for line in lines]
    prompted = [line[2:].strip() for line in stripped if line.startswith("$ ")]
    source = prompted or [line for line in stripped if line and not line.startswith(("#", "//", "--"))]
    commands: list[str] = []
    pending = ""
    for line in source:
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append((pending + line).strip())
        pending = ""
    if pending.strip():
        commands.append(pending.strip())
    out: list[str] = []
    for command in commands:
        if not command:
            continue
        if len(command) > _MAX_COMMAND_CHARS:
            command = command[:_MAX_COMMAND_CHARS].rstrip() + " …"
        out.append(command)
        if len(out) == _MAX_COMMANDS:
            break
    return out


def _is_table_row(line: str) -> bool:
    """A table row (``| a | b |``) or delimiter row (``---|:--``): tables are data, never steps."""
    stripped = line.strip()
    return stripped.startswith("|") or ("|" in stripped and not stripped.strip("|:- \t"))


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT_RE.split(text) if s.strip()]


def _letters(text: str) -> int:
    return len(_NON_LETTER_RE.sub("", text))


def _informative(sentence: str) -> bool:
    return len(sentence.split()) >= 4 and _letters(sentence) >= 15


def _actionable(item: str) -> bool:
    return _letters(item) >= 3 and (len(item.split()) >= 2 or "`" in item)


def _truncate(text: str) -> str:
    if len(text) <= _MAX_STEP_CHARS:
        return text
    cut = text[:_MAX_STEP_CHARS]
    space = cut.rfind(" ")
    if space > _MAX_STEP_CHARS // 2:
        cut = cut[:space]
    if cut.count("`") % 2:
        cut += "`"
    return cut.rstrip() + " …"


@dataclass
class _Item:
    kind: _Kind
    indent: int
    text: str
    segments: list[tuple[str, str]] = field(default_factory=list)  # ("sub" | "cmd" | "text", raw)

    def render(self) -> str:
        out = _clean(_TASK_RE.sub("", self.text[:_MAX_RAW_CHARS]))
        previous = "text"
        for what, raw in self.segments:
            if len(out) > _MAX_STEP_CHARS:
                break  # it will be truncated anyway
            raw = raw[:_MAX_RAW_CHARS]
            piece = raw if what == "cmd" else _clean(_TASK_RE.sub("", raw))
            if not piece:
                continue
            if what == "sub" and previous == "sub":
                out = f"{out}; {piece}"
            elif what == "cmd" and f"`{raw.strip('`').strip()}`" in out:
                continue  # the item already quotes this command inline
            else:
                out = _glue(out, piece)
            previous = what
        return out


@dataclass(frozen=True)
class _Piece:
    """A candidate step extracted from one chunk, in document order."""

    is_item: bool  # a list item or a command block (else a sentence of a paragraph)
    kind: _Kind
    text: str


class _ChunkParser:
    """A forgiving line-based reader of one chunk's Markdown: lists, fences, paragraphs, headings."""

    def __init__(self, base: _Kind) -> None:
        self.base = base
        self.kind = base
        self.kind_level = 0
        self.out: list[_Piece] = []
        self.item: _Item | None = None
        self.blank = False
        self.para: list[str] = []
        self.para_kind = base
        self.lead: tuple[_Kind, str] | None = None  # last sentence of the paragraph just read
        self.fence: str | None = None
        self.fence_lang = ""
        self.fence_lines: list[str] = []
        self.fence_owner: str | None = None

    def parse(self, text: str) -> list[_Piece]:
        text = _COMMENT_RE.sub("", text[:_MAX_CHUNK_CHARS])
        for raw in text.splitlines():
            self._line(raw[:_MAX_LINE_CHARS].expandtabs(4))
        if self.fence is not None:
            self._close_fence()
        self._flush_para()
        self._close_item()
        return self.out

    def _line(self, line: str) -> None:
        if self.fence is not None:
            stripped = line.strip()
            if stripped.startswith(self.fence) and not stripped.strip(self.fence[0]):
                self._close_fence()
            else:
                self.fence_lines.append(line)
            return
        if line.lstrip().startswith(">"):
            line = _QUOTE_RE.sub("", line)
        if not line.strip():
            self._flush_para()
            self.blank = True
            return
        fence = _FENCE_RE.match(line)
        if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):  # ```x``` is inline code
            self._open_fence(fence.group(1), fence.group(2))
            return
        found = atx_heading(line)
        if found:
            self._heading(*found)
            return
        if _RULE_RE.match(line) or _is_table_row(line):
            self._break()
            return
        item = _ITEM_RE.match(line)
        if item:
            self._list_item(len(item.group(1)), item.group(2))
            return
        self._text(line)

    def _break(self) -> None:
        self._flush_para()
        self._close_item()
        self.lead = None
        self.blank = False

    def _heading(self, level: int, name: str) -> None:
        self._break()
        kind = _classify(_clean(name))
        if kind is not None:
            self.kind, self.kind_level = kind, level
        elif level == 1:
            self.kind, self.kind_level = self.base, 0
        elif level <= self.kind_level:
            self.kind, self.kind_level = _Kind.OTHER, level
        # else: an unnamed sub-heading inherits the kind of its section

    def _list_item(self, indent: int, body: str) -> None:
        if body.startswith(">"):
            body = _QUOTE_RE.sub("", body)
        self._flush_para()
        self.lead = None
        if self.item is not None and indent >= self.item.indent + 2:
            self.item.segments.append(("sub", body))
        else:
            self._close_item()
            self.item = _Item(self.kind, indent, body)
        self.blank = False

    def _text(self, line: str) -> None:
        indent = len(line) - len(line.lstrip())
        if self.item is not None and (not self.blank or indent >= 2):
            segments = self.item.segments
            if segments and segments[-1][0] == "sub":
                if len(segments[-1][1]) < _MAX_RAW_CHARS:
                    segments[-1] = ("sub", f"{segments[-1][1]} {line.strip()}")
            elif segments:
                segments.append(("text", line.strip()))
            elif len(self.item.text) < _MAX_RAW_CHARS:
                self.item.text = f"{self.item.text} {line.strip()}"
            self.blank = False
            return
        self._close_item()
        if not self.para:
            self.para_kind = self.kind
        self.para.append(line.strip())
        self.lead = None
        self.blank = False

    def _flush_para(self) -> None:
        if not self.para:
            return
        joined = " ".join(self.para)
        self.para = []
        sentences = _sentences(_clean(joined[:_MAX_RAW_CHARS]))
        if len(joined) > _MAX_RAW_CHARS:
            sentences = sentences[:-1]  # the last one is cut off
        self.out.extend(_Piece(False, self.para_kind, s) for s in sentences)
        self.lead = (self.para_kind, sentences[-1]) if sentences else None

    def _close_item(self) -> None:
        if self.item is None:
            return
        item, self.item = self.item, None
        self.out.append(_Piece(True, item.kind, item.render()))

    def _open_fence(self, marker: str, info: str) -> None:
        self._flush_para()
        self.fence = marker
        words = info.strip().lower().split()
        self.fence_lang = words[0].strip("{}.") if words else ""
        self.fence_lines = []
        self.fence_owner = "item" if self.item is not None else "lead" if self.lead is not None else None

    def _close_fence(self) -> None:
        commands = _commands(self.fence_lines, self.fence_lang)
        owner, self.fence, self.fence_lines = self.fence_owner, None, []
        self.blank = False
        if not commands:
            return
        block = "; ".join(_code(c) for c in commands)
        if owner == "item" and self.item is not None:
            self.item.segments.append(("cmd", block))
        elif owner == "lead" and self.lead is not None:
            kind, sentence = self.lead
            self.out.append(_Piece(True, kind, _glue(sentence, block)))
        else:
            self.out.append(_Piece(True, self.kind, block))
        self.lead = None


def _tier(piece: _Piece) -> int | None:
    """How good a piece is as a step (lower is better); None if it is never a step."""
    if piece.is_item:
        if piece.kind in _ACTION_KINDS:
            return 0
        return None if piece.kind is _Kind.INFO else 1
    if not _informative(piece.text):
        return None
    return 3 if piece.kind is _Kind.INFO else 2


@dataclass(frozen=True)
class _Candidate:
    runbook_id: str
    rank: int  # of the runbook in the retrieved order
    pos: tuple[int, int]  # (chunk_no, index in the chunk)
    tier: int
    kind: _Kind
    text: str
    terms: frozenset[str] = frozenset()
    score: float = 0.0
    matches: int = 0

    def with_terms(self, terms: frozenset[str]) -> _Candidate:
        return _Candidate(self.runbook_id, self.rank, self.pos, self.tier, self.kind, self.text, terms)

    def with_score(self, score: float, matches: int) -> _Candidate:
        return _Candidate(
            self.runbook_id, self.rank, self.pos, self.tier, self.kind, self.text, self.terms, score, matches
        )


def _pick(candidates: Sequence[_Candidate], quota: int) -> list[_Candidate]:
    """Up to ``quota`` candidates of one runbook (all of one tier), best first within each group."""
    if quota <= 0 or not candidates:
        return []
    if candidates[0].tier != 0:
        if candidates[0].tier == 1:
            return sorted(candidates, key=lambda c: (-c.score, c.pos))[:quota]
        # Sentence fallback: the first informative sentences, action sections first.
        by_section = sorted(candidates, key=lambda c: (c.kind is _Kind.INFO, c.pos))
        per_chunk: dict[int, int] = {}
        chosen: list[_Candidate] = []
        for c in by_section:
            if per_chunk.get(c.pos[0], 0) < _MAX_SECTION_SENTENCES:
                per_chunk[c.pos[0]] = per_chunk.get(c.pos[0], 0) + 1
                chosen.append(c)
        return chosen[:quota]
    order = (_Kind.MITIGATE, _Kind.DIAGNOSE, _Kind.VERIFY)
    groups = {
        k: sorted((c for c in candidates if c.kind is k), key=lambda c: (-c.score, c.pos)) for k in order
    }
    take = {
        _Kind.MITIGATE: min(len(groups[_Kind.MITIGATE]), (quota + 1) // 2),
        _Kind.DIAGNOSE: min(len(groups[_Kind.DIAGNOSE]), quota // 2),
        _Kind.VERIFY: 0,
    }
    left = quota - sum(take.values())
    for k in order:
        extra = min(len(groups[k]) - take[k], left)
        take[k] += extra
        left -= extra
    return [c for k in order for c in groups[k][: take[k]]]


class OfflineRecommender:
    """Builds a recommendation from the retrieved runbook text itself: extractive, grounded, deterministic."""

    def __init__(self, *, max_steps: int = 6) -> None:
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self._max_steps = max_steps

    @property
    def name(self) -> str:
        return SOURCE

    @property
    def remote(self) -> bool:
        return False

    @property
    def max_steps(self) -> int:
        return self._max_steps

    def recommend(
        self, log: str, chunks: Sequence[RunbookChunk], titles: Mapping[str, str]
    ) -> Recommendation | None:
        """Steps lifted from ``chunks`` (best runbook first), each citing its runbook; None if none can be."""
        if not chunks:
            return None
        ranks: dict[str, int] = {}
        by_runbook: dict[str, list[RunbookChunk]] = {}
        seen: set[tuple[str, int]] = set()
        for chunk in chunks:
            if (chunk.runbook_id, chunk.chunk_no) in seen:
                continue
            seen.add((chunk.runbook_id, chunk.chunk_no))
            ranks.setdefault(chunk.runbook_id, len(ranks))
            by_runbook.setdefault(chunk.runbook_id, []).append(chunk)

        candidates = self._candidates(by_runbook, ranks, titles)
        candidates = _scored(candidates, _log_terms(log))
        picked = self._select(candidates, len(ranks))
        if not picked:
            return None

        best = chunks[0].runbook_id
        cited = sorted({c.runbook_id for c in picked}, key=ranks.__getitem__)
        title = _title(best, by_runbook[best], titles)
        listed = f"runbook: {cited[0]}" if len(cited) == 1 else "runbooks: " + ", ".join(cited)
        summary = f'Likely "{title}" (runbook {best}). Steps below are taken from {listed}.'
        steps = [_render(c) for c in sorted(picked, key=lambda c: (c.kind, c.rank, c.pos))]
        return Recommendation(summary=summary, steps=steps, source=SOURCE, runbook_ids=cited)

    @staticmethod
    def _candidates(
        by_runbook: Mapping[str, Sequence[RunbookChunk]], ranks: Mapping[str, int], titles: Mapping[str, str]
    ) -> list[_Candidate]:
        """Every usable, deduplicated piece of every runbook, keeping only each runbook's best tier."""
        seen_keys: set[str] = set()
        out: list[_Candidate] = []
        for runbook_id, rank in ranks.items():
            title = titles.get(runbook_id) or ""
            mine: list[_Candidate] = []
            for chunk_no, heading, text in _sections(by_runbook[runbook_id]):
                pieces = _ChunkParser(_heading_kind(heading, title)).parse(text)
                for index, piece in enumerate(pieces):
                    tier = _tier(piece)
                    step = _truncate(piece.text)
                    if tier is None or (piece.is_item and not _actionable(step)):
                        continue
                    key = _KEY_RE.sub(" ", step.lower()).strip()
                    if not key or key in seen_keys:
                        continue
                    seen_keys.add(key)
                    mine.append(_Candidate(runbook_id, rank, (chunk_no, index), tier, piece.kind, step))
            if mine:
                best_tier = min(c.tier for c in mine)
                out.extend(c.with_terms(_terms(c.text)) for c in mine if c.tier == best_tier)
        return out

    def _select(self, candidates: Sequence[_Candidate], runbooks: int) -> list[_Candidate]:
        budget = self._max_steps
        primary = [c for c in candidates if c.rank == 0]
        others = [c for c in candidates if c.rank > 0 and c.tier <= 2]
        # Up to a third of the budget for other runbooks' steps that clearly match the log.
        strong = sorted((c for c in others if c.matches >= 2), key=lambda c: (-c.score, c.rank, c.pos))
        picked = strong[: budget // 3]
        picked = _pick(primary, budget - len(picked)) + picked
        # Room left (a short best runbook): other runbooks' steps that match the log at all, by rank;
        # if still nothing at all, any of their steps rather than none.
        _fill(picked, [c for c in others if c.matches > 0], budget, runbooks)
        if not picked:
            _fill(picked, others, budget, runbooks)
        return picked


def _fill(picked: list[_Candidate], pool: Sequence[_Candidate], budget: int, runbooks: int) -> None:
    """Top ``picked`` up to ``budget`` from ``pool``, runbook by runbook in rank order."""
    taken = {(c.runbook_id, c.pos) for c in picked}
    for rank in range(1, runbooks):
        left = budget - len(picked)
        if left <= 0:
            return
        mine = [c for c in pool if c.rank == rank and (c.runbook_id, c.pos) not in taken]
        picked.extend(_pick(mine, left))


def _sections(chunks: Sequence[RunbookChunk]) -> list[tuple[int, str, str]]:
    """``(first chunk_no, heading, text)`` of one runbook, in document order.

    Consecutive chunks with the same heading are pieces of one long section (split by the chunker,
    possibly in the middle of a list item): they are rejoined so that an item and its command stay one.
    """
    out: list[tuple[int, str, str]] = []
    last_no: int | None = None
    for chunk in sorted(chunks, key=lambda c: c.chunk_no):
        if out and last_no is not None and chunk.chunk_no == last_no + 1 and chunk.heading == out[-1][1]:
            first, heading, text = out[-1]
            out[-1] = (first, heading, f"{text}\n{chunk.text}")
        else:
            out.append((chunk.chunk_no, chunk.heading, chunk.text))
        last_no = chunk.chunk_no
    return out


def _log_terms(log: str) -> frozenset[str]:
    if len(log) > _LOG_HEAD_CHARS + _LOG_TAIL_CHARS:
        log = f"{log[:_LOG_HEAD_CHARS]}\n{log[-_LOG_TAIL_CHARS:]}"
    return _terms(log)


def _scored(candidates: Sequence[_Candidate], log_terms: frozenset[str]) -> list[_Candidate]:
    """Candidates with their IDF-weighted overlap with the log (IDF over the candidates themselves)."""
    if not candidates or not log_terms:
        return list(candidates)
    df: dict[str, int] = {}
    for c in candidates:
        for term in c.terms & log_terms:
            df[term] = df.get(term, 0) + 1
    n = len(candidates)
    out: list[_Candidate] = []
    for c in candidates:
        shared = c.terms & log_terms
        score = sum(math.log(1.0 + n / df[t]) for t in shared)
        out.append(c.with_score(round(score, 6), len(shared)))
    return out


def _title(runbook_id: str, chunks: Iterable[RunbookChunk], titles: Mapping[str, str]) -> str:
    title = (titles.get(runbook_id) or "").strip()
    if not title:
        for chunk in chunks:
            title = chunk.heading.split(">")[0].strip(" \t#")
            if title:
                break
    return _SPACE_RE.sub(" ", _clean(title)) or runbook_id


def _render(c: _Candidate) -> str:
    label = _LABELS.get(c.kind)
    first = c.text.split(" ", 1)[0].lower().strip(":,.")
    prefix = f"{label}: " if label and not first.startswith(label.lower()) else ""
    return f"{prefix}{c.text} [runbook: {c.runbook_id}]"
