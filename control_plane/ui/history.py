"""Each SLO's test statistic over time, per rollout: what the dashboard's SLO charts draw.

Why here and not in the store: the statistic moves at every analysis pass
(about once a tick), far more often than decisions; storing each look would
grow the database for a chart. It lives in memory for the process (bounded per
rollout); after a restart the chart starts again while decisions and their
evidence stay in the store.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable

from .evidence import slo_progress

__all__ = ["VerdictHistory"]


class VerdictHistory:
    """An engine observer: at each verdict, records (time, step, per-SLO e-values) of the engine's latest one."""

    def __init__(self, latest: Callable[[str], dict[str, Any] | None], *, step_of: Callable[[str], int | None] = lambda n: None,
                 clock: Callable[[], float] = time.time, keep: int = 2000) -> None:
        self.latest = latest
        self.step_of = step_of
        self.clock = clock
        self.keep = keep
        self._looks: dict[str, deque] = {}

    def observe_verdict(self, rollout: str, outcome: str) -> None:
        verdict = self.latest(rollout)
        if verdict is None:
            return
        looks = self._looks.get(rollout)
        if looks is None:
            looks = self._looks[rollout] = deque(maxlen=self.keep)
        looks.append((self.clock(), self.step_of(rollout), outcome, slo_progress(verdict)))

    def last_at(self, rollout: str) -> float | None:
        """When the latest look at the rollout was taken (None: none since this process started)."""
        looks = self._looks.get(rollout)
        return looks[-1][0] if looks else None

    def forget(self, rollout: str) -> None:
        self._looks.pop(rollout, None)

    def slos(self, rollout: str) -> list[dict[str, Any]]:
        """Per SLO: ``{slo, at[], step[], e_fail[], e_pass[], fail_threshold, pass_threshold}`` (oldest first)."""
        out: dict[str, dict[str, Any]] = {}
        for at, step, _, entries in self._looks.get(rollout, ()):
            for entry in entries:
                series = out.get(entry["slo"])
                if series is None:
                    series = out[entry["slo"]] = {"slo": entry["slo"], "description": entry["description"],
                                                  "at": [], "step": [], "e_fail": [], "e_pass": []}
                series["at"].append(at)
                series["step"].append(step)
                series["e_fail"].append(entry["e_fail"])
                series["e_pass"].append(entry["e_pass"])
                series["fail_threshold"] = entry["fail_threshold"]
                series["pass_threshold"] = entry["pass_threshold"]
        return list(out.values())
