"""The demo's read-only routes: /state, /replay, /dlq, /metrics, /health and the live feed.

No GET changes state. The /state snapshot and the Prometheus scrape block on a sync client, so
they run in the thread pool; replay and dead letters are awaited on the app's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .._errors import StreamingError
from . import params as p
from . import schemas as s
from .config import DemoConfig
from .routing import errors, query_doc
from .runtime import DemoRuntime

_HEARTBEAT_S = 15.0


def router(rt: DemoRuntime, config: DemoConfig) -> APIRouter:
    """The read-only routes over ``rt``."""
    api = APIRouter()

    def snapshot() -> dict[str, Any]:
        doc = rt.snapshot()
        doc["claim_target"] = claim_target(doc, config.claim_idle_ms)
        return doc

    @api.get(
        "/state",
        summary="Stream, groups, consumers, pending entries and counters",
        response_model=s.StateAnswer,
        responses=errors(),
    )
    async def get_state() -> dict[str, Any]:
        return await run_in_threadpool(snapshot)

    @api.get(
        "/replay",
        summary="XRANGE start..end (count entries)",
        response_model=s.ReplayAnswer,
        responses=errors(422),
        openapi_extra=query_doc("/replay"),
    )
    async def replay(request: Request) -> Any:
        q = dict(request.query_params)
        start, end = p.get_range_bound(q, "start"), p.get_range_bound(q, "end")
        count_n = p.get_int(q, "count", 20, minimum=1, maximum=s.MAX_PAGE)
        entries = await rt.replay(start, end, count_n)
        return {
            "start": start,
            "end": end,
            "limit": count_n,
            "entries": [{"id": e.id, "fields": dict(e.fields)} for e in entries],
        }

    @api.get(
        "/dlq",
        summary="Dead letters (oldest first)",
        response_model=s.DlqAnswer,
        responses=errors(422),
        openapi_extra=query_doc("/dlq"),
    )
    async def dlq(request: Request) -> Any:
        count_n = p.get_int(dict(request.query_params), "count", 100, minimum=1, maximum=s.MAX_PAGE)
        entries = await rt.dead_letters_list(count_n)
        return {
            "key": config.dlq_key,
            "entries": [{"id": e.id, "fields": dict(e.fields)} for e in entries],
        }

    @api.get(
        "/metrics",
        summary="Prometheus metrics of the stream, groups and workers",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **errors(),
        },
    )
    async def metrics() -> Response:
        body, content_type = await run_in_threadpool(rt.render_metrics)
        return Response(body, media_type=content_type)

    @api.get(
        "/health",
        summary="Lag and pending health of every group",
        response_model=s.HealthAnswer,
        responses=errors(),
    )
    async def health() -> Any:
        doc = await run_in_threadpool(rt.snapshot)
        return doc["health"]

    @api.get(
        "/events",
        summary="Live feed (text/event-stream) of the /state document",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "server-sent events: 'state' (the /state document as JSON) "
                "whenever it changes, 'unavailable' while Redis is unreachable",
                "content": {"text/event-stream": {"schema": s.event_stream_schema()}},
            },
            **errors(422),
        },
        openapi_extra=query_doc("/events"),
    )
    async def events(request: Request) -> StreamingResponse:
        limit = p.get_int(dict(request.query_params), "limit", 0, maximum=s.MAX_FEED_EVENTS)
        return StreamingResponse(
            _feed(request, rt, snapshot, config.tick_s, limit),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return api


def claim_target(doc: dict[str, Any], threshold: int) -> dict[str, Any] | None:
    """A consumer to XAUTOCLAIM to: in the group with the most claimable pending entries.

    Claimable means idle at least ``threshold`` ms (among the pending rows /state carries).
    Without any, the group with pending entries that become claimable first. The consumer is a
    live one that owns none of them if there is one, unpaused if it can be. None when nothing
    is pending.
    """
    by_group: dict[str, list[dict[str, Any]]] = {}
    for row in doc.get("pending", ()):
        by_group.setdefault(row["group"], []).append(row)
    best: tuple[tuple[int, int], dict[str, Any]] | None = None
    for grp in doc.get("groups", ()):
        rows = by_group.get(grp["name"], [])
        if not rows:
            continue
        claimable = sum(1 for r in rows if r["idle_ms"] >= threshold)
        owners = {r["consumer"] for r in rows}
        live = [
            c
            for c in grp.get("consumers_detail", ())
            if c.get("managed", True) and c.get("alive", True)
        ]
        # A peer of the owners first (the lesson: reclaim from a crashed one), unpaused first.
        ranked = sorted(live, key=lambda c: (c["name"] in owners, bool(c.get("paused"))))
        if not ranked:
            continue
        score = (claimable, max(r["idle_ms"] for r in rows))
        if best is None or score > best[0]:
            best = (
                score,
                {
                    "group": grp["name"],
                    "consumer": ranked[0]["name"],
                    "claimable": claimable,
                    "pending": grp.get("pending", len(rows)),
                },
            )
    return best[1] if best else None


async def _feed(
    request: Request,
    rt: DemoRuntime,
    snapshot: Callable[[], dict[str, Any]],
    tick_s: float,
    max_events: int,
) -> AsyncIterator[str]:
    """Server-sent events: the /state document whenever it changes, until shutdown."""
    last: str | None = None
    sent = 0
    quiet = 0.0
    yield "retry: 1000\n\n"
    while not rt.closing.is_set():
        try:
            doc = await run_in_threadpool(snapshot)
            event, data = "state", json.dumps(doc, separators=(",", ":"))
        except StreamingError as exc:
            event = "unavailable"
            data = json.dumps({"ok": False, "error": f"Redis unreachable: {exc}"})
        if data != last:
            last, quiet = data, 0.0
            yield f"event: {event}\ndata: {data}\n\n"
            sent += 1
            if max_events and sent >= max_events:
                return
        elif quiet >= _HEARTBEAT_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        # Wake often enough to notice shutdown or a closed tab quickly.
        waited = 0.0
        while waited < tick_s and not rt.closing.is_set():
            step = min(0.1, tick_s - waited)
            await asyncio.sleep(step)
            waited += step
        quiet += tick_s
        if await request.is_disconnected():
            return
