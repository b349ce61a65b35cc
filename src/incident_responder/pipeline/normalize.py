"""Log normalization: strip the header, mask the variables, by the tables of
``normalize_rules``.

In the style of Sentry's grouping parameterizer: a log line is reduced to a *template* by a
table of named, precompiled regular expressions. Two reports whose templates are equal are
the same kind of event; the template (with placeholder kinds erased) is hashed into the
*fingerprint* that the caller looks up before any embedding search.

Speed: header rules are merged into one alternation per header state, the token rules
into one alternation that only runs on tokens that are not plain words, and the result
for a token is memoized (log tokens repeat a lot).

Nothing here interprets the log text (no format strings, no eval); every input,
including arbitrary unicode and control characters, yields a result.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from incident_responder.pipeline.normalize_rules import (
    DEFAULT_HEADERS,
    DEFAULT_RULES,
    DIGIT,
    NORMALIZER_VERSION,
    PLACEHOLDERS,
    STATE_WORDS,
    HeaderRule,
    Rule,
)

__all__ = [
    "DEFAULT_HEADERS",
    "DEFAULT_RULES",
    "DIGIT",
    "NORMALIZER_VERSION",
    "PLACEHOLDERS",
    "STATE_WORDS",
    "HeaderRule",
    "LogNormalizer",
    "NormalizedLog",
    "Rule",
    "erase_kinds",
    "is_placeholder",
    "is_state_word",
    "normalizer_without",
    "rule_names",
]

MAX_LINES: Final = 200  # lines kept from one report (stack traces can be huge)
MAX_LINE_CHARS: Final = 4000  # characters kept from one line
_PH_RE: Final = re.compile(r"<(?:" + "|".join(PLACEHOLDERS) + r")>")


@dataclass(frozen=True)
class NormalizedLog:
    """A report's log as :class:`LogNormalizer` leaves it: message, template, fingerprint and the
    text to embed."""

    message: str  # header stripped, variable values kept, whitespace collapsed, lines joined by "\n"
    template: str  # message with variables masked by placeholders
    fingerprint: str  # sha256 (32 hex chars) of the template with placeholder kinds erased
    embed_text: str  # what gets embedded: the template with its placeholders removed


# control and format characters (zero-width spaces, bidi marks, BOM): read as a space
_CTRL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_DIGIT_RE: Final = re.compile(r"\d")
_TOKEN_CACHE_MAX: Final = 65536  # memoized tokens (cleared when full)
_TOKEN_CACHE_LEN: Final = 80  # longer tokens are not memoized
_TOKEN_RX_MAX: Final = 256  # merged token regexes kept; past that, one regex with every rule
# punctuation that may surround a plain word without making it a value (no quotes, "/", "@":
# those can start values of their own)
_WORD_PUNCT: Final = "()[]{}<>,;:.!?*=#&|-"


def erase_kinds(template: str) -> str:
    """The template with every placeholder written as ``<*>`` (kinds are not identity)."""
    return _PH_RE.sub("<*>", template)


def is_placeholder(token: str) -> bool:
    return _PH_RE.fullmatch(token) is not None


_STATE_WORD_RE: Final = re.compile(r"(?i:" + STATE_WORDS + r")")
_STATE_WRAP: Final = "()[]{}<>\"'`,;:.!?*=#&|\\"


def is_state_word(token: str) -> bool:
    """Whether ``token`` (quotes, brackets and punctuation around it aside) says what happened or
    which state something is in: ``down``, ``'Inactive'``, ``"on-wake"``, ``deregistered``.

    The normalizer never masks one; two templates that differ in one are two incidents, however
    alike the rest (what template likeness and embeddings alone would not see)."""
    word = token.strip(_STATE_WRAP)
    return bool(word) and _STATE_WORD_RE.fullmatch(word) is not None


@dataclass(frozen=True)
class _TextRule:
    regex: re.Pattern[str]
    replacement: str
    hint: re.Pattern[str] | None  # the hints as one literal alternation; None: always run


class LogNormalizer:
    """Turns one raw report (one or many lines) into message, template and fingerprint.

    Safe to share between threads: its caches are plain dicts whose entries any thread
    would compute identically (a token memo, and the merged regexes built on first use).
    """

    def __init__(
        self, rules: Sequence[Rule] = DEFAULT_RULES, header_rules: Sequence[HeaderRule] = DEFAULT_HEADERS
    ) -> None:
        self._header_rules = tuple(header_rules)
        for h in self._header_rules:
            re.compile(h.pattern, h.flags)  # fail early on a bad table
        # one merged regex per header state (the set of kinds already stripped), built lazily
        self._header_rx: dict[frozenset[str], tuple[re.Pattern[str], tuple[HeaderRule, ...]] | None] = {}

        def text_rule(r: Rule) -> _TextRule:
            hint = re.compile("|".join(re.escape(h) for h in r.hint)) if r.hint else None
            return _TextRule(re.compile(r.pattern, r.flags), r.replacement, hint)

        self._pre = tuple(text_rule(r) for r in rules if r.scope == "text")
        self._post = tuple(text_rule(r) for r in rules if r.scope == "template")
        self._token_rules = tuple(r for r in rules if r.scope == "token")
        for r in self._token_rules:
            if "\\" in r.replacement:
                raise ValueError(f"token rule {r.name!r}: replacement must be plain text")
            re.compile(r.pattern, r.flags)
        # every distinct hint gets a bit (DIGIT is bit 0); a token's bits pick the merged regex
        hints = sorted({h for r in self._token_rules for h in r.hint} - {DIGIT})
        self._hint_bit: dict[str, int] = {DIGIT: 1} | {h: 2 << i for i, h in enumerate(hints)}
        self._hint_bits = tuple((bit, h) for h, bit in self._hint_bit.items() if h != DIGIT)
        self._token_rx: dict[int, tuple[re.Pattern[str], dict[str, str]] | None] = {}
        # keyed by (scope, token): callers pass the tenant as scope, so that the speed of one
        # tenant's normalization never depends on what another tenant sent
        self._token_cache: dict[tuple[str, str], str] = {}

    # ----------------------------------------------------------------- public
    def normalize(self, log: str, scope: str = "") -> NormalizedLog:
        """``log`` reduced to message, template and fingerprint (``scope``: whose memo it uses)."""
        messages: list[str] = []
        templates: list[str] = []
        for raw in log.splitlines()[:MAX_LINES]:
            raw = raw[:MAX_LINE_CHARS]
            if not raw.isprintable():
                raw = _CTRL_RE.sub(" ", raw)
            line = " ".join(raw.split())  # collapses every kind of unicode whitespace
            if not line:
                continue
            message = self.strip_header(line)
            messages.append(message)
            templates.append(self.mask(message, scope))
        message = "\n".join(messages)
        template = "\n".join(templates)
        erased = erase_kinds(template)
        fingerprint = hashlib.sha256(erased.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        embed_text = " ".join(erased.replace("<*>", " ").split()) or template
        return NormalizedLog(
            message=message, template=template, fingerprint=fingerprint, embed_text=embed_text
        )

    def strip_header(self, line: str) -> str:
        """The line without its header (one line, whitespace already collapsed)."""
        pos = 0
        seen: frozenset[str] = frozenset()
        n = len(line)
        while pos < n:
            compiled = self._header_regex(seen)
            if compiled is None:
                break
            regex, rules = compiled
            m = regex.match(line, pos)
            if m is None or m.lastgroup is None or m.end() == pos:
                break
            rule = rules[int(m.lastgroup[1:])]
            pos = m.end()
            if rule.final:
                break
            seen = seen | frozenset(rule.kind.split())
        message = line[pos:].strip()
        # A line that is header only (a bare timestamp, a lone level) keeps its text.
        return message if message else line

    def mask(self, message: str, scope: str = "") -> str:
        """The message with its variable parts replaced by placeholders."""
        text = message
        lower = text.lower()
        for r in self._pre:
            if r.hint is None or r.hint.search(lower):
                text = r.regex.sub(r.replacement, text)
        cache = self._token_cache
        out: list[str] = []
        prev = ""
        for tok in text.split(" "):
            # plain words (also with brackets/punctuation around them) are never masked
            if not tok.strip(_WORD_PUNCT).isalpha():
                if tok.isdigit():
                    masked = "<num>"
                elif (hit := cache.get((scope, tok))) is not None:
                    masked = hit
                else:
                    masked = self._mask_token(tok)
                    if len(tok) <= _TOKEN_CACHE_LEN:
                        if len(cache) >= _TOKEN_CACHE_MAX:
                            cache.clear()
                        cache[(scope, tok)] = masked
                if masked == prev and "<" in masked:
                    continue  # "@<hex> @<hex> @<hex>": a run of one variable token is one value
                tok = masked
            out.append(tok)
            prev = tok
        text = " ".join(out)
        for r in self._post:
            if r.hint is None or r.hint.search(text):
                text = r.regex.sub(r.replacement, text)
        return text

    # ----------------------------------------------------------------- internals
    def _header_regex(self, seen: frozenset[str]) -> tuple[re.Pattern[str], tuple[HeaderRule, ...]] | None:
        if seen in self._header_rx:
            return self._header_rx[seen]
        rules = tuple(h for h in self._header_rules if not h.after or seen.intersection(h.after))
        compiled = None
        if rules:
            alternation = "|".join(f"(?P<h{i}>{h.pattern})" for i, h in enumerate(rules))
            compiled = (re.compile(alternation, _merged_flags(h.flags for h in rules)), rules)
        self._header_rx[seen] = compiled
        return compiled

    def _mask_token(self, tok: str) -> str:
        key = 0
        if _DIGIT_RE.search(tok) is not None:
            key = 1
        for bit, hint in self._hint_bits:
            if hint in tok:
                key |= bit
        compiled = self._token_rx.get(key)
        if compiled is None:
            if len(self._token_rx) >= _TOKEN_RX_MAX:
                key = -1  # all bits: every rule (hints only ever skip rules that cannot match)
                compiled = self._token_rx.get(key)
            if compiled is None:
                compiled = self._compile_tokens(key)
        if compiled is None:
            return tok
        regex, replacements = compiled
        return regex.sub(lambda m: replacements[m.lastgroup or ""], tok)

    def _compile_tokens(self, key: int) -> tuple[re.Pattern[str], dict[str, str]] | None:
        """The merged regex of the token rules whose hints are all present in ``key``."""
        active = [
            (i, r)
            for i, r in enumerate(self._token_rules)
            if not r.hint or any(key & self._hint_bit[h] for h in r.hint)
        ]
        compiled = None
        if active:
            alternation = "|".join(f"(?P<t{i}>{r.pattern})" for i, r in active)
            regex = re.compile(alternation, _merged_flags(r.flags for _, r in active))
            compiled = (regex, {f"t{i}": r.replacement for i, r in active})
        self._token_rx[key] = compiled
        return compiled


def _merged_flags(flags: Iterable[int]) -> int:
    merged = 0
    for f in flags:
        merged |= f
    return merged


def rule_names() -> set[str]:
    """Every rule of the normalizer table, by name (what ``without_rules`` may name)."""
    return {r.name for r in DEFAULT_RULES} | {h.name for h in DEFAULT_HEADERS}


def normalizer_without(names: Sequence[str]) -> tuple[LogNormalizer, str]:
    """The normalizer table without the rules ``names``, and the version of that table (the
    default version when nothing is left out: templates compare only within one version)."""
    unknown = sorted(set(names) - rule_names())
    if unknown:
        raise ValueError(f"unknown normalizer rules: {', '.join(unknown)}")
    if not names:
        return LogNormalizer(), NORMALIZER_VERSION
    drop = set(names)
    normalizer = LogNormalizer(
        [r for r in DEFAULT_RULES if r.name not in drop], [h for h in DEFAULT_HEADERS if h.name not in drop]
    )
    digest = hashlib.sha256(",".join(sorted(drop)).encode()).hexdigest()[:8]
    return normalizer, f"{NORMALIZER_VERSION}-without-{digest}"
