"""Reading a request body that holds many items without holding the event loop.

FastAPI parses and validates a body in one call on the event loop: for a large batch no other
request is served meanwhile (the parser and the validator hold the GIL, so a worker thread
would not help). ``validated_items`` decodes the JSON in one fast C call and
validates the items in slices, yielding to the event loop between slices. Its errors are the
same ``RequestValidationError``s FastAPI raises (400 for malformed JSON, 422 with each item's
place otherwise).
"""

from __future__ import annotations

import asyncio
import email.message
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
SLICE = 100  # items validated between two turns of the event loop


async def validated_items(
    raw: bytes,
    content_type: str | None,
    field: str,
    model: type[M],
    *,
    allowed: Mapping[str, Any] | None,
    min_items: int = 1,
) -> list[M]:
    """The items of the array ``field`` of the JSON object in ``raw``, each validated as
    ``model``. ``allowed`` maps every top-level field the object may have to its default
    (the array's own entry is ignored; None: any field, ignored); ``field`` must be an array
    of at least ``min_items``. As FastAPI reads a body: only a JSON content type
    (``application/json``, ``application/*+json``) is JSON."""
    if not raw:
        raise _invalid((), "Field required")
    if not _is_json(content_type):
        raise _invalid((), "Input should be a valid dictionary or object to extract fields from")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error", "input": {}}]
        ) from None
    if not isinstance(document, dict):
        raise _invalid((), "Input should be a valid dictionary")
    unknown = sorted(set(document) - set(allowed) - {field}) if allowed is not None else []
    if unknown:
        raise _invalid((unknown[0],), "Extra inputs are not permitted")
    items = document.get(field)
    if not isinstance(items, list):
        raise _invalid((field,), "Field required" if items is None else "Input should be a valid list")
    if len(items) < min_items:
        raise _invalid((field,), f"List should have at least {min_items} item")
    out: list[M] = []
    for start in range(0, len(items), SLICE):
        if start:
            await asyncio.sleep(0)  # other requests' turn
        for i in range(start, min(start + SLICE, len(items))):
            try:
                out.append(model.model_validate(items[i]))
            except ValidationError as exc:
                raise RequestValidationError(
                    [{**e, "loc": ("body", field, i, *e["loc"])} for e in exc.errors()]
                ) from None
    return out


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _invalid(loc: tuple[object, ...], msg: str) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}])
