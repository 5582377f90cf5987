"""Recovery scenario: a consumer crashes holding entries; how long until a peer has processed them.

The peer is a running ConsumerWorker with its reaper on; the bound to beat is
claim_min_idle_ms + reap_interval (+100 ms). It must not nudge the peer (no manual reap call).
"""

from __future__ import annotations

import time

from redis_streaming import ConsumerWorker, EventStream

from ._common import Row, Scale, Server, fresh_key, sample_events, wait_until


def _one_round(server: Server, scale: Scale) -> float:
    client = server.client()
    stream = EventStream(client, fresh_key("recovery"), claim_min_idle_ms=scale.recovery_claim_ms)
    stream.ensure_group("g", "$")
    peer = ConsumerWorker(stream, "g", "peer", reap_interval=scale.recovery_reap_s).start()
    try:
        wait_until(lambda: bool(stream.info_consumers("g")), timeout=10)
        # The peer steps aside while the doomed consumer takes the batch, so it cannot read it.
        peer.pause(wait=True, timeout=10)
        stream.produce_batch(sample_events(scale.recovery_entries))
        taken = stream.consume("g", "doomed", count=scale.recovery_entries, block_ms=None)
        crashed_at = time.perf_counter()  # "doomed" dies now, its entries unacked
        peer.resume()
        wait_until(lambda: peer.reaped >= len(taken), timeout=60, poll=0.001)
        return (time.perf_counter() - crashed_at) * 1000
    finally:
        peer.stop(5)


def run(server: Server, scale: Scale) -> list[Row]:
    samples = [_one_round(server, scale) for _ in range(scale.recovery_rounds)]
    bound = scale.recovery_claim_ms + scale.recovery_reap_s * 1000 + 100
    note = (
        f"claim_min_idle_ms={scale.recovery_claim_ms}, reap_interval={scale.recovery_reap_s:g}s,"
        f" {scale.recovery_entries} entries; target <= {bound:.0f} ms"
    )
    return [
        Row(
            "recovery",
            server.kind,
            "crash to peer-processed (worst)",
            max(samples),
            "ms",
            scale.recovery_entries,
            samples,
            note,
        ),
        Row("recovery", server.kind, "target bound", bound, "ms", 0, [], note),
    ]
