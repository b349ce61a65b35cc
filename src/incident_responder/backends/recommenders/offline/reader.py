"""A forgiving line-based reader of one runbook section's Markdown: the pieces that can be
steps (list items, a list item with the commands of the code block under it, sentences of
paragraphs), each with the kind of section it stands in."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from incident_responder.backends.recommenders.offline.sections import Kind, classify
from incident_responder.text.markdown import atx_heading, plain_inline

# Bounds that keep one call fast and its output readable whatever the input looks like.
_MAX_CHUNK_CHARS = 20_000
_MAX_LINE_CHARS = 2_000
_MAX_COMMANDS = 3
_MAX_COMMAND_CHARS = 300
MAX_STEP_CHARS = 600
_MAX_RAW_CHARS = 3_000  # of one paragraph or list item, before cleaning
_SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
_NON_LETTER_RE = re.compile(r"[\W\d_]+")

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


def informative(sentence: str) -> bool:
    return len(sentence.split()) >= 4 and _letters(sentence) >= 15


def actionable(item: str) -> bool:
    return _letters(item) >= 3 and (len(item.split()) >= 2 or "`" in item)


def truncate(text: str) -> str:
    if len(text) <= MAX_STEP_CHARS:
        return text
    cut = text[:MAX_STEP_CHARS]
    space = cut.rfind(" ")
    if space > MAX_STEP_CHARS // 2:
        cut = cut[:space]
    if cut.count("`") % 2:
        cut += "`"
    return cut.rstrip() + " …"


@dataclass
class _Item:
    kind: Kind
    indent: int
    text: str
    segments: list[tuple[str, str]] = field(default_factory=list)  # ("sub" | "cmd" | "text", raw)

    def render(self) -> str:
        out = plain_inline(_TASK_RE.sub("", self.text[:_MAX_RAW_CHARS]))
        previous = "text"
        for what, raw in self.segments:
            if len(out) > MAX_STEP_CHARS:
                break  # it will be truncated anyway
            raw = raw[:_MAX_RAW_CHARS]
            piece = raw if what == "cmd" else plain_inline(_TASK_RE.sub("", raw))
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
class Piece:
    """A candidate step extracted from one chunk, in document order."""

    is_item: bool  # a list item or a command block (else a sentence of a paragraph)
    kind: Kind
    text: str


class ChunkParser:
    """A forgiving line-based reader of one chunk's Markdown: lists, fences, paragraphs, headings."""

    def __init__(self, base: Kind) -> None:
        self.base = base
        self.kind = base
        self.kind_level = 0
        self.out: list[Piece] = []
        self.item: _Item | None = None
        self.blank = False
        self.para: list[str] = []
        self.para_kind = base
        self.lead: tuple[Kind, str] | None = None  # last sentence of the paragraph just read
        self.fence: str | None = None
        self.fence_lang = ""
        self.fence_lines: list[str] = []
        self.fence_owner: str | None = None

    def parse(self, text: str) -> list[Piece]:
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
        kind = classify(plain_inline(name))
        if kind is not None:
            self.kind, self.kind_level = kind, level
        elif level == 1:
            self.kind, self.kind_level = self.base, 0
        elif level <= self.kind_level:
            self.kind, self.kind_level = Kind.OTHER, level
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
        sentences = _sentences(plain_inline(joined[:_MAX_RAW_CHARS]))
        if len(joined) > _MAX_RAW_CHARS:
            sentences = sentences[:-1]  # the last one is cut off
        self.out.extend(Piece(False, self.para_kind, s) for s in sentences)
        self.lead = (self.para_kind, sentences[-1]) if sentences else None

    def _close_item(self) -> None:
        if self.item is None:
            return
        item, self.item = self.item, None
        self.out.append(Piece(True, item.kind, item.render()))

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
            self.out.append(Piece(True, kind, _glue(sentence, block)))
        else:
            self.out.append(Piece(True, self.kind, block))
        self.lead = None
