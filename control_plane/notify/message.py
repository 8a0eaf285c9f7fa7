"""What a notification says: which kind of moment, the rollout, and the evidence summary behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..rollouts.model import Event
from ..ui.evidence import counts, slo_progress

__all__ = ["Notification", "classify", "notification_of"]

TITLES = {
    "step-passed": "step passed",
    "paused": "paused",
    "holding": "holding",
    "rolled-back": "rolling back",
    "failed": "failed",
    "promoted": "promoted",
}


def classify(event: Event) -> str | None:
    """The kind of notification an event is (None: not one operators are told about)."""
    moved = event.phase_from != event.phase_to
    if moved and event.phase_to == "Succeeded":
        return "promoted"
    if moved and event.phase_to == "RollingBack":
        return "rolled-back"
    if moved and event.phase_to == "Failed":
        return "failed"
    if moved and event.phase_to == "Paused":
        return "paused"
    if moved and event.phase_to == "Holding":
        return "holding"
    # A passing verdict moves to the next step ("step"), or after the last one asks to promote ("gate").
    if event.kind in ("step", "gate") and event.phase_to == "Progressing" and (event.verdict or {}).get("outcome") == "pass":
        return "step-passed"
    return None


@dataclass
class Notification:
    kind: str
    title: str
    rollout: str
    phase: str
    step: int  # 1-based as the CLI shows it; 0 before the first step
    weight: int
    reason: str
    at: float
    verdict_outcome: str | None = None
    slos: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """The evidence in a few lines of plain text (both notifiers show them)."""
        lines = []
        for e in self.slos:
            lines.append(f"{e['slo']}: {e['outcome']} (e-value to fail {_num(e['e_fail'])}/{_num(e['fail_threshold'])}, "
                         f"to pass {_num(e['e_pass'])}/{_num(e['pass_threshold'])})")
        c, s = self.counts.get("canary"), self.counts.get("stable")
        if c:
            lines.append(f"canary {c['requests']} requests, {c['errors']} errors"
                         + (f"; stable {s['requests']} requests, {s['errors']} errors" if s else ""))
        return lines


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}"


def notification_of(kind: str, event: Event) -> Notification:
    verdict = event.verdict
    return Notification(
        kind=kind, title=TITLES[kind], rollout=event.rollout, phase=event.phase_to,
        step=event.step + 1 if event.step >= 0 else 0, weight=event.weight, reason=event.reason, at=event.at,
        verdict_outcome=(verdict or {}).get("outcome"), slos=slo_progress(verdict), counts=counts(verdict),
        event=event.to_json(),
    )
