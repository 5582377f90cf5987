"""The demo's HTTP API through the real app (TestClient) against real servers (Valkey, Redis 7).

Each test gets its own stream key; the app's lifespan starts and stops the demo's workers.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from redis_streaming import (
    AsyncConsumerWorker,
    EmbeddedServer,
    GroupInfo,
    HealthThresholds,
    RedisUnavailable,
    StreamInfo,
)
from redis_streaming._lag import Lag
from redis_streaming.demo import DemoConfig, create_app, params, routes_read
from redis_streaming.demo import app as demo_app
from redis_streaming.demo import state as state_module
from redis_streaming.demo.runtime import DemoRuntime
from redis_streaming.health import classify_group
from waiting import wait_until

AppFactory = Callable[..., TestClient]


@pytest.fixture()
def make_app(server: EmbeddedServer, key: str) -> Iterator[AppFactory]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        options: dict[str, Any] = {
            "redis_url": server.url,
            "stream_key": key,
            "allowed_hosts": ("testserver",),
            "claim_idle_ms": 50,
            "process_ms": 1,
            "tick_s": 0.05,
        }
        options.update(overrides)
        client = TestClient(create_app(DemoConfig(**options)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def api(make_app: AppFactory) -> TestClient:
    return make_app()


def state(api: TestClient) -> dict[str, Any]:
    response = api.get("/state")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def group(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in doc["groups"] if g["name"] == name)


def consumer(doc: dict[str, Any], grp: str, name: str) -> dict[str, Any]:
    return next(c for c in group(doc, grp)["consumers_detail"] if c["name"] == name)


def runtime(api: TestClient) -> DemoRuntime:
    return api.app.state.runtime  # type: ignore[attr-defined,no-any-return]


def drained(api: TestClient, length: int) -> Callable[[], bool]:
    """True once every group has read all ``length`` entries (lag 0) of the stream."""

    def check() -> bool:
        doc = state(api)
        return doc["stream"]["length"] == length and all(g["lag"] == 0 for g in doc["groups"])

    return check


def strand(api: TestClient, grp: str, name: str, n: int, produce: int = 10) -> None:
    """Leave ``n`` entries pending on ``name``: others in the group pause, it drops ``n``."""
    doc = state(api)
    for c in group(doc, grp)["consumers_detail"]:
        if c["name"] != name:
            assert api.post("/pause", json={"group": grp, "name": c["name"]}).status_code == 200
    assert api.post("/resume", json={"group": grp, "name": name}).status_code == 200
    assert (
        api.post("/crash", json={"group": grp, "name": name, "count": n}).json()["crash_queued"]
        == n
    )
    was = consumer(doc, grp, name)
    assert api.post("/produce", json={"count": produce}).status_code == 200

    def stranded() -> bool:
        now = consumer(state(api), grp, name)
        return (
            now["pending"] == was["pending"] + n
            and now["processed"] == was["processed"] + produce - n
            and now["crash_queued"] == 0
        )

    wait_until(stranded, what=f"{name} to strand {n} entries")


def aged(api: TestClient, grp: str, idle_ms: int) -> None:
    """Wait until every pending entry of ``grp`` has been idle at least ``idle_ms``."""
    wait_until(
        lambda: all(p["idle_ms"] >= idle_ms for p in state(api)["pending"] if p["group"] == grp),
        what=f"pending entries of {grp} to idle {idle_ms} ms",
    )


# ---------------------------------------------------------------- reading


def test_state_has_the_guides_keys_and_the_seeded_consumers(api: TestClient, key: str) -> None:
    doc = state(api)
    assert doc["stream"]["key"] == key
    assert {"length", "first_entry_id", "last_entry_id"} <= doc["stream"].keys()
    assert doc["tail"] == [] and doc["pending"] == []
    assert {g["name"] for g in doc["groups"]} == {"notifications", "analytics"}
    n = group(doc, "notifications")
    assert [c["name"] for c in n["consumers_detail"]] == ["worker-a", "worker-b"]
    assert [c["name"] for c in group(doc, "analytics")["consumers_detail"]] == ["worker-c"]


def test_state_keeps_the_guides_nested_keys(api: TestClient) -> None:
    api.post("/produce", data={"count": "3"})
    wait_until(drained(api, 3), what="both groups to read all 3")
    doc = wait_until(
        lambda: (d := state(api)) and consumer(d, "analytics", "worker-c")["recent"] and d,
        what="worker-c to list its deliveries",
    )
    stream_keys = {"length", "last_generated_id", "first_entry_id", "last_entry_id"}
    assert stream_keys <= doc["stream"].keys()
    assert {"id", "fields"} <= doc["tail"][0].keys()
    assert {"produced_total", "acked_total", "claimed_total"} <= doc["stats"].keys()
    g = group(doc, "analytics")
    group_keys = {"name", "consumers", "pending", "last_delivered_id", "lag", "consumers_detail"}
    assert group_keys <= g.keys()
    assert g["consumers"] == 1 and g["lag"] == 0 and g["lag_exact"] is True
    (c,) = g["consumers_detail"]
    guide = {"name", "group", "processed", "reaped", "crashed_drops", "paused", "crash_queued"}
    assert guide | {"alive", "pending", "idle_ms", "recent"} <= c.keys()
    assert c["group"] == "analytics"
    assert {"id", "type", "acked", "note"} <= c["recent"][0].keys()
    assert c["recent"][0]["acked"] is True


def test_state_takes_two_round_trips(api: TestClient) -> None:
    rt = runtime(api)
    calls: list[int] = []
    original = rt.client.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        pipe = original(*args, **kwargs)
        execute = pipe.execute

        def counted(*a: Any, **k: Any) -> Any:
            calls.append(len(pipe.command_stack))
            return execute(*a, **k)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    rt.client.pipeline = counting  # type: ignore[method-assign]
    try:
        rt.snapshot()
    finally:
        rt.client.pipeline = original  # type: ignore[method-assign]
    # TIME, HELLO and the stream's facts in one pipeline, then XINFO CONSUMERS + XPENDING per
    # group (plus one XRANGE per group whose lag the server cannot vouch for: none here).
    assert calls == [7, 4]


def test_consumers_are_tasks_on_the_apps_loop_and_stop_with_it(
    server: EmbeddedServer, key: str
) -> None:
    config = DemoConfig(
        redis_url=server.url, stream_key=key, allowed_hosts=("testserver",), process_ms=1
    )
    client = TestClient(create_app(config))
    with client:
        rt = runtime(client)
        assert client.portal is not None
        workers = rt._all_workers()
        assert len(workers) == 3
        assert all(isinstance(w, AsyncConsumerWorker) and w.is_alive for w in workers)
        assert not [t for t in threading.enumerate() if t.name.startswith("consumer-")]
        tasks = client.portal.call(_consumer_tasks)
        assert sorted(tasks) == [
            "consumer-analytics-worker-c",
            "consumer-notifications-worker-a",
            "consumer-notifications-worker-b",
        ]
        ids = client.post("/produce", json={"count": 10}).json()["ids"]
        wait_until(
            lambda: sum(w.status().processed for w in workers) == 2 * len(ids),
            what="both groups to process every entry",
        )
    # The lifespan's exit awaited every worker's stop.
    assert not any(w.is_alive for w in workers)


async def _consumer_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("consumer-")]


def test_produce_accepts_json_and_form_and_workers_consume(api: TestClient) -> None:
    r = api.post("/produce", json={"count": 5, "type": "order.paid"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["produced"] == 5 and len(body["ids"]) == 5
    r = api.post("/produce", data={"count": "3"})
    assert r.status_code == 200 and r.json()["produced"] == 3
    wait_until(drained(api, 8), what="both groups to read all 8")
    doc = wait_until(
        lambda: (
            (d := state(api))["groups"][0]["pending"] == 0 and d["groups"][1]["pending"] == 0 and d
        ),
        what="all acked",
    )
    types = [e["type"] for e in doc["tail"]]
    assert types[-5:] == ["order.paid"] * 5  # newest first: the 3 random ones lead
    n = group(doc, "notifications")["consumers_detail"]
    assert sum(c["processed"] for c in n) == 8
    assert consumer(doc, "analytics", "worker-c")["processed"] == 8
    assert doc["stats"]["produced_total"] == 8


def test_replay_returns_a_range(api: TestClient) -> None:
    ids = api.post("/produce", json={"count": 6}).json()["ids"]
    r = api.get("/replay", params={"start": ids[1], "end": ids[4], "count": 10})
    assert r.status_code == 200
    assert [e["id"] for e in r.json()["entries"]] == ids[1:5]
    assert set(r.json()["entries"][0]["fields"]) >= {"type", "order_id", "customer", "amount"}
    r = api.get("/replay", params={"start": "(" + ids[4], "count": 5})
    assert [e["id"] for e in r.json()["entries"]] == ids[5:]


def test_live_feed_is_server_sent_events(api: TestClient) -> None:
    r = api.get("/events", params={"limit": 1})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "event: state\ndata: {" in r.text


def test_openapi_documents_the_guides_paths(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in (
        "/state",
        "/replay",
        "/produce",
        "/add-worker",
        "/remove-worker",
        "/crash",
        "/autoclaim",
        "/trim",
        "/reset",
        "/pause",
        "/resume",
        "/events",
        "/dlq",
    ):
        assert path in paths, path


def test_page_and_assets_are_served_with_a_strict_csp(api: TestClient) -> None:
    r = api.get("/")
    assert r.status_code == 200 and "XAUTOCLAIM to selected" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    js = api.get("/static/app.js")
    assert js.status_code == 200
    assert "innerHTML" not in js.text.replace("never innerHTML", "")
    assert api.get("/static/style.css").status_code == 200


# ---------------------------------------------------------------- levers


def test_crash_then_autoclaim_moves_entries_to_the_target(api: TestClient) -> None:
    strand(api, "notifications", "worker-a", 3)
    doc = state(api)
    assert len([p for p in doc["pending"] if p["group"] == "notifications"]) == 3
    assert consumer(doc, "notifications", "worker-a")["processed"] == 7
    aged(api, "notifications", 50)
    r = api.post("/autoclaim", json={"group": "notifications", "consumer": "worker-b"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["claimed"] == 3 and body["processed"] == 3 and body["deleted"] == []
    assert body["min_idle_ms"] == 50
    doc = state(api)
    assert [p for p in doc["pending"] if p["group"] == "notifications"] == []
    assert consumer(doc, "notifications", "worker-b")["reaped"] == 3
    assert doc["stats"]["claimed_total"] == 3


def test_deliveries_dropped_during_a_reap_are_not_counted(api: TestClient) -> None:
    strand(api, "notifications", "worker-a", 3)
    api.post("/crash", data={"group": "notifications", "name": "worker-b", "count": "2"})
    body = api.post(
        "/autoclaim", data={"group": "notifications", "consumer": "worker-b", "min_idle_ms": "0"}
    ).json()
    assert (body["claimed"], body["processed"], body["dropped"]) == (3, 1, 2)
    doc = state(api)
    assert consumer(doc, "notifications", "worker-b")["reaped"] == 1
    assert consumer(doc, "notifications", "worker-b")["pending"] == 2


def test_remove_worker_hands_pending_to_a_peer_first(api: TestClient) -> None:
    strand(api, "notifications", "worker-a", 3)
    pending_ids = {p["id"] for p in state(api)["pending"]}
    r = api.post("/remove-worker", json={"group": "notifications", "name": "worker-a"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["removed"] is True and body["name"] == "worker-a"
    assert (body["handed_over_count"], body["handed_over_to"], body["destroyed"]) == (
        3,
        "worker-b",
        0,
    )
    doc = state(api)
    assert [c["name"] for c in group(doc, "notifications")["consumers_detail"]] == ["worker-b"]
    assert {p["id"] for p in doc["pending"] if p["consumer"] == "worker-b"} == pending_ids
    assert group(doc, "notifications")["pending"] == 3
    assert (
        api.post("/crash", json={"group": "notifications", "name": "worker-a"}).status_code == 404
    )


def test_two_concurrent_removes_never_hand_entries_to_each_other(api: TestClient) -> None:
    assert api.post("/add-worker", json={"group": "notifications", "name": "worker-d"}).json()["ok"]
    wait_until(
        lambda: consumer(state(api), "notifications", "worker-d")["alive"], what="worker-d up"
    )
    strand(api, "notifications", "worker-a", 3, produce=5)
    strand(api, "notifications", "worker-b", 3, produce=5)
    api.post("/resume", json={"group": "notifications", "name": "worker-d"})
    rt = runtime(api)

    async def both() -> list[dict[str, Any]]:
        # Two removes in flight at once on the app's loop, where the worker tasks run.
        return list(
            await asyncio.gather(
                rt.remove_worker("notifications", "worker-a"),
                rt.remove_worker("notifications", "worker-b"),
            )
        )

    assert api.portal is not None
    results = api.portal.call(both)
    assert sorted(r["name"] for r in results) == ["worker-a", "worker-b"]
    assert all(r["destroyed"] == 0 and r["handed_over_to"] == "worker-d" for r in results), results
    doc = state(api)
    g = group(doc, "notifications")
    assert [c["name"] for c in g["consumers_detail"]] == ["worker-d"]
    assert g["pending"] == 6
    assert {p["consumer"] for p in doc["pending"] if p["group"] == "notifications"} == {"worker-d"}


def test_last_consumer_may_go_only_with_nothing_pending(api: TestClient) -> None:
    api.post("/produce", json={"count": 4})
    wait_until(drained(api, 4), what="drain")
    wait_until(lambda: group(state(api), "analytics")["pending"] == 0, what="analytics acked")
    r = api.post("/remove-worker", json={"group": "analytics", "name": "worker-c"})
    assert r.status_code == 200 and r.json()["destroyed"] == 0
    assert (r.json()["removed"], r.json()["handed_over_to"], r.json()["handed_over_count"]) == (
        True,
        None,
        0,
    )

    assert api.post("/add-worker", json={"group": "solo", "name": "s1"}).json()["created_group"]
    wait_until(
        lambda: consumer(state(api), "solo", "s1")["processed"] == 4, what="s1 reads the backlog"
    )
    strand(api, "solo", "s1", 2, produce=3)
    r = api.post("/remove-worker", json={"group": "solo", "name": "s1"})
    assert r.status_code == 409
    assert "2 pending" in r.json()["error"]
    assert (r.json()["removed"], r.json()["reason"]) == (False, "no-peer")
    assert r.json()["message"] == r.json()["error"]
    doc = state(api)
    assert consumer(doc, "solo", "s1")["pending"] == 2 and not consumer(doc, "solo", "s1")["paused"]


def test_pause_and_resume(api: TestClient) -> None:
    r = api.post("/pause", json={"group": "analytics", "name": "worker-c"})
    assert r.json()["paused"] is True
    api.post("/produce", json={"count": 3})
    wait_until(lambda: group(state(api), "notifications")["lag"] == 0, what="notifications read")
    doc = state(api)
    assert consumer(doc, "analytics", "worker-c")["paused"] is True
    assert group(doc, "analytics")["lag"] == 3
    assert (
        api.post("/resume", json={"group": "analytics", "name": "worker-c"}).json()["paused"]
        is False
    )
    wait_until(lambda: group(state(api), "analytics")["lag"] == 0, what="analytics caught up")


def test_lag_is_counted_where_the_server_gives_up(api: TestClient) -> None:
    api.post("/produce", json={"count": 5})
    wait_until(drained(api, 5), what="both groups to read all 5")
    api.post("/pause", json={"group": "analytics", "name": "worker-c"})
    ids = api.post("/produce", json={"count": 20}).json()["ids"]
    wait_until(lambda: group(state(api), "notifications")["lag"] == 0, what="notifications read")
    assert runtime(api).client.xdel(runtime(api).config.stream_key, *ids[5:10]) == 5
    doc = state(api)
    g = group(doc, "analytics")
    assert g["server_lag"] is None  # XDEL ahead of the group: the server gives up
    assert (g["lag"], g["lag_exact"]) == (15, True)
    row = next(h for h in doc["health"]["groups"] if h["name"] == "analytics")
    assert (row["lag"], row["lag_exact"]) == (15, True)


def test_a_lower_bound_lag_is_marked_in_state_and_health() -> None:
    info = StreamInfo("k", True, length=50, first_entry_id="1-0", last_entry_id="50-0")
    g = GroupInfo("g", 1, 0, "10-0")
    lag = Lag(6, False, "counted")
    row = state_module.group_json(g, [], {}, lag)
    assert (row["lag"], row["lag_exact"], row["server_lag"]) == (6, False, None)
    health = classify_group(g, info, None, [], 0, HealthThresholds(max_lag=5), lag=lag)
    (h,) = state_module.health_json([health])["groups"]
    assert (h["lag"], h["lag_exact"], h["status"]) == (6, False, "lagging")


def test_trim_by_maxlen_and_by_minid(api: TestClient) -> None:
    ids = api.post("/produce", json={"count": 20}).json()["ids"]
    r = api.post("/trim", json={"maxlen": 15, "approximate": False})
    assert r.status_code == 200, r.text
    assert (r.json()["deleted"], r.json()["maxlen"], r.json()["length"]) == (5, 15, 15)
    r = api.post("/trim", data={"minid": ids[10], "approximate": "false"})
    assert (r.json()["deleted"], r.json()["minid"], r.json()["length"]) == (5, ids[10], 10)
    assert state(api)["stream"]["first_entry_id"] == ids[10]
    r = api.post("/trim", json={"maxlen": 5})  # approximate: may keep a whole node
    assert r.status_code == 200 and r.json()["strategy"] == "MAXLEN ~ 5"


def test_reset_starts_over(api: TestClient) -> None:
    api.post("/produce", json={"count": 5})
    api.post("/add-worker", json={"group": "extra", "name": "x1"})
    r = api.post("/reset")
    assert r.status_code == 200 and r.json() == {"reset": True, "groups": 2, "consumers": 3}
    doc = state(api)
    assert doc["stream"]["length"] == 0
    assert {g["name"] for g in doc["groups"]} == {"notifications", "analytics"}
    assert doc["stats"]["produced_total"] == 0


def test_dead_letters_are_listed(make_app: AppFactory) -> None:
    api = make_app(max_deliveries=1)
    strand(api, "notifications", "worker-a", 2, produce=4)
    body = api.post(
        "/autoclaim", json={"group": "notifications", "consumer": "worker-b", "min_idle_ms": 0}
    ).json()
    assert body["dead_lettered"] == 2 and body["processed"] == 0
    r = api.get("/dlq")
    assert r.status_code == 200
    letters = r.json()["entries"]
    assert len(letters) == 2
    assert letters[0]["fields"]["dlq.group"] == "notifications"
    doc = state(api)
    assert doc["dlq"]["length"] == 2 and len(doc["dlq"]["entries"]) == 2
    assert group(doc, "notifications")["pending"] == 0


def test_autoclaim_reports_entries_trimmed_before_anyone_handled_them(api: TestClient) -> None:
    strand(api, "notifications", "worker-a", 3)
    lost = sorted(p["id"] for p in state(api)["pending"] if p["group"] == "notifications")
    r = api.post("/trim", json={"maxlen": 0, "approximate": False})
    assert r.json()["length"] == 0
    body = api.post(
        "/autoclaim", json={"group": "notifications", "consumer": "worker-b", "min_idle_ms": 0}
    ).json()
    assert (body["claimed"], body["processed"]) == (0, 0)
    assert sorted(body["deleted"]) == lost
    doc = state(api)
    assert group(doc, "notifications")["pending"] == 0
    # The loss is on record: one dead letter per trimmed ID.
    letters = api.get("/dlq").json()["entries"]
    assert sorted(e["fields"]["dlq.original_id"] for e in letters) == lost


def test_metrics_and_health(api: TestClient) -> None:
    api.post("/produce", json={"count": 5})
    wait_until(drained(api, 5), what="drain")
    wait_until(lambda: api.get("/health").json()["ok"], what="healthy")
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'redis_streaming_stream_length{stream="' in r.text
    assert re.search(r'redis_streaming_processed_total\{[^}]*consumer="worker-c"[^}]*\} 5', r.text)
    # Entries nobody reclaims turn the group "stuck" after 2 x claim idle (at least 1 s).
    strand(api, "notifications", "worker-a", 2, produce=3)
    health = wait_until(
        lambda: (h := api.get("/health").json()) and not h["ok"] and h,
        what="notifications stuck",
    )
    row = next(g for g in health["groups"] if g["name"] == "notifications")
    assert row["status"] == "stuck" and row["pending"] == 2
    assert "nobody reclaims it" in row["reasons"][0]
    assert state(api)["health"]["ok"] is False


# ---------------------------------------------------------------- the guide's API, key by key

# Every key the Redis streaming guide's demo answers with, per endpoint, sent as the guide's page
# sends it (form fields). Extra keys are fine; a missing one breaks the guide's scripts.
GUIDE_ANSWERS = [
    ("get", "/state", {}, 200, {"stream", "tail", "groups", "pending", "stats"}),
    ("post", "/produce", {"count": "2", "type": ""}, 200, {"produced", "ids"}),
    ("post", "/add-worker", {"group": "notifications", "name": "worker-z"}, 200, {"group", "name"}),
    (
        "post",
        "/remove-worker",
        {"group": "notifications", "name": "worker-b"},
        200,
        {"removed", "handed_over_to", "handed_over_count"},
    ),
    (
        "post",
        "/remove-worker",
        {"group": "notifications", "name": "ghost"},
        404,
        {"removed", "reason", "message"},
    ),
    (
        "post",
        "/crash",
        {"group": "notifications", "name": "worker-a", "count": "3"},
        200,
        {"queued"},
    ),
    (
        "post",
        "/autoclaim",
        {"group": "notifications", "consumer": "worker-a"},
        200,
        {"claimed", "processed", "deleted", "min_idle_ms"},
    ),
    ("post", "/trim", {"maxlen": "100"}, 200, {"deleted", "maxlen"}),
    (
        "get",
        "/replay",
        {"start": "-", "end": "+", "count": "5"},
        200,
        {"start", "end", "limit", "entries"},
    ),
    ("post", "/reset", {}, 200, {"consumers"}),
]


def documented_keys(openapi: dict[str, Any], method: str, path: str, status: int) -> set[str]:
    """The required keys of an answer as the app's OpenAPI schema documents it."""
    content = openapi["paths"][path][method]["responses"][str(status)]["content"]
    ref = content["application/json"]["schema"]["$ref"]
    schema = openapi["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return set(schema.get("required", ()))


@pytest.mark.parametrize(
    ("method", "path", "fields", "status", "keys"),
    GUIDE_ANSWERS,
    ids=[f"{m} {p} {st}" for m, p, _, st, _ in GUIDE_ANSWERS],
)
def test_answers_keep_the_guides_keys(
    api: TestClient, method: str, path: str, fields: dict[str, str], status: int, keys: set[str]
) -> None:
    r = api.get(path, params=fields) if method == "get" else api.post(path, data=fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert keys <= body.keys(), keys - body.keys()
    assert keys <= documented_keys(api.get("/openapi.json").json(), method, path, status)
    if path == "/remove-worker":
        assert body["removed"] is (status == 200)  # a boolean, as in the guide
    if path == "/crash":
        assert body["queued"] == 3


# ---------------------------------------------------------------- bad input


BAD_INPUT = [
    ("post", "/produce", {"json": {"count": "abc"}}, 422, "integer"),
    ("post", "/produce", {"data": {"count": "0"}}, 422, ">= 1"),
    ("post", "/produce", {"json": {"count": 501}}, 422, "<= 500"),
    ("post", "/produce", {"json": {"count": 1, "type": ""}}, 200, ""),
    (
        "post",
        "/produce",
        {"content": b"[1, 2]", "headers": {"content-type": "application/json"}},
        400,
        "object",
    ),
    (
        "post",
        "/produce",
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        400,
        "JSON",
    ),
    ("post", "/crash", {"json": {"name": "worker-a"}}, 422, "group"),
    ("post", "/crash", {"json": {"group": "notifications", "name": "nobody"}}, 404, "nobody"),
    ("post", "/crash", {"json": {"group": "nogroup", "name": "worker-a"}}, 404, "nogroup"),
    (
        "post",
        "/crash",
        {"json": {"group": "notifications", "name": "worker-a", "count": -1}},
        422,
        "count",
    ),
    (
        "post",
        "/add-worker",
        {"json": {"group": "notifications", "name": "bad name"}},
        422,
        "spaces",
    ),
    (
        "post",
        "/add-worker",
        {"json": {"group": "notifications", "name": "worker-a"}},
        409,
        "already",
    ),
    ("post", "/add-worker", {"data": {"group": "", "name": "x"}}, 422, "group"),
    ("post", "/remove-worker", {"json": {"group": "notifications", "name": "ghost"}}, 404, "ghost"),
    ("post", "/autoclaim", {"json": {"group": "notifications", "consumer": "ghost"}}, 404, "ghost"),
    ("post", "/autoclaim", {"json": {"group": "notifications"}}, 422, "consumer"),
    ("post", "/trim", {"json": {"maxlen": -1}}, 422, ">= 0"),
    ("post", "/trim", {"json": {"maxlen": "ten"}}, 422, "integer"),
    ("post", "/trim", {"json": {"minid": "not-an-id"}}, 422, "not-an-id"),
    ("post", "/trim", {"json": {}}, 422, "exactly one"),
    ("post", "/trim", {"json": {"maxlen": 5, "minid": "1-0"}}, 422, "exactly one"),
    ("post", "/trim", {"json": {"maxlen": 5, "approximate": "maybe"}}, 422, "approximate"),
    ("get", "/replay?start=yesterday", {}, 422, "yesterday"),
    ("get", "/replay?count=0", {}, 422, "count"),
    ("get", "/replay?count=lots", {}, 422, "integer"),
    ("get", "/dlq?count=-3", {}, 422, "count"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "needle"), BAD_INPUT)
def test_bad_input_gets_a_clear_4xx(
    api: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int, needle: str
) -> None:
    r = getattr(api, method)(path, **kwargs)
    assert r.status_code == status, r.text
    if status >= 400:
        assert needle in r.json()["error"]
    assert state(api)["stream"]["length"] == (1 if status == 200 else 0)


# ---------------------------------------------------------------- local-tool security


def test_foreign_host_header_is_refused(api: TestClient) -> None:
    r = api.get("/state", headers={"host": "attacker.example"})
    assert r.status_code == 421 and "Host" in r.json()["error"]
    assert api.get("/state", headers={"host": "localhost:8083"}).status_code == 200
    assert api.get("/state", headers={"host": "127.0.0.1:8083"}).status_code == 200
    assert api.get("/state", headers={"host": "localhost:9999"}).status_code == 421


def test_cross_origin_posts_are_refused(api: TestClient) -> None:
    r = api.post("/reset", headers={"origin": "http://attacker.example"})
    assert r.status_code == 403 and "Origin" in r.json()["error"]
    r = api.post("/produce", json={"count": 1}, headers={"sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    r = api.post("/produce", json={"count": 1}, headers={"origin": "http://testserver"})
    assert r.status_code == 200
    r = api.post("/produce", json={"count": 1}, headers={"sec-fetch-site": "same-origin"})
    assert r.status_code == 200
    assert api.get("/state", headers={"origin": "http://attacker.example"}).status_code == 200
    assert state(api)["stream"]["length"] == 2


def test_no_get_changes_state(api: TestClient) -> None:
    for path in ("/produce", "/reset", "/crash", "/trim", "/add-worker", "/remove-worker"):
        assert api.get(path).status_code == 405
    assert state(api)["stream"]["length"] == 0


def test_a_script_payload_is_stored_and_served_as_plain_data(api: TestClient) -> None:
    evil = "<script>alert(1)</script>"
    assert api.post("/produce", json={"count": 1, "type": evil}).status_code == 200
    assert state(api)["tail"][0]["type"] == evil


# ---------------------------------------------------------------- Redis down


def test_redis_unreachable_answers_503(private_server: EmbeddedServer, key: str) -> None:
    config = DemoConfig(
        redis_url=private_server.url,
        stream_key=key,
        allowed_hosts=("testserver",),
        tick_s=0.05,
    )
    with TestClient(create_app(config)) as api:
        assert api.get("/state").status_code == 200
        private_server.kill()
        r = api.get("/state")
        assert r.status_code == 503
        assert "Redis unreachable" in r.json()["error"]
        r = api.post("/produce", json={"count": 1})
        assert r.status_code == 503
        assert api.get("/health").status_code == 503
        metrics = api.get("/metrics")
        assert metrics.status_code == 200 and re.search(
            r"redis_streaming_up\{[^}]*\} 0", metrics.text
        )
        feed = api.get("/events", params={"limit": 1})
        assert "event: unavailable" in feed.text and "Redis unreachable" in feed.text


def test_a_start_without_redis_fails_and_leaves_no_worker() -> None:
    app = create_app(DemoConfig(redis_url="redis://127.0.0.1:1/0", allowed_hosts=("testserver",)))
    with pytest.raises(RedisUnavailable), TestClient(app):
        pass
    assert runtime_of(app)._all_workers() == []


def runtime_of(app: Any) -> DemoRuntime:
    return app.state.runtime  # type: ignore[no-any-return]


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"count": 3}', {"count": 3}),
        (
            "application/x-www-form-urlencoded",
            b"count=3&type=order.paid",
            {
                "count": "3",
                "type": "order.paid",
            },
        ),
        ("", b"", {}),
        ("text/plain", b'{"a": "b"}', {"a": "b"}),
    ],
)
def test_parse_body(content_type: str, body: bytes, expected: dict[str, Any]) -> None:
    assert params.parse_body(content_type, body) == expected


def test_parse_body_refuses_multipart() -> None:
    with pytest.raises(params.BadBody, match="multipart"):
        params.parse_body("multipart/form-data; boundary=x", b"--x--")


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8083", True),
        ("localhost:8083", True),
        ("LOCALHOST:8083", True),
        ("[::1]:8083", True),
        ("localhost", True),
        ("localhost:8084", False),
        ("localhost.attacker.example:8083", False),
        ("192.168.1.5:8083", False),
        ("", False),
        ("[broken", False),
    ],
)
def test_host_header_rules(host: str, ok: bool) -> None:
    config = DemoConfig(redis_url="redis://127.0.0.1:1/0")
    assert demo_app._host_ok(host, config, config.host_names()) is ok


@pytest.mark.parametrize(
    ("method", "path", "fields", "named"),
    [
        ("post", "/trim", {"maxlen": "9223372036854775808"}, "9223372036854775808"),
        (
            "post",
            "/autoclaim",
            {"group": "notifications", "consumer": "worker-a",
             "min_idle_ms": "18446744073709551616"},
            "18446744073709551616",
        ),
        ("get", "/replay", {"start": f"({2**64 - 1}-{2**64 - 1}"}, f"({2**64 - 1}-{2**64 - 1}"),
        ("get", "/replay", {"end": "(0-0"}, "(0-0"),
        ("get", "/replay", {"count": "99999999999999999999"}, "99999999999999999999"),
        ("get", "/dlq", {"count": "abc"}, "abc"),
    ],
)  # fmt: skip
def test_values_past_what_redis_takes_get_a_4xx_naming_them(
    api: TestClient, method: str, path: str, fields: dict[str, str], named: str
) -> None:
    response = api.post(path, data=fields) if method == "post" else api.get(path, params=fields)
    assert response.status_code == 422, response.text
    assert named in response.json()["error"]


# ---------------------------------------------------------------- why nothing was claimed


def test_autoclaim_says_why_nothing_was_claimed(api: TestClient) -> None:
    target = {"group": "notifications", "consumer": "worker-b"}
    body = api.post("/autoclaim", json=target).json()
    assert body["claimed"] == 0
    assert "no pending entries" in body["reason"] and "'notifications'" in body["reason"]

    strand(api, "notifications", "worker-a", 3)
    body = api.post("/autoclaim", json={**target, "min_idle_ms": 3_600_000}).json()
    assert body["claimed"] == 0
    reason = body["reason"]
    assert reason.startswith("3 entries are pending in 'notifications'"), reason
    assert "none has been idle for the threshold of 3600000 ms yet" in reason
    youngest, oldest, left = map(
        int, re.search(r"idle (\d+) ms \(youngest\) to (\d+) ms \(oldest\).* in (\d+) ms", reason)
        .groups(),
    )  # fmt: skip
    assert youngest <= oldest < 3_600_000 and left == 3_600_000 - oldest

    aged(api, "notifications", 50)
    body = api.post("/autoclaim", json=target).json()
    assert body["claimed"] == 3 and body["reason"] is None


def test_autoclaim_reason_names_entries_trimmed_away(api: TestClient) -> None:
    strand(api, "notifications", "worker-a", 2)
    api.post("/trim", json={"maxlen": 0, "approximate": False})
    body = api.post(
        "/autoclaim", json={"group": "notifications", "consumer": "worker-b", "min_idle_ms": 0}
    ).json()
    assert body["claimed"] == 0 and len(body["deleted"]) == 2
    assert "2 entries idle past 0 ms had been trimmed" in body["reason"]


def test_state_suggests_a_claim_target(api: TestClient) -> None:
    assert state(api)["claim_target"] is None
    strand(api, "notifications", "worker-a", 3)
    # worker-a holds the entries: the suggestion is its peer (paused by strand, but live).
    target = state(api)["claim_target"]
    assert (target["group"], target["consumer"], target["pending"]) == (
        "notifications",
        "worker-b",
        3,
    )
    aged(api, "notifications", 50)
    assert state(api)["claim_target"]["claimable"] == 3
    feed = api.get("/events", params={"limit": 1}).text
    assert '"claim_target":{"group":"notifications","consumer":"worker-b"' in feed
    api.post("/autoclaim", json={"group": "notifications", "consumer": "worker-b"})
    assert state(api)["claim_target"] is None


def test_claim_target_prefers_the_group_with_claimable_entries() -> None:
    def consumer_view(grp: str, name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "group": grp, "managed": True, "alive": True, **extra}

    doc = {
        "groups": [
            {"name": "analytics", "pending": 1, "consumers_detail": [consumer_view("x", "c")]},
            {
                "name": "notifications",
                "pending": 2,
                "consumers_detail": [
                    consumer_view("notifications", "a"),
                    consumer_view("notifications", "b", alive=False),
                    consumer_view("notifications", "d", paused=True),
                ],
            },
        ],
        "pending": [
            {"group": "analytics", "id": "1-0", "consumer": "c", "idle_ms": 9_000},
            {"group": "notifications", "id": "1-0", "consumer": "a", "idle_ms": 20_000},
            {"group": "notifications", "id": "2-0", "consumer": "a", "idle_ms": 100},
        ],
    }  # fmt: skip
    # Both groups have one claimable entry; notifications' has waited longer. b is dead, a
    # owns the entries: d, though paused, is the peer to reclaim them.
    assert routes_read.claim_target(doc, 5_000) == {
        "group": "notifications",
        "consumer": "d",
        "claimable": 1,
        "pending": 2,
    }
    assert routes_read.claim_target(doc, 10_000)["group"] == "notifications"
    assert routes_read.claim_target(doc, 60_000)["claimable"] == 0
    assert routes_read.claim_target({"groups": doc["groups"], "pending": []}, 5_000) is None


# ---------------------------------------------------------------- hostile requests

M64 = 2**64 - 1
CLAIM = {"group": "notifications", "consumer": "worker-a"}
JSON = {"content-type": "application/json"}
HOSTILE = [
    # numbers past every bound, as JSON numbers and as text
    ("post", "/produce", {"json": {"count": 2**63}}),
    ("post", "/produce", {"json": {"count": 2**64}}),
    ("post", "/produce", {"json": {"count": -(2**63)}}),
    ("post", "/produce", {"json": {"count": 1e308}}),
    ("post", "/produce", {"json": {"count": 2.5}}),
    ("post", "/produce", {"json": {"count": "2.5"}}),
    ("post", "/produce", {"json": {"count": "1e3"}}),
    ("post", "/produce", {"json": {"count": "0x10"}}),
    ("post", "/produce", {"json": {"count": " 5"}}),
    ("post", "/produce", {"json": {"count": "05"}}),
    ("post", "/produce", {"json": {"count": "5\n"}}),
    ("post", "/produce", {"json": {"count": "\u0663"}}),  # ARABIC-INDIC DIGIT THREE
    ("post", "/produce", {"json": {"count": ""}}),
    ("post", "/produce", {"json": {"count": None}}),
    ("post", "/produce", {"json": {"count": True}}),
    ("post", "/produce", {"json": {"count": [1]}}),
    ("post", "/produce", {"json": {"count": {}}}),
    ("post", "/produce", {"data": {"count": "9" * 5000}}),
    ("post", "/produce", {"json": {"type": "  "}}),
    ("post", "/produce", {"json": {"type": " padded"}}),
    ("post", "/produce", {"json": {"type": 5}}),
    ("post", "/produce", {"json": {"type": "\x00"}}),
    ("post", "/produce", {"json": {"type": "x" * 101}}),
    ("post", "/trim", {"json": {"maxlen": 2**63}}),
    ("post", "/trim", {"json": {"maxlen": "9223372036854775808"}}),
    ("post", "/trim", {"json": {"maxlen": 2**53}}),
    ("post", "/trim", {"content": b'{"maxlen": Infinity}', "headers": JSON}),
    ("post", "/trim", {"content": b'{"maxlen": NaN}', "headers": JSON}),
    ("post", "/trim", {"json": {"maxlen": ""}}),
    ("post", "/trim", {"json": {"minid": ""}}),
    ("post", "/trim", {"json": {"minid": 5}}),
    ("post", "/trim", {"json": {"minid": "(1-1"}}),
    ("post", "/trim", {"json": {"minid": f"{M64 + 1}-0"}}),
    ("post", "/trim", {"json": {"minid": "\u0661-\u0661"}}),
    ("post", "/trim", {"json": {"minid": "1-1\n"}}),
    ("post", "/trim", {"json": {"maxlen": 1, "approximate": "maybe"}}),
    ("post", "/trim", {"json": {"maxlen": 1, "approximate": None}}),
    ("post", "/trim", {"json": {"maxlen": 1, "approximate": 2}}),
    ("post", "/autoclaim", {"json": {**CLAIM, "min_idle_ms": M64 + 1}}),
    ("post", "/autoclaim", {"json": {**CLAIM, "min_idle_ms": 2**63}}),
    ("post", "/autoclaim", {"json": {**CLAIM, "min_idle_ms": -1}}),
    ("post", "/autoclaim", {"json": {**CLAIM, "min_idle_ms": 1.5}}),
    # names
    ("post", "/add-worker", {"json": {"group": "notifications", "name": ""}}),
    ("post", "/add-worker", {"json": {"group": "notifications", "name": " "}}),
    ("post", "/add-worker", {"json": {"group": "notifications", "name": "caf\u00e9"}}),
    ("post", "/add-worker", {"json": {"group": "notifications", "name": "zero\u200bwidth"}}),
    ("post", "/add-worker", {"json": {"group": "notifications", "name": "x" * 201}}),
    ("post", "/add-worker", {"json": {"group": "notifications", "name": 123}}),
    ("post", "/add-worker", {"json": {"group": "notifications", "name": None}}),
    ("post", "/add-worker", {"json": {"group": ["notifications"], "name": "w"}}),
    ("post", "/pause", {"json": {}}),
    ("post", "/crash", {"json": {"group": "notifications", "name": "worker-a", "count": 10_001}}),
    # bodies that are not an object
    ("post", "/produce", {"content": b"null", "headers": JSON}),
    ("post", "/produce", {"content": b"5", "headers": JSON}),
    ("post", "/produce", {"content": b'"x"', "headers": JSON}),
    ("post", "/produce", {"content": b'{"count": %s}' % (b"9" * 5000), "headers": JSON}),
    ("post", "/produce", {"content": b"\xff\xfe{", "headers": JSON}),
    # query strings
    ("get", f"/replay?start=({M64}-{M64}", {}),
    ("get", "/replay?end=(0-0", {}),
    ("get", "/replay?end=(0", {}),
    ("get", f"/replay?start={M64 + 1}", {}),
    ("get", "/replay?start=%D9%A1", {}),  # an Arabic-Indic digit
    ("get", "/replay?start=1-1%0A", {}),
    ("get", "/replay?count=1e3", {}),
    ("get", "/replay?count=2.0", {}),
    ("get", f"/replay?count={2**63}", {}),
    ("get", "/dlq?count=0", {}),
    ("get", "/events?limit=-1", {}),
    ("get", "/events?limit=1000001", {}),
    ("get", "/events?limit=abc", {}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs"), HOSTILE)
def test_hostile_requests_get_a_4xx_json_answer(
    api: TestClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    r = getattr(api, method)(path, **kwargs)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body["error"], str) and body["error"] and isinstance(body["kind"], str)


EDGES = [
    ("post", "/produce", {"json": {"count": 500}}),
    ("post", "/produce", {"json": {"count": "500"}}),
    ("post", "/produce", {"json": {"count": 2.0}}),  # JSON Schema calls 2.0 an integer
    ("post", "/produce", {"data": {"count": "1", "type": "random"}}),
    ("post", "/produce", {"json": {"type": "a b~"}}),
    ("post", "/trim", {"json": {"maxlen": 2**53 - 1}}),
    ("post", "/trim", {"json": {"maxlen": "0", "approximate": "off"}}),
    ("post", "/trim", {"json": {"minid": f"{M64}-{M64}"}}),
    ("post", "/autoclaim", {"json": {**CLAIM, "min_idle_ms": 2**53 - 1}}),
    ("get", f"/replay?start=({M64}&end=({M64}-{M64}", {}),
    ("get", "/replay?start=&end=&count=1000", {}),
    ("get", "/replay?end=(0-1", {}),
    ("get", "/dlq?count=1000", {}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs"), EDGES)
def test_values_at_the_documented_edges_are_accepted(
    api: TestClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    r = getattr(api, method)(path, **kwargs)
    assert r.status_code == 200, r.text


def test_decimal_pattern_matches_exactly_the_range() -> None:
    for low, high in [(0, 0), (0, 9), (1, 500), (1, 1000), (95, 105), (7, 1234), (0, 10**6)]:
        rx = re.compile(params.anchored(params.decimal_pattern(low, high)))
        for n in range(0, high + 200):
            assert bool(rx.fullmatch(str(n))) is (low <= n <= high), (low, high, n)
        assert not rx.fullmatch("-1") and not rx.fullmatch("") and not rx.fullmatch(f"0{high}")
    for high in (2**53 - 1, 2**63 - 1, M64):
        rx = re.compile(params.anchored(params.decimal_pattern(0, high)))
        for n in (high, high - 1, high + 1, 10 ** (len(str(high)) - 1), 10 ** len(str(high))):
            assert bool(rx.fullmatch(str(n))) is (n <= high), (high, n)


def test_docs_page_uses_only_local_assets(api: TestClient) -> None:
    html = api.get("/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in html
    assert "https://" not in html and "http://" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert api.get(f"/static-offline-docs/{asset}").status_code == 200, asset
    assert api.get("/redoc").status_code == 404
