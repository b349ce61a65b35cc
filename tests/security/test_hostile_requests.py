"""Hostile requests, each replayed black box against a real server (see conftest.py).

Every attack must answer within a second and never stall /healthz over 250 ms; the ones
that must be refused early are checked by what the server answered before the client had
sent everything (a response to a body that was never sent was decided without it).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.security.conftest import (
    ACME,
    ACME_OTHER,
    GLOBEX,
    KEYS,
    METRICS_TOKEN,
    Attack,
    Server,
)

pytestmark = pytest.mark.slow
Start = Callable[[str], Attack]


def _response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes] | None:
    """The next response on ``sock`` (status, headers, body), or None if the server closed it."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return None
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _closed(sock: socket.socket, timeout: float) -> bool:
    """True if the server closes ``sock`` within ``timeout`` (whatever it says first)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def _post(server: Server, path: str, body: object, headers: dict[str, str], run: Attack) -> httpx.Response:
    with run.request():
        return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60)


# --------------------------------------------------------------------------- 1-3: superlinear text work


def test_runbook_with_a_long_blank_run_in_a_heading(server: Server, attack: Start) -> None:
    for size in (40_000, 999_000):
        run = attack(f"PUT runbook '# x'+{size:,} spaces+'y'")
        content = "# x" + " " * size + "y\n\nbody text of the runbook"
        with run.request():
            r = httpx.put(f"{server.url}/v1/runbooks/hostile-{size}", json={"title": "x", "content": content},
                          headers=ACME, timeout=60)  # fmt: skip
        assert r.status_code in (200, 201), r.text


def test_log_with_a_long_blank_run_between_words(server: Server, attack: Start) -> None:
    run = attack("POST incident 'plmoknij'+9,983 spaces+'zplmoknij'")
    r = _post(
        server, "/v1/incidents", {"service": "api", "log": "plmoknij" + " " * 9983 + "zplmoknij"}, ACME, run
    )
    assert r.status_code in (200, 201), r.text
    run = attack("POST batch of 40 such logs")
    batch = {
        "incidents": [{"service": "api", "log": f"plmoknij{i}" + " " * 9980 + "zplmoknij"} for i in range(40)]
    }
    r = _post(server, "/v1/incidents/batch", batch, ACME, run)
    assert r.status_code == 200 and len(r.json()["results"]) == 40


def test_batch_of_logs_of_repeated_log_suffixes(server: Server, attack: Start) -> None:
    run = attack("POST batch of 40 logs ('x'+'.log'*2500)[:10000]")
    batch = {"incidents": [{"service": "files", "log": (f"x{i}" + ".log" * 2500)[:10000]} for i in range(40)]}
    r = _post(server, "/v1/incidents/batch", batch, ACME, run)
    assert r.status_code == 200, r.text


def test_a_json_log_nested_past_the_recursion_limit(server: Server, attack: Start) -> None:
    run = attack("POST incident: JSON log nested 2,000 deep")
    r = _post(server, "/v1/incidents", {"service": "api", "log": '{"a":' * 2000}, ACME, run)
    assert r.status_code in (200, 201), r.text


# --------------------------------------------------------------------------- 4: work before authentication


def test_a_large_body_without_a_key_is_refused_before_it_is_read(server: Server, attack: Start) -> None:
    run = attack("12 MB body without a key (answered before it is sent)")
    with server.connect() as sock, run.request():
        sock.sendall(b"POST /v1/incidents/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 12000000\r\n\r\n" + b'{"incidents": [' + b" " * 60_000)  # fmt: skip
        answer = _response(sock)
    assert answer is not None and answer[0] == 401, answer


def test_a_batch_of_200000_items_is_refused_while_it_streams(server: Server, attack: Start) -> None:
    run = attack("batch of 200,000 items (refused after ~1,001)")
    item = b'{"service":"a","log":"x"},'
    length = 16 + 200_000 * len(item)
    with server.connect() as sock, run.request():
        sock.sendall(b"POST /v1/incidents/batch HTTP/1.1\r\nHost: x\r\nX-API-Key: acme-key-123\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length)  # fmt: skip
        sock.sendall(b'{"incidents": [' + item * 1_100)  # the rest is never sent
        answer = _response(sock)
    assert answer is not None and answer[0] == 422, answer
    assert b"at most 1000" in answer[2]


def test_a_declared_oversized_body_is_413_at_once(server: Server, attack: Start) -> None:
    run = attack("single incident declaring 1 MB (413 before it is sent)")
    with server.connect() as sock, run.request():
        sock.sendall(b"POST /v1/incidents HTTP/1.1\r\nHost: x\r\nX-API-Key: acme-key-123\r\n"
                     b"Content-Length: 1000000\r\n\r\n")  # fmt: skip
        answer = _response(sock)
    assert answer is not None and answer[0] == 413, answer


def test_an_oversized_chunked_body_is_413(server: Server, attack: Start) -> None:
    run = attack("chunked body past the limit, no Content-Length")
    with server.connect() as sock, run.request():
        sock.sendall(b"POST /v1/incidents HTTP/1.1\r\nHost: x\r\nX-API-Key: acme-key-123\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
        chunk = b"x" * 65_536
        for _ in range(8):  # 512 KiB: twice the limit of a single-incident request
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = _response(sock)
    assert answer is not None and answer[0] == 413, answer


# --------------------------------------------------------------------------- 5: connection hygiene


def test_a_header_of_100_mb_is_431(server: Server, attack: Start) -> None:
    run = attack("100 MB header (431 after the first 32 KiB)")
    sent = 0
    with server.connect() as sock, run.request():
        sock.sendall(b"GET /v1/tickets HTTP/1.1\r\nHost: x\r\nX-Junk: ")
        try:
            while sent < 100_000_000:
                sock.sendall(b"a" * 65_536)
                sent += 65_536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _response(sock)
    run.notes.append(f"{sent / 1e6:.1f} MB sent before the server closed")
    assert sent < 10_000_000
    assert answer is None or answer[0] == 431  # the answer may be lost in the reset of a full pipe


def test_slow_and_idle_connections_are_closed(server: Server, attack: Start) -> None:
    run = attack("slowloris: partial headers / trickled body / idle")
    with server.connect() as partial, server.connect() as trickle, server.connect() as idle:
        started = time.perf_counter()
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        trickle.sendall(b"POST /v1/incidents HTTP/1.1\r\nHost: x\r\nX-API-Key: acme-key-123\r\n"
                        b"Content-Length: 100\r\n\r\n{")  # fmt: skip
        for _ in range(4):
            time.sleep(0.4)
            try:
                trickle.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
        headers_late = _response(partial)
        body_late = _response(trickle)
        assert headers_late is not None and headers_late[0] == 408, headers_late
        assert body_late is not None and body_late[0] == 408, body_late
        assert _closed(idle, timeout=5.0)  # the keep-alive timeout (2 s) also before a first request
        run.notes.append(f"all three closed after {time.perf_counter() - started:.1f} s")


def test_connections_per_client_are_capped(server: Server, attack: Start) -> None:
    attack("40 connections from one address (cap 30)")
    socks = [server.connect() for _ in range(40)]
    try:
        refused = 0
        for sock in socks:
            sock.settimeout(0.2)
            try:
                if sock.recv(1024).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except TimeoutError:
                pass
        # The health poller holds one connection: 29 of these were let in.
        assert refused == 11, refused
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------- 6-7: metrics


def test_metrics_need_their_token_and_their_series_are_bounded(server: Server, attack: Start) -> None:
    run = attack("batch naming 100 new services; /metrics size")
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers=ACME).status_code == 401  # an API key is not the token
    batch = {"incidents": [{"service": f"svc-{i:03d}", "log": "disk full on /data"} for i in range(100)]}
    r = _post(server, "/v1/incidents/batch", batch, ACME, run)
    assert r.status_code == 200
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    services = {
        line.split('service="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("ir_incidents_total{")
    }
    run.notes.append(f"{len(services)} service label values")
    assert len(services) <= 21 and "other" in services  # 20 admitted, the rest counted as 'other'


def test_no_tenant_learns_what_another_sent(server: Server, attack: Start) -> None:
    run = attack("cross-tenant embedding cache probe")
    token = {"Authorization": f"Bearer {METRICS_TOKEN}"}

    def hits() -> float:
        text = httpx.get(f"{server.url}/metrics", headers=token).text
        prefix = 'ir_cache_lookups_total{cache="embedding",result="hit"} '
        return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))

    secret = "payroll export for ACME-42 failed: upstream refused the batch file"
    assert _post(server, "/v1/incidents", {"service": "probe", "log": secret}, ACME, run).status_code == 201
    before = hits()
    assert _post(server, "/v1/incidents", {"service": "probe", "log": secret}, GLOBEX, run).status_code == 201
    assert hits() == before  # globex's lookup did not find acme's text


# --------------------------------------------------------------------------- 8: rate limits


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Server:
    root = tmp_path_factory.mktemp("limited")
    env = {
        "IR_API_KEYS": KEYS,
        "IR_RATE_LIMIT__PER_KEY": "5/minute",
        "IR_RATE_LIMIT__PER_TENANT": "8/minute",
        "IR_RATE_LIMIT__FAILED_AUTH_PER_ADDRESS": "3/minute",
    }
    running = Server(root / "data", env).start()
    yield running  # type: ignore[misc]
    running.stop()


def test_rate_limits_key_first_batches_by_size_and_failed_auth_per_address(limited: Server) -> None:
    url = f"{limited.url}/v1/runbooks"
    codes = [httpx.get(url, headers=ACME).status_code for _ in range(8)]
    assert codes == [200] * 5 + [429] * 3  # the key's budget; its 429s are not the tenant's
    assert [httpx.get(url, headers=ACME_OTHER).status_code for _ in range(4)] == [200, 200, 200, 429]
    batch = {"incidents": [{"service": "api", "log": f"queue {i} is full"} for i in range(6)]}
    r = httpx.post(f"{limited.url}/v1/incidents/batch", json=batch, headers=GLOBEX, timeout=60)
    assert r.status_code == 422 and "more than the key budget" in r.text  # 6 incidents > 5 per key
    assert httpx.post(f"{limited.url}/v1/incidents/batch", json={"incidents": batch["incidents"][:4]},
                      headers=GLOBEX, timeout=60).status_code == 200  # fmt: skip
    assert httpx.get(url, headers=GLOBEX).status_code == 200
    assert httpx.get(url, headers=GLOBEX).status_code == 429  # 4 + 1 = the key's 5
    wrong = {"X-API-Key": "guessed-key-000"}
    assert [httpx.get(url, headers=wrong).status_code for _ in range(5)] == [401, 401, 401, 429, 429]


# --------------------------------------------------------------------------- 9: the smaller ones


def test_text_fields_refuse_control_and_invisible_characters(server: Server, attack: Start) -> None:
    run = attack("control/invisible characters in every text field")
    opened = _post(
        server, "/v1/incidents", {"service": "texts", "log": "cache node 3 unreachable"}, ACME, run
    )
    ticket = opened.json()["ticket_id"]
    for path, body in [
        ("/v1/incidents", {"service": "texts", "log": "\u200b\ufeff\u2060"}),
        ("/v1/incidents", {"service": "texts", "log": "x", "labels": {"k": "v\x1b[2J"}}),
        (f"/v1/tickets/{ticket}/comments", {"author": "eve", "body": "hi\x00"}),
        (f"/v1/tickets/{ticket}/resolve", {"resolution": "done\x07"}),
    ]:
        assert _post(server, path, body, ACME, run).status_code == 422, (path, body)
    with run.request():
        r = httpx.put(f"{server.url}/v1/runbooks/ctl", json={"title": "t", "content": "c\x00"}, headers=ACME)
    assert r.status_code == 422


def test_comments_per_ticket_are_bounded(server: Server, attack: Start) -> None:
    run = attack("comments past the per-ticket cap (3)")
    opened = _post(server, "/v1/incidents", {"service": "notes", "log": "replica lag above 30s"}, ACME, run)
    url = f"/v1/tickets/{opened.json()['ticket_id']}/comments"
    codes = [
        _post(server, url, {"author": "ann", "body": f"note {i}"}, ACME, run).status_code for i in range(5)
    ]
    assert codes == [201, 201, 201, 409, 409]


def test_idempotency_records_are_bounded_per_tenant(server: Server, attack: Start) -> None:
    run = attack("8 Idempotency-Keys with a cap of 5")
    body = {"service": "idem", "log": "certificate for api.internal expires in 3 days"}
    first = {}
    for n in range(8):
        r = _post(server, "/v1/incidents", body, {**ACME, "Idempotency-Key": f"key-{n}"}, run)
        first[n] = r.json()["incident_id"]
        time.sleep(0.01)  # distinct creation times order the records
    time.sleep(1.0)  # a sweep runs (every 0.3 s here)
    log = Path(server.data_dir, "objects", "acme", "idempotency-log")
    assert len(list(log.iterdir())) == 5
    kept = _post(server, "/v1/incidents", body, {**ACME, "Idempotency-Key": "key-7"}, run)
    assert kept.json()["incident_id"] == first[7]  # a live record still replays
    forgotten = _post(server, "/v1/incidents", body, {**ACME, "Idempotency-Key": "key-0"}, run)
    assert forgotten.json()["incident_id"] != first[0]  # the oldest was forgotten early


def test_a_stored_hostile_runbook_does_not_slow_the_next_start(tmp_path: Path) -> None:
    """Stored runbooks are chunked again at start-up: a hostile one must not make that slow."""
    env = {"IR_API_KEYS": KEYS}
    plain = Server(tmp_path / "plain", env).start()
    plain.stop()
    hostile = Server(tmp_path / "hostile", env).start()
    content = "# x" + " " * 999_000 + "y\n\n" + "## Mitigation\n\nrestart it\n" * 10
    r = httpx.put(
        f"{hostile.url}/v1/runbooks/big", json={"title": "x", "content": content}, headers=ACME, timeout=60
    )
    assert r.status_code == 201
    hostile.stop()
    again = hostile.start()
    again.stop()
    assert again.ready_seconds < 2 * plain.ready_seconds + 1.0, (again.ready_seconds, plain.ready_seconds)


def test_every_answer_of_the_gate_is_json_in_the_contract_shape(server: Server) -> None:
    for r in (
        httpx.get(f"{server.url}/v1/tickets"),
        httpx.post(
            f"{server.url}/v1/incidents",
            content=b"x" * 300_000,
            headers={**ACME, "Content-Type": "application/json"},
        ),
    ):
        error = json.loads(r.content)["error"]
        assert set(error) == {"code", "message"} and r.headers["content-type"] == "application/json"
