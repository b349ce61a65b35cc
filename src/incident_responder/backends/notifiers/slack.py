"""Slack: a notice as an incoming-webhook message (fallback ``text`` plus Block Kit ``blocks``).

Everything a user or an alert source wrote (titles, services, steps, runbook titles, labels) is
untrusted here. Slack parses ``&``, ``<`` and ``>`` as control characters in every text object,
so they go out as ``&amp;`` ``&lt;`` ``&gt;``: a title ``<https://evil|click>`` or ``<!channel>``
then shows as the literal text it is. Bare ``@channel`` / ``@here`` / ``@everyone`` are
auto-parsed mentions in ``mrkdwn`` unless the text object is ``verbatim``, so every ``mrkdwn``
object is sent ``verbatim`` and the ``@`` of those words also gets a WORD JOINER (U+2060) after
it, which the plain-text fallback (always parsed) needs too. Only our own links use Slack's
``<url|text>`` syntax, and only for http(s) URLs.

Slack's limits (https://docs.slack.dev/reference/block-kit/blocks): 50 blocks a message, a
header's plain_text at most 150 characters, a text object at most 3000, a section at most 10
fields of at most 2000 each, a context block at most 10 elements. Lengths are counted after
escaping (``&`` costs five), and text cut to fit ends with "…".
"""

from __future__ import annotations

import json
import re
from typing import Any

from incident_responder.notifications.model import Channel, ChannelKind, Notice, NoticeKind, Rendered

HEADER_LIMIT = 150
TEXT_LIMIT = 3000
FIELD_LIMIT = 2000
FALLBACK_LIMIT = 300  # our choice: the fallback is the one-line notification preview
STEPS_SHOWN = 3
LINK_LIMIT = 1000  # one runbook or link; a longer URL is shown by its title alone
ELLIPSIS = "…"

PREFIXES: dict[NoticeKind, str] = {
    "new": "[NEW]",
    "regression": "[REGRESSION]",
    "flapping": "[FLAPPING]",
    "resolved": "[RESOLVED]",
    "merged": "[MERGED]",
    "test": "[TEST]",
}
# notice.links names in the order they are shown; any other name follows, sorted.
LINK_LABELS = {
    "source": "Source",
    "silence": "Silence",
    "dashboard": "Dashboard",
    "panel": "Panel",
    "ticket": "Ticket",
}

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MENTION = re.compile(r"@(?=(?:channel|here|everyone|group)\b)", re.IGNORECASE)
_WORD_JOINER = "\u2060"
_MIN_LINK_TEXT = 20
_LINKABLE = re.compile(r"https?://[^\s<>|]+", re.IGNORECASE)


class SlackNotifier:
    """Renders notices as Slack incoming-webhook messages; Slack signs nothing."""

    @property
    def kind(self) -> ChannelKind:
        return "slack"

    def render(self, channel: Channel, notice: Notice) -> Rendered:
        body = {"text": _fallback(notice), "blocks": blocks(notice)}
        return Rendered(
            url=channel.url,
            body=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            headers={"Content-Type": "application/json"},
        )

    def sign(self, channel: Channel, message_id: str, body: str, timestamp: int) -> dict[str, str]:
        return {}


def fit(text: str, limit: int) -> str:
    """``text`` safe in any Slack text object (control characters as entities, mentions
    neutralized), cut to at most ``limit`` characters, ending in "…" if cut. Cuts fall between
    escaped characters, never inside an entity."""
    pieces = _escaped_chars(text)
    if sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    budget = limit - len(ELLIPSIS)
    kept: list[str] = []
    for piece in pieces:
        if len(piece) > budget:
            break
        kept.append(piece)
        budget -= len(piece)
    return "".join(kept) + ELLIPSIS


def link(url: str | None, title: str, limit: int) -> str:
    """``<url|title>`` for an http(s) URL (the URL kept whole, the title fitted to what is
    left), else the escaped title alone; at most ``limit`` characters either way."""
    if url and _LINKABLE.fullmatch(url):
        target = url.replace("&", "&amp;")
        room = limit - len(target) - len("<|>")
        if room >= _MIN_LINK_TEXT:
            return f"<{target}|{fit(title, room)}>"
    return fit(title, limit)


def blocks(notice: Notice) -> list[dict[str, Any]]:
    """The message's blocks: header, facts, recommendation, first steps, runbooks, links and
    a context line naming the ticket, tenant and message (at most seven: Slack allows 50)."""
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _header(notice)}},
        {"type": "section", "fields": [_mrkdwn(text) for text in _facts(notice)]},
    ]
    if notice.summary and notice.summary.strip():
        head = "*Recommendation*"
        if notice.recommendation_source:
            head += f" _({fit(notice.recommendation_source, 100)})_"
        out.append(_section(f"{head}\n{fit(notice.summary, TEXT_LIMIT - len(head) - 1)}"))
    steps = [step for step in notice.steps if step.strip()][:STEPS_SHOWN]
    if steps:
        head = "*First steps*"
        each = (TEXT_LIMIT - len(head)) // STEPS_SHOWN - len("\n9. ")
        lines = [f"{n}. {fit(step, each)}" for n, step in enumerate(steps, 1)]
        out.append(_section("\n".join([head, *lines])))
    if notice.runbooks:
        lines = [f"• {link(rb.url, rb.title, LINK_LIMIT)}" for rb in notice.runbooks]
        out.append(_section(_joined("*Runbooks*\n", lines, "\n")))
    if notice.links:
        ordered = sorted(notice.links.items(), key=lambda item: _link_order(item[0]))
        items = [link(url, LINK_LABELS.get(name, name), LINK_LIMIT) for name, url in ordered]
        out.append(_section(_joined("*Links*\n", items, " · ")))
    out.append(
        {
            "type": "context",
            "elements": [
                _mrkdwn(f"ticket {fit(notice.ticket_id, 500)}"),
                _mrkdwn(f"tenant {fit(notice.tenant, 500)}"),
                _mrkdwn(f"message {fit(notice.message_id, 500)}"),
            ],
        }
    )
    return out


def _escaped_chars(text: str) -> list[str]:
    return [_ENTITIES.get(char, char) for char in _MENTION.sub("@" + _WORD_JOINER, text)]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _header(notice: Notice) -> str:
    return fit(f"{PREFIXES[notice.kind]} {_one_line(notice.title)}".strip(), HEADER_LIMIT)


def _fallback(notice: Notice) -> str:
    line = f"{PREFIXES[notice.kind]} {_one_line(notice.title)} ({_one_line(notice.service)})"
    return fit(line, FALLBACK_LIMIT)


def _facts(notice: Notice) -> list[str]:
    facts = [
        ("Service", notice.service),
        ("Status", notice.status),
        ("Severity", notice.severity or "unknown"),
        ("Occurrences", str(notice.occurrences)),
    ]
    if notice.regressions > 0:
        facts.append(("Regressions", str(notice.regressions)))
    if notice.flapping:
        facts.append(("Flapping", "yes"))
    if notice.merged_into:
        facts.append(("Merged into", notice.merged_into))
    return [f"*{label}*\n{fit(value, FIELD_LIMIT - len(label) - 3)}" for label, value in facts]


def _link_order(name: str) -> tuple[int, str]:
    known = list(LINK_LABELS)
    return (known.index(name) if name in LINK_LABELS else len(known), name)


def _joined(head: str, items: list[str], sep: str) -> str:
    """``head`` then as many ``items`` as fit in a text object, then how many were left out
    (room for that note is kept while adding each item)."""
    text = head
    for n, item in enumerate(items):
        piece = item if n == 0 else sep + item
        left_after = len(items) - n - 1
        reserve = len(f"{sep}… {left_after} more") if left_after else 0
        if len(text) + len(piece) + reserve > TEXT_LIMIT:
            return text + f"{sep}… {len(items) - n} more"
        text += piece
    return text


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}
