"""Pure encoding, validation and reply parsing: no server needed."""

from __future__ import annotations

import pytest

from redis_streaming import (
    Entry,
    InvalidEvent,
    InvalidInput,
    InvalidName,
    InvalidOption,
    InvalidStreamId,
    StreamingError,
)
from redis_streaming import _codec as codec


def test_encode_event_orders_fields_and_converts_scalars() -> None:
    fields = codec.encode_event("order.placed", {"a": "x", "n": 3, "f": 1.5, "ok": True}, 1234)
    assert list(fields) == ["type", "ts_ms", "a", "n", "f", "ok"]
    assert fields == {
        "type": "order.placed",
        "ts_ms": "1234",
        "a": "x",
        "n": "3",
        "f": "1.5",
        "ok": "true",
    }
    assert codec.encode_event("t", None, 1) == {"type": "t", "ts_ms": "1"}


@pytest.mark.parametrize(
    ("event_type", "payload", "needle"),
    [
        ("", {}, "empty"),
        ("   ", {}, "empty"),
        (None, {}, "string"),
        (7, {}, "string"),
        ("t", {"a": None}, "'a' is None"),
        ("t", {"a": {"b": 1}}, "nested"),
        ("t", {"a": [1, 2]}, "nested"),
        ("t", {1: "x"}, "keys must be strings"),
        ("t", {"": "x"}, "must not be empty"),
        ("t", {"type": "x"}, "reserved"),
        ("t", {"ts_ms": "1"}, "reserved"),
        ("t", {"a": float("nan")}, "finite"),
        ("t", {"a": b"bytes"}, "bytes"),
        ("t", {"big": 10**5000}, "'big' cannot be sent as text"),
        ("t", ["not", "a", "map"], "mapping"),
    ],
)
def test_encode_event_rejects_bad_input(event_type: object, payload: object, needle: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        codec.encode_event(event_type, payload, 1)  # type: ignore[arg-type]
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, StreamingError)


def test_encode_batch_names_the_bad_item_and_builds_nothing() -> None:
    with pytest.raises(InvalidEvent, match="batch item 1"):
        codec.encode_batch([("a", {}), ("b", {"x": None}), ("c", {})], 1)
    with pytest.raises(InvalidEvent, match="batch item 0"):
        codec.encode_batch(["just a string"], 1)
    assert codec.encode_batch([{"type": "a", "k": "v"}], 5) == [
        {"type": "a", "ts_ms": "5", "k": "v"}
    ]


@pytest.mark.parametrize("good", ["0", "0-0", "1700000000000-0", "1-18446744073709551615", "42"])
def test_validate_id_accepts(good: str) -> None:
    assert codec.validate_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "abc", "1-", "-1", "1-2-3", "1.5", " 1-0", "18446744073709551616-0", "$", "*"]
)
def test_validate_id_rejects_and_names_the_value(bad: str) -> None:
    with pytest.raises(InvalidStreamId) as info:
        codec.validate_id(bad, "min_id")
    assert repr(bad) in str(info.value)
    assert "min_id" in str(info.value)


def test_range_bounds_and_group_start() -> None:
    for ok in ("-", "+", "(1-0", "5"):
        assert codec.validate_range_bound(ok) == ok
    for bad in ("(", "(x", "++", "1-x"):
        with pytest.raises(InvalidStreamId):
            codec.validate_range_bound(bad)
    assert codec.validate_group_start("$") == "$"
    assert codec.validate_group_start("0") == "0"
    with pytest.raises(InvalidStreamId):
        codec.validate_group_start(">")


def test_id_arithmetic() -> None:
    assert codec.parse_id("5-3") < codec.parse_id("10-0")
    assert codec.id_after("5-3") == "5-4"
    assert codec.id_after(f"5-{2**64 - 1}") == "6-0"
    assert codec.id_min(["10-0", "9-99", "10-1"]) == "9-99"
    assert codec.id_min([]) is None


@pytest.mark.parametrize("bad", ["", "has space", "tab\tname", "nl\n", "x" * 201, 5, None])
def test_validate_name(bad: object) -> None:
    with pytest.raises(InvalidName):
        codec.validate_name(bad, "group")


def test_validate_int() -> None:
    assert codec.validate_int(5, "count", minimum=1) == 5
    # A whole float is refused too: the caller's value is what would be sent ("5.0").
    for bad in (0, -1, True, "5", 1.5, 5.0, float("nan"), None, 2**63):
        with pytest.raises(InvalidOption):
            codec.validate_int(bad, "count", minimum=1)
    with pytest.raises(InvalidOption, match="<= 10"):
        codec.validate_int(11, "count", maximum=10)


def test_invalid_input_is_a_value_error() -> None:
    assert issubclass(InvalidInput, ValueError)


def test_parse_xread_all_shapes() -> None:
    resp2 = [[b"s", [(b"1-0", {b"type": b"a", b"k": b"v"}), (b"2-0", None)]]]
    resp3_legacy = {"s": [[("1-0", {"type": "a", "k": "v"})]]}
    unified = {"s": [("1-0", {"type": "a", "k": "v"})]}
    raw_pairs = [["s", [["1-0", ["type", "a", "k", "v"]]]]]
    for shape in (resp2, resp3_legacy, unified, raw_pairs):
        entries = codec.parse_xread(shape)
        assert entries == [Entry("1-0", {"type": "a", "k": "v"})]
    assert codec.parse_xread(None) == []
    assert codec.parse_xread([]) == []


def test_entry_accessors() -> None:
    e = Entry("1700000000123-4", {"type": "order.paid", "ts_ms": "99", "amount": "10"})
    assert e.type == "order.paid"
    assert e.ts_ms == 99
    assert e.payload == {"amount": "10"}
    assert e.id_ms == 1700000000123
    foreign = Entry("1-0", {"x": "y", "ts_ms": "nope"})
    assert foreign.type == "" and foreign.ts_ms is None


def test_parse_autoclaim_keeps_deleted_ids() -> None:
    cursor, entries, deleted = codec.parse_autoclaim(
        [b"0-0", [(b"1-0", {b"type": b"a"})], [b"2-0", b"3-0"]]
    )
    assert cursor == "0-0"
    assert [e.id for e in entries] == ["1-0"]
    assert deleted == ["2-0", "3-0"]
    assert codec.parse_autoclaim(["5-0", []])[2] == []


def test_parse_inspection_rows_bytes_and_str() -> None:
    groups = codec.parse_groups(
        [
            {
                "name": b"g",
                "consumers": 2,
                "pending": 3,
                "last-delivered-id": b"5-0",
                "entries-read": 7,
                "lag": None,
            }
        ]
    )
    assert groups[0].name == "g" and groups[0].lag is None and groups[0].entries_read == 7
    rows = codec.parse_pending_range(
        [{"message_id": b"1-0", "consumer": b"c", "time_since_delivered": 10, "times_delivered": 2}]
    )
    assert rows[0].id == "1-0" and rows[0].deliveries == 2
    info = codec.parse_stream_info("k", None)
    assert not info.exists and info.length == 0
