"""One contract for every Recommender: offline (extractive), an OpenAI-compatible LLM (a
scripted local server speaking the Chat Completions protocol), and the LLM with its fallback."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from incident_responder.backends.recommenders.fallback import FallbackRecommender
from incident_responder.backends.recommenders.offline import OfflineRecommender
from incident_responder.backends.recommenders.openai_chat import OpenAIChatRecommender, make_openai_client
from incident_responder.models import Runbook
from incident_responder.pipeline.chunking import chunk_runbook
from incident_responder.ports import Recommender
from tests.helpers import DB_RUNBOOK, DISK_RUNBOOK, db_log
from tests.openai_fake import FakeOpenAI, answer

CHUNKS = chunk_runbook(Runbook(id="db-conn", title="Database connection refused", content=DB_RUNBOOK)) + (
    chunk_runbook(Runbook(id="disk-full", title="Disk full", content=DISK_RUNBOOK))
)
TITLES = {"db-conn": "Database connection refused", "disk-full": "Disk full"}
CITATION = re.compile(r" \[runbook: ([\w.-]+)\]$")


@pytest.fixture(params=["offline", "llm", "llm-with-fallback"])
def recommender(request: pytest.FixtureRequest) -> Iterator[tuple[Recommender, Callable[[], None]]]:
    """The recommender, and a function that makes its next answer a grounded one."""
    if request.param == "offline":
        yield OfflineRecommender(), lambda: None
        return
    fake = FakeOpenAI()
    client = make_openai_client(base_url=fake.base_url, api_key="sk-test-0123", timeout=2, max_retries=0)
    llm = OpenAIChatRecommender(client=client, model="fake-model")
    grounded = answer(
        "The database refuses connections.",
        [("Check the database pod is running.", "db-conn"), ("Restart the pooler.", "db-conn")],
    )
    chosen: Recommender = llm if request.param == "llm" else FallbackRecommender(llm, OfflineRecommender())
    yield chosen, lambda: fake.script(grounded)
    client.close()
    fake.close()


def test_without_runbook_text_there_is_no_recommendation(
    recommender: tuple[Recommender, Callable[[], None]],
) -> None:
    rec, _ = recommender
    assert rec.recommend(db_log(1), [], {}) is None


def test_every_step_cites_a_runbook_it_was_given(recommender: tuple[Recommender, Callable[[], None]]) -> None:
    rec, prime = recommender
    prime()
    out = rec.recommend(db_log(1), CHUNKS, TITLES)
    assert out is not None and out.summary and out.steps
    cited = {m.group(1) for step in out.steps if (m := CITATION.search(step))}
    assert len(cited) >= 1 and all(CITATION.search(step) for step in out.steps)
    assert cited <= set(TITLES) and set(out.runbook_ids) <= set(TITLES)
    assert out.source == rec.name


def test_it_says_whether_it_answers_over_the_network(
    recommender: tuple[Recommender, Callable[[], None]],
) -> None:
    rec, _ = recommender
    assert rec.remote is (not isinstance(rec, OfflineRecommender))
    assert rec.name


def test_the_fallback_answers_when_the_llm_fails() -> None:
    fake = FakeOpenAI()
    client = make_openai_client(base_url=fake.base_url, api_key="sk-test-0123", timeout=2, max_retries=0)
    try:
        rec = FallbackRecommender(
            OpenAIChatRecommender(client=client, model="fake-model"), OfflineRecommender()
        )
        out = rec.recommend(db_log(1), CHUNKS, TITLES)  # nothing scripted: the server fails the call
        assert out is not None and out.source == OfflineRecommender().name
    finally:
        client.close()
        fake.close()
