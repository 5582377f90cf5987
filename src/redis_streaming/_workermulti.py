"""Several consumer workers read with one XREADGROUP: the combined read, written once.

Each member is a whole :class:`WorkerCore` of its own stream (same group, same consumer name,
same server): its handler loop, delivery limits, dead letters, reaping, acks and counters stay
its own. Only the blocking ``XREADGROUP ... STREAMS k1 k2 .. > > ..`` is shared, with every
member's pending XACKs in the same round trip. A member whose ``_may_read`` says no (a
partition lease about to lapse) is left out of the read. Pure, like _workercore: it yields
steps (:class:`Sub` runs one member's own steps on that member's shell) and does no I/O. A
read is two FastRead steps, so the next one can go out before a batch is handled: one that
only writes (no replies) and one that only reads (an empty payload).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions as rex

from . import _fastpath, _plans, _workerrecovery
from ._errors import is_nogroup
from ._model import Entry
from ._workercore import WorkerCore
from ._workersteps import READ_MARGIN_S, FastRead, Step, Steps, Wait

logger = logging.getLogger("redis_streaming.worker")


@dataclass(frozen=True, slots=True)
class Sub:
    """Run ``steps`` (steps of ``member``) on that member's own shell; reply: their result."""

    member: WorkerCore
    steps: Steps


@dataclass
class InFlight:
    """A combined read that was sent and whose replies are not read yet."""

    members: list[WorkerCore]
    acks: list[tuple[WorkerCore, list[str]]]
    count: int
    block_ms: int
    flagged: int

    def give_back(self, only: WorkerCore | None = None) -> None:
        """Put acks that may not have reached the server back in their members' queues."""
        for m, ids in self.acks:
            if only is None or m is only:
                m._pending_acks[:0] = ids


def _ack_bytes(core: WorkerCore, ids: list[str]) -> bytes:
    key = core.stream.key
    if core.ack_mode == "delete":
        return _fastpath.pack_command(_plans.ack_delete_args(key, core.group, ids, core.delete_ref))
    return _fastpath.pack_command(("XACK", key, core.group, *ids))


def by_key(raw: Any, checked: bool) -> dict[str, list[Entry]]:
    """A raw XREADGROUP reply over several streams (RESP2 list or RESP3 map) by stream key."""
    if not raw:
        return {}
    pairs = raw.items() if isinstance(raw, Mapping) else ((s[0], s[1]) for s in raw)
    return {
        _fastpath.text(key): _fastpath.entries_from_items(items, checked)
        for key, items in pairs
        if items
    }


def send_read(members: Sequence[WorkerCore], spread: int = 1) -> MultiSteps:
    """Send every member's pending acks, then ``XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS
    k1 .. kn > .. >``, without waiting for the replies; returns the :class:`InFlight`.

    COUNT applies per stream, so the largest adaptive read size of the members (each member's
    grows when its own share comes back full, and shrinks to its handler budget) is shared out
    among the ``spread`` streams expected to deliver (the caller's guess: those that did last
    time, and newcomers): one read then holds about as many entries as one worker's (the
    handler-time budget holds, and fewer live entries mean less garbage-collector work), while
    a lone busy partition still gets the whole size. BLOCK is the shortest any member allows
    (none blocks past its next reap). The acks leave their queues now and come back if their
    reply is an error or never arrives.
    """
    lead = members[0]
    acks = [(m, m._pending_acks) for m in members if m._pending_acks]
    size = max(m._sizer.count for m in members)
    count = -(-size // max(1, min(spread, len(members))))
    block_ms = min(m._block_now() for m in members)
    keys = [m.stream.key for m in members]
    read: tuple[str, ...] = ("XREADGROUP", "GROUP", lead.group, lead.name, "COUNT", str(count))
    read += ("BLOCK", str(block_ms), "STREAMS", *keys, *(">" for _ in keys))
    payload = b"".join(_ack_bytes(m, ids) for m, ids in acks) + _fastpath.pack_command(read)
    sent = InFlight(list(members), acks, count, block_ms, _fastpath.bad_bytes_seen())
    for m, _ids in acks:
        m._pending_acks = []
    try:
        yield FastRead(payload, 0, 0.0)  # written now, its replies read by receive_read
    except BaseException:
        sent.give_back()
        raise
    return sent


def receive_read(sent: InFlight) -> MultiSteps:
    """The replies of ``sent``: ``(entries by member, COUNT asked, refused)``; ``refused`` pairs
    a member with the error reply to its XACK (its acks are queued again; the entries read are
    handed out all the same, so one partition's refusal costs no other)."""
    try:
        replies = yield FastRead(b"", len(sent.acks) + 1, sent.block_ms / 1000 + READ_MARGIN_S)
    except BaseException:
        sent.give_back()
        raise
    refused: list[tuple[WorkerCore, Exception]] = []
    for (m, _ids), reply in zip(sent.acks, replies, strict=False):
        if isinstance(reply, Exception):
            sent.give_back(m)
            refused.append((m, reply))
            continue
        m.stream._count(acked=_plans.acked_count(reply) if isinstance(reply, list) else int(reply))
    raw = replies[-1]
    if isinstance(raw, Exception):
        raise raw
    found = by_key(raw, checked=_fastpath.bad_bytes_seen() == sent.flagged)
    got = {m: found[m.stream.key] for m in sent.members if m.stream.key in found}
    return got, sent.count, refused


class Members:
    """What the combined loop asks of its shell: the members now, and how they leave."""

    def current(self) -> list[WorkerCore]:  # pragma: no cover - the shell's
        raise NotImplementedError

    def leave(self, member: WorkerCore) -> None:  # pragma: no cover - the shell's
        """``member`` is out of the read and its handled entries are acked (or could not be)."""
        raise NotImplementedError

    def park(self, member: WorkerCore, parked: bool) -> None:  # pragma: no cover - the shell's
        """``member`` is paused with its acks flushed (True), or reading again (False)."""
        raise NotImplementedError

    def interrupted(self) -> bool:  # pragma: no cover - the shell's
        """True (once) if the shell broke the last read on purpose (a member is leaving)."""
        raise NotImplementedError

    def stopping(self) -> bool:  # pragma: no cover - the shell's
        raise NotImplementedError


def _own(member: WorkerCore, steps: Steps) -> Steps:
    """Run ``member``'s steps under its own error policy: "ok", "retry" (it backed off) or
    "leave" (its policy ends it: NOGROUP with "stop", a feature this server lacks...)."""
    try:
        yield from steps
    except Exception as exc:
        return "leave" if (yield from member.on_failure(exc)) else "retry"
    return "ok"


def _recover(member: WorkerCore) -> Steps:
    """After a read broken on purpose: whatever it delivered to ``member`` is in its own PEL,
    unhandled. Ack what was handled, then handle the own PEL once (only if the acks went
    through: otherwise handled entries would run again; the reaper gets them later)."""
    yield from member.flush_acks()
    if not member._pending_acks and not member._stopping():
        yield from _workerrecovery.replay_own_pel(member)


def _named(exc: BaseException, members: Sequence[WorkerCore]) -> list[WorkerCore]:
    """The members a NOGROUP error names (its text quotes the key), or all of them."""
    text = str(exc)
    return [m for m in members if f"'{m.stream.key}'" in text] or list(members)


#: The combined loop's steps: a worker's, plus Sub.
MultiSteps = Generator[Step | Sub, Any, Any]


def combined_loop(members: Members, idle: float = 0.05) -> MultiSteps:
    """The combined reader's whole life as steps; ends when ``members.stopping()``.

    Members join at any time (their start-up steps run first) and leave once stopped (their
    acks flushed first). A paused member, or one that may not read now (a lease about to
    lapse), is left out of the read, with its acks flushed and nothing reaped while paused.
    While there is a backlog the next read is sent before a batch is handled (the server reads
    ahead while the client handles; that batch's acks ride on the read after), and a member's
    entries are handled only if it may still read then. A member's
    own steps fail under its own error policy; a failed read goes through the first member's
    (one warning and one backoff for the whole read), and a NOGROUP is repaired by the members
    it names.
    """
    started: set[int] = set()
    owed: set[int] = set()  # members with read entries left unhandled (lease not ok then)
    sent: InFlight | None = None
    quiet: set[int] = set()  # members whose last read delivered nothing

    def spread(readers: list[WorkerCore]) -> int:  # how many share the next read's COUNT
        return sum(id(m) not in quiet for m in readers)

    def leave(m: WorkerCore) -> MultiSteps:
        if id(m) in started:
            yield Sub(m, _own(m, m.flush_acks()))
        started.discard(id(m))
        owed.discard(id(m))
        quiet.discard(id(m))
        members.leave(m)

    def may_read(m: WorkerCore) -> bool:
        return id(m) in started and not m._stopping() and not m.paused and m._may_read()

    while not members.stopping():
        readers: list[WorkerCore] = []
        for m in members.current():
            if m._stopping():
                yield from leave(m)
                continue
            if id(m) not in started:
                outcome = yield Sub(m, _own(m, m.start_steps()))
                if outcome != "ok":
                    if outcome == "leave":
                        yield from leave(m)
                    continue
                started.add(id(m))
            if m.paused:
                yield Sub(m, _own(m, m.flush_acks()))
                members.park(m, True)
                continue
            members.park(m, False)
            if (yield Sub(m, _own(m, m.reap_if_due()))) == "leave":
                yield from leave(m)
            elif m._may_read():
                if id(m) in owed:
                    owed.discard(id(m))
                    yield Sub(m, _own(m, _recover(m)))
                readers.append(m)
            elif m._pending_acks:
                yield Sub(m, _own(m, m.flush_acks()))
        try:
            if sent is None:
                if not readers:
                    yield Wait(idle)
                    continue
                if any(m._stopping() for m in readers):
                    continue  # let it leave before blocking
                sent = yield from send_read(readers, spread(readers))
            got, asked, refused = yield from receive_read(sent)
        except Exception as exc:  # the read is shared: one policy decides for it
            failed, sent = (sent.members if sent is not None else readers), None
            if members.interrupted():
                for m in failed:
                    if not m._stopping():
                        yield Sub(m, _own(m, _recover(m)))
                continue
            nogroup = isinstance(exc, rex.ResponseError) and is_nogroup(exc)
            for m in _named(exc, failed) if nogroup else failed[:1]:
                if (yield Sub(m, m.on_failure(exc))) and nogroup:
                    yield from leave(m)  # "stop" policy
            continue
        done, sent = sent.members, None
        failing = {id(m) for m, _error in refused}  # a refused XACK is a failure still
        for m in done:
            if id(m) not in failing:
                m.read_back()
            (quiet.discard if m in got else quiet.add)(id(m))
        # Read ahead only while there is a backlog (some stream filled its COUNT): otherwise
        # the next read would block with this batch's acks still queued behind it.
        backlog = any(len(entries) >= asked for entries in got.values())
        ahead = [m for m in members.current() if may_read(m)] if backlog else []  # joiners too
        if ahead and not members.stopping():
            try:
                sent = yield from send_read(ahead, spread(ahead))
            except Exception:  # not sent: the next turn sends it again, or reports it
                sent = None
        for m, entries in got.items():
            if m._stopping() or members.stopping():
                continue  # read, not handled: pending for the next holder or a restart
            if not m._may_read():  # the lease lapsed meanwhile: not ours to handle now
                owed.add(id(m))  # if it stays ours, its own PEL is handled once it may read
                continue
            if (yield Sub(m, _own(m, m.take(entries, asked)))) == "leave":
                yield from leave(m)
        for m, error in refused:  # its acks are queued again and resent with the next read
            m.report_failure(error)  # logged once, on_error; no backoff on the shared thread
    for m in members.current():
        yield from leave(m)
