"""The demo's FastAPI app: the guide's JSON API, a live SSE feed and the static page.

HTTP only: every lever is a DemoRuntime coroutine, awaited on this app's loop where the worker
tasks run; the routes live in routes_read.py (GET) and routes_levers.py (POST), their shared
helpers in routing.py. The lifespan starts the workers and awaits their stop.

No GET changes state, and nothing answers 500 for bad input (unreadable body -> 400,
InvalidInput -> 422, unknown consumer -> 404, Redis down -> 503). The OpenAPI document says
exactly what each operation accepts and answers (a schemathesis run checks it); /docs serves
Swagger UI from the fastapi-offline package, never from a CDN.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import redis.exceptions as rex
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from .._errors import (
    GroupMissing,
    InvalidInput,
    RedisUnavailable,
    ServerError,
    StreamingError,
    translate,
)
from ..server import display_url
from . import charts, routes_levers, routes_read
from . import params as p
from .config import DemoConfig
from .routing import error
from .runtime import Conflict, DemoRuntime, NotFound

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: Swagger UI, with its script and styles served from fastapi-offline's package directory.
#: No ReDoc: its bundle loads its logo from its vendor's CDN, and /docs covers the same ground.
DOCS_URL = "/docs"
DOCS_ASSETS_URL = "/static-offline-docs"
_DOCS_PATHS = (DOCS_URL, "/docs/oauth2-redirect")
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


# ---------------------------------------------------------------- guards


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
    """Build the demo app; its lifespan starts the worker tasks and stops them on shutdown."""
    rt = runtime or DemoRuntime(config)
    names = config.host_names()
    where = display_url(config.redis_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await rt.start()  # the worker tasks run on this loop
            yield
        finally:
            rt.closing.set()
            await rt.stop()  # awaits every worker's stop (also those a failed start began)

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
            return error(421, "Host header not allowed (this demo answers only locally)", "host")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            why = _cross_site(request)
            if why is not None:
                return error(403, f"cross-site request refused: {why}", "origin")
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
        return error(status, str(exc), type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "; ".join(str(e.get("msg")) for e in exc.errors()), "validation")

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return error(404, str(exc.args[0]), "not_found")

    @app.exception_handler(GroupMissing)
    async def _no_group(request: Request, exc: GroupMissing) -> JSONResponse:
        return error(404, f"no such group or stream: {exc}", "not_found")

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return error(409, str(exc), "conflict")

    @app.exception_handler(RedisUnavailable)
    async def _unavailable(request: Request, exc: RedisUnavailable) -> JSONResponse:
        return error(503, f"Redis unreachable at {where}: {exc}", "redis_unavailable")

    @app.exception_handler(rex.RedisError)
    async def _redis(request: Request, exc: rex.RedisError) -> JSONResponse:
        err = translate(exc)
        if isinstance(err, RedisUnavailable):
            return error(503, f"Redis unreachable at {where}: {err}", "redis_unavailable")
        return error(502, f"Redis refused the command: {err}", "server")

    @app.exception_handler(ServerError)
    async def _server(request: Request, exc: ServerError) -> JSONResponse:
        return error(502, f"Redis refused the command: {exc}", "server")

    @app.exception_handler(StreamingError)
    async def _streaming(request: Request, exc: StreamingError) -> JSONResponse:
        return error(500, str(exc), type(exc).__name__)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error in %s %s", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__}: {exc}", "internal")

    # ------------------------------------------------------------ page

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(charts.router(rt.charts))  # GET /charts/{rates,backlog}.svg (pygal)

    # ------------------------------------------------------------ API

    app.include_router(routes_read.router(rt, config))  # GET: /state, /events, /metrics, ...
    app.include_router(routes_levers.router(rt))  # POST: the levers

    return app
