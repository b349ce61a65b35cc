"""moto's S3 server with atomic conditional writes, as S3 has them.

moto 5 checks ``If-Match`` / ``If-None-Match`` and then stores the object in a separate
step, with no lock between the two: two PUTs with the same ``If-Match`` that interleave
there both succeed, and one overwrites the other. AWS S3 refuses the second one (412 or
409), and the service's compare-and-swap relies on that. The four-process storm test once
lost 8 of 1,000 occurrences in CI, which this race explains (24 storms here did not
reproduce it; no other lost-update path was found in the service). This launcher runs moto's own application
under ``run_simple`` as ``moto_server`` does, with requests that change state (PUT, POST,
DELETE) serialized by one lock; reads still run concurrently.

Usage: ``python tests/moto_atomic_s3.py HOST PORT``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

_WRITES = frozenset({"PUT", "POST", "DELETE"})


class SerializedWrites:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in _WRITES:
            return self._app(environ, start_response)
        with self._lock:  # the condition check and the write happen inside the app call
            return list(self._app(environ, start_response))


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, SerializedWrites(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
