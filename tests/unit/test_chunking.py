from __future__ import annotations

import pytest

from incident_responder.models import Runbook, RunbookChunk
from incident_responder.pipeline.chunking import (
    chunk_runbook,
    embedding_text,
    runbook_title,
    split_front_matter,
)


def _runbook(content: str, *, rid: str = "QueueConsumerLagging", title: str | None = None) -> Runbook:
    return Runbook(id=rid, title=title or runbook_title(content, rid), content=content)


NESTED = """# QueueConsumerLagging

Intro line before any section.

## Meaning

Consumers of the orders queue fall behind producers.

## Diagnosis

### Slow consumers

Check consumer CPU.

### Broker health

Check broker disk.

## Impact

## Mitigation

Scale the consumer deployment.
"""


def test_yaml_front_matter_is_skipped_and_title_is_first_h1() -> None:
    content = "---\ntitle: Queue Consumer Lagging\nweight: 20\n---\n\n# QueueConsumerLagging\n\n"
    content += "## Meaning\n\nBacklog.\n"
    assert runbook_title(content, "fallback") == "QueueConsumerLagging"
    chunks = chunk_runbook(_runbook(content))
    assert [c.heading for c in chunks] == ["QueueConsumerLagging > Meaning"]
    assert all("weight" not in c.text and "title:" not in c.text for c in chunks)


def test_toml_front_matter_title_used_when_there_is_no_h1() -> None:
    content = '+++\ntitle = "Cache Eviction Storm"\n+++\n\n## Meaning\n\nKeys are evicted.\n'
    front, body = split_front_matter(content)
    assert "Cache Eviction Storm" in front and body.lstrip().startswith("## Meaning")
    assert runbook_title(content, "fallback") == "Cache Eviction Storm"
    assert runbook_title("no heading at all", "fallback") == "fallback"


def test_unclosed_front_matter_is_content() -> None:
    content = "---\nnot closed\n# Title\n\nbody\n"
    assert split_front_matter(content) == ("", content)
    assert runbook_title(content, "fb") == "Title"


def test_nested_headings_keep_their_path_and_empty_sections_are_dropped() -> None:
    chunks = chunk_runbook(_runbook(NESTED))
    assert [c.heading for c in chunks] == [
        "QueueConsumerLagging",
        "QueueConsumerLagging > Meaning",
        "QueueConsumerLagging > Diagnosis > Slow consumers",
        "QueueConsumerLagging > Diagnosis > Broker health",
        "QueueConsumerLagging > Mitigation",
    ]
    assert [c.chunk_no for c in chunks] == list(range(len(chunks)))
    assert all(c.runbook_id == "QueueConsumerLagging" for c in chunks)
    assert chunks[-1].text == "Scale the consumer deployment."


def test_headings_inside_code_fences_are_not_headings() -> None:
    content = "# T\n\n## Mitigation\n\n```bash\n# restart the consumer\nsystemctl restart c\n```\n\nDone.\n"
    chunks = chunk_runbook(_runbook(content))
    assert len(chunks) == 1
    assert chunks[0].heading == "T > Mitigation"
    assert "# restart the consumer" in chunks[0].text


def test_closing_hashes_and_deeper_levels() -> None:
    content = "# Top #\n\n###### Deep ######\n\ntext\n"
    chunks = chunk_runbook(_runbook(content))
    assert [c.heading for c in chunks] == ["Top > Deep"]


def test_no_headings_gives_one_chunk_under_the_title() -> None:
    chunks = chunk_runbook(_runbook("Just restart it.\n\nThen watch the graphs.", rid="r1", title="Restart"))
    assert len(chunks) == 1
    assert chunks[0].heading == "Restart"
    assert chunks[0].text == "Just restart it.\n\nThen watch the graphs."


def test_empty_runbook_has_no_chunks() -> None:
    assert chunk_runbook(_runbook("---\ntitle: x\n---\n\n# Only a title\n")) == []


def test_long_sections_are_split_on_paragraphs_without_losing_text() -> None:
    paragraphs = [f"Paragraph {i} " + " ".join(f"word{i}_{j}" for j in range(40)) for i in range(12)]
    one_huge_line = "x" * 450 + " " + "y" * 450  # longer than max_chars, no paragraph break
    content = "# Big\n\n## Diagnosis\n\n" + "\n\n".join(paragraphs) + "\n\n" + one_huge_line + "\n"
    chunks = chunk_runbook(_runbook(content), max_chars=600)
    assert len(chunks) > 3
    assert all(len(c.text) <= 600 for c in chunks)
    assert {c.heading for c in chunks} == {"Big > Diagnosis"}
    original_words = " ".join([*paragraphs, one_huge_line]).split()
    assert " ".join(c.text for c in chunks).split() == original_words
    # paragraphs are not cut in the middle when they fit
    assert all(c.text.startswith(("Paragraph", "x", "y")) for c in chunks)


def test_max_chars_must_be_sane() -> None:
    with pytest.raises(ValueError):
        chunk_runbook(_runbook("# T\n\nx"), max_chars=10)


def test_embedding_text_puts_title_and_heading_first() -> None:
    chunk = RunbookChunk(runbook_id="r", chunk_no=0, heading="T > Meaning", text="body")
    assert embedding_text(chunk) == "T > Meaning\nbody"
    assert embedding_text(chunk, "T") == "T\nT > Meaning\nbody"
