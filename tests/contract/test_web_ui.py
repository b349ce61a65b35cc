"""`GET /ui/`: the web interface's files, served without a key, with a strict policy."""

from __future__ import annotations

import httpx
import pytest


async def test_the_page_is_served_without_a_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/ui/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script src="app.js" defer></script>' in r.text and 'id="api-key"' in r.text
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    moved = await client.get("/ui", follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"] == "/ui/"
    script = await client.get("/ui/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text  # every value is set as text
    style = await client.get("/ui/style.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/..%2Fapp.py", "/ui/%2E%2E/routes/ui.py", "/ui/ui.py"])
async def test_nothing_else_of_the_package_is_served(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
