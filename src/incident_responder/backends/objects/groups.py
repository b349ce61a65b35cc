"""The rules of a ``put_many`` group that every object store applies the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from incident_responder.errors import InvalidInput, VersionConflict
from incident_responder.ports import ObjectWrite


def check_group(writes: Sequence[ObjectWrite]) -> None:
    """``InvalidInput`` unless the keys differ and each ``after`` names an earlier write."""
    seen: set[str] = set()
    for write in writes:
        if write.key in seen:
            raise InvalidInput("put_many: the same key twice in one group")
        if write.after is not None and write.after not in seen:
            raise InvalidInput(f"put_many: {write.key} comes after {write.after}, not an earlier write")
        seen.add(write.key)


def refused_with_predecessor(
    write: ObjectWrite, results: Mapping[str, str | VersionConflict]
) -> VersionConflict | None:
    """The refusal of a write whose ``after`` write was refused (decided already), else None."""
    if write.after is not None and isinstance(results[write.after], VersionConflict):
        return VersionConflict(f"{write.key} not written: {write.after} was refused")
    return None
