"""The one retry delay of the operator and its workers: exponential, capped, with jitter.

``delay(attempt)`` is ``base * 2**attempt`` up to ``cap``, multiplied by a factor drawn from
``[1 - jitter, 1 + jitter]`` so that clients that failed together (the informers of one operator,
the replicas of one model) do not retry together. ``jitter=0`` gives the plain exponential the
work queue uses (client-go's per-item limiter has none either: its delays are the documented
ones).
"""

from __future__ import annotations

import random

# Beyond this the delay is at its cap anyway; it keeps 2**attempt small.
_MAX_EXPONENT = 30


def delay(attempt: int, base: float, cap: float, jitter: float = 0.5, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter {jitter} must be in [0, 1)")
    plain: float = min(cap, base * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))
    if not jitter:
        return plain
    factor: float = (rng or random).uniform(1 - jitter, 1 + jitter)
    return plain * factor
