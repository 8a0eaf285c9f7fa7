"""Webhooks from the policy contract: pre-rollout, confirm-promotion, post-rollout, rollback.

A hook is a JSON POST with the policy's timeout, retried with exponential
backoff. Only a 2xx answer counts as yes: a gate that cannot be reached holds
the rollout, it never lets it through.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger("weir.webhooks")


@dataclass(frozen=True)
class HookResult:
    ok: bool
    detail: str  # status code and body excerpt, or the error
    attempts: int


class WebhookClient:
    def __init__(self, retries: int = 3, backoff_s: float = 0.5, client: httpx.AsyncClient | None = None):
        self.retries = retries
        self.backoff_s = backoff_s
        self._client = client or httpx.AsyncClient()

    async def call(self, url: str, payload: dict[str, Any], timeout_s: float) -> HookResult:
        """POST `payload`; True only on a 2xx within `retries` attempts."""
        detail = ""
        for attempt in range(1, self.retries + 1):
            try:
                resp = await self._client.post(url, json=payload, timeout=timeout_s)
                detail = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if 200 <= resp.status_code < 300:
                    return HookResult(True, detail, attempt)
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    return HookResult(False, detail, attempt)  # a clear "no": do not insist
            except httpx.HTTPError as err:
                detail = f"{type(err).__name__}: {err}"
            log.info("webhook %s attempt %d failed: %s", url, attempt, detail)
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        return HookResult(False, detail, self.retries)

    async def close(self) -> None:
        await self._client.aclose()
