"""The demo's levers: produce, add/remove a consumer, pause/resume, crash, XAUTOCLAIM, trim, reset.

Each route parses its fields (params.py) and awaits one DemoRuntime coroutine on the app's
loop, where the worker tasks run.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from .._errors import InvalidOption
from . import params as p
from . import schemas as s
from .config import MAX_PRODUCE
from .routing import body_doc, errors, refused, request_params
from .runtime import Conflict, DemoRuntime, NotFound

#: How many pending rows a "nothing claimed" explanation looks at.
_REASON_SCAN = 1000


def router(rt: DemoRuntime) -> APIRouter:
    """The POST routes over ``rt``."""
    api = APIRouter()

    @api.post(
        "/produce",
        summary="XADD count fake orders",
        openapi_extra=body_doc(s.ProduceBody, required=False),
        response_model=s.ProduceAnswer,
        responses=errors(post=True),
    )
    async def produce(request: Request) -> Any:
        q = await request_params(request)
        count = p.get_int(q, "count", 10, minimum=1, maximum=MAX_PRODUCE)
        event_type = p.get_event_type(q)
        ids = await rt.produce(count, event_type)
        return {"produced": len(ids), "ids": ids, "first_id": ids[0], "last_id": ids[-1]}

    @api.post(
        "/add-worker",
        summary="Start a consumer",
        openapi_extra=body_doc(s.ConsumerBody),
        response_model=s.AddWorkerAnswer,
        responses=errors(409, post=True),
    )
    async def add_worker(request: Request) -> Any:
        q = await request_params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        return await rt.add_worker(group, name)

    @api.post(
        "/remove-worker",
        summary="Hand a consumer's pending entries to a peer, then delete it",
        openapi_extra=body_doc(s.ConsumerBody),
        response_model=s.RemoveWorkerAnswer,
        responses={
            **errors(post=True),
            404: {"model": s.RemoveWorkerRefusal, "description": "no such consumer"},
            409: {"model": s.RemoveWorkerRefusal, "description": "not removed now"},
        },
    )
    async def remove_worker(request: Request) -> Any:
        q = await request_params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        try:
            return await rt.remove_worker(group, name)
        except NotFound as exc:
            return refused(404, str(exc.args[0]), "not_found", "not-found")
        except Conflict as exc:
            return refused(409, str(exc), "conflict", exc.reason)

    @api.post(
        "/pause",
        summary="Stop fetching",
        openapi_extra=body_doc(s.ConsumerBody),
        response_model=s.PauseAnswer,
        responses=errors(404, 409, post=True),
    )
    async def pause(request: Request) -> Any:
        q = await request_params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        return await rt.set_paused(group, name, True)

    @api.post(
        "/resume",
        summary="Fetch again",
        openapi_extra=body_doc(s.ConsumerBody),
        response_model=s.PauseAnswer,
        responses=errors(404, post=True),
    )
    async def resume(request: Request) -> Any:
        q = await request_params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        return await rt.set_paused(group, name, False)

    @api.post(
        "/crash",
        summary="Drop the next deliveries unacked",
        openapi_extra=body_doc(s.CrashBody),
        response_model=s.CrashAnswer,
        responses=errors(404, post=True),
    )
    async def crash(request: Request) -> Any:
        q = await request_params(request)
        group, name = p.get_name(q, "group"), p.get_name(q, "name", "consumer")
        count = p.get_int(q, "count", 3, minimum=1, maximum=s.MAX_CRASH)
        return rt.crash(group, name, count)

    @api.post(
        "/autoclaim",
        summary="XAUTOCLAIM idle pending entries to a consumer, which processes them",
        description="When nothing was claimed, `reason` says why (no pending entries, none idle "
        "past the threshold yet, ...).",
        openapi_extra=body_doc(s.AutoclaimBody),
        response_model=s.AutoclaimAnswer,
        responses=errors(404, post=True),
    )
    async def autoclaim(request: Request) -> Any:
        q = await request_params(request)
        group, consumer = p.get_name(q, "group"), p.get_name(q, "consumer")
        idle = p.get_int(q, "min_idle_ms", maximum=s.MAX_JSON_INT) if "min_idle_ms" in q else None
        answer = await rt.autoclaim(group, consumer, idle)
        answer["reason"] = None if answer["claimed"] else await nothing_claimed(rt, answer)
        return answer

    @api.post(
        "/trim",
        summary="XTRIM by MAXLEN or MINID (give exactly one)",
        openapi_extra=body_doc(s.TrimBody),
        response_model=s.TrimAnswer,
        responses=errors(post=True),
    )
    async def trim(request: Request) -> Any:
        q = await request_params(request)
        approximate = p.get_bool(q, "approximate", True)
        if ("maxlen" in q) == ("minid" in q):
            raise InvalidOption("give exactly one of maxlen (an integer >= 0) or minid (an ID)")
        maxlen = p.get_int(q, "maxlen", maximum=s.MAX_JSON_INT) if "maxlen" in q else None
        minid = p.get_stream_id(q, "minid") if "minid" in q else None
        return await rt.trim(maxlen, minid, approximate)

    @api.post(
        "/reset",
        summary="Delete the stream and start over",
        response_model=s.ResetAnswer,
        responses=errors(400, 403),
    )
    async def reset(request: Request) -> Any:
        await request_params(request)
        return await rt.reset()

    return api


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


async def nothing_claimed(rt: DemoRuntime, answer: dict[str, Any]) -> str:
    """Why an XAUTOCLAIM claimed nothing, from the group's pending entries right after it."""
    group, threshold = answer["group"], answer["min_idle_ms"]
    deleted = answer["deleted"]
    if deleted:
        return (
            f"the {_plural(len(deleted), 'entry', 'entries')} idle past {threshold} ms had been "
            "trimmed from the stream before anyone handled them (see deleted): nothing left "
            "to claim"
        )
    rows = await rt.astream.pending(group, count=_REASON_SCAN)
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
