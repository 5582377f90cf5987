"""Numbers and IDs at and past the edges of what Redis accepts (property-based, real servers).

Every numeric or ID argument of the public methods either works or raises an InvalidInput
subclass naming the value before anything is sent: never a ServerError, a bare TypeError or a
silent no-op. Hypothesis runs derandomized, so the suite stays deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redis_streaming import (
    ConsumerWorker,
    EventStream,
    InvalidEvent,
    InvalidInput,
    InvalidOption,
    InvalidStreamId,
)

MAX_U64 = 2**64 - 1
PROPS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Integers clustered around the edges Redis cares about, plus things that are not integers.
edges = st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70])
numbers = st.one_of(
    edges,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "5", "", b"5", True, [1]]),
)
id_parts = st.one_of(st.sampled_from([0, 1, MAX_U64, MAX_U64 + 1]), st.integers(0, 2**65))
stream_ids = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", id_parts, id_parts),
    st.builds(lambda a, b: f"({a}-{b}", id_parts, id_parts),
    st.sampled_from(["-", "+", "(", "0", "1-", "-1", "abc", "1-1-1", " 1-1", "(0-0"]),
    st.text(max_size=12),
)


def _named(exc: InvalidInput, value: Any) -> bool:
    text = str(exc)
    return str(value) in text or repr(value) in text or type(value).__name__ in text


def check(call: Callable[[], object], value: Any) -> None:
    """The call either succeeds or raises InvalidInput naming ``value``."""
    try:
        call()
    except InvalidInput as exc:
        assert _named(exc, value), (value, str(exc))


@pytest.fixture()
def busy(stream: EventStream) -> EventStream:
    stream.produce_batch([("t", {"n": i}) for i in range(5)])
    stream.ensure_group("g", "0")
    stream.consume("g", "c", count=5, block_ms=None)
    return stream


@PROPS
@given(value=numbers)
def test_counts_lengths_and_idle_times(busy: EventStream, value: Any) -> None:
    pending = busy.pending("g", count=5)
    first = pending[0].id if pending else "0-1"
    check(lambda: busy.trim_maxlen(value) if value != 0 else None, value)
    check(lambda: busy.tail(value), value)
    check(lambda: busy.replay(count=value), value)
    check(lambda: busy.consume("g", "c2", count=value, block_ms=None), value)
    check(lambda: busy.claim("g", "c", [first], value), value)
    check(lambda: busy.pending("g", count=value), value)
    check(lambda: busy.pending("g", min_idle_ms=value), value)
    check(lambda: busy.autoclaim("g", "c", min_idle_ms=value, page_count=1), value)
    check(lambda: busy.autoclaim("g", "c", min_idle_ms=0, page_count=value), value)


@PROPS
@given(value=stream_ids)
def test_id_bounds(busy: EventStream, value: Any) -> None:
    check(lambda: busy.replay(start=value), value)
    check(lambda: busy.replay(end=value), value)
    check(lambda: list(busy.iter_replay(start=value)), value)
    check(lambda: busy.pending("g", start=value), value)
    check(lambda: busy.ack("g", [value]), value)
    check(lambda: busy.claim("g", "c", value, 0), value)
    check(lambda: busy.trim_minid(value), value)


@PROPS
@given(value=numbers)
def test_worker_options_are_checked_when_built(stream: EventStream, value: Any) -> None:
    for option in ("block_ms", "count", "claim_min_idle_ms", "max_deliveries", "reap_interval"):
        check(lambda o=option: ConsumerWorker(stream, "g", "w", **{o: value}), value)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.trim_maxlen(2**63), InvalidOption),
        (lambda s: s.tail(2**64), InvalidOption),
        (lambda s: s.consume("g", "c", count=2**63), InvalidOption),
        (lambda s: s.claim("g", "c", ["1-1"], 2**63), InvalidOption),
        (lambda s: s.replay(f"({MAX_U64}-{MAX_U64}"), InvalidStreamId),
        (lambda s: s.replay("-", "(0-0"), InvalidStreamId),
        (lambda s: s.produce_batch(None), InvalidEvent),
        (lambda s: s.produce_batch("abc"), InvalidEvent),
        (lambda s: s.ack("g", 12345), InvalidStreamId),
        (lambda s: s.ack("g", None), InvalidStreamId),
        (lambda s: ConsumerWorker(s, "g", "w", reap_interval=math.inf), InvalidOption),
        (lambda s: ConsumerWorker(s, "g", "w", reap_interval="5"), InvalidOption),
        (lambda s: ConsumerWorker(s, "g", "w", handler="notcallable"), InvalidOption),
        (lambda s: ConsumerWorker(s, "g", "w", block_ms=10**15), InvalidOption),
    ],
)
def test_the_reported_inputs_are_refused_before_sending(
    stream: EventStream, client: redis.Redis, call: Callable[[EventStream], object], error: type
) -> None:
    calls_before = client.info("stats")["total_commands_processed"]
    with pytest.raises(error):
        call(stream)
    # Nothing reached the server but the INFO calls themselves.
    assert client.info("stats")["total_commands_processed"] - calls_before <= 2


def test_claim_takes_one_id_as_a_string(busy: EventStream) -> None:
    first = busy.pending("g", count=1)[0].id
    assert [e.id for e in busy.claim("g", "c2", first, 0)] == [first]
    assert busy.ack("g", first) == 1


@pytest.mark.parametrize("bad", ["\u0661-\u0661", "1-1\n", "1\n", "\u00b2-1", "1-1 "])
def test_ids_with_non_ascii_digits_or_trailing_newline_are_refused(bad: str) -> None:
    from redis_streaming import InvalidStreamId
    from redis_streaming._codec import validate_id

    with pytest.raises(InvalidStreamId):
        validate_id(bad)
