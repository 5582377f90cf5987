"""The demo API's documented shapes: request bodies and answers, as pydantic models for OpenAPI.

Declarations only (no I/O, no behaviour). Every answer keeps the keys of the Redis streaming
guide's demo server; extra keys are allowed, so a model lists at least what a client may rely on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .config import MAX_PRODUCE

# ---------------------------------------------------------------- request bodies


class ProduceBody(BaseModel):
    count: int = Field(10, ge=1, le=MAX_PRODUCE)
    type: str = Field("random", description="an event type, or 'random'")


class ConsumerBody(BaseModel):
    group: str
    name: str


class CrashBody(ConsumerBody):
    count: int = Field(3, ge=1, le=10_000)


class AutoclaimBody(BaseModel):
    group: str
    consumer: str
    min_idle_ms: int | None = Field(None, ge=0, description="default: --claim-idle-ms")


class TrimBody(BaseModel):
    maxlen: int | None = Field(None, ge=0)
    minid: str | None = Field(None, description="a stream ID; entries below it are deleted")
    approximate: bool = True


# ---------------------------------------------------------------- answers


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


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


class StateAnswer(_Answer):
    stream: StreamView
    tail: list[dict[str, Any]]
    groups: list[GroupView]
    pending: list[PendingView]
    stats: StatsView
