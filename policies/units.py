"""Durations and percentages, read exactly one way.

Why a module of its own: the same two notations appear in a dozen policy fields
and in the REST API; if two readers disagreed on what ``10%`` or ``1h30m`` means
a rollout would silently behave differently from what its author wrote.

Durations
    Written as a number followed by a unit, units ``h``, ``m``, ``s``, ``ms``,
    optionally combined largest-first: ``500ms``, ``30s``, ``10m``, ``2h``,
    ``1h30m``, ``1.5h``. A bare number is rejected (is ``30`` seconds or
    minutes?). Parsed into :class:`datetime.timedelta`; written back in the
    canonical form produced by :func:`format_duration` (``90s`` -> ``1m30s``).

Percentages (fractions)
    Written either as a percent string ``"10%"`` or as a bare fraction ``0.1``;
    both parse to the float ``0.1``. A bare number above 1 is rejected rather
    than guessed at (``10`` could mean 10% or 1000%): write ``10%``. What the
    fraction *means* depends on the field; see ``policies.model`` (error-rate
    ``maxIncrease`` is absolute percentage points, latency ``maxIncrease`` is
    relative to stable).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from .errors import describe

__all__ = [
    "parse_duration",
    "format_duration",
    "parse_fraction",
    "format_fraction",
    "DURATION_PATTERN",
    "FRACTION_PATTERN",
]

_US_PER_UNIT = {"h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000}
_UNIT_ORDER = ["h", "m", "s", "ms"]
_TOKEN = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")

DURATION_PATTERN = r"^(\d+(\.\d+)?h)?(\d+(\.\d+)?m)?(\d+(\.\d+)?s)?(\d+(\.\d+)?ms)?$"
"""JSON Schema pattern for a duration string (the parser also rejects the empty string)."""

FRACTION_PATTERN = r"^\d+(\.\d+)?%$"
"""JSON Schema pattern for a percent string such as ``10%`` or ``0.5%``."""

_DURATION_HINT = "expected a duration such as 500ms, 30s, 10m, 2h or 1h30m"


def parse_duration(value: object) -> timedelta:
    """Parse ``30s`` / ``10m`` / ``2h`` / ``500ms`` / ``1h30m`` into a timedelta.

    Raises ValueError with a message that says what to write instead.
    """
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{_DURATION_HINT} (got {describe(value)})")
    if isinstance(value, (int, float)):
        raise ValueError(f"{_DURATION_HINT}; add a unit, e.g. {value}s (got the bare number {describe(value)})")
    text = value.strip()
    pos = 0
    total = Decimal(0)
    last_rank = -1
    for match in _TOKEN.finditer(text):
        if match.start() != pos:
            break
        number, unit = match.groups()
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(
                f"{_DURATION_HINT}: give each unit once, largest first, e.g. 1h30m (got {describe(value)})"
            )
        last_rank = rank
        total += Decimal(number) * _US_PER_UNIT[unit]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"{_DURATION_HINT} (got {describe(value)})")
    if total != total.to_integral_value():
        raise ValueError(f"must be a whole number of microseconds (got {describe(value)})")
    try:
        return timedelta(microseconds=int(total))
    except OverflowError:
        raise ValueError(f"is too long to represent (got {describe(value)})") from None


def format_duration(value: timedelta) -> str:
    """The canonical spelling of a duration: ``1h30m``, ``45s``, ``500ms``, ``0s``.

    ``parse_duration(format_duration(d)) == d`` for every non-negative ``d``.
    """
    us = value // timedelta(microseconds=1)
    if us < 0:
        raise ValueError("durations in policies are never negative")
    if us == 0:
        return "0s"
    parts = []
    for unit in ("h", "m", "s"):
        n, us = divmod(us, _US_PER_UNIT[unit])
        if n:
            parts.append(f"{n}{unit}")
    if us:
        ms = Decimal(us) / 1000
        parts.append(f"{ms.normalize():f}ms")
    return "".join(parts)


def parse_fraction(value: object) -> float:
    """Parse ``"10%"`` or ``0.1`` into the fraction ``0.1``.

    A bare number must lie in [0, 1]; a percent string may exceed 100% (fields
    that forbid that check their own upper bound). Raises ValueError.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage such as 10% or a fraction such as 0.1 (got {describe(value)})")
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number (got {describe(value)})")
        if number < 0:
            raise ValueError(f"must not be negative (got {describe(value)})")
        if number > 1:
            raise ValueError(
                f"a bare number is a fraction (0.1 means 10%), so {describe(value)} would mean "
                f"{(Decimal(repr(value)) * 100).normalize():f}%; write {describe(value)}% if you meant percent"
            )
        return number
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(FRACTION_PATTERN, text):
            try:
                return float(Decimal(text[:-1]) / 100)
            except InvalidOperation:  # pragma: no cover - the pattern rules this out
                pass
        hint = ""
        try:
            as_percent = Decimal(text) * 100
            hint = f"; write the fraction without quotes ({text}) or the percent with a % sign ({as_percent.normalize():f}%)"
        except InvalidOperation:
            pass
        raise ValueError(
            f"expected a percentage such as 10% or a fraction such as 0.1 (got {describe(value)}){hint}"
        )
    raise ValueError(f"expected a percentage such as 10% or a fraction such as 0.1 (got {describe(value)})")


def format_fraction(value: float) -> float | str:
    """The canonical written form of a fraction: the number itself up to 1, a percent string above.

    Above 1 a bare number would be rejected on reading (``1.5`` looks like a
    mistyped percent), so ``1.5`` is written ``"150%"``; this keeps
    ``parse_fraction(format_fraction(x)) == x`` for every non-negative finite x.
    """
    if value <= 1:
        return value
    return f"{(Decimal(repr(value)) * 100).normalize():f}%"
