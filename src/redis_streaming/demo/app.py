"""The demo's FastAPI app: the guide's JSON API, a live SSE feed and the static page.

HTTP only: every lever is a DemoRuntime method. No GET changes state, and nothing answers 500
for bad input (unreadable body -> 400, InvalidInput -> 422, unknown consumer -> 404, Redis down
-> 503). The OpenAPI document says exactly what each operation accepts and answers (a
schemathesis run checks it); /docs serves Swagger UI from the fastapi-offline package, never
from a CDN.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.exceptions as rex
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .._errors import (
    GroupMissing,
    InvalidInput,
    InvalidOption,
    RedisUnavailable,
    ServerError,
    StreamingError,
    translate,
)
from ..server import display_url
from . import charts
from . import params as p
from . import schemas as s
from .config import MAX_PRODUCE, DemoConfig
from .runtime import Conflict, DemoRuntime, NotFound

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: Swagger UI, with its script and styles served from fastapi-offline's package directory.
#: No ReDoc: its bundle loads its logo from its vendor's CDN, and /docs covers the same ground.
DOCS_URL = "/docs"
DOCS_ASSETS_URL = "/static-offline-docs"
_DOCS_PATHS = (DOCS_URL, "/docs/oauth2-redirect")
#: How many pending rows a "nothing claimed" explanation looks at.
_REASON_SCAN = 1000
_HEARTBEAT_S = 15.0
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Swagger UI starts from an inline script; everything else still comes from here only.
_DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# ---------------------------------------------------------------- documentation helpers


def _body_doc(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """A request body read by params.py: a JSON object or urlencoded form fields."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }


def _query_doc(path: str) -> dict[str, Any]:
    return {"parameters": s.query_parameters()[path]}


_ERROR_TEXT = {
    400: "the body is not a JSON object or urlencoded form",
    403: "a cross-site request to change state",
    404: "no such group or consumer",
    409: "not possible in the current state",
    421: "the Host header is not this local demo's",
    422: "a field is missing, of the wrong type or out of range (the error names it)",
    503: "Redis is unreachable",
}


def _errors(*codes: int, post: bool = False) -> dict[int | str, dict[str, Any]]:
    """Documented error answers: always 421 and 503; POSTs also 400, 403 and 422."""
    wanted = {421, 503, *codes, *((400, 403, 422) if post else ())}
    return {c: {"model": s.ErrorAnswer, "description": _ERROR_TEXT[c]} for c in sorted(wanted)}


# ---------------------------------------------------------------- helpers


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": message, "kind": kind}, status_code=status)


def _refused(status: int, message: str, kind: str, reason: str) -> JSONResponse:
    """A /remove-worker refusal: our error/kind plus the guide's removed/reason/message."""
    body = {"removed": False, "reason": reason, "message": message, "error": message, "kind": kind}
    return JSONResponse(body, status_code=status)


async def _params(request: Request) -> dict[str, Any]:
    """Query parameters overlaid by the body's form fields or JSON object."""
    merged: dict[str, Any] = dict(request.query_params)
    merged.update(p.parse_body(request.headers.get("content-type", ""), await request.body()))
    return merged


def _host_ok(host_header: str, config: DemoConfig, names: frozenset[str]) -> bool:
    try:
        parts = urlsplit("//" + host_header)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return False
    if not hostname:
        return False
    name = hostname.lower()
    if ":" in name:
        name = f"[{name}]"
    if name not in names:
        return False
    return port is None or port == config.port or config.port == 0


def _cross_site(request: Request) -> str | None:
    """Why a state-changing request looks cross-site, or None if it does not."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.lower():
            return f"Origin {origin!r} is not this app's origin"
    return None


# ---------------------------------------------------------------- the app


def create_app(config: DemoConfig, runtime: DemoRuntime | None = None) -> FastAPI:
    """Build the demo app; its lifespan starts the workers and stops them on shutdown."""
    rt = runtime or DemoRuntime(config)
    names = config.host_names()
    where = display_url(config.redis_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(rt.start)
        try:
            yield
        finally:
            rt.closing.set()
            await run_in_threadpool(rt.stop)

    # FastAPIOffline: FastAPI with /docs served from the package's own copy of Swagger UI
    # (FastAPI's documented self-hosting recipe: docs_url=None, get_swagger_ui_html with local
    # URLs, a static mount of the package's directory), so it works offline.
    app = FastAPIOffline(
        docs_url=DOCS_URL,
        redoc_url=None,
        static_url=DOCS_ASSETS_URL,
        title="redis-streaming demo",
        version="0.1.0",
        description="Produce, consume, crash, reclaim, replay and trim a Redis stream, live.",
        lifespan=lifespan,
        # No badge from the online validator: the docs page makes no request off this host.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.runtime = rt

    # ------------------------------------------------------------ guards and errors

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not _host_ok(request.headers.get("host", ""), config, names):
            return _error(421, "Host header not allowed (this demo answers only locally)", "host")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            why = _cross_site(request)
            if why is not None:
                return _error(403, f"cross-site request refused: {why}", "origin")
        response = await call_next(request)
        headers = dict(_SECURITY_HEADERS)
        if request.url.path in _DOCS_PATHS:
            headers["Content-Security-Policy"] = _DOCS_CSP
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, exc: InvalidInput) -> JSONResponse:
        status = 400 if isinstance(exc, p.BadBody) else 422
        return _error(status, str(exc), type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(str(e.get("msg")) for e in exc.errors()), "validation")

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc.args[0]), "not_found")

    @app.exception_handler(GroupMissing)
    async def _no_group(request: Request, exc: GroupMissing) -> JSONResponse:
        return _error(404, f"no such group or stream: {exc}", "not_found")

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return _error(409, str(exc), "conflict")

    @app.exception_handler(RedisUnavailable)
    async def _unavailable(request: Request, exc: RedisUnavailable) -> JSONResponse:
        return _error(503, f"Redis unreachable at {where}: {exc}", "redis_unavailable")

    @app.exception_handler(rex.RedisError)
    async def _redis(request: Request, exc: rex.RedisError) -> JSONResponse:
        err = translate(exc)
        if isinstance(err, RedisUnavailable):
            return _error(503, f"Redis unreachable at {where}: {err}", "redis_unavailable")
        return _error(502, f"Redis refused the command: {err}", "server")

    @app.exception_handler(ServerError)
    async def _server(request: Request, exc: ServerError) -> JSONResponse:
        return _error(502, f"Redis refused the command: {exc}", "server")

    @app.exception_handler(StreamingError)
    async def _streaming(request: Request, exc: StreamingError) -> JSONResponse:
        return _error(500, str(exc), type(exc).__name__)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", "internal")

    # ------------------------------------------------------------ page

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(charts.router(rt.charts))  # GET /charts/{rates,backlog}.svg (pygal)

    # ------------------------------------------------------------ reading

    def snapshot() -> dict[str, Any]:
        doc = rt.snapshot()
        doc["claim_target"] = claim_target(doc, config.claim_idle_ms)
        return doc

    @app.get(
        "/state",
        summary="Stream, groups, consumers, pending entries and counters",
        response_model=s.StateAnswer,
        responses=_errors(),
    )
    async def get_state() -> dict[str, Any]:
        return await run_in_threadpool(snapshot)

    @app.get(
        "/replay",
        summary="XRANGE start..end (count entries)",
        response_model=s.ReplayAnswer,
        responses=_errors(422),
        openapi_extra=_query_doc("/replay"),
    )
    async def replay(request: Request) -> Any:
        q = dict(request.query_params)
        start, end = p.get_range_bound(q, "start"), p.get_range_bound(q, "end")
        count_n = p.get_int(q, "count", 20, minimum=1, maximum=s.MAX_PAGE)
        entries = await run_in_threadpool(rt.replay, start, end, count_n)
        return {
            "start": start,
            "end": end,
            "limit": count_n,
            "entries": [{"id": e.id, "fields": dict(e.fields)} for e in entries],
        }

    @app.get(
        "/dlq",
        summary="Dead letters (oldest first)",
        response_model=s.DlqAnswer,
        responses=_errors(422),
        openapi_extra=_query_doc("/dlq"),
    )
    async def dlq(request: Request) -> Any:
        count_n = p.get_int(dict(request.query_params), "count", 100, minimum=1, maximum=s.MAX_PAGE)
        entries = await run_in_threadpool(rt.dead_letters_list, count_n)
        return {
            "key": config.dlq_key,
            "entries": [{"id": e.id, "fields": dict(e.fields)} for e in entries],
        }

    @app.get(
        "/metrics",
        summary="Prometheus metrics of the stream, groups and workers",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **_errors(),
        },
    )
    async def metrics() -> Response:
        body, content_type = await run_in_threadpool(rt.render_metrics)
        return Response(body, media_type=content_type)

    @app.get(
        "/health",
        summary="Lag and pending health of every group",
        response_model=s.HealthAnswer,
        responses=_errors(),
    )
    async def health() -> Any:
        doc = await run_in_threadpool(rt.snapshot)
        return doc["health"]

    @app.get(
        "/events",
        summary="Live feed (text/event-stream) of the /state document",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "server-sent events: 'state' (the /state document as JSON) "
                "whenever it changes, 'unavailable' while Redis is unreachable",
                "content": {"text/event-stream": {"schema": s.event_stream_schema()}},
            },
            **_errors(422),
        },
        openapi_extra=_query_doc("/events"),
    )
    async def events(request: Request) -> StreamingResponse:
        limit = p.get_int(dict(request.query_params), "limit", 0, maximum=s.MAX_FEED_EVENTS)
        return StreamingResponse(
            _feed(request, rt, snapshot, config.tick_s, limit),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------ levers

    @app.post(
        "/produce",
        summary="XADD count fake orders",
        openapi_extra=_body_doc(s.ProduceBody, required=False),
        response_model=s.ProduceAnswer,
        responses=_errors(post=True),
    )
    async def produce(request: Request) -> Any:
        q = await _params(request)
        count = p.get_int(q, "count", 10, minimum=1, maximum=MAX_PRODUCE)
        event_type = p.get_event_type(q)
        ids = await run_in_threadpool(rt.produce, count, event_type)
        return {"produced": len(ids), "ids": ids, "first_id": ids[0], "last_id": ids[-1]}

    @app.post(
        "/add-worker",
        summary="Start a consumer",
        openapi_extra=_body_doc(s.ConsumerBody),
        response_model=s.AddWorkerAnswer,
        responses=_errors(409, post=True),
    )
    async def add_worker(request: Request) -> Any:
        q = await _params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        return await run_in_threadpool(rt.add_worker, group, name)

    @app.post(
        "/remove-worker",
        summary="Hand a consumer's pending entries to a peer, then delete it",
        openapi_extra=_body_doc(s.ConsumerBody),
        response_model=s.RemoveWorkerAnswer,
        responses={
            **_errors(post=True),
            404: {"model": s.RemoveWorkerRefusal, "description": "no such consumer"},
            409: {"model": s.RemoveWorkerRefusal, "description": "not removed now"},
        },
    )
    async def remove_worker(request: Request) -> Any:
        q = await _params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        try:
            return await run_in_threadpool(rt.remove_worker, group, name)
        except NotFound as exc:
            return _refused(404, str(exc.args[0]), "not_found", "not-found")
        except Conflict as exc:
            return _refused(409, str(exc), "conflict", exc.reason)

    @app.post(
        "/pause",
        summary="Stop fetching",
        openapi_extra=_body_doc(s.ConsumerBody),
        response_model=s.PauseAnswer,
        responses=_errors(404, 409, post=True),
    )
    async def pause(request: Request) -> Any:
        q = await _params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        return await run_in_threadpool(rt.set_paused, group, name, True)

    @app.post(
        "/resume",
        summary="Fetch again",
        openapi_extra=_body_doc(s.ConsumerBody),
        response_model=s.PauseAnswer,
        responses=_errors(404, post=True),
    )
    async def resume(request: Request) -> Any:
        q = await _params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        return await run_in_threadpool(rt.set_paused, group, name, False)

    @app.post(
        "/crash",
        summary="Drop the next deliveries unacked",
        openapi_extra=_body_doc(s.CrashBody),
        response_model=s.CrashAnswer,
        responses=_errors(404, post=True),
    )
    async def crash(request: Request) -> Any:
        q = await _params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        count = p.get_int(q, "count", 3, minimum=1, maximum=s.MAX_CRASH)
        return await run_in_threadpool(rt.crash, group, name, count)

    @app.post(
        "/autoclaim",
        summary="XAUTOCLAIM idle pending entries to a consumer, which processes them",
        description="When nothing was claimed, `reason` says why (no pending entries, none idle "
        "past the threshold yet, ...).",
        openapi_extra=_body_doc(s.AutoclaimBody),
        response_model=s.AutoclaimAnswer,
        responses=_errors(404, post=True),
    )
    async def autoclaim(request: Request) -> Any:
        q = await _params(request)
        group, consumer = p.get_name(q, "group"), p.get_name(q, "consumer")
        idle = p.get_int(q, "min_idle_ms", maximum=s.MAX_JSON_INT) if "min_idle_ms" in q else None

        def run() -> dict[str, Any]:
            answer = rt.autoclaim(group, consumer, idle)
            answer["reason"] = None if answer["claimed"] else nothing_claimed(rt, answer)
            return answer

        return await run_in_threadpool(run)

    @app.post(
        "/trim",
        summary="XTRIM by MAXLEN or MINID (give exactly one)",
        openapi_extra=_body_doc(s.TrimBody),
        response_model=s.TrimAnswer,
        responses=_errors(post=True),
    )
    async def trim(request: Request) -> Any:
        q = await _params(request)
        approximate = p.get_bool(q, "approximate", True)
        if ("maxlen" in q) == ("minid" in q):
            raise InvalidOption("give exactly one of maxlen (an integer >= 0) or minid (an ID)")
        maxlen = p.get_int(q, "maxlen", maximum=s.MAX_JSON_INT) if "maxlen" in q else None
        minid = p.get_stream_id(q, "minid") if "minid" in q else None
        return await run_in_threadpool(rt.trim, maxlen, minid, approximate)

    @app.post(
        "/reset",
        summary="Delete the stream and start over",
        response_model=s.ResetAnswer,
        responses=_errors(400, 403),
    )
    async def reset(request: Request) -> Any:
        await _params(request)
        return await run_in_threadpool(rt.reset)

    return app


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def nothing_claimed(rt: DemoRuntime, answer: dict[str, Any]) -> str:
    """Why an XAUTOCLAIM claimed nothing, from the group's pending entries right after it."""
    group, threshold = answer["group"], answer["min_idle_ms"]
    deleted = answer["deleted"]
    if deleted:
        return (
            f"the {_plural(len(deleted), 'entry', 'entries')} idle past {threshold} ms had been "
            "trimmed from the stream before anyone handled them (see deleted): nothing left "
            "to claim"
        )
    rows = rt.stream.pending(group, count=_REASON_SCAN)
    if not rows:
        return (
            f"group {group!r} has no pending entries: every entry delivered to it was acked, "
            "so there is nothing to claim"
        )
    n = f"{'at least ' if len(rows) >= _REASON_SCAN else ''}{len(rows)}"
    ready = [r for r in rows if r.idle_ms >= threshold]
    if ready:
        return (
            f"{_plural(len(ready), 'entry', 'entries')} of {group!r} "
            f"{'is' if len(ready) == 1 else 'are'} idle past {threshold} ms now but this sweep "
            "claimed none (they crossed the threshold just after it, or another consumer "
            "claimed them first); try again"
        )
    idle = sorted(r.idle_ms for r in rows)
    youngest, oldest = idle[0], idle[-1]
    what = "entry is" if len(rows) == 1 else "entries are"
    span = (
        f"idle {oldest} ms"
        if len(rows) == 1
        else f"idle {youngest} ms (youngest) to {oldest} ms (oldest)"
    )
    return (
        f"{n} {what} pending in {group!r} but none has been idle for the threshold of "
        f"{threshold} ms yet ({span}); the oldest becomes claimable in {threshold - oldest} ms"
    )


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
