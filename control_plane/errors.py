"""One small hierarchy of the errors a user can cause or meet, each with its HTTP status.

Why one hierarchy: the REST API, the CLI and GitOps mode all report the same
failures (a bad policy, a rollout that cannot take an action now, a name that
does not exist, a store that does not answer). Each kind maps to exactly one
HTTP status, here, so no caller re-decides what a conflict is.

* :class:`InvalidInput` (422): the input is wrong; fix it and try again. The
  policy and routing validators (:class:`policies.PolicyValidationError`,
  :class:`xds.routing.RoutingError`) count as invalid input; they live in
  pure packages that must not import the control plane, so they are
  registered here as virtual subclasses.
* :class:`Conflict` (409): the input is fine but the current state forbids it
  (another active rollout, an action the phase does not allow, a stale write).
* :class:`NotFound` (404).
* :class:`Unavailable` (503): a dependency (the store) cannot serve now.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from policies import PolicyValidationError

__all__ = ["WeirError", "InvalidInput", "Conflict", "NotFound", "Unavailable", "status_of"]


class WeirError(Exception, metaclass=abc.ABCMeta):
    """Base of every error Weir reports to a user."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.details = details


class InvalidInput(WeirError):
    status = 422
    kind = "invalid-input"
    title = "Invalid input"


class Conflict(WeirError):
    status = 409
    kind = "conflict"
    title = "Conflict"


class NotFound(WeirError):
    status = 404
    kind = "not-found"
    title = "Not found"


class Unavailable(WeirError):
    status = 503
    kind = "unavailable"
    title = "Service unavailable"


# Validation errors of the pure packages are invalid input (xds.routing.RoutingError
# subclasses PolicyValidationError, so it is covered too).
InvalidInput.register(PolicyValidationError)


def _register_mesh_errors() -> None:
    """Routing that Istio cannot express (the Istio router's MeshError) is invalid input too."""
    from .mesh.errors import MeshError

    InvalidInput.register(MeshError)


_register_mesh_errors()


def status_of(exc: BaseException) -> int:
    """The HTTP status of any exception: its class's for ours, 500 for everything else."""
    if isinstance(exc, InvalidInput):
        return InvalidInput.status
    if isinstance(exc, WeirError):
        return type(exc).status
    return 500
