"""Reports of the demo's rollouts: ``weir report`` for each, collected from the API in process (no port)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from control_plane.ui.report import collect_async, write_report

__all__ = ["write_reports"]


async def write_reports(app: Any, names: list[str], directory: Path) -> list[Path]:
    """One self-contained HTML file per rollout in ``directory``, read through the app's own endpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        async def get(path: str) -> Any:
            response = await client.get(path)
            response.raise_for_status()
            return response.json()

        for name in names:
            data = await collect_async(get, name)
            paths.append(write_report(data, directory / f"{name}.html").resolve())
    return paths
