"""The demo API's documented shapes: request bodies and answers, as pydantic models for OpenAPI.

Declarations only (no I/O, no behaviour). Every answer keeps the keys of the Redis streaming
guide's demo server; extra keys are allowed, so a model lists at least what a client may rely on.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from .config import MAX_PRODUCE
from .params import (
    END_PATTERN,
    FALSE_TEXT,
    ID_PATTERN,
    NAME_PATTERN,
    START_PATTERN,
    TRUE_TEXT,
    TYPE_PATTERN,
    anchored,
    decimal_pattern,
)

# ---------------------------------------------------------------- what params.py accepts

#: Bounds of the integer inputs (params.py enforces them; the schema shows them).
MAX_CRASH = 10_000
MAX_PAGE = 1000
MAX_FEED_EVENTS = 1_000_000
#: The largest maxlen or idle time the demo takes: 2**53 - 1, the largest integer every JSON
#: client (JavaScript's numbers included) holds exactly. Redis would take up to 2**63 - 1.
MAX_JSON_INT = 2**53 - 1


def int_schema(low: int, high: int, description: str = "") -> dict[str, Any]:
    """An integer field: a JSON integer in [low, high], or its canonical decimal text."""
    doc: dict[str, Any] = {
        "anyOf": [
            {"type": "integer", "minimum": low, "maximum": high},
            {"type": "string", "pattern": anchored(decimal_pattern(low, high))},
        ]
    }
    if description:
        doc["description"] = description
    return doc


def _int(low: int, high: int, description: str = "") -> Any:
    return WithJsonSchema(int_schema(low, high, description))


_NAME = WithJsonSchema(
    {"type": "string", "pattern": NAME_PATTERN, "description": "1-200 visible ASCII characters"}
)
_BOOL = WithJsonSchema(
    {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": [*TRUE_TEXT, *FALSE_TEXT]}]}
)

# ---------------------------------------------------------------- request bodies


class ProduceBody(BaseModel):
    count: Annotated[int, _int(1, MAX_PRODUCE, "how many events (default 10)")] = 10
    type: Annotated[
        str,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": TYPE_PATTERN,
                "description": "an event type (printable ASCII); empty or 'random': random types",
            }
        ),
    ] = "random"


class ConsumerBody(BaseModel):
    group: Annotated[str, _NAME]
    name: Annotated[str, _NAME]


class CrashBody(ConsumerBody):
    count: Annotated[int, _int(1, MAX_CRASH, "deliveries to drop (default 3)")] = 3


class AutoclaimBody(BaseModel):
    group: Annotated[str, _NAME]
    consumer: Annotated[str, _NAME]
    min_idle_ms: Annotated[
        int, _int(0, MAX_JSON_INT, "claim entries idle this long (default: --claim-idle-ms)")
    ] = 0


def _exactly_one(schema: dict[str, Any]) -> None:
    """TrimBody's schema: no defaults (a missing field is not a value), one of the two bounds."""
    for field in schema["properties"].values():
        field.pop("default", None)
    schema["oneOf"] = [{"required": ["maxlen"]}, {"required": ["minid"]}]


class TrimBody(BaseModel):
    """Exactly one of maxlen or minid."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _exactly_one(schema))

    maxlen: Annotated[int, _int(0, MAX_JSON_INT, "keep at most this many entries")] = 0
    minid: Annotated[
        str,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": ID_PATTERN,
                "description": "a stream ID; entries below it are deleted",
            }
        ),
    ] = ""
    approximate: Annotated[bool, _BOOL] = True


def event_stream_schema() -> dict[str, Any]:
    """One event of GET /events: 'state' carries the /state document, 'unavailable' an error."""
    unavailable = {
        "type": "object",
        "required": ["ok", "error"],
        "properties": {"ok": {"const": False}, "error": {"type": "string"}},
    }
    return {
        "type": "object",
        "properties": {
            "event": {"enum": ["state", "unavailable"]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "anyOf": [{"$ref": "#/components/schemas/StateAnswer"}, unavailable]
                },
            },
            "retry": {"type": "integer", "minimum": 0},
        },
    }


def query_parameters() -> dict[str, list[dict[str, Any]]]:
    """The query parameters of each GET that takes some, as OpenAPI parameter objects."""

    def param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "schema": schema,
            "description": description,
        }

    page = int_schema(1, MAX_PAGE)
    return {
        "/replay": [
            param("start", {"type": "string", "pattern": START_PATTERN}, "XRANGE start (-)"),
            param("end", {"type": "string", "pattern": END_PATTERN}, "XRANGE end (+)"),
            param("count", page, "at most this many entries (20)"),
        ],
        "/dlq": [param("count", page, "at most this many dead letters (100)")],
        "/events": [
            param("limit", int_schema(0, MAX_FEED_EVENTS), "end after this many events (0: never)")
        ],
    }


# ---------------------------------------------------------------- answers


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorAnswer(_Answer):
    """Every 4xx/5xx answer: what went wrong (naming the field and value) and its kind."""

    error: str
    kind: str


class ProduceAnswer(_Answer):
    produced: int
    ids: list[str]
    first_id: str
    last_id: str


class AddWorkerAnswer(_Answer):
    group: str
    name: str
    ok: bool
    created_group: bool


class RemoveWorkerAnswer(_Answer):
    removed: Literal[True]
    handed_over_to: str | None = Field(
        description="the peer that received the pending entries (None: there were none)"
    )
    handed_over_count: int
    group: str
    name: str
    destroyed: int = Field(description="pending entries DELCONSUMER destroyed: always 0")


class RemoveWorkerRefusal(_Answer):
    """404/409 answer of /remove-worker: the guide's keys plus the usual error/kind."""

    removed: Literal[False]
    reason: str = Field(description="not-found, no-peer (last consumer with pending), busy")
    message: str
    error: str
    kind: str


class PauseAnswer(_Answer):
    group: str
    name: str
    paused: bool


class CrashAnswer(_Answer):
    queued: int = Field(description="drops this request queued")
    crash_queued: int = Field(description="drops now queued in total")
    group: str
    name: str


class AutoclaimAnswer(_Answer):
    claimed: int
    processed: int
    deleted: list[str] = Field(description="pending IDs whose entries had been trimmed away")
    min_idle_ms: int
    group: str
    consumer: str
    dropped: int
    failed: int
    dead_lettered: int
    reason: str | None = Field(
        description="why nothing was claimed, when claimed is 0: the group has no pending "
        "entries, or N are pending but none idle past the threshold yet (with the youngest and "
        "oldest idle times and when the oldest becomes claimable), or the idle ones had been "
        "trimmed away; null when something was claimed"
    )


class TrimAnswer(_Answer):
    deleted: int
    maxlen: int | None
    minid: str | None
    strategy: str
    approximate: bool
    length: int


class ReplayEntry(_Answer):
    id: str
    fields: dict[str, str]


class ReplayAnswer(_Answer):
    start: str
    end: str
    limit: int
    entries: list[ReplayEntry]


class DlqAnswer(_Answer):
    key: str
    entries: list[ReplayEntry]


class ResetAnswer(_Answer):
    consumers: int
    groups: int
    reset: bool


# ---------------------------------------------------------------- /state (guide keys first)


class StreamView(_Answer):
    length: int
    last_generated_id: str | None
    first_entry_id: str | None
    last_entry_id: str | None


class DeliveryView(_Answer):
    id: str
    type: str
    acked: bool
    note: str


class ConsumerView(_Answer):
    name: str
    group: str
    processed: int
    reaped: int
    crashed_drops: int
    paused: bool
    crash_queued: int
    alive: bool
    pending: int
    idle_ms: int | None
    recent: list[DeliveryView]


class GroupView(_Answer):
    name: str
    consumers: int
    pending: int
    last_delivered_id: str
    lag: int | None = Field(
        description="entries not yet delivered; at least this many if not exact"
    )
    lag_exact: bool
    consumers_detail: list[ConsumerView]


class PendingView(_Answer):
    group: str
    id: str
    consumer: str
    idle_ms: int
    deliveries: int


class StatsView(_Answer):
    produced_total: int
    acked_total: int
    claimed_total: int


class ClaimTarget(_Answer):
    """Where "XAUTOCLAIM to selected" should point: a consumer of a group with idle entries."""

    group: str
    consumer: str = Field(description="a live consumer of the group, unpaused if one is")
    claimable: int = Field(description="pending entries idle past the claim threshold now")
    pending: int = Field(description="pending entries of the group")


class GroupHealthView(_Answer):
    name: str
    status: str
    lag: int | None
    pending: int
    reasons: list[str]


class HealthAnswer(_Answer):
    ok: bool
    groups: list[GroupHealthView]


class StateAnswer(_Answer):
    stream: StreamView
    tail: list[dict[str, Any]]
    groups: list[GroupView]
    pending: list[PendingView]
    stats: StatsView
    claim_target: ClaimTarget | None = Field(
        None,
        description="a suggested XAUTOCLAIM target: the group with the most claimable pending "
        "entries (else the one whose entries become claimable first); null if none is pending",
    )
