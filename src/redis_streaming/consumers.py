"""Dead-consumer cleanup: delete consumers idle past a threshold that own no pending entries.

Candidates come from XINFO CONSUMERS; each delete re-checks inside one Lua script that the
consumer still owns nothing (and is still idle), so it must never delete a consumer with entries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import redis.exceptions as rex

from . import _codec as codec
from ._errors import translate
from ._model import ConsumerInfo

if TYPE_CHECKING:
    from .stream import EventStream

logger = logging.getLogger(__name__)

__all__ = [
    "ConsumerCleanup",
    "delete_consumer_if_idle",
    "delete_idle_consumers",
    "idle_candidates",
]

DEFAULT_CONSUMER_IDLE_MS: Final = 3_600_000
DELETED: Final = 1
KEPT_PENDING: Final = 0
KEPT_ACTIVE: Final = -1

# KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms.
# Returns 1 deleted, 0 kept because it owns entries, -1 kept because it became active, -2 gone.
# XPENDING ... <consumer> is callable from scripts on every version with streams; the idle
# re-check uses XINFO CONSUMERS through pcall, so a server that refuses it in scripts still gets
# the ownership check (the one that protects data).
_DELETE_IF_IDLE_AND_EMPTY = """
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #owned > 0 then return 0 end
local ok, rows = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if ok then
  local found = false
  for _, row in ipairs(rows) do
    local name, idle = nil, nil
    for i = 1, #row, 2 do
      if row[i] == 'name' then name = row[i + 1] end
      if row[i] == 'idle' then idle = row[i + 1] end
    end
    if name == ARGV[2] then
      found = true
      if idle ~= nil and tonumber(idle) < tonumber(ARGV[3]) then return -1 end
    end
  end
  if not found then return -2 end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class ConsumerCleanup:
    """What delete_idle_consumers did in one group."""

    group: str
    min_idle_ms: int
    deleted: tuple[str, ...] = ()
    kept_pending: tuple[str, ...] = ()
    kept_active: tuple[str, ...] = ()


def idle_candidates(
    consumers: Sequence[ConsumerInfo], min_idle_ms: int, keep: Sequence[str] = ()
) -> list[ConsumerInfo]:
    """Consumers idle at least ``min_idle_ms`` with nothing pending, minus ``keep`` (pure)."""
    protected = set(keep)
    return [
        c
        for c in consumers
        if c.pending == 0 and c.idle_ms >= min_idle_ms and c.name not in protected
    ]


def _delete_checked(
    stream: EventStream, group: str, names: Sequence[str], min_idle_ms: int
) -> list[int]:
    """Run the check-and-delete script for each name in one pipelined round trip."""
    try:
        script: Any = stream.client.register_script(_DELETE_IF_IDLE_AND_EMPTY)
        pipe = stream.client.pipeline(transaction=False)
        for name in names:
            script(keys=[stream.key], args=[group, name, min_idle_ms], client=pipe)
        return [int(r) for r in pipe.execute()]
    except rex.RedisError as exc:
        raise translate(exc) from exc


def delete_consumer_if_idle(
    stream: EventStream, group: str, consumer: str, min_idle_ms: int = 0
) -> bool:
    """Atomically delete one consumer if it owns no pending entries and is idle enough.

    True if it was deleted; False if it owns entries, was active within ``min_idle_ms``, or
    does not exist.
    """
    codec.validate_name(group, "group")
    codec.validate_name(consumer, "consumer")
    codec.validate_int(min_idle_ms, "min_idle_ms")
    return _delete_checked(stream, group, [consumer], min_idle_ms)[0] == DELETED


def delete_idle_consumers(
    stream: EventStream,
    group: str,
    min_idle_ms: int = DEFAULT_CONSUMER_IDLE_MS,
    *,
    keep: Sequence[str] = (),
    dry_run: bool = False,
) -> ConsumerCleanup:
    """Delete ``group``'s consumers idle for ``min_idle_ms`` that own no pending entries.

    Each deletion is one atomic script that re-checks ownership (and idleness) right before
    XGROUP DELCONSUMER, so a consumer that picked up entries meanwhile is kept. Names in
    ``keep`` (e.g. this process's live workers) are never deleted. ``dry_run`` only lists.
    """
    codec.validate_name(group, "group")
    codec.validate_int(min_idle_ms, "min_idle_ms")
    for name in keep:
        codec.validate_name(name, "consumer")
    candidates = idle_candidates(stream.info_consumers(group), min_idle_ms, keep)
    if dry_run or not candidates:
        return ConsumerCleanup(group, min_idle_ms, tuple(c.name for c in candidates))
    results = _delete_checked(stream, group, [c.name for c in candidates], min_idle_ms)
    deleted: list[str] = []
    kept_pending: list[str] = []
    kept_active: list[str] = []
    for c, code in zip(candidates, results, strict=True):
        if code == DELETED:
            deleted.append(c.name)
        elif code == KEPT_PENDING:
            kept_pending.append(c.name)
        elif code == KEPT_ACTIVE:
            kept_active.append(c.name)
    if deleted:
        logger.info(
            "deleted %d idle consumers of %s/%s: %s",
            len(deleted),
            stream.key,
            group,
            ", ".join(deleted),
        )
    return ConsumerCleanup(
        group, min_idle_ms, tuple(deleted), tuple(kept_pending), tuple(kept_active)
    )
