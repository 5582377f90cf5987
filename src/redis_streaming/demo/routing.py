"""What the demo's route modules share: OpenAPI documentation helpers and error answers.

Pure helpers over FastAPI/Starlette objects; no route is defined here.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from . import params as p
from . import schemas as s

_ERROR_TEXT = {
    400: "the body is not a JSON object or urlencoded form",
    403: "a cross-site request to change state",
    404: "no such group or consumer",
    409: "not possible in the current state",
    421: "the Host header is not this local demo's",
    422: "a field is missing, of the wrong type or out of range (the error names it)",
    503: "Redis is unreachable",
}


def body_doc(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
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


def query_doc(path: str) -> dict[str, Any]:
    return {"parameters": s.query_parameters()[path]}


def errors(*codes: int, post: bool = False) -> dict[int | str, dict[str, Any]]:
    """Documented error answers: always 421 and 503; POSTs also 400, 403 and 422."""
    wanted = {421, 503, *codes, *((400, 403, 422) if post else ())}
    return {c: {"model": s.ErrorAnswer, "description": _ERROR_TEXT[c]} for c in sorted(wanted)}


def error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": message, "kind": kind}, status_code=status)


def refused(status: int, message: str, kind: str, reason: str) -> JSONResponse:
    """A /remove-worker refusal: our error/kind plus the guide's removed/reason/message."""
    body = {"removed": False, "reason": reason, "message": message, "error": message, "kind": kind}
    return JSONResponse(body, status_code=status)


async def request_params(request: Request) -> dict[str, Any]:
    """Query parameters overlaid by the body's form fields or JSON object."""
    merged: dict[str, Any] = dict(request.query_params)
    merged.update(p.parse_body(request.headers.get("content-type", ""), await request.body()))
    return merged
