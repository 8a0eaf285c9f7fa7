"""Notifications of what operators care about: a step passed, a rollout paused, rolled back, promoted.

* :mod:`.notifier` - the engine observer that picks those events and sends them (never blocking a rollout)
* :mod:`.message` - what a notification says: the event and its evidence summary
* :mod:`.slack` - Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat: ``text`` + ``blocks``)
* :mod:`.generic` - a plain JSON document for anything else
* :mod:`.config` - ``weir serve --notify slack=URL --notify json=URL`` or ``--notify-file FILE``
"""

from .notifier import NOTIFY_KINDS, Notifier, Target

__all__ = ["NOTIFY_KINDS", "Notifier", "Target"]
