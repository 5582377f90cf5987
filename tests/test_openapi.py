"""Schemathesis, every check on, against the demo's own /openapi.json.

The demo runs under uvicorn on a free port (never 6379) in this process, against the session's
real servers (Valkey and Redis 7). Every documented operation is called with generated valid and
invalid input; every answer must match what the schema says (status, content type, body),
valid input must be accepted, invalid input refused with a 4xx, and nothing may answer 5xx.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from redis_streaming import EmbeddedServer
from redis_streaming.demo import DemoConfig, create_app
from waiting import wait_until

#: Examples per operation and phase; 15 operations x 2 servers stay well under a minute.
#: FUZZ_EXAMPLES=500 (say) runs a deeper search by hand.
MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
#: Cases sent, per operation, for the figures in docs/RELIABILITY.md (printed with -s).
SENT: Counter[str] = Counter()
#: Per-request timeout (seconds): a hung answer fails the test instead of stalling the suite.
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def demo_url(server: EmbeddedServer) -> Iterator[str]:
    """The demo app under uvicorn on a free 127.0.0.1 port, against the session's server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = DemoConfig(
        redis_url=server.url,
        stream_key=f"fuzz:{port}",
        port=port,
        claim_idle_ms=50,
        process_ms=1,
        tick_s=0.05,
    )
    app = create_app(config)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: srv.started or not thread.is_alive(), what="uvicorn to start")
    assert srv.started, "uvicorn did not start"
    SENT.clear()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        print(f"\nschemathesis against {server.kind}: {SENT.total()} cases", dict(SENT))
        app.state.runtime.closing.set()
        srv.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def _documented() -> dict[str, Any]:
    """The app's OpenAPI document, built without any server (collection needs it up front)."""
    return create_app(DemoConfig(redis_url="redis://127.0.0.1:1/0")).openapi()


# schemathesis' from_fixture does not run on pytest 9, so the schema is loaded eagerly and each
# case is sent to the live server; test_served_schema_is_the_one_fuzzed checks they are the same.
schema = schemathesis.openapi.from_dict(_documented())


def test_served_schema_is_the_one_fuzzed(demo_url: str) -> None:
    served = httpx.get(f"{demo_url}/openapi.json", timeout=TIMEOUT_S)
    assert served.status_code == 200
    assert served.json() == _documented()


def all_checks() -> list[Any]:
    load_all_checks()
    return list(CHECKS.get_all())


def test_every_check_is_on() -> None:
    names = {check.__name__ for check in all_checks()}
    assert names >= {
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
        "positive_data_acceptance",
        "negative_data_rejection",
        "use_after_free",
        "ensure_resource_availability",
        "missing_required_header",
        "ignored_auth",
        "unsupported_method",
        "allow_header_conformance",
    }, names


def valid_limit(value: object) -> bool:
    if isinstance(value, str) and re.fullmatch(r"0|[1-9][0-9]{0,6}", value):
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1_000_000


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_openapi_tells_the_truth(case: Any, demo_url: str) -> None:
    if case.path == "/events" and valid_limit((case.query or {}).get("limit")):
        # The feed sends a new event whenever /state changes (idle times change all the time),
        # up to `limit` events or forever: a valid limit is cut to 1 so the answer ends.
        case.query = {**case.query, "limit": 1}
    SENT[f"{case.method} {case.path}"] += 1
    case.call_and_validate(base_url=demo_url, checks=all_checks(), timeout=TIMEOUT_S)
