"""The notification outbox in Redis, shared by every replica.

Every change is one Lua script, so it is atomic however many processes share the outbox:
two never claim the same message while its lease runs, and a stream's order holds.
Messages are as durable as the Redis server keeps its data (``appendonly yes`` with
``appendfsync always`` for every write on disk when ``put`` returns; ``everysec`` may lose
the last second on a crash). The scripts build their key names from the prefix instead of
declaring them, so the outbox needs one Redis server, not a cluster spread over slots.

Keys, under ``prefix``:

* ``m:<id>``: a hash per message: its fields (numbers as exact text, headers as JSON),
  ``seq`` (put order; a replay takes a new one) and ``skey`` (its stream's list);
* ``s:<digest of tenant, channel, ticket>``: a list per stream of its pending ids, in order;
  its first is the stream's *head*, the only one that may be handed out;
* ``due``: a sorted set of every stream's head, scored by ``next_at``: a claim reads its
  due end and re-scores what it hands out to the lease's end, so it costs what it returns
  whatever else the outbox holds;
* ``st:pending``, ``st:sent``, ``st:dead``: a sorted set per state by ``created_at``
  (listing, counts, purge);
* ``seq``: the put-order counter.

Sorted-set members are ``<seq, 16 digits>:<id>``, so messages of equal score keep put order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, get_args

import redis
from redis.exceptions import RedisError

from incident_responder.backends.redis_client import key_name
from incident_responder.errors import BackendUnavailable
from incident_responder.notifications.model import MessageState, OutboxMessage

_ERROR_CHARS = 500
_STATES: tuple[MessageState, ...] = get_args(MessageState)
_PUT_BATCH = 500  # messages per script run (a long script stalls every other Redis client)
_PURGE_BATCH = 500

# Shared by every script: ARGV[1] is the prefix.
_PRELUDE = """
local P = ARGV[1]
local function mkey(id) return P .. 'm:' .. id end
local function member(seq, id) return string.format('%016d', tonumber(seq)) .. ':' .. id end
local function unmember(m) return string.sub(m, 18) end
-- The stream's first pending message (if any) becomes its head: due at its next_at.
local function promote(skey)
  local nid = redis.call('LINDEX', skey, 0)
  if nid then
    local f = redis.call('HMGET', mkey(nid), 'seq', 'next_at')
    redis.call('ZADD', P .. 'due', f[2], member(f[1], nid))
  end
end
-- A pending message leaves its stream for ``state``; if it was the head, the next one is.
local function finish(id, state)
  local k = mkey(id)
  local f = redis.call('HMGET', k, 'seq', 'created_at', 'skey')
  local m = member(f[1], id)
  redis.call('ZREM', P .. 'st:pending', m)
  redis.call('ZADD', P .. 'st:' .. state, f[2], m)
  redis.call('HSET', k, 'state', state)
  local was_head = redis.call('ZREM', P .. 'due', m) == 1
  redis.call('LREM', f[3], 1, id)
  if was_head then promote(f[3]) end
end
"""

_FIELDS = (
    "message_id", "tenant", "channel_id", "channel_kind", "kind", "ticket_id", "url", "body",
    "headers", "created_at", "next_at", "attempts", "last_error", "state", "skey",
)  # fmt: skip

_LUA_FIELDS = "{" + ", ".join(f"'{f}'" for f in _FIELDS) + "}"

# ARGV: prefix, n, then n times the values of _FIELDS.
_PUT = (
    _PRELUDE
    + f"local F, names = {len(_FIELDS)}, {_LUA_FIELDS}\n"
    + """
local stored = 0
for i = 0, tonumber(ARGV[2]) - 1 do
  local b = 2 + i * F
  local id = ARGV[b + 1]
  local k = mkey(id)
  if redis.call('EXISTS', k) == 0 then
    local seq = redis.call('INCR', P .. 'seq')
    local args = {}
    for j = 1, F do
      args[#args + 1] = names[j]
      args[#args + 1] = ARGV[b + j]
    end
    args[#args + 1] = 'seq'
    args[#args + 1] = tostring(seq)
    redis.call('HSET', k, unpack(args))
    local state, skey, m = ARGV[b + 14], ARGV[b + 15], member(seq, id)
    redis.call('ZADD', P .. 'st:' .. state, ARGV[b + 10], m)
    if state == 'pending' and redis.call('RPUSH', skey, id) == 1 then
      redis.call('ZADD', P .. 'due', ARGV[b + 11], m)
    end
    stored = stored + 1
  end
end
return stored
"""
)

# ARGV: prefix, now, limit, lease end. Due heads, by next_at then put order, leased.
_CLAIM = (
    _PRELUDE
    + """
local due = redis.call('ZRANGEBYSCORE', P .. 'due', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, m in ipairs(due) do
  local k = mkey(unmember(m))
  redis.call('ZADD', P .. 'due', ARGV[4], m)
  redis.call('HSET', k, 'next_at', ARGV[4])
  out[#out + 1] = redis.call('HGETALL', k)
end
return out
"""
)

# ARGV: prefix, id.
_SENT = (
    _PRELUDE
    + """
if redis.call('HGET', mkey(ARGV[2]), 'state') ~= 'pending' then return 0 end
finish(ARGV[2], 'sent')
return 1
"""
)

# ARGV: prefix, id, next_at, error.
_RETRY = (
    _PRELUDE
    + """
local k = mkey(ARGV[2])
if redis.call('HGET', k, 'state') ~= 'pending' then return 0 end
redis.call('HINCRBY', k, 'attempts', tonumber(ARGV[5]))
redis.call('HSET', k, 'last_error', ARGV[4], 'next_at', ARGV[3])
redis.call('ZADD', P .. 'due', 'XX', ARGV[3], member(redis.call('HGET', k, 'seq'), ARGV[2]))
return 1
"""
)

# ARGV: prefix, id, error.
_BURY = (
    _PRELUDE
    + """
local k = mkey(ARGV[2])
if redis.call('HGET', k, 'state') ~= 'pending' then return 0 end
redis.call('HINCRBY', k, 'attempts', 1)
redis.call('HSET', k, 'last_error', ARGV[3])
finish(ARGV[2], 'dead')
return 1
"""
)

# ARGV: prefix, id, now. A dead message is put again at the end of its stream.
_REPLAY = (
    _PRELUDE
    + """
local id = ARGV[2]
local k = mkey(id)
if redis.call('HGET', k, 'state') ~= 'dead' then return 0 end
local f = redis.call('HMGET', k, 'seq', 'created_at', 'skey')
redis.call('ZREM', P .. 'st:dead', member(f[1], id))
local seq = redis.call('INCR', P .. 'seq')
local m = member(seq, id)
redis.call('HSET', k, 'state', 'pending', 'next_at', ARGV[3], 'seq', tostring(seq), 'attempts', '0')
redis.call('ZADD', P .. 'st:pending', f[2], m)
if redis.call('RPUSH', f[3], id) == 1 then
  redis.call('ZADD', P .. 'due', ARGV[3], m)
end
return 1
"""
)

# ARGV: prefix, state, limit. Oldest first (created_at, then put order).
_LISTING = (
    _PRELUDE
    + """
local out = {}
for _, m in ipairs(redis.call('ZRANGE', P .. 'st:' .. ARGV[2], 0, tonumber(ARGV[3]) - 1)) do
  out[#out + 1] = redis.call('HGETALL', mkey(unmember(m)))
end
return out
"""
)

# ARGV: prefix, sent_before, batch. Forgets at most ``batch`` sent messages; how many.
_PURGE = (
    _PRELUDE
    + """
local old = redis.call('ZRANGEBYSCORE', P .. 'st:sent', '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(old) do
  redis.call('DEL', mkey(unmember(m)))
  redis.call('ZREM', P .. 'st:sent', m)
end
return #old
"""
)


class RedisOutbox:
    """The outbox in Redis, shared by every replica: each change one Lua script (atomic)."""

    def __init__(self, client: redis.Redis, prefix: str = "ir:outbox:") -> None:
        self._client = client
        self._prefix = prefix
        self._put = client.register_script(_PUT)
        self._claim = client.register_script(_CLAIM)
        self._sent = client.register_script(_SENT)
        self._retry = client.register_script(_RETRY)
        self._bury = client.register_script(_BURY)
        self._replay = client.register_script(_REPLAY)
        self._listing = client.register_script(_LISTING)
        self._purge = client.register_script(_PURGE)

    def _run(self, script: Any, *args: object) -> Any:
        try:
            return script(keys=[], args=[self._prefix, *args])
        except RedisError as exc:
            raise BackendUnavailable(f"redis outbox failed: {type(exc).__name__}") from exc

    def _stream_key(self, m: OutboxMessage) -> str:
        return key_name(self._prefix + "s:", m.stream)

    def put(self, messages: Sequence[OutboxMessage]) -> None:
        """Stored as given (a message put in another state stays out of its stream), in
        batches of ``_PUT_BATCH`` messages, each atomic."""
        for start in range(0, len(messages), _PUT_BATCH):
            batch = messages[start : start + _PUT_BATCH]
            args: list[object] = [len(batch)]
            for m in batch:
                args += [
                    m.message_id, m.tenant, m.channel_id, m.channel_kind, m.kind, m.ticket_id, m.url,
                    m.body, json.dumps(m.headers), repr(m.created_at), repr(m.next_at), m.attempts,
                    m.last_error[:_ERROR_CHARS], m.state, self._stream_key(m),
                ]  # fmt: skip
            self._run(self._put, *args)

    def claim(self, now: float, limit: int, lease: float) -> list[OutboxMessage]:
        """Due heads, longest due first (by ``next_at``, then put order); each leased until
        ``now + lease`` (the ``next_at`` of the messages returned)."""
        if limit <= 0:
            return []
        rows = self._run(self._claim, repr(float(now)), limit, repr(float(now + lease)))
        return [_message(_pairs(row)) for row in rows]

    def sent(self, message_id: str) -> None:
        """A message not pending (sent already, dead, unknown) is left as it is."""
        self._run(self._sent, message_id)

    def retry(self, message_id: str, next_at: float, error: str, *, counted: bool = True) -> None:
        """A message not pending is left as it is: a late answer never revives it."""
        self._run(self._retry, message_id, repr(float(next_at)), error[:_ERROR_CHARS], int(counted))

    def bury(self, message_id: str, error: str) -> None:
        """A message not pending is left as it is."""
        self._run(self._bury, message_id, error[:_ERROR_CHARS])

    def get(self, message_id: str) -> OutboxMessage | None:
        try:
            raw: Any = self._client.hgetall(self._prefix + "m:" + message_id)
        except RedisError as exc:
            raise BackendUnavailable(f"redis outbox failed: {type(exc).__name__}") from exc
        return _message({_text(k): _text(v) for k, v in raw.items()}) if raw else None

    def listing(self, state: MessageState, limit: int = 100) -> list[OutboxMessage]:
        """Oldest first: by ``created_at``, then put order."""
        if limit <= 0:
            return []
        return [_message(_pairs(row)) for row in self._run(self._listing, state, limit)]

    def replay(self, message_id: str, now: float) -> bool:
        """The message is put again (a new ``seq``: the end of its stream), due at ``now``;
        its attempts start again from 0 (its last error is kept)."""
        return bool(self._run(self._replay, message_id, repr(float(now))))

    def counts(self) -> dict[MessageState, int]:
        try:
            pipe = self._client.pipeline()  # MULTI: one moment's counts
            for state in _STATES:
                pipe.zcard(self._prefix + "st:" + state)
            found = pipe.execute()
        except RedisError as exc:
            raise BackendUnavailable(f"redis outbox failed: {type(exc).__name__}") from exc
        return {state: int(n) for state, n in zip(_STATES, found, strict=True)}

    def purge(self, sent_before: float) -> int:
        """In batches of ``_PURGE_BATCH``, each atomic."""
        total = 0
        while True:
            n = int(self._run(self._purge, repr(float(sent_before)), _PURGE_BATCH))
            total += n
            if n < _PURGE_BATCH:
                return total

    def close(self) -> None:
        """Nothing to release: the client belongs to whoever made it (and is shared)."""


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[object]) -> dict[str, str]:
    """A hash as HGETALL answers it inside a script: field, value, field, value..."""
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


def _message(fields: Mapping[str, str]) -> OutboxMessage:
    return OutboxMessage.model_validate(
        {
            "message_id": fields["message_id"],
            "tenant": fields["tenant"],
            "channel_id": fields["channel_id"],
            "channel_kind": fields["channel_kind"],
            "kind": fields["kind"],
            "ticket_id": fields["ticket_id"],
            "url": fields["url"],
            "body": fields["body"],
            "headers": json.loads(fields["headers"]),
            "created_at": float(fields["created_at"]),
            "next_at": float(fields["next_at"]),
            "attempts": int(fields["attempts"]),
            "last_error": fields["last_error"],
            "state": fields["state"],
        }
    )
