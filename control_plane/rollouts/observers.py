"""More than one :class:`~control_plane.rollouts.engine.EngineObserver` on one engine.

Why: the engine reports to one observer; ``/metrics``, the dashboard's event
stream, the SLO history and the notifiers each want the same calls. A fan-out
forwards each call to every observer that has the method, and one observer's
exception is logged without reaching the engine or the others.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("weir.observers")

__all__ = ["Observers", "add_observer"]


class Observers:
    """Forwards ``observe_*`` calls to each of its observers, in order."""

    def __init__(self, *observers: Any) -> None:
        self.observers: list[Any] = [o for o in observers if o is not None]

    def add(self, observer: Any) -> None:
        if observer not in self.observers:
            self.observers.append(observer)

    def _call(self, method: str, *args: Any) -> None:
        for observer in self.observers:
            fn = getattr(observer, method, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:  # an observer's bug must not stop a rollout
                log.exception("observer %s failed in %s", type(observer).__name__, method)

    def observe_event(self, event) -> None:
        self._call("observe_event", event)

    def observe_verdict(self, rollout: str, outcome: str) -> None:
        self._call("observe_verdict", rollout, outcome)

    def observe_convergence(self, seconds: float) -> None:
        self._call("observe_convergence", seconds)


def add_observer(engine: Any, observer: Any) -> None:
    """Make ``observer`` see what ``engine`` does, besides whatever observes it already."""
    current = engine.observer
    if current is None:
        engine.observer = Observers(observer)
    elif isinstance(current, Observers):
        current.add(observer)
    elif current is not observer:
        engine.observer = Observers(current, observer)
