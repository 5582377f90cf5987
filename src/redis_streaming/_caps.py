"""What the server can do, decided once per client: Redis 8.2's ACKED trimming and XACKDEL.

Pure: a plan that asks (a no-argument probe of each new command, HELLO for the version) and the
decision from the replies; the shells cache the result per connection pool. Older servers and
Valkey keep today's behaviour. It must not send anything but those two probes.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any, Final

from . import _lag
from ._errors import FeatureUnavailable
from ._ops import Batch, Op, Plan

#: Redis fixed ``XTRIM ... ~ ... ACKED`` (which removes nothing on 8.2) in 8.6.
APPROX_ACKED_SINCE: Final = (8, 6, 0)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """``acked_trim``: XTRIM/XADD take KEEPREF|DELREF|ACKED; ``approx_acked_trim``: and
    ``~`` works with ACKED; ``xackdel`` / ``xdelex``: the commands exist. ``server``: the
    name and version HELLO reported (None if it did not say)."""

    acked_trim: bool = False
    approx_acked_trim: bool = False
    xackdel: bool = False
    xdelex: bool = False
    server: _lag.ServerVersion | None = None

    def require_xackdel(self) -> None:
        if not self.xackdel:
            raise FeatureUnavailable(
                "XACKDEL (acknowledge and delete) needs Redis 8.2 or newer; this server is "
                f"{_describe(self.server)}. Use ack() and trim_safe() instead"
            )


def _describe(server: _lag.ServerVersion | None) -> str:
    if server is None:
        return "of an unknown version"
    return f"{server.name} {'.'.join(map(str, server.version))}"


def _exists(reply: Any) -> bool:
    # The probe sends the command with no arguments: a server that has it answers "wrong
    # number of arguments", one that does not answers "unknown command". Nothing is changed.
    return not (isinstance(reply, BaseException) and "unknown command" in str(reply).lower())


def detect() -> Plan[Capabilities]:
    """Ask once: XACKDEL and XDELEX with no arguments (an error either way; which error says
    whether they exist), and HELLO for the version. Probes: no error is raised from them."""
    ackdel, delex, hello = yield Batch(
        [
            Op("execute_command", ("XACKDEL",), tolerate=True),
            Op("execute_command", ("XDELEX",), tolerate=True),
            _lag.hello_op(),
        ]
    )
    xackdel, xdelex = _exists(ackdel), _exists(delex)
    server = _lag.parse_hello(hello)
    approx = xackdel and server is not None and server.name == "redis"
    approx = approx and server is not None and server.version >= APPROX_ACKED_SINCE
    return Capabilities(
        acked_trim=xackdel, approx_acked_trim=approx, xackdel=xackdel, xdelex=xdelex,
        server=server,
    )  # fmt: skip


_CACHE: weakref.WeakKeyDictionary[Any, Capabilities] = weakref.WeakKeyDictionary()


def cached(client: Any) -> Capabilities | None:
    try:
        return _CACHE[getattr(client, "connection_pool", client)]
    except (KeyError, TypeError):
        return None


def remember(client: Any, caps: Capabilities) -> Capabilities:
    with contextlib.suppress(TypeError):  # a client that cannot be weakly referenced
        _CACHE[getattr(client, "connection_pool", client)] = caps
    return caps
