"""Both wire protocols on whatever redis-py is installed: RESP2 is redis-py < 8's default and
still a choice on 8 (``protocol=2``), so the newest-redis-py run must not only see RESP3.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from redis_streaming import EmbeddedServer, EventStream
from redis_streaming.health import check_health


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def proto_stream(
    server: EmbeddedServer, key: str, request: pytest.FixtureRequest
) -> Iterator[EventStream]:
    c = redis.Redis(
        host=server.host, port=server.port, decode_responses=True, protocol=request.param
    )
    s = EventStream(c, key, maxlen_approx=None, claim_min_idle_ms=50)
    yield s
    s.delete_stream()
    c.close()


def test_info_stream_and_health_read_either_protocol(proto_stream: EventStream) -> None:
    ids = proto_stream.produce_batch([("t", {"n": i}) for i in range(3)])
    proto_stream.ensure_group("g", "0")
    info = proto_stream.info_stream()
    assert (info.exists, info.length, info.groups) == (True, 3, 1)
    assert (info.first_entry_id, info.last_entry_id) == (ids[0], ids[-1])
    report = check_health(proto_stream)
    assert [g.name for g in report.groups] == ["g"]
