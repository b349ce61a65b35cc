"""A small Pinecone data-plane server for tests: real HTTP on 127.0.0.1, brute-force cosine.

It speaks the documented REST calls the SDK makes (``X-Pinecone-Api-Version`` 2025-10 shapes):

    POST /vectors/upsert            POST /query                 GET  /vectors/fetch
    POST /vectors/fetch_by_metadata POST /vectors/delete        POST /vectors/update
    POST /describe_index_stats      GET  /vectors/list          GET  /namespaces
    DELETE /namespaces/{name}

with ``Api-Key`` authentication, metadata filters (``$eq $ne $in $nin $gt $gte $lt $lte
$exists $and $or`` and the implicit AND of field conditions), numbers stored as doubles (as
Pinecone does), and the LSN headers of the real service: writes answer with
``x-pinecone-request-lsn``; queries with ``x-pinecone-max-indexed-lsn``. ``lag`` makes writes
become visible only that many seconds after they were acknowledged, like the real index;
``fail_with`` makes the next requests fail with a status code.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_NAMESPACE = "__default__"


class ApiFailure(Exception):
    def __init__(self, status: int, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


@dataclass
class Record:
    values: list[float]
    metadata: dict[str, Any] = field(default_factory=dict)


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value)


def _store_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (metadata or {}).items():
        if value is None:
            raise ApiFailure(400, f"Metadata value for key {key!r} must not be null")
        out[key] = [str(v) for v in value] if isinstance(value, list) else _number(value)
    return out


def _cond(value: Any, op: str, arg: Any) -> bool:
    if op == "$exists":
        return (value is not None) == bool(arg)
    if value is None:
        return op in ("$ne", "$nin")
    if op == "$eq":
        return bool(value == _number(arg)) if not isinstance(value, list) else _number(arg) in value
    if op == "$ne":
        return bool(value != _number(arg)) if not isinstance(value, list) else _number(arg) not in value
    if op in ("$in", "$nin"):
        args = [_number(a) for a in arg]
        hit = any(v in args for v in value) if isinstance(value, list) else value in args
        return hit if op == "$in" else not hit
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if not isinstance(value, float):
            return False
        bound = float(arg)
        return {"$gt": value > bound, "$gte": value >= bound, "$lt": value < bound, "$lte": value <= bound}[
            op
        ]
    raise ApiFailure(400, f"Unsupported filter operator {op}")


def matches(metadata: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    if not flt:
        return True
    for key, spec in flt.items():
        if key == "$and":
            if not all(matches(metadata, sub) for sub in spec):
                return False
        elif key == "$or":
            if not any(matches(metadata, sub) for sub in spec):
                return False
        elif key.startswith("$"):
            raise ApiFailure(400, f"Unsupported filter operator {key}")
        elif isinstance(spec, dict):
            if not all(_cond(metadata.get(key), op, arg) for op, arg in spec.items()):
                return False
        elif not _cond(metadata.get(key), "$eq", spec):
            return False
    return True


def _cosine(a: list[float], b: list[float]) -> float:
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        raise ApiFailure(400, "Cosine similarity is undefined for a zero vector")
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


class FakePinecone:
    """One dense cosine index. ``start()`` binds 127.0.0.1 on a free port; ``url`` is its host."""

    def __init__(self, *, dim: int, api_key: str = "test-key", lag: float = 0.0) -> None:
        self.dim = dim
        self.api_key = api_key
        self.lag = lag
        self.requests: list[tuple[str, str]] = []
        self._data: dict[str, dict[str, Record]] = {}
        self._lock = threading.Lock()
        self._committed = 0
        self._applied = 0
        self._pending: list[tuple[int, float, Callable[[], None]]] = []
        self._failures: list[tuple[int, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> FakePinecone:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-pinecone", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        """Stop like a killed server: stop listening and drop every open (keep-alive) connection."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- test controls ----------------------------------------------------------

    def fail_with(self, status: int, times: int = 1, path: str = "") -> None:
        """Answer the next ``times`` requests (to ``path`` if given) with ``status``."""
        with self._lock:
            self._failures.extend([(status, path)] * times)

    def namespace_records(self, namespace: str) -> dict[str, Record]:
        with self._lock:
            self._catch_up()
            return dict(self._data.get(namespace, {}))

    # -- plumbing -----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        try:
            with self._lock:
                self.requests.append((method, url.path))
                for i, (status, path) in enumerate(self._failures):
                    if not path or path == url.path:
                        del self._failures[i]
                        headers["Retry-After"] = "0"
                        raise ApiFailure(status, f"injected failure {status}", code=14)
                if handler.headers.get("Api-Key") != self.api_key:
                    raise ApiFailure(401, "Invalid API Key", code=16)
                self._catch_up()
                body = json.loads(raw) if raw else {}
                status, payload, extra = self._route(method, url.path, parse_qs(url.query), body)
                headers.update(extra)
        except ApiFailure as exc:
            status, payload = exc.status, {"code": exc.code, "message": exc.message, "details": []}
        except (ValueError, KeyError, TypeError) as exc:
            status, payload = 400, {"code": 3, "message": f"bad request: {exc}", "details": []}
        data = json.dumps(payload).encode()
        handler.send_response(status, HTTPStatus(status).phrase)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _catch_up(self) -> None:
        now = time.monotonic()
        while self._pending and self._pending[0][1] <= now:
            lsn, _, op = self._pending.pop(0)
            op()
            self._applied = lsn

    def _write(self, op: Callable[[], None]) -> dict[str, str]:
        self._committed += 1
        self._pending.append((self._committed, time.monotonic() + self.lag, op))
        if self.lag <= 0:
            self._catch_up()
        return {"x-pinecone-request-lsn": str(self._committed)}

    @staticmethod
    def _ns(name: str | None) -> str:
        return name or DEFAULT_NAMESPACE

    def _vector(self, values: Any) -> list[float]:
        if not isinstance(values, list) or len(values) != self.dim:
            got = len(values) if isinstance(values, list) else 0
            raise ApiFailure(
                400, f"Vector dimension {got} does not match the dimension of the index {self.dim}"
            )
        return [float(v) for v in values]

    def _wire(self, vid: str, rec: Record, values: bool = True, metadata: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"id": vid}
        if values:
            out["values"] = list(rec.values)
        if metadata and rec.metadata:
            out["metadata"] = dict(rec.metadata)
        return out

    def _page(self, items: list[str], token: str | None, limit: int) -> tuple[list[str], str | None]:
        start = int(token) if token else 0
        chunk = items[start : start + limit]
        nxt = str(start + limit) if start + limit < len(items) else None
        return chunk, nxt

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        usage = {"readUnits": 1}
        if method == "POST" and path == "/vectors/upsert":
            ns = self._ns(body.get("namespace"))
            vectors = body["vectors"]
            if not vectors or len(vectors) > 1000:
                raise ApiFailure(400, "Upsert takes between 1 and 1000 vectors")
            records = {
                v["id"]: Record(self._vector(v.get("values")), _store_metadata(v.get("metadata")))
                for v in vectors
            }

            def upsert() -> None:
                self._data.setdefault(ns, {}).update(records)

            return 200, {"upsertedCount": len(records)}, self._write(upsert)

        if method == "POST" and path == "/query":
            ns = self._ns(body.get("namespace"))
            top_k = int(body["topK"])
            if not 1 <= top_k <= 10_000:
                raise ApiFailure(400, "topK must be between 1 and 10000")
            include_meta, include_values = bool(body.get("includeMetadata")), bool(body.get("includeValues"))
            if top_k > 1000 and (include_meta or include_values):
                raise ApiFailure(400, "topK must be at most 1000 when including metadata or values")
            records = self._data.get(ns, {})
            if "id" in body:
                if body["id"] not in records:
                    return 200, {"matches": [], "namespace": ns, "usage": usage}, self._reconciled()
                vector = records[body["id"]].values
            else:
                vector = self._vector(body.get("vector"))
            flt = body.get("filter")
            scored = [
                (_cosine(vector, r.values), vid, r) for vid, r in records.items() if matches(r.metadata, flt)
            ]
            scored.sort(key=lambda s: (-s[0], s[1]))
            result = [
                {"score": score, **self._wire(vid, r, include_values, include_meta)}
                for score, vid, r in scored[:top_k]
            ]
            return 200, {"matches": result, "namespace": ns, "usage": usage}, self._reconciled()

        if method == "GET" and path == "/vectors/fetch":
            ns = self._ns((query.get("namespace") or [""])[0])
            ids = query.get("ids") or []
            if not ids:
                raise ApiFailure(400, "ids must not be empty")
            records = self._data.get(ns, {})
            found = {vid: self._wire(vid, records[vid]) for vid in ids if vid in records}
            return 200, {"vectors": found, "namespace": ns, "usage": usage}, {}

        if method == "POST" and path == "/vectors/fetch_by_metadata":
            ns = self._ns(body.get("namespace"))
            flt = body.get("filter")
            if not flt:
                raise ApiFailure(400, "Fetch by metadata with empty metadata filter is not allowed")
            limit = int(body.get("limit") or 100)
            records = self._data.get(ns, {})
            ids = sorted(vid for vid, r in records.items() if matches(r.metadata, flt))
            chunk, nxt = self._page(ids, body.get("paginationToken"), limit)
            out: dict[str, Any] = {
                "vectors": {vid: self._wire(vid, records[vid]) for vid in chunk},
                "namespace": ns,
                "usage": usage,
            }
            if nxt is not None:
                out["pagination"] = {"next": nxt}
            return 200, out, {}

        if method == "POST" and path == "/vectors/delete":
            ns = self._ns(body.get("namespace"))
            ids, flt, delete_all = body.get("ids"), body.get("filter"), bool(body.get("deleteAll"))
            if sum(x is not None and x is not False for x in (ids, flt, delete_all or None)) != 1:
                raise ApiFailure(400, "Exactly one of ids, filter, deleteAll must be given")
            if flt is not None and not flt:
                raise ApiFailure(400, "Delete with empty metadata filter is not allowed")

            def delete() -> None:
                records = self._data.get(ns, {})
                if delete_all:
                    records.clear()
                elif ids is not None:
                    for vid in ids:
                        records.pop(vid, None)
                else:
                    for vid in [vid for vid, r in records.items() if matches(r.metadata, flt)]:
                        del records[vid]
                if not records:
                    self._data.pop(ns, None)

            return 200, {}, self._write(delete)

        if method == "POST" and path == "/vectors/update":
            ns = self._ns(body.get("namespace"))
            vid, flt = body.get("id"), body.get("filter")
            if (vid is None) == (flt is None):
                raise ApiFailure(400, "Exactly one of id, filter must be given")
            set_metadata = _store_metadata(body.get("setMetadata"))
            values = self._vector(body["values"]) if "values" in body else None
            records = self._data.get(ns, {})
            targets = (
                [vid] if vid is not None else [k for k, r in records.items() if matches(r.metadata, flt)]
            )
            targets = [t for t in targets if t in records]
            if body.get("dryRun"):
                return 200, {"matchedRecords": len(targets)}, {}

            def update() -> None:
                current = self._data.get(ns, {})
                hit = (
                    [vid] if vid is not None else [k for k, r in current.items() if matches(r.metadata, flt)]
                )
                for key in hit:
                    if key in current:
                        current[key].metadata.update(set_metadata)
                        if values is not None:
                            current[key].values = values

            return 200, {"matchedRecords": len(targets)}, self._write(update)

        if method == "POST" and path == "/describe_index_stats":
            namespaces = {ns: {"vectorCount": len(r)} for ns, r in self._data.items()}
            total = sum(len(r) for r in self._data.values())
            return (
                200,
                {
                    "namespaces": namespaces,
                    "dimension": self.dim,
                    "indexFullness": 0.0,
                    "totalVectorCount": total,
                    "metric": "cosine",
                    "vectorType": "dense",
                },
                {},
            )

        if method == "GET" and path == "/vectors/list":
            ns = self._ns((query.get("namespace") or [""])[0])
            prefix = (query.get("prefix") or [""])[0]
            limit = int((query.get("limit") or ["100"])[0])
            ids = sorted(vid for vid in self._data.get(ns, {}) if vid.startswith(prefix))
            chunk, nxt = self._page(ids, (query.get("paginationToken") or [None])[0], limit)
            out = {"vectors": [{"id": vid} for vid in chunk], "namespace": ns, "usage": usage}
            if nxt is not None:
                out["pagination"] = {"next": nxt}
            return 200, out, {}

        if method == "GET" and path == "/namespaces":
            prefix = (query.get("prefix") or [""])[0]
            limit = int((query.get("limit") or ["100"])[0])
            names = sorted(ns for ns in self._data if ns.startswith(prefix))
            chunk, nxt = self._page(names, (query.get("paginationToken") or [None])[0], limit)
            out = {
                "namespaces": [{"name": ns, "record_count": str(len(self._data[ns]))} for ns in chunk],
                "total_count": len(names),
            }
            if nxt is not None:
                out["pagination"] = {"next": nxt}
            return 200, out, {}

        if method == "DELETE" and path.startswith("/namespaces/"):
            ns = unquote(path[len("/namespaces/") :])
            if ns not in self._data:
                raise ApiFailure(404, f"Namespace {ns} not found", code=5)
            return 202, {}, self._write(lambda: self._data.pop(ns, None) and None)

        raise ApiFailure(404, f"Not found: {method} {path}", code=5)

    def _reconciled(self) -> dict[str, str]:
        return {"x-pinecone-max-indexed-lsn": str(self._applied)}
