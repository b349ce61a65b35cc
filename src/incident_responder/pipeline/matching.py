"""The dedup decision rule: does a report join an earlier ticket, and by which evidence?

Pure functions, no I/O. The caller has already looked for an exact fingerprint match
(tier 1) and, failing that, found the nearest earlier reports of the same tenant and
service by embedding (one stored vector per distinct template per ticket). Here:

* tier 2, ``"template"``: Drain-style template likeness (:func:`template_similarity`)
  of at least ``template_similarity``, and a cosine of at least ``template_min_cosine``
  (a cheap guard against two unrelated messages that happen to share a skeleton);
* tier 3, ``"semantic"``: cosine of at least ``auto_merge`` *and* some template
  likeness (``semantic_min_template``); never when two different tickets are about
  equally close (``ambiguity_margin``): merging two incidents is worse than a duplicate;
* otherwise a new ticket, with the tickets whose cosine reaches ``related`` listed as
  related (never merged).

People's corrections come before any threshold: a candidate whose ticket had a form like this
report's split off (``Candidate.cannot_link``) is never joined, and a match to a form a merge
or split put where it is counts as a ``"correction"``. Every decision carries its evidence:
the score, the threshold it passed, both templates and the tokens in which they differ.

``DEFAULT_THRESHOLDS`` were calibrated with ``scripts/tune_dedup.py`` on the dev set.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from incident_responder.pipeline.normalize import erase_kinds, is_state_word

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Candidate",
    "MatchDecision",
    "MatchThresholds",
    "choose_match",
    "differing_tokens",
    "template_similarity",
]

Method = Literal["fingerprint", "template", "semantic", "alert", "correction"]


@dataclass(frozen=True)
class Candidate:
    """An earlier report of the same tenant+service, as the index found it."""

    ticket_id: str
    template: str  # the stored template of an earlier report in that ticket
    similarity: float  # cosine similarity between this report's embedding and that report's
    # False when the stored template was made by other normalizer rules: it is not compared
    # with this report's, so the report never joins it by template or semantic match (only
    # listed as related); ``reindex`` brings old tickets to the current rules.
    comparable: bool = True
    via: str | None = None  # "merge" / "split": a person's correction put this form in its ticket
    cannot_link: tuple[str, ...] = ()  # templates split off its ticket: never joined again


@dataclass(frozen=True)
class MatchThresholds:
    """How close a report must be to an earlier one to join its ticket (see the module doc)."""

    template_similarity: float  # template likeness needed for a "template" match
    auto_merge: float  # cosine needed for a "semantic" merge
    related: float  # looser cosine: reported as related, never merged
    template_min_cosine: float = 0.5  # a template match also needs at least this cosine
    semantic_min_template: float = 0.5  # a semantic merge also needs at least this template likeness
    ambiguity_margin: float = 0.02  # semantic: a second ticket this close in cosine -> do not merge


@dataclass(frozen=True)
class MatchDecision:
    """Which ticket a report joins (None: a new one), and the evidence."""

    ticket_id: str | None  # None -> a new ticket
    method: Method | None
    similarity: float | None  # the similarity that justified it (1.0 for fingerprint)
    template: str  # the matched template (or the query's own if no match)
    related_ticket_ids: tuple[str, ...]
    threshold: float | None = None  # what ``similarity`` had to reach
    report_template: str = ""  # the report's own template
    differing: tuple[str, ...] = ()  # tokens of the two templates that differ
    refused: tuple[str, ...] = ()  # tickets a split forbade this report to join

    def why(self) -> str:
        """One line saying why the report joined its ticket."""
        if self.method in ("fingerprint", "alert"):
            return (
                "the source alert joined it before"
                if self.method == "alert"
                else f"same normalized form: {_short(self.report_template)}"
            )
        score = f"{self.similarity or 0.0:.3f} >= {self.threshold or 0.0:.3f}"
        differing = f"; differs in {' '.join(self.differing)}" if self.differing else ""
        return f"{self.method} {score}: {_short(self.report_template)} ~ {_short(self.template)}{differing}"


MAX_DIFFERING = 12  # differing tokens named in an explanation
_SHORT = 160  # characters of a template in an explanation line


def _short(text: str) -> str:
    return text if len(text) <= _SHORT else text[: _SHORT - 1] + "…"


def differing_tokens(report: str, matched: str) -> tuple[str, ...]:
    """The tokens in which two templates differ (``-`` the matched one's, ``+`` the report's),
    aligned on their longest common runs; at most ``MAX_DIFFERING`` (both cut to
    ``MAX_DP_TOKENS`` tokens, so the cost is bounded)."""
    a, b = matched.split()[:MAX_DP_TOKENS], report.split()[:MAX_DP_TOKENS]
    out: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        out += [f"-{t}" for t in a[i1:i2]] + [f"+{t}" for t in b[j1:j2]]
        if len(out) >= MAX_DIFFERING:
            break
    return tuple(out[:MAX_DIFFERING])


# Calibrated with scripts/tune_dedup.py on the dev set:
# - template_similarity 0.92: the most tolerant value where quality is still flat; lower values
#   merge "Failed none" into "Failed password" (one word in 11 tokens) and GET/POST request
#   lines. One unmasked word is forgiven only in templates of 13+ tokens.
# - auto_merge 0.97 / semantic_min_template 0.6: without template likeness the semantic tier
#   merges "user=<user>" present and absent (cosine 0.98); antonym pairs ("link up" / "link
#   down") reach cosine 0.95, hence 0.97.
# - template_min_cosine 0.5: a guard against two unrelated short messages that happen to share
#   a skeleton.
# - related 0.75: a hint only, never merged.
DEFAULT_THRESHOLDS: Final = MatchThresholds(
    template_similarity=0.92,
    auto_merge=0.97,
    related=0.75,
    template_min_cosine=0.5,
    semantic_min_template=0.6,
)

# --------------------------------------------------------------------------- template likeness
WILDCARD: Final = "<*>"
SOFT: Final = 0.75  # score of a position where the two tokens differ only in variable parts
MAX_ABSORB: Final = 8  # a placeholder may stand for up to this many tokens of the other side
MAX_DP_TOKENS: Final = 96  # longer templates of different length are not aligned (cost)

_WRAP = "()[]{}\"',;:."
# Two different state words in one place ("up"/"down", "Active"/"Inactive"): no likeness
# elsewhere makes up for it, so the templates never match.
_STATE_VETO: Final = -1000.0
_IDENTIFIER_RE: Final = re.compile(r"\d|<\*>|[A-Za-z0-9][_./@\\:-][A-Za-z0-9]")


def _tokens(template: str) -> list[str]:
    """Kind-erased tokens, runs of the same variable token collapsed to one."""
    out: list[str] = []
    for tok in erase_kinds(template).split():
        if out and tok == out[-1] and WILDCARD in tok:
            continue
        out.append(tok)
    return out


def _identifier_like(tok: str) -> bool:
    return _IDENTIFIER_RE.search(tok) is not None


def _token_score(x: str, y: str) -> float:
    """1 for equal tokens, SOFT when they differ only where values go, 0 otherwise; a veto
    (far below 0) when they differ in a word that carries state."""
    if x == y:
        return 1.0
    if _state_change(x, y):
        return _STATE_VETO
    if x == WILDCARD or y == WILDCARD:
        return SOFT
    if "=" in x and "=" in y:
        kx, vx = x.split("=", 1)
        ky, vy = y.split("=", 1)
        if kx != ky:
            return 0.0
        if not vx or not vy:
            # "key=" against "key=<*>": an empty value; against "key=word": a different message
            return SOFT if WILDCARD in vx + vy else 0.0
        return _token_score(vx, vy)
    px, py = x.strip(_WRAP), y.strip(_WRAP)
    if px == py:
        return SOFT  # same word, different punctuation around it
    if (not px and py == WILDCARD) or (not py and px == WILDCARD):
        return SOFT  # "()" against "(<*>)": the value was empty
    if px and py and _identifier_like(px) and _identifier_like(py):
        return SOFT  # two identifiers (node-<*> / storage<*> / cluster_usr_backup)
    return 0.0


def _state_change(x: str, y: str) -> bool:
    """Two different state words in one place ("up"/"down", "status=Active"/"status=Inactive"):
    what happened differs. A state word against any other token is judged as usual."""
    if "=" in x and "=" in y:
        kx, x = x.split("=", 1)
        ky, y = y.split("=", 1)
        if kx != ky:
            return False
    px, py = x.strip(_WRAP), y.strip(_WRAP)
    return px.lower() != py.lower() and is_state_word(px) and is_state_word(py)


def _absorbable(tok: str) -> bool:
    """A token that can be part of a value spanning several tokens (not a plain word)."""
    return WILDCARD in tok or _identifier_like(tok)


def _aligned(short: list[str], long: list[str]) -> float:
    """Best total score aligning ``short`` to ``long`` token by token, where a lone
    ``<*>`` of ``short`` may stand for a run of 2..MAX_ABSORB value-like tokens of
    ``long`` (scored ``SOFT``, as one position). -inf when no alignment covers both."""
    ls, ll = len(short), len(long)
    extra = ll - ls
    neg = -math.inf
    # best[i][d]: short[:i] aligned with long[:i + d], 0 <= d <= extra
    best = [[neg] * (extra + 1) for _ in range(ls + 1)]
    best[0][0] = 0.0
    for i in range(1, ls + 1):
        tok = short[i - 1]
        for d in range(extra + 1):
            j = i + d
            score = best[i - 1][d]
            if score > neg:
                score += _token_score(tok, long[j - 1])
            if tok == WILDCARD:
                for k in range(2, min(MAX_ABSORB, d + 1) + 1):
                    prev = best[i - 1][d - k + 1]
                    if prev > neg and prev + SOFT > score and all(_absorbable(t) for t in long[j - k : j]):
                        score = prev + SOFT
            best[i][d] = score
    return best[ls][extra]


def template_similarity(a: str, b: str) -> float:
    """Drain-like likeness of two templates in [0, 1].

    Same token count: the mean per-position score (1 equal, ``SOFT`` for a placeholder
    against anything or two differing identifiers, 0 for two different words). Different
    token counts: only a lone placeholder of the shorter template can make up the
    difference, by standing for a run of value-like tokens of the longer one (a value
    that spans several tokens, e.g. a list); the score is then the mean over the shorter
    template's positions. Otherwise 0: a word more or less is a different message.
    Placeholder kinds are ignored (``<ip>`` and ``<host>`` are the same slot).
    """
    ta, tb = _tokens(a), _tokens(b)
    if not ta or not tb:
        return 1.0 if ta == tb else 0.0
    if len(ta) == len(tb):
        return max(0.0, sum(_token_score(x, y) for x, y in zip(ta, tb, strict=True)) / len(ta))
    short, long = (ta, tb) if len(ta) < len(tb) else (tb, ta)
    if WILDCARD not in short or len(long) > MAX_DP_TOKENS or len(long) - len(short) > MAX_ABSORB:
        return 0.0
    return max(0.0, _aligned(short, long) / len(short))


# --------------------------------------------------------------------------- decision
def _cos(x: float) -> float:
    return x if math.isfinite(x) else -1.0


def choose_match(
    template: str, candidates: Sequence[Candidate], thresholds: MatchThresholds
) -> MatchDecision:
    """Pick the ticket this report joins (or none) from the nearest earlier reports.

    Ties prefer the stronger evidence, then the higher cosine, then the earlier
    candidate (the caller passes them best-first). Before any threshold, a candidate whose
    ticket had a form like this report's split off is set aside (never joined).
    """
    refused = {
        c.ticket_id
        for c in candidates
        if any(
            t == template or template_similarity(template, t) >= thresholds.template_similarity
            for t in c.cannot_link
        )
    }
    candidates = [c for c in candidates if c.ticket_id not in refused]
    scored = [
        (c, template_similarity(template, c.template) if c.comparable else -1.0, _cos(c.similarity))
        for c in candidates
    ]

    chosen: tuple[Candidate, float, Method] | None = None
    # tier 2: template likeness
    best_t: tuple[float, float] | None = None
    for c, tsim, cos in scored:
        if tsim >= thresholds.template_similarity and cos >= thresholds.template_min_cosine:
            key = (tsim, cos)
            if best_t is None or key > best_t:
                best_t, chosen = key, (c, tsim, "template")
    # tier 3: semantic, only when unambiguous
    if chosen is None:
        eligible = sorted(
            (
                (cos, i, c)
                for i, (c, tsim, cos) in enumerate(scored)
                if cos >= thresholds.auto_merge and tsim >= thresholds.semantic_min_template
            ),
            key=lambda r: (-r[0], r[1]),
        )
        if eligible:
            top_cos, _, top = eligible[0]
            # any other ticket about as close (eligible or not) makes the choice a coin flip
            rival = any(
                c.ticket_id != top.ticket_id and cos >= top_cos - thresholds.ambiguity_margin
                for c, _, cos in scored
            )
            if not rival:
                chosen = (top, top_cos, "semantic")

    chosen_id = chosen[0].ticket_id if chosen else None
    related: dict[str, float] = {}
    for c, _, cos in scored:
        if c.ticket_id != chosen_id and cos >= thresholds.related and cos > related.get(c.ticket_id, -2.0):
            related[c.ticket_id] = cos
    related_ids = tuple(sorted(related, key=lambda t: -related[t]))

    if chosen is None:
        return MatchDecision(
            ticket_id=None,
            method=None,
            similarity=None,
            template=template,
            related_ticket_ids=related_ids,
            report_template=template,
            refused=tuple(sorted(refused)),
        )
    cand, sim, method = chosen
    threshold = thresholds.template_similarity if method == "template" else thresholds.auto_merge
    return MatchDecision(
        ticket_id=cand.ticket_id,
        # a form a person's merge or split put there, or a split that ruled out another ticket
        method="correction" if cand.via is not None or refused else method,
        similarity=sim,
        template=cand.template,
        related_ticket_ids=related_ids,
        threshold=threshold,
        report_template=template,
        differing=differing_tokens(template, cand.template),
        refused=tuple(sorted(refused)),
    )
