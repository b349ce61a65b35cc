"""Split Markdown runbooks into heading-delimited chunks (the unit that is embedded and searched).

Rules:
- YAML (``---``) or TOML (``+++``) front matter at the top is skipped.
- ATX headings ``#`` .. ``######`` start a new section; headings inside fenced code blocks
  (```` ``` ```` / ``~~~``) are not headings (``# comment`` lines in shell snippets).
- Each chunk carries its heading path, e.g. ``"KubePodCrashLooping > Mitigation"``; text before the
  first heading gets the runbook title as its heading.
- Sections with no text are dropped; sections longer than ``max_chars`` are split on paragraph
  boundaries (then lines, then words) so that a small embedding model (256 word pieces) does not
  silently truncate them. Every character of body text ends up in some chunk.

Use :func:`embedding_text` for the string to embed for a chunk (``f"{title}\\n{heading}\\n{text}"``).
"""

from __future__ import annotations

from collections.abc import Iterator

from incident_responder.models import Runbook, RunbookChunk
from incident_responder.text.markdown import FENCE_RE, atx_heading, front_matter_title, split_front_matter

__all__ = ["chunk_runbook", "embedding_text", "runbook_title", "split_front_matter"]

DEFAULT_MAX_CHARS = 800  # nearly every chunk then fits all-MiniLM-L6-v2's 256 word pieces
# Bump when chunk boundaries or texts change, so that stored chunk vectors are re-embedded.
CHUNKER_VERSION = "1"
HEADING_SEPARATOR = " > "


def _headings(body: str) -> Iterator[tuple[str, tuple[int, str] | None]]:
    """Every line with its heading ``(level, text)``; lines in fenced code blocks are never headings."""
    fence: str | None = None
    for line in body.splitlines():
        fence_match = FENCE_RE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            yield line, None
        else:
            yield line, atx_heading(line) if fence is None else None


def runbook_title(content: str, fallback: str) -> str:
    """First ``#`` heading after the front matter, else the front matter ``title``, else ``fallback``."""
    front, body = split_front_matter(content)
    for _, found in _headings(body):
        if found and found[0] == 1 and found[1]:
            return found[1]
    return front_matter_title(front) or fallback


def _split_long(text: str, max_chars: int) -> list[str]:
    """Split ``text`` into pieces of at most ``max_chars`` on paragraph, then line, then word boundaries."""
    if len(text) <= max_chars:
        return [text]
    for separator in ("\n\n", "\n", " "):
        parts = [p for p in text.split(separator) if p.strip()]
        if len(parts) > 1:
            break
    else:
        return [text[i : i + max_chars] for i in range(0, len(text), max_chars)]
    pieces: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}{separator}{part}" if current else part
        if len(candidate) <= max_chars:
            current = candidate
            continue
        if current:
            pieces.append(current)
        if len(part) > max_chars:
            pieces.extend(_split_long(part, max_chars))
            current = ""
        else:
            current = part
    if current:
        pieces.append(current)
    return pieces


def chunk_runbook(runbook: Runbook, *, max_chars: int = DEFAULT_MAX_CHARS) -> list[RunbookChunk]:
    """Heading-delimited chunks of ``runbook.content``, numbered from 0, empty sections dropped."""
    if max_chars < 100:
        raise ValueError("max_chars must be at least 100")
    _, body = split_front_matter(runbook.content)
    sections: list[tuple[str, list[str]]] = []
    path: list[tuple[int, str]] = []
    current_heading = runbook.title.strip()
    current_lines: list[str] = []
    for line, found in _headings(body):
        if found:
            sections.append((current_heading, current_lines))
            level, title = found
            path = [(lvl, name) for lvl, name in path if lvl < level]
            if title:
                path.append((level, title))
            current_heading = HEADING_SEPARATOR.join(name for _, name in path) or runbook.title.strip()
            current_lines = []
            continue
        current_lines.append(line)
    sections.append((current_heading, current_lines))

    chunks: list[RunbookChunk] = []
    for heading, lines in sections:
        text = "\n".join(lines).strip()
        if not text:
            continue
        for piece in _split_long(text, max_chars):
            piece = piece.strip()
            if piece:
                chunks.append(
                    RunbookChunk(runbook_id=runbook.id, chunk_no=len(chunks), heading=heading, text=piece)
                )
    return chunks


def embedding_text(chunk: RunbookChunk, title: str | None = None) -> str:
    """The string to embed for ``chunk``: the runbook title (if given), its heading path, its text.

    Passing the title is recommended (and what the defaults of ``RunbookIndex`` were tuned with):
    repeating the alert name in every chunk vector makes dense search match alert names much better.
    """
    lines = [part for part in (title, chunk.heading, chunk.text) if part]
    return "\n".join(lines)
