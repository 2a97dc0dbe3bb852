"""Exponential backoff with a cap and optional jitter, as a pure function."""

from __future__ import annotations

import random


def delay(
    attempt: int,
    initial: float,
    maximum: float,
    jitter_fraction: float = 0.1,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next try after ``attempt`` failed tries.

    The base delay is ``initial * 2 ** (attempt - 1)``, capped at ``maximum``. With ``rng``, the base is
    multiplied by a factor drawn uniformly from ``[1 - jitter_fraction, 1 + jitter_fraction]`` so that jobs
    failed together (a peer went down) do not all come back in the same second; the result still never
    exceeds ``maximum``.

    Parameters
    ----------
    attempt
        Number of tries made so far, 1 or more.
    initial
        Delay after the first failure, seconds, 0 or more.
    maximum
        Upper bound of every delay, seconds, at least ``initial``.
    jitter_fraction
        Relative spread of the jitter, in ``[0, 1]``. Ignored without ``rng``.
    rng
        Source of the jitter. ``None`` gives no jitter; a seeded :class:`random.Random` gives a
        reproducible sequence (tests).

    Returns
    -------
    float
        The delay in seconds, in ``[0, maximum]``.

    Raises
    ------
    ValueError
        If an argument is out of its range.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt}")
    if initial < 0 or maximum < initial:
        raise ValueError(f"need 0 <= initial <= maximum, got initial={initial}, maximum={maximum}")
    if not 0.0 <= jitter_fraction <= 1.0:
        raise ValueError(f"jitter_fraction must be in [0, 1], got {jitter_fraction}")
    # Past 2**64 times any sensible initial delay the cap has long been reached; bounding the exponent
    # keeps huge attempt counts from overflowing a float.
    base = min(maximum, initial * 2.0 ** min(attempt - 1, 64))
    if rng is None or jitter_fraction == 0.0:
        return base
    return min(maximum, base * rng.uniform(1.0 - jitter_fraction, 1.0 + jitter_fraction))
