"""One error type for everything in the mesh package that a person must fix.

Why its own type: ``weir istio render|import`` print these and exit 1, never
a traceback, and every message names the object (``VirtualService
sentiment``) and the field path inside it (``spec.http[0].match[0].uri.regex``)
so the author can go straight to the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class MeshProblem:
    """One thing that cannot be rendered or imported: which object, which field, why."""

    obj: str  # "VirtualService sentiment", "RolloutPolicy sentiment", "DestinationRule sentiment"
    path: str  # "spec.http[0].fault"; "" for the object as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.obj}: {self.path}: {self.message}" if self.path else f"{self.obj}: {self.message}"


class MeshError(ValueError):
    """Input Weir cannot express; ``problems`` lists every one found, one per line in ``str()``."""

    def __init__(self, problems: Iterable[MeshProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def raise_if(problems: list[MeshProblem]) -> None:
    if problems:
        raise MeshError(problems)


__all__ = ["MeshError", "MeshProblem", "raise_if"]
