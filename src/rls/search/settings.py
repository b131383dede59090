"""Checks of a method's settings when the method is built, so that a bad value stops the run
before any search (not as a ``KeyError`` or a NaN loss minutes later), naming the setting.

The rules are shared by every method: step counts are positive integers, learning rates
positive (``lr_weights`` may be 0: weights frozen), ℓ1-ball radii positive, counts of
samples, starts and attempts at least 1. Nested settings (RLS+'s ``anchor``) are checked
under their dotted key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real


class SettingError(ValueError):
    """A method setting out of range: ``key`` (dotted, e.g. ``anchor.steps``), ``value``,
    ``reason``; the message reads ``key=value: reason``."""

    def __init__(self, key: str, value, reason: str):
        self.key, self.value, self.reason = key, value, reason
        super().__init__(f"{key}={value}: {reason}")


_COUNTS = ("num_samples", "max_attempts", "num_starts")


def _rule(key: str) -> tuple[str, bool, bool] | None:
    """``(what must hold, zero allowed, integer)`` for a setting name; None: unchecked."""
    if key == "steps" or key in _COUNTS:
        return "must be a positive integer", False, True
    if key in ("lr", "lrs"):
        return "a learning rate must be positive", False, False
    if key == "lr_weights":
        return "a learning rate must not be negative (0 freezes the weights)", True, False
    if key == "radius" or key.startswith("radius_") or key == "weight_radius":
        return "an l1-ball radius must be positive", False, False
    return None


def _valid(item, zero_ok: bool, integer: bool) -> bool:
    if isinstance(item, bool) or not isinstance(item, Real):
        return False
    if integer and int(item) != item:
        return False
    return item > 0 or (zero_ok and item == 0)


def check_settings(settings: Mapping, prefix: str = "") -> None:
    """Raise :class:`SettingError` for the first setting out of range (see the module);
    a list value (per-round steps or rates) is checked item by item."""
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            if key == "steps_by_scale":
                for scale, steps in value.items():
                    if not _valid(steps, False, True):
                        raise SettingError(f"{name}.{scale}", steps, "must be a positive integer")
            else:
                check_settings(value, prefix=f"{name}.")
            continue
        rule = _rule(str(key))
        if rule is None or value is None:  # None: the method's default (e.g. steps by scale)
            continue
        reason, zero_ok, integer = rule
        listed = isinstance(value, Sequence) and not isinstance(value, str)  # also ListConfig
        items = list(value) if listed else [value]
        if not all(_valid(item, zero_ok, integer) for item in items):
            raise SettingError(name, value, reason)
