"""The web interface in a real browser (Debian's chromium, driven by Playwright) against a real
server process: sign in with a key, see only that tenant's tickets, read why reports joined,
split and merge, and nothing a report says is ever run as HTML."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.contract.test_corrections_api import queue_log
from tests.helpers import db_log, disk_log
from tests.servers import ServeProcess

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)

ACME, GLOBEX = "acme-key-123", "globex-key-456"
HOSTILE = '<img src=x onerror="document.body.dataset.owned=1">disk full'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    data = tmp_path_factory.mktemp("ui") / "data"
    process = ServeProcess(data, {"IR_API_KEYS": f"acme:{ACME},globex:{GLOBEX}"}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _post(server: ServeProcess, key: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{server.url}/v1/incidents", json=body, headers={"X-API-Key": key})
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def _sign_in(page: Any, key: str) -> None:
    page.fill("#api-key", key)
    page.click("#sign-in-form button[type=submit]")


def test_a_person_signs_in_reads_and_corrects_tickets(
    server: ServeProcess, browser: Any, tmp_path: Path
) -> None:
    alpha = _post(server, ACME, {"service": "queues", "log": queue_log("alpha", 1), "title": "pool drained"})
    beta = _post(server, ACME, {"service": "queues", "log": queue_log("beta", 2)})
    db = _post(server, ACME, {"service": "api", "log": db_log(1), "title": "db refused"})
    _post(server, GLOBEX, {"service": "files", "log": disk_log(1), "title": HOSTILE})
    assert alpha["ticket_id"] == beta["ticket_id"]

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/ui/")

    _sign_in(page, "not-a-key-at-all")
    page.wait_for_selector("#sign-in-error:has-text('refused')")
    assert page.is_visible("#sign-in") and not page.is_visible("#tickets")

    _sign_in(page, ACME)
    page.wait_for_selector("#ticket-rows tr")
    rows = page.locator("#ticket-rows tr")
    assert rows.count() == 2  # acme's tickets only
    assert "pool drained" in page.inner_text("#ticket-rows") and "disk full" not in page.inner_text(
        "#tickets"
    )

    # why the second report joined, then split it off
    page.click(f"#ticket-rows tr[data-ticket-id='{alpha['ticket_id']}']")
    page.wait_for_selector("#t-why li")
    why = page.inner_text("#t-why")
    assert "opened by" in why and "template" in why and "differs in -alpha +beta" in why
    page.check(f"#pick-{beta['incident_id']}")
    page.click("#split-form button[type=submit]")
    page.wait_for_selector(f"#t-meta:has-text('split from {alpha['ticket_id']}')")
    split_id = page.inner_text("#t-meta").split(" · ")[0]
    assert split_id.startswith("tkt_") and split_id != alpha["ticket_id"]

    # merge the database ticket into the split-off one; a refusal is shown, not thrown
    page.click("#back")
    page.wait_for_selector(f"#ticket-rows tr[data-ticket-id='{db['ticket_id']}']")
    page.click(f"#ticket-rows tr[data-ticket-id='{db['ticket_id']}']")
    page.wait_for_selector("#t-why li")
    page.fill("#merge-into", db["ticket_id"])
    page.click("#merge-form button[type=submit]")
    page.wait_for_selector("#t-error:has-text('cannot be merged into itself')")
    page.fill("#merge-into", split_id)
    page.click("#merge-form button[type=submit]")
    page.wait_for_selector(f"#t-meta:text-matches('^{split_id} ')")  # the survivor is shown
    assert f"merged from {db['ticket_id']}" in page.inner_text("#t-why")
    assert (
        httpx.get(f"{server.url}/v1/tickets/{db['ticket_id']}", headers={"X-API-Key": ACME}).json()[
            "merged_into"
        ]
        == split_id
    )

    # another tenant sees its own ticket, its hostile title as text
    page.click("#sign-out")
    page.wait_for_selector("#sign-in:not([hidden])")
    _sign_in(page, GLOBEX)
    page.wait_for_selector("#ticket-rows tr")
    assert page.locator("#ticket-rows tr").count() == 1
    assert HOSTILE in page.inner_text("#ticket-rows")
    assert page.locator("#ticket-rows img").count() == 0
    assert page.evaluate("document.body.dataset.owned") is None
    assert errors == []
