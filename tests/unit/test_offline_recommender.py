"""The offline extractive recommender: grounded, cited, deduplicated, bounded, and hard to break."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from incident_responder.backends.recommenders.offline import SOURCE, OfflineRecommender
from incident_responder.models import RunbookChunk
from incident_responder.ports import Recommender

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "incident_responder" / "examples" / "runbooks"
SECTIONS = ("Symptoms", "Impact", "Diagnosis", "Mitigation", "Escalation")
CITATION = re.compile(r" \[runbook: ([^\]]+)\]$")


def chunk(runbook_id: str, no: int, heading: str, text: str) -> RunbookChunk:
    return RunbookChunk(runbook_id=runbook_id, chunk_no=no, heading=heading, text=text)


DISK = [
    chunk(
        "disk-full",
        0,
        "Disk full > Symptoms",
        "- `No space left on device` in the logs\n- alert `NodeDiskFull`",
    ),
    chunk(
        "disk-full",
        1,
        "Disk full > Diagnosis",
        "1. Find the full filesystem: `df -h`\n"
        "2. Find what uses the space:\n"
        "   ```bash\n   du -xh /var | sort -rh\n   ```\n",
    ),
    chunk(
        "disk-full",
        2,
        "Disk full > Mitigation",
        "1. Delete rotated logs: `find /var/log -name '*.gz' -delete`\n"
        "2. Restart the process that holds deleted files open.\n"
        "3. Expand the **persistent volume** (see [the storage guide](https://wiki.example/storage)).\n",
    ),
]
TITLES = {"disk-full": "Disk full", "redis-down": "Redis down", "unrelated": "Unrelated"}


def body(step: str) -> str:
    """A step without its label and its citation."""
    text = CITATION.sub("", step)
    return re.sub(r"^(Check|Fix|Verify|Escalate|Note): ", "", text)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_satisfies_the_protocol_and_reports_its_name() -> None:
    recommender: Recommender = OfflineRecommender()
    assert recommender.name == SOURCE == "offline-extractive"
    rec = recommender.recommend("disk full", DISK, TITLES)
    assert rec is not None and rec.source == "offline-extractive"


def test_no_chunks_no_recommendation() -> None:
    assert OfflineRecommender().recommend("anything", [], TITLES) is None
    assert OfflineRecommender().recommend("anything", [chunk("x", 0, "X", "   \n\n")], {}) is None


def test_max_steps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        OfflineRecommender(max_steps=0)


def test_summary_names_the_best_runbook_and_the_sources() -> None:
    rec = OfflineRecommender().recommend("No space left on device", DISK, TITLES)
    assert rec is not None
    expected = 'Likely "Disk full" (runbook disk-full). Steps below are taken from runbook: disk-full.'
    assert rec.summary == expected
    assert rec.runbook_ids == ["disk-full"]


def test_title_falls_back_to_the_heading_path() -> None:
    rec = OfflineRecommender().recommend("x", DISK, {})
    assert rec is not None and rec.summary.startswith('Likely "Disk full" (runbook disk-full).')


def test_steps_cite_only_the_given_runbooks() -> None:
    redis = [
        chunk("redis-down", 0, "Redis down > Mitigation", "- Restart redis: `kubectl delete pod redis-0`")
    ]
    rec = OfflineRecommender().recommend(
        "No space left on device; redis connection refused", DISK + redis, TITLES
    )
    assert rec is not None
    cited = []
    for step in rec.steps:
        match = CITATION.search(step)
        assert match, step
        cited.append(match.group(1))
    assert set(cited) <= {"disk-full", "redis-down"}
    assert "unrelated" not in rec.runbook_ids
    assert sorted(rec.runbook_ids) == sorted(set(cited))
    assert rec.runbook_ids[0] == "disk-full"


def test_diagnosis_comes_before_mitigation_whatever_the_chunk_order() -> None:
    rec = OfflineRecommender().recommend("No space left on device", [DISK[2], DISK[1], DISK[0]], TITLES)
    assert rec is not None
    labels = [s.split(":", 1)[0] for s in rec.steps]
    assert labels == ["Check", "Check", "Fix", "Fix", "Fix"]
    # Symptom bullets are descriptions, not steps.
    assert not any("NodeDiskFull" in s for s in rec.steps)


def test_markdown_is_cleaned_and_commands_are_kept() -> None:
    rec = OfflineRecommender().recommend("disk", DISK, TITLES)
    assert rec is not None
    steps = "\n".join(rec.steps)
    assert "Check: Find the full filesystem: `df -h` [runbook: disk-full]" in rec.steps
    # The fenced block under the item is inlined as its command.
    assert "Check: Find what uses the space: `du -xh /var | sort -rh` [runbook: disk-full]" in rec.steps
    assert "Fix: Expand the persistent volume (see the storage guide). [runbook: disk-full]" in rec.steps
    assert "**" not in steps and "](" not in steps and "https://" not in steps
    assert "`find /var/log -name '*.gz' -delete`" in steps


def test_identical_steps_are_kept_once() -> None:
    same = "1. Restart the service: `systemctl restart app`\n2. Drain the node: `kubectl drain node-1`"
    chunks = [
        chunk("a", 0, "A > Mitigation", same),
        chunk("a", 0, "A > Mitigation", same),  # the same chunk twice
        chunk("b", 0, "B > Mitigation", "- Restart the **service**: `systemctl restart app`"),
        chunk("a", 1, "A > Diagnosis", "- Restart the service: `systemctl restart app`"),
    ]
    rec = OfflineRecommender().recommend("app restart service node", chunks, {})
    assert rec is not None
    bodies = [body(s) for s in rec.steps]
    assert len(bodies) == len(set(bodies))
    assert sum("systemctl restart app" in s for s in rec.steps) == 1


def test_max_steps_is_respected() -> None:
    items = "\n".join(f"{i}. Run step number {i}: `tool --step {i}`" for i in range(1, 13))
    chunks = [
        chunk("big", 0, "Big > Diagnosis", items),
        chunk("big", 1, "Big > Mitigation", items.replace("Run", "Apply")),
        chunk("other", 0, "Other > Mitigation", items.replace("Run", "Try")),
    ]
    for limit in (1, 2, 3, 6, 10):
        rec = OfflineRecommender(max_steps=limit).recommend("step tool", chunks, {})
        assert rec is not None and len(rec.steps) == limit
    one = OfflineRecommender(max_steps=1).recommend("x", chunks, {})
    assert one is not None and one.steps[0].startswith("Fix: ")  # a single step is a fix


def test_steps_are_ranked_by_overlap_with_the_log() -> None:
    mitigation = (
        "1. Restart the web server.\n"
        "2. Clear the CDN cache.\n"
        "3. Rotate the TLS certificate with `certbot renew`.\n"
        "4. Page the vendor.\n"
    )
    rec = OfflineRecommender(max_steps=1).recommend(
        "x509: certificate has expired", [chunk("web", 0, "Web > Mitigation", mitigation)], {}
    )
    assert rec is not None
    assert rec.steps == ["Fix: Rotate the TLS certificate with `certbot renew`. [runbook: web]"]
    # Without any overlap, document order decides.
    rec = OfflineRecommender(max_steps=2).recommend(
        "zzz", [chunk("web", 0, "Web > Mitigation", mitigation)], {}
    )
    assert rec is not None and [body(s) for s in rec.steps] == [
        "Restart the web server.",
        "Clear the CDN cache.",
    ]


def test_other_runbooks_contribute_steps_that_match_the_log() -> None:
    redis = [
        chunk(
            "redis-down",
            3,
            "Redis down > Mitigation",
            "- Restart the redis master pod: `kubectl delete pod redis-master-0`\n- Page the cache owner.",
        )
    ]
    log = "No space left on device. redis master pod unreachable"
    rec = OfflineRecommender(max_steps=6).recommend(log, DISK + redis, TITLES)
    assert rec is not None
    assert rec.runbook_ids == ["disk-full", "redis-down"]
    assert rec.summary.endswith("Steps below are taken from runbooks: disk-full, redis-down.")
    assert any("redis-master-0" in s and s.endswith("[runbook: redis-down]") for s in rec.steps)
    assert not any("cache owner" in s for s in rec.steps)  # no overlap with the log


def test_fallback_to_sentences_without_lists() -> None:
    text = (
        "This happens when the upstream pool is exhausted. Raise the pool size in the gateway config "
        "and restart the gateway pods. OK.\n\nIf that does not help, fail over to the standby region."
    )
    chunks = [
        chunk("prose", 0, "Prose > Mitigation", text),
        chunk("prose", 1, "Prose > Impact", "Users see errors."),
    ]
    rec = OfflineRecommender().recommend("upstream pool exhausted", chunks, {"prose": "Prose"})
    assert rec is not None
    assert [body(s) for s in rec.steps] == [
        "This happens when the upstream pool is exhausted.",
        "Raise the pool size in the gateway config and restart the gateway pods.",
        "If that does not help, fail over to the standby region.",
    ]
    assert all(s.startswith("Fix: ") and s.endswith("[runbook: prose]") for s in rec.steps)


def test_a_section_split_across_chunks_is_read_as_one() -> None:
    chunks = [
        chunk(
            "es", 4, "ES > Mitigation", "1. Free some space.\n2. Clear the read-only block on the indices:"
        ),
        chunk(
            "es", 5, "ES > Mitigation", '`PUT _all/_settings {"index.blocks.read_only_allow_delete": null}`'
        ),
    ]
    rec = OfflineRecommender().recommend("read-only", chunks[::-1], {})
    assert rec is not None
    assert [body(s) for s in rec.steps] == [
        "Free some space.",
        "Clear the read-only block on the indices: "
        '`PUT _all/_settings {"index.blocks.read_only_allow_delete": null}`',
    ]


def test_standalone_command_blocks_become_steps() -> None:
    text = "Roll the deployment back:\n\n```console\n$ kubectl rollout undo deploy/api\nrolled back\n```\n"
    rec = OfflineRecommender().recommend("deploy", [chunk("d", 0, "D > Rollback", text)], {})
    assert rec is not None
    assert rec.steps == ["Fix: Roll the deployment back: `kubectl rollout undo deploy/api` [runbook: d]"]


WEIRD = """\
<!-- owner: sre -->
<details><summary>Click</summary>

| Step | Command |
|------|---------|
| 1    | `rm -rf /` |

</details>

* [ ] **Check** the <b>pods</b>:<br>`kubectl get pods`
    - nested one
        - nested two with [a link][ref] and a footnote[^1]
+ > quoted item &amp; entity
1) paren-numbered \\*escaped\\* item
```
unclosed fence with a command
"""


@pytest.mark.parametrize(
    "text",
    [
        WEIRD,
        "",
        "#",
        "######",
        "```",
        "~~~~\n~~~",
        "- ",
        "1.",
        "> > >",
        "|||",
        "---|---",
        "***bold*** _it_ __x__ ~~y~~ `` a ` b `` ```inline```",
        "<div><p>only <i>html</i></p></div>",
        "- a\n\n\n    - b\n  \n\t\t- c\n```\n```\n- d",
        "[" * 500 + "]" * 500,
        "*" * 2000,
        "_a" * 1000,
        "-|" * 1000 + "x",
        "\x00\x1b[31m red \u202e rtl \ufeff",
    ],
)
def test_odd_markdown_never_raises(text: str) -> None:
    for heading in ("T > Mitigation", "T > Diagnosis", "T", "", ">>>"):
        rec = OfflineRecommender().recommend("pods", [chunk("odd", 0, heading, text)], {"odd": "T"})
        if rec is not None:
            assert all(s.endswith("[runbook: odd]") for s in rec.steps)


def test_weird_markdown_is_read_sensibly() -> None:
    rec = OfflineRecommender().recommend("pods", [chunk("odd", 0, "T > Mitigation", WEIRD)], {"odd": "T"})
    assert rec is not None
    steps = "\n".join(rec.steps)
    assert "rm -rf" not in steps  # table cells are not steps
    assert "<b>" not in steps and "<br>" not in steps and "owner: sre" not in steps
    nested = "Fix: Check the pods: `kubectl get pods`: nested one; nested two with a link and a footnote"
    assert nested in steps
    assert "Fix: quoted item & entity [runbook: odd]" in rec.steps
    assert "paren-numbered *escaped* item" in steps


def test_placeholders_and_escapes_survive_cleaning() -> None:
    text = (
        "- Restart <service> in <ns> with `kubectl -n <ns> delete pod <pod>` and `grep \\*`\n"
        "- Use a \\`literal\\` tick"
    )
    rec = OfflineRecommender().recommend("x", [chunk("p", 0, "P > Mitigation", text)], {})
    assert rec is not None
    assert rec.steps == [
        "Fix: Restart <service> in <ns> with `kubectl -n <ns> delete pod <pod>` and `grep \\*` [runbook: p]",
        "Fix: Use a `literal` tick [runbook: p]",
    ]


def test_random_markdown_soup_never_raises() -> None:
    tokens = [
        "# ", "## Mitigation", "### Diagnosis", "- ", "  - ", "1. ", "    2) ", "```", "~~~", "`", "**", "_",
        "[", "](", ")", "<", ">", "|", "---", "\n", "\n\n", "word", "kubectl get pods", "Restart it.",
        "&amp;", "<!--", "-->", "\\", "\t", "  ", "ünïcödé", "日本語",
    ]  # fmt: skip
    rng = random.Random(1234)
    recommender = OfflineRecommender(max_steps=4)
    for _ in range(300):
        text = "".join(rng.choice(tokens) for _ in range(rng.randint(0, 80)))
        chunks = [chunk(f"r{i}", i, rng.choice(["R > Fix", "R", "R > Symptoms"]), text) for i in range(2)]
        rec = recommender.recommend(text[:40], chunks, {})
        if rec is not None:
            assert 1 <= len(rec.steps) <= 4
            assert set(rec.runbook_ids) <= {"r0", "r1"}


def test_steps_are_grounded_in_the_runbook_text() -> None:
    rec = OfflineRecommender().recommend("No space left on device", DISK, TITLES)
    assert rec is not None
    source = "\n".join(c.text for c in DISK)
    for step in rec.steps:
        text = body(step)
        assert words(text) <= words(source), step
        for code in re.findall(r"`([^`]+)`", text):
            assert code in source


def test_fast_on_a_few_kilobytes() -> None:
    chunks = [
        chunk(
            f"rb{i}",
            j,
            f"Runbook {i} > {section}",
            "\n".join(f"{k}. Do thing {k} with `cmd-{i}-{k} --flag`" for k in range(8)),
        )
        for i in range(4)
        for j, section in enumerate(("Diagnosis", "Mitigation"))
    ]
    assert sum(len(c.text) for c in chunks) > 2_000
    recommender = OfflineRecommender()
    log = "ERROR thing 3 failed with cmd-0-3 " * 50
    best = min(_timed(recommender, log, chunks) for _ in range(5))
    assert best < 0.05  # seconds; typically ~2 ms


@pytest.mark.parametrize("unit", ["_a \n", "*a \n", "**a \n", "[a \n", "![a \n", "- a\n", "<a \n", "`a \n"])
def test_no_quadratic_blow_up_on_hostile_text(unit: str) -> None:
    text = unit * (20_000 // len(unit))
    chunks = [chunk("h", 0, "H > Mitigation", text)]
    assert min(_timed(OfflineRecommender(), "a", chunks) for _ in range(2)) < 0.5  # typically ~20 ms


def _timed(recommender: OfflineRecommender, log: str, chunks: list[RunbookChunk]) -> float:
    start = time.perf_counter()
    recommender.recommend(log, chunks, {})
    return time.perf_counter() - start


def _example_chunks(runbook_id: str, text: str) -> tuple[str, list[RunbookChunk]]:
    lines = text.splitlines()
    title = lines[0].removeprefix("# ").strip()
    parts = re.split(r"^## +(.+)$", "\n".join(lines[1:]), flags=re.MULTILINE)
    chunks = [chunk(runbook_id, 0, title, parts[0].strip())]
    for no, (name, section) in enumerate(zip(parts[1::2], parts[2::2], strict=True), start=1):
        chunks.append(chunk(runbook_id, no, f"{title} > {name.strip()}", section.strip()))
    return title, chunks


def test_example_runbooks_are_well_formed_and_yield_steps() -> None:
    paths = sorted(EXAMPLES.glob("*.md"))
    assert len(paths) == 12
    for path in paths:
        text = path.read_text(encoding="utf-8")
        runbook_id = path.stem
        assert re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", runbook_id), runbook_id
        assert re.match(r"# \S", text.splitlines()[0]), path.name
        assert 40 <= len(text.splitlines()) <= 90, path.name
        title, chunks = _example_chunks(runbook_id, text)
        assert [c.heading.split(" > ")[-1] for c in chunks[1:]] == list(SECTIONS), path.name
        rec = OfflineRecommender().recommend(title, chunks, {runbook_id: title})
        assert rec is not None, path.name
        assert len(rec.steps) >= 3, path.name
        assert rec.runbook_ids == [runbook_id]
        assert any(s.startswith("Fix: ") for s in rec.steps), path.name
        assert all(s.endswith(f"[runbook: {runbook_id}]") for s in rec.steps)
