"""Format perturbation: grouping must not depend on the header layout a system happens to use.

Every report is re-rendered under header layouts it never had: other date and time styles
(``2024/01/05``, ``05-Jan-2024``, ``Jan 5 2024``, RFC 1123, epoch seconds and milliseconds,
ISO with ``T`` and a zone, unpadded ``9:5:3``, AM/PM), other separators (``|``, ``;``, tab,
``, ``, `` :: ``, `` - ``), bracketed fields, fields in orders no rule was written for, and
extra leading columns (counters, pids, hosts, addresses, thread names, levels) whose values
change from report to report the way real ones do. The message itself is kept. Each layout is
replayed through the real normalizer, model and dedup decision (``conftest.Grouper``), and
macro F1 and GA (as ``run_eval.py`` computes them) may drop at most ``TOLERANCE`` below those
of the original layout.

Two families of layouts: eight written out by hand, and ``RANDOM_LAYOUTS`` composed at random
(with fixed seeds) from the pieces above, so that the rules are also checked on combinations
nobody looked at. Both run on the dev set (all 2,000 reports; skipped without it) and on the
invented systems of ``conftest.SYSTEMS`` (always).
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tests.quality.conftest import (
    DEV_DIR,
    FIGURES,
    Grouper,
    Report,
    Scores,
    grouping_metrics,
    load_dev,
    score,
    synthetic_reports,
)

TOLERANCE = 0.01
SECTION = "format perturbation: macro F1 / GA, original layout vs re-rendered"
MON = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DOW = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class Fields:
    """The header values of one re-rendered report: each varies from report to report."""

    t: datetime
    ms: int
    pid: int
    counter: int
    host: str
    ip: str
    thread: str
    worker: str
    level: str


def _fields(rng: random.Random, n: int, rep: Report, t: datetime) -> Fields:
    return Fields(
        t=t,
        ms=rng.randrange(1000),
        pid=rng.randrange(100, 65536),
        counter=1000 + n,
        host=f"node-{rng.randrange(1, 300)}",
        ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        thread=f"pool-{rng.randrange(1, 9)}-thread-{rng.randrange(1, 40)}",
        worker=f"worker-{rng.randrange(1, 64)}",
        level=rep.level,
    )


Layout = Callable[[Fields, Report], str]


def _tag(rep: Report) -> str:
    return rep.tag + " " if rep.tag else ""


def _epoch(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp())


# Written out by hand: one per kind of difference the issue names.
LAYOUTS: dict[str, Layout] = {
    "pipes, 2024/01/05, unpadded 9:5:3, host": lambda f, r: (
        f"{f.t.year}/{f.t.month:02d}/{f.t.day:02d} {f.t.hour}:{f.t.minute}:{f.t.second}.{f.ms} | {f.level}"
        f" | {f.host} | {r.message}"
    ),
    "semicolons, 05-Jan-2024, pid": lambda f, r: (
        f"{f.t.day:02d}-{MON[f.t.month - 1]}-{f.t.year} {f.t.hour}:{f.t.minute:02d}:{f.t.second:02d}"
        f";{f.pid};{f.level};{r.message}"
    ),
    "tabs, epoch seconds, worker": lambda f, r: f"{_epoch(f.t)}\t{f.worker}\t{f.level}\t{r.message}",
    "counter, [Jan 5 2024 ...], [thread], tag": lambda f, r: (
        f"{f.counter} [{MON[f.t.month - 1]} {f.t.day} {f.t.year} {f.t.hour}:{f.t.minute:02d}:"
        f"{f.t.second:02d}] [{f.thread}] {f.level} {_tag(r)}{r.message}"
    ),
    "pid, host, ISO T +01:00, tag": lambda f, r: (
        f"{f.pid} {f.host} {f.t:%Y-%m-%dT%H:%M:%S}.{f.ms:03d}+01:00 {f.level} {_tag(r)}{r.message}"
    ),
    "epoch millis, level first, [worker], address": lambda f, r: (
        f"{_epoch(f.t) * 1000 + f.ms} {f.level} [{f.worker}] {f.ip} - {r.message}"
    ),
    "RFC 1123 date, comma fields": lambda f, r: (
        f"{DOW[f.t.weekday()]}, {f.t.day:02d} {MON[f.t.month - 1]} {f.t.year} {f.t:%H:%M:%S} GMT, "
        f"{f.host}, {f.level}, {r.message}"
    ),
    "counter|host|pid| before the original line": lambda f, r: f"{f.counter}|{f.host}|{f.pid}|{r.log}",
}

# ---- composed at random from the pieces (fixed seeds)
RANDOM_LAYOUTS = (3, 17, 59, 113, 146)
_DATES: tuple[Callable[[datetime], str], ...] = (
    lambda t: f"{t.year}-{t.month:02d}-{t.day:02d}",
    lambda t: f"{t.year}/{t.month}/{t.day}",
    lambda t: f"{t.day:02d}.{t.month:02d}.{t.year}",
    lambda t: f"{t.month}/{t.day}/{t.year}",
    lambda t: f"{t.day:02d}-{MON[t.month - 1]}-{t.year}",
    lambda t: f"{t.day} {MON[t.month - 1]} {t.year}",
    lambda t: f"{MON[t.month - 1]} {t.day} {t.year}",
    lambda t: f"{MON[t.month - 1]} {t.day}, {t.year}",
    lambda t: f"{DOW[t.weekday()]} {MON[t.month - 1]} {t.day:02d} {t.year}",
    lambda t: f"{t.year}{t.month:02d}{t.day:02d}",
    lambda t: f"{t.month:02d}-{t.day:02d}",
)
_SEPARATORS = (" ", " | ", "|", ";", "; ", "\t", ", ", " :: ", " - ")
_COLUMNS = ("level", "host", "pid", "thread", "counter", "ip")


def random_layout(seed: int) -> tuple[str, Layout]:
    """A layout composed from random pieces: a date/time style, a separator, 1-4 extra columns
    in random order around the timestamp, some of them bracketed, a tag or not."""
    rng = random.Random(seed)
    kind = rng.choice(("date time", "date time", "epoch", "epoch millis", "ISO T"))
    date = rng.choice(_DATES)
    padded, fraction, am_pm = rng.random() < 0.5, rng.choice(("", ".ms", ",us")), rng.random() < 0.2
    zone = rng.choice(("", "", "Z", " UTC", " +01:00", "+0100"))
    iso_zone = rng.choice(("Z", "+01:00", "-0500", ""))
    sep = rng.choice(_SEPARATORS)
    order = rng.sample(_COLUMNS, rng.randint(1, 4))
    order.insert(rng.randrange(len(order) + 1), "ts")
    bracketed = {col: rng.random() < 0.3 for col in order}
    with_tag = rng.random() < 0.4

    def clock(f: Fields) -> str:
        t = f.t
        hour = (t.hour % 12 or 12) if am_pm else t.hour
        text = f"{hour:02d}:{t.minute:02d}:{t.second:02d}" if padded else f"{hour}:{t.minute}:{t.second}"
        text += {"": "", ".ms": f".{f.ms:03d}", ",us": f",{f.ms:03d}123"}[fraction]
        if am_pm:
            text += " AM" if t.hour < 12 else " PM"
            return text + (" " + zone.strip() if zone else "")
        return text + zone

    def timestamp(f: Fields) -> str:
        if kind == "epoch":
            return str(_epoch(f.t))
        if kind == "epoch millis":
            return str(_epoch(f.t) * 1000 + f.ms)
        if kind == "ISO T":
            return f"{f.t:%Y-%m-%dT%H:%M:%S}.{f.ms:03d}{iso_zone}"
        return f"{date(f.t)} {clock(f)}"

    def render(f: Fields, r: Report) -> str:
        values = {
            "ts": timestamp(f),
            "level": f.level,
            "host": f.host,
            "pid": str(f.pid),
            "thread": f.thread,
            "counter": str(f.counter),
            "ip": f.ip,
        }
        parts = [f"[{values[col]}]" if bracketed[col] else values[col] for col in order]
        return sep.join(parts) + sep + (_tag(r) if with_tag else "") + r.message

    shown = "+".join(f"[{col}]" if bracketed[col] else col for col in order)
    return f"random {seed}: {kind}, {sep!r}, {shown}{', tag' if with_tag else ''}", render


ALL_LAYOUTS: dict[str, Layout] = dict(LAYOUTS) | dict(random_layout(seed) for seed in RANDOM_LAYOUTS)


def rerender(reports: Sequence[Report], layout: Layout, seed: str) -> list[str]:
    """Every report under ``layout``, with header values that vary report by report."""
    rng = random.Random(seed)
    t = datetime(2024, 1, 1)
    out = []
    for n, rep in enumerate(reports):
        t += timedelta(seconds=rng.randrange(1, 40_000))  # months, days, hours of every width
        out.append(layout(_fields(rng, n, rep, t), rep))
    return out


# --------------------------------------------------------------------------- tests
@dataclass
class Baseline:
    name: str
    reports: list[Report]
    original: Scores


@pytest.fixture(scope="module")
def dev(grouper: Grouper) -> Baseline:
    reports = load_dev()
    return Baseline("dev set", reports, score(reports, grouper.replay(reports).tickets))


@pytest.fixture(scope="module")
def invented(grouper: Grouper) -> Baseline:
    reports = synthetic_reports()
    return Baseline("invented", reports, score(reports, grouper.replay(reports).tickets))


def _check(grouper: Grouper, base: Baseline, name: str) -> None:
    logs = rerender(base.reports, ALL_LAYOUTS[name], f"{base.name}/{name}")
    got = score(base.reports, grouper.replay(base.reports, logs).tickets)
    orig = base.original
    FIGURES[SECTION].append(
        f"{base.name:<9} {name[:62]:<62} {orig.line()}  ->  {got.line()}"
        f"  (drop {orig.f1 - got.f1:+.4f} / {orig.ga - got.ga:+.4f})"
    )
    worst = {
        svc: (m["ga"], orig.per_service[svc]["ga"])
        for svc, m in got.per_service.items()
        if m["ga"] < orig.per_service[svc]["ga"] - TOLERANCE
    }
    assert got.f1 >= orig.f1 - TOLERANCE and got.ga >= orig.ga - TOLERANCE, (
        f"{name}: {got.line()} against {orig.line()} in the original layout; GA per service "
        f"(perturbed, original): {worst}; e.g. {logs[0][:120]!r}"
    )


@pytest.mark.parametrize("name", list(ALL_LAYOUTS))
def test_invented_systems_group_alike_under_unseen_layouts(
    grouper: Grouper, invented: Baseline, name: str
) -> None:
    _check(grouper, invented, name)


@pytest.mark.parametrize("name", list(ALL_LAYOUTS))
def test_dev_set_groups_alike_under_unseen_layouts(grouper: Grouper, dev: Baseline, name: str) -> None:
    _check(grouper, dev, name)


def test_invented_systems_are_grouped_well_to_begin_with(invented: Baseline) -> None:
    """The invented baseline is near perfect: the perturbation checks above measure something."""
    FIGURES[SECTION].insert(0, f"{'invented':<9} {'(original layout)':<62} {invented.original.line()}")
    assert invented.original.ga >= 0.95 and invented.original.f1 >= 0.95, invented.original.per_service


def test_the_layouts_really_change_every_header(invented: Baseline) -> None:
    """No re-rendered line keeps its original header, and messages are kept verbatim."""
    for name, layout in ALL_LAYOUTS.items():
        logs = rerender(invented.reports, layout, name)
        assert all(log.endswith(rep.message) for log, rep in zip(logs, invented.reports, strict=True))
        assert all(log != rep.log for log, rep in zip(logs, invented.reports, strict=True)), name


def test_metrics_are_the_runners() -> None:
    """``grouping_metrics`` gives what ``run_eval.py`` gives (read from the dev set's folder)."""
    path = DEV_DIR / "run_eval.py"
    if not path.is_file():
        pytest.skip(f"run_eval.py not found in {DEV_DIR}")
    spec = importlib.util.spec_from_file_location("run_eval", path)
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    rng = random.Random(5)
    for _ in range(50):
        truth = [rng.choice("abcde") for _ in range(40)]
        pred = [rng.choice("vwxyz") if rng.random() < 0.3 else t.upper() for t in truth]
        theirs = runner.grouping_metrics(truth, pred)
        ours = grouping_metrics(truth, pred)
        assert ours["ga"] == pytest.approx(theirs["ga"])
        assert ours["f1"] == pytest.approx(theirs["pairwise_f1"])
