"""Adversarial inputs for regular expressions and the cost-scaling check that uses them.

A backtracking engine goes superlinear where one position can be scanned again from many
starting points: a long run of what a greedy part accepts, followed by what makes the
match fail. The inputs are built from each pattern's own pieces (its literal runs and a
member of every character class it uses, parsed with the standard library's ``re`` parser),
repeated to a given length, alone, in pairs, behind a prefix that starts a match, and
followed by a character that breaks it. A new rule gets its adversarial inputs without
anyone writing them.

Cost is checked as a ratio, never as an absolute time: the time at 10x the length over the
time at 1x stays near 10 for linear work and near 100 for quadratic work.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator

try:  # Python 3.11+
    import re._constants as sre_constants  # type: ignore[import-not-found]
    import re._parser as sre_parse  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

# One member of each class the engine knows, and of the printable ASCII punctuation.
_CATEGORY_MEMBERS = {
    sre_constants.CATEGORY_DIGIT: "7",
    sre_constants.CATEGORY_NOT_DIGIT: "a",
    sre_constants.CATEGORY_SPACE: " ",
    sre_constants.CATEGORY_NOT_SPACE: "x",
    sre_constants.CATEGORY_WORD: "w",
    sre_constants.CATEGORY_NOT_WORD: "-",
    sre_constants.CATEGORY_LINEBREAK: "\n",
    sre_constants.CATEGORY_NOT_LINEBREAK: "y",
}
GENERIC_UNITS: tuple[str, ...] = (
    " ",
    "\t",
    "\n",
    "a",
    "Z",
    "7",
    "f",
    "é",
    "\u200b",
    *"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "a ",
    "7 ",
    "a.",
    "7.",
    "7:",
    "a-",
    "a=",
    "[a",
    "a]",
    "<a>",
    "# ",
    "- ",
    "`a",
    '\\"',
    "a\n",
)
BREAKERS = ("", "\x01", " ", "!", "\n", "y", "7")


def pattern_units(pattern: str | re.Pattern[str]) -> list[str]:
    """The literal runs of ``pattern`` and one member of each of its character classes."""
    source = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    flags = pattern.flags if isinstance(pattern, re.Pattern) else 0
    found: dict[str, None] = {}
    try:
        tree = sre_parse.parse(source, flags)
    except re.error:
        return []
    _walk(tree, found)
    return [u for u in found if u]


def _walk(tree: Iterable[tuple[object, object]], found: dict[str, None]) -> None:
    run: list[str] = []

    def flush() -> None:
        if run:
            found["".join(run)] = None
            found[run[0]] = None
            run.clear()

    for op, arg in tree:
        if op is sre_constants.LITERAL:
            run.append(chr(arg))  # type: ignore[arg-type]
            continue
        flush()
        if op is sre_constants.NOT_LITERAL:
            found["x" if chr(arg) != "x" else "y"] = None  # type: ignore[arg-type]
        elif op is sre_constants.IN:
            for member in _class_members(arg):  # type: ignore[arg-type]
                found[member] = None
        elif op is sre_constants.ANY:
            found["."] = None
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT):
            _walk(arg[2], found)  # type: ignore[index]
        elif op is sre_constants.SUBPATTERN:
            _walk(arg[-1], found)  # type: ignore[index]
        elif op in (sre_constants.ATOMIC_GROUP,):
            _walk(arg, found)  # type: ignore[arg-type]
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            _walk(arg[1], found)  # type: ignore[index]
        elif op is sre_constants.BRANCH:
            for branch in arg[1]:  # type: ignore[index]
                _walk(branch, found)
        elif op is sre_constants.GROUPREF_EXISTS:
            for branch in arg[1:]:  # type: ignore[index]
                if branch is not None:
                    _walk(branch, found)
    flush()


def _class_members(items: Iterable[tuple[object, object]]) -> Iterator[str]:
    negate = False
    for op, arg in items:
        if op is sre_constants.NEGATE:
            negate = True
        elif op is sre_constants.LITERAL and not negate:
            yield chr(arg)  # type: ignore[arg-type]
        elif op is sre_constants.RANGE and not negate:
            low, high = arg  # type: ignore[misc]
            yield chr(low)
            yield chr(high)
        elif op is sre_constants.CATEGORY:
            member = _CATEGORY_MEMBERS.get(arg)  # type: ignore[call-overload]
            if member:
                yield member
    if negate:
        yield "x"
        yield " "


def inputs(units: Iterable[str], length: int, *, pairs: int = 12) -> Iterator[tuple[str, str]]:
    """``(name, text)`` of ``length`` characters: each unit repeated, repeated after a prefix
    of another unit, and the first ``pairs`` units alternated pairwise; each followed by
    characters that break a match. Names say how a text was built."""
    units = list(dict.fromkeys(u for u in units if u))
    for unit in units:
        for breaker in BREAKERS:
            yield f"{unit!r}*n+{breaker!r}", fill(unit, length - len(breaker)) + breaker
        yield f"'x'+{unit!r}*n", "x" + fill(unit, length - 1)
    for a, b in itertools.permutations(units[:pairs], 2):
        for breaker in BREAKERS:
            yield f"{a!r}+{b!r}*n+{breaker!r}", a + fill(b, length - len(a) - len(breaker)) + breaker
            head = a + "x"
            yield f"{head!r}+{b!r}*n+{breaker!r}", head + fill(b, length - len(head) - len(breaker)) + breaker
        yield f"({a!r}{b!r})*n", fill(a + b, length)
        yield f"{a!r}*n/2+{b!r}*n/2", fill(a, length // 2) + fill(b, length - length // 2)


def fill(unit: str, length: int) -> str:
    if length <= 0:
        return ""
    return (unit * (length // len(unit) + 1))[:length]


def seconds_per_call(
    fn: Callable[[str], object], text: str, *, budget: float = 0.002, rounds: int = 3
) -> float:
    """The fastest of ``rounds`` timings of ``fn(text)``, each repeating the call until it took
    ``budget`` seconds in all (short calls are timed in bulk, not one by one). A call that
    alone takes many times the budget is timed once: noise is small beside it."""
    best = float("inf")
    for _ in range(rounds):
        calls = 0
        started = time.perf_counter()
        while True:
            fn(text)
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= budget:
                break
        best = min(best, elapsed / calls)
        if calls == 1 and elapsed > 10 * budget:
            break
    return best


def scaling(fn: Callable[[str], object], small: str, large: str, *, bound: float = 25.0) -> float:
    """``time(fn(large)) / time(fn(small))``. A ratio above ``bound`` but near it is measured
    again (up to twice): a busy machine can slow one call; a clearly superlinear one is not."""
    ratio = float("inf")
    for _ in range(3):
        ratio = min(ratio, seconds_per_call(fn, large) / seconds_per_call(fn, small))
        if ratio <= bound or ratio > 3 * bound:
            break
    return ratio
