"""When to try a judge request again: the server's ``Retry-After`` or a jittered exponential back-off."""
from __future__ import annotations

import email.utils
import random
import time


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number (fractions accepted) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    return rng.uniform(0.0, min(cap, base * 2 ** (attempt - 1)))


def retry_delay(retry_after: float | None, attempt: int, cfg, rng: random.Random) -> float:
    """The wait before the next attempt: the server's Retry-After when it is within
    ``cfg.retry_after_max_s``, else the ordinary jittered back-off."""
    if retry_after is not None and retry_after <= cfg.retry_after_max_s:
        return retry_after
    return backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_max_s, rng)
