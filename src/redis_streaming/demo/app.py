"""The demo's FastAPI app: the guide's JSON API, a live SSE feed and the static page.

HTTP only: every lever is a DemoRuntime method. No GET changes state, and nothing answers 500
for bad input (InvalidInput -> 422, unknown consumer -> 404, Redis down -> 503).
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
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .. import _codec as codec
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
_HEARTBEAT_S = 15.0
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


# ---------------------------------------------------------------- documentation helpers


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }


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

    app = FastAPI(
        title="redis-streaming demo",
        version="0.1.0",
        description="Produce, consume, crash, reclaim, replay and trim a Redis stream, live.",
        lifespan=lifespan,
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
        # FastAPI's /docs and /redoc load their scripts from a CDN and inline; our page does not.
        if request.url.path not in (app.docs_url, app.redoc_url):
            for name, value in _SECURITY_HEADERS.items():
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

    @app.get(
        "/state",
        summary="Stream, groups, consumers, pending entries and counters",
        response_model=s.StateAnswer,
    )
    async def get_state() -> dict[str, Any]:
        return await run_in_threadpool(rt.snapshot)

    @app.get("/replay", summary="XRANGE start..end (count entries)", response_model=s.ReplayAnswer)
    async def replay(request: Request, start: str = "-", end: str = "+", count: str = "20") -> Any:
        q = dict(request.query_params)
        start, end = start or "-", end or "+"
        count_n = p.get_int(q, "count", 20, minimum=1, maximum=1000)
        codec.validate_range_bound(start, "start")
        codec.validate_range_bound(end, "end")
        entries = await run_in_threadpool(rt.replay, start, end, count_n)
        return {
            "start": start,
            "end": end,
            "limit": count_n,
            "entries": [{"id": e.id, "fields": dict(e.fields)} for e in entries],
        }

    @app.get("/dlq", summary="Dead letters (oldest first)")
    async def dlq(request: Request, count: str = "100") -> Any:
        count_n = p.get_int(dict(request.query_params), "count", 100, minimum=1, maximum=1000)
        entries = await run_in_threadpool(rt.dead_letters_list, count_n)
        return {
            "key": config.dlq_key,
            "entries": [{"id": e.id, "fields": dict(e.fields)} for e in entries],
        }

    @app.get("/metrics", summary="Prometheus metrics of the stream, groups and workers")
    async def metrics() -> Response:
        body, content_type = await run_in_threadpool(rt.render_metrics)
        return Response(body, media_type=content_type)

    @app.get("/health", summary="Lag and pending health of every group")
    async def health() -> Any:
        doc = await run_in_threadpool(rt.snapshot)
        return doc["health"]

    @app.get("/events", summary="Live feed (text/event-stream) of the /state document")
    async def events(request: Request, limit: str = "0") -> StreamingResponse:
        max_events = p.get_int(dict(request.query_params), "limit", 0, maximum=1_000_000)
        return StreamingResponse(
            _feed(request, rt, config.tick_s, max_events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # ------------------------------------------------------------ levers

    @app.post(
        "/produce",
        summary="XADD count fake orders",
        openapi_extra=_body_doc(s.ProduceBody),
        response_model=s.ProduceAnswer,
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
    )
    async def crash(request: Request) -> Any:
        q = await _params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        count = p.get_int(q, "count", 3, minimum=1, maximum=10_000)
        return await run_in_threadpool(rt.crash, group, name, count)

    @app.post(
        "/autoclaim",
        summary="XAUTOCLAIM idle pending entries to a consumer, which processes them",
        openapi_extra=_body_doc(s.AutoclaimBody),
        response_model=s.AutoclaimAnswer,
    )
    async def autoclaim(request: Request) -> Any:
        q = await _params(request)
        group, consumer = p.get_name(q, "group"), p.get_name(q, "consumer")
        idle = p.get_int(q, "min_idle_ms", -1, minimum=-1)
        return await run_in_threadpool(rt.autoclaim, group, consumer, None if idle < 0 else idle)

    @app.post(
        "/trim",
        summary="XTRIM by MAXLEN or MINID",
        openapi_extra=_body_doc(s.TrimBody),
        response_model=s.TrimAnswer,
    )
    async def trim(request: Request) -> Any:
        q = await _params(request)
        approximate = p.get_bool(q, "approximate", True)
        has_max = q.get("maxlen") not in (None, "")
        has_min = q.get("minid") not in (None, "")
        if has_max == has_min:
            raise InvalidOption("give exactly one of maxlen (an integer >= 0) or minid (an ID)")
        maxlen = p.get_int(q, "maxlen", minimum=0) if has_max else None
        minid = codec.validate_id(p.get_str(q, "minid"), "minid") if has_min else None
        return await run_in_threadpool(rt.trim, maxlen, minid, approximate)

    @app.post("/reset", summary="Delete the stream and start over", response_model=s.ResetAnswer)
    async def reset(request: Request) -> Any:
        await _params(request)
        return await run_in_threadpool(rt.reset)

    return app


async def _feed(
    request: Request, rt: DemoRuntime, tick_s: float, max_events: int
) -> AsyncIterator[str]:
    """Server-sent events: the /state document whenever it changes, until shutdown."""
    last: str | None = None
    sent = 0
    quiet = 0.0
    yield "retry: 1000\n\n"
    while not rt.closing.is_set():
        try:
            doc = await run_in_threadpool(rt.snapshot)
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
