"""Slack-compatible incoming webhooks: ``text`` (every compatible receiver shows it) plus Block Kit ``blocks``.

Mattermost and Rocket.Chat accept the same ``text`` field; Slack also draws the
blocks (a header line, the reason, the evidence summary).
"""

from __future__ import annotations

from typing import Any

from .message import Notification

__all__ = ["slack_payload"]

_ICONS = {"step-passed": ":white_check_mark:", "promoted": ":rocket:", "rolled-back": ":rewind:",
          "failed": ":x:", "paused": ":double_vertical_bar:", "holding": ":hourglass:"}


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(n: Notification) -> dict[str, Any]:
    head = f"{_ICONS.get(n.kind, '')} Weir: rollout *{_escape(n.rollout)}* {n.title}".strip()
    where = f"{n.phase}, step {n.step}, canary weight {n.weight}%"
    lines = n.summary_lines()
    text = f"{head}: {_escape(n.reason)} ({where})"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{head}\n{_escape(n.reason)}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(where)}]},
    ]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "*Evidence*\n" + "\n".join(f"- {_escape(x)}" for x in lines)}})
    return {"text": text, "blocks": blocks}
