"""Error types every policy entry point raises, and how their paths and values are printed.

Why a module of its own: the CLI, the REST API and the Kubernetes admission path
all show these errors to the person who wrote the policy, so the wording rules
(path, what was expected, what was found, line) live in exactly one place.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

Loc = tuple[str | int, ...]
"""A location inside a policy document: mapping keys and sequence indexes from the root."""

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class PolicyError:
    """One problem in a policy: where it is, what is wrong, and the file line when known.

    ``str()`` gives the one-line form users see, e.g.
    ``spec.strategy.canary.steps[2].weight: must be between 0 and 100 (got 120), line 31``.
    An empty ``path`` means the problem concerns the document as a whole.
    """

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        head = f"{self.path}: {self.message}" if self.path else self.message
        return head if self.line is None else f"{head}, line {self.line}"


class PolicyValidationError(ValueError):
    """A policy was rejected; ``errors`` holds every problem found, not just the first.

    Reporting all of them at once matters because a rollout policy is usually
    fixed in one edit; a fix-one-rerun loop wastes the author's time.
    ``str()`` is every error, one per line, in file order.
    """

    def __init__(self, errors: Iterable[PolicyError], source: str | None = None) -> None:
        self.errors: list[PolicyError] = list(errors)
        self.source = source
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def format_path(loc: Sequence[str | int]) -> str:
    """Render a location the way users read it: ``spec.analysis.slos[1].quantile``.

    Keys that are not plain words (e.g. label keys such as ``app.kubernetes.io/name``)
    are bracketed and quoted so the path stays unambiguous.
    """
    out = ""
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _PLAIN_KEY.fullmatch(seg):
            out += f".{seg}" if out else seg
        else:
            out += f'["{seg}"]'
    return out


def describe(value: Any) -> str:
    """Say what was found, briefly and unambiguously (``"5"`` a string vs ``5`` a number)."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) >= 10**32:  # str() of an int past 4,300 digits raises; nobody reads 33 digits anyway
            return f"a number of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return repr(value)
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in shown):  # a newline or tab shown as \n, \t
            return json.dumps(shown, ensure_ascii=False)
        return f'"{shown}"' if value else 'an empty string ""'
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping {}"
    if isinstance(value, (list, tuple)):
        return "a list" if value else "an empty list []"
    return type(value).__name__


def sort_errors(errors: Iterable[PolicyError]) -> list[PolicyError]:
    """Drop exact duplicates and order errors by line (unknown lines last), keeping ties in given order."""
    seen: set[PolicyError] = set()
    unique = [e for e in errors if not (e in seen or seen.add(e))]
    return sorted(unique, key=lambda e: (e.line is None, e.line or 0))
