"""A plain JSON notification for any receiver (a chat bridge, an incident tool, a script)."""

from __future__ import annotations

from typing import Any

from .message import Notification

__all__ = ["json_payload"]

#: Bumped when a field changes meaning; fields are only ever added.
SCHEMA = "weir.dev/notification/v1"


def json_payload(n: Notification) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "notification": n.kind,
        "title": n.title,
        "rollout": n.rollout,
        "phase": n.phase,
        "step": n.step,
        "weight": n.weight,
        "reason": n.reason,
        "at": n.at,
        "verdict": n.verdict_outcome,
        "summary": n.summary_lines(),
        "evidence": {"slos": n.slos, "counts": n.counts},
        "event": n.event,
    }
