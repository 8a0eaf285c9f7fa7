"""Stopping the background tasks the control plane's components run (balancer, resolver, lease, leadership)."""

from __future__ import annotations

import asyncio

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel ``task`` and wait until it has ended, so nothing of it runs after its owner stopped.

    ``None`` (never started) does nothing. Its cancellation is swallowed; any other
    exception the task ended with is raised: a loop that died is not hidden at stop.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
