"""The coin: how a keep probability becomes a keep or a drop.

With a trace id, the coin is the trace id itself: the lowest 56 bits (random per W3C Trace Context
level 2) compared with a threshold. Every log of one trace at one rate gets the same answer, and a
higher rate keeps a superset, so traces stay whole across services and policy changes.

Without one, a systematic counter per (pattern, severity): a credit grows by the rate per record
and a record is kept whenever the credit reaches 1. Kept records stand for 1/rate records each, so
the sum of weights misses the truth by less than half a sampling interval at any moment (the credit
starts at one half), instead of drifting as an independent coin would.

Both coins are tossed inline in the sampler's per-record loop (a function call there costs more
than the toss); this module holds what they are computed from.
"""

from __future__ import annotations

TRACE_RANDOM_BYTES = 7  # W3C: the rightmost 7 bytes of a trace id are random
_SPAN = 1 << (8 * TRACE_RANDOM_BYTES)
SYSTEMATIC_START = 0.5


def trace_threshold(rate: float) -> bytes | None:
    """Keep a trace when its last 7 bytes compare below this; None means keep every trace."""
    if rate >= 1.0:
        return None
    return min(int(rate * _SPAN), _SPAN - 1).to_bytes(TRACE_RANDOM_BYTES, "big")
