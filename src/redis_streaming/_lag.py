"""Consumer-group lag: take XINFO GROUPS' figure only when it is sound, else count the entries.

Pure decisions over parsed replies, plus tiny helpers that queue commands on a caller's pipeline;
it must not open connections, run a round trip of its own, read a clock or log.

The one place lag is worked out (health, metrics, the demo and ``inspect`` all come here):

1. an empty or missing stream, or a group whose last-delivered ID is at or past the stream's
   newest entry, has lag 0;
2. a group whose last-delivered ID is older than the first entry still in the stream has every
   entry ahead of it: lag = XLEN;
3. otherwise the server's lag is used when it is sound (:func:`server_lag_sound`);
4. otherwise the entries after the last-delivered ID are counted with one bounded XRANGE
   (``cap + 1`` entries at most); past the cap the figure is a lower bound (``exact=False``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sized
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from . import _codec as codec
from ._model import GroupInfo, StreamInfo
from ._ops import Op, raw_command

__all__ = [
    "DEFAULT_LAG_CAP",
    "MAX_LAG_CAP",
    "Lag",
    "ServerVersion",
    "count_range",
    "counted",
    "finish",
    "format_lag",
    "from_xinfo",
    "parse_hello",
    "queue_counts",
    "queue_hello",
    "resolve",
    "server_lag_sound",
    "validate_cap",
]

#: Lags up to this many entries are counted exactly; a larger one is reported as "≥ cap + 1".
DEFAULT_LAG_CAP: Final = 10_000
#: The largest cap accepted: one check never reads more than this many entries per group.
MAX_LAG_CAP: Final = 1_000_000

# First releases whose XREADGROUP stops advancing a group's read counter by one per entry while
# the group is behind the first entry or has tombstones ahead (Redis PR 13958, Valkey PR 1952).
# Conservative: earlier patch releases may carry the fix too, they are merely counted instead.
_SOUND_COUNTER_SINCE: Final[Mapping[str, tuple[int, int, int]]] = {
    "redis": (8, 2, 0),
    "valkey": (9, 0, 0),
}

_LEADING_DIGITS: Final = re.compile(r"\d+")

LagSource = Literal["stream", "server", "counted"]


@dataclass(frozen=True, slots=True)
class Lag:
    """Entries not yet delivered to a group; ``value`` is a lower bound when ``exact`` is False.

    ``source`` says how it was found: ``stream`` (from the stream's own IDs and length),
    ``server`` (XINFO GROUPS' lag, judged sound) or ``counted`` (a bounded XRANGE).
    """

    value: int
    exact: bool
    source: LagSource

    def __str__(self) -> str:
        return format_lag(self.value, self.exact)


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """The server's name and version as HELLO reports them (``redis``/``valkey``, 3 numbers)."""

    name: str
    version: tuple[int, int, int]

    @property
    def sound_read_counter(self) -> bool:
        """True when this server keeps a group's read counter right across trims and deletes."""
        since = _SOUND_COUNTER_SINCE.get(self.name)
        return since is not None and self.version >= since


def validate_cap(cap: object) -> int:
    """``cap`` checked as an int in 1..MAX_LAG_CAP (InvalidOption otherwise)."""
    return codec.validate_int(cap, "lag_cap", minimum=1, maximum=MAX_LAG_CAP)


def format_lag(value: int | None, exact: bool) -> str:
    """``"12"``, ``"≥ 10001"`` for a lower bound, ``"?"`` when unknown."""
    if value is None:
        return "?"
    return str(value) if exact else f"≥ {value}"


# ---------------------------------------------------------------- server identity


def parse_hello(reply: Any) -> ServerVersion | None:
    """HELLO's reply (RESP2 flat list or RESP3 map, bytes or str) as a ServerVersion.

    None when the reply is an error (HELLO refused or unknown) or carries no usable version: the
    caller then treats the server as one whose read counter may drift.
    """
    if isinstance(reply, BaseException) or reply is None:
        return None
    if isinstance(reply, Mapping):
        pairs: Iterable[tuple[Any, Any]] = reply.items()
    elif isinstance(reply, (list, tuple)):
        pairs = zip(reply[::2], reply[1::2], strict=False)
    else:
        return None
    fields = {codec.to_str(k): v for k, v in pairs}
    name, version = fields.get("server"), fields.get("version")
    if name is None or version is None:
        return None
    numbers = []
    for part in codec.to_str(version).split(".")[:3]:
        match = _LEADING_DIGITS.match(part)
        if match is None:
            return None
        numbers.append(int(match.group()))
    numbers += [0] * (3 - len(numbers))
    return ServerVersion(codec.to_str(name).lower(), (numbers[0], numbers[1], numbers[2]))


class _Pipe(Protocol):
    def execute_command(self, *args: Any, **options: Any) -> Any: ...

    def xrange(self, name: Any, min: Any = ..., max: Any = ..., count: Any = ...) -> Any: ...


def hello_op(node_key: str | None = None) -> Op:
    """HELLO as an op (see :func:`queue_hello`); an error reply is handed over, not raised."""
    return Op("execute_command", ("HELLO",), tolerate=True, node_key=node_key)


def count_ops(
    key: str, groups: Iterable[GroupInfo], decided: Mapping[str, Lag | None], cap: int
) -> tuple[list[str], list[Op]]:
    """One bounded XRANGE op per undecided group: (their names, the ops), in order."""
    names, ops = [], []
    for g in groups:
        if decided.get(g.name) is None:
            start, end, count = count_range(g, cap)
            ops.append(raw_command("XRANGE", key, start, end, "COUNT", count, missing=[]))
            names.append(g.name)
    return names, ops


def queue_hello(pipe: _Pipe) -> None:
    """Queue HELLO (no arguments: the protocol stays as it is) to learn the server's version."""
    pipe.execute_command("HELLO")


# ---------------------------------------------------------------- the decision


def _after_or_at(value: str | None, position: tuple[int, int]) -> bool:
    return value is not None and position >= codec.parse_id(value)


def server_lag_sound(group: GroupInfo, info: StreamInfo, server: ServerVersion | None) -> bool:
    """True when XINFO GROUPS' lag for ``group`` can be used as it is.

    Call only for a group that is neither caught up nor behind the first entry (cases 1 and 2 of
    the module docstring). The server's figure is taken only when all of these hold:

    * it is a number equal to entries-added minus entries-read: the server subtracts its counters
      only when it trusts them, any other figure is its own estimate;
    * it lies between 1 and XLEN (something is ahead of the group, and no more than the stream
      holds);
    * no entry at or after the group's last-delivered ID was deleted (max-deleted-entry-id is
      older): the counters cannot see tombstones ahead of the group;
    * nothing was ever removed from the stream (entries-added == XLEN), or the server is known to
      keep the read counter right across trims (Redis 8.2+, Valkey 9.0+). Older servers (Redis
      7.0, for one) keep adding one per delivered entry after a trim took entries the group never
      read, so their lag stays too high, e.g. 1000 for a group 5 entries behind.
    """
    lag, read, added = group.lag, group.entries_read, info.entries_added
    if lag is None or read is None or added is None or lag != added - read:
        return False
    if not 1 <= lag <= info.length:
        return False
    position = codec.parse_id(group.last_delivered_id)
    deleted = info.max_deleted_entry_id
    if deleted is not None and deleted != "0-0" and codec.parse_id(deleted) >= position:
        return False
    return added == info.length or (server is not None and server.sound_read_counter)


def from_xinfo(
    group: GroupInfo, info: StreamInfo, server: ServerVersion | None = None
) -> Lag | None:
    """The lag XINFO STREAM and XINFO GROUPS prove, or None when the entries must be counted."""
    if not info.exists or info.length == 0:
        return Lag(0, True, "stream")
    position = codec.parse_id(group.last_delivered_id)
    if _after_or_at(info.last_entry_id or info.last_generated_id, position):
        return Lag(0, True, "stream")
    if info.first_entry_id is not None and position < codec.parse_id(info.first_entry_id):
        return Lag(info.length, True, "stream")
    if group.lag is not None and server_lag_sound(group, info, server):
        return Lag(group.lag, True, "server")
    return None


def count_range(group: GroupInfo, cap: int) -> tuple[str, str, int]:
    """XRANGE ``min``, ``max`` and COUNT that list the entries after the group's position."""
    return codec.id_after(group.last_delivered_id), "+", cap + 1


def counted(entries: Sized, cap: int) -> Lag:
    """The lag from a :func:`count_range` XRANGE reply: exact up to ``cap``, else ``≥ cap + 1``."""
    n = len(entries)
    if n > cap:
        return Lag(cap + 1, False, "counted")
    return Lag(n, True, "counted")


# ---------------------------------------------------------------- a whole snapshot


def resolve(
    groups: Iterable[GroupInfo], info: StreamInfo, server: ServerVersion | None
) -> dict[str, Lag | None]:
    """Every group's lag from XINFO alone; None marks a group whose entries must be counted."""
    return {g.name: from_xinfo(g, info, server) for g in groups}


def queue_counts(
    pipe: _Pipe,
    key: str,
    groups: Iterable[GroupInfo],
    decided: Mapping[str, Lag | None],
    cap: int,
) -> list[str]:
    """Queue one bounded XRANGE per undecided group; returns their names in queue order."""
    names = []
    for g in groups:
        if decided.get(g.name) is None:
            start, end, count = count_range(g, cap)
            # Read as bytes: only IDs are counted, and a field that is not UTF-8 must not fail it.
            pipe.execute_command("XRANGE", key, start, end, "COUNT", count, NEVER_DECODE=True)
            names.append(g.name)
    return names


def finish(
    decided: Mapping[str, Lag | None],
    names: Iterable[str],
    replies: Iterable[Sized],
    cap: int,
) -> dict[str, Lag]:
    """Every group's Lag: the decided ones, plus the counts read for ``names`` (in order)."""
    out = {name: lag for name, lag in decided.items() if lag is not None}
    for name, reply in zip(names, replies, strict=True):
        out[name] = counted(reply, cap)
    return out
