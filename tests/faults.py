"""A TCP proxy between a client and a real server that cuts or stalls connections on purpose.

Test helper only: threads and plain sockets, no mocks. Rules decide, chunk by chunk, whether
bytes pass, are swallowed, or end the connection, so a test can cut at an exact protocol point
(for example "after the server executed EXEC, before its reply reaches the client").
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable

# A rule sees (direction, bytes of this chunk, all bytes seen this way on this connection) and
# answers "pass", "drop" (swallow the chunk) or "cut" (close both sides, chunk not forwarded).
Rule = Callable[[str, bytes, bytes], str]


class FaultProxy:
    """Listens on a free local port and forwards every connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stalled = threading.Event()
        self.rule: Rule | None = None
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # ------------------------------------------------------------ controls

    def cut_all(self) -> int:
        """Close every open connection (both sides); returns how many were cut."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _close(a)
            _close(b)
        self.cuts += len(pairs)
        return len(pairs)

    def stall(self) -> None:
        """Stop forwarding in both directions (connections stay open, bytes wait)."""
        self._stalled.set()

    def unstall(self) -> None:
        self._stalled.clear()

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut_all()

    # ------------------------------------------------------------ plumbing

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        seen = {"up": b"", "down": b""}
        peers = {client: (upstream, "up"), upstream: (client, "down")}
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 0.05)
                if self._stalled.is_set():
                    continue
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    other, way = peers[sock]
                    seen[way] += data
                    verdict = self.rule(way, data, seen[way]) if self.rule else "pass"
                    if verdict == "cut":
                        self.cuts += 1
                        return
                    if verdict == "pass":
                        other.sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _close(client)
            _close(upstream)
            with self._lock:
                if (client, upstream) in self._pairs:
                    self._pairs.remove((client, upstream))


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
