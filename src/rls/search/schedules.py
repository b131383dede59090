"""Learning-rate multipliers ``(step, steps) -> float``; step j in ``[0, steps)`` uses m(j).

- ``linear1cycledrop`` (PULSE, RLS method.md §3): 0.1 -> 1.0 linearly over the first 45%
  of the steps, back to 0.1 at 90%, then linearly to 0.001 at the end.
- ``cosine`` (ILO, after the StyleGAN2 projector): linear warm-up over the first 5%,
  cosine ramp-down over the last 75%.
- ``constant``: 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def linear1cycledrop(step: int, steps: int) -> float:
    drop_start = 0.9 * steps
    if step < drop_start:
        return (9.0 * (1.0 - abs(step / drop_start - 0.5) * 2.0) + 1.0) / 10.0
    return 0.1 + (step - drop_start) / (0.1 * steps) * (0.001 - 0.1)


def cosine(step: int, steps: int, rampdown: float = 0.75, rampup: float = 0.05) -> float:
    t = step / steps
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / rampup)


def constant(step: int, steps: int) -> float:
    return 1.0


SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "linear1cycledrop": linear1cycledrop,
    "cosine": cosine,
    "constant": constant,
}


def get_schedule(schedule: str | Callable[[int, int], float]) -> Callable[[int, int], float]:
    if callable(schedule):
        return schedule
    if schedule not in SCHEDULES:
        raise KeyError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule]
