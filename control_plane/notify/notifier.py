"""The engine observer that sends notifications, each in its own task: a slow receiver never holds a rollout.

Sending goes through the API's :class:`~control_plane.rollouts.webhooks.WebhookClient`
(the same destination checks, signature and retries as policy webhooks). A
receiver's URL is shown only as scheme and host: for Slack and its kind the
path of the URL *is* the credential.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from ..rollouts.model import Event
from ..rollouts.webhooks import redact_url
from .generic import json_payload
from .message import Notification, classify, notification_of
from .slack import slack_payload

log = logging.getLogger("weir.notify")

__all__ = ["FORMATS", "NOTIFY_KINDS", "Notifier", "Target"]

#: What can be notified (``events:`` of a target; all of them by default).
NOTIFY_KINDS = ("step-passed", "paused", "holding", "rolled-back", "failed", "promoted")
FORMATS: dict[str, Callable[[Notification], dict[str, Any]]] = {"slack": slack_payload, "json": json_payload}


@dataclass(frozen=True)
class Target:
    format: str  # slack | json
    url: str
    events: frozenset[str] = field(default_factory=lambda: frozenset(NOTIFY_KINDS))

    def __repr__(self) -> str:  # never print the URL whole: for Slack it is the credential
        return f"Target({self.format}, {redact_url(self.url, hide_path=True)}, {sorted(self.events)})"


class Notifier:
    """Sends each notifiable event to every target that wants its kind."""

    def __init__(self, targets: list[Target], client: Any, *, timeout_s: float = 10.0) -> None:
        self.targets = list(targets)
        self.client = client  # a WebhookClient: call(url, payload, timeout_s) -> HookResult
        self.timeout_s = timeout_s
        self._tasks: set[asyncio.Task] = set()
        self.sent = 0
        self.failed = 0

    def observe_event(self, event: Event) -> None:
        kind = classify(event)
        if kind is None:
            return
        wanted = [t for t in self.targets if kind in t.events]
        if not wanted:
            return
        notification = notification_of(kind, event)
        for target in wanted:
            task = asyncio.get_running_loop().create_task(self._send(target, notification),
                                                          name=f"weir-notify-{event.rollout}-{kind}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, target: Target, notification: Notification) -> None:
        payload = FORMATS[target.format](notification)
        try:
            result = await self.client.call(target.url, payload, self.timeout_s, hide_path=True)
        except Exception as err:  # a bug in sending must not reach the engine
            log.warning("notification %s of %s to %s failed: %s", notification.kind, notification.rollout,
                        redact_url(target.url, hide_path=True), type(err).__name__)
            self.failed += 1
            return
        if result.ok:
            self.sent += 1
        else:
            self.failed += 1
            log.warning("notification %s of %s to %s failed: %s", notification.kind, notification.rollout,
                        redact_url(target.url, hide_path=True), result.detail)

    async def drain(self) -> None:
        """Wait for the notifications in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
