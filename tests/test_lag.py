"""The lag rules of ``redis_streaming._lag`` on hand-made replies (no server needed).

The server-backed cases (XDEL, trims, drift, the cap) live in test_health.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from redis_streaming import InvalidOption
from redis_streaming._lag import (
    DEFAULT_LAG_CAP,
    Lag,
    ServerVersion,
    count_range,
    counted,
    finish,
    format_lag,
    from_xinfo,
    parse_hello,
    queue_counts,
    resolve,
    server_lag_sound,
    validate_cap,
)
from redis_streaming._model import GroupInfo, StreamInfo

OLD = ServerVersion("redis", (7, 0, 15))
NEW = ServerVersion("valkey", (9, 1, 2))

# A stream of 100 entries 101-0 .. 200-0 whose first 100 entries were trimmed away.
TRIMMED = StreamInfo(
    "k",
    True,
    length=100,
    first_entry_id="101-0",
    last_entry_id="200-0",
    last_generated_id="200-0",
    entries_added=200,
    max_deleted_entry_id="0-0",
)
# The same 100 entries, never trimmed (entries-added == length).
PRISTINE = replace(TRIMMED, first_entry_id="1-0", entries_added=100)


def group(last: str, read: int | None, lag: int | None) -> GroupInfo:
    return GroupInfo("g", 1, 0, last, entries_read=read, lag=lag)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"server": "valkey", "version": "9.1.2", "proto": 3}, NEW),
        ([b"server", b"redis", b"version", b"7.0.15", b"proto", 2], OLD),
        (["server", "Redis", "version", "8.2"], ServerVersion("redis", (8, 2, 0))),
        ({"server": "redis", "version": "8.2.1-rc1"}, ServerVersion("redis", (8, 2, 1))),
        (ValueError("ERR unknown command 'HELLO'"), None),
        ({"server": "redis"}, None),
        ({"server": "redis", "version": "unstable"}, None),
        (None, None),
        (42, None),
    ],
)
def test_parse_hello(reply: Any, expected: ServerVersion | None) -> None:
    assert parse_hello(reply) == expected


def test_which_servers_keep_the_read_counter_right() -> None:
    assert NEW.sound_read_counter and ServerVersion("redis", (8, 2, 0)).sound_read_counter
    assert not OLD.sound_read_counter
    assert not ServerVersion("valkey", (8, 1, 0)).sound_read_counter
    assert not ServerVersion("keydb", (9, 9, 9)).sound_read_counter


@pytest.mark.parametrize(
    ("info", "g", "expected"),
    [
        (StreamInfo("k", False), group("0-0", None, None), Lag(0, True, "stream")),
        (replace(TRIMMED, length=0), group("5-0", 5, 195), Lag(0, True, "stream")),
        # At (or past) the newest entry: caught up, whatever the server says (Redis 7.0: 1229).
        (TRIMMED, group("200-0", 90, 1229), Lag(0, True, "stream")),
        (replace(TRIMMED, last_entry_id=None), group("200-0", None, None), Lag(0, True, "stream")),
        # Older than the first entry still there: everything is ahead.
        (TRIMMED, group("50-0", 50, 150), Lag(100, True, "stream")),
        (TRIMMED, group("0-0", 0, 200), Lag(100, True, "stream")),
        # Inside the stream: the server's figure when it is sound, else None (count it).
        (PRISTINE, group("150-0", 50, 50), Lag(50, True, "server")),
        (PRISTINE, group("150-0", None, None), None),
    ],
)
def test_from_xinfo(info: StreamInfo, g: GroupInfo, expected: Lag | None) -> None:
    assert from_xinfo(g, info, OLD) == expected


@pytest.mark.parametrize(
    ("info", "g", "server", "sound"),
    [
        (PRISTINE, group("150-0", 50, 50), None, True),
        (PRISTINE, group("150-0", 50, 49), OLD, False),  # an estimate, not added - read
        (PRISTINE, group("150-0", None, 50), NEW, False),
        (replace(PRISTINE, entries_added=None), group("150-0", 50, 50), NEW, False),
        (PRISTINE, group("150-0", 50, None), NEW, False),
        (replace(PRISTINE, length=40, entries_added=100), group("150-0", 50, 50), NEW, False),
        (replace(PRISTINE, entries_added=150), group("150-0", 150, 0), NEW, False),
        # A tombstone at or after the group's position hides deletions from the counters.
        (replace(PRISTINE, max_deleted_entry_id="170-0"), group("150-0", 50, 50), NEW, False),
        (replace(PRISTINE, max_deleted_entry_id="150-0"), group("150-0", 50, 50), NEW, False),
        (replace(TRIMMED, max_deleted_entry_id="120-0"), group("150-0", 150, 50), NEW, True),
        # Entries were removed: only a server with a sound read counter is believed.
        (TRIMMED, group("150-0", 150, 50), NEW, True),
        (TRIMMED, group("150-0", 150, 50), OLD, False),
        (TRIMMED, group("150-0", 150, 50), None, False),
    ],
)
def test_server_lag_sound(
    info: StreamInfo, g: GroupInfo, server: ServerVersion | None, sound: bool
) -> None:
    assert server_lag_sound(g, info, server) is sound


def test_count_and_its_cap() -> None:
    assert count_range(group("150-0", None, None), 10) == ("150-1", "+", 11)
    assert counted([1] * 10, 10) == Lag(10, True, "counted")
    assert counted([1] * 11, 10) == Lag(11, False, "counted")
    assert counted([], 10) == Lag(0, True, "counted")
    assert str(Lag(11, False, "counted")) == "≥ 11" and str(Lag(3, True, "server")) == "3"
    assert format_lag(None, False) == "?"
    assert validate_cap(DEFAULT_LAG_CAP) == DEFAULT_LAG_CAP
    for bad in (0, -5, 10**7, "10", True):
        with pytest.raises(InvalidOption):
            validate_cap(bad)


class RecordingPipe:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.calls.append(args)

    def xrange(self, name: Any, min: Any = "-", max: Any = "+", count: Any = None) -> Any:
        self.calls.append(("XRANGE", name, min, max, count))


def test_a_snapshot_counts_only_the_undecided_groups() -> None:
    groups = [
        GroupInfo("done", 1, 0, "200-0", entries_read=200, lag=0),
        GroupInfo("behind", 1, 0, "150-0", entries_read=None, lag=None),
        GroupInfo("trusted", 1, 0, "190-0", entries_read=190, lag=10),
    ]
    decided = resolve(groups, TRIMMED, NEW)
    assert decided == {
        "done": Lag(0, True, "stream"),
        "behind": None,
        "trusted": Lag(10, True, "server"),
    }
    pipe = RecordingPipe()
    names = queue_counts(pipe, "k", groups, decided, 3)
    assert names == ["behind"] and pipe.calls == [("XRANGE", "k", "150-1", "+", "COUNT", 4)]
    lags = finish(decided, names, [[1, 2, 3, 4]], 3)
    assert lags["behind"] == Lag(4, False, "counted") and lags["done"].value == 0
