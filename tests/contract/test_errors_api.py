"""Every error code of the contract, with its JSON shape."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from incident_responder.api.app import create_app
from incident_responder.settings import Settings
from tests.conftest import ACME, GLOBEX, MakeClient
from tests.helpers import db_log


def _error(r: httpx.Response, status: int, code: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message"} and err["message"]
    if code:
        assert err["code"] == code


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"log": "x"}, "service"),
        ({"service": "api"}, "log"),
        ({"service": "bad name!", "log": "x"}, "service"),
        ({"service": "a" * 101, "log": "x"}, "service"),
        ({"service": "api", "log": ""}, "log"),
        ({"service": "api", "log": "   "}, "log"),
        ({"service": "api", "log": "x" * 10_001}, "log"),
        ({"service": "api", "log": "bell\x07here"}, "log"),
        ({"service": "api", "log": "x", "severity": "apocalyptic"}, "severity"),
        ({"service": "api", "log": "x", "surprise": 1}, "surprise"),
        ({"service": "api", "log": "x", "labels": {"k": 1}}, "labels"),
        ({"service": "api", "log": 42}, "log"),
    ],
)
async def test_invalid_incident_is_422(
    client: httpx.AsyncClient, body: dict[str, object], fragment: str
) -> None:
    r = await client.post("/v1/incidents", json=body, headers=ACME)
    _error(r, 422, "invalid_input")
    assert fragment in r.json()["error"]["message"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/incidents", content=b"{not json", headers={**ACME, "Content-Type": "application/json"}
    )
    _error(r, 400, "bad_request")


@pytest.mark.parametrize("path", ["/v1/incidents", "/v1/incidents/batch"])
@pytest.mark.parametrize(
    ("content_type", "raw", "status", "fragment"),
    [
        (None, b'{"service": "api", "log": "x"}', 422, "body"),  # no content type: not JSON
        ("text/plain", b'{"service": "api", "log": "x"}', 422, "body"),
        ("application/json", b"", 422, "body: Field required"),
        ("application/json", b"[1, 2]", 422, "body"),
        ("application/json", b"null", 422, "body"),
        ("application/json; charset=utf-8", b'{"service": "api", "log": 1}', 422, "log"),
        ("application/json", b'{"service": "api", "log": "x"', 400, "not valid JSON"),
        ("application/json", b"\xff\xfe", 400, "not valid JSON"),
    ],
)
async def test_bodies_that_are_not_an_incident_object(
    client: httpx.AsyncClient, path: str, content_type: str | None, raw: bytes, status: int, fragment: str
) -> None:
    headers = {**ACME, **({"Content-Type": content_type} if content_type else {})}
    r = await client.post(path, content=raw, headers=headers)
    _error(r, status, "invalid_input" if status == 422 else "bad_request")
    assert fragment in r.json()["error"]["message"]


async def test_json_bodies_under_any_json_content_type_are_read(client: httpx.AsyncClient) -> None:
    one = b'{"service": "api", "log": "vendor json type"}'
    for content_type in ("application/json", "application/json; charset=utf-8", "application/problem+json"):
        r = await client.post("/v1/incidents", content=one, headers={**ACME, "Content-Type": content_type})
        assert r.status_code in (200, 201), r.text
    batch = b'{"incidents": [{"service": "api", "log": "vendor json type"}]}'
    r = await client.post(
        "/v1/incidents/batch", content=batch, headers={**ACME, "Content-Type": "application/vnd.x+json"}
    )
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "existing"


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_idempotency_key_outside_1_to_255_characters_is_422(
    client: httpx.AsyncClient, key: str
) -> None:
    r = await client.post(
        "/v1/incidents", json={"service": "api", "log": "x"}, headers={**ACME, "Idempotency-Key": key}
    )
    _error(r, 422, "invalid_input")
    assert "Idempotency-Key" in r.json()["error"]["message"] or "idempotency" in r.json()["error"]["message"]


async def test_auth_errors_are_401_and_leak_nothing(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"X-API-Key": "wrong-key-xyz"}, {"X-API-Key": ""}):
        r = await client.post("/v1/incidents", json={"service": "api", "log": "x"}, headers=headers)
        _error(r, 401, "unauthorized")
        assert "acme" not in r.text and "key-123" not in r.text
    _error(await client.get("/v1/tickets", headers={"X-API-Key": "nope-nope"}), 401)


async def test_unknown_and_foreign_ids_are_404(client: httpx.AsyncClient) -> None:
    mine = (
        await client.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
    ).json()
    tid = mine["ticket_id"]
    _error(await client.get("/v1/tickets/tkt_doesnotexist", headers=ACME), 404, "not_found")
    _error(await client.get("/v1/tickets/../../etc/passwd", headers=ACME), 404)
    _error(await client.get(f"/v1/tickets/{tid}", headers=GLOBEX), 404, "not_found")
    _error(
        await client.post(f"/v1/tickets/{tid}/comments", json={"author": "x", "body": "y"}, headers=GLOBEX),
        404,
    )
    _error(await client.post(f"/v1/tickets/{tid}/resolve", json={}, headers=GLOBEX), 404)
    _error(await client.get("/v1/runbooks/nope", headers=ACME), 404)
    _error(await client.delete("/v1/runbooks/nope", headers=ACME), 404)
    _error(await client.get("/v1/no-such-route", headers=ACME), 404)
    # The foreign tenant's failed writes changed nothing.
    ticket = (await client.get(f"/v1/tickets/{tid}", headers=ACME)).json()
    assert ticket["status"] == "open" and [c["kind"] for c in ticket["comments"]] == ["occurrence"]


async def test_batch_limits(client: httpx.AsyncClient) -> None:
    _error(await client.post("/v1/incidents/batch", json={"incidents": []}, headers=ACME), 422)
    too_many = {"incidents": [{"service": "a", "log": "x"}] * 1001}
    _error(await client.post("/v1/incidents/batch", json=too_many, headers=ACME), 422)
    bad_item = {"incidents": [{"service": "a", "log": "ok"}, {"service": "a", "log": "x" * 10_001}]}
    r = await client.post("/v1/incidents/batch", json=bad_item, headers=ACME)
    _error(r, 422)
    assert "incidents.1.log" in r.json()["error"]["message"]
    # Nothing of a refused batch was recorded.
    assert (await client.get("/v1/tickets", headers=ACME)).json()["tickets"] == []


async def test_bad_query_parameters_are_422(client: httpx.AsyncClient) -> None:
    _error(await client.get("/v1/tickets?status=maybe", headers=ACME), 422)
    _error(await client.get("/v1/tickets?limit=0", headers=ACME), 422)
    _error(await client.get("/v1/tickets?cursor=../../x", headers=ACME), 422)
    _error(await client.put("/v1/runbooks/bad%20id", json={"title": "t", "content": "c"}, headers=ACME), 422)


async def test_oversized_body_is_413_before_parsing(
    make_client: MakeClient,
) -> None:
    async with make_client(max_body_bytes=2048) as http:
        r = await http.post(
            "/v1/incidents", content=b'{"service":"a","log":"' + b"x" * 4000 + b'"}', headers=ACME
        )
        _error(r, 413, "payload_too_large")
        ok = await http.post("/v1/incidents", json={"service": "a", "log": "small"}, headers=ACME)
        assert ok.status_code == 201


async def test_log_limit_is_configurable(
    make_client: MakeClient,
) -> None:
    async with make_client(max_log_chars=50) as http:
        _error(await http.post("/v1/incidents", json={"service": "a", "log": "y" * 51}, headers=ACME), 422)
        assert (
            await http.post("/v1/incidents", json={"service": "a", "log": "y" * 50}, headers=ACME)
        ).status_code == 201


async def test_not_ready_is_503(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings())  # no services and no lifespan run: still starting
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503
        _error(
            await http.post("/v1/incidents", json={"service": "a", "log": "x"}, headers=ACME),
            503,
            "backend_unavailable",
        )


def _requests_counted(text: str, route: str, code: str) -> float:
    prefix = f'ir_http_requests_total{{code="{code}",route="{route}"}} '
    return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))


async def test_every_answer_is_counted_by_route_template_and_status(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    assert (
        await client.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
    ).status_code == 201
    assert (await client.get("/v1/tickets/tkt_nope", headers=ACME)).status_code == 404
    assert (await client.post("/v1/incidents", json={"service": ""}, headers=ACME)).status_code == 422
    assert (await client.get("/no/such/path", headers=ACME)).status_code == 404
    after = (await client.get("/metrics")).text
    for route, code in (
        ("/v1/incidents", "201"),
        ("/v1/tickets/{ticket_id}", "404"),
        ("/v1/incidents", "422"),
        ("unmatched", "404"),
    ):
        assert _requests_counted(after, route, code) - _requests_counted(before, route, code) == 1, (
            route,
            code,
        )


@pytest.mark.parametrize(
    ("log", "accepted"),
    [
        ("\u0085", False),  # whitespace to Python, not to ECMAScript's \s (schemathesis found it)
        ("\u00a0 \u3000", False),
        ("\u2028\t\n", False),
        ("\ufeff", False),  # invisible: a byte-order mark
        ("\u200b\u200d\ufeff \u2060", False),  # zero-width spaces and joiners show nothing
        ("\u200bx", True),
        ("\u0085x", True),
    ],
)
async def test_blank_means_the_same_to_the_api_and_to_its_published_pattern(
    client: httpx.AsyncClient, log: str, accepted: bool
) -> None:
    schema = (await client.get("/openapi.json")).json()
    pattern = schema["components"]["schemas"]["IncidentIn"]["properties"]["log"]["pattern"]
    assert bool(re.fullmatch(pattern, log)) is accepted
    r = await client.post("/v1/incidents", json={"service": "api", "log": log}, headers=ACME)
    if accepted:
        assert r.status_code == 201, r.text
    else:
        _error(r, 422, "invalid_input")
        assert "blank" in r.json()["error"]["message"]


async def test_the_published_text_pattern_means_what_the_validator_does(client: httpx.AsyncClient) -> None:
    from pydantic import ValidationError

    from incident_responder.api.schemas import IncidentIn

    schema = (await client.get("/openapi.json")).json()
    pattern = schema["components"]["schemas"]["IncidentIn"]["properties"]["log"]["pattern"]
    # No class shorthand whose meaning varies between regex dialects and the tools that
    # generate data from them (\s did: a schema-valid U+0085 was refused as blank).
    assert not re.search(r"\\[sSdDwWbB]", pattern)
    compiled = re.compile(pattern)
    for code in [*range(0x3100), 0xFEFF, 0xFFFD]:
        text = chr(code)
        try:
            IncidentIn(service="api", log=text)
            valid = True
        except ValidationError:
            valid = False
        assert bool(compiled.fullmatch(text)) is valid, hex(code)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/incidents", {"service": "api", "log": "x", "labels": {"k": "bell\x07"}}),
        ("POST", "/v1/incidents", {"service": "api", "log": "x", "title": "nul\x00"}),
        ("POST", "/v1/tickets/{ticket}/comments", {"author": "ann\x1b[31m", "body": "hi"}),
        ("POST", "/v1/tickets/{ticket}/comments", {"author": "ann", "body": "a\x00b"}),
        ("POST", "/v1/tickets/{ticket}/comments", {"author": "\u200b", "body": "invisible author"}),
        ("POST", "/v1/tickets/{ticket}/resolve", {"resolution": "done\x7f"}),
        ("PUT", "/v1/runbooks/rb", {"title": "T\x08", "content": "c"}),
        ("PUT", "/v1/runbooks/rb", {"title": "T", "content": "# c\x0c"}),
        ("PUT", "/v1/runbooks/rb", {"title": "T", "content": "c", "tags": ["x\x01"]}),
        ("PUT", "/v1/runbooks/rb", {"title": "\ufeff", "content": "c"}),
    ],
)
async def test_control_characters_are_refused_in_every_text(
    client: httpx.AsyncClient, method: str, path: str, body: dict[str, object]
) -> None:
    opened = await client.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
    r = await client.request(method, path.format(ticket=opened.json()["ticket_id"]), json=body, headers=ACME)
    _error(r, 422, "invalid_input")
    ticket = (await client.get(f"/v1/tickets/{opened.json()['ticket_id']}", headers=ACME)).json()
    assert ticket["status"] == "open" and [c["kind"] for c in ticket["comments"]] == ["occurrence"]
    assert (await client.get("/v1/runbooks", headers=ACME)).json()["runbooks"] == []


async def test_an_oversized_chunked_body_is_413(make_client: MakeClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"service":"a","log":"'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    async with make_client(max_body_bytes=4096) as http:
        r = await http.post("/v1/incidents", content=chunks(), headers=ACME)  # no content-length: chunked
        _error(r, 413, "payload_too_large")
        assert r.headers["connection"] == "close"


async def test_a_ticket_takes_a_bounded_number_of_comments(make_client: MakeClient) -> None:
    async with make_client(max_comments=2) as http:
        opened = await http.post("/v1/incidents", json={"service": "api", "log": db_log(1)}, headers=ACME)
        url = f"/v1/tickets/{opened.json()['ticket_id']}/comments"
        for i in range(2):
            assert (
                await http.post(url, json={"author": "ann", "body": f"note {i}"}, headers=ACME)
            ).status_code == 201
        _error(
            await http.post(url, json={"author": "ann", "body": "one too many"}, headers=ACME),
            409,
            "limit_reached",
        )
        # The occurrences of reports are not comments of people: the ticket keeps counting them.
        again = await http.post("/v1/incidents", json={"service": "api", "log": db_log(2)}, headers=ACME)
        assert again.json()["status"] == "existing"
